"""JupyterLab as README says: ``.venv/bin/jupyter lab``, open a notebook, change a value in its parameters cell, run.

A real JupyterLab server on a free local port lists the phase notebooks; the walkthrough then runs cell by cell in
a kernel of that server, through jupyter_server's REST API and its kernel websocket, with no papermill injection:
its ``profile`` edited to ``smoke`` in the parameters cell, as a user would.
"""

from __future__ import annotations

import ast
import asyncio
import datetime
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

from dualloop.config import REPO_ROOT, RESOLVED_FOR, ParamsError
from dualloop.pipeline import discover_phases

JUPYTER = Path(sys.executable).with_name("jupyter")  # .venv/bin/jupyter, the command README gives


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Lab:
    """A running JupyterLab server: its base URL and token."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def request(self, path: str, payload: dict | None = None, method: str | None = None) -> tuple[int, bytes]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()

    def json(self, path: str, payload: dict | None = None) -> dict:
        return json.loads(self.request(path, payload)[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    home = tmp_path_factory.mktemp("jupyter")
    port, token = _free_port(), secrets.token_hex(16)
    environment = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "HF_HUB_OFFLINE": "1",
    }
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(JUPYTER),
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={REPO_ROOT}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *(["--allow-root"] if os.geteuid() == 0 else []),
        ],  # README: as root, --allow-root
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    started = Lab(f"http://127.0.0.1:{port}", token)
    deadline = time.monotonic() + 90
    while True:
        try:
            started.request("/api/status")
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"JupyterLab did not start: {(home / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
    yield started
    server.terminate()
    server.wait(timeout=30)
    log.close()


def test_jupyterlab_serves_its_app_and_lists_the_phase_notebooks(lab):
    status, page = lab.request("/lab")
    assert status == 200 and b"JupyterLab" in page
    listing = lab.json("/api/contents/notebooks")
    names = {entry["name"] for entry in listing["content"] if entry["type"] == "notebook"}
    assert names == {phase.notebook.name for phase in discover_phases(REPO_ROOT / "notebooks")}


async def _run_cells(url: str, token: str, cells: list[str], timeout: float = 120) -> list[tuple[dict, list[dict]]]:
    """Each cell's execute_reply content and its iopub outputs, sent one after another over the kernel websocket."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(HTTPRequest(url, headers={"Authorization": f"token {token}"}))
    session, results = uuid.uuid4().hex, []
    try:
        for code in cells:
            msg_id = uuid.uuid4().hex
            header = {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "session": session,
                "username": "test",
                "version": "5.3",
                "date": datetime.datetime.now(datetime.UTC).isoformat(),
            }
            content = {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            }
            await connection.write_message(
                json.dumps(
                    {"header": header, "parent_header": {}, "metadata": {}, "content": content, "channel": "shell"}
                )
            )
            reply, outputs, idle = None, [], False
            while reply is None or not idle:
                message = json.loads(await asyncio.wait_for(connection.read_message(), timeout))
                if message["parent_header"].get("msg_id") != msg_id:
                    continue
                kind = message["header"]["msg_type"]
                if kind == "execute_reply":
                    reply = message["content"]
                elif kind == "status":
                    idle = message["content"]["execution_state"] == "idle"
                elif kind in ("stream", "display_data", "execute_result", "error"):
                    outputs.append({"type": kind, **message["content"]})
            results.append((reply, outputs))
            if reply["status"] != "ok":
                break
    finally:
        connection.close()
    return results


