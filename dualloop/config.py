"""Parameters of a phase: notebook defaults ⊕ profile ⊕ phase file ⊕ command-line overrides.

Mapping-valued parameters (``model``, ``training``, …) merge key by key, so a phase file or a
``--set training.max_steps=5`` changes one setting and keeps the profile's others.

A profile (``params/profiles/<name>.yaml``) holds settings shared by the phases; each notebook
takes the profile keys it declares in its ``parameters`` cell. A phase file
(``params/<notebook stem>.yaml``) sets that notebook's parameters, with an optional
``profiles: {<profile>: {...}}`` section for per-profile values. Every key is checked against the
parameters the notebooks declare (read by papermill): an unknown key is an error that names the
file and suggests the closest known key. Values are checked against the declared types.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from dualloop.names import did_you_mean

__all__ = [
    "ParamsError",
    "REPO_ROOT",
    "load_yaml",
    "declared_parameters",
    "merge",
    "parse_override",
    "parse_overrides",
    "check_keys",
    "check_profile_name",
    "check_values",
    "resolve_parameters",
    "default_output_dir",
    "RESOLVED_FOR",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
PER_PROFILE_SECTION = "profiles"
# The parameter every phase notebook declares for the notebook its values were resolved for: set by
# `dualloop reproduce` and `dualloop parameters` alone, never by a profile, a phase file or --set.
RESOLVED_FOR = "resolved_for"
PROFILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


class _ParamsLoader(yaml.SafeLoader):
    """YAML for params files and ``--set`` values: ``1e-3`` is the float it means (YAML 1.1 reads it as a
    string); a key given twice in one mapping is an error (YAML keeps the last silently); aliases
    (``*name``) are refused, so a small text cannot expand into a huge tree."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not accepted in parameters; write the value out", mark
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} is given twice in one mapping (first {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = f"line {key_node.start_mark.line + 1}"
        return super().construct_mapping(node, deep=deep)


_ParamsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_ParamsLoader)  # noqa: S506 - a SafeLoader subclass


def _yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line and column)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(error).split())


class ParamsError(ValueError):
    """A params file, profile or override that cannot be used; the message names it."""


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; an empty file is ``{}``."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: no such params file")
    try:
        values = _read_yaml(path.read_text())
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML ({_yaml_problem(error)})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ParamsError(
            f"{path}: the top level must be a mapping of parameter names to values, got {type(values).__name__}"
        )
    return values


