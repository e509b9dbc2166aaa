"""Generation from an OpenAI-compatible server (vLLM, SGLang, TGI, …) and the vLLM command that serves a registry.

The base model is requested by its served name, ``model.name_or_path``, and a trained run by its
run id (its registry folder's name), so that one server started with :func:`serve_command`'s line
(``python -m dualloop serve-command --profile P``)::

    python -m vllm.entrypoints.openai.api_server --model <the base's folder> --served-model-name <base> \
        --dtype <the profile's> --enable-lora --max-lora-rank <r> --lora-modules <run id>=<its adapter folder> …

serves every system. Each prompt is one greedy chat completion (temperature 0, ``max_tokens`` =
``generation.max_new_tokens``, ``repetition_penalty`` unless 1.0 or ``send_repetition_penalty: false``;
a conversation that ends with an assistant message is continued, as vLLM's ``continue_final_message``
does), ``generation.batch_size`` in flight at once, through
:class:`dualloop.chat_client.ChatEndpoint` (the API judges' retries). Responses go through the
generation cache (:func:`dualloop.generation.cached_responses`): a cached prompt is never requested
again and an interrupted run requests only the prompts it is missing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dualloop.chat_client import ChatEndpoint, EndpointError
from dualloop.generation import GenerationSettings, Prompt, cached_responses
from dualloop.models import ModelSettings, model_source
from dualloop.registry import Run

__all__ = [
    "SERVER_TIMEOUT",
    "finished_runs",
    "generation_endpoint",
    "serve_command",
    "served_weights",
    "server_responses",
]

SERVER_TIMEOUT = 600.0  # seconds for one completion: a long response on a busy server
# the values vLLM accepts for --max-lora-rank
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def generation_endpoint(settings: GenerationSettings) -> ChatEndpoint:
    """The server of ``generation.base_url``, with the key of ``generation.api_key_env`` (none when null)."""
    if settings.backend != "server" or settings.base_url is None:
        raise ValueError(f"generation.backend={settings.backend!r}: server generation needs backend: server")
    return ChatEndpoint(
        settings.base_url,
        settings.api_key_env,
        what="the generation server",
        timeout=SERVER_TIMEOUT,
        deadline=settings.request_deadline_s,
        max_reply_bytes=settings.max_reply_bytes,
    )


def _request(served_model: str, prompt: Prompt, settings: GenerationSettings) -> dict:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    body: dict = {"model": served_model, "messages": messages, "temperature": 0, "max_tokens": settings.max_new_tokens}
    if settings.server_repetition_penalty() is not None:
        body["repetition_penalty"] = settings.server_repetition_penalty()
    if messages[-1]["role"] == "assistant":  # a prefill (Sycophancy-Eval's "The answer is ("): continue it
        body.update(continue_final_message=True, add_generation_prompt=False)
    return body


def server_responses(
    endpoint: ChatEndpoint,
    served_model: str,
    prompts: Mapping[str, Prompt],
    settings: GenerationSettings,
    *,
    out_dir: str | Path,
    prompt_set: str,
    server_identity: str = "",
) -> dict[str, list[str]]:
    """prompt id -> [response] of the model the server serves as ``served_model`` (the base model's
    name or a run id), requesting only the prompts not in the generation cache. ``server_identity``
    (e.g. the served weights' dtype) enters the cache key beside the served name, so texts of two
    differently started servers are never mixed."""
    with endpoint.client() as client, ThreadPoolExecutor(settings.batch_size) as pool:

        def generate_batch(ids: list[str]) -> list[list[str]]:
            futures = {
                i: pool.submit(
                    endpoint.complete, client, _request(served_model, prompts[i], settings), allow_empty=False
                )
                for i in ids
            }
            answers = []
            for prompt_id, future in futures.items():
                try:
                    answers.append([(future.result() or "").strip()])
                except EndpointError as error:  # nothing of this batch is cached; the batches before it are
                    raise EndpointError(f"{prompt_set} prompt {prompt_id!r}: {error}") from None
            return answers

        return cached_responses(
            prompts,
            settings,
            out_dir=out_dir,
            identity=f"server|{served_model}|{server_identity}" if server_identity else f"server|{served_model}",
            prompt_set=prompt_set,
            generate_batch=generate_batch,
        )


def finished_runs(registry_dir: str | Path, model: ModelSettings) -> list[Run]:
    """The finished runs under ``registry_dir`` trained on ``model``'s base (each with its adapter), by id."""
    runs = [Run(path) for path in sorted(Path(registry_dir).glob("*/")) if path.is_dir()]
    return [
        run
        for run in runs
        if run.is_complete
        and run.adapter_dir.is_dir()
        and run.config.get("model", {}).get("name_or_path") == model.name_or_path
    ]


def serve_command(model: ModelSettings, runs: Sequence[Run]) -> str:
    """The line that starts vLLM's OpenAI-compatible server for the base model and every run: the model
    as a folder vLLM can load without the hub (the offline model's converted folder, a local folder's
    absolute path, else the hub id), served under ``model.name_or_path``, in the profile's dtype, each run's
    adapter under its run id (``--max-lora-rank``: the largest LoRA rank of the runs, rounded up to a value
    vLLM takes). Started as ``python -m vllm.entrypoints.openai.api_server``, which works where the ``vllm``
    script of a CPU build does not."""
    command = [
        "python",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        served_weights(model),
        "--served-model-name",
        model.name_or_path,
        "--dtype",
        model.dtype,
    ]
    if runs:
        rank = max(int(run.config.get("model", {}).get("lora_r") or model.lora_r) for run in runs)
        command += [
            "--enable-lora",
            "--max-lora-rank",
            str(next((r for r in VLLM_LORA_RANKS if r >= rank), rank)),
            "--lora-modules",
            *(f"{run.id}={run.adapter_dir.resolve()}" for run in runs),
        ]
    return shlex.join(command)


def served_weights(model: ModelSettings) -> str:
    """What vLLM's ``--model`` names for ``model``: what :func:`dualloop.models.model_source` loads (the offline
    model's converted folder, converted once if needed; a local folder; a hub id), a folder as an absolute path."""
    source, _ = model_source(model)
    return str(Path(source).resolve()) if Path(source).is_dir() else source