def test_the_walkthrough_runs_in_a_kernel_of_the_server_and_resolves_its_profile(lab, tmp_path):
    notebook = nbformat.read(REPO_ROOT / "notebooks" / "00_walkthrough.ipynb", as_version=4)
    cells = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    edited = cells[0].replace('profile: str = "cpu"', 'profile: str = "smoke"')
    edited = edited.replace('output_dir: str = "runs/cpu"', f'output_dir: str = "{tmp_path}"')
    assert edited.count("smoke") == 1 and str(tmp_path) in edited
    session = lab.json(
        "/api/sessions",
        {
            "path": "notebooks/00_walkthrough.ipynb",
            "type": "notebook",
            "name": "00_walkthrough.ipynb",
            "kernel": {"name": "python3"},
        },
    )
    kernel = session["kernel"]["id"]
    try:
        url = lab.url.replace("http", "ws", 1) + f"/api/kernels/{kernel}/channels"
        results = asyncio.run(_run_cells(url, lab.token, [edited, *cells[1:]]))
    finally:
        lab.request(f"/api/sessions/{session['id']}", method="DELETE")
    assert len(results) == len(cells), [
        output for _, outputs in results for output in outputs if output["type"] == "error"
    ]
    assert all(reply["status"] == "ok" for reply, _ in results)
    outputs = [output for _, cell_outputs in results for output in cell_outputs]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    tables = [output for output in outputs if "text/html" in output.get("data", {})]
    assert len(images) == 3 and len(tables) == 2
    assert not [output for output in outputs if output["type"] == "stream" and output["name"] == "stderr"]
    printed = "".join(output["text"] for output in outputs if output["type"] == "stream")
    assert "profile 'smoke'" in printed
    # the smoke section of params/00_walkthrough.yaml applies without papermill: 60 simulated steps, not 400
    trajectories = (tmp_path / "results" / "walkthrough_trajectories.csv").read_text().splitlines()
    assert len(trajectories) == 1 + 6 * 60
    for stem in ("walkthrough_gradient_scale", "walkthrough_controllers", "walkthrough_gradient_balance"):
        assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 1000
        assert (tmp_path / "figures" / f"{stem}.pdf").stat().st_size > 1000


# --- dualloop.notebook: the parameters a notebook resolves are those `dualloop reproduce` passes -----------------


def _reproduce_parameters(monkeypatch, tmp_path, profile: str, overrides: dict | None = None) -> dict[str, dict]:
    """The parameters `dualloop reproduce` hands papermill for each phase (papermill itself not run)."""
    import papermill

    from dualloop.pipeline import reproduce

    passed = {}
    for variable in ("OPENAI_API_KEY", "GEMINI_API_KEY"):  # the paper profile's judges; nothing is called
        monkeypatch.setenv(variable, "sk-dualloop-test-" + "k" * 32)
    monkeypatch.setattr(
        papermill,
        "execute_notebook",
        lambda source, target, parameters, **_: passed.__setitem__(Path(source).stem, parameters),
    )
    reproduce(profile, out=tmp_path, overrides=overrides)
    return passed


def _defaults(stem: str) -> dict:
    from dualloop.config import declared_parameters

    return {
        name: ast.literal_eval(entry["default"])
        for name, entry in declared_parameters(REPO_ROOT / "notebooks" / f"{stem}.ipynb").items()
    }


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_a_notebook_run_without_injection_resolves_its_profile_as_reproduce_does(monkeypatch, tmp_path, profile):
    from dualloop.notebook import prepare, resolve

    monkeypatch.chdir(tmp_path)
    passed = _reproduce_parameters(monkeypatch, tmp_path / "out", profile)
    assert len(passed) >= 8
    for stem, parameters in passed.items():
        defaults = _defaults(stem)
        assert parameters[RESOLVED_FOR] == stem  # the runner names the notebook it resolved them for
        in_jupyterlab = resolve(stem, {**defaults, "profile": profile, "output_dir": str(tmp_path / "out")})
        assert in_jupyterlab == {**defaults, **parameters, RESOLVED_FOR: ""}, stem
        namespace = {**defaults, **parameters}
        prepare(stem, namespace)
        assert namespace == {**defaults, **parameters}, stem  # taken as they are: nothing merged again


def test_an_edit_in_the_parameters_cell_acts_as_set(monkeypatch, tmp_path):
    from dualloop.notebook import resolve

    passed = _reproduce_parameters(monkeypatch, tmp_path, "smoke", {"training": {"max_steps": 5}})
    defaults = _defaults("02_main_comparison")
    edited = resolve(
        "02_main_comparison",
        {**defaults, "profile": "smoke", "output_dir": str(tmp_path), "training": {"max_steps": 5}},
    )
    assert edited == {**defaults, **passed["02_main_comparison"], RESOLVED_FOR: ""}
    assert edited["training"]["max_steps"] == 5 and edited["training"]["max_length"] == 96  # merged into the profile's
    # a value equal to the cell's default is not an edit: the smoke section's 60 steps, not the cell's 400
    walkthrough = _defaults("00_walkthrough")
    assert (
        resolve("00_walkthrough", {**walkthrough, "profile": "smoke", "simulated_steps": 400})["simulated_steps"] == 60
    )
    assert resolve("00_walkthrough", {**walkthrough, "profile": "smoke"})["output_dir"] == str(
        REPO_ROOT / "runs" / "smoke"
    )


