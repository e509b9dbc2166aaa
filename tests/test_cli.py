"""The command line (``python -m dualloop``) on bad input: every problem it can name is one line on stderr,
``dualloop: ...``, redacted, with exit status 2, before anything is trained, judged or written."""

import subprocess
import sys

import pytest
from transformers.integrations import integration_utils

import dualloop.experiment.evaluation
import dualloop.experiment.training
import dualloop.models
from dualloop.__main__ import main
from dualloop.config import REPO_ROOT

TRAIN = ["train", "--profile", "smoke"]
JUDGE = ["judge", "--profile", "smoke", "--a", "dualloop", "--b", "base", "--prompts", "verifiable-heldout"]
REPRODUCE = ["reproduce", "--profile", "smoke"]
MAPPING = "{name: mine, model: m, base_url: 'http://127.0.0.1:1/v1', api_key_env: null, usd_per_mtok_out: -1}"

# (arguments, named): the one line contains `named`, or each string of a tuple `named`; a `named` that starts
# with "dualloop: " is the whole line
BAD_INPUT = [
    # numbers and values, on the command line and in --set
    pytest.param([*TRAIN, "--method", "dualloop", "--steps", "0"], "--steps 0: must be an integer >= 1", id="steps-0"),
    pytest.param([*TRAIN, "--method", "dualloop", "--steps", "-3"], "--steps -3", id="steps-negative"),
    pytest.param(
        [*TRAIN, "--method", "dualloop", "--set", "training.learning_rate=abc"],
        "training.learning_rate='abc'",
        id="set-not-a-number",
    ),
    pytest.param(
        [*TRAIN, "--method", "dualloop", "--set", "training.controller_kwargs.lam=four"],
        "training.controller_kwargs.lam='four'",
        id="set-nested-not-a-number",
    ),
    pytest.param([*TRAIN, "--method", "dualloop", "--set", "training.beta=.nan"], "training.beta=nan", id="set-nan"),
    pytest.param(
        [*TRAIN, "--method", "dualloop", "--set", "training.controller_kwargs.lam=-1"],
        "training.controller_kwargs of the 'dualloop' controller: lam must be ≥ 0, got -1.0",
        id="controller-argument-out-of-range",
    ),
    pytest.param(
        [*TRAIN, "--method", "adadpo", "--set", "training.loss_kwargs.space=polcy"],
        "training.loss_kwargs of the 'adadpo' loss: space must be one of ('ratio', 'policy'), got 'polcy'",
        id="loss-argument-not-a-choice",
    ),
    pytest.param(
        [*TRAIN, "--method", "adadpo", "--set", "training.loss_kwargs.clp=1.5"],
        "training.loss_kwargs.clp: not an argument of any loss (did you mean 'clip'?)",
        id="loss-argument-misspelt",
    ),
    pytest.param(
        [*REPRODUCE, "--phases", "2", "--set", "training.controller_kwargs.deadband=-0.5"],
        ("phase 02 (02_main_comparison)", "controller_kwargs of the 'dualloop' controller: deadband must be ≥ 0"),
        id="reproduce-controller-argument-before-the-first-phase",
    ),
    pytest.param(
        [*TRAIN, "--method", "static", "--set", "data.n_pairs=yes"],
        "data.n_pairs=True must be an integer >= 1 or null",
        id="yaml-yes-is-not-a-count",
    ),
    pytest.param(
        [*TRAIN, "--method", "static", "--set", "training.max_length=-5"],
        "training.max_length=-5 must be an integer >= 1",
        id="max-length-negative",
    ),
    pytest.param(
        [*TRAIN, "--method", "static", "--set", "training.lerning_rate=1"],
        "did you mean 'learning_rate'?",
        id="set-misspelt-key",
    ),
    pytest.param(
        [*TRAIN, "--method", "static", "--set", "training.seed=1"],
        "training.seed=1: the seed is the top-level `seed`",
        id="set-training-seed",
    ),
    pytest.param(
        [*TRAIN, "--method", "adadpo", "--set", "training.loss_type=cpo"],
        "training.loss_type='cpo' contradicts method 'adadpo'",
        id="set-loss-contradicts-method",
    ),
    pytest.param(
        [*TRAIN, "--method", "dualloop", "--set", "training.report_to=[tensorboard, wandb]"],
        "dualloop: training.report_to: 'wandb' needs the wandb package, which is not installed here "
        "(pip install wandb); installed trackers: tensorboard",
        id="tracker-not-installed",
    ),
    # names: methods, profiles, prompt sets
    pytest.param(
        [*TRAIN, "--method", "dualoop"], "unknown method 'dualoop' (did you mean 'dualloop'?)", id="misspelt-method"
    ),
    pytest.param(["train", "--profile", "gpu", "--method", "static"], "unknown profile 'gpu'", id="unknown-profile"),
    pytest.param(
        ["train", "--profile", "../params/profiles/smoke", "--method", "dualloop"], "not a path", id="profile-path"
    ),
    # judges
    pytest.param(
        [*JUDGE, "--set", "evaluation.judges=[gold, gemini-2.0-flash]"], "GEMINI_API_KEY", id="judge-without-api-key"
    ),
    pytest.param(
        [*JUDGE, "--set", f"evaluation.judges=[gold, {MAPPING}]"],
        "evaluation.judges[1].usd_per_mtok_out=-1",
        id="bad-judge-mapping",
    ),
    # reproduce: every selected phase's values are checked before the first phase runs
    pytest.param(
        [*REPRODUCE, "--phases", "0,2", "--set", "training.max_stepz=3"],
        "phase 02 (02_main_comparison): training.max_stepz: unknown key (did you mean 'max_steps'?)",
        id="reproduce-misspelt-sub-key",
    ),
    pytest.param(
        [*REPRODUCE, "--phases", "0,2", "--set", "evaluation.n_prompts=100000"],
        ("phase 02 (02_main_comparison): evaluation.n_prompts=100000", "than prompt set 'verifiable-heldout' holds"),
        id="reproduce-more-prompts-than-the-set-holds",
    ),
    pytest.param(
        [*REPRODUCE, "--phases", "2", "--set", "seeds=[]"], "seeds=[] must be a non-empty list", id="seeds-empty"
    ),
    pytest.param(
        [*REPRODUCE, "--phases", "2", "--set", "seeds=[0, 0]"], "seeds[1]=0 repeats a seed", id="seeds-repeated"
    ),
    pytest.param(
        [*REPRODUCE, "--phases", "2", "--set", "seeds=[0.5]"], "seeds[0]=0.5 must be an integer", id="seeds-not-integer"
    ),
    pytest.param(
        [*REPRODUCE, "--phases", "0", "--jobs", "0"], "dualloop: --jobs must be at least 1, got 0", id="jobs-0"
    ),
    pytest.param(
        [*REPRODUCE, "--phases", ""],
        "dualloop: --phases selects no phase; give numbers like 0,2, or leave --phases out for all",
        id="phases-empty",
    ),
    # parameters: the values `reproduce` would inject into one phase, for papermill -f
    pytest.param(
        ["parameters", "--profile", "smoke", "--phase", "9"],
        "unknown phase(s) [9]; available: [0,",
        id="parameters-phase",
    ),
    pytest.param(
        ["parameters", "--profile", "smoke", "--phase", "2", "--set", "resolved_for=02_main_comparison"],
        "--set: 'resolved_for' is set by `dualloop reproduce` and `dualloop parameters`, not given",
        id="parameters-resolved-for-given",
    ),
    pytest.param(
        ["parameters", "--profile", "smoke", "--phase", "2", "--set", "seeds=[0, 0]"],
        "seeds[1]=0 repeats a seed",
        id="parameters-checked-as-reproduce-checks",
    ),
]


