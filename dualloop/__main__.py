"""Command line: ``python -m dualloop <command>`` (also installed as ``dualloop``).

- ``reproduce``: execute the phase notebooks with papermill (:mod:`dualloop.pipeline`);
- ``parameters``: print one phase's parameters as ``reproduce`` resolves and injects them, as YAML for
  ``papermill -f`` (the notebook then takes them as they are, :mod:`dualloop.notebook`);
- ``train``: train one method under a profile, or reuse its finished run (:mod:`dualloop.experiment`);
- ``judge``: judge two systems on a prompt set and print the win rate with its interval;
- ``serve-command``: print the ``vllm serve`` line that serves the base model and every finished run
  of the output folder's registry, for ``generation.backend: server`` (:mod:`dualloop.serving`).

Every command exits 0 on success and, on a problem it can name, prints one line to stderr (redacted,
:mod:`dualloop.redaction`) and exits 2 (bad input, a missing API key) or 1 (a phase or run that failed,
an output folder another process is writing). Values are validated before any work
(:func:`dualloop.config.check_values`), ``--set a.b.c=value`` at any depth. A judging whose API calls are
estimated above ``evaluation.max_cost_usd`` stops before the first call (exit 2, also under ``reproduce``:
the phases and generations before it stay cached).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from dualloop.config import (
    REPO_ROOT,
    ParamsError,
    check_keys,
    check_profile_name,
    check_values,
    default_output_dir,
    load_yaml,
    merge,
    parse_overrides,
)
from dualloop.methods import methods
from dualloop.redaction import redact

SECTIONS = ("model", "training", "data", "generation", "evaluation")


def _phase_numbers(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--phases must be comma-separated numbers like 0,2, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dualloop", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    reproduce = commands.add_parser("reproduce", help="execute the phase notebooks with papermill")
    reproduce.add_argument(
        "--phases", type=_phase_numbers, default=None, help="comma-separated phase numbers (default: all), e.g. 0,2"
    )
    reproduce.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="phases run at once, each after the phases it reads from, the cores split between them (default 1)",
    )
    parameters = commands.add_parser(
        "parameters", help="print one phase's resolved parameters as YAML, for papermill -f"
    )
    parameters.add_argument("--phase", type=int, required=True, help="the phase number, e.g. 2")
    train = commands.add_parser("train", help="train a method (or reuse its finished run)")
    train.add_argument(
        "--method", required=True, help=f"a registered method: {', '.join(methods())} (dualloop.methods)"
    )
    train.add_argument("--steps", type=int, default=None, help="optimizer steps (training.max_steps)")
    judge = commands.add_parser("judge", help="judge system A against system B on a prompt set")
    judge.add_argument(
        "--a",
        required=True,
        help="'base', a method name (its run under this profile) or a run directory of the registry given as a "
        "path, with a '/' (e.g. runs/cpu/registry/<id> or ./<id>)",
    )
    judge.add_argument("--b", required=True, help="like --a")
    judge.add_argument("--prompts", required=True, help="prompt set, e.g. verifiable-heldout")
    serve = commands.add_parser(
        "serve-command", help="print the vllm command serving the base model and the finished runs (by run id)"
    )
    for command in (train, judge):
        command.add_argument(
            "--seed",
            type=int,
            default=None,
            help="seed of training, data sampling and the judges' position coin (default: the profile's); "
            "each (method, seed) is its own run",
        )
    for command in (reproduce, parameters, train, judge, serve):
        command.add_argument("--profile", required=True, help="smoke, cpu or paper (params/profiles/<name>.yaml)")
        command.add_argument("--out", type=Path, default=None, help="output folder (default: runs/<profile>)")
        command.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a parameter, value read as YAML, at any depth (train/judge: "
            "SECTION.KEY[.SUBKEY]=VALUE, e.g. training.controller_kwargs.lam=2.5); repeatable",
        )
    return parser


def experiment_from_profile(
    profile: str,
    out: Path | None,
    overrides: list[str],
    training_overrides: dict | None = None,
    seed: int | None = None,
):
    """The :class:`~dualloop.experiment.Experiment` of a profile file with dotted ``--set`` overrides (and
    ``training_overrides``, e.g. ``--steps``), every value validated first; ``seed`` (``--seed``) replaces
    the profile's seed."""
    from dualloop.experiment import Experiment

    path = REPO_ROOT / "params" / "profiles" / f"{check_profile_name(profile)}.yaml"
    if not path.is_file():
        raise ParamsError(f"unknown profile {profile!r}: no {path}")
    values = load_yaml(path)
    check_keys(values, _profile_keys(), str(path))  # as `reproduce` checks the profile
    sections = {name: dict(values.get(name) or {}) for name in SECTIONS}
    for section, value in parse_overrides(overrides).items():
        if section not in sections or not isinstance(value, dict):
            raise ParamsError(f"--set {section}: use SECTION.KEY=VALUE with SECTION one of {', '.join(SECTIONS)}")
        sections[section] = merge(sections[section], value)
    sections["training"] = merge(sections["training"], training_overrides or {})
    source = f"{path} with --set" if overrides else str(path)  # a bad value comes from one of them
    check_values(sections, source)
    try:
        experiment = Experiment.from_parameters(
            profile=profile, output_dir=out or default_output_dir(profile), seed=values.get("seed", 0), **sections
        )
    except (ValueError, TypeError) as error:
        raise ParamsError(f"{source}: {error}") from None
    return experiment if seed is None else experiment.with_seed(seed)


