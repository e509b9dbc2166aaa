"""Tracking: `training.report_to` passes through to the Trainer (default none), TensorBoard's event files
land in the run's registry folder with the logged scalars, and a tracker that is not installed is one
line before anything loads."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers.integrations import integration_utils

import dualloop.experiment.training
import dualloop.trainer
from dualloop.__main__ import experiment_from_profile, main
from dualloop.config import ParamsError
from dualloop.pipeline import reproduce
from dualloop.trainer import method_settings


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from a scratch working directory with TensorBoard's own folder override unset."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    return cwd


def test_report_to_tensorboard_writes_the_logged_scalars_into_the_run_folder(tmp_path, elsewhere, capsys):
    out = tmp_path / "out"
    arguments = ["train", "--profile", "smoke", "--method", "dualloop", "--steps", "2", "--out", str(out)]
    assert main([*arguments, "--set", "training.report_to=[tensorboard]"]) == 0
    (run,) = (path for path in (out / "registry").iterdir() if (path / "COMPLETE").exists())
    assert json.loads((run / "config.json").read_text())["training"]["report_to"] == ["tensorboard"]

    events = sorted(run.rglob("events.out.tfevents.*"))
    assert events and all(path.parent.parent == run / "runs" for path in events)  # <run>/runs/<time>_<host>/
    assert not list(elsewhere.iterdir()), "nothing may be written to the working directory"

    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert {"train/beta", "train/loss", "train/kl", "train/kl_ema", "train/rewards/margins"} <= set(
        accumulator.Tags()["scalars"]
    )
    history = [row for row in map(json.loads, (run / "history.jsonl").read_text().splitlines()) if "beta" in row]
    for tag, key in (("train/beta", "beta"), ("train/loss", "loss")):
        logged = [(event.step, event.value) for event in accumulator.Scalars(tag)]
        assert logged == [(row["step"], pytest.approx(row[key], rel=1e-6)) for row in history]
    assert [step for step, _ in logged] == [1, 2]


class Built(Exception):
    """Raised by the stand-in trainer once it has the arguments the experiment built."""


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_report_to_stays_none_for_the_offline_profiles(tmp_path, elsewhere, monkeypatch, profile):
    def trainer(model, ref_model=None, *, args, **_):
        raise Built(args)

    monkeypatch.setattr(
        dualloop.experiment.training,
        "load_policy",
        lambda settings: SimpleNamespace(model=None, tokenizer=None, peft_config="lora"),  # both profiles train LoRA
    )
    monkeypatch.setattr(dualloop.experiment.training, "AdaptiveDPOTrainer", trainer)
    experiment = experiment_from_profile(profile, tmp_path / "out", [])
    assert "report_to" not in experiment.run_config("dualloop")["training"]
    with pytest.raises(Built) as built:
        experiment.train("dualloop")
    assert built.value.args[0].report_to == []  # what transformers makes of "none"
    assert dualloop.trainer.AdaptiveDPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False).report_to == []


@pytest.mark.parametrize(
    "report_to, message",
    [
        (["mlflow"], "'mlflow' needs the mlflow package"),
        ("comet_ml", "'comet_ml' needs the comet-ml package"),
        (["tensorbord"], "unknown training.report_to tracker 'tensorbord' (did you mean 'tensorboard'?)"),
        ([1], "must be a tracker name or a list of them"),
    ],
)
def test_report_to_is_checked_with_the_method(monkeypatch, report_to, message):
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["tensorboard"])
    with pytest.raises(ValueError, match="^[^\n]*$") as error:
        method_settings("dualloop", {"report_to": report_to})
    assert message in str(error.value)
    for passes in (None, "none", "all", [], ["tensorboard"]):
        method_settings("dualloop", {"report_to": passes})


def test_reproduce_refuses_a_tracker_that_is_not_installed_before_phase_1(monkeypatch, tmp_path):
    """`reproduce` builds every method's run config of every phase before the first phase starts."""
    monkeypatch.setattr(integration_utils, "get_available_reporting_integrations", lambda: ["tensorboard"])
    with pytest.raises(ParamsError) as error:
        reproduce("smoke", phases=[2], out=tmp_path / "out", overrides={"training": {"report_to": ["mlflow"]}})
    assert str(error.value).startswith("phase 02 (02_main_comparison): training.report_to: 'mlflow' needs the mlflow")
    assert not (tmp_path / "out").exists()
