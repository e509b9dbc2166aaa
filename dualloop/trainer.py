"""The training engine: TRL's ``DPOTrainer`` with a β controller and a choice of loss.

``AdaptiveDPOTrainer`` keeps everything TRL does around the loss — tokenization, collation,
PEFT handling (the reference is the policy with its adapter disabled, no weight copy), a
separate reference model or precomputed reference log-probs, logging and checkpointing — and
replaces only ``DPOTrainer._compute_loss``:

1. one policy forward and one reference forward through a response head that scores only the
   response tokens (``add_response_head``) and, when the controller needs them, hands back their
   hidden states;
2. margins ``M_i = (πw − rw) − (πl − rl)`` gathered over all processes;
   ``controller.decide`` gives every example's β and loss weight; this process keeps its rows;
3. the loss ``Σ w_i L_i / Σ w_i`` over the global micro-batch;
4. full-vocabulary statistics (token KL, ε-DPO's steps) from those hidden states, in chunks of
   ``logits_chunk_size`` positions, without gradient;
5. ``controller.step`` once per optimizer step on the statistics of every micro-batch of the
   accumulation and every process, so every process holds the same β.

The controller's state is saved in every checkpoint (``controller_state.json``) and restored on
``resume_from_checkpoint``. Every log row is appended to ``<output_dir>/history.jsonl`` and
printed as one plain line (no progress-bar widgets, so papermill logs stay readable).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import inspect
import json
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor
from accelerate.utils import is_peft_model
from transformers import PreTrainedModel, TrainerCallback
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import ModelOutput
from trl import DPOConfig, DPOTrainer
from trl.kernels import ChunkedLogProbFunction
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import maybe_gather_lm_head_ctx, use_adapter

from dualloop.controllers import (Annealed, BatchStats, BetaDPO, Controller, DualLoop, EpsilonDPO, Static,
                                  epsilon_steps_from_logps)
from dualloop.losses import adadpo_loss, dpo_loss, ipo_loss

__all__ = [
    "AdaptiveDPOConfig",
    "AdaptiveDPOTrainer",
    "CONTROLLERS",
    "LOSSES",
    "KL_ESTIMATORS",
    "METHODS",
    "method_settings",
    "build_controller",
    "add_response_head",
    "lm_head_weights",
    "vocabulary_statistics",
    "CONTROLLER_STATE_NAME",
    "HISTORY_NAME",
]

CONTROLLERS: dict[str, type[Controller]] = {
    "static": Static,
    "annealed": Annealed,
    "dualloop": DualLoop,
    "beta-dpo": BetaDPO,
    "epsilon-dpo": EpsilonDPO,
}
# The argument of each controller that the config's `beta` fills unless `controller_kwargs` names it.
BETA_ARGUMENT = {"static": "beta", "annealed": "start", "dualloop": "beta_init", "beta-dpo": "beta0",
                 "epsilon-dpo": "beta"}
LOSSES = ("sigmoid", "ipo", "adadpo")
KL_ESTIMATORS = ("token", "logratio")
ADADPO_SPACES = ("ratio", "policy")
# The methods of the paper's comparisons (issue 3, CLI `--method`): a controller and a loss.
METHODS: dict[str, dict[str, str]] = {
    "static": {"controller": "static", "loss_type": "sigmoid"},
    "annealed": {"controller": "annealed", "loss_type": "sigmoid"},
    "dualloop": {"controller": "dualloop", "loss_type": "sigmoid"},
    "beta-dpo": {"controller": "beta-dpo", "loss_type": "sigmoid"},
    "epsilon-dpo": {"controller": "epsilon-dpo", "loss_type": "sigmoid"},
    "adadpo": {"controller": "static", "loss_type": "adadpo"},
}
CONTROLLER_STATE_NAME = "controller_state.json"
HISTORY_NAME = "history.jsonl"
# Vocabulary columns per tile of TRL's gradient-carrying log-prob kernel (its own default).
LOGPROB_VOCAB_CHUNK = 32768


def _unknown(kind: str, value: Any, choices) -> ValueError:
    close = difflib.get_close_matches(str(value), list(choices), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ValueError(f"unknown {kind} {value!r}{hint}; choose one of {', '.join(choices)}")


def method_settings(method: str) -> dict[str, str]:
    """The ``AdaptiveDPOConfig`` fields (``controller``, ``loss_type``) a method name stands for.

    ``adadpo`` is the AdaDPO loss with a static β; any other controller/loss pair is set directly.
    """
    if method not in METHODS:
        raise _unknown("method", method, METHODS)
    return dict(METHODS[method])


# ---------------------------------------------------------------------------------------------
# configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class AdaptiveDPOConfig(DPOConfig):
    r"""
    Configuration of [`AdaptiveDPOTrainer`]: TRL's [`~trl.DPOConfig`] plus the β controller, the
    loss and the logging of DualLoop-DPO's experiments.

    `beta` is the controller's initial β (the static β for `controller="static"`). `loss_type` takes
    exactly one of `"sigmoid"` (DPO, with TRL's `label_smoothing`), `"ipo"` (TRL's per-token
    convention) or `"adadpo"`. Defaults that differ from [`~trl.DPOConfig`]: `disable_tqdm=True`
    (one printed line per logging step instead) and `logging_steps=1`.
    """

    _VALID_DICT_FIELDS = DPOConfig._VALID_DICT_FIELDS + ["controller_kwargs"]

    controller: str = field(
        default="static",
        metadata={"help": "β controller: 'static', 'annealed', 'dualloop', 'beta-dpo' or 'epsilon-dpo'."},
    )
    controller_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Arguments of the controller's constructor (dualloop.controllers), e.g. {'kl_target': 0.04, "
            "'lam': 4.0} for DualLoop. `beta` fills the controller's initial β unless given here; Annealed's "
            "`total_steps` defaults to the run's number of optimizer steps."
        },
    )
    kl_estimator: str = field(
        default="token",
        metadata={
            "help": "KL estimate fed to DualLoop's slow loop: 'token' (exact full-vocabulary KL per response "
            "token; needs reference logits) or 'logratio' (Σ|π−r| / Σ|y| per token; works with precomputed "
            "reference log-probs)."
        },
    )
    adadpo_clip: float | None = field(
        default=2.0, metadata={"help": "AdaDPO's ceiling C on the chosen-side coefficient; None removes it."}
    )
    adadpo_space: str = field(
        default="ratio", metadata={"help": "AdaDPO's balance ratio: 'ratio' (eq. 5) or 'policy' (eq. 4) space."}
    )
    adadpo_length_normalized: bool = field(
        default=True,
        metadata={"help": "AdaDPO: length-normalize the balance ratio ('Stable AdaDPO', eq. 10)."},
    )
    adadpo_k: float = field(default=1.0, metadata={"help": "AdaDPO's optional scale k (Appendix A.3)."})
    logits_chunk_size: int = field(
        default=128,
        metadata={
            "help": "Response positions whose full-vocabulary logits (policy and reference) are built at once "
            "for the token KL and ε-DPO's steps; peak extra memory is about 4 × chunk × vocabulary × 4 bytes."
        },
    )
    log_token_kl: bool = field(
        default=False,
        metadata={
            "help": "Also compute and log the exact token KL when the controller does not need it (costs the "
            "full-vocabulary pass on every micro-batch)."
        },
    )
    history_file: str = field(
        default=HISTORY_NAME,
        metadata={"help": "File in `output_dir` to which every log row is appended as one JSON line."},
    )
    print_progress: bool = field(
        default=True, metadata={"help": "Print one plain line per logging step (main process only)."}
    )
    disable_tqdm: bool | None = field(
        default=True, metadata={"help": "Whether to disable the tqdm progress bar (plain printed lines instead)."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every X optimizer steps."})

    def __post_init__(self):
        if isinstance(self.controller_kwargs, str):
            self.controller_kwargs = json.loads(self.controller_kwargs)
        super().__post_init__()
        if self.controller not in CONTROLLERS:
            raise _unknown("controller", self.controller, CONTROLLERS)
        if len(self.loss_type) != 1 or self.loss_type[0] not in LOSSES:
            raise ValueError(f"AdaptiveDPOConfig.loss_type must be one of {', '.join(LOSSES)} (a single loss), "
                             f"got {self.loss_type!r}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise _unknown("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        if self.adadpo_space not in ADADPO_SPACES:
            raise _unknown("adadpo_space", self.adadpo_space, ADADPO_SPACES)
        if not isinstance(self.logits_chunk_size, int) or self.logits_chunk_size < 1:
            raise ValueError(f"AdaptiveDPOConfig.logits_chunk_size must be an integer >= 1, "
                             f"got {self.logits_chunk_size!r}")
        for name, default in (("f_divergence_type", "reverse_kl"), ("ld_alpha", None), ("use_weighting", False),
                              ("loss_weights", None)):
            if getattr(self, name) not in (default, [1.0]):
                raise ValueError(f"AdaptiveDPOConfig.{name}={getattr(self, name)!r} is a DPOTrainer option that "
                                 f"AdaptiveDPOTrainer does not implement; leave it at {default!r}")
        kwargs = self.controller_kwargs or {}
        if not isinstance(kwargs, dict):
            raise TypeError(f"AdaptiveDPOConfig.controller_kwargs must be a dict, got {type(kwargs).__name__}")
        _check_controller_kwargs(self.controller, kwargs)

    @property
    def token_kl_needed(self) -> bool:
        """Whether every micro-batch computes the exact token KL (DualLoop's estimator, or logging)."""
        return self.log_token_kl or (CONTROLLERS[self.controller].needs_kl and self.kl_estimator == "token")

    @property
    def reference_logits_needed(self) -> bool:
        """Whether the reference's full-vocabulary logits are needed (not only its log-probs)."""
        return self.token_kl_needed or CONTROLLERS[self.controller].needs_epsilon_steps


def _check_controller_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    accepted = list(inspect.signature(CONTROLLERS[name]).parameters)
    for key in kwargs:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ValueError(f"AdaptiveDPOConfig.controller_kwargs: '{key}' is not an argument of "
                             f"{CONTROLLERS[name].__name__}{hint}; it takes {', '.join(accepted)}")


def build_controller(args: AdaptiveDPOConfig, total_steps: int) -> Controller:
    """The controller ``args`` describe; ``beta`` and ``total_steps`` fill what ``controller_kwargs`` leaves out."""
    kwargs = dict(args.controller_kwargs or {})
    kwargs.setdefault(BETA_ARGUMENT[args.controller], args.beta)
    if "total_steps" in inspect.signature(CONTROLLERS[args.controller]).parameters:
        kwargs.setdefault("total_steps", total_steps)
    if "seed" in inspect.signature(CONTROLLERS[args.controller]).parameters:
        kwargs.setdefault("seed", args.seed)
    return CONTROLLERS[args.controller](**kwargs)


# ---------------------------------------------------------------------------------------------
# the response head: log-probs of the response tokens, optionally their hidden states
# ---------------------------------------------------------------------------------------------


@dataclass
class ResponseOutput(ModelOutput):
    """``log_probs``: ``[N]``, the log-prob of each scored token (labels ≠ -100, after the shift),
    in row-major order; ``hidden``: ``[N, H]`` their last hidden states (detached) or None."""

    log_probs: torch.Tensor | None = None
    hidden: torch.Tensor | None = None


def _logit_transform(model: PreTrainedModel) -> None:
    config = model.config.get_text_config()
    for name in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                 "logits_scaling"):
        if getattr(config, name, None) not in (None, 1.0):
            raise ValueError(f"{type(model).__name__} sets config.{name}={getattr(config, name)}: AdaptiveDPOTrainer's "
                             "response head computes plain `lm_head(hidden)` logits and does not support it")


