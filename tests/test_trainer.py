"""AdaptiveDPOTrainer: equality with TRL's DPOTrainer, every method end to end, resume, bad input."""

from __future__ import annotations

import importlib
import json
import math
import time

import pytest
import torch
from datasets import Dataset
from devices import CUDA_BF16
from reference_statistics import epsilon_steps, token_kl
from transformers import Trainer, TrainerCallback
from trl import DPOConfig, DPOTrainer

from dualloop.__main__ import main
from dualloop.controllers import BetaDecision, epsilon_steps_from_logps
from dualloop.methods import methods
from dualloop.models import ModelSettings, lora_config, smoke_model
from dualloop.trainer import (
    CONTROLLERS,
    LOSSES,
    AdaptiveDPOConfig,
    AdaptiveDPOTrainer,
    method_settings,
    vocabulary_statistics,
)
from dualloop.trainer.heads import backbone

TIMING_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos"}


def pairs(count: int = 8) -> Dataset:
    """Short prompt/chosen/rejected pairs (standard form) with responses of different lengths."""
    return Dataset.from_list(
        [
            {"prompt": f"Q{i}: add {i} and {i}.", "chosen": f" {2 * i}.", "rejected": f" It is {3 * i} or so."}
            for i in range(count)
        ]
    )


def training_args(tmp_path, **overrides) -> dict:
    args = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        per_device_train_batch_size=2,
        max_steps=2,
        learning_rate=5e-3,
        report_to=[],
        save_strategy="no",
        seed=0,
        print_progress=False,
    )
    args.update(overrides)
    return args


def adaptive_trainer(tmp_path, dataset=None, model_seed=0, **overrides) -> AdaptiveDPOTrainer:
    model, tokenizer = smoke_model(model_seed)
    return AdaptiveDPOTrainer(
        model,
        args=AdaptiveDPOConfig(**training_args(tmp_path, **overrides)),
        train_dataset=dataset or pairs(),
        processing_class=tokenizer,
        peft_config=lora_config(ModelSettings(name_or_path="smoke")),
    )


