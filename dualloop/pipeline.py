"""The runner: execute the phase notebooks in order with papermill, one plain line per step.

``python -m dualloop reproduce --profile P [--phases 0,2] [--out DIR]`` resolves each notebook's
parameters (:mod:`dualloop.config`), executes it into ``DIR/notebooks/`` and appends every
progress line to ``DIR/reproduce.log``: the runner's own, and each line a phase prints while it
runs (training steps, generation batches, judges), prefixed with the phase number and streamed
through papermill's ``stdout_file`` as it arrives. A phase that raises stops the run with a
:class:`PhaseFailed` naming the phase, the cell and the executed notebook holding the traceback.

Every phase's parameters are resolved and validated (:func:`dualloop.config.check_values`, and the
sections an :class:`~dualloop.experiment.Experiment` is built from) before the first phase runs. One
``reproduce`` writes to an output folder at a time (a second one is refused, naming the first), and
the log, the executed notebooks and the failure messages are redacted (:mod:`dualloop.redaction`).

``--jobs N`` runs up to N phases at once, each in its own process and kernel, splitting the cores
between the phases running: a kernel starts on its share (``OMP_NUM_THREADS``) and takes its new
share at its next training, generation or scoring whenever a phase starts or ends
(:mod:`dualloop.threads`). A phase starts once the selected phases it reads from have finished: a
notebook names them in its metadata, ``{"dualloop": {"after": ["01_beta_sweep", ...]}}``. Small models' matrices scale poorly across
threads, so several phases on a few threads each do more work per second than one phase on all of
them (measured in ``benchmarks/README.md``). When a phase fails, the phases running finish, none starts, and
the first failure is raised.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dualloop.config import (
    REPO_ROOT,
    RESOLVED_FOR,
    ParamsError,
    check_keys,
    check_profile_name,
    check_values,
    declared_parameters,
    default_output_dir,
    resolve_parameters,
)
from dualloop.locking import file_lock
from dualloop.redaction import redact
from dualloop.threads import ENV as THREADS_ENV
from dualloop.threads import write_share

__all__ = [
    "Phase",
    "PhaseFailed",
    "discover_phases",
    "phase_parameters",
    "select_phases",
    "reproduce",
    "validate_phase",
]

NOTEBOOK_NAME = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")


@dataclass(frozen=True)
class Phase:
    number: int
    notebook: Path
    after: tuple[str, ...] = ()  # the phases (notebook names) whose outputs it reads

    @property
    def name(self) -> str:
        return self.notebook.stem


class PhaseFailed(RuntimeError):
    """A phase notebook raised; the message names the phase, the cell and the executed notebook;
    ``error_name`` is the exception's class name as the kernel reported it (e.g. ``CostCapExceeded``)."""

    def __init__(self, message: str, error_name: str = "") -> None:
        super().__init__(message)
        self.error_name = error_name


def discover_phases(notebooks_dir: Path) -> list[Phase]:
    """Notebooks named ``NN_name.ipynb``, in phase order, each with the phases it runs after."""
    phases = [
        Phase(int(match.group(1)), path, _after(path))
        for path in sorted(Path(notebooks_dir).glob("*.ipynb"))
        if (match := NOTEBOOK_NAME.match(path.name))
    ]
    if not phases:
        raise ParamsError(f"{notebooks_dir}: no phase notebooks (NN_name.ipynb)")
    return phases


def _after(notebook: Path) -> tuple[str, ...]:
    """The notebook's ``metadata.dualloop.after``: names of the phases whose outputs it reads."""
    after = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {}).get("dualloop", {}).get("after", [])
    if not isinstance(after, list) or not all(isinstance(name, str) for name in after):
        raise ParamsError(f"{notebook}: metadata.dualloop.after must be a list of notebook names, got {after!r}")
    return tuple(after)


def select_phases(phases: list[Phase], numbers: list[int] | None) -> list[Phase]:
    if numbers is None:
        return phases
    if not numbers:
        raise ParamsError("--phases selects no phase; give numbers like 0,2, or leave --phases out for all")
    by_number = {phase.number: phase for phase in phases}
    unknown = [n for n in numbers if n not in by_number]
    if unknown:
        raise ParamsError(f"unknown phase(s) {unknown}; available: {sorted(by_number)}")
    return [by_number[n] for n in sorted(set(numbers))]


class _ProgressLog:
    """Prints plain lines (readable in a terminal, a papermill log and CI) and keeps them in a file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        stamped = redact(f"[dualloop {time.strftime('%H:%M:%S')}] {line}")
        print(stamped, flush=True)
        with self.path.open("a") as log:
            log.write(stamped + "\n")


class _PhaseOutput:
    """A file-like sink for a phase's stdout (papermill's ``stdout_file``): each complete line goes
    to the progress log with the phase's number."""

    def __init__(self, log: _ProgressLog, phase: Phase) -> None:
        self.log, self.prefix, self.pending = log, f"phase {phase.number:02d}: ", ""

    def write(self, text: str) -> int:
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            if line.strip():
                self.log(self.prefix + line.rstrip())
        return len(text)

    def flush(self) -> None:
        """Lines are written when complete; a partial line waits for its end (or :meth:`close`)."""

    def close(self) -> None:
        self.write("\n")