@contextlib.contextmanager
def lm_head_weights(model: PreTrainedModel):
    """The output embedding's full ``(weight, bias)`` for direct use, as TRL's fused head reads them:
    FSDP2's sharded DTensors are gathered, DeepSpeed ZeRO-3's partitions are gathered for the block."""
    head = model.get_output_embeddings()
    weight, bias = head.weight, head.bias
    if isinstance(weight, DTensor):
        weight = weight.full_tensor()
        bias = bias.full_tensor() if bias is not None else None
    with maybe_gather_lm_head_ctx(weight, bias):
        yield weight, bias


def add_response_head(model: PreTrainedModel) -> None:
    """Patch ``model`` so that ``model(..., labels=labels, response_head=True)`` returns a
    :class:`ResponseOutput`: log-probs of only the positions whose next-token label is not -100
    (the response tokens), through TRL's chunked log-prob kernel (no ``[B, T, V]`` logits), and
    with ``keep_hidden=True`` the detached hidden states of those positions. Any other call goes to
    the model's previous forward. TRL's fused head scores every position on devices without
    Triton; this one scores the response tokens only."""
    _logit_transform(model)
    previous_forward = model.forward

    @functools.wraps(type(model).forward)
    def forward(self, *args, response_head=False, keep_hidden=False, labels=None, **kwargs):
        if not response_head:
            if labels is not None:
                kwargs["labels"] = labels
            return previous_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        mask = targets != -100
        hidden = hidden[mask]
        with lm_head_weights(self) as (weight, bias):
            log_probs = ChunkedLogProbFunction.apply(hidden, weight, bias, targets[mask], 1.0, LOGPROB_VOCAB_CHUNK,
                                                     None, 1.0, ())[0]
        return ResponseOutput(log_probs=log_probs, hidden=hidden.detach() if keep_hidden else None)

    model.forward = types.MethodType(forward, model)


