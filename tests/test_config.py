"""Params resolution: profile ⊕ phase file ⊕ overrides, every key and type checked."""

import json
import re

import nbformat
import pytest

from dualloop.config import (
    ParamsError,
    check_profile_name,
    check_values,
    load_yaml,
    parse_override,
    parse_overrides,
    resolve_parameters,
)

PROFILE_KEYS = {"seed", "model", "steps", "rate", "name"}  # what all notebooks declare together


def write_notebook(path, source):
    notebook = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [cell, nbformat.v4.new_code_cell("print(steps)")]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


@pytest.fixture
def layout(tmp_path):
    params = tmp_path / "params"
    (params / "profiles").mkdir(parents=True)
    (params / "profiles" / "cpu.yaml").write_text("seed: 3\nmodel: small\n")
    notebook = write_notebook(
        tmp_path / "01_demo.ipynb",
        'seed: int = 0  # seed\nsteps: int = 10  # steps\nrate: float = 0.1  # lr\nname: str = "x"  # a name',
    )
    (params / "01_demo.yaml").write_text("steps: 20\nprofiles:\n  cpu:\n    rate: 0.5\n")
    return notebook, params


def test_profile_phase_file_per_profile_section_and_overrides_compose_in_order(layout):
    notebook, params = layout
    resolved = resolve_parameters(notebook, "cpu", params_dir=params, overrides={"steps": 7}, profile_keys=PROFILE_KEYS)
    assert resolved == {"seed": 3, "steps": 7, "rate": 0.5}


@pytest.mark.parametrize(
    "file,text,message",
    [
        ("01_demo.yaml", "stpes: 3\n", "01_demo.yaml: unknown key 'stpes' (did you mean 'steps'?)"),
        (
            "01_demo.yaml",
            "profiles:\n  cpu:\n    rat: 1.0\n",
            "(profiles.cpu): unknown key 'rat' (did you mean 'rate'?)",
        ),
        ("profiles/cpu.yaml", "sed: 1\n", "cpu.yaml: unknown key 'sed' (did you mean 'seed'?)"),
        ("01_demo.yaml", "steps: ten\n", "'steps' must be int, got 'ten'"),
        ("01_demo.yaml", "rate: true\n", "'rate' must be float"),
        ("01_demo.yaml", "steps: [1\n", "01_demo.yaml: not valid YAML"),
        ("01_demo.yaml", "- 1\n- 2\n", "top level must be a mapping"),
    ],
)
def test_bad_params_files_name_the_file_and_key(layout, file, text, message):
    notebook, params = layout
    (params / file).write_text(text)
    with pytest.raises(ParamsError) as error:
        resolve_parameters(notebook, "cpu", params_dir=params, profile_keys=PROFILE_KEYS)
    assert message in str(error.value)


def test_a_missing_phase_file_is_named(layout):
    notebook, params = layout
    (params / "01_demo.yaml").unlink()
    with pytest.raises(ParamsError, match=r"^01_demo.ipynb: no phase file .*params/01_demo.yaml"):
        resolve_parameters(notebook, "cpu", params_dir=params, profile_keys=PROFILE_KEYS)


@pytest.mark.parametrize(
    "file,text,source",
    [
        ("profiles/cpu.yaml", "resolved_for: 01_demo\n", "cpu.yaml"),
        ("01_demo.yaml", "resolved_for: 01_demo\n", "01_demo.yaml"),
        ("01_demo.yaml", "profiles:\n  cpu:\n    resolved_for: 01_demo\n", "01_demo.yaml (profiles.cpu)"),
        (None, None, "--set"),
    ],
)
def test_resolved_for_is_set_by_the_runner_alone(tmp_path, file, text, source):
    params = tmp_path / "params"
    (params / "profiles").mkdir(parents=True)
    (params / "profiles" / "cpu.yaml").write_text("seed: 3\n")
    (params / "01_demo.yaml").write_text("steps: 20\n")
    notebook = write_notebook(
        tmp_path / "01_demo.ipynb", 'seed: int = 0  # seed\nsteps: int = 10  # steps\nresolved_for: str = ""  # runner'
    )
    if file:
        (params / file).write_text(text)
    overrides = {"resolved_for": "01_demo"} if file is None else {}
    with pytest.raises(ParamsError, match=rf"{re.escape(source)}: 'resolved_for' is set by `dualloop reproduce`"):
        resolve_parameters(notebook, "cpu", params_dir=params, overrides=overrides)


def test_unknown_override_and_profile_are_errors(layout):
    notebook, params = layout
    with pytest.raises(ParamsError, match="did you mean 'rate'"):
        resolve_parameters(notebook, "cpu", params_dir=params, overrides={"rates": 1.0}, profile_keys=PROFILE_KEYS)
    with pytest.raises(ParamsError, match="unknown profile 'gpu'.*available: cpu"):
        resolve_parameters(notebook, "gpu", params_dir=params, profile_keys=PROFILE_KEYS)


