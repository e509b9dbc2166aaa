"""β controllers: small stateful objects that decide the β each example's loss uses.

Per training micro-batch the trainer calls ``decide(stats)`` with the margins of that
micro-batch (gathered over all processes) and gets the per-example β and loss weight for all of
them. Once per optimizer step it calls ``step(stats)`` with the statistics of the whole global
batch (every micro-batch of the accumulation, every process), so every process holds the same β.
``decide(stats, train=False)`` (evaluation) changes no state. ``state_dict``/``load_state_dict``
hold plain floats and ints (JSON-serialisable), so a resumed run continues the same trajectory.

Formulas and defaults are listed in each class; the papers are DualLoop-DPO (eqs. 2–3),
Wu et al. 2024 (β-DPO, arXiv 2407.08639) and Lee et al. 2025 (ε-DPO, arXiv 2502.13177).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "BatchStats",
    "BetaDecision",
    "Controller",
    "Static",
    "Annealed",
    "DualLoop",
    "BetaDPO",
    "EpsilonDPO",
    "epsilon_steps",
    "epsilon_steps_from_logps",
    "token_kl",
    "logratio_kl",
]

ANNEALING_SCHEDULES = ("linear", "cosine")
FAST_LOOP_SCOPES = ("batch", "example")
KL_EMA_INITS = ("target", "first")  # where DualLoop-DPO's KL EMA starts (DualLoop docstring)
BETA_DPO_FLOOR = 1e-3
DEFAULT_VOCAB_CHUNK = 256  # token positions whose full-vocabulary rows are materialized at once


# ---------------------------------------------------------------- inputs and outputs


def _finite_number(name: str, value: Any) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = value.item()
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _positive(name: str, value: Any) -> float:
    value = _finite_number(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _in_unit_interval(name: str, value: Any, *, low_open: bool, high_open: bool) -> float:
    value = _finite_number(name, value)
    if (value < 0 or (low_open and value == 0)) or (value > 1 or (high_open and value == 1)):
        bounds = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {bounds}, got {value}")
    return value


@dataclass(frozen=True)
class BatchStats:
    """What a controller sees of a batch.

    ``margins``: implicit margins ``M_i = (πw − rw) − (πl − rl)`` (no β inside), ``[B]``.
    ``kl``: the batch's KL estimate in nats per token (DualLoop's slow loop).
    ``epsilon_steps``: ε-DPO's per-example step direction in {−1, 0, 1}, ``[B]``.
    """

    margins: torch.Tensor
    kl: float | None = None
    epsilon_steps: torch.Tensor | None = None

    def __post_init__(self) -> None:
        margins = self.margins
        if not isinstance(margins, torch.Tensor):
            raise TypeError(f"margins must be a torch.Tensor [B], got {type(margins).__name__}")
        if margins.dim() != 1 or margins.numel() == 0 or not margins.is_floating_point():
            raise ValueError(
                f"margins must be a non-empty 1-D floating tensor [B], got shape "
                f"{tuple(margins.shape)} and dtype {margins.dtype}"
            )
        if not torch.isfinite(margins).all():
            raise ValueError(f"margins must be finite, got {margins.tolist()}")
        object.__setattr__(self, "margins", margins.detach())
        if self.kl is not None:
            kl = _finite_number("kl", self.kl)
            if kl < 0:
                raise ValueError(f"kl must be ≥ 0 (nats per token), got {kl}")
            object.__setattr__(self, "kl", kl)
        steps = self.epsilon_steps
        if steps is not None:
            if not isinstance(steps, torch.Tensor):
                raise TypeError(f"epsilon_steps must be a torch.Tensor [B], got {type(steps).__name__}")
            if steps.shape != margins.shape:
                raise ValueError(
                    f"epsilon_steps has shape {tuple(steps.shape)} but margins have {tuple(margins.shape)}"
                )
            if not torch.isin(steps, torch.tensor([-1, 0, 1], dtype=steps.dtype, device=steps.device)).all():
                raise ValueError(f"epsilon_steps must be in {{-1, 0, 1}}, got {steps.tolist()}")
            object.__setattr__(self, "epsilon_steps", steps.detach())


@dataclass(frozen=True)
class BetaDecision:
    """Per-example β ``[B]`` and loss weight ``[B]`` (0 drops an example from the mean)."""

    beta: torch.Tensor
    weight: torch.Tensor


def _uniform(value: float, like: torch.Tensor) -> torch.Tensor:
    return torch.full_like(like, value, dtype=torch.float32)


class Controller:
    """Interface every controller follows."""

    needs_kl: bool = False
    needs_epsilon_steps: bool = False

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        raise NotImplementedError

    def step(self, stats: BatchStats) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = set(self.state_dict())
        if set(state) != expected:
            raise ValueError(
                f"{type(self).__name__}.load_state_dict: expected keys {sorted(expected)}, got {sorted(state)}"
            )
        for key, value in state.items():
            setattr(self, "_" + key, value)

    def metrics(self) -> dict[str, float]:
        raise NotImplementedError


# ---------------------------------------------------------------- Static and Annealed


class Static(Controller):
    """A fixed β for every example and step (the DPO baseline)."""

    def __init__(self, beta: float) -> None:
        self._beta = _positive("beta", beta)

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        return BetaDecision(_uniform(self._beta, stats.margins), _uniform(1.0, stats.margins))

    def step(self, stats: BatchStats) -> None:
        """β never changes."""

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self._beta}

    def metrics(self) -> dict[str, float]:
        return {"beta/base": self._beta}


class Annealed(Controller):
    """A scheduled β: ``β_t = β_end + (β_start − β_end) · g(t/T)`` with ``g(x) = 1 − x`` (linear)
    or ``(1 + cos πx)/2`` (cosine), ``t`` the number of ``step()`` calls, held at β_end after T."""

    def __init__(self, start: float = 0.2, end: float = 0.05, total_steps: int = 120, schedule: str = "linear") -> None:
        self._start = _positive("start", start)
        self._end = _positive("end", end)
        if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer ≥ 1, got {total_steps!r}")
        if schedule not in ANNEALING_SCHEDULES:
            raise ValueError(f"schedule must be one of {ANNEALING_SCHEDULES}, got {schedule!r}")
        self._total_steps = total_steps
        self._schedule = schedule
        self._steps = 0

    @property
    def beta(self) -> float:
        x = min(self._steps / self._total_steps, 1.0)
        g = 1.0 - x if self._schedule == "linear" else (1.0 + math.cos(math.pi * x)) / 2.0
        return self._end + (self._start - self._end) * g

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        return BetaDecision(_uniform(self.beta, stats.margins), _uniform(1.0, stats.margins))

    def step(self, stats: BatchStats) -> None:
        self._steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self._steps}

    def metrics(self) -> dict[str, float]:
        return {"beta/base": self.beta}


# ---------------------------------------------------------------- DualLoop-DPO


def normalized_binary_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``h = −(p ln p + (1−p) ln(1−p)) / ln 2`` with ``p = σ(logits)``, in [0, 1], stable for any logit."""
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)) / math.log(2.0)