def refused(arguments, out, capsys):
    """The line `main` prints for `arguments`, checked to be its one line, `dualloop: ...`, with exit status 2."""
    code = main([*arguments, "--out", str(out)])
    error = capsys.readouterr().err
    assert code == 2, error
    assert error.endswith("\n") and error.count("\n") == 1, error  # one line, no traceback
    assert error.startswith("dualloop: ")
    return error.rstrip("\n")


@pytest.mark.usefixtures("api_key")
@pytest.mark.parametrize(("arguments", "named"), BAD_INPUT)
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(arguments, named, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["tensorboard"])
    monkeypatch.setattr(dualloop.models, "load_policy", lambda settings: pytest.fail("a model was loaded"))
    for module in (dualloop.experiment.training, dualloop.experiment.evaluation):
        monkeypatch.setattr(module, "load_policy", lambda settings: pytest.fail("a model was loaded"))
    out = tmp_path / "out"
    line = refused(arguments, out, capsys)
    if isinstance(named, tuple):
        assert all(part in line for part in named), line
    elif named.startswith("dualloop: "):
        assert line == named
    else:
        assert named in line
    assert not out.exists()  # nothing trained, judged or written


def test_a_misspelt_prompt_set_is_one_line_and_exit_2(tmp_path, capsys):
    out = tmp_path / "out"
    arguments = ["judge", "--profile", "smoke", "--a", "base", "--b", "base", "--prompts", "mtbench"]
    assert "did you mean 'mt-bench'?" in refused(arguments, out, capsys)
    # the judging's lock is taken before the prompt set is looked up: at most that lock is left, released
    assert all(p.suffix == ".lock" and p.read_text() == "" for p in out.rglob("*") if p.is_file())