def test_override_values_are_read_as_yaml():
    assert parse_override("steps=3") == ("steps", 3)
    assert parse_override("betas=[0.1, 0.2]") == ("betas", [0.1, 0.2])
    assert parse_override("name=abc") == ("name", "abc")
    assert parse_override("training.learning_rate=1e-3") == ("training", {"learning_rate": 1e-3})
    assert parse_override("rate=-2.5E+2") == ("rate", -250.0)
    with pytest.raises(ParamsError, match="key=value"):
        parse_override("steps")


def test_shipped_params_files_resolve_for_every_profile_and_notebook():
    from dualloop.config import REPO_ROOT, declared_parameters
    from dualloop.pipeline import discover_phases

    phases = discover_phases(REPO_ROOT / "notebooks")
    keys = set().union(*(declared_parameters(p.notebook) for p in phases))
    for profile in ("smoke", "cpu", "paper"):
        for phase in phases:
            resolved = resolve_parameters(phase.notebook, profile, params_dir=REPO_ROOT / "params", profile_keys=keys)
            json.dumps(resolved)  # papermill records parameters in the notebook: plain values only


# ---------------------------------------------------------------- hostile values: --set, parameters, profiles


def test_set_at_any_depth_and_mapping_values_merge():
    assert parse_override("training.controller_kwargs.lam=2.5") == ("training", {"controller_kwargs": {"lam": 2.5}})
    merged = parse_overrides(
        ["training.controller_kwargs.lam=2.5", "training.controller_kwargs.eta=0.02", "training.beta=0.2"]
    )
    assert merged == {"training": {"controller_kwargs": {"lam": 2.5, "eta": 0.02}, "beta": 0.2}}


@pytest.mark.parametrize("text", ["training..lam=1", "=3", "training.beta", "training.beta=[1,"])
def test_malformed_set_is_refused_by_name(text):
    with pytest.raises(ParamsError, match="--set"):
        parse_override(text)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"training": {"learning_rate": "abc"}}, "training.learning_rate='abc'"),
        ({"training": {"controller_kwargs": {"lam": "four"}}}, "training.controller_kwargs.lam='four'"),
        ({"training": {"beta": float("nan")}}, "training.beta=nan must be a finite number"),
        ({"training": {"learning_rate": -1e-4}}, "training.learning_rate=-0.0001 must be a finite number > 0"),
        ({"training": {"max_steps": 0}}, "training.max_steps=0 must be an integer >= 1"),
        ({"training": {"max_steps": 2.5}}, "training.max_steps=2.5 must be an integer >= 1"),
        ({"training": {"controller_kwargs": {"kl_target": float("inf")}}}, "training.controller_kwargs.kl_target=inf"),
        ({"training": {"controller_kwargs": {"lamb": 2}}}, "training.controller_kwargs.lamb.*did you mean 'lam'"),
        ({"training": {"max_stepz": 3}}, "training.max_stepz: unknown key.*did you mean 'max_steps'"),
        ({"training": {"gradient_checkpointing": "yes"}}, "training.gradient_checkpointing='yes' must be bool"),
    ],
)
def test_bad_values_are_refused_naming_key_path_and_value(parameters, named):
    with pytest.raises(ParamsError, match=named):
        check_values(parameters, "test")


def test_a_judge_without_its_api_key_is_refused_before_work(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ParamsError, match="gpt-4o-mini.*OPENAI_API_KEY"):
        check_values({"evaluation": {"judges": ["gold", "gpt-4o-mini"]}}, "test")


@pytest.mark.parametrize("profile", ["../profiles/smoke", "/tmp/smoke", "smoke.yaml", ""])
def test_profiles_are_names_not_paths(profile):
    with pytest.raises(ParamsError, match="not a path"):
        check_profile_name(profile)


@pytest.mark.parametrize(
    "text, message",
    [
        ("training:\n  max_steps: 1\nseed: 0\ntraining:\n  beta: 0.2\n", "the key 'training' is given twice"),
        ("a: &x [1, 2]\nb: [*x, *x]\n", "YAML aliases (*name) are not accepted"),
        ("a: {b: [1, 2}\n", "expected ',' or ']', but got '}' at line 1, column 13"),
    ],
)
def test_a_params_file_with_a_repeated_key_an_alias_or_bad_yaml_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "phase.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as error:
        load_yaml(path)
    assert str(error.value).startswith(f"{path}: not valid YAML (") and message in str(error.value)
    assert "\n" not in str(error.value)


def test_an_alias_bomb_in_set_is_refused_at_once():
    bomb = "a=[&x [1, 1, 1, 1, 1, 1, 1, 1, 1], &y [*x, *x, *x, *x, *x, *x, *x, *x, *x], [*y, *y, *y, *y, *y, *y]]"
    with pytest.raises(ParamsError, match=r"YAML aliases \(\*name\) are not accepted"):
        parse_override(bomb)
