"""What every β controller shares: its inputs and outputs, the interface, the value checks, the registry.

A controller is a dataclass subclass of :class:`Controller` whose fields are its arguments (each with
``metadata={"help": ...}``, checked in ``__post_init__``) and whose class attributes say how the
trainer uses it: ``name`` (``training.controller`` and the ``--method`` of the same name, with DPO's
loss unless the run sets ``training.loss_type``), ``beta_argument`` (the field that ``training.beta``
fills unless ``controller_kwargs`` gives it) and ``needs`` (which statistics of :data:`STATISTICS` the
trainer computes for it). :func:`register_controller` adds one to :data:`CONTROLLERS`, which the
config checks, the CLI and the trainer read.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch

from dualloop.names import same_definition, unknown_choice

__all__ = [
    "BatchStats",
    "BetaDecision",
    "CONTROLLERS",
    "Controller",
    "STATISTICS",
    "controller_class",
    "finite_number",
    "in_unit_interval",
    "positive",
    "register_controller",
    "uniform",
]

# What the trainer can compute for a controller (`Controller.needs`), besides every batch's margins:
# "kl": the batch's KL estimate in nats per token (`training.kl_estimator`), given to `step`;
# "epsilon_steps": ε-DPO's per-example step direction (from the controller's `epsilon`), given to both.
STATISTICS = ("kl", "epsilon_steps")


# ---------------------------------------------------------------- value checks


def finite_number(name: str, value: Any) -> float:
    """``value`` as a float: a number (or a one-element tensor) that is finite; else one error naming ``name``."""
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


def positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    value = finite_number(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def in_unit_interval(name: str, value: Any, *, low_open: bool, high_open: bool) -> float:
    """A number in [0, 1], each end open or closed."""
    value = finite_number(name, value)
    if (value < 0 or (low_open and value == 0)) or (value > 1 or (high_open and value == 1)):
        bounds = ("(" if low_open else "[") + "0, 1" + (")" if high_open else "]")
        raise ValueError(f"{name} must be in {bounds}, got {value}")
    return value


# ---------------------------------------------------------------- inputs and outputs


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
            kl = finite_number("kl", self.kl)
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


def uniform(value: float, like: torch.Tensor) -> torch.Tensor:
    """``value`` for every example of ``like``, float32."""
    return torch.full_like(like, value, dtype=torch.float32)


# ---------------------------------------------------------------- the interface


class Controller:
    """The interface every controller follows.

    ``decide(stats, train=...)`` per micro-batch: every example's β and loss weight (``train=False``,
    evaluation, changes no state); ``step(stats)`` once per optimizer step on the whole global batch;
    ``state_dict``/``load_state_dict``: plain floats and ints (JSON), so a resumed run continues the
    same trajectory (the default ``load_state_dict`` sets ``self._<key>`` for each key); ``metrics``:
    what each log row records (``beta/base`` at least).
    """

    name: ClassVar[str]
    beta_argument: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()

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

    @classmethod
    def arguments(cls) -> dict[str, dataclasses.Field]:
        """The controller's arguments (its dataclass fields), by name."""
        return {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]


# ---------------------------------------------------------------- the registry

CONTROLLERS: dict[str, type[Controller]] = {}
ControllerType = TypeVar("ControllerType", bound=type[Controller])


def register_controller(cls: ControllerType, *, replace: bool = False) -> ControllerType:
    """Add a controller class to :data:`CONTROLLERS` under ``cls.name`` (usable as a class decorator).

    From then on ``training.controller: <name>`` and ``--method <name>`` (DPO's loss unless
    ``training.loss_type`` says otherwise) train it, in a notebook as from the command line.
    The same class defined again (same module and qualified name: a notebook cell run twice) replaces the
    registered one; another class under a taken name is an error unless ``replace=True``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Controller) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"register_controller needs a dataclass subclass of Controller, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__}.name must be a non-empty string: the controller's registry name")
    taken = CONTROLLERS.get(name)
    if taken is not None and taken is not cls and not replace and not same_definition(cls, taken):
        raise ValueError(
            f"controller name {name!r} is taken by {CONTROLLERS[name].__name__}; choose another or pass replace=True"
        )
    arguments = cls.arguments()
    if getattr(cls, "beta_argument", None) not in arguments:
        raise ValueError(
            f"{cls.__name__}.beta_argument={getattr(cls, 'beta_argument', None)!r} must name one of its "
            f"arguments ({', '.join(arguments)}): the one training.beta fills"
        )
    for statistic in cls.needs:
        if statistic not in STATISTICS:
            raise unknown_choice(f"{cls.__name__}.needs", statistic, STATISTICS)
    if "epsilon_steps" in cls.needs and "epsilon" not in arguments:
        raise ValueError(f"{cls.__name__} needs epsilon_steps, which are computed at its argument `epsilon`")
    for method in ("decide", "step", "state_dict", "metrics"):
        if getattr(cls, method) is getattr(Controller, method):
            raise TypeError(f"{cls.__name__} must define {method}()")
    CONTROLLERS[name] = cls
    return cls


def controller_class(name: str) -> type[Controller]:
    """The registered controller ``name``; an unknown name is one error listing the known ones."""
    if name not in CONTROLLERS:
        raise unknown_choice("controller", name, CONTROLLERS)
    return CONTROLLERS[name]
