"""A real vLLM server (the CPU build, in its own virtual environment) against local generation.

Slow, and skipped unless ``DUALLOOP_VLLM_PYTHON`` names the Python of an environment with vLLM
(``make vllm-parity`` builds ``.venv-vllm`` and runs this). The server is started with the line
``serve-command`` prints (the offline model's converted folder, its served name, the profile's dtype),
then the first held-out prompts are answered by the server and by local generation.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from dualloop.models import ModelSettings
from dualloop.serving import serve_command

VLLM_PYTHON = os.environ.get("DUALLOOP_VLLM_PYTHON")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (VLLM_PYTHON and Path(VLLM_PYTHON).is_file()), reason="DUALLOOP_VLLM_PYTHON names no vLLM environment"
    ),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parity_script():
    """``benchmarks/vllm_parity.py`` as a module."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "vllm_parity.py"
    spec = importlib.util.spec_from_file_location("vllm_parity", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_vllm_server_started_as_serve_command_prints_gives_local_generations_greedy_texts(tmp_path, capsys):
    port = free_port()
    line = shlex.split(serve_command(ModelSettings(name_or_path="smollm2-135m-instruct", dtype="float32"), []))
    assert line[:3] == ["python", "-m", "vllm.entrypoints.openai.api_server"]
    command = [str(VLLM_PYTHON), *line[1:], "--host", "127.0.0.1", "--port", str(port)]
    environment = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    log = (tmp_path / "vllm.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert server.poll() is None, (tmp_path / "vllm.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        argv = ["--base-url", f"http://127.0.0.1:{port}/v1", "--prompts", "20", "--out", str(tmp_path / "runs")]
        assert parity_script().main([*argv, "--json"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["identical"] == result["prompts"] == 20, result["differing"]
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
