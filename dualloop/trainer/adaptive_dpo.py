"""``AdaptiveDPOTrainer``: TRL's ``DPOTrainer`` with a β controller and a choice of loss.

It keeps everything TRL does around the loss — tokenization, collation, PEFT handling (the
reference is the policy with its adapter disabled, no weight copy), a separate reference model or
precomputed reference log-probs, TRL's fused LM head, logging and checkpointing — and overrides only
the Trainer's public ``compute_loss``, ``training_step`` and ``log``:

1. one policy forward and (when the loss, the controller or the logging needs it) one reference
   forward through TRL's fused head (``fused_lm_head=True``; on a CPU scoring only the response
   positions, :mod:`dualloop.trainer.trl_private`), keeping the response positions' hidden
   states when full-vocabulary statistics are needed (:mod:`dualloop.trainer.heads`); with
   ``reference_cache_dir`` the reference's outputs of a micro-batch already met are read back
   instead (:mod:`dualloop.trainer.reference_cache`);
2. each pair's margin (the loss's, :mod:`dualloop.losses`) gathered over all processes;
   ``controller.decide`` gives every example's β and loss weight; this process keeps its rows;
3. the loss ``Σ w_i L_i / Σ w_i`` over the global micro-batch;
4. full-vocabulary statistics (token KL, ε-DPO's steps) from those hidden states, each model through
   its own output embedding, in chunks of ``logits_chunk_size`` positions, without gradient;
5. ``controller.step`` once per optimizer step on the statistics of every micro-batch of the
   accumulation and every process, so every process holds the same β.

The controller lives in a :class:`~dualloop.trainer.callbacks.ControllerCallback`, whose state the
Trainer saves in every checkpoint and restores on ``resume_from_checkpoint`` in every backend. Every
log row is appended to ``<output_dir>/history.jsonl`` and printed as one plain line (no progress-bar
widgets, so papermill logs stay readable).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from pathlib import Path
from typing import TypedDict

import datasets
import torch
from accelerate.utils import is_peft_model
from transformers.trainer_callback import PrinterCallback
from trl import DPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import use_adapter

from dualloop.controllers import BatchStats, Controller, epsilon_steps_from_logps
from dualloop.losses import LOSSES, Loss, SequenceLogps
from dualloop.trainer.arguments import AdaptiveDPOConfig, controller_arguments
from dualloop.trainer.callbacks import ControllerCallback, HistoryCallback, ProgressCallback
from dualloop.trainer.heads import (
    backbone,
    captured_hidden_states,
    check_plain_logits,
    lm_head_weights,
    vocabulary_statistics,
)
from dualloop.trainer.reference_cache import ReferenceCache, check_deterministic, weights_fingerprint
from dualloop.trainer.trl_private import compact_scoring_on_cpu

__all__ = ["AdaptiveDPOTrainer"]


class _PendingStatistics(TypedDict):
    """What one training micro-batch leaves for the controller's next step."""

    margins: torch.Tensor
    epsilon_steps: torch.Tensor | None
    pair_stats: dict[str, torch.Tensor]