def declared_parameters(notebook: Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook's ``parameters`` cell declares, as papermill infers them."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    if not declared:
        raise ParamsError(f"{notebook}: has no papermill 'parameters' cell")
    return declared


def merge(base: Any, update: Any) -> Any:
    """``update`` over ``base``; where both are mappings, key by key at every depth."""
    if isinstance(base, dict) and isinstance(update, dict):
        return {**base, **{key: merge(base.get(key), value) for key, value in update.items()}}
    return update


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML (``3``, ``0.1``, ``[1, 2]``).
    ``a.b.c=value`` sets one key of a mapping parameter at any depth: ``("a", {"b": {"c": value}})``,
    merged into that mapping when the parameters are resolved."""
    key, separator, value = text.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not separator or not all(parts):
        raise ParamsError(f"--set {text!r}: expected key=value or section.key=value")
    try:
        parsed = _read_yaml(value)
    except yaml.YAMLError as error:
        raise ParamsError(f"--set {text!r}: the value is not valid YAML ({_yaml_problem(error)})") from None
    for part in reversed(parts[1:]):
        parsed = {part: parsed}
    return parts[0], parsed


def parse_overrides(texts: list[str]) -> dict[str, Any]:
    """Several ``--set`` values; those of the same mapping merge at every depth."""
    overrides: dict[str, Any] = {}
    for text in texts:
        key, value = parse_override(text)
        overrides[key] = merge(overrides.get(key), value)
    return overrides


def check_profile_name(profile: str) -> str:
    """``profile`` when it is a name (letters, digits, ``-``, ``_``), not a path; ParamsError otherwise."""
    if not PROFILE_NAME.fullmatch(profile):
        raise ParamsError(
            f"--profile {profile!r}: a profile is a name like 'cpu' (params/profiles/<name>.yaml), not a path"
        )
    return profile


def default_output_dir(profile: str) -> Path:
    """Where a profile's phases write unless ``--out`` (or ``output_dir``) says otherwise: ``runs/<profile>``."""
    return REPO_ROOT / "runs" / check_profile_name(profile)


def check_keys(values: dict[str, Any], known: set[str], source: str) -> None:
    """Raise :class:`ParamsError` for the first key of ``values`` not in ``known``, with a suggestion."""
    for key in values:
        if key not in known:
            hint = did_you_mean(key, sorted(known)) or f"; known keys: {', '.join(sorted(known))}"
            raise ParamsError(f"{source}: unknown key {key!r}{hint}")


def _check_types(values: dict[str, Any], declared: dict[str, dict[str, Any]], sources: dict[str, str]) -> None:
    for key, value in values.items():
        type_name = declared[key].get("inferred_type_name", "None")
        allowed = _TYPES.get(type_name)
        if allowed is None or value is None:
            continue
        if isinstance(value, bool) and type_name != "bool" or not isinstance(value, allowed):
            raise ParamsError(f"{sources[key]}: {key!r} must be {type_name}, got {value!r} ({type(value).__name__})")


def resolve_parameters(
    notebook: Path,
    profile: str,
    *,
    params_dir: Path,
    overrides: dict[str, Any] | None = None,
    profile_keys: set[str] | None = None,
) -> dict[str, Any]:
    """The parameters papermill passes to ``notebook`` under ``profile``.

    ``profile_keys`` is the set of keys any notebook declares (the runner passes it), so a typo in a
    profile is caught even though each notebook takes only the profile keys it declares.
    """
    check_profile_name(profile)
    declared = declared_parameters(notebook)
    known = set(declared)
    profile_path = params_dir / "profiles" / f"{profile}.yaml"
    if not profile_path.is_file():
        available = sorted(p.stem for p in (params_dir / "profiles").glob("*.yaml"))
        raise ParamsError(f"unknown profile {profile!r}: no {profile_path} (available: {', '.join(available)})")
    profile_values = load_yaml(profile_path)
    check_keys(profile_values, profile_keys or known, str(profile_path))

    phase_path = params_dir / f"{Path(notebook).stem}.yaml"
    if not phase_path.is_file():  # a phase's values live in its file; none would silently run on defaults
        raise ParamsError(
            f"{Path(notebook).name}: no phase file {phase_path} (each notebook reads params/<notebook>.yaml; "
            "an empty file keeps the notebook's defaults)"
        )
    phase_values = load_yaml(phase_path)
    per_profile = phase_values.pop(PER_PROFILE_SECTION, None) or {}
    if not isinstance(per_profile, dict) or not all(isinstance(v, dict) for v in per_profile.values()):
        raise ParamsError(f"{phase_path}: '{PER_PROFILE_SECTION}' must map profile names to mappings of values")
    profile_section = per_profile.get(profile, {})
    check_keys(phase_values, known, str(phase_path))
    check_keys(profile_section, known, f"{phase_path} ({PER_PROFILE_SECTION}.{profile})")
    check_keys(overrides or {}, known, f"--set for {Path(notebook).name}")

    layers = (
        (str(profile_path), {k: v for k, v in profile_values.items() if k in known}),
        (str(phase_path), phase_values),
        (f"{phase_path} ({PER_PROFILE_SECTION}.{profile})", profile_section),
        ("--set", overrides or {}),
    )
    resolved: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in layers:
        if RESOLVED_FOR in values:
            raise ParamsError(
                f"{source}: {RESOLVED_FOR!r} is set by `dualloop reproduce` and `dualloop parameters`, not given"
            )
        for key, value in values.items():
            resolved[key] = merge(resolved.get(key), value)
            sources[key] = source
    _check_types(resolved, declared, sources)
    return resolved


# Keys whose values must be finite and > 0, and keys whose values must be integers >= 1, at any key path (a
# phase's top-level `beta` as well as `training.beta`): the values AdaptiveDPOConfig takes without a range check.
# A controller's or a loss's arguments are checked by its own dataclass (dualloop.trainer.method_settings); the
# model, data, generation and evaluation sections by theirs (dualloop.experiment.sections, dualloop.models,
# dualloop.generation).
POSITIVE = ("learning_rate", "beta")
COUNTS = ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length")


def check_seeds(seeds: Any) -> list[int]:
    """A phase's ``seeds``: a non-empty list of distinct integers; anything else is one ParamsError naming ``seeds``."""
    if not isinstance(seeds, list) or not seeds:
        raise ParamsError(f"seeds={seeds!r} must be a non-empty list of integers, e.g. [0, 1, 2]")
    for index, seed in enumerate(seeds):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ParamsError(f"seeds[{index}]={seed!r} must be an integer")
        if seed in seeds[:index]:
            raise ParamsError(f"seeds[{index}]={seed!r} repeats a seed: each seed is one run per method")
    return list(seeds)


def _check_value(path: str, value: Any) -> None:
    name = path.rsplit(".", 1)[-1]
    if path == "seeds":
        if value is not None:  # None: the profile's one seed
            check_seeds(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_value(f"{path}.{key}", item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(f"{path}[{index}]", item)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ParamsError(f"{path}={value!r} must be a finite number")
    elif name in COUNTS and value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ParamsError(f"{path}={value!r} must be an integer >= 1")
    elif (
        name in POSITIVE
        and value is not None
        and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0)
    ):
        raise ParamsError(f"{path}={value!r} must be a finite number > 0")


def _check_arguments(section: str, kwargs: Any, arguments: dict[str, Any], owner: str) -> None:
    """Each ``training.<section>`` value against the annotation of that argument in some registered
    controller or loss (``arguments``: name → annotation); which one uses it is checked when the run's
    config is built (``AdaptiveDPOConfig``), each value by that controller's or loss's own rule."""
    if not isinstance(kwargs, dict):
        raise ParamsError(f"training.{section}={kwargs!r} must be a mapping of {owner} arguments")
    for key, value in kwargs.items():
        if key not in arguments:
            hint = did_you_mean(key, arguments) or f"; known arguments: {', '.join(sorted(arguments))}"
            raise ParamsError(f"training.{section}.{key}: not an argument of any {owner}{hint}")
        kind = {"float": (int, float), "int": (int,), "bool": (bool,), "str": (str,)}.get(str(arguments[key]))
        if kind and (not isinstance(value, kind) or isinstance(value, bool) and bool not in kind):
            raise ParamsError(f"training.{section}.{key}={value!r} must be {arguments[key]}")


def _check_training(training: dict[str, Any]) -> None:
    """Each ``training`` value against the type of its ``AdaptiveDPOConfig`` field's default. (Which trackers
    ``report_to`` may name is the method's check: :func:`dualloop.trainer.method_settings`.)"""
    import dataclasses

    from dualloop.trainer import AdaptiveDPOConfig

    defaults = {
        f.name: None if f.default is dataclasses.MISSING else f.default for f in dataclasses.fields(AdaptiveDPOConfig)
    }
    for key, value in training.items():
        if key not in defaults:
            hint = did_you_mean(key, defaults) or ""
            raise ParamsError(f"training.{key}: unknown key{hint}")
        default = defaults[key]
        if value is None or default is None or isinstance(default, (dict, list, str)) and key != "controller":
            continue
        kind = (int, float) if isinstance(default, (int, float)) else (type(default),)
        if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, kind):
            raise ParamsError(f"training.{key}={value!r} must be {type(default).__name__} like its default {default!r}")
    from dualloop.methods import registered_arguments

    for section, arguments in registered_arguments().items():
        if training.get(section) is not None:
            _check_arguments(section, training[section], arguments, section.split("_")[0])


def _check_endpoints(parameters: dict[str, Any]) -> None:
    """The entries of ``evaluation.judges`` (:mod:`dualloop.judges.endpoints`) and the API keys of the
    judges and of a generation server, present in the environment (each variable registered as a secret)."""
    from dualloop.judges.endpoints import EndpointJudge, judge_entries
    from dualloop.redaction import register_secret_env

    evaluation = parameters.get("evaluation")
    judges = evaluation.get("judges") if isinstance(evaluation, dict) else None
    try:
        entries = judge_entries(judges) if judges is not None else []
    except ValueError as error:
        raise ParamsError(str(error)) from None
    for index, (given, entry) in enumerate(zip(judges or [], entries)):
        if isinstance(entry, EndpointJudge) and entry.api_key_env is not None:
            register_secret_env(entry.api_key_env)
            if not os.environ.get(entry.api_key_env, "").strip():
                if isinstance(given, str):
                    raise ParamsError(
                        f"evaluation.judges: judge {entry.name!r} needs the environment variable "
                        f"{entry.api_key_env} (its API key); export it before anything runs"
                    )
                raise ParamsError(
                    f"evaluation.judges[{index}].api_key_env={entry.api_key_env!r}: the environment variable is "
                    f"not set; export judge {entry.name!r}'s API key in it before anything runs"
                )
    generation = parameters.get("generation")
    api_key_env = generation.get("api_key_env") if isinstance(generation, dict) else None
    if isinstance(api_key_env, str):
        register_secret_env(api_key_env)
        if not os.environ.get(api_key_env, "").strip():
            raise ParamsError(
                f"generation.api_key_env={api_key_env!r}: the environment variable is not set; export the "
                "generation server's key in it before anything runs (or set it to null for a server without auth)"
            )


def check_values(parameters: dict[str, Any], source: str) -> None:
    """Validate resolved values before any work: finite numbers, counts >= 1, rates and β > 0, the
    training section's types and sub-keys, the controller arguments, the entries of
    ``evaluation.judges`` (names and endpoint mappings) and the API keys they and
    ``generation.api_key_env`` name (present in the environment). Each problem is one ParamsError
    naming ``source``, the key path and the value."""
    try:
        for key, value in parameters.items():
            _check_value(key, value)
        if isinstance(parameters.get("training"), dict):
            _check_training(parameters["training"])
        _check_endpoints(parameters)
    except ParamsError as error:
        raise ParamsError(f"{source}: {error}") from None
