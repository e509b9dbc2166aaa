"""Train the smoke model with several controllers and write each process's β trajectory.

Run by tests/test_distributed.py, under ``torchrun --nproc_per_node 2`` (gloo on the CPU) and in a
single process with the same global batch:

    torchrun --nproc_per_node 2 tests/distributed_run.py OUT_DIR PER_DEVICE_BATCH

writes ``OUT_DIR/<controller>/rank<r>.json``: per optimizer step the β logged (mean, min, max)
and the controller's state after the step, as seen by process ``r``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

from dualloop.models import ModelSettings, lora_config, smoke_model
from dualloop.trainer import AdaptiveDPOConfig, AdaptiveDPOTrainer

CONTROLLERS = {
    "dualloop": {"kl_estimator": "token", "controller_kwargs": {"eta": 0.5, "kl_target": 0.001}},
    "beta-dpo": {},
    "epsilon-dpo": {"controller_kwargs": {"epsilon": 0.1}},
}
STEPS = 3
GRADIENT_ACCUMULATION = 2
GLOBAL_PAIRS_PER_STEP = 8


def pairs() -> Dataset:
    return Dataset.from_list(
        [
            {
                "prompt": f"Q{i}: add {i} and {i}.",
                "chosen": f" {2 * i}.",
                "rejected": " It is " + " or ".join(str(3 * i + k) for k in range(i % 4 + 1)) + ".",
            }
            for i in range(GLOBAL_PAIRS_PER_STEP * STEPS)
        ]
    )


class RecordBeta(TrainerCallback):
    def __init__(self, trainer: AdaptiveDPOTrainer):
        self.trainer = trainer
        self.rows: list[dict] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.rows.append(
                {
                    "step": state.global_step,
                    "beta": logs["beta"],
                    "beta/min": logs["beta/min"],
                    "beta/max": logs["beta/max"],
                    "state": self.trainer.controller.state_dict(),
                }
            )


def run(out_dir: Path, per_device_batch: int) -> None:
    for controller, settings in CONTROLLERS.items():
        model, tokenizer = smoke_model(0)
        args = AdaptiveDPOConfig(
            output_dir=str(out_dir / controller),
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            per_device_train_batch_size=per_device_batch,
            gradient_accumulation_steps=GRADIENT_ACCUMULATION,
            max_steps=STEPS,
            learning_rate=5e-2,
            report_to=[],
            save_strategy="no",
            seed=0,
            print_progress=False,
            controller=controller,
            **settings,
        )
        trainer = AdaptiveDPOTrainer(
            model,
            args=args,
            train_dataset=pairs(),
            processing_class=tokenizer,
            peft_config=lora_config(ModelSettings(name_or_path="smoke")),
        )
        recorder = RecordBeta(trainer)
        trainer.add_callback(recorder)
        trainer.train()
        rank = trainer.accelerator.process_index
        (out_dir / controller / f"rank{rank}.json").write_text(
            json.dumps({"num_processes": trainer.accelerator.num_processes, "rows": recorder.rows})
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(Path(sys.argv[1]), int(sys.argv[2]))