class AdaptiveDPOTrainer(DPOTrainer):
    """TRL's ``DPOTrainer`` whose β comes from a controller and whose loss is chosen by the config.

    Arguments are those of ``DPOTrainer``; ``args`` must be an :class:`AdaptiveDPOConfig`.
    ``self.controller`` is the controller (held by the run's ``ControllerCallback``);
    ``self.metrics_since_log`` the per-micro-batch metrics that the next log row averages.
    """

    _tag_names = ["trl", "dpo", "dualloop"]
    _name = "AdaptiveDPO"
    # what __init__ checks and DPOTrainer requires (the Trainer's own types are wider)
    args: AdaptiveDPOConfig
    model: torch.nn.Module

    def __init__(self, model, ref_model=None, args: AdaptiveDPOConfig | None = None, *trainer_args, **kwargs):
        if not isinstance(args, AdaptiveDPOConfig):
            raise TypeError(f"AdaptiveDPOTrainer needs args=AdaptiveDPOConfig(...), got {type(args).__name__}")
        if args.precompute_ref_log_probs and args.reference_logits_needed:
            needs = (
                "ε-DPO's steps"
                if "epsilon_steps" in args.controller_needs
                else "the token KL (kl_estimator='token' or log_token_kl=True)"
            )
            raise ValueError(
                f"controller '{args.controller}' needs the reference model's full-vocabulary logits for {needs}, "
                "but precompute_ref_log_probs=True keeps only the reference log-probs; set "
                "precompute_ref_log_probs=False"
                + (", or kl_estimator='logratio' and log_token_kl=False" if "kl" in args.controller_needs else "")
            )
        if args.disable_tqdm:
            datasets.disable_progress_bars()
        super().__init__(model, ref_model, args, *trainer_args, **kwargs)
        if args.reference_logits_needed:
            check_plain_logits(self._policy_module())
            check_plain_logits(self._reference_module())
        self.reference_cache = self._make_reference_cache(args)
        self.objective: Loss = LOSSES[args.loss_type[0]]
        self.loss_arguments = args.loss_arguments()
        controller_kwargs, horizon_from_trainer = controller_arguments(args)
        self.add_callback(
            ControllerCallback(args.controller, controller_kwargs, horizon_from_trainer=horizon_from_trainer)
        )
        self.metrics_since_log: dict[str, defaultdict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._pending: list[_PendingStatistics] = []
        self._extrema: dict[str, list[tuple[float, float]]] = {"train": [], "eval": []}
        if args.disable_tqdm:
            self.remove_callback(PrinterCallback)
        assert args.output_dir is not None  # TrainingArguments.__post_init__ sets its default
        self.add_callback(HistoryCallback(Path(args.output_dir) / args.history_file))
        if args.print_progress:
            self.add_callback(ProgressCallback())

    @property
    def controller(self) -> Controller:
        """The run's β controller (the one restored from a checkpoint after a resume)."""
        return next(cb for cb in self.callback_handler.callbacks if isinstance(cb, ControllerCallback)).controller

    # ------------------------------------------------------------------ forward passes

    def _policy_module(self):
        return self.accelerator.unwrap_model(self.model)

    def _reference_module(self):
        """The module whose forward is the reference: the policy itself (adapter disabled) or ``ref_model``."""
        return self._policy_module() if self.ref_model is None else self.accelerator.unwrap_model(self.ref_model)

    def _reference_context(self):
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    def _make_reference_cache(self, args: AdaptiveDPOConfig) -> ReferenceCache | None:
        if args.reference_cache_dir is None or not args.reference_needed or self.precompute_ref_logps:
            return None
        if self.accelerator.num_processes > 1:
            raise ValueError(
                f"reference_cache_dir={args.reference_cache_dir!r} works in a single process; this run has "
                f"{self.accelerator.num_processes}: leave reference_cache_dir unset"
            )
        reference = self._reference_module()
        check_deterministic(reference)
        fingerprint = weights_fingerprint(reference, frozen_only=reference is self._policy_module())
        print(f"dualloop.trainer: reference outputs cached in {args.reference_cache_dir}", flush=True)
        return ReferenceCache(args.reference_cache_dir, fingerprint)

    def _forward(self, model, inputs, labels: torch.Tensor, keep_hidden: bool):
        """Summed log-probs ``[2B]`` of the policy and of the reference (None when not needed), chosen rows
        first, and with ``keep_hidden`` the response positions' hidden states ``[N, H]`` of both."""
        model_kwargs = {
            "input_ids": inputs["input_ids"],
            "attention_mask": inputs["attention_mask"],
            "use_cache": False,
        }
        scored = labels.shape[1] - 1
        mask = labels[:, 1:] != -100

        def response_hidden(captured: list[torch.Tensor]) -> torch.Tensor | None:
            # Prompt-learning PEFT prepends virtual tokens: keep the positions of the real tokens
            return captured[0][:, -(scored + 1) : -1][mask].detach() if keep_hidden else None

        with captured_hidden_states(backbone(self._policy_module()), keep_hidden) as captured:
            policy = model(**model_kwargs, labels=labels, fused_lm_head=True)
        policy_logps = policy.log_probs[:, -scored:].sum(1)
        policy_hidden = response_hidden(captured)
        if not self.args.reference_needed:
            return policy_logps, None, policy_hidden, None
        if self.precompute_ref_logps:
            ref_logps = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]).to(policy_logps)
            return policy_logps, ref_logps, policy_hidden, None
        cache, key = self.reference_cache, None
        if cache is not None:
            key = cache.key(
                {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "labels": labels},
                keep_hidden=keep_hidden,
                autocast=str(self.accelerator.mixed_precision),
            )
            cached = cache.get(key)
            if cached is not None:
                hidden = cached["hidden"].to(policy_logps.device) if keep_hidden else None
                return policy_logps, cached["logps"].to(policy_logps.device), policy_hidden, hidden
        reference_model = self.model if self.ref_model is None else self.ref_model
        with (
            torch.no_grad(),
            # called as TRL's DPOTrainer calls it (its annotations do not admit a PEFT model, nor the str
            # that TrainingArguments.__post_init__ parses into a dict)
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),  # type: ignore[arg-type]
            self.accelerator.autocast(),
            self._reference_context(),
            captured_hidden_states(backbone(self._reference_module()), keep_hidden) as captured,
        ):
            reference = reference_model(**model_kwargs, labels=labels, fused_lm_head=True)
        ref_logps, ref_hidden = reference.log_probs[:, -scored:].sum(1), response_hidden(captured)
        if cache is not None and key is not None:
            cache.put(key, {"logps": ref_logps, **({"hidden": ref_hidden} if ref_hidden is not None else {})})
        return policy_logps, ref_logps, policy_hidden, ref_hidden

    def _vocabulary_statistics(self, policy_hidden, ref_hidden, labels: torch.Tensor, num_rows: int):
        """Token KL per sequence and ε-DPO's log-probs, each model's hidden states through its own head."""
        mask = labels[:, 1:] != -100
        rows, targets = mask.nonzero()[:, 0], labels[:, 1:][mask]
        policy_module, reference_module = self._policy_module(), self._reference_module()
        needs_steps = "epsilon_steps" in self.controller.needs
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.accelerator.autocast())
            policy_head = stack.enter_context(lm_head_weights(policy_module))
            ref_head = (
                policy_head
                if reference_module is policy_module
                else stack.enter_context(lm_head_weights(reference_module))
            )
            return vocabulary_statistics(
                policy_head,
                ref_head,
                policy_hidden,
                ref_hidden,
                targets,
                rows,
                num_rows,
                chunk_size=self.args.logits_chunk_size,
                token_kl=self.args.token_kl_needed,
                # register_controller: a controller that needs epsilon_steps has an `epsilon` argument
                epsilon=self.controller.epsilon if needs_steps else None,  # type: ignore[attr-defined]
            )

    # ------------------------------------------------------------------ the loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if return_outputs:
            raise ValueError(
                "AdaptiveDPOTrainer computes no logits for compute_metrics; set "
                "prediction_loss_only=True (or leave compute_metrics unset)"
            )
        train = self.model.training
        args = self.args
        needs_steps = "epsilon_steps" in self.controller.needs
        keep_hidden = args.token_kl_needed or needs_steps
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        with compact_scoring_on_cpu():
            policy_logps, ref_logps, policy_hidden, ref_hidden = self._forward(model, inputs, labels, keep_hidden)
        num_rows = policy_logps.shape[0]
        half = num_rows // 2
        lengths = inputs["completion_mask"][:, 1:].sum(1).to(policy_logps.dtype)

        def sides(logps: torch.Tensor, detach: bool) -> tuple[torch.Tensor, torch.Tensor]:
            logps = logps.detach() if detach else logps
            return logps[:half], logps[half:]

        def sequence_logps(detach: bool) -> SequenceLogps:
            policy_chosen, policy_rejected = sides(policy_logps, detach)
            ref_chosen, ref_rejected = (None, None) if ref_logps is None else sides(ref_logps, True)
            return SequenceLogps(
                policy_chosen, policy_rejected, ref_chosen, ref_rejected, lengths[:half], lengths[half:]
            )

        margins = self.objective.margin(sequence_logps(detach=True)).float()
        # Per-pair statistics of this process, gathered in one collective: every process then holds
        # those of the whole micro-batch, in process order (this process's rows are `own`).
        columns = {"margin": margins, "tokens": lengths[:half] + lengths[half:]}
        if ref_logps is not None:
            logratio = (policy_logps - ref_logps).detach()
            columns["abs_logratio"] = logratio[:half].abs() + logratio[half:].abs()
        if keep_hidden:
            kl_rows, log_probs = self._vocabulary_statistics(policy_hidden, ref_hidden, labels, num_rows)
            if kl_rows is not None:
                columns["kl"] = kl_rows[:half] + kl_rows[half:]
            if needs_steps:
                columns["epsilon_step"] = epsilon_steps_from_logps(log_probs)
        gathered = self.accelerator.gather(torch.stack([c.double() for c in columns.values()], 1))
        pair_stats = dict(zip(columns, gathered.unbind(1), strict=True))
        all_margins = pair_stats["margin"].float()
        all_steps = pair_stats["epsilon_step"].long() if needs_steps else None
        decision = self.controller.decide(BatchStats(all_margins, epsilon_steps=all_steps), train=train)
        own = slice(self.accelerator.process_index * half, (self.accelerator.process_index + 1) * half)
        beta, weight = decision.beta[own].to(policy_logps), decision.weight[own].to(policy_logps)
        output = self.objective.loss(sequence_logps(detach=False), beta, self.loss_arguments)
        total_weight = decision.weight.sum()
        if total_weight <= 0:
            raise ValueError(f"controller '{args.controller}' gave every example of a micro-batch weight 0")
        # DDP averages the processes' gradients: scale so that the result is Σ w_i L_i / Σ w_i over all of them
        loss = (weight * output.losses).sum() / total_weight.to(policy_logps) * self.accelerator.num_processes

        if train:
            self._pending.append({"margins": all_margins, "epsilon_steps": all_steps, "pair_stats": pair_stats})
        logged = self.accelerator.gather(
            torch.stack(
                [
                    output.chosen_rewards,
                    output.rejected_rewards,
                    policy_logps[:half].detach(),
                    policy_logps[half:].detach(),
                ],
                1,
            )
        )
        self._record("train" if train else "eval", decision, logged.unbind(1), pair_stats)
        return loss

    # ------------------------------------------------------------------ the controller's step

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.sync_gradients:
            self._step_controller()
        return loss

    def _step_controller(self) -> None:
        """``controller.step`` on the statistics of every micro-batch since the last optimizer step."""
        pending, self._pending = self._pending, []
        kl = None
        if "kl" in self.controller.needs:
            numerator = "kl" if self.args.kl_estimator == "token" else "abs_logratio"
            mean_kl = sum(entry["pair_stats"][numerator].sum() for entry in pending) / sum(
                entry["pair_stats"]["tokens"].sum() for entry in pending
            )
            assert isinstance(mean_kl, torch.Tensor)  # sums of tensors: pending holds this step's micro-batches
            kl = mean_kl.item()
        steps = None
        if "epsilon_steps" in self.controller.needs:
            kept_steps = []
            for entry in pending:
                assert entry["epsilon_steps"] is not None  # compute_loss keeps them when the controller needs them
                kept_steps.append(entry["epsilon_steps"])
            steps = torch.cat(kept_steps)
        margins = torch.cat([entry["margins"] for entry in pending])
        self.controller.step(BatchStats(margins, kl=kl, epsilon_steps=steps))

    # ------------------------------------------------------------------ logging

    def _record(self, mode, decision, logged, pair_stats) -> None:
        """Per micro-batch metrics of the global micro-batch; ``log`` averages them per log row.

        Rewards and log-probs are over the examples the loss kept (weight > 0: all of them but
        β-DPO's filtered ones); ``margins`` and the KLs over every example."""
        kept = decision.weight > 0
        chosen_rewards, rejected_rewards, chosen_logps, rejected_logps = (
            values[kept.to(values.device)] for values in logged
        )
        metrics = self.metrics_since_log[mode]
        metrics["beta"].append(decision.beta.mean().item())
        self._extrema[mode].append((decision.beta.min().item(), decision.beta.max().item()))
        metrics["weight/kept_fraction"].append(kept.float().mean().item())
        metrics["margins"].append(pair_stats["margin"].mean().item())
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(chosen_logps.mean().item())
        metrics["logps/rejected"].append(rejected_logps.mean().item())
        tokens = pair_stats["tokens"].sum()
        if "abs_logratio" in pair_stats:
            metrics["kl/logratio"].append((pair_stats["abs_logratio"].sum() / tokens).item())
        if "kl" in pair_stats:
            metrics["kl/token"].append((pair_stats["kl"].sum() / tokens).item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "" if mode == "train" else "eval_"
        for key, values in self.metrics_since_log[mode].items():
            logs[prefix + key] = sum(values) / len(values)
        self.metrics_since_log[mode].clear()
        if self._extrema[mode]:
            logs[f"{prefix}beta/min"] = min(low for low, _ in self._extrema[mode])
            logs[f"{prefix}beta/max"] = max(high for _, high in self._extrema[mode])
            self._extrema[mode] = []
        if mode == "train" and "loss" in logs:
            logs.update(self.controller.metrics())
        super().log(logs, start_time)