def _exp(log_value: float) -> float:
    """exp, with +inf instead of OverflowError."""
    return math.exp(log_value) if log_value < 700 else math.inf


class DualLoop(Controller):
    """DualLoop-DPO's two-loop β (DualLoop-DPO, eqs. 2–3).

    Fast loop (each micro-batch, eq. 2): ``p_i = σ(β_base M_i)``, ``h_i`` its normalized binary
    entropy, ``H̃ = mean_i h_i``; ``β_total = β_base (1 + λ H̃)`` for every example (scope
    ``"batch"``) or ``β_base (1 + λ h_i)`` per example (scope ``"example"``).
    Slow loop (each optimizer step, eq. 3): ``KL_ema ← (1−α) KL_ema + α KL``;
    ``e = (KL_ema − KL_target)/KL_target``; if ``|e| > deadband``,
    ``β_base ← clip(β_base · exp(η e), β_min, β_max)``. The paper does not say where KL_ema starts:
    ``kl_ema_init="target"`` (default) starts it at KL_target — no error until observed KLs move it —
    because the first observed KL of a LoRA run is exactly 0 (the adapter starts at zero, so the
    policy is the reference), and an EMA started there would lower β for the first ~1/α steps while
    the KL rises; ``"first"`` sets ``KL_ema ← KL`` on the first step.
    Ablations: ``use_ema=False`` (α = 1), ``fast_loop=False`` (λ = 0), ``clip=False`` (no
    bounds), ``deadband=0``. The logged ``entropy`` is mean h_i over every training example of the
    optimizer step (all micro-batches of the accumulation, all processes). The logged
    ``controller/clip_acted`` counts the steps so far whose update the clip changed and
    ``controller/deadband_held`` those where ``0 < |e| ≤ deadband`` kept β_base: while both are 0,
    the ``clip=False`` and ``deadband=0`` ablations give the same β at every step.
    """

    needs_kl = True

    def __init__(
        self,
        beta_init: float = 0.1,
        kl_target: float = 0.04,
        lam: float = 4.0,
        eta: float = 0.01,
        ema_alpha: float = 0.1,
        deadband: float = 0.1,
        beta_min: float = 0.05,
        beta_max: float = 2.0,
        fast_loop: bool = True,
        use_ema: bool = True,
        clip: bool = True,
        fast_loop_scope: str = "batch",
        kl_ema_init: str = "target",
    ) -> None:
        beta_init = _positive("beta_init", beta_init)
        self.kl_target = _positive("kl_target", kl_target)
        self.lam = _finite_number("lam", lam)
        if self.lam < 0:
            raise ValueError(f"lam must be ≥ 0, got {self.lam}")
        self.eta = _finite_number("eta", eta)
        if self.eta < 0:
            raise ValueError(f"eta must be ≥ 0, got {self.eta}")
        self.ema_alpha = _in_unit_interval("ema_alpha", ema_alpha, low_open=True, high_open=False)
        self.deadband = _finite_number("deadband", deadband)
        if self.deadband < 0:
            raise ValueError(f"deadband must be ≥ 0, got {self.deadband}")
        self.beta_min = _positive("beta_min", beta_min)
        self.beta_max = _positive("beta_max", beta_max)
        if self.beta_min >= self.beta_max:
            raise ValueError(f"beta_min must be < beta_max, got beta_min={self.beta_min}, beta_max={self.beta_max}")
        if clip and not self.beta_min <= beta_init <= self.beta_max:
            raise ValueError(
                f"beta_init={beta_init} lies outside [beta_min, beta_max] = [{self.beta_min}, {self.beta_max}]"
            )
        if fast_loop_scope not in FAST_LOOP_SCOPES:
            raise ValueError(f"fast_loop_scope must be one of {FAST_LOOP_SCOPES}, got {fast_loop_scope!r}")
        if kl_ema_init not in KL_EMA_INITS:
            raise ValueError(f"kl_ema_init must be one of {KL_EMA_INITS}, got {kl_ema_init!r}")
        self.fast_loop, self.use_ema, self.clip = bool(fast_loop), bool(use_ema), bool(clip)
        self.fast_loop_scope = fast_loop_scope
        self._beta_base = beta_init
        self._kl_ema: float | None = self.kl_target if kl_ema_init == "target" else None
        self._kl: float | None = None
        self._entropy: float | None = None
        self._entropy_sum = 0.0  # over the training micro-batches since the last step()
        self._entropy_count = 0
        self._steps = 0
        self._clip_acted = 0
        self._deadband_held = 0

    @property
    def beta_base(self) -> float:
        return self._beta_base

    @property
    def kl_ema(self) -> float | None:
        return self._kl_ema

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        margins = stats.margins.double()
        entropy = normalized_binary_entropy(self._beta_base * margins)
        lam = self.lam if self.fast_loop else 0.0
        if self.fast_loop_scope == "batch":
            beta = torch.full_like(margins, self._beta_base * (1.0 + lam * entropy.mean().item()))
        else:
            beta = self._beta_base * (1.0 + lam * entropy)
        if train:
            self._entropy_sum += entropy.sum().item()
            self._entropy_count += entropy.numel()
        return BetaDecision(beta.float(), _uniform(1.0, stats.margins))

    def step(self, stats: BatchStats) -> None:
        if stats.kl is None:
            raise ValueError("DualLoop.step needs stats.kl (the batch KL in nats per token)")
        alpha = self.ema_alpha if self.use_ema else 1.0
        if self._entropy_count:  # the logged entropy: mean h_i over the whole global batch of this step
            self._entropy = self._entropy_sum / self._entropy_count
        self._entropy_sum, self._entropy_count = 0.0, 0
        self._kl = stats.kl
        self._kl_ema = stats.kl if self._kl_ema is None else (1 - alpha) * self._kl_ema + alpha * stats.kl
        error = (self._kl_ema - self.kl_target) / self.kl_target
        if abs(error) > self.deadband:
            unclipped = math.log(self._beta_base) + self.eta * error  # in log space: no overflow
            log_beta_base = unclipped
            if self.clip:
                log_beta_base = min(max(log_beta_base, math.log(self.beta_min)), math.log(self.beta_max))
            beta_base = _exp(log_beta_base)
            if self.clip:  # exact bounds, not exp(log(bound))
                beta_base = min(max(beta_base, self.beta_min), self.beta_max)
                self._clip_acted += beta_base != _exp(unclipped)
            if not math.isfinite(beta_base) or beta_base <= 0:
                raise ValueError(
                    f"beta_base left (0, inf) after KL_ema={self._kl_ema} (kl={stats.kl}) "
                    f"with clip=False; use clip=True or a smaller eta"
                )
            self._beta_base = beta_base
        elif error != 0:
            self._deadband_held += 1
        self._steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "beta_base": self._beta_base,
            "kl_ema": self._kl_ema,
            "kl": self._kl,
            "entropy": self._entropy,
            "entropy_sum": self._entropy_sum,
            "entropy_count": self._entropy_count,
            "steps": self._steps,
            "clip_acted": self._clip_acted,
            "deadband_held": self._deadband_held,
        }

    def metrics(self) -> dict[str, float]:
        out = {
            "beta/base": self._beta_base,
            "controller/clip_acted": self._clip_acted,
            "controller/deadband_held": self._deadband_held,
        }
        for key, value in (("entropy", self._entropy), ("kl", self._kl), ("kl_ema", self._kl_ema)):
            if value is not None:
                out[key] = value
        return out