def history(path) -> list[dict]:
    rows = [json.loads(line) for line in (path / "history.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def perturb_adapter(model) -> None:
    """Give LoRA's B (zero at init) seeded values so that policy ≠ reference and every grad is nonzero."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)


# ------------------------------------------------------------------ equality with TRL


def one_step_of_trl_and_ours(tmp_path, **device) -> dict:
    """Loss, LoRA gradients and logged metrics of one micro-batch through TRL's DPOTrainer and ours,
    from the same perturbed adapter and the same batch (sigmoid loss, β = 0.3)."""
    common = {**training_args(tmp_path, beta=0.3), **device}
    del common["print_progress"], common["output_dir"]
    runs = {}
    for name, trainer_class, config_class in (
        ("trl", DPOTrainer, DPOConfig),
        ("ours", AdaptiveDPOTrainer, AdaptiveDPOConfig),
    ):
        model, tokenizer = smoke_model(0)
        trainer = trainer_class(
            model,
            args=config_class(**common, output_dir=str(tmp_path / name)),
            train_dataset=pairs(),
            processing_class=tokenizer,
            peft_config=lora_config(ModelSettings(name_or_path="smoke")),
        )
        perturb_adapter(trainer.model)
        trainer.model.train()
        inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
        with trainer.accelerator.autocast():  # bf16 autocast where the arguments ask for it, as in train()
            loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        metrics = trainer.metrics_since_log if name == "ours" else trainer._metrics  # TRL's own, read to compare
        runs[name] = (loss.detach(), grads, metrics["train"])
    return runs


def assert_equal_to_trl(runs: dict, rtol: float, atol: float) -> None:
    (trl_loss, trl_grads, trl_metrics), (our_loss, our_grads, our_metrics) = runs["trl"], runs["ours"]
    assert trl_loss.item() > 0.05  # the adapter moved the policy: a non-trivial loss
    torch.testing.assert_close(our_loss, trl_loss, rtol=rtol, atol=atol)
    assert trl_grads.keys() == our_grads.keys() and len(trl_grads) > 0
    for name in trl_grads:
        assert trl_grads[name].abs().max() > 0, name
        torch.testing.assert_close(our_grads[name], trl_grads[name], rtol=10 * rtol, atol=atol / 10)
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert our_metrics[key] == pytest.approx(trl_metrics[key], rel=10 * rtol, abs=atol), key
    assert our_metrics["beta"] == [pytest.approx(0.3)]


def test_static_sigmoid_loss_and_gradients_equal_trl(tmp_path):
    assert_equal_to_trl(one_step_of_trl_and_ours(tmp_path), rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@CUDA_BF16
def test_static_sigmoid_loss_and_gradients_equal_trl_in_bf16_on_cuda(tmp_path):
    """On CUDA both trainers score through TRL's fused head (its Triton kernels where Triton is
    installed) under bf16 autocast: the same kernels on the same batch, so equal to bf16's precision."""
    runs = one_step_of_trl_and_ours(tmp_path, use_cpu=False, bf16=True)
    assert runs["ours"][0].device.type == "cuda"
    for name, (loss, grads, _) in runs.items():
        print(
            f"{name}: loss {loss.item():.6f}, grad norm {torch.cat([g.flatten() for g in grads.values()]).norm():.6f}"
        )
    assert_equal_to_trl(runs, rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------ the chunked full-vocabulary work


def test_chunked_vocabulary_statistics_equal_full_logit_token_kl_and_epsilon_steps():
    generator = torch.Generator().manual_seed(0)
    rows_per_side, length, hidden, vocab = 3, 7, 16, 50
    head = torch.nn.Linear(hidden, vocab, bias=False)
    ref_head = torch.nn.Linear(hidden, vocab, bias=True)  # the reference's own head (full fine-tuning)
    with torch.no_grad():
        head.weight.copy_(torch.randn(vocab, hidden, generator=generator))
        ref_head.weight.copy_(head.weight + 0.2 * torch.randn(vocab, hidden, generator=generator))
        ref_head.bias.copy_(0.5 * torch.randn(vocab, generator=generator))
    policy_hidden = torch.randn(2 * rows_per_side, length, hidden, generator=generator)
    ref_hidden = policy_hidden + 0.3 * torch.randn(policy_hidden.shape, generator=generator)
    labels = torch.randint(0, vocab, (2 * rows_per_side, length), generator=generator)
    mask = torch.rand(2 * rows_per_side, length, generator=generator) > 0.3
    mask[:, 0] = True
    rows = mask.nonzero()[:, 0]
    for chunk_size in (1, 4, 1000):
        kl_rows, log_probs = vocabulary_statistics(
            (head.weight, None),
            (ref_head.weight, ref_head.bias),
            policy_hidden[mask],
            ref_hidden[mask],
            labels[mask],
            rows,
            2 * rows_per_side,
            chunk_size=chunk_size,
            token_kl=True,
            epsilon=0.2,
        )
        with torch.no_grad():
            policy_logits, ref_logits = head(policy_hidden), ref_head(ref_hidden)
        expected_kl = token_kl(policy_logits, ref_logits, mask)
        assert (kl_rows.sum() / mask.sum()).item() == pytest.approx(expected_kl.item(), rel=1e-5)
        for row in range(2 * rows_per_side):  # each sequence's own KL sum
            row_kl = token_kl(policy_logits[row : row + 1], ref_logits[row : row + 1], mask[row : row + 1])
            assert kl_rows[row].item() == pytest.approx(row_kl.item() * mask[row].sum().item(), rel=1e-5)
        expected_steps = epsilon_steps(policy_logits, ref_logits, labels, mask, 0.2)
        assert torch.equal(epsilon_steps_from_logps(log_probs), expected_steps)
        own = torch.log_softmax(policy_logits, -1).gather(2, labels[..., None]).squeeze(2)
        torch.testing.assert_close(log_probs[0], (own * mask).sum(1).double(), rtol=1e-5, atol=1e-5)
    assert expected_steps.abs().sum() > 0  # the case exercises nonzero steps


def test_full_fine_tuning_with_a_separate_reference_logs_the_exact_token_kl_and_epsilon_steps(tmp_path):
    """Each model's hidden states through its own output embedding: the reference's head, not the policy's."""
    model, tokenizer = smoke_model(0)
    reference, _ = smoke_model(0)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # policy ≠ reference everywhere, the (tied) output embedding included
        for param in model.parameters():
            param.add_(0.5 * param.std() * torch.randn(param.shape, generator=generator))
    assert not torch.equal(model.get_output_embeddings().weight, reference.get_output_embeddings().weight)
    args = AdaptiveDPOConfig(
        **training_args(
            tmp_path,
            controller="epsilon-dpo",
            log_token_kl=True,
            per_device_train_batch_size=4,
            controller_kwargs={"epsilon": 0.3},
        )
    )
    trainer = AdaptiveDPOTrainer(
        model, ref_model=reference, args=args, train_dataset=pairs(), processing_class=tokenizer
    )
    trainer.model.train()
    inputs = next(iter(trainer.get_train_dataloader()))
    trainer.compute_loss(trainer.model, inputs)

    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)[:, 1:]
    mask = labels != -100
    with torch.no_grad():
        model_inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        policy_logits = model(**model_inputs).logits[:, :-1]
        ref_logits = reference(**model_inputs).logits[:, :-1]
    exact_kl = token_kl(policy_logits, ref_logits, mask).item()
    exact_steps = epsilon_steps(policy_logits, ref_logits, labels.clamp_min(0), mask, 0.3)
    assert exact_kl > 0.01
    assert trainer.metrics_since_log["train"]["kl/token"][-1] == pytest.approx(exact_kl, rel=1e-4)
    assert torch.equal(trainer._pending[-1]["epsilon_steps"], exact_steps)


def test_reference_free_losses_skip_the_reference_forward(tmp_path):
    counts = {}
    for loss_type in ("sigmoid", "simpo"):
        trainer = adaptive_trainer(tmp_path / loss_type, loss_type=loss_type)
        calls = []
        backbone(trainer.model).register_forward_hook(lambda *_, calls=calls: calls.append(1))
        trainer.model.train()
        trainer.compute_loss(trainer.model, next(iter(trainer.get_train_dataloader())))
        counts[loss_type] = len(calls)
    assert counts == {"sigmoid": 2, "simpo": 1}
    assert adaptive_trainer(tmp_path / "dualloop", loss_type="simpo", controller="dualloop").args.reference_needed


def test_beta_dpo_reward_metrics_are_over_the_kept_examples(tmp_path):
    trainer = adaptive_trainer(tmp_path, controller="beta-dpo")
    decision = BetaDecision(torch.full((4,), 0.1), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    chosen, rejected = torch.tensor([1.0, 9.0, 3.0, 9.0]), torch.tensor([0.0, -9.0, 5.0, -9.0])
    logps = torch.tensor([-1.0, -50.0, -3.0, -50.0])
    pair_stats = {"margin": torch.zeros(4), "tokens": torch.full((4,), 2.0), "abs_logratio": torch.ones(4)}
    trainer._record("train", decision, (chosen, rejected, logps, logps), pair_stats)
    metrics = trainer.metrics_since_log["train"]
    assert metrics["rewards/chosen"] == [2.0] and metrics["rewards/rejected"] == [2.5]
    assert metrics["rewards/accuracies"] == [0.5] and metrics["logps/chosen"] == [-2.0]
    assert metrics["weight/kept_fraction"] == [0.5]


def test_annealed_horizon_is_the_trainers_number_of_optimizer_steps(tmp_path):
    # 9 pairs in batches of 2 with the last dropped: 4 steps an epoch, so half an epoch is 2 steps
    trainer = adaptive_trainer(
        tmp_path,
        dataset=pairs(9),
        controller="annealed",
        max_steps=-1,
        num_train_epochs=0.5,
        dataloader_drop_last=True,
        controller_kwargs={"start": 0.2, "end": 0.05},
    )
    trainer.train()
    assert trainer.state.max_steps == 2
    assert [row["beta"] for row in history(tmp_path) if "loss" in row] == [pytest.approx(0.2), pytest.approx(0.125)]
    assert trainer.controller.beta == pytest.approx(0.05)  # the schedule ends where the run ends


# ------------------------------------------------------------------ every method end to end


@pytest.mark.parametrize(
    "method, overrides",
    [
        ("static", {}),
        ("annealed", {}),
        ("dualloop", {"kl_estimator": "token"}),
        ("dualloop", {"kl_estimator": "logratio"}),
        ("beta-dpo", {}),
        ("epsilon-dpo", {}),
        ("adadpo", {}),
        ("static", {"loss_type": "ipo"}),
    ],
)
def test_every_method_trains_on_the_smoke_model(tmp_path, method, overrides):
    settings = {**method_settings(method), **overrides}
    trainer = adaptive_trainer(tmp_path, gradient_accumulation_steps=2, **settings)
    trainer.train()
    rows = [row for row in history(tmp_path) if "loss" in row]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["loss"])
        assert row["beta/min"] <= row["beta"] <= row["beta/max"]
        for key in ("beta/base", "rewards/chosen", "rewards/accuracies", "rewards/margins", "kl/logratio"):
            assert math.isfinite(row[key]), key
    if settings.get("kl_estimator") == "token":
        assert rows[-1]["kl/token"] > 0 and rows[-1]["kl"] == pytest.approx(rows[-1]["kl/token"])
    if method == "annealed":  # one controller step per optimizer step, not per micro-batch
        assert trainer.controller.state_dict()["steps"] == 2
    if method == "beta-dpo":  # β-DPO decides per micro-batch: 2 micro-batches per step
        assert trainer.controller.state_dict()["calls"] == 4
    state = trainer.controller.state_dict()
    metrics = trainer.evaluate(pairs(4))
    assert math.isfinite(metrics["eval_loss"]) and metrics["eval_beta/min"] <= metrics["eval_beta"]
    assert trainer.controller.state_dict() == state  # evaluation changes no controller state


@pytest.mark.gpu
@CUDA_BF16
@pytest.mark.parametrize(
    "method, sets",
    [(method, []) for method in methods()] + [("dualloop", ["--set", "training.kl_estimator=token"])],
)
def test_every_method_trains_four_steps_in_bf16_on_cuda_through_the_train_command(
    tmp_path, monkeypatch, capsys, method, sets
):
    """``dualloop train`` on a CUDA machine: the smoke model on the GPU, bf16 mixed precision, and TRL's
    fused head scoring with its Triton kernel (``trl.kernels.chunked_logprob`` asks ``_use_triton``)."""
    pytest.importorskip("triton", reason="TRL's Triton kernel needs Triton")
    chunked_logprob = importlib.import_module("trl.kernels.chunked_logprob")  # TRL's private kernel module
    decisions = []  # (device type, whether TRL's chunked log-prob kernel ran in Triton) per call
    original = chunked_logprob._use_triton

    def recorded(device):
        decisions.append((device.type, original(device)))
        return decisions[-1][1]

    monkeypatch.setattr(chunked_logprob, "_use_triton", recorded)
    out = tmp_path / "out"
    assert main(["train", "--profile", "smoke", "--method", method, "--steps", "4", *sets, "--out", str(out)]) == 0
    assert "; device cuda" in capsys.readouterr().out  # the loader's line: the policy was placed on the GPU
    (run,) = [path.parent for path in (out / "registry").glob("*/history.jsonl")]
    rows = [row for row in history(run) if "loss" in row]
    assert [row["step"] for row in rows] == [1, 2, 3, 4]
    for row in rows:
        assert math.isfinite(row["loss"]) and math.isfinite(row["beta"]) and row["beta"] > 0, row
    args = torch.load(run / "adapter" / "training_args.bin", weights_only=False)
    assert args.bf16 and not args.use_cpu
    assert decisions and all(device == "cuda" and fused for device, fused in decisions), decisions
    print(
        f"{method} {' '.join(sets)}: losses {[round(row['loss'], 4) for row in rows]}, "
        f"betas {[round(row['beta'], 4) for row in rows]}, triton {decisions[-1][1]}"
    )


@pytest.mark.parametrize("loss_type", list(LOSSES))
def test_every_loss_trains_two_steps_under_dualloop(tmp_path, loss_type):
    trainer = adaptive_trainer(tmp_path, controller="dualloop", kl_estimator="logratio", loss_type=loss_type)
    trainer.train()
    rows = [row for row in history(tmp_path) if "loss" in row]
    assert [row["step"] for row in rows] == [1, 2] and trainer.args.loss_type == [loss_type]
    for row in rows:
        for key in ("loss", "beta", "beta/base", "kl", "rewards/margins", "entropy"):
            assert math.isfinite(row[key]), (loss_type, key)
    assert rows[0]["beta/base"] != rows[1]["beta/base"]  # the slow loop moved β on this loss's KL


@pytest.mark.parametrize("controller", list(CONTROLLERS))
def test_a_reference_free_loss_trains_under_every_controller(tmp_path, controller):
    trainer = adaptive_trainer(
        tmp_path, controller=controller, loss_type="adaptive-simpo", gradient_accumulation_steps=2
    )
    trainer.train()
    rows = [row for row in history(tmp_path) if "loss" in row]
    assert len(rows) == 2 and all(math.isfinite(row["loss"]) and math.isfinite(row["beta"]) for row in rows)


def test_separate_reference_model_and_precomputed_reference_log_probs(tmp_path):
    model, tokenizer = smoke_model(0)
    reference, _ = smoke_model(0)
    trainer = AdaptiveDPOTrainer(
        model,
        ref_model=reference,
        args=AdaptiveDPOConfig(**training_args(tmp_path / "ref", controller="epsilon-dpo")),
        train_dataset=pairs(),
        processing_class=tokenizer,
    )
    trainer.train()
    assert all(math.isfinite(row["loss"]) for row in history(tmp_path / "ref") if "loss" in row)

    trainer = adaptive_trainer(
        tmp_path / "pre", controller="dualloop", kl_estimator="logratio", precompute_ref_log_probs=True
    )
    trainer.train()
    rows = [row for row in history(tmp_path / "pre") if "loss" in row]
    assert len(rows) == 2 and rows[-1]["kl"] == pytest.approx(rows[-1]["kl/logratio"])


def test_progress_is_one_plain_line_per_logging_step(tmp_path, capsys):
    adaptive_trainer(tmp_path, controller="dualloop", print_progress=True).train()
    out, err = capsys.readouterr()
    lines = [line for line in out.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["1/2", "2/2", "2/2"]  # two steps, then the run summary
    assert " loss " in lines[0] and " beta " in lines[0] and " kl " in lines[0]
    assert "it/s" not in out + err and "\r" not in out + err  # no progress bars


# ------------------------------------------------------------------ checkpoint and resume


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.mark.parametrize("controller", ["dualloop", "beta-dpo"])
def test_resumed_run_repeats_the_uninterrupted_beta_trajectory(tmp_path, controller):
    settings = dict(controller=controller, max_steps=4, save_strategy="steps", save_steps=2)
    adaptive_trainer(tmp_path / "whole", **settings).train()

    first = adaptive_trainer(tmp_path / "split", **settings)
    first.add_callback(StopAt(2))
    first.train()
    trainer_state = json.loads((tmp_path / "split" / "checkpoint-2" / "trainer_state.json").read_text())
    saved = trainer_state["stateful_callbacks"]["ControllerCallback"]["args"]  # the Trainer's own checkpoint state
    assert saved["controller"] == controller and saved["step"] == 2
    assert [row["step"] for row in history(tmp_path / "split") if "loss" in row] == [1, 2]
    adaptive_trainer(tmp_path / "split", **settings).train(resume_from_checkpoint=True)

    whole = [row for row in history(tmp_path / "whole") if "loss" in row]
    split = [row for row in history(tmp_path / "split") if "loss" in row]
    assert [row["step"] for row in split] == [1, 2, 3, 4]
    assert len({row["beta"] for row in whole}) > 1  # β moved: the comparison can fail
    for expected, got in zip(whole, split, strict=True):
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-5, abs=1e-7), (expected["step"], key)


def test_controller_state_is_restored_without_the_trainers_private_checkpoint_hook(tmp_path, monkeypatch):
    """DeepSpeed resumes through ``deepspeed_load_checkpoint``: ``Trainer._load_from_checkpoint`` never runs.
    β must come back through the stateful-callback path that every backend shares."""
    settings = dict(controller="dualloop", max_steps=4, save_strategy="steps", save_steps=2)
    first = adaptive_trainer(tmp_path, **settings)
    first.add_callback(StopAt(2))
    first.train()
    saved = first.controller.state_dict()
    assert saved["steps"] == 2 and saved["beta_base"] != 0.1

    monkeypatch.setattr(Trainer, "_load_from_checkpoint", lambda self, *args, **kwargs: None)
    seen = {}

    class Probe(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            seen["state"] = resumed.controller.state_dict()

    resumed = adaptive_trainer(tmp_path, **settings)
    resumed.add_callback(Probe())
    resumed.train(resume_from_checkpoint=True)
    assert seen["state"] == saved


def test_resume_refuses_a_checkpoint_without_the_controllers_state(tmp_path):
    adaptive_trainer(tmp_path, controller="dualloop", save_strategy="steps", save_steps=2).train()
    state_file = tmp_path / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["ControllerCallback"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(ValueError, match="not written by AdaptiveDPOTrainer, so β cannot be restored"):
        adaptive_trainer(tmp_path, controller="dualloop", max_steps=3).train(
            resume_from_checkpoint=str(tmp_path / "checkpoint-2")
        )


def test_resume_refuses_a_checkpoint_of_another_controller(tmp_path):
    adaptive_trainer(tmp_path, controller="dualloop", save_strategy="steps", save_steps=2).train()
    other = adaptive_trainer(tmp_path, controller="epsilon-dpo", max_steps=3)
    with pytest.raises(ValueError, match="controller 'dualloop'.*'epsilon-dpo'"):
        other.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


# ------------------------------------------------------------------ bad input


def test_unknown_method_and_controller_names_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"unknown method 'dualoop' \(did you mean 'dualloop'\?\)"):
        method_settings("dualoop")
    with pytest.raises(ValueError, match=r"unknown controller 'beta_dpo' \(did you mean 'beta-dpo'\?\)"):
        AdaptiveDPOConfig(**training_args(tmp_path, controller="beta_dpo"))
    with pytest.raises(ValueError, match="loss_type must be one of sigmoid, adadpo, ipo"):
        AdaptiveDPOConfig(**training_args(tmp_path, loss_type="hinge"))
    with pytest.raises(
        ValueError, match=r"loss_kwargs.clp: not an argument of the 'adadpo' loss \(did you mean 'clip'"
    ):
        AdaptiveDPOConfig(**training_args(tmp_path, loss_type="adadpo", loss_kwargs={"clp": 1.5}))
    with pytest.raises(ValueError, match="loss_kwargs.clip: not an argument of the 'sigmoid' loss"):
        AdaptiveDPOConfig(**training_args(tmp_path, loss_kwargs={"clip": 1.5}))
    with pytest.raises(ValueError, match="space must be one of"):
        AdaptiveDPOConfig(**training_args(tmp_path, loss_type="adadpo", loss_kwargs='{"space": "both"}'))
    with pytest.raises(ValueError, match=r"'kl_targt' is not an argument of DualLoop \(did you mean 'kl_target'"):
        AdaptiveDPOConfig(**training_args(tmp_path, controller="dualloop", controller_kwargs={"kl_targt": 0.1}))


@pytest.mark.parametrize(
    "settings, needs",
    [
        ({"controller": "epsilon-dpo"}, "ε-DPO's steps"),
        ({"controller": "dualloop", "kl_estimator": "token"}, "token KL"),
    ],
)
def test_reference_logits_with_precomputed_reference_log_probs_is_refused(tmp_path, settings, needs):
    with pytest.raises(ValueError, match=f"{needs}.*precompute_ref_log_probs=False"):
        adaptive_trainer(tmp_path, precompute_ref_log_probs=True, **settings)


# ------------------------------------------------------------------ the offline model


@pytest.mark.slow
def test_every_method_trains_a_few_steps_on_smollm2(tmp_path):
    """fp32: on a CPU without native bf16 (no avx512_bf16/AMX) bf16 autocast is many times slower."""
    from dualloop.models import load_policy

    started = time.perf_counter()
    for method in ("static", "dualloop", "beta-dpo", "epsilon-dpo", "adadpo"):
        policy = load_policy(ModelSettings(device="cpu"))
        trainer = AdaptiveDPOTrainer(
            policy.model,
            args=AdaptiveDPOConfig(**training_args(tmp_path / method, max_steps=3, **method_settings(method))),
            train_dataset=pairs(),
            processing_class=policy.tokenizer,
            peft_config=policy.peft_config,
        )
        trainer.train()
        rows = [row for row in history(tmp_path / method) if "loss" in row]
        assert len(rows) == 3 and all(math.isfinite(row["loss"]) for row in rows)
    print(f"SmolLM2-135M, 5 methods x 3 steps: {time.perf_counter() - started:.1f} s")


def test_reference_cache_reads_back_what_the_forward_wrote(tmp_path):
    """A run reading the reference's outputs from the cache trains bit for bit as one computing them,
    and runs the reference forward on no micro-batch it has met before."""
    settings = dict(controller="dualloop", log_token_kl=True, max_steps=3)
    cache_dir = tmp_path / "reference"
    trained = {}
    for name, cache in (("plain", None), ("filling", cache_dir), ("reading", cache_dir)):
        trainer = adaptive_trainer(tmp_path / name, reference_cache_dir=str(cache) if cache else None, **settings)
        calls: list[int] = []
        hook = backbone(trainer.model).register_forward_hook(lambda *args, calls=calls: calls.append(1))
        trainer.train()
        hook.remove()
        lora = {k: v.detach().clone() for k, v in trainer.model.named_parameters() if "lora_" in k}
        trained[name] = (history(tmp_path / name), lora, len(calls), trainer.reference_cache)
    assert trained["plain"][3] is None and trained["plain"][2] == 6  # policy and reference, 3 micro-batches
    filling, reading = trained["filling"][3], trained["reading"][3]
    assert (filling.hits, filling.misses, reading.hits, reading.misses) == (0, 3, 3, 0)
    assert len(list(cache_dir.glob("*.pt"))) == 3 and not list(cache_dir.glob("*.tmp"))
    assert trained["reading"][2] == 3  # the policy's forwards only
    for name in ("filling", "reading"):
        assert trained[name][0] == trained["plain"][0]  # every logged value: loss, β, token KL, rewards
        for key, value in trained["plain"][1].items():
            assert torch.equal(trained[name][1][key], value), key


def test_reference_cache_keys_and_fingerprint():
    from dualloop.trainer.reference_cache import ReferenceCache, weights_fingerprint

    def frozen_model(seed: int, trainable: str = "model.layers.0.mlp.up_proj.weight"):
        model = smoke_model(seed)[0]
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name == trainable)
        return model

    model = frozen_model(0)
    frozen = weights_fingerprint(model, frozen_only=True)
    everything = weights_fingerprint(model, frozen_only=False)
    assert frozen == weights_fingerprint(frozen_model(0), frozen_only=True)
    assert frozen != weights_fingerprint(frozen_model(1), frozen_only=True)
    with torch.no_grad():
        model.get_parameter("model.layers.0.mlp.up_proj.weight").add_(1.0)  # trainable: not the reference's
    assert weights_fingerprint(model, frozen_only=True) == frozen
    assert weights_fingerprint(model, frozen_only=False) != everything
    with torch.no_grad():
        model.get_parameter("model.layers.0.mlp.down_proj.weight").add_(1e-6)  # frozen: the reference changed
    assert weights_fingerprint(model, frozen_only=True) != frozen

    cache = ReferenceCache("unused", frozen)
    ids = torch.tensor([[1, 2, 3]])
    key = cache.key({"input_ids": ids}, keep_hidden=True)
    assert key == cache.key({"input_ids": ids.clone()}, keep_hidden=True)
    assert key != cache.key({"input_ids": torch.tensor([[1, 2, 4]])}, keep_hidden=True)
    assert key != cache.key({"labels": ids}, keep_hidden=True)
    assert key != cache.key({"input_ids": ids}, keep_hidden=False)
    assert key != ReferenceCache("unused", "another model").key({"input_ids": ids}, keep_hidden=True)


def test_reference_cache_refuses_a_random_reference(tmp_path):
    model, tokenizer = smoke_model(0)
    model.config.attention_dropout = 0.1
    with pytest.raises(ValueError, match=r"config\.attention_dropout=0\.1 .* cannot be cached"):
        AdaptiveDPOTrainer(
            model,
            args=AdaptiveDPOConfig(**training_args(tmp_path, reference_cache_dir=str(tmp_path / "reference"))),
            train_dataset=pairs(),
            processing_class=tokenizer,
            peft_config=lora_config(ModelSettings(name_or_path="smoke")),
        )


def test_reference_cache_file_round_trip_and_a_damaged_file_is_a_miss(tmp_path, capsys):
    from dualloop.trainer.reference_cache import ReferenceCache

    cache = ReferenceCache(tmp_path, "model")
    outputs = {"logps": torch.tensor([-1.5, -2.25], dtype=torch.float64), "hidden": torch.randn(3, 4)}
    cache.put("k", outputs)
    read = cache.get("k")
    assert read is not None and all(torch.equal(read[name], value) for name, value in outputs.items())
    assert [p.name for p in tmp_path.iterdir()] == ["k.pt"]  # no temporary file left
    (tmp_path / "k.pt").write_bytes(b"cut short")
    assert cache.get("k") is None and not (tmp_path / "k.pt").exists()
    assert "k.pt is unreadable" in capsys.readouterr().out
    assert (cache.hits, cache.misses) == (1, 1)


def test_a_run_keeps_its_own_controllers_and_losss_arguments_and_each_value_is_checked_before_loading():
    # a phase's settings may hold the arguments of every method it trains: each run keeps its own
    both = {"controller_kwargs": {"lam": 2.5, "kl_target": 0.1}, "loss_kwargs": {"clip": 1.5}}
    assert method_settings("static", both)["controller_kwargs"] == {}
    assert method_settings("static", both)["loss_kwargs"] == {}
    assert method_settings("dualloop", both)["controller_kwargs"] == {"lam": 2.5, "kl_target": 0.1}
    assert method_settings("adadpo", both)["loss_kwargs"] == {"clip": 1.5}
    with pytest.raises(ValueError, match="controller_kwargs of the 'dualloop' controller: kl_target must be > 0"):
        method_settings("dualloop", {"controller_kwargs": {"kl_target": 0.0}})
    with pytest.raises(ValueError, match="controller_kwargs of the 'static' controller: beta must be > 0"):
        method_settings("static", {"beta": -0.1})
    with pytest.raises(ValueError, match="loss_kwargs of the 'sigmoid' loss: label_smoothing must be in"):
        method_settings("static", {"label_smoothing": 0.7})
    with pytest.raises(ValueError, match="loss_kwargs of the 'adadpo' loss: clip must be a finite number > 0"):
        method_settings("adadpo", {"loss_kwargs": {"clip": -1}})
    with pytest.raises(ValueError, match="'kl_targt' is not an argument of DualLoop"):
        method_settings("dualloop", {"controller_kwargs": {"kl_targt": 0.1}})
