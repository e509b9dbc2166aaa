"""Time optimizer steps of TRL's DPOTrainer and of AdaptiveDPOTrainer with each method, side by side.

    python benchmarks/bench_train_step.py --profile smoke --steps 8 [--warmup 2] [--device cuda] [--json]

Every trainer gets the same model (same seed, LoRA on q/v), the same preference pairs and the same
training arguments; only the trainer class and the method differ. The trainers run in one process,
each in its own thread, and take turns step by step (round robin, one running at a time), so a
change in the machine's load hits every trainer alike. Each step is timed from ``on_step_begin``
to ``on_step_end`` (forward, backward, controller, optimizer); the first ``--warmup`` steps are
dropped and the median of the rest is reported. TRL's own trainer runs
the sigmoid loss at a fixed β. With ``--json`` the last printed line is one JSON object with
``<name>_s_per_step`` for every trainer and the ratios ``static_vs_trl``, ``<method>_vs_static``.

Profiles: ``smoke`` (the tiny random model, fp32) and ``cpu`` (SmolLM2-135M-Instruct from the
offline GGUF, bf16 autocast where the CPU has native bf16 — avx512_bf16/AMX — else fp32: emulated bf16
is many times slower than fp32); both on the CPU unless ``--device cuda``, where every trainer runs on the
GPU in bf16 mixed precision (TRL's fused head scores with its Triton kernel there) and each step's time is
taken after ``torch.cuda.synchronize()``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from dualloop.models import ModelSettings, load_policy  # noqa: E402
from dualloop.trainer import AdaptiveDPOConfig, AdaptiveDPOTrainer, method_settings  # noqa: E402

# name -> AdaptiveDPOConfig fields (None: TRL's own DPOTrainer)
RUNS: dict[str, dict | None] = {
    "trl": None,
    "static": method_settings("static"),
    "annealed": method_settings("annealed"),
    "dualloop": {**method_settings("dualloop"), "kl_estimator": "logratio"},
    "dualloop-token": {**method_settings("dualloop"), "kl_estimator": "token"},
    "beta-dpo": method_settings("beta-dpo"),
    "epsilon-dpo": method_settings("epsilon-dpo"),
    "adadpo": method_settings("adadpo"),
}
PROFILES = {
    # model, pairs per device step, words per prompt / response, bf16 autocast
    "smoke": {"model": "smoke", "batch": 4, "prompt_words": 40, "response_words": (20, 40), "bf16": False},
    "cpu": {
        "model": "smollm2-135m-instruct",
        "batch": 4,
        "prompt_words": 40,
        "response_words": (20, 40),
        "bf16": "native",
    },
}


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (oneDNN's check: avx512_bf16 or AMX)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


WORDS = (
    "the quick brown fox jumps over a lazy dog while seven bright stars shine above green hills and "
    "quiet rivers flow toward distant cities where people write careful answers to hard questions"
).split()


def preference_pairs(count: int, prompt_words: int, response_words: tuple[int, int], seed: int = 0) -> Dataset:
    """Prompt/chosen/rejected rows of seeded random words (only their lengths matter here)."""
    rng = random.Random(seed)

    def text(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n))

    return Dataset.from_list(
        [
            {
                "prompt": text(prompt_words),
                "chosen": " " + text(rng.randint(*response_words)),
                "rejected": " " + text(rng.randint(*response_words)),
            }
            for _ in range(count)
        ]
    )


class Baton:
    """Round-robin turns between trainer threads: a trainer holds the baton from one step's start
    until its next step's start (so its logging and data loading run alone too)."""

    def __init__(self, names: list[str]):
        self.condition = threading.Condition()
        self.order = list(names)
        self.turn = 0

    def _advance(self) -> None:
        self.turn = (self.turn + 1) % len(self.order) if self.order else 0
        self.condition.notify_all()

    def take(self, name: str) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.order[self.turn] == name)

    def pass_on(self, name: str) -> None:
        with self.condition:
            if self.order[self.turn] == name:
                self._advance()

    def leave(self, name: str) -> None:
        with self.condition:
            index = self.order.index(name)
            self.order.remove(name)
            if self.order and self.turn >= index:
                self.turn = (self.turn - (1 if self.turn > index else 0)) % len(self.order)
            self.condition.notify_all()


class StepTimer(TrainerCallback):
    def __init__(self, name: str, baton: Baton, cuda: bool = False):
        self.name, self.baton, self.cuda = name, baton, cuda
        self.times: list[float] = []
        self._start = 0.0
        self._holding = False

    def on_step_begin(self, args, state, control, **kwargs):
        if self._holding:
            self.baton.pass_on(self.name)
        self.baton.take(self.name)
        self._holding = True
        if self.cuda:
            torch.cuda.synchronize()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self.cuda:
            torch.cuda.synchronize()
        self.times.append(time.perf_counter() - self._start)
        print(f"  {self.name} step {state.global_step}/{state.max_steps}: {self.times[-1]:.3f} s", flush=True)