# ---------------------------------------------------------------- β-DPO


class BetaDPO(Controller):
    """β-DPO (Wu et al. 2024), per training micro-batch on the margins M:

    1. ``M0 ← γ M0 + (1−γ) mean(M)``, ``σ0 ← γ σ0 + (1−γ) std(M)`` (sample std; both start at 0;
       a batch of one keeps σ0 and is not filtered);
    2. ``w_i = exp(−½((M_i − M0)/σ0)²)`` (uniform while σ0 = 0); keep ``⌊N(1−ρ)⌋`` examples (at
       least one) sampled without replacement ∝ w with a generator seeded by (seed, call count);
    3. ``β = max(β0 (1 + a (mean_kept M − M0)), 1e-3)``; dropped examples get weight 0.

    Evaluation batches (``train=False``) update nothing and drop nothing.
    """

    def __init__(self, beta0: float = 0.1, a: float = 0.6, rho: float = 0.2, gamma: float = 0.9, seed: int = 0) -> None:
        self.beta0 = _positive("beta0", beta0)
        self.a = _finite_number("a", a)
        self.rho = _in_unit_interval("rho", rho, low_open=False, high_open=True)
        self.gamma = _in_unit_interval("gamma", gamma, low_open=False, high_open=False)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.seed = seed
        self._m0 = 0.0
        self._sigma0 = 0.0
        self._calls = 0
        self._beta = self.beta0
        self._kept_fraction = 1.0

    def _beta_from(self, kept_mean: float) -> float:
        return max(self.beta0 * (1.0 + self.a * (kept_mean - self._m0)), BETA_DPO_FLOOR)

    def keep_mask(self, margins: torch.Tensor) -> torch.Tensor:
        """Step 2: which examples are kept, sampled ∝ the Gaussian weight around (M0, σ0)."""
        size = margins.numel()
        n_keep = max(1, math.floor(size * (1.0 - self.rho)))
        if size < 2 or n_keep >= size:
            return torch.ones(size, dtype=torch.bool)
        if self._sigma0 > 0:
            log_weight = -0.5 * ((margins.double().cpu() - self._m0) / self._sigma0) ** 2
            weight = torch.exp(log_weight - log_weight.max()).clamp_min(torch.finfo(torch.float64).tiny)
        else:
            weight = torch.ones(size, dtype=torch.float64)
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self._calls) % (2**63))
        kept = torch.multinomial(weight, n_keep, replacement=False, generator=generator)
        mask = torch.zeros(size, dtype=torch.bool)
        mask[kept] = True
        return mask

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        margins = stats.margins.double().cpu()
        if not train:
            beta = self._beta_from(margins.mean().item())
            return BetaDecision(_uniform(beta, stats.margins), _uniform(1.0, stats.margins))
        self._m0 = self.gamma * self._m0 + (1 - self.gamma) * margins.mean().item()
        if margins.numel() > 1:
            self._sigma0 = self.gamma * self._sigma0 + (1 - self.gamma) * margins.std().item()
        mask = self.keep_mask(margins)
        self._calls += 1
        self._beta = self._beta_from(margins[mask].mean().item())
        self._kept_fraction = mask.double().mean().item()
        weight = mask.to(device=stats.margins.device, dtype=torch.float32)
        return BetaDecision(_uniform(self._beta, stats.margins), weight)

    def step(self, stats: BatchStats) -> None:
        """β-DPO adapts per micro-batch in ``decide``; an optimizer step changes nothing."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "m0": self._m0,
            "sigma0": self._sigma0,
            "calls": self._calls,
            "beta": self._beta,
            "kept_fraction": self._kept_fraction,
        }

    def metrics(self) -> dict[str, float]:
        return {"beta/base": self._beta, "m0": self._m0, "sigma0": self._sigma0, "kept_fraction": self._kept_fraction}


# ---------------------------------------------------------------- ε-DPO


class EpsilonDPO(Controller):
    """ε-DPO (Lee et al. 2025): per example ``β̃_i = β / (1 + ε s_i)`` with the
    step ``s_i`` from :func:`epsilon_steps`; each optimizer step ``β ← β / (1 + ε s̄)`` with s̄
    the mean step over the global batch. One ε both perturbs β and sizes its step."""

    needs_epsilon_steps = True

    def __init__(self, beta: float = 0.1, epsilon: float = 0.01) -> None:
        self._beta = _positive("beta", beta)
        self.epsilon = _in_unit_interval("epsilon", epsilon, low_open=True, high_open=True)
        self._up_fraction = 0.0
        self._down_fraction = 0.0

    @staticmethod
    def _steps_of(stats: BatchStats) -> torch.Tensor:
        if stats.epsilon_steps is None:
            raise ValueError("EpsilonDPO needs stats.epsilon_steps (see dualloop.controllers.epsilon_steps)")
        return stats.epsilon_steps.double()

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        beta = self._beta / (1.0 + self.epsilon * self._steps_of(stats))
        return BetaDecision(beta.to(device=stats.margins.device, dtype=torch.float32), _uniform(1.0, stats.margins))

    def step(self, stats: BatchStats) -> None:
        steps = self._steps_of(stats)
        self._beta = self._beta / (1.0 + self.epsilon * steps.mean().item())
        self._up_fraction = (steps > 0).double().mean().item()
        self._down_fraction = (steps < 0).double().mean().item()

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self._beta, "up_fraction": self._up_fraction, "down_fraction": self._down_fraction}

    def metrics(self) -> dict[str, float]:
        return {
            "beta/base": self._beta,
            "epsilon/step_up_fraction": self._up_fraction,
            "epsilon/step_down_fraction": self._down_fraction,
        }


# ---------------------------------------------------------------- statistics from logits


def _check_logits(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, loss_mask: torch.Tensor, labels: torch.Tensor | None = None
) -> None:
    if policy_logits.dim() != 3:
        raise ValueError(f"policy_logits must be [N, T, V], got shape {tuple(policy_logits.shape)}")
    if ref_logits.shape != policy_logits.shape:
        raise ValueError(
            f"ref_logits has shape {tuple(ref_logits.shape)} but policy_logits has {tuple(policy_logits.shape)}"
        )
    if loss_mask.shape != policy_logits.shape[:2]:
        raise ValueError(f"loss_mask must be [N, T] = {tuple(policy_logits.shape[:2])}, got {tuple(loss_mask.shape)}")
    if labels is not None and labels.shape != policy_logits.shape[:2]:
        raise ValueError(f"labels must be [N, T] = {tuple(policy_logits.shape[:2])}, got {tuple(labels.shape)}")


def _masked_position_chunks(loss_mask: torch.Tensor, chunk_size: int):
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer ≥ 1, got {chunk_size!r}")
    positions = loss_mask.reshape(-1).nonzero().squeeze(1)
    return positions.split(chunk_size)


@torch.no_grad()
def token_kl(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    chunk_size: int = DEFAULT_VOCAB_CHUNK,
) -> torch.Tensor:
    """Exact full-vocabulary ``KL(π_θ(·|ctx) ‖ π_ref(·|ctx))`` averaged over the masked positions
    (estimator ``token``), in nats per token. Rows of ``chunk_size`` positions are
    converted to float32 at a time, so memory stays ``O(chunk_size · V)``; no gradient."""
    _check_logits(policy_logits, ref_logits, loss_mask)
    vocab = policy_logits.shape[-1]
    policy_rows, ref_rows = policy_logits.reshape(-1, vocab), ref_logits.reshape(-1, vocab)
    total = torch.zeros((), dtype=torch.float64, device=policy_logits.device)
    count = 0
    for chunk in _masked_position_chunks(loss_mask, chunk_size):
        policy_logp = F.log_softmax(policy_rows.index_select(0, chunk).float(), dim=-1)
        ref_logp = F.log_softmax(ref_rows.index_select(0, chunk).float(), dim=-1)
        kl = (policy_logp.exp() * (policy_logp - ref_logp)).sum(-1).clamp_min(0.0)
        total += kl.double().sum()
        count += chunk.numel()
    if count == 0:
        raise ValueError("loss_mask selects no token: token_kl needs at least one response token")
    return (total / count).float()


@torch.no_grad()
def epsilon_steps(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    loss_mask: torch.Tensor,
    epsilon: float,
    *,
    chunk_size: int = DEFAULT_VOCAB_CHUNK,
) -> torch.Tensor:
    """ε-DPO's step direction per pair (steps 1–2), from logits already computed.

    Perturbed policies: ``ℓ⁺ = (1+ε) ℓ_θ − ε ℓ_ref`` (policy at β/(1+ε)) and
    ``ℓ⁻ = (1−ε) ℓ_θ + ε ℓ_ref`` (policy at β/(1−ε)); each is log-softmaxed over the vocabulary,
    the label tokens gathered and summed over response tokens. With ``z = log π(y_w) − log π(y_l)``
    under θ, ⁺ and ⁻: ``s = +1`` if ``z⁺ > z > z⁻``, ``−1`` if ``z⁻ > z > z⁺``, else 0.

    Rows ``0..B−1`` of the ``[2B, T, V]`` inputs are the chosen sequences, ``B..2B−1`` the rejected;
    ``labels[n, t]`` is the token scored by ``logits[n, t]``.
    """
    _check_logits(policy_logits, ref_logits, loss_mask, labels)
    epsilon = _in_unit_interval("epsilon", epsilon, low_open=True, high_open=True)
    rows = policy_logits.shape[0]
    if rows % 2:
        raise ValueError(f"policy_logits must stack chosen then rejected sequences (2B rows), got {rows} rows")
    vocab = policy_logits.shape[-1]
    policy_rows, ref_rows = policy_logits.reshape(-1, vocab), ref_logits.reshape(-1, vocab)
    flat_labels = labels.reshape(-1)
    sequence_of = torch.arange(rows, device=policy_logits.device).repeat_interleave(policy_logits.shape[1])
    logps = torch.zeros(3, rows, dtype=torch.float64, device=policy_logits.device)
    for chunk in _masked_position_chunks(loss_mask, chunk_size):
        policy = policy_rows.index_select(0, chunk).float()
        ref = ref_rows.index_select(0, chunk).float()
        tokens = flat_labels.index_select(0, chunk).unsqueeze(1)
        for variant, logits in enumerate(
            (policy, (1 + epsilon) * policy - epsilon * ref, (1 - epsilon) * policy + epsilon * ref)
        ):
            token_logp = F.log_softmax(logits, dim=-1).gather(1, tokens).squeeze(1)
            logps[variant].index_add_(0, sequence_of.index_select(0, chunk), token_logp.double())
    return epsilon_steps_from_logps(logps)


def epsilon_steps_from_logps(logps: torch.Tensor) -> torch.Tensor:
    """ε-DPO's step 2 from summed log-probs ``[3, 2B]`` under θ, ⁺ and ⁻ (rows 0..B−1 of each the
    chosen sequences): ``s = +1`` if ``z⁺ > z > z⁻``, ``−1`` if ``z⁻ > z > z⁺``, else 0."""
    if logps.dim() != 2 or logps.shape[0] != 3 or logps.shape[1] % 2:
        raise ValueError(f"logps must be [3, 2B] (θ, plus, minus × chosen then rejected), got {tuple(logps.shape)}")
    half = logps.shape[1] // 2
    z, z_plus, z_minus = logps[:, :half] - logps[:, half:]
    up = (z_plus > z) & (z > z_minus)
    down = (z_minus > z) & (z > z_plus)
    return up.long() - down.long()


def logratio_kl(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
) -> float:
    """The ``logratio`` KL estimator: ``Σ_i (|πw−rw| + |πl−rl|) / Σ_i (|yw|+|yl|)``,
    nats per token over the batch; works with precomputed reference log-probs."""
    for name, value in (
        ("policy_rejected_logps", policy_rejected_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
        ("chosen_lengths", chosen_lengths),
        ("rejected_lengths", rejected_lengths),
    ):
        if value.shape != policy_chosen_logps.shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} but policy_chosen_logps has {tuple(policy_chosen_logps.shape)}"
            )
    tokens = (chosen_lengths.sum() + rejected_lengths.sum()).item()
    if tokens <= 0:
        raise ValueError("logratio_kl needs at least one response token")
    deviation = (policy_chosen_logps - ref_chosen_logps).abs().sum() + (
        policy_rejected_logps - ref_rejected_logps
    ).abs().sum()
    return deviation.detach().item() / tokens