def reproduce(
    profile: str,
    *,
    phases: list[int] | None = None,
    out: Path | None = None,
    overrides: dict[str, Any] | None = None,
    notebooks_dir: Path = REPO_ROOT / "notebooks",
    params_dir: Path = REPO_ROOT / "params",
    jobs: int = 1,
) -> list[Path]:
    """Execute the selected phases under ``profile`` into ``out`` (default ``runs/<profile>``), up to
    ``jobs`` at a time.

    Returns the executed notebooks' paths, in phase order. Parameters are resolved for every phase
    before the first one runs, so a bad key or value fails fast and loses no work.
    """
    if jobs < 1:
        raise ParamsError(f"--jobs must be at least 1, got {jobs}")
    out = Path(out or default_output_dir(profile)).resolve()
    plans = phase_parameters(profile, phases, out, overrides, notebooks_dir=notebooks_dir, params_dir=params_dir)
    out.mkdir(parents=True, exist_ok=True)
    with file_lock(out, timeout=0):
        log = _ProgressLog(out / "reproduce.log")
        at_once = f"; up to {jobs} phases at a time" if jobs > 1 else ""
        log(f"profile {profile}: phases {', '.join(phase.name for phase, _ in plans)} → {out}{at_once}")
        if jobs == 1:
            return [_execute(phase, parameters, out, log) for phase, parameters in plans]
        return _run_at_once(plans, out, jobs)


def phase_parameters(
    profile: str,
    phases: list[int] | None,
    out: Path,
    overrides: dict[str, Any] | None = None,
    *,
    notebooks_dir: Path = REPO_ROOT / "notebooks",
    params_dir: Path = REPO_ROOT / "params",
) -> list[tuple[Phase, dict[str, Any]]]:
    """Each selected phase with the parameters papermill injects into it, resolved and validated once.

    Besides the profile ⊕ phase file ⊕ ``overrides`` (:func:`dualloop.config.resolve_parameters`), the
    parameters name the output folder, the profile and the notebook they were resolved for
    (:data:`dualloop.config.RESOLVED_FOR`): its kernel then takes them as they are.
    """
    check_profile_name(profile)
    every_phase = discover_phases(notebooks_dir)
    all_declared = {phase: declared_parameters(phase.notebook) for phase in every_phase}
    all_keys = set().union(*all_declared.values())
    selected = select_phases(every_phase, phases)
    declared = {phase: all_declared[phase] for phase in selected}
    overrides = overrides or {}
    check_keys(overrides, set().union(*declared.values()), "--set (no selected phase declares it)")
    plans = []
    for phase in selected:
        parameters = resolve_parameters(
            phase.notebook,
            profile,
            params_dir=params_dir,
            profile_keys=all_keys,
            overrides={k: v for k, v in overrides.items() if k in declared[phase]},
        )
        if "output_dir" in declared[phase]:
            parameters["output_dir"] = str(out)
        if "profile" in declared[phase]:  # what the notebook records its results under
            parameters["profile"] = profile
        validate_phase(phase, parameters)
        parameters[RESOLVED_FOR] = phase.notebook.stem
        plans.append((phase, parameters))
    return plans


EXPERIMENT_SECTIONS = ("model", "training", "data", "generation", "evaluation")


def validate_phase(phase: Phase, parameters: dict[str, Any]) -> None:
    """ParamsError naming the phase, the key path and the value for the first bad value of ``parameters``."""
    from dualloop.experiment import Experiment

    check_values(parameters, f"phase {phase.number:02d} ({phase.name})")
    if all(isinstance(parameters.get(section), dict) for section in EXPERIMENT_SECTIONS):
        try:
            experiment = Experiment.from_parameters(
                profile=parameters.get("profile", ""),
                output_dir=parameters.get("output_dir", "."),
                seed=parameters.get("seed", 0),
                **{section: parameters[section] for section in EXPERIMENT_SECTIONS},
            )
            for prompt_set in _local_prompt_sets(parameters):
                experiment.prompts(prompt_set)  # n_prompts within the set's size, before any training
            for method in _methods_to_check(parameters["training"]):
                experiment.run_config(method)  # every controller and loss argument by its own rules
        except (ValueError, TypeError) as error:
            raise ParamsError(f"phase {phase.number:02d} ({phase.name}): {error}") from None


def _local_prompt_sets(parameters: dict[str, Any]) -> list[str]:
    """The prompt sets a phase evaluates that load without a hub: shipped with the project, or the user's own files."""
    from dualloop.experiment import CHECKED_PROMPT_SETS
    from dualloop.experiment.sections import CUSTOM_PROMPT_SETS
    from dualloop.offline_sets import OFFLINE_PROMPT_SETS

    named = [parameters.get("prompt_set"), *(parameters.get("prompt_sets") or [])]
    local = (*CHECKED_PROMPT_SETS, *OFFLINE_PROMPT_SETS, *CUSTOM_PROMPT_SETS)
    return [name for name in named if name in local]


