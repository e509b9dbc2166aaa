"""The experiment layer and the train/judge CLI: validation, judge choice, offline prompt sets."""

import math
import os
import subprocess
import sys

import pytest

from dualloop.config import REPO_ROOT, load_yaml
from dualloop.diagnostics import judge_entropy
from dualloop.experiment import Experiment
from dualloop.judges import Decision

FIXTURES = REPO_ROOT / "tests" / "fixtures"

SECTIONS = ("model", "training", "data", "generation", "evaluation")


def experiment(tmp_path, **changes):
    sections = {
        "model": {"name_or_path": "smoke"},
        "training": {"max_steps": 1},
        "data": {"n_pairs": 4},
        "generation": {"max_new_tokens": 4},
        "evaluation": {"n_prompts": 2, "judges": ["gold"]},
    }
    for section, values in changes.items():
        sections[section] = {**sections[section], **values}
    return Experiment.from_parameters(profile="smoke", output_dir=tmp_path, seed=0, **sections)


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_every_shipped_profile_builds_an_experiment(tmp_path, profile):
    values = load_yaml(REPO_ROOT / "params" / "profiles" / f"{profile}.yaml")
    built = Experiment.from_parameters(
        profile=profile, output_dir=tmp_path, seed=values["seed"], **{name: values[name] for name in SECTIONS}
    )
    assert built.model.seed == values["seed"]


@pytest.mark.parametrize(
    "section,values,message",
    [
        ("training", {"learnig_rate": 1.0}, "training: unknown key 'learnig_rate' (did you mean 'learning_rate'?)"),
        ("data", {"n_pair": 3}, "data: unknown key 'n_pair' (did you mean 'n_pairs'?)"),
        ("data", {"train": "ultrafeedbak"}, "did you mean 'ultrafeedback'?"),
        ("evaluation", {"judges": ["gpt4o-mini"]}, "did you mean 'gpt-4o-mini'?"),
        ("model", {"lora_rr": 4}, "did you mean 'lora_r'?"),
        ("data", {"instruction_ids": ["punctuation:no_coma"]}, "did you mean 'punctuation:no_comma'?"),
        ("data", {"instruction_ids": []}, "data: instruction_ids is empty"),
        (
            "data",
            {"train": "hh", "instruction_ids": ["punctuation:no_comma"]},
            "data: instruction_ids selects verifiable pairs, but train is 'hh'",
        ),
    ],
)
def test_bad_sections_are_named(tmp_path, section, values, message):
    with pytest.raises(ValueError) as error:
        experiment(tmp_path, **{section: values})
    assert message in str(error.value)


def test_instruction_ids_keep_the_pairs_and_held_out_prompts_whose_constraints_all_are_in_it(tmp_path):
    import json

    from dualloop.data import HELDOUT_FILE, PAIRS_FILE, SHIPPED_DIR

    kept = {"punctuation:no_comma", "change_case:english_lowercase"}
    heldout = [json.loads(line) for line in (SHIPPED_DIR / HELDOUT_FILE).read_text().splitlines()]
    expected_ids = [row["prompt_id"] for row in heldout if set(row["instruction_ids"]) <= kept]
    selected = experiment(
        tmp_path, data={"n_pairs": None, "instruction_ids": sorted(kept)}, evaluation={"n_prompts": len(expected_ids)}
    )
    rows = [json.loads(line) for line in (SHIPPED_DIR / PAIRS_FILE).read_text().splitlines()]
    expected = [row["chosen"] for row in rows if set(row["instruction_ids"]) <= kept]
    assert 0 < len(expected) < len(rows)
    assert [pair.chosen for pair in selected.preference_pairs()] == expected
    assert 0 < len(expected_ids) < len(heldout)
    assert list(selected.prompts("verifiable-heldout")) == expected_ids
    with pytest.raises(
        ValueError,
        match=r"evaluation.n_prompts=\d+ \(from evaluation.first_prompt=0\) asks for more "
        r"prompts than prompt set 'verifiable-heldout' holds",
    ):
        experiment(
            tmp_path, data={"instruction_ids": sorted(kept)}, evaluation={"n_prompts": len(expected_ids) + 1}
        ).prompts("verifiable-heldout")
    assert selected.run_config("static")["data"]["instruction_ids"] == sorted(kept)  # part of the run's identity