def _profile_keys() -> set[str]:
    """The keys a profile may set: every parameter some phase notebook declares."""
    from dualloop.config import declared_parameters
    from dualloop.pipeline import discover_phases

    return set().union(*(declared_parameters(phase.notebook) for phase in discover_phases(REPO_ROOT / "notebooks")))


def method_arguments(profile: str, method: str, experiment) -> dict:
    """The training overrides a profile gives ``method`` as the phases give it: for ``dualloop``, the
    profile's ``dualloop:`` controller constants (``--set training.controller_kwargs.*`` over them), so
    that ``train``/``judge`` name the same run as phases 02-07."""
    constants = load_yaml(REPO_ROOT / "params" / "profiles" / f"{check_profile_name(profile)}.yaml").get("dualloop")
    if method != "dualloop" or not constants:
        return {}
    return {"controller_kwargs": {**constants, **(experiment.training.get("controller_kwargs") or {})}}


def _train(args) -> int:
    overrides = {} if args.steps is None else {"max_steps": args.steps}
    if args.steps is not None and args.steps < 1:
        raise ParamsError(f"--steps {args.steps}: must be an integer >= 1")
    experiment = experiment_from_profile(args.profile, args.out, args.overrides, overrides, seed=args.seed)
    run = experiment.train(args.method, **overrides, **method_arguments(args.profile, args.method, experiment))
    print(f"dualloop: run {run.id} ({args.method}, seed {experiment.seed}) complete: {run.path}")
    return 0


def _parameters(args) -> int:
    import yaml

    from dualloop.pipeline import phase_parameters

    out = Path(args.out or default_output_dir(args.profile)).resolve()
    [(_, values)] = phase_parameters(args.profile, [args.phase], out, parse_overrides(args.overrides))
    print(redact(yaml.safe_dump(values, sort_keys=False, allow_unicode=True)), end="")
    return 0


def _is_path(given: str) -> bool:
    """One rule for ``--a``/``--b``: a run directory is given as a path, with a ``/`` (``runs/cpu/registry/<id>``,
    ``./<id>``); a bare word (``base``, ``dualloop``) is a system name even where a folder of that name exists."""
    return "/" in given or os.sep in given