@torch.no_grad()
def vocabulary_statistics(weight: torch.Tensor, bias: torch.Tensor | None, policy_hidden: torch.Tensor,
                          ref_hidden: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, num_rows: int, *,
                          chunk_size: int, token_kl: bool, epsilon: float | None):
    """Full-vocabulary statistics of the response tokens, ``chunk_size`` positions at a time, no grad.

    ``weight``/``bias``: the output embedding; ``policy_hidden``/``ref_hidden`` ``[N, H]``; ``targets``
    ``[N]`` (the scored tokens); ``rows`` ``[N]`` (each position's sequence, chosen rows first).
    Returns ``(kl_rows, log_probs)``: ``kl_rows`` ``[num_rows]`` each sequence's sum over its positions
    of ``KL(π_θ ‖ π_ref)`` (float64, or None without ``token_kl``), and ``log_probs`` ``[3, num_rows]``
    the summed label log-probs under θ, ``(1+ε)ℓ_θ − εℓ_ref`` and ``(1−ε)ℓ_θ + εℓ_ref``
    (ε-DPO step 1; None without ``epsilon``).
    The same quantities as ``dualloop.controllers.token_kl`` / ``epsilon_steps`` but from hidden
    states, so at most one
    chunk of ``[chunk_size, V]`` logits exists at a time: the peak is 4 float32 ``[chunk_size, V]``
    tensors (measured with the torch profiler).
    """
    kl_rows = torch.zeros(num_rows, dtype=torch.float64, device=policy_hidden.device) if token_kl else None
    log_probs = None
    if epsilon is not None:
        log_probs = torch.zeros(3, num_rows, dtype=torch.float64, device=policy_hidden.device)
    for start in range(0, policy_hidden.shape[0], chunk_size):
        chunk = slice(start, start + chunk_size)
        policy = F.linear(policy_hidden[chunk], weight, bias).float()
        ref = F.linear(ref_hidden[chunk], weight, bias).float()
        policy_lse = policy.logsumexp(-1)
        if token_kl:  # KL = Σ_v p_v (ℓ_θ,v − ℓ_ref,v) − lse(ℓ_θ) + lse(ℓ_ref), with p = softmax(ℓ_θ)
            probs = (policy - policy_lse.unsqueeze(1)).exp_().unsqueeze(1)
            kl = (probs @ policy.unsqueeze(2) - probs @ ref.unsqueeze(2)).view(-1) - policy_lse + ref.logsumexp(-1)
            kl_rows.index_add_(0, rows[chunk], kl.clamp_min(0.0).double())
            del probs
        if epsilon is not None:
            tokens = targets[chunk].unsqueeze(1)
            policy_target = policy.gather(1, tokens).squeeze(1)
            ref_target = ref.gather(1, tokens).squeeze(1)
            sequence = rows[chunk]
            log_probs[0].index_add_(0, sequence, (policy_target - policy_lse).double())
            for variant, weight_ref in ((1, -epsilon), (2, epsilon)):  # ℓ = (1−w) ℓ_θ + w ℓ_ref
                perturbed_lse = torch.lerp(policy, ref, weight_ref).logsumexp(-1)
                target = torch.lerp(policy_target, ref_target, weight_ref)
                log_probs[variant].index_add_(0, sequence, (target - perturbed_lse).double())
    return kl_rows, log_probs