def test_eval_pairs_set_aside_whole_prompts_before_subsampling(tmp_path):
    assert experiment(tmp_path).evaluation_pairs() == []  # default: none
    every = experiment(tmp_path, data={"n_pairs": None}).preference_pairs()
    split = experiment(tmp_path, data={"n_pairs": None, "eval_pairs": 8})
    held_out, kept = split.evaluation_pairs(), split.preference_pairs()
    assert len(held_out) >= 8 and len(held_out) + len(kept) == len(every)
    held_prompts = {pair.prompt_text for pair in held_out}
    assert not held_prompts & {pair.prompt_text for pair in kept}  # no prompt on both sides
    assert len(held_out) == sum(pair.prompt_text in held_prompts for pair in every)  # every pair of a held-out prompt
    assert [p.chosen for p in held_out] == [p.chosen for p in split.evaluation_pairs()]  # seeded
    subsampled = experiment(tmp_path, data={"n_pairs": 4, "eval_pairs": 8})
    assert len(subsampled.preference_pairs()) == 4 and subsampled.evaluation_pairs() == held_out
    with pytest.raises(ValueError, match=r"data: eval_pairs=100000 leaves no training pair of \d+"):
        experiment(tmp_path, data={"eval_pairs": 100000}).preference_pairs()


def test_augmented_false_trains_on_the_sampled_pairs_alone(tmp_path):
    every = experiment(tmp_path, data={"n_pairs": None}).preference_pairs()
    natural = experiment(tmp_path, data={"n_pairs": None, "augmented": False}).preference_pairs()
    assert natural == [pair for pair in every if pair.metadata["augmentation"] is None]
    assert 0 < len(natural) < len(every)
    with pytest.raises(ValueError, match="data: augmented=false selects verifiable pairs, but train is 'hh'"):
        experiment(tmp_path, data={"train": "hh", "augmented": False})


def test_first_prompt_and_n_prompts_choose_a_slice_and_are_checked(tmp_path):
    every = list(experiment(tmp_path, evaluation={"n_prompts": 200}).prompts("verifiable-heldout"))
    assert (
        list(experiment(tmp_path, evaluation={"n_prompts": 5, "first_prompt": 200}).prompts("verifiable-heldout"))
        == list(experiment(tmp_path, evaluation={"n_prompts": 205}).prompts("verifiable-heldout"))[200:]
    )
    assert len(every) == 200
    for values, message in (
        ({"n_prompts": 0}, "evaluation.n_prompts=0 must be an integer >= 1"),
        ({"n_prompts": -195}, "evaluation.n_prompts=-195 must be an integer >= 1"),
        ({"first_prompt": -1}, "evaluation.first_prompt=-1 must be an integer >= 0"),
        ({"n_prompts": 2.5}, "evaluation.n_prompts=2.5 must be an integer >= 1"),
    ):
        with pytest.raises(ValueError, match=message.replace(".", r"\.")):
            experiment(tmp_path, evaluation=values)


def test_the_gold_checker_judges_only_verifiable_instructions(tmp_path):
    gold_only = experiment(tmp_path)
    assert [j.name for j in gold_only.judges("instructions")] == ["gold-checker"]
    both = experiment(tmp_path, evaluation={"judges": ["gold", "gold-loose"]})
    assert [(j.name, j.loose) for j in both.judges("instructions")] == [("gold-checker", False), ("gold-loose", True)]
    with pytest.raises(ValueError, match="no judge for criterion 'helpful'"):
        gold_only.judges("helpful")


def test_a_hub_data_sets_revision_is_part_of_the_run_identity_and_absent_while_none(tmp_path):
    hub = {"train": "ultrafeedback", "from_hub": True}
    latest = experiment(tmp_path, data=hub).run_config("static")["data"]
    pinned = experiment(tmp_path, data={**hub, "revision": "3f2a9c1"}).run_config("static")["data"]
    assert "revision" not in latest  # the identities of runs from before the setting hold
    assert pinned == {**latest, "revision": "3f2a9c1"}


