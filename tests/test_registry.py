"""The run registry: directories named by the configuration's hash, reuse, resume."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import textwrap

import pytest
from datasets import Dataset
from transformers import TrainerCallback

from dualloop.models import ModelSettings, lora_config, smoke_model
from dualloop.registry import ensure_run, open_run, run_id
from dualloop.trainer import AdaptiveDPOConfig, AdaptiveDPOTrainer

CONFIG = {"method": "dualloop", "seed": 0, "steps": 4, "training": {"kl_estimator": "token", "lr": 5e-3}}


def test_run_id_is_a_hash_of_the_configuration_not_of_its_key_order():
    reordered = {"training": {"lr": 5e-3, "kl_estimator": "token"}, "steps": 4, "seed": 0, "method": "dualloop"}
    assert run_id(CONFIG) == run_id(reordered)
    assert run_id(CONFIG) != run_id({**CONFIG, "seed": 1})
    assert len(run_id(CONFIG)) == 16 and int(run_id(CONFIG), 16) >= 0


def test_open_run_records_config_seed_versions_and_revision(tmp_path):
    run = open_run(tmp_path, CONFIG)
    assert run.path == tmp_path / run_id(CONFIG)
    assert run.config == CONFIG
    metadata = run.metadata
    assert metadata["seed"] == 0 and metadata["run_id"] == run.id
    assert metadata["packages"]["torch"] == importlib.metadata.version("torch")
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", metadata["git_revision"])  # this checkout is a git repository
    assert not run.is_complete
    assert open_run(tmp_path, dict(CONFIG)).path == run.path


def test_bad_configurations_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'seed'"):
        open_run(tmp_path, {"method": "static"})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        open_run(tmp_path, {"seed": 0, "model": object()})
    run = open_run(tmp_path, CONFIG)
    (run.path / "config.json").write_text(json.dumps({**CONFIG, "steps": 5}))
    with pytest.raises(ValueError, match="another configuration"):
        open_run(tmp_path, CONFIG)


class Interrupt(TrainerCallback):
    """Kills training as step 3 begins, after step 2's checkpoint was written."""

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise KeyboardInterrupt


def test_finished_run_is_reused_and_unfinished_run_resumes(tmp_path):
    built = []

    def make_trainer(run, interrupt=False):
        built.append(run.id)
        model, tokenizer = smoke_model(0)
        pairs = Dataset.from_list(
            [
                {"prompt": f"Q{i}: add {i} and {i}.", "chosen": f" {2 * i}.", "rejected": f" It is {3 * i} or so."}
                for i in range(8)
            ]
        )
        args = AdaptiveDPOConfig(
            output_dir=str(run.path),
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            per_device_train_batch_size=2,
            max_steps=4,
            learning_rate=5e-3,
            report_to=[],
            save_strategy="steps",
            save_steps=2,
            seed=run.config["seed"],
            print_progress=False,
            controller="dualloop",
        )
        trainer = AdaptiveDPOTrainer(
            model,
            args=args,
            train_dataset=pairs,
            processing_class=tokenizer,
            peft_config=lora_config(ModelSettings(name_or_path="smoke")),
        )
        if interrupt:
            trainer.add_callback(Interrupt())
        return trainer

    with pytest.raises(KeyboardInterrupt):
        ensure_run(tmp_path, CONFIG, lambda run: make_trainer(run, interrupt=True))
    run = open_run(tmp_path, CONFIG)
    # a checkpoint cut off while written (killed before its trainer_state.json): set aside, not resumed from
    cut_off = run.path / "checkpoint-3"
    cut_off.mkdir()
    (cut_off / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    assert not run.is_complete and run.last_checkpoint().endswith("checkpoint-2")
    assert not cut_off.exists() and len(list(run.path.glob("incomplete-checkpoint-3-*"))) == 1

    run = ensure_run(tmp_path, CONFIG, make_trainer)
    assert run.is_complete
    assert [row["step"] for row in run.history() if "loss" in row] == [1, 2, 3, 4]
    assert (run.adapter_dir / "adapter_config.json").is_file()
    assert len(built) == 2

    again = ensure_run(tmp_path, CONFIG, make_trainer)
    assert again.path == run.path and len(built) == 2  # finished: no trainer built, nothing trained


_TRAINING = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from types import SimpleNamespace
    from dualloop.registry import ensure_run

    class Trainer:
        def __init__(self, run):
            self.args = SimpleNamespace(output_dir=str(run.path), should_save=True)
        def train(self, resume_from_checkpoint=None):
            with open(sys.argv[2], "a") as trained:
                trained.write(f"{os.getpid()}\\n")
            time.sleep(1.0)
        def save_model(self, path):
            Path(path).mkdir(parents=True, exist_ok=True)

    ensure_run(sys.argv[1], {"seed": 0, "method": "dualloop"}, Trainer)
""")


@pytest.mark.usefixtures("api_key")
def test_two_trainings_of_one_configuration_train_once(tmp_path):
    trained = tmp_path / "trained.txt"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _TRAINING, str(tmp_path / "registry"), str(trained)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert len(trained.read_text().splitlines()) == 1
    assert sum("reusing" in output for output in outputs) == 1


_KILLED_TRAINING = textwrap.dedent("""
    import sys
    from datasets import Dataset
    from dualloop.models import ModelSettings, lora_config, smoke_model
    from dualloop.registry import ensure_run
    from dualloop.trainer import AdaptiveDPOConfig, AdaptiveDPOTrainer

    def make_trainer(run):
        model, tokenizer = smoke_model(0)
        rows = [{"prompt": f"Q{i}: add {i} and {i}.", "chosen": f" {2 * i}.", "rejected": f" {3 * i}?"} for i in range(8)]
        args = AdaptiveDPOConfig(
            output_dir=str(run.path), use_cpu=True, bf16=False, gradient_checkpointing=False,
            per_device_train_batch_size=2, max_steps=24, learning_rate=5e-3, report_to=[], save_strategy="steps",
            save_steps=1, seed=0, print_progress=False, controller="dualloop",
        )
        return AdaptiveDPOTrainer(
            model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
            peft_config=lora_config(ModelSettings(name_or_path="smoke")),
        )

    ensure_run(sys.argv[1], {"method": "dualloop", "seed": 0, "killed": True}, make_trainer)
""")


@pytest.mark.slow
def test_kills_at_random_moments_lose_nothing_double_nothing_and_leave_nothing_stuck(tmp_path):
    import random
    import signal
    import time

    script = tmp_path / "train.py"
    script.write_text(_KILLED_TRAINING)
    chance = random.Random(20261203)  # seeded: the same moments on every run of the test
    killed = 0
    for _ in range(4):  # bounded: four kills at random moments of a training that saves every step
        process = subprocess.Popen([sys.executable, str(script), str(tmp_path / "registry")])
        time.sleep(chance.uniform(5.0, 9.0))
        killed += process.poll() is None
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert killed >= 2  # the kills hit a running training, not a finished one
    finished = subprocess.run([sys.executable, str(script), str(tmp_path / "registry")], capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-3000:]  # nothing stuck
    run = open_run(tmp_path / "registry", {"method": "dualloop", "seed": 0, "killed": True})
    assert run.is_complete
    steps = [row["step"] for row in run.history() if "loss" in row]
    assert steps == list(range(1, 25))  # every step once: nothing lost, nothing doubled