# ---------------------------------------------------------------------------------------------
# callbacks: controller step bookkeeping is in the trainer; these write and print the log rows
# ---------------------------------------------------------------------------------------------


class HistoryCallback(TrainerCallback):
    """Appends every log row, with its step, to ``<output_dir>/<history_file>`` as JSON lines.

    On (re)start, rows beyond the step training starts from are dropped, so a resumed run's file
    holds each step once."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        kept = [row for row in rows if row.get("step", 0) <= state.global_step]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")


class ProgressCallback(TrainerCallback):
    """One plain printed line per log row (papermill- and terminal-friendly)."""

    KEYS = ("loss", "beta", "beta/base", "kl", "kl_ema", "kl/token", "kl/logratio", "rewards/accuracies",
            "rewards/margins", "eval_loss")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        shown = " ".join(f"{key} {logs[key]:.4g}" for key in self.KEYS if isinstance(logs.get(key), (int, float)))
        if not shown:
            shown = " ".join(f"{key} {value:.4g}" for key, value in logs.items() if isinstance(value, (int, float)))
        print(f"step {state.global_step}/{state.max_steps} {shown}", flush=True)


# ---------------------------------------------------------------------------------------------
# the trainer
# ---------------------------------------------------------------------------------------------


class AdaptiveDPOTrainer(DPOTrainer):
    """TRL's ``DPOTrainer`` whose β comes from a controller and whose loss is chosen by the config.

    Arguments are those of ``DPOTrainer``; ``args`` must be an :class:`AdaptiveDPOConfig`.
    ``self.controller`` is the controller; it is built from the config (``build_controller``).
    """

    _tag_names = ["trl", "dpo", "dualloop"]
    _name = "AdaptiveDPO"

    def __init__(self, model, ref_model=None, args: AdaptiveDPOConfig | None = None, *trainer_args, **kwargs):
        if not isinstance(args, AdaptiveDPOConfig):
            raise TypeError(f"AdaptiveDPOTrainer needs args=AdaptiveDPOConfig(...), got {type(args).__name__}")
        if args.precompute_ref_log_probs and args.reference_logits_needed:
            needs = ("ε-DPO's steps" if CONTROLLERS[args.controller].needs_epsilon_steps
                     else "the token KL (kl_estimator='token' or log_token_kl=True)")
            raise ValueError(
                f"controller '{args.controller}' needs the reference model's full-vocabulary logits for {needs}, "
                "but precompute_ref_log_probs=True keeps only the reference log-probs; set "
                "precompute_ref_log_probs=False" + (", or kl_estimator='logratio' and log_token_kl=False"
                                                    if args.controller == "dualloop" else ""))
        if args.disable_tqdm:
            datasets.disable_progress_bars()
        super().__init__(model, ref_model, args, *trainer_args, **kwargs)
        add_response_head(self.model.get_base_model() if is_peft_model(self.model) else self.model)
        if self.ref_model is not None:
            add_response_head(self.accelerator.unwrap_model(self.ref_model))
        self.controller = build_controller(args, self._optimizer_steps())
        self._pending: list[dict[str, torch.Tensor]] = []
        self._extrema: dict[str, list[float]] = {"train": [], "eval": []}
        if args.disable_tqdm:
            self.remove_callback(PrinterCallback)
        self.add_callback(HistoryCallback(Path(args.output_dir) / args.history_file))
        if args.print_progress:
            self.add_callback(ProgressCallback())

    def _optimizer_steps(self) -> int:
        """Optimizer steps of the whole run (Annealed's horizon), as the Trainer will count them."""
        if self.args.max_steps > 0:
            return self.args.max_steps
        per_step = self.args.per_device_train_batch_size * self.accelerator.num_processes
        batches = math.ceil(len(self.train_dataset) / per_step)
        return max(math.ceil(batches / self.args.gradient_accumulation_steps), 1) * math.ceil(
            self.args.num_train_epochs)

    # ------------------------------------------------------------------ forward passes

    def _reference_context(self):
        if self.ref_model is None and is_peft_model(self.model):
            unwrapped = self.accelerator.unwrap_model(self.model)
            return use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return contextlib.nullcontext()

    def _sequence_logps(self, output: ResponseOutput, rows: torch.Tensor, num_rows: int) -> torch.Tensor:
        return output.log_probs.new_zeros(num_rows).index_add(0, rows, output.log_probs)

    def _forward(self, model, inputs, keep_hidden: bool):
        """Summed log-probs ``[2B]`` of policy and reference (chosen rows first), and the response
        hidden states when ``keep_hidden``."""
        model_kwargs = {key: inputs[key] for key in ("input_ids", "attention_mask")}
        labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
        num_rows = labels.shape[0]
        rows = (labels[:, 1:] != -100).nonzero()[:, 0]
        policy = model(**model_kwargs, labels=labels, response_head=True, keep_hidden=keep_hidden)
        policy_logps = self._sequence_logps(policy, rows, num_rows)
        if self.precompute_ref_logps:
            ref_logps = torch.cat([inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]]).to(policy_logps)
            return policy_logps, ref_logps, policy, None, rows
        with (torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
              self.accelerator.autocast()):
            with self._reference_context():
                reference_model = self.model if self.ref_model is None else self.ref_model
                reference = reference_model(**model_kwargs, labels=labels, response_head=True,
                                            keep_hidden=keep_hidden)
        return policy_logps, self._sequence_logps(reference, rows, num_rows), policy, reference, rows

    # ------------------------------------------------------------------ the loss

    def _loss(self, policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta, chosen_lengths,
              rejected_lengths):
        loss_type = self.args.loss_type[0]
        if loss_type == "sigmoid":
            return dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta,
                            label_smoothing=self.args.label_smoothing)
        if loss_type == "ipo":  # TRL's convention: per-token averaged log-probs
            return ipo_loss(policy_chosen / chosen_lengths, policy_rejected / rejected_lengths,
                            ref_chosen / chosen_lengths, ref_rejected / rejected_lengths, beta)
        normalized = self.args.adadpo_length_normalized
        return adadpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta,
                           chosen_lengths=chosen_lengths if normalized else None,
                           rejected_lengths=rejected_lengths if normalized else None,
                           clip=self.args.adadpo_clip, space=self.args.adadpo_space, k=self.args.adadpo_k)

    def _compute_loss(self, model, inputs, return_outputs):
        if return_outputs:
            raise ValueError("AdaptiveDPOTrainer computes no logits for compute_metrics; set "
                             "prediction_loss_only=True (or leave compute_metrics unset)")
        train = self.model.training
        mode = "train" if train else "eval"
        args = self.args
        needs_steps = self.controller.needs_epsilon_steps
        keep_hidden = args.token_kl_needed or needs_steps
        policy_logps, ref_logps, policy, reference, rows = self._forward(model, inputs, keep_hidden)
        num_rows = policy_logps.shape[0]
        half = num_rows // 2
        lengths = inputs["completion_mask"][:, 1:].sum(1).to(policy_logps.dtype)
        chosen_logratio = (policy_logps[:half] - ref_logps[:half]).detach()
        rejected_logratio = (policy_logps[half:] - ref_logps[half:]).detach()
        margins = (chosen_logratio - rejected_logratio).float()

        kl_rows = log_probs = None
        if keep_hidden:
            targets = inputs["input_ids"][:, 1:][inputs["completion_mask"][:, 1:] != 0]
            with self.accelerator.autocast(), lm_head_weights(self.accelerator.unwrap_model(self.model)) as head:
                kl_rows, log_probs = vocabulary_statistics(
                    *head, policy.hidden, reference.hidden, targets, rows, num_rows,
                    chunk_size=args.logits_chunk_size, token_kl=args.token_kl_needed,
                    epsilon=self.controller.epsilon if needs_steps else None)
        # Per-pair statistics of this process, gathered in one collective: every process then holds
        # those of the whole micro-batch, in process order (this process's rows are `own`).
        columns = {"margin": margins, "abs_logratio": chosen_logratio.abs() + rejected_logratio.abs(),
                   "tokens": lengths[:half] + lengths[half:]}
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
        output = self._loss(policy_logps[:half], policy_logps[half:], ref_logps[:half], ref_logps[half:], beta,
                            lengths[:half], lengths[half:])
        total_weight = decision.weight.sum()
        if total_weight <= 0:
            raise ValueError(f"controller '{args.controller}' gave every example of a micro-batch weight 0")
        # DDP averages the processes' gradients: scale so that the result is Σ w_i L_i / Σ w_i over all of them
        loss = (weight * output.losses).sum() / total_weight.to(policy_logps) * self.accelerator.num_processes

        if train:
            self._pending.append({"margins": all_margins, "epsilon_steps": all_steps, "pair_stats": pair_stats})
        logged = self.accelerator.gather(torch.stack([output.chosen_rewards, output.rejected_rewards,
                                                      policy_logps[:half].detach(), policy_logps[half:].detach()], 1))
        self._record(mode, decision, logged.unbind(1), pair_stats)
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
        if self.controller.needs_kl:
            numerator = "kl" if self.args.kl_estimator == "token" else "abs_logratio"
            kl = (sum(entry["pair_stats"][numerator].sum() for entry in pending)
                  / sum(entry["pair_stats"]["tokens"].sum() for entry in pending))
        steps = None
        if self.controller.needs_epsilon_steps:
            steps = torch.cat([entry["epsilon_steps"] for entry in pending])
        margins = torch.cat([entry["margins"] for entry in pending])
        self.controller.step(BatchStats(margins, kl=None if kl is None else kl.item(), epsilon_steps=steps))

    # ------------------------------------------------------------------ logging

    def _record(self, mode, decision, logged, pair_stats) -> None:
        """Per micro-batch metrics of the global micro-batch; TRL's ``log`` averages them per log row."""
        chosen_rewards, rejected_rewards, chosen_logps, rejected_logps = logged
        metrics = self._metrics[mode]
        metrics["beta"].append(decision.beta.mean().item())
        self._extrema[mode].append((decision.beta.min().item(), decision.beta.max().item()))
        metrics["weight/kept_fraction"].append((decision.weight > 0).float().mean().item())
        metrics["margins"].append(pair_stats["margin"].mean().item())
        metrics["rewards/chosen"].append(chosen_rewards.mean().item())
        metrics["rewards/rejected"].append(rejected_rewards.mean().item())
        metrics["rewards/accuracies"].append((chosen_rewards > rejected_rewards).float().mean().item())
        metrics["rewards/margins"].append((chosen_rewards - rejected_rewards).mean().item())
        metrics["logps/chosen"].append(chosen_logps.mean().item())
        metrics["logps/rejected"].append(rejected_logps.mean().item())
        tokens = pair_stats["tokens"].sum()
        metrics["kl/logratio"].append((pair_stats["abs_logratio"].sum() / tokens).item())
        if "kl" in pair_stats:
            metrics["kl/token"].append((pair_stats["kl"].sum() / tokens).item())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "" if mode == "train" else "eval_"
        if self._extrema[mode]:
            logs[f"{prefix}beta/min"] = min(low for low, _ in self._extrema[mode])
            logs[f"{prefix}beta/max"] = max(high for _, high in self._extrema[mode])
            self._extrema[mode] = []
        if mode == "train" and "loss" in logs:
            logs.update(self.controller.metrics())
        super().log(logs, start_time)

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            (folder / CONTROLLER_STATE_NAME).write_text(json.dumps(
                {"controller": self.args.controller, "state": self.controller.state_dict()}, indent=1))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = Path(resume_from_checkpoint) / CONTROLLER_STATE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {resume_from_checkpoint} was not written by "
                                    "AdaptiveDPOTrainer, so the controller's state (β) cannot be restored")
        saved = json.loads(path.read_text())
        if saved["controller"] != self.args.controller:
            raise ValueError(f"{path} holds the state of controller '{saved['controller']}' but this run's "
                             f"controller is '{self.args.controller}'")
        self.controller.load_state_dict(saved["state"])