def test_the_training_sets_held_out_prompts_are_read_at_its_revision_and_other_sets_at_their_latest(
    tmp_path, monkeypatch
):
    import dualloop.data

    asked = {}
    fixture = dualloop.data.load_ultrafeedback(FIXTURES / "ultrafeedback_test_prefs.jsonl")

    def loader(name):
        def load(path, *, split, from_hub, revision=None, on_error="raise"):
            asked[name] = revision
            return fixture

        return load

    monkeypatch.setattr(dualloop.data, "load_ultrafeedback", loader("ultrafeedback"))
    monkeypatch.setattr(dualloop.data, "load_hh", loader("hh"))
    built = experiment(tmp_path, data={"train": "ultrafeedback", "from_hub": True, "revision": "3f2a9c1"})
    assert len(built.prompts("ultrafeedback")) == 2 and len(built.prompts("hh")) == 2
    assert asked == {"ultrafeedback": "3f2a9c1", "hh": None}  # another repository: its own latest


def test_run_config_records_method_seed_and_overrides(tmp_path):
    config = experiment(tmp_path).run_config("adadpo", beta=0.05)
    assert config["seed"] == 0 and config["method"] == "adadpo"
    assert config["training"] == {"max_steps": 1, "controller": "static", "loss_type": "adadpo", "beta": 0.05}
    assert config["data"]["n_pairs"] == 4
    # an explicit None that is the default names the same run; a None that changes a setting does not
    built = experiment(tmp_path)
    assert built.run_config("dualloop", controller_kwargs=None) == built.run_config("dualloop")
    assert built.run_config("adadpo", loss_kwargs={"clip": None})["training"]["loss_kwargs"] == {"clip": None}


def test_the_users_loss_type_wins_over_the_methods_default_and_names_the_run(tmp_path):
    dualloop_adadpo = experiment(tmp_path, training={"max_steps": 1, "loss_type": "adadpo"}).run_config("dualloop")
    assert dualloop_adadpo["training"]["controller"] == "dualloop"
    assert dualloop_adadpo["training"]["loss_type"] == "adadpo"
    assert dualloop_adadpo != experiment(tmp_path).run_config("dualloop")  # another run id
    assert experiment(tmp_path).run_config("static", loss_type="simpo")["training"]["loss_type"] == "simpo"
    with pytest.raises(ValueError, match="training.loss_type='simpo' contradicts method 'adadpo'"):
        experiment(tmp_path).run_config("adadpo", loss_type="simpo")
    with pytest.raises(ValueError, match="training.controller='dualloop' contradicts method 'static'"):
        experiment(tmp_path, training={"controller": "dualloop"}).run_config("static")
    with pytest.raises(ValueError, match=r"unknown training.loss_type 'simpo2' \(did you mean 'simpo'\?\)"):
        experiment(tmp_path).run_config("static", loss_type="simpo2")


def test_judge_entropy_is_the_normalized_binary_entropy_of_the_choice():
    decision = Decision(
        item_id="x",
        prompt_id="x",
        system_a="a",
        system_b="b",
        criterion="general",
        judge="local",
        order_shown="ab",
        verdict="A",
        winner="a",
        winner_system="a",
        probabilities={"A": 0.3, "B": 0.1},
    )
    p = 0.75
    assert judge_entropy(decision) == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2))


@pytest.mark.parametrize("prompt_set,count", [("mt-bench", 80), ("sycophancy-rho", 150), ("refusal-rho", 50)])
def test_offline_prompt_sets_load_from_their_packages(tmp_path, prompt_set, count):
    from dualloop.offline_sets import OFFLINE_PROMPT_SETS

    try:
        records = OFFLINE_PROMPT_SETS[prompt_set]()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    assert len(records) == count and len({r.prompt_id for r in records}) == count
    assert all(r.messages[0]["content"].strip() for r in records)
    assert list(experiment(tmp_path, evaluation={"n_prompts": 3}).prompts(prompt_set)) == [
        r.prompt_id for r in records[:3]
    ]