def test_verifiable_pairs_without_their_constraints_are_one_line_before_the_model_loads(tmp_path, monkeypatch, capsys):
    pairs = tmp_path / "pairs.jsonl"
    # verifiable pairs carry their constraints (what data.instruction_ids filters on), filtered or not
    pairs.write_text('{"prompt": "Write.", "chosen": "ok", "rejected": "OK", "score_gap": 1}\n')
    for module in (dualloop.models, dualloop.experiment.training):
        monkeypatch.setattr(module, "load_policy", lambda settings: pytest.fail("a model was loaded"))
    arguments = [*TRAIN, "--method", "static", "--set", f"data.path={pairs}"]
    line = refused(
        [*arguments, "--set", "data.instruction_ids=[change_case:english_lowercase]"], tmp_path / "out", capsys
    )
    assert line == f"dualloop: row 1 of {pairs}: 'instruction_ids' is missing"


def test_bad_input_holding_the_api_key_is_redacted(api_key, tmp_path, capsys):
    arguments = [*TRAIN, "--method", "dualloop", "--set", f"training.controller_kwargs.lam={api_key.value}"]
    line = refused(arguments, tmp_path / "out", capsys)
    assert api_key.value not in line and "<secret>" in line


def test_python_m_dualloop_exits_2_with_the_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dualloop", *REPRODUCE, "--phases", "0", "--out", str(tmp_path)]
        + ["--set", "simulatd_steps=3"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (  # the last line: a library may warn at import
        "dualloop: --set (no selected phase declares it): unknown key 'simulatd_steps' "
        "(did you mean 'simulated_steps'?)"
    )
    assert not (tmp_path / "notebooks").exists()  # nothing ran


def test_a_bare_system_name_is_never_a_path_even_where_a_folder_has_that_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dualoop").mkdir()  # as the repository root holds a folder named dualloop
    judge = ["judge", "--profile", "smoke", "--b", "base", "--prompts", "verifiable-heldout", "--out", "out"]
    assert main([*judge, "--a", "dualoop"]) == 2
    assert "unknown method 'dualoop' (did you mean 'dualloop'?)" in capsys.readouterr().err
    assert main([*judge, "--a", "./missing-run"]) == 2
    assert "./missing-run: no such run directory" in capsys.readouterr().err


def test_an_output_folder_that_is_a_file_or_cannot_be_written_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "results.txt"
    a_file.write_text("kept\n")
    assert main([*TRAIN, "--method", "static", "--out", str(a_file)]) == 2
    assert capsys.readouterr().err == f"dualloop: --out {a_file}: is a file, not a folder\n"
    assert a_file.read_text() == "kept\n"
    assert main([*TRAIN, "--method", "static", "--out", str(a_file / "inside")]) == 2
    assert "is not a folder this process can write" in capsys.readouterr().err


def test_train_refuses_a_misspelt_profile_section_as_reproduce_does(tmp_path, monkeypatch, capsys):
    import shutil

    import dualloop.__main__

    for folder in ("params", "notebooks"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    profile = (tmp_path / "params" / "profiles" / "smoke.yaml").read_text().replace("training:", "trainig:", 1)
    (tmp_path / "params" / "profiles" / "typo.yaml").write_text(profile)
    monkeypatch.setattr(dualloop.__main__, "REPO_ROOT", tmp_path)
    assert main(["train", "--profile", "typo", "--method", "static", "--out", str(tmp_path / "out")]) == 2
    line = capsys.readouterr().err
    assert "typo.yaml: unknown key 'trainig' (did you mean 'training'?)" in line and line.count("\n") == 1


@pytest.mark.parametrize(
    "url",
    ["http://user:hunter2-secret@127.0.0.1:1/v1", "http://127.0.0.1:1/v1?api_key=hunter2-secret"],
)
def test_a_secret_typed_into_a_url_is_refused_and_never_printed_or_written(url, tmp_path, capsys):
    mapping = f"{{name: mine, model: m, base_url: '{url}', api_key_env: null}}"
    out = tmp_path / "out"
    argv = [*REPRODUCE, "--phases", "2", "--out", str(out), "--set", f"evaluation.judges=[gold, {mapping}]"]
    assert main(argv) == 2
    line = capsys.readouterr().err
    assert "evaluation.judges[1].base_url=" in line and line.count("\n") == 1
    assert "hunter2" not in line and not out.exists()
