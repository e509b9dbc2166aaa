"""The runner end to end: notebooks executed by papermill, outputs written, failures named."""

import functools
import json
import os
import re

import nbformat
import pytest

import dualloop.pipeline
from dualloop.__main__ import main
from dualloop.config import REPO_ROOT, ParamsError
from dualloop.pipeline import PhaseFailed, reproduce


def test_walkthrough_runs_on_the_smoke_profile_and_writes_figures_and_results(tmp_path):
    executed = reproduce("smoke", phases=[0], out=tmp_path)
    assert [p.name for p in executed] == ["00_walkthrough.ipynb"]
    for name in ("walkthrough_gradient_scale", "walkthrough_controllers", "walkthrough_gradient_balance"):
        for suffix in (".png", ".pdf"):
            assert (tmp_path / "figures" / f"{name}{suffix}").stat().st_size > 1000
    summary = (tmp_path / "results" / "walkthrough_summary.csv").read_text()
    assert "DualLoop" in summary and "ε-DPO" in summary
    notebook = nbformat.read(executed[0], as_version=4)
    injected = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert "simulated_steps = 60" in injected[0].source  # the smoke section of params/00_walkthrough.yaml
    log = (tmp_path / "reproduce.log").read_text()
    assert "phase 00 (00_walkthrough): done" in log
    # each phase's time sits beside the machine's speed before and after it (a shared machine drifts)
    assert len(re.findall(r"this machine now: fp32 matmul \d+ GFLOP/s on \d+ threads", log)) == 2


def empty_project(tmp_path):
    """An empty notebooks folder and a params folder with an empty smoke profile."""
    notebooks = tmp_path / "notebooks"
    notebooks.mkdir()
    params = tmp_path / "params"
    (params / "profiles").mkdir(parents=True)
    (params / "profiles" / "smoke.yaml").write_text("{}\n")
    return notebooks, params


def failing_notebooks(tmp_path):
    notebooks, params = empty_project(tmp_path)
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('output_dir: str = "."  # where to write')
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [
        cell,
        nbformat.v4.new_code_cell(
            "print('step 1/2 loss 0.69')\nprint('step 2/2 ', end='')\nprint('loss 0.5')\nprint('judging', end='')"
        ),
        nbformat.v4.new_code_cell("raise RuntimeError('the judge ran out of prompts')"),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, notebooks / "03_broken.ipynb")
    (params / "03_broken.yaml").write_text("")  # an empty phase file: the notebook's defaults
    return notebooks, params


def test_a_failing_phase_names_the_phase_cell_and_executed_notebook(tmp_path):
    notebooks, params = failing_notebooks(tmp_path)
    with pytest.raises(PhaseFailed) as failure:
        reproduce("smoke", out=tmp_path / "out", notebooks_dir=notebooks, params_dir=params)
    message = str(failure.value)
    assert "phase 03 (03_broken) failed in cell In [4]" in message  # the injected parameters cell runs first
    assert "the judge ran out of prompts" in message
    executed = tmp_path / "out" / "notebooks" / "03_broken.ipynb"
    assert str(executed) in message
    assert "RuntimeError" in json.dumps(nbformat.read(executed, as_version=4).cells[-1].outputs)
    log = (tmp_path / "out" / "reproduce.log").read_text()  # what the phase printed, line by line, as it ran
    assert "] phase 03: step 1/2 loss 0.69\n" in log and "] phase 03: step 2/2 loss 0.5\n" in log
    assert "] phase 03: judging\n" in log  # a last unfinished line is not lost
    assert "phase 03 (03_broken): FAILED in cell In [4]" in log