def _judge(args) -> int:
    from dualloop.experiment import BASE
    from dualloop.judges import read_decisions
    from dualloop.locking import file_lock
    from dualloop.registry import Run
    from dualloop.stats import win_rate_of

    experiment = experiment_from_profile(args.profile, args.out, args.overrides, seed=args.seed)
    systems, runs = [], {}
    for given in (args.a, args.b):
        if _is_path(given):  # a finished run of the registry: named by its folder
            if not Path(given).is_dir():
                raise ParamsError(f"{given}: no such run directory (a bare name such as 'dualloop' is a method)")
            run = Run(Path(given).resolve())
            if not run.is_complete:
                raise ParamsError(f"{given}: not a finished run (no COMPLETE marker); train it first")
            systems.append(run.id)
            runs[run.id] = run
        else:
            systems.append(given)
            if given != BASE:
                runs[given] = experiment.train(given, **method_arguments(args.profile, given, experiment))
    name = f"{args.prompts}__{systems[0]}__vs__{systems[1]}"  # one judging of a comparison at a time
    with file_lock(experiment.results_dir / "decisions" / experiment.seed_folder / name):
        path = experiment.compare(*systems, args.prompts, runs=runs)
        decisions = read_decisions(path)
    for judge in sorted({d.judge for d in decisions}):
        outcomes = [outcome for d in decisions if d.judge == judge and (outcome := d.outcome()) is not None]
        unparseable = sum(d.judge == judge and d.outcome() is None for d in decisions)
        head = f"{systems[0]} vs {systems[1]} on {args.prompts}, judge {judge}: unparseable {unparseable}"
        if not outcomes:  # nothing to estimate from: say so rather than fail in the statistics
            print(f"{head}; every verdict unparseable, no win rate (a rerun asks the judge again)")
            continue
        result = win_rate_of(outcomes, experiment.evaluation.win_rate_method)
        rate, low, high = result.percent()
        print(f"{head}; win rate {rate:.1f}% [{low:.1f}, {high:.1f}] (N = {result.n}, ties {result.ties})")
    print(f"dualloop: decisions written to {path}")
    return 0


def _serve_command(args) -> int:
    from dualloop.serving import finished_runs, serve_command

    experiment = experiment_from_profile(args.profile, args.out, args.overrides)
    runs = finished_runs(experiment.registry_dir, experiment.model)
    if not runs:
        print(
            f"dualloop: no finished run in {experiment.registry_dir}; the command serves the base model only",
            file=sys.stderr,
        )
    print(serve_command(experiment.model, runs))
    return 0


def check_output_folder(out: Path) -> None:
    """``--out`` is a folder this process can write, or can be created as one; else one ParamsError naming it."""
    if out.exists() and not out.is_dir():
        raise ParamsError(f"--out {out}: is a file, not a folder")
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ParamsError(f"--out {out}: {existing} is not a folder this process can write")


def main(argv: list[str] | None = None) -> int:
    from dualloop.judges import MissingAPIKeyError

    args = build_parser().parse_args(argv)
    try:
        if args.out is not None:
            check_output_folder(args.out)
        if args.command == "reproduce":
            from dualloop.pipeline import PhaseFailed, reproduce

            overrides = parse_overrides(args.overrides)
            try:
                reproduce(args.profile, phases=args.phases, out=args.out, overrides=overrides, jobs=args.jobs)
            except PhaseFailed as failure:
                print(f"dualloop: {failure}", file=sys.stderr)
                return 2 if failure.error_name == "CostCapExceeded" else 1
            return 0
        commands = {"parameters": _parameters, "train": _train, "judge": _judge, "serve-command": _serve_command}
        return commands[args.command](args)
    except (ParamsError, ValueError, TypeError, FileNotFoundError, MissingAPIKeyError) as error:  # bad input
        print(redact(f"dualloop: {error}"), file=sys.stderr)
        return 2
    except RuntimeError as error:  # e.g. a GPU profile without CUDA, a folder another process writes
        print(redact(f"dualloop: {error}"), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
