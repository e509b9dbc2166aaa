"""Generation: responses of a model (base or with a trained LoRA adapter) for a prompt set.

Batched and left-padded, with the tokenizer's chat template; greedy by default with a repetition
penalty and a new-token budget; seeded sampling as an option (and ``num_samples`` responses per
prompt, which the offline preference-set builder uses).

Greedy batches run :func:`greedy_decode`, a decoding loop that HF ``generate`` calls through its
``custom_generate`` hook: the same argmax decisions as HF's own loop at batch size 1, with the
work that does not change them left out (see its docstring). Sampling runs HF's own loop.

With ``backend: server`` the responses come from an OpenAI-compatible server instead
(:mod:`dualloop.serving`), through the same cache.

Results are cached as JSONL, one line per prompt id, in a file named by a hash of (model
identity, prompt-set name, generation settings). Lines are appended and flushed after every
batch, so a rerun generates nothing and a killed run completes only the prompts it is missing.
Progress is printed as plain lines (papermill-friendly).
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from transformers import (
    DynamicCache,
    EosTokenCriteria,
    GenerationConfig,
    LogitsProcessorList,
    MaxLengthCriteria,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RepetitionPenaltyLogitsProcessor,
    StaticCache,
    StoppingCriteriaList,
)
from transformers.cache_utils import CacheLayerMixin

from dualloop.jsonl import append_records, read_records
from dualloop.locking import file_lock
from dualloop.models import ModelSettings, check_type, dataclass_from_dict, load_policy

if TYPE_CHECKING:
    from peft import PeftModel

# a prompt is one user message, or a conversation (list of {"role", "content"} messages)
Prompt = str | list[dict[str, str]]
BACKENDS = ("local", "server")


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """How responses are generated; the ``generation:`` section of a profile fills it.

    Attributes:
        max_new_tokens: the new-token budget per response.
        repetition_penalty: HF's multiplicative penalty on already generated tokens (1.0 = none);
            SmolLM2-135M loops without one.
        do_sample: False = greedy; True = sampling with ``temperature`` / ``top_p`` and ``seed``.
        temperature: sampling temperature (used only when ``do_sample``).
        top_p: nucleus mass (used only when ``do_sample``).
        num_samples: responses per prompt (sampling only; greedy would repeat itself).
        seed: seed of the sampling; each batch is seeded from it and the batch's prompt ids.
        batch_size: prompts per ``generate`` call; does not enter the cache key.
        fast_greedy: greedy batches run :func:`greedy_decode` (the same text as HF's loop at batch
            size 1, faster) where the model allows (:func:`decodes_fast`); False = HF's own loop.
            Does not enter the cache key.
        backend: ``"local"`` (this process loads the model) or ``"server"``: greedy chat completions
            (temperature 0, ``max_tokens`` = ``max_new_tokens``) from an OpenAI-compatible server at
            ``base_url`` that serves the base model under its ``model.name_or_path`` and each
            trained run's adapter under its run id (:mod:`dualloop.serving`); ``batch_size``
            requests are in flight at once.
        base_url: the server's URL, e.g. ``http://127.0.0.1:8000/v1`` (backend server only).
        api_key_env: the environment variable holding the server's key; None sends no key.
        send_repetition_penalty: backend server: send ``repetition_penalty`` in each request where it
            is not 1.0 (vLLM takes it as an extra sampling parameter, so its greedy texts match local
            generation's); False for an endpoint that refuses unknown fields (a 400 fails loudly).
        request_deadline_s, max_reply_bytes: backend server: the most one request may take, connect to
            last byte, and the largest reply taken; past either the reply is bad (retried, never cached).
    """

    max_new_tokens: int = 128
    repetition_penalty: float = 1.2
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    num_samples: int = 1
    seed: int = 0
    batch_size: int = 8
    fast_greedy: bool = True
    backend: str = "local"
    base_url: str | None = None
    api_key_env: str | None = None
    send_repetition_penalty: bool = True
    request_deadline_s: float = 300.0
    max_reply_bytes: int = 1_000_000

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "num_samples", "seed", "batch_size", "max_reply_bytes"):
            check_type(name, getattr(self, name), int)
        check_type("request_deadline_s", self.request_deadline_s, (int, float))
        if not self.request_deadline_s > 0 or self.max_reply_bytes < 1:
            raise ValueError(
                f"request_deadline_s={self.request_deadline_s!r} must be > 0 and max_reply_bytes="
                f"{self.max_reply_bytes!r} >= 1"
            )
        for name in ("repetition_penalty", "temperature", "top_p"):
            check_type(name, getattr(self, name), (int, float))
        for name in ("do_sample", "fast_greedy", "send_repetition_penalty"):
            check_type(name, getattr(self, name), bool)
        for name in ("max_new_tokens", "num_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be >= 1, got {getattr(self, name)}")
        if self.repetition_penalty <= 0 or self.temperature <= 0 or not 0 < self.top_p <= 1:
            raise ValueError(
                "need repetition_penalty > 0, temperature > 0 and 0 < top_p <= 1, got "
                f"{self.repetition_penalty}, {self.temperature}, {self.top_p}"
            )
        if self.num_samples > 1 and not self.do_sample:
            raise ValueError(
                f"'num_samples' = {self.num_samples} needs do_sample: true (greedy responses would be identical)"
            )
        self._check_backend()

    def _check_backend(self) -> None:
        from dualloop.chat_client import check_base_url, shown_url

        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "local":
            for name in ("base_url", "api_key_env"):
                value = getattr(self, name)
                if value is not None:
                    shown = shown_url(value) if name == "base_url" and isinstance(value, str) else value
                    raise ValueError(f"{name}={shown!r} is used only with backend: server")
            return
        check_base_url("base_url", self.base_url)
        if self.api_key_env is not None and not (isinstance(self.api_key_env, str) and self.api_key_env.isidentifier()):
            raise ValueError(f"api_key_env={self.api_key_env!r} must name an environment variable, or be null")
        if self.do_sample:
            raise ValueError("backend: server generates greedily; set do_sample: false")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "generation settings") -> GenerationSettings:
        """Build settings from a profile's ``generation:`` section; unknown keys get a "did you mean"."""
        return dataclass_from_dict(cls, values, source)

    def server_repetition_penalty(self) -> float | None:
        """The ``repetition_penalty`` a server request carries: None when 1.0 or not sent."""
        return self.repetition_penalty if self.send_repetition_penalty and self.repetition_penalty != 1.0 else None

    def cache_fields(self) -> dict[str, Any]:
        """The fields that change the responses (the cache key): all but ``batch_size``,
        ``fast_greedy`` and the backend's, and the sampling fields only when sampling; a server's
        greedy responses: the backend, ``max_new_tokens`` and the penalty it sends (None when not sent)."""
        if self.backend == "server":
            return {
                "backend": self.backend,
                "max_new_tokens": self.max_new_tokens,
                "repetition_penalty": self.server_repetition_penalty(),
            }
        fields = dataclasses.asdict(self)
        for name in (
            "batch_size",
            "fast_greedy",
            "backend",
            "base_url",
            "api_key_env",
            "send_repetition_penalty",
            "request_deadline_s",
            "max_reply_bytes",
        ):
            del fields[name]
        if not self.do_sample:
            for name in ("temperature", "top_p", "seed"):
                del fields[name]
        return fields


def model_identity(settings: ModelSettings, adapter_dir: str | Path | None = None) -> str:
    """A string naming the weights that generate: the base model and, if any, the adapter's content hash."""
    base = settings.name_or_path
    local = Path(base).expanduser()
    if local.is_dir():
        base = str(local.resolve())
    identity = f"{base}|{settings.dtype}"
    if settings.quantization:
        identity += f"|{settings.quantization}"
    if base == "smoke":
        identity += f"|seed={settings.seed}"
    if adapter_dir is not None:
        identity += f"|adapter={_adapter_digest(Path(adapter_dir))}"
    return identity


def _adapter_digest(adapter_dir: Path) -> str:
    weights = sorted(adapter_dir.glob("adapter_model.*"))
    if not (adapter_dir / "adapter_config.json").is_file() or not weights:
        raise FileNotFoundError(
            f"{adapter_dir}: no adapter here (expected adapter_config.json and adapter_model.safetensors "
            "written by model.save_pretrained); pass the folder of a finished run's adapter"
        )
    digest = hashlib.sha256()
    for path in [adapter_dir / "adapter_config.json", *weights]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def load_generator(
    settings: ModelSettings, adapter_dir: str | Path | None = None
) -> tuple[PreTrainedModel | PeftModel, PreTrainedTokenizerBase, str]:
    """Load the base model of ``settings`` (with the LoRA adapter in ``adapter_dir`` merged in).

    Returns (model in eval mode, tokenizer, :func:`model_identity`).
    """
    identity = model_identity(settings, adapter_dir)
    model: PreTrainedModel | PeftModel
    model, tokenizer, _, _ = load_policy(settings)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
        if not getattr(model.base_model.model, "is_quantized", False):
            model = model.merge_and_unload()  # a plain model generates faster; 4-bit bases keep the adapter
        print(f"dualloop.generation: loaded the adapter from {adapter_dir}", flush=True)
    model.eval()
    return model, tokenizer, identity


def cache_path(out_dir: str | Path, identity: str, prompt_set: str, settings: GenerationSettings) -> Path:
    """The JSONL file for (model identity, prompt set, generation settings) under ``out_dir``."""
    key = json.dumps(
        {"model": identity, "prompt_set": prompt_set, "generation": settings.cache_fields()}, sort_keys=True
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    safe_name = "".join(c if c.isalnum() or c in "-_." else "_" for c in prompt_set)
    return Path(out_dir) / f"{safe_name}-{digest}.jsonl"


def read_cache(path: Path, prompts: Mapping[str, Prompt]) -> dict[str, dict[str, Any]]:
    """Records already generated in ``path``, keyed by prompt id (:mod:`dualloop.jsonl`: a last line
    cut off by a kill is ignored and its prompt generated again).

    A record whose prompt differs from the prompt now given under that id means the prompt set
    changed under the same name: that raises, naming the file, the record and the id.
    """
    records: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(read_records(path), start=1):
        prompt_id = record["id"]
        if prompt_id in prompts and record["prompt"] != _as_json(prompts[prompt_id]):
            raise ValueError(
                f"{path}: record {number}: prompt id '{prompt_id}' has a different prompt than the one given now; "
                "the prompt set changed under the same name: rename the set or delete the file"
            )
        records[prompt_id] = record
    return records


def generate_responses(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Mapping[str, Prompt],
    settings: GenerationSettings,
    *,
    out_dir: str | Path,
    identity: str,
    prompt_set: str,
) -> dict[str, list[str]]:
    """Responses for every prompt id, generating only those not already in the cache.

    Args:
        model, tokenizer: the generator (see :func:`load_generator`).
        prompts: prompt id -> user message or conversation, in generation order.
        settings: the generation settings.
        out_dir: folder of the cache files (a run directory's ``generations/`` for example).
        identity: the model's identity (:func:`model_identity`); part of the cache key.
        prompt_set: name of the prompt set (e.g. ``"verifiable-heldout"``); part of the cache key.

    Returns:
        prompt id -> list of ``settings.num_samples`` responses, in the order of ``prompts``.
    """
    was_training = model.training
    model.eval()  # no dropout while generating; the caller's mode is restored below
    try:
        return cached_responses(
            prompts,
            settings,
            out_dir=out_dir,
            identity=identity,
            prompt_set=prompt_set,
            generate_batch=lambda ids: _generate_batch(model, tokenizer, [prompts[i] for i in ids], settings, ids),
        )
    finally:
        model.train(was_training)


def local_responses(
    settings: ModelSettings,
    adapter_dir: str | Path | None,
    prompts: Mapping[str, Prompt],
    generation: GenerationSettings,
    *,
    out_dir: str | Path,
    prompt_set: str,
) -> dict[str, list[str]]:
    """:func:`generate_responses` for the model of ``settings`` (with the adapter in ``adapter_dir``),
    loaded only when the cache misses a prompt: a rerun over cached generations loads no model."""
    loaded: list[tuple[PreTrainedModel | PeftModel, PreTrainedTokenizerBase]] = []

    def generate_batch(ids: list[str]) -> list[list[str]]:
        if not loaded:
            model, tokenizer, _ = load_generator(settings, adapter_dir)
            loaded.append((model, tokenizer))
        model, tokenizer = loaded[0]
        return _generate_batch(model, tokenizer, [prompts[i] for i in ids], generation, ids)

    return cached_responses(
        prompts,
        generation,
        out_dir=out_dir,
        identity=model_identity(settings, adapter_dir),
        prompt_set=prompt_set,
        generate_batch=generate_batch,
    )


def cached_responses(
    prompts: Mapping[str, Prompt],
    settings: GenerationSettings,
    *,
    out_dir: str | Path,
    identity: str,
    prompt_set: str,
    generate_batch: Callable[[list[str]], list[list[str]]],
) -> dict[str, list[str]]:
    """Responses for every prompt id from the cache file of (identity, prompt set, settings), calling
    ``generate_batch`` (prompt ids -> their responses) on ``settings.batch_size`` missing prompts at a
    time and appending each batch to the file: a rerun generates nothing, a killed run only what is missing.
    One process writes a cache file at a time (:func:`dualloop.locking.file_lock`), so two judges sharing
    it never generate one prompt twice."""
    if not prompts:
        raise ValueError(f"prompt set '{prompt_set}' is empty")
    path = cache_path(out_dir, identity, prompt_set, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):  # one writer per cache file: a second process waits, then reads what the first wrote
        records = read_cache(path, prompts)
        missing = [prompt_id for prompt_id in prompts if prompt_id not in records]
        if missing:
            batches = [missing[i : i + settings.batch_size] for i in range(0, len(missing), settings.batch_size)]
            print(
                f"dualloop.generation: {prompt_set}: {len(records)} cached, generating {len(missing)} "
                f"in {len(batches)} batches -> {path}",
                flush=True,
            )
            started = time.perf_counter()
            for number, batch_ids in enumerate(batches, start=1):
                responses = generate_batch(batch_ids)
                batch = [
                    {"id": prompt_id, "prompt": _as_json(prompts[prompt_id]), "responses": samples}
                    for prompt_id, samples in zip(batch_ids, responses, strict=True)
                ]
                append_records(path, batch)
                records.update((record["id"], record) for record in batch)
                print(
                    f"dualloop.generation: {prompt_set}: batch {number}/{len(batches)} done, "
                    f"{len(records)}/{len(prompts)} prompts, {time.perf_counter() - started:.1f} s",
                    flush=True,
                )
        else:
            print(f"dualloop.generation: {prompt_set}: all {len(prompts)} prompts cached in {path}", flush=True)
    return {prompt_id: records[prompt_id]["responses"] for prompt_id in prompts}


def _as_json(prompt: Prompt) -> Any:
    """The prompt as it reads back from JSON (tuples become lists), for comparing with the cache."""
    return json.loads(json.dumps(prompt))


def chat_text(tokenizer: PreTrainedTokenizerBase, prompt: Prompt) -> str:
    """The prompt rendered with the chat template, ready for the assistant's response.

    A conversation that ends with an assistant message (a prefill such as Sycophancy-Eval's
    "The answer is (") is continued rather than followed by a new assistant turn.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    # transformers types apply_chat_template's result as every form it can take; tokenize=False gives a str
    if messages[-1]["role"] == "assistant":
        return cast(str, tokenizer.apply_chat_template(messages, tokenize=False, continue_final_message=True))
    return cast(str, tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))


def _generate_batch(
    model, tokenizer, batch: list[Prompt], settings: GenerationSettings, batch_ids: list[str]
) -> list[list[str]]:
    texts = [chat_text(tokenizer, prompt) for prompt in batch]
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = padding_side
    inputs = inputs.to(model.device)
    config = GenerationConfig(
        max_new_tokens=settings.max_new_tokens,
        repetition_penalty=float(settings.repetition_penalty),
        do_sample=settings.do_sample,
        num_return_sequences=settings.num_samples,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **(
            {"temperature": float(settings.temperature), "top_p": float(settings.top_p), "top_k": 0}
            if settings.do_sample
            else {}
        ),
    )
    fast = settings.fast_greedy and not settings.do_sample and decodes_fast(model)
    loop = {"custom_generate": greedy_decode} if fast else {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(_batch_seed(settings.seed, batch_ids))
        output = model.generate(**inputs, generation_config=config, **loop)
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    k = settings.num_samples
    return [[text.strip() for text in decoded[i * k : (i + 1) * k]] for i in range(len(batch))]


def _batch_seed(seed: int, batch_ids: list[str]) -> int:
    """A seed for one batch from the settings' seed and the batch's prompt ids (stable across runs)."""
    digest = hashlib.sha256(json.dumps([seed, batch_ids]).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63)


# greedy_decode rebuilds its key/value cache without the finished rows once this share of them has finished
FINISHED_SHARE_TO_COMPACT = 0.25
# prompts that greedy_decode prefills together (sorted by length)
PREFILL_GROUP = 8


def greedy_decode(
    model: PreTrainedModel,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    **model_kwargs: Any,
) -> torch.LongTensor:
    """Greedy decoding of a left-padded batch: ``model.generate(..., custom_generate=greedy_decode)``.

    Each step takes the argmax of the logits after HF's repetition penalty over the row's own prompt
    and generated tokens, as HF's loop does for a row alone; batching changes only the fp32 rounding
    of the matmuls. Faster than HF's loop because
    - the prompts are prefilled through the decoder only (no LM head), after the prefix they all
      share (the chat template's system turn), which is prefilled once, in groups of similar
      length padded on the right, where causal attention keeps the padding out;
    - the key/value cache is a ``StaticCache`` (nothing concatenated per step), rebuilt without
      the finished rows once ``FINISHED_SHARE_TO_COMPACT`` of them have finished;
    - the repetition penalty reads and writes only the row's token ids, not the whole vocabulary.

    Supports greedy search with a repetition penalty, EOS and a length budget on a model whose
    layers all attend to the full context (:func:`decodes_fast`); a ValueError names the rest.
    Returns what HF's greedy loop returns: each row's prompt and new tokens, ``pad_token_id``
    after its EOS.
    """
    penalty = _repetition_penalty(model, logits_processor, stopping_criteria, generation_config)
    prompts = _unpadded_rows(input_ids, model_kwargs.get("attention_mask"))
    eos_token_id = generation_config.eos_token_id
    eos = torch.tensor([] if eos_token_id is None else eos_token_id, dtype=torch.long, device=input_ids.device)
    pad_token_id = generation_config.pad_token_id
    if pad_token_id is None:
        pad_token_id = int(eos.view(-1)[0]) if eos.numel() else 0  # HF's default too
    budget = generation_config.max_length - input_ids.shape[1]
    with torch.inference_mode():
        batch = _DecodeBatch(model, prompts, budget, pad_token_id)
        for step in range(budget):
            batch.step(step, penalty, eos.view(-1))
            if bool(batch.done.all()):
                break
    # torch types cat() as returning a Tensor whatever the dtype; these are token ids
    return cast(torch.LongTensor, torch.cat([input_ids, batch.output[:, : step + 1]], dim=1))


def decodes_fast(model: PreTrainedModel) -> bool:
    """Whether :func:`greedy_decode` can run ``model``: every layer attends to the full context
    (no sliding window, no linear attention)."""
    layers = StaticCache(config=model.config, max_cache_len=1)
    return not any(layers.is_sliding) and not any(
        getattr(layers, "is_linear", ())
    )  # is_linear: not in every transformers 5


def _repetition_penalty(
    model: PreTrainedModel,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
) -> float | None:
    """The penalty of HF's repetition-penalty processor (None without one); raises on what greedy_decode lacks."""
    unsupported = [type(p).__name__ for p in logits_processor if not isinstance(p, RepetitionPenaltyLogitsProcessor)]
    unsupported += [
        type(c).__name__ for c in stopping_criteria if not isinstance(c, (MaxLengthCriteria, EosTokenCriteria))
    ]
    if generation_config.do_sample or generation_config.num_beams > 1 or unsupported or not decodes_fast(model):
        raise ValueError(
            "greedy_decode supports greedy search with a repetition penalty, EOS and a length budget "
            f"on full-attention models only; got do_sample={generation_config.do_sample}, "
            f"num_beams={generation_config.num_beams}, {unsupported}, "
            f"full attention: {decodes_fast(model)}"
        )
    penalties = [p.penalty for p in logits_processor]
    return penalties[0] if penalties else None


def _unpadded_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
    """Each row's prompt tokens without its padding (HF passes no mask when nothing is padded)."""
    if attention_mask is None:
        return list(input_ids)
    return [row[mask.bool()] for row, mask in zip(input_ids, attention_mask)]


def _cache_keyword(model: torch.nn.Module) -> str:
    """The name of the key/value cache argument of the model's forward: ``cache`` in recent
    transformers (which deprecate ``past_key_values``), ``past_key_values`` in older ones."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class _DecodeBatch:
    """The rows of a batch being decoded: their key/value cache and what each feeds next.

    A prompt's tokens but its last are the row's context, prefilled into the cache; every step then
    feeds one token per row (the prompt's last token first). The cache is left-padded: row ``i``
    holds its keys and values in the columns ``first_column[i]`` to ``filled - 1``.
    """

    def __init__(self, model: PreTrainedModel, prompts: list[torch.Tensor], budget: int, pad_token_id: int):
        device = prompts[0].device
        contexts = [prompt[:-1] for prompt in prompts]
        width = max(len(context) for context in contexts)
        prompt_width = max(len(prompt) for prompt in prompts)
        self.model, self.budget, self.prompt_width = model, budget, prompt_width
        self.rows = torch.arange(len(prompts), device=device)  # the batch row of each cache row
        self.tokens = torch.stack([prompt[-1] for prompt in prompts])  # the token each row feeds next
        self.positions = torch.tensor([len(context) for context in contexts], device=device)  # and its position
        self.first_column = width - self.positions
        self.done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        self.history = _token_history(prompts, prompt_width + budget)  # ids under the repetition penalty
        self.output = torch.full((len(prompts), budget), pad_token_id, dtype=prompts[0].dtype, device=device)
        self._set_cache(_prefill(model, contexts, width), width, budget)

    def step(self, step: int, penalty: float | None, eos: torch.Tensor) -> None:
        """Feed each row its next token and choose the one after it (greedy, after the penalty)."""
        if self.done.float().mean() >= FINISHED_SHARE_TO_COMPACT:
            self._drop_finished_rows(self.budget - step)
        columns = torch.arange(self.capacity, device=self.tokens.device)
        attention_mask = (columns >= self.first_column[:, None]) & (columns <= self.filled)
        logits = (
            self.model(
                input_ids=self.tokens[:, None],
                attention_mask=attention_mask.long(),
                position_ids=self.positions[:, None],
                use_cache=True,
                logits_to_keep=1,
                **{_cache_keyword(self.model): self.cache},
            )
            .logits[:, -1]
            .float()
        )
        self.filled += 1
        self.positions += 1
        if penalty is not None:
            _penalize(logits, self.history, penalty)
        tokens = logits.argmax(dim=-1)
        live = ~self.done
        self.output[self.rows[live], step] = tokens[live]
        self.history[:, self.prompt_width + step] = tokens
        self.done |= torch.isin(tokens, eos)
        self.tokens = tokens

    def _drop_finished_rows(self, steps_left: int) -> None:
        """A new cache without the finished rows and the leading columns no row left uses."""
        keep = (~self.done).nonzero().squeeze(1)
        lead = int(self.first_column[keep].min())
        states = [
            (keys[keep, :, lead : self.filled], values[keep, :, lead : self.filled])
            for keys, values in map(_layer_states, self.cache.layers)
        ]
        self.rows, self.tokens, self.positions, self.done, self.history = (
            self.rows[keep],
            self.tokens[keep],
            self.positions[keep],
            self.done[keep],
            self.history[keep],
        )
        self.first_column = self.first_column[keep] - lead
        self._set_cache(states, self.filled - lead, steps_left)

    def _set_cache(self, states: list[tuple[torch.Tensor, torch.Tensor]] | None, width: int, steps_left: int) -> None:
        """A static cache holding ``states`` (``width`` columns) with room for ``steps_left`` more."""
        self.filled, self.capacity = width, width + steps_left
        self.cache = StaticCache(config=self.model.config, max_cache_len=self.capacity)
        for layer_index, (keys, values) in enumerate(states or []):
            self.cache.update(keys, values, layer_index)


def _prefill(
    model: PreTrainedModel, contexts: list[torch.Tensor], width: int
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Per layer, the keys and values of the contexts, right-aligned in ``width`` columns (zeros before).

    Only the decoder runs (no LM head). The prefix all contexts share runs once; the rest of the
    contexts runs after it in groups of ``PREFILL_GROUP`` of similar length, right-padded: causal
    attention keeps the padding, which follows every real token, out of the real tokens' states.
    None when every context is empty.
    """
    if width == 0:
        return None
    decoder = model.get_decoder()
    shared = _shared_prefix_length(contexts) if len(contexts) > 1 else 0
    prefix = _extend(decoder, contexts[0][None, :shared], DynamicCache(config=model.config))
    by_length = sorted(range(len(contexts)), key=lambda row: len(contexts[row]))
    states = None
    for start in range(0, len(by_length), PREFILL_GROUP):
        group = by_length[start : start + PREFILL_GROUP]
        suffixes = torch.nn.utils.rnn.pad_sequence([contexts[row][shared:] for row in group], batch_first=True)
        cache = _extend(decoder, suffixes, _copy_cache(prefix, len(group), model.config))
        if cache.get_seq_length() == 0:
            continue  # contexts all empty
        if states is None:
            states = [
                (
                    keys.new_zeros(len(contexts), keys.shape[1], width, keys.shape[3]),
                    values.new_zeros(len(contexts), values.shape[1], width, values.shape[3]),
                )
                for keys, values in map(_layer_states, cache.layers)
            ]
        for (keys, values), (layer_keys, layer_values) in zip(states, map(_layer_states, cache.layers)):
            for index, row in enumerate(group):
                length = len(contexts[row])
                keys[row, :, width - length :] = layer_keys[index, :, :length]
                values[row, :, width - length :] = layer_values[index, :, :length]
    return states


def _layer_states(layer: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys and values of a filled cache layer: greedy_decode runs only models whose layers all
    attend to the full context (:func:`decodes_fast`), and reads a cache once the decoder has filled it."""
    assert isinstance(layer, CacheLayerMixin) and layer.keys is not None and layer.values is not None
    return layer.keys, layer.values


def _shared_prefix_length(contexts: list[torch.Tensor]) -> int:
    """The number of leading tokens all contexts share."""
    shortest = min(len(context) for context in contexts)
    first = contexts[0][:shortest]
    same = torch.stack([context[:shortest] == first for context in contexts]).all(dim=0)
    return int(same.long().cumprod(dim=0).sum())


def _extend(decoder: torch.nn.Module, tokens: torch.Tensor, cache: DynamicCache) -> DynamicCache:
    """``cache`` with the keys and values of ``tokens`` ([rows, length]) appended by the decoder."""
    if tokens.shape[1]:
        decoder(input_ids=tokens, use_cache=True, **{_cache_keyword(decoder): cache})
    return cache


def _copy_cache(cache: DynamicCache, rows: int, config) -> DynamicCache:
    """A new dynamic cache of ``rows`` rows, each starting from the one row of ``cache``."""
    copy = DynamicCache(config=config)
    if cache.get_seq_length():
        for layer_index, (keys, values) in enumerate(map(_layer_states, cache.layers)):
            copy.update(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1), layer_index)
    return copy


def _token_history(prompts: list[torch.Tensor], width: int) -> torch.Tensor:
    """[rows, width] token ids: each prompt, then its first token as filler (a repeat changes no penalty)."""
    history = torch.stack([prompt[:1].expand(width) for prompt in prompts]).clone()
    for row, prompt in enumerate(prompts):
        history[row, : len(prompt)] = prompt
    return history


def _penalize(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> None:
    """HF's ``RepetitionPenaltyLogitsProcessor`` on the ids in ``history``, in place: the same values."""
    score = logits.gather(1, history)
    score = torch.where(score < 0, score * penalty, score / penalty)
    logits.scatter_(1, history, score)