def test_the_parameters_command_gives_papermill_what_reproduce_injects(monkeypatch, tmp_path, capsys):
    import yaml

    from dualloop.__main__ import main

    passed = _reproduce_parameters(monkeypatch, tmp_path, "smoke", {"simulated_steps": 400})
    capsys.readouterr()  # the runner's progress lines
    assert (
        main(
            ["parameters", "--profile", "smoke", "--phase", "0", "--out", str(tmp_path), "--set", "simulated_steps=400"]
        )
        == 0
    )
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed == passed["00_walkthrough"] and printed["simulated_steps"] == 400


def test_plain_papermill_with_the_parameters_file_runs_the_walkthrough_as_reproduce_would(tmp_path):
    """`dualloop parameters` then papermill's own command line, `-f` the file and `-p` one value over it."""
    values = tmp_path / "walkthrough.yaml"
    command = [
        sys.executable,
        "-m",
        "dualloop",
        "parameters",
        "--profile",
        "smoke",
        "--phase",
        "0",
        "--out",
        str(tmp_path),
    ]
    values.write_text(subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO_ROOT).stdout)
    executed = tmp_path / "walkthrough.ipynb"
    papermill = Path(sys.executable).with_name("papermill")
    notebook = REPO_ROOT / "notebooks" / "00_walkthrough.ipynb"
    # 400 is the cell's default: given with -p over the resolved file, it replaces the smoke section's 60
    subprocess.run(
        [
            papermill,
            str(notebook),
            str(executed),
            "-f",
            str(values),
            "-p",
            "simulated_steps",
            "400",
            "--no-progress-bar",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    trajectories = (tmp_path / "results" / "walkthrough_trajectories.csv").read_text().splitlines()
    assert len(trajectories) == 1 + 6 * 400
    outputs = [output for cell in nbformat.read(executed, as_version=4).cells for output in cell.get("outputs", [])]
    assert not any("as `dualloop reproduce` resolves them" in output.get("text", "") for output in outputs)


QUIET_CHECK = """
import sys, warnings
if sys.argv[1] == "before":
    import transformers
from dualloop.notebook import quiet
quiet()
import datasets, huggingface_hub, transformers
for module in ("transformers.training_args", "dualloop.experiment"):
    warnings.warn_explicit("`gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                           "x.py", 1, module=module)
print(transformers.utils.logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled(),
      huggingface_hub.utils.are_progress_bars_disabled())
"""


@pytest.mark.parametrize("imported", ["before", "after"])
def test_quiet_turns_progress_bars_and_only_the_known_warnings_off(imported):
    result = subprocess.run(
        [sys.executable, "-c", QUIET_CHECK, imported], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    assert result.stdout.split() == ["False", "False", "True"]
    assert result.stderr.count("`gradient_checkpointing` is deprecated") == 1  # the one from dualloop's own module


def test_parameters_resolved_for_another_notebook_are_refused_naming_both(monkeypatch, tmp_path):
    from dualloop.notebook import prepare

    monkeypatch.chdir(tmp_path)
    namespace = {**_defaults("02_main_comparison"), "profile": "smoke", RESOLVED_FOR: "00_walkthrough"}
    with pytest.raises(
        ParamsError, match=r"resolved_for '00_walkthrough'.*00_walkthrough\.ipynb, not 02_main_comparison"
    ):
        prepare("02_main_comparison", namespace)


@pytest.mark.parametrize("resolved_here", [False, True], ids=["papermill-p-over-a-resolved-file", "jupyterlab"])
def test_the_kernel_checks_its_values_as_reproduce_checks_them(monkeypatch, tmp_path, resolved_here):
    from dualloop.notebook import prepare

    monkeypatch.chdir(tmp_path)
    resolved = _reproduce_parameters(monkeypatch, tmp_path, "smoke")["02_main_comparison"]
    defaults = _defaults("02_main_comparison")
    given = {"seeds": [0, 0]} if not resolved_here else {"training": {"learning_rate": -1.0}}
    namespace = {**defaults, "profile": "smoke", **given} if resolved_here else {**defaults, **resolved, **given}
    message = "seeds[1]=0 repeats a seed" if not resolved_here else "training.learning_rate=-1.0 must be"
    with pytest.raises(ParamsError, match=rf"^phase 02 \(02_main_comparison\): .*{re.escape(message)}"):
        prepare("02_main_comparison", namespace)