def test_a_phase_stopped_by_the_cost_cap_exits_2_like_a_judging_and_keeps_the_phases_before_it(
    tmp_path, monkeypatch, capsys
):
    notebooks, params = failing_notebooks(tmp_path)
    broken = nbformat.read(notebooks / "03_broken.ipynb", as_version=4)
    broken.cells[-1].source = (
        "from dualloop.judges import CostCapExceeded\n"
        "raise CostCapExceeded('evaluation.max_cost_usd=0.01: 400 judge calls estimated at 0.02 USD')"
    )
    nbformat.write(broken, notebooks / "03_broken.ipynb")
    first = nbformat.read(notebooks / "03_broken.ipynb", as_version=4)
    first.cells = first.cells[:1]
    nbformat.write(first, notebooks / "01_before.ipynb")
    (params / "01_before.yaml").write_text("")
    monkeypatch.setattr(
        dualloop.pipeline, "reproduce", functools.partial(reproduce, notebooks_dir=notebooks, params_dir=params)
    )
    out = tmp_path / "out"
    assert main(["reproduce", "--profile", "smoke", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(
        "dualloop: phase 03 (03_broken) failed in cell In [4]: CostCapExceeded: evaluation.max_cost_usd"
    )
    assert error.count("\n") == 1
    assert (out / "notebooks" / "01_before.ipynb").is_file()  # the phase before it is kept


def test_a_phase_without_its_phase_file_is_named_before_any_phase_runs(tmp_path):
    notebooks, params = empty_project(tmp_path)
    phase_notebook(notebooks / "01_first.ipynb", "print('ran')")
    phase_notebook(notebooks / "02_second.ipynb", "print('ran')")
    (params / "02_second.yaml").unlink()
    out = tmp_path / "out"
    with pytest.raises(ParamsError) as error:
        reproduce("smoke", out=out, notebooks_dir=notebooks, params_dir=params)
    assert str(error.value).startswith(f"02_second.ipynb: no phase file {params / '02_second.yaml'}")
    assert not out.exists()  # phase 01 did not run


def test_notebooks_are_committed_without_outputs():
    for path in (REPO_ROOT / "notebooks").glob("*.ipynb"):
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has outputs"


def phase_notebook(path, source, after=()):
    """A phase notebook: a parameters cell (output_dir) and one code cell; ``after`` its metadata; an empty
    phase file beside it in ``params/``."""
    parameters = nbformat.v4.new_code_cell('output_dir: str = "."  # where to write')
    parameters.metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [parameters, nbformat.v4.new_code_cell(source)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if after:
        notebook.metadata["dualloop"] = {"after": list(after)}
    nbformat.write(notebook, path)
    (path.parent.parent / "params" / f"{path.stem}.yaml").write_text("")


def parallel_notebooks(tmp_path, first_source):
    """01_first (``first_source``), 02_second after it (reads its file) and 03_free, which runs after
    nothing; each writes the threads its kernel was given."""
    notebooks, params = empty_project(tmp_path)
    threads = (
        "import os, pathlib\npathlib.Path(output_dir, '{name}.threads').write_text(os.environ['OMP_NUM_THREADS'])\n"
    )
    phase_notebook(notebooks / "01_first.ipynb", threads.format(name="01") + first_source)
    phase_notebook(
        notebooks / "02_second.ipynb",
        threads.format(name="02") + "print('read', pathlib.Path(output_dir, 'first.txt').read_text())",
        after=["01_first"],
    )
    phase_notebook(notebooks / "03_free.ipynb", threads.format(name="03") + "print('free')")
    return notebooks, params


def test_jobs_run_phases_at_once_each_after_the_phases_it_reads_from(tmp_path):
    first = "import time\ntime.sleep(3)\npathlib.Path(output_dir, 'first.txt').write_text('from phase 1')"
    notebooks, params = parallel_notebooks(tmp_path, first)
    out = tmp_path / "out"
    executed = reproduce("smoke", out=out, notebooks_dir=notebooks, params_dir=params, jobs=2)
    assert [path.name for path in executed] == ["01_first.ipynb", "02_second.ipynb", "03_free.ipynb"]
    log = (out / "reproduce.log").read_text()
    assert "phases 01_first, 02_second, 03_free → " in log and "; up to 2 phases at a time" in log
    assert "] phase 02: read from phase 1\n" in log
    assert log.index("phase 01 (01_first): done") < log.index("phase 02 (02_second): running")
    assert log.index("phase 03 (03_free): running") < log.index("phase 01 (01_first): done")  # at once
    cores = len(os.sched_getaffinity(0))
    # 01 and 03 started together and split the cores
    assert (out / "01.threads").read_text() == (out / "03.threads").read_text() == str(max(1, cores // 2))


def test_with_jobs_a_failing_phase_lets_the_running_ones_finish_and_starts_none_after_it(tmp_path):
    notebooks, params = parallel_notebooks(tmp_path, "raise RuntimeError('phase 1 broke')")
    out = tmp_path / "out"
    with pytest.raises(PhaseFailed) as failure:
        reproduce("smoke", out=out, notebooks_dir=notebooks, params_dir=params, jobs=2)
    assert str(failure.value).startswith("phase 01 (01_first) failed in cell In [")
    assert "RuntimeError: phase 1 broke" in str(failure.value)
    assert (out / "notebooks" / "03_free.ipynb").is_file()  # it ran beside the failing one
    assert not (out / "notebooks" / "02_second.ipynb").exists()  # it reads from the failed phase


def test_every_phase_runs_after_earlier_phases_only():
    phases = dualloop.pipeline.discover_phases(REPO_ROOT / "notebooks")
    order = {phase.name: phase.number for phase in phases}
    for phase in phases:
        for name in phase.after:
            assert name in order and order[name] < phase.number, f"{phase.name} runs after {name}"
    assert {phase.name: phase.after for phase in phases}["05_dynamic_baselines"] == (
        "01_beta_sweep",
        "02_main_comparison",
        "03_ablations",  # its accuracy-KL figure reads phase 3's summary
    )


def test_with_jobs_a_phase_left_alone_takes_all_cores_at_its_next_piece_of_work(tmp_path):
    notebooks, params = empty_project(tmp_path)
    phase_notebook(notebooks / "01_short.ipynb", "print('short')")
    long_phase = (
        "import os, pathlib, time, torch\n"
        "from dualloop.threads import ENV, follow_runner\n"
        "share = pathlib.Path(os.environ[ENV])\n"
        "started = torch.get_num_threads()\n"
        "deadline = time.monotonic() + 120\n"
        "while share.read_text() != str(len(os.sched_getaffinity(0))) and time.monotonic() < deadline:\n"
        "    time.sleep(0.2)\n"
        "follow_runner()  # what load_policy calls before each training, generation or scoring\n"
        "pathlib.Path(output_dir, 'threads.txt').write_text(f'{started} {torch.get_num_threads()}')"
    )
    phase_notebook(notebooks / "02_long.ipynb", long_phase)
    out = tmp_path / "out"
    reproduce("smoke", out=out, notebooks_dir=notebooks, params_dir=params, jobs=2)
    cores = len(os.sched_getaffinity(0))
    assert (out / "threads.txt").read_text() == f"{max(1, cores // 2)} {cores}"
    assert "dualloop.threads: now" in (out / "reproduce.log").read_text() or cores == 1
    assert not (out / ".threads").exists()  # the shares are gone with the run


def test_follow_runner_changes_nothing_outside_reproduce_jobs(tmp_path, monkeypatch):
    import torch

    from dualloop.threads import ENV, follow_runner, write_share

    before = torch.get_num_threads()
    monkeypatch.delenv(ENV, raising=False)
    follow_runner()
    assert torch.get_num_threads() == before
    write_share(tmp_path / "share", 1)
    monkeypatch.setenv(ENV, str(tmp_path / "share"))
    try:
        follow_runner()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