def cli(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "dualloop", *arguments],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def test_cli_train_trains_then_reuses_and_judge_prints_the_win_rate(tmp_path):
    first = cli("train", "--profile", "smoke", "--method", "static", "--steps", "1", "--out", str(tmp_path))
    assert first.returncode == 0, first.stderr[-2000:]
    assert "complete:" in first.stdout
    again = cli("train", "--profile", "smoke", "--method", "static", "--steps", "1", "--out", str(tmp_path))
    assert "is complete; reusing" in again.stdout
    judged = cli(
        "judge",
        "--profile",
        "smoke",
        "--a",
        "static",
        "--b",
        "base",
        "--prompts",
        "verifiable-heldout",
        "--out",
        str(tmp_path),
        "--set",
        "training.max_steps=1",
    )
    assert judged.returncode == 0, judged.stderr[-2000:]
    assert "static vs base on verifiable-heldout, judge gold-checker: unparseable 0; win rate" in judged.stdout
    assert (tmp_path / "results" / "decisions" / "verifiable-heldout__static__vs__base.jsonl").is_file()
    run_dir = next(p.parent for p in (tmp_path / "registry").glob("*/COMPLETE"))
    by_path = cli(
        "judge",
        "--profile",
        "smoke",
        "--a",
        str(run_dir),
        "--b",
        "base",
        "--prompts",
        "verifiable-heldout",
        "--out",
        str(tmp_path),
    )
    assert by_path.returncode == 0, by_path.stderr[-2000:]
    assert f"{run_dir.name} vs base on verifiable-heldout" in by_path.stdout


def test_a_filter_that_leaves_no_training_pair_is_named(tmp_path):
    built = experiment(tmp_path, data={"instruction_ids": ["detectable_format:json_format"]})
    with pytest.raises(
        ValueError,
        match=r"no training pair of .* is left after data.instruction_ids="
        r"\['detectable_format:json_format'\]",
    ):
        built.preference_pairs()


def test_responses_cached_for_every_prompt_load_no_model(tmp_path, monkeypatch):
    import dualloop.experiment.evaluation
    import dualloop.experiment.training
    import dualloop.models

    built = experiment(tmp_path)
    first = built.responses("base", "verifiable-heldout")
    assert len(first) == 2
    monkeypatch.setattr(dualloop.models, "load_policy", lambda settings: pytest.fail("a model was loaded"))
    for module in (dualloop.experiment.training, dualloop.experiment.evaluation):
        monkeypatch.setattr(module, "load_policy", lambda settings: pytest.fail("a model was loaded"))
    monkeypatch.setattr("dualloop.generation.load_policy", lambda settings: pytest.fail("a model was loaded"))
    assert built.responses("base", "verifiable-heldout") == first


class _LoggedRun:
    """A finished run as train_ablation sees it: an id and its history rows."""

    def __init__(self, rows):
        self.id, self.rows = "full", rows

    def history(self):
        return self.rows


class _Trains:
    def __init__(self):
        self.calls = []

    def train(self, method, **overrides):
        self.calls.append((method, overrides))
        return "trained"


def _counted_history(clip_acted, deadband_held, steps=3):
    rows = [
        {"step": step, "loss": 0.6, "controller/clip_acted": clip_acted, "controller/deadband_held": deadband_held}
        for step in range(1, steps + 1)
    ]
    return [*rows, {"step": steps, "train_runtime": 1.0}]


@pytest.mark.parametrize(
    "rows, arguments, reused",
    [
        (_counted_history(0, 2), {"clip": False}, True),
        (_counted_history(0, 2), {"deadband": 0.0}, False),
        (_counted_history(1, 0), {"clip": False}, False),
        (_counted_history(1, 0), {"deadband": 0}, True),
        (_counted_history(0, 0), {"use_ema": False}, False),  # a switch the full run always uses
        (_counted_history(0, 0), {"clip": False, "deadband": 0.0}, True),
        ([{"step": 1, "loss": 0.6}], {"clip": False}, False),  # logged before the counters existed
        ([*_counted_history(0, 0, steps=2), {"step": 4, "loss": 0.5}], {"clip": False}, False),  # last step unlogged
    ],
)
def test_an_ablation_reuses_the_full_run_only_when_its_switch_never_acted(rows, arguments, reused, capsys):
    from dualloop.experiment import train_ablation

    experiment, full = _Trains(), _LoggedRun(rows)
    run = train_ablation(experiment, full, arguments)
    if reused:
        assert run is full and experiment.calls == []
        assert "not retrained" in capsys.readouterr().out
    else:
        assert run == "trained" and experiment.calls == [("dualloop", {"controller_kwargs": arguments})]