def uses_bf16(profile: dict, device: str) -> bool:
    """bf16 mixed precision: always on CUDA; on the CPU as the profile says."""
    if device == "cuda":
        return True
    return native_bf16() if profile["bf16"] == "native" else profile["bf16"]


def build_trainer(name: str, profile: dict, steps: int, warmup: int, output_dir: str, device: str = "cpu"):
    policy = load_policy(ModelSettings(name_or_path=profile["model"], device=device, seed=0))
    dataset = preference_pairs(profile["batch"] * (steps + warmup), profile["prompt_words"], profile["response_words"])
    bf16 = uses_bf16(profile, device)
    common = dict(
        output_dir=os.path.join(output_dir, name),
        use_cpu=device == "cpu",
        bf16=bf16,
        gradient_checkpointing=False,
        per_device_train_batch_size=profile["batch"],
        max_steps=steps + warmup,
        learning_rate=5e-4,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
    )
    settings = RUNS[name]
    if settings is None:
        trainer = DPOTrainer(
            policy.model,
            args=DPOConfig(**common, beta=0.1),
            train_dataset=dataset,
            processing_class=policy.tokenizer,
            peft_config=policy.peft_config,
        )
        trainer.remove_callback(PrinterCallback)  # its per-step dicts would flood the table
    else:
        trainer = AdaptiveDPOTrainer(
            policy.model,
            args=AdaptiveDPOConfig(**common, **settings, beta=0.1, print_progress=False),
            train_dataset=dataset,
            processing_class=policy.tokenizer,
            peft_config=policy.peft_config,
        )
    return trainer


def time_trainers(trainers: dict, warmup: int, cuda: bool = False) -> dict[str, list[float]]:
    """Train all ``trainers`` in threads taking turns step by step; the timed steps of each."""
    baton = Baton(list(trainers))
    timers = {name: StepTimer(name, baton, cuda) for name in trainers}
    errors: list[BaseException] = []

    def train(name: str) -> None:
        try:
            trainers[name].add_callback(timers[name])
            trainers[name].train()
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            baton.leave(name)

    threads = [threading.Thread(target=train, args=(name,), name=name) for name in trainers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return {name: timer.times[warmup:] for name, timer in timers.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="smoke")
    parser.add_argument("--steps", type=int, default=8, help="timed optimizer steps per trainer")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--only", nargs="*", choices=list(RUNS), help="time only these trainers")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: bf16 on the GPU")
    parser.add_argument("--json", action="store_true", help="print a last line of JSON")
    options = parser.parse_args(argv)
    if options.steps < 1 or options.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    if options.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device on this machine")
    if options.threads:
        torch.set_num_threads(options.threads)
    profile = PROFILES[options.profile]
    names = options.only or list(RUNS)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench_train_step.") as output_dir:
        trainers = {
            name: build_trainer(name, profile, options.steps, options.warmup, output_dir, options.device)
            for name in names
        }
        for name, times in time_trainers(trainers, options.warmup, options.device == "cuda").items():
            results[name] = statistics.median(times)
            print(
                f"{name:15s} {results[name]:.4f} s/step (median of {len(times)}; "
                f"min {min(times):.4f}, max {max(times):.4f})",
                flush=True,
            )

    summary = {f"{name}_s_per_step": round(value, 5) for name, value in results.items()}
    if "trl" in results and "static" in results:
        summary["static_vs_trl"] = round(results["static"] / results["trl"], 4)
    if "static" in results:
        for name in results:
            if name not in ("trl", "static"):
                summary[f"{name}_vs_static"] = round(results[name] / results["static"], 4)
    bf16 = uses_bf16(profile, options.device)
    where = torch.cuda.get_device_name() if options.device == "cuda" else "cpu"
    print(
        f"\nprofile {options.profile} on {where}: {options.steps} timed steps after {options.warmup} warm-up, "
        f"{profile['batch']} pairs per step, {'bf16 autocast' if bf16 else 'fp32'}, "
        f"torch threads {torch.get_num_threads()}"
    )
    print(f"{'trainer':15s} {'s/step':>8s} {'vs static':>10s} {'vs trl':>8s}")
    for name, value in results.items():
        vs_static = f"{value / results['static']:.3f}" if "static" in results else "-"
        vs_trl = f"{value / results['trl']:.3f}" if "trl" in results else "-"
        print(f"{name:15s} {value:8.4f} {vs_static:>10s} {vs_trl:>8s}")
    if options.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
