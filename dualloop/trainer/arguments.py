"""``AdaptiveDPOConfig``: TRL's ``DPOConfig`` plus the β controller, the loss and the logging.

Also :func:`method_settings`: a run's settings checked against its method (:mod:`dualloop.methods`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from trl import DPOConfig

from dualloop.controllers import CONTROLLERS, controller_class
from dualloop.losses import LOSSES, loss_entry
from dualloop.methods import methods, registered_arguments
from dualloop.names import did_you_mean, unknown_choice

__all__ = [
    "AdaptiveDPOConfig",
    "KL_ESTIMATORS",
    "check_report_to",
    "controller_arguments",
    "method_settings",
]

KL_ESTIMATORS = ("token", "logratio")
_BETA_DEFAULT = DPOConfig.beta  # the β a run without `beta` trains with


# The trackers `report_to` names whose package transformers' `get_available_reporting_integrations` looks for,
# and what to install for each (the others, e.g. azure_ml and flyte, are left to transformers' own check).
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "mlflow": "mlflow",
    "comet_ml": "comet-ml",
    "neptune": "neptune",
    "clearml": "clearml",
    "dagshub": "dagshub",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
    "trackio": "trackio",
    "codecarbon": "codecarbon",
}


def check_report_to(report_to: Any) -> None:
    """Refuse, in one line and before anything is loaded, a ``report_to`` that names a tracker
    transformers does not know or one whose package is not installed (transformers would fail only
    when the Trainer is built, after the model has loaded). ``"none"``, ``"all"`` and ``None`` pass."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    if report_to is None or report_to in ("none", "all", ["none"], ["all"]):
        return
    names = [report_to] if isinstance(report_to, str) else report_to
    if not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names):
        raise ValueError(
            f"training.report_to={report_to!r} must be a tracker name or a list of them, e.g. [tensorboard]"
        )
    available = None
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            raise unknown_choice("training.report_to tracker", name, INTEGRATION_TO_CALLBACK)
        if name in TRACKER_PACKAGES:
            available = get_available_reporting_integrations() if available is None else available
            if name not in available:
                package = TRACKER_PACKAGES[name]
                raise ValueError(
                    f"training.report_to: {name!r} needs the {package} package, which is not installed here "
                    f"(pip install {package}); installed trackers: {', '.join(available) or 'none'}"
                )