def test_reference_cache_dir_is_a_registry_folder_outside_a_runs_identity(tmp_path):
    cached = experiment(tmp_path, training={"reference_cache_dir": "reference"})
    assert cached.run_config("dualloop") == experiment(tmp_path).run_config("dualloop")
    run = cached.train("static")
    assert "reference_cache_dir" not in run.config["training"]
    assert len(list((tmp_path / "registry" / "reference").glob("*.pt"))) == 1  # one micro-batch met


def test_each_seed_is_its_own_run_and_the_same_seed_reuses_it(tmp_path, capsys):
    built = experiment(tmp_path)
    first, second = built.train("static"), built.with_seed(1).train("static")
    assert first.id != second.id and (first.config["seed"], second.config["seed"]) == (0, 1)
    assert built.with_seed(1).train("static").id == second.id and "reusing" in capsys.readouterr().out
    assert built.with_seed(0).seed_folder == "" and built.with_seed(1).seed_folder == "seed-1"
    assert built.with_seed(1).with_seed(0).seed_folder == ""  # the seed it was built with keeps the folders
    assert list(built.seeded(None)) == [0] and list(built.seeded([2, 1])) == [2, 1]
    for bad, message in (
        ([], "non-empty"),
        ([1, 1], "repeats"),
        ([True], "must be an integer"),
        ("0", "non-empty list"),
    ):
        with pytest.raises(ValueError, match=message):
            built.seeded(bad)


def test_a_dualloop_runs_identity_names_where_its_kl_ema_starts(tmp_path):
    built = experiment(tmp_path)
    assert built.run_config("dualloop")["training"]["controller_kwargs"] == {"kl_ema_init": "target"}
    chosen = built.run_config("dualloop", controller_kwargs={"kl_target": 0.5, "kl_ema_init": "first"})
    assert chosen["training"]["controller_kwargs"] == {"kl_ema_init": "first", "kl_target": 0.5}
    assert "controller_kwargs" not in built.run_config("static")["training"]  # other methods keep their ids


def test_train_and_judge_give_dualloop_the_profiles_constants_as_the_phases_do(tmp_path):
    from dualloop.__main__ import experiment_from_profile, method_arguments

    cpu = experiment_from_profile("cpu", tmp_path, [])
    constants = load_yaml(REPO_ROOT / "params" / "profiles" / "cpu.yaml")["dualloop"]
    assert method_arguments("cpu", "dualloop", cpu) == {"controller_kwargs": constants}
    assert method_arguments("cpu", "static", cpu) == {} and method_arguments("smoke", "dualloop", cpu) == {}
    edited = experiment_from_profile("cpu", tmp_path, ["training.controller_kwargs.lam=2.5"])
    assert method_arguments("cpu", "dualloop", edited)["controller_kwargs"] == {**constants, "lam": 2.5}


def test_full_fine_tuning_trains_on_smoke_with_a_frozen_copy_as_the_reference(tmp_path):
    from dualloop.__main__ import main
    from dualloop.registry import Run

    argv = ["train", "--profile", "smoke", "--method", "dualloop", "--steps", "2", "--out", str(tmp_path)]
    assert main([*argv, "--set", "model.lora_r=0"]) == 0
    (run_dir,) = [path.parent for path in (tmp_path / "registry").rglob("COMPLETE")]
    rows = [row for row in Run(run_dir).history() if "loss" in row]
    assert [row["step"] for row in rows] == [1, 2]
    assert rows[0]["kl/logratio"] == 0.0  # step 1: the policy is its reference's copy