def _methods_to_check(training: dict[str, Any]) -> list[str]:
    """The methods whose run settings a phase's ``training`` section could give: every registered controller
    and, unless the section names a loss, every loss that is a method."""
    from dualloop.methods import methods

    table = methods()
    return [name for name, method in table.items() if name == method["controller"] or "loss_type" not in training]


def _matmul_speed(size: int = 1024, repeats: int = 8) -> str:
    """This machine's fp32 matmul throughput at this moment, in torch's threads, as a phrase for the
    log: a shared machine's speed drifts, and the phases' times mean little without it."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    gflops = 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9
    return f"fp32 matmul {gflops:.0f} GFLOP/s on {torch.get_num_threads()} threads"


def _redact_file(path: Path) -> None:
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if redact(text) != text:
            path.write_text(redact(text), encoding="utf-8")


def _execute(phase: Phase, parameters: dict[str, Any], out: Path, log: _ProgressLog) -> Path:
    """Execute one phase notebook into ``out/notebooks/``; its printed lines go to ``log``."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    target = out / "notebooks" / phase.notebook.name
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"phase {phase.number:02d} ({phase.name}): running; this machine now: {_matmul_speed()}")
    started = time.monotonic()
    printed = _PhaseOutput(log, phase)
    try:
        papermill.execute_notebook(
            str(phase.notebook),
            str(target),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
            stdout_file=printed,
            cwd=str(REPO_ROOT),
        )
    except PapermillExecutionError as error:
        printed.close()
        _redact_file(target)
        log(f"phase {phase.number:02d} ({phase.name}): FAILED in cell In [{error.exec_count}]")
        raise PhaseFailed(
            redact(
                f"phase {phase.number:02d} ({phase.name}) failed in cell In [{error.exec_count}]: "
                f"{error.ename}: {error.evalue}. The traceback is in {target}"
            ),
            error.ename,
        ) from None
    printed.close()
    _redact_file(target)
    elapsed = time.monotonic() - started
    log(
        f"phase {phase.number:02d} ({phase.name}): done in {elapsed:.1f} s → {target}; this machine now: {_matmul_speed()}"
    )
    return target


def _execute_with_threads(
    phase: Phase, parameters: dict[str, Any], out: Path, threads: int, share_file: Path
) -> tuple[Path | None, str, str]:
    """:func:`_execute` in a worker process: its kernel starts on ``threads`` threads and follows
    ``share_file`` afterwards (:mod:`dualloop.threads`); returns (executed notebook, "", "") or, when
    the phase failed, (None, message, exception name)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the kernel's torch when it starts
    os.environ[THREADS_ENV] = str(share_file)
    import torch

    torch.set_num_threads(threads)  # this worker's own probe (_matmul_speed)
    try:
        return _execute(phase, parameters, out, _ProgressLog(out / "reproduce.log")), "", ""
    except PhaseFailed as failure:
        return None, str(failure), failure.error_name


def _run_at_once(plans: list[tuple[Phase, dict[str, Any]]], out: Path, jobs: int) -> list[Path]:
    """Run the phases in worker processes, up to ``jobs`` at a time, each once the selected phases it
    runs after have finished; whenever a phase starts or ends, the cores are split anew between the
    phases running (each takes its share at its next training, generation or scoring)."""
    selected = {phase.name for phase, _ in plans}
    cores = len(os.sched_getaffinity(0))
    shares = out / ".threads"
    waiting, done = list(plans), set[str]()
    running: dict[Future, Phase] = {}
    executed: dict[Phase, Path] = {}
    failure: PhaseFailed | None = None

    def share_cores() -> None:
        for phase in running.values():
            write_share(shares / phase.name, max(1, cores // len(running)))

    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads fixed by the parent
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context, max_tasks_per_child=1) as pool:
        while waiting or running:
            if failure is None:
                ready = [plan for plan in waiting if all(n in done or n not in selected for n in plan[0].after)]
                starting = ready[: jobs - len(running)]
                share = max(1, cores // max(1, len(running) + len(starting)))
                for phase, parameters in starting:
                    waiting.remove((phase, parameters))
                    future = pool.submit(_execute_with_threads, phase, parameters, out, share, shares / phase.name)
                    running[future] = phase
            if not running:
                break
            share_cores()  # after this round's starts: a phase never reads a share meant for fewer phases
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                phase = running.pop(future)
                target, message, error_name = future.result()
                if target is None:
                    failure = failure or PhaseFailed(message, error_name)
                else:
                    executed[phase] = target
                    done.add(phase.name)
    shutil.rmtree(shares, ignore_errors=True)
    if failure is not None:
        raise failure
    return [executed[phase] for phase, _ in plans]