def method_settings(method: str, training: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``AdaptiveDPOConfig`` fields (``controller``, ``loss_type``) of ``method`` combined with the
    run's own ``training`` fields: the user's ``loss_type`` wins over the method's default loss, and a
    ``controller`` (or, for a method that is its loss, a ``loss_type``) other than the method's is an error.

    ``adadpo`` is the AdaDPO loss with a static β; ``--method dualloop --set training.loss_type=adadpo``
    is DualLoop's β with the AdaDPO loss. ``controller_kwargs`` and ``loss_kwargs`` keep the arguments of
    this run's controller and loss (a phase's settings may hold other methods' too; a key that is no
    registered controller's or loss's argument stays, to be refused). Everything is checked here, before
    anything is loaded: each argument value by the controller's or loss's own rules, and a ``report_to``
    tracker that is not installed (:func:`check_report_to`).
    """
    table = methods()
    if method not in table:
        raise unknown_choice("method", method, table)
    settings = dict(table[method])
    training = dict(training or {})
    controller = training.get("controller", settings["controller"])
    if controller != settings["controller"]:
        raise ValueError(
            f"training.controller={controller!r} contradicts method {method!r}, whose controller is "
            f"{settings['controller']!r}; choose the method that has that controller"
        )
    loss_type = training.get("loss_type", settings["loss_type"])
    if isinstance(loss_type, (list, tuple)) and len(loss_type) == 1:
        loss_type = loss_type[0]
    loss_entry(loss_type)
    if method in LOSSES and loss_type != settings["loss_type"]:
        raise ValueError(
            f"training.loss_type={loss_type!r} contradicts method {method!r}, which is the "
            f"{settings['loss_type']!r} loss; use a controller's method (e.g. static) with that loss"
        )
    check_report_to(training.get("report_to"))
    every = registered_arguments()
    for section, accepted in (
        ("controller_kwargs", list(controller_class(controller).arguments())),
        ("loss_kwargs", loss_entry(loss_type).argument_names()),
    ):
        given = _mapping(section, training.get(section))
        if given is not None:  # another controller's (loss's) arguments are not this run's, nor part of its name
            training[section] = {
                key: value for key, value in given.items() if key in accepted or key not in every[section]
            }
    _check_controller_keys(controller, training.get("controller_kwargs") or {})
    beta = training.get("beta", _BETA_DEFAULT)
    kwargs, _ = _controller_kwargs(controller, training.get("controller_kwargs"), beta, 0, training.get("max_steps", 1))
    try:
        controller_class(controller)(**kwargs)
    except (ValueError, TypeError) as error:
        raise type(error)(f"training.controller_kwargs of the {controller!r} controller: {error}") from None
    loss_entry(loss_type).build_arguments(training.get("loss_kwargs"), training)
    return {**training, "controller": controller, "loss_type": loss_type}


@dataclass
class AdaptiveDPOConfig(DPOConfig):
    r"""
    Configuration of [`AdaptiveDPOTrainer`]: TRL's [`~trl.DPOConfig`] plus the β controller, the
    loss and the logging of DualLoop-DPO's experiments.

    `beta` is the controller's initial β (the static β for `controller="static"`). `loss_type` takes
    exactly one loss of `dualloop.losses.LOSSES`: `"sigmoid"` (DPO, with TRL's
    `label_smoothing`), `"ipo"` (TRL's per-token convention), `"adadpo"`, the base forms `"rdpo"`,
    `"cpo"`, `"orpo"`, `"simpo"` and the self-adaptive `"adaptive-ipo"`, `"adaptive-rdpo"`,
    `"adaptive-cpo"`, `"adaptive-orpo"`, `"adaptive-simpo"` (AdaDPO, Chen et al., Table 2).
    Defaults that differ from [`~trl.DPOConfig`]: `disable_tqdm=True` (one printed line per logging
    step instead), `logging_steps=1` and `restore_callback_states_from_checkpoint=True` (the
    controller's state travels in the Trainer's checkpoints as a stateful callback).
    `report_to` is the Trainer's (default `"none"`); a tracker it names must be installed
    ([`check_report_to`]). `report_to=["tensorboard"]` writes event files under
    `output_dir/runs/<time>_<host>/` (one folder per training session, so a resumed run adds one),
    unless the environment variable `TENSORBOARD_LOGGING_DIR` names another folder.
    """

    controller: str = field(
        default="static",
        metadata={"help": f"β controller (dualloop.controllers), one of {', '.join(CONTROLLERS)} or one registered."},
    )
    controller_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Arguments of the controller's constructor (dualloop.controllers), e.g. {'kl_target': 0.04, "
            "'lam': 4.0} for DualLoop, as a dict or a JSON string. `beta` fills the controller's initial β unless "
            "given here; Annealed's `total_steps` defaults to the Trainer's number of optimizer steps."
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
    loss_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "Arguments of the loss (its family's dataclass in dualloop.losses), e.g. {'clip': 1.5} for "
            "the self-adaptive losses' ceiling C, {'space': 'policy'} for AdaDPO, {'alpha': 0.02} for R-DPO, "
            "{'gamma': 1.0} for SimPO; as a dict or a JSON string. The sigmoid loss takes TRL's `label_smoothing`."
        },
    )
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
    reference_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder in which the frozen reference's outputs are cached per micro-batch and reused by later "
            "runs that meet the same micro-batch, bit for bit (dualloop.trainer.reference_cache); single process, "
            "no dropout. None runs the reference on every micro-batch."
        },
    )
    history_file: str = field(
        default="history.jsonl",
        metadata={"help": "File in `output_dir` to which every log row is appended as one JSON line."},
    )
    print_progress: bool = field(
        default=True, metadata={"help": "Print one plain line per logging step (main process only)."}
    )
    disable_tqdm: bool | None = field(
        default=True, metadata={"help": "Whether to disable the tqdm progress bar (plain printed lines instead)."}
    )
    logging_steps: float = field(default=1, metadata={"help": "Log every X optimizer steps."})
    restore_callback_states_from_checkpoint: bool = field(
        default=True,
        metadata={"help": "Restore stateful callbacks on resume; the β controller is one, so this must stay True."},
    )

    def __post_init__(self):
        self.controller_kwargs = _mapping("controller_kwargs", self.controller_kwargs)
        self.loss_kwargs = _mapping("loss_kwargs", self.loss_kwargs)
        check_report_to(self.report_to)
        super().__post_init__()
        controller_class(self.controller)
        if len(self.loss_type) != 1 or self.loss_type[0] not in LOSSES:
            raise ValueError(
                f"AdaptiveDPOConfig.loss_type must be one of {', '.join(LOSSES)} (a single loss), "
                f"got {self.loss_type!r}"
            )
        if self.kl_estimator not in KL_ESTIMATORS:
            raise unknown_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        if not isinstance(self.logits_chunk_size, int) or self.logits_chunk_size < 1:
            raise ValueError(
                f"AdaptiveDPOConfig.logits_chunk_size must be an integer >= 1, got {self.logits_chunk_size!r}"
            )
        if not self.restore_callback_states_from_checkpoint:
            raise ValueError(
                "AdaptiveDPOConfig.restore_callback_states_from_checkpoint=False would restart β from "
                "its initial value on resume; leave it True"
            )
        for name, default in (
            ("f_divergence_type", "reverse_kl"),
            ("ld_alpha", None),
            ("use_weighting", False),
            ("loss_weights", None),
        ):
            if getattr(self, name) not in (default, [1.0]):
                raise ValueError(
                    f"AdaptiveDPOConfig.{name}={getattr(self, name)!r} is a DPOTrainer option that "
                    f"AdaptiveDPOTrainer does not implement; leave it at {default!r}"
                )
        _check_controller_keys(self.controller, _mapping("controller_kwargs", self.controller_kwargs) or {})
        self.loss_arguments()  # each value checked by the loss's own arguments

    def loss_arguments(self) -> Any:
        """The loss's arguments (its family's dataclass) from ``loss_kwargs`` and, e.g. ``label_smoothing``, this config."""
        loss = LOSSES[self.loss_type[0]]
        config = {name: getattr(self, name) for name in loss.from_config}
        return loss.build_arguments(_mapping("loss_kwargs", self.loss_kwargs), config)

    @property
    def controller_needs(self) -> frozenset[str]:
        """The statistics the controller asks the trainer for (:data:`dualloop.controllers.STATISTICS`)."""
        return CONTROLLERS[self.controller].needs

    @property
    def token_kl_needed(self) -> bool:
        """Whether every micro-batch computes the exact token KL (the controller's KL estimator, or logging)."""
        return self.log_token_kl or ("kl" in self.controller_needs and self.kl_estimator == "token")

    @property
    def reference_logits_needed(self) -> bool:
        """Whether the reference's full-vocabulary logits are needed (not only its log-probs)."""
        return self.token_kl_needed or "epsilon_steps" in self.controller_needs

    @property
    def reference_needed(self) -> bool:
        """Whether the reference model runs: for the loss, the controller's KL or ε-steps, or logging."""
        return (
            LOSSES[self.loss_type[0]].needs_reference or "kl" in self.controller_needs or self.reference_logits_needed
        )


def _mapping(name: str, value: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """A ``*_kwargs`` field as a dict (or None): a JSON string is parsed; anything else is a TypeError naming it."""
    if isinstance(value, str):
        value = json.loads(value)
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"AdaptiveDPOConfig.{name} must be a dict, got {type(value).__name__}")
    return value


def _check_controller_keys(name: str, kwargs: dict[str, Any]) -> None:
    cls = controller_class(name)
    accepted = list(cls.arguments())
    for key in kwargs:
        if key not in accepted:
            raise ValueError(
                f"AdaptiveDPOConfig.controller_kwargs: '{key}' is not an argument of "
                f"{cls.__name__}{did_you_mean(key, accepted)}; it takes {', '.join(accepted)}"
            )


def controller_arguments(args: AdaptiveDPOConfig) -> tuple[dict[str, Any], bool]:
    """The controller's constructor arguments: ``controller_kwargs`` with ``beta`` and ``seed`` filled in,
    and whether its horizon ``total_steps`` is the Trainer's (filled in when training begins)."""
    return _controller_kwargs(
        args.controller, _mapping("controller_kwargs", args.controller_kwargs), args.beta, args.seed, args.max_steps
    )


def _controller_kwargs(
    controller: str, given: dict[str, Any] | None, beta: float, seed: int, max_steps: int
) -> tuple[dict[str, Any], bool]:
    kwargs = dict(given or {})
    cls = controller_class(controller)
    kwargs.setdefault(cls.beta_argument, beta)
    parameters = cls.arguments()
    if "seed" in parameters:
        kwargs.setdefault("seed", seed)
    horizon_from_trainer = "total_steps" in parameters and "total_steps" not in kwargs
    if horizon_from_trainer:  # a placeholder: β at step 0 does not depend on the horizon
        kwargs["total_steps"] = max(int(max_steps), 1)
    return kwargs, horizon_from_trainer
