"""The training engine: TRL's ``DPOTrainer`` with a β controller and a choice of loss.

- :mod:`~dualloop.trainer.arguments`: ``AdaptiveDPOConfig`` and ``method_settings`` (a run's settings checked against its method);
- :mod:`~dualloop.trainer.heads`: response log-probs through TRL's fused head, hidden states, vocabulary statistics;
- :mod:`~dualloop.trainer.reference_cache`: the frozen reference's outputs per micro-batch, shared by runs;
- :mod:`~dualloop.trainer.callbacks`: the controller as checkpointed Trainer state, the history, the printed lines;
- :mod:`~dualloop.trainer.adaptive_dpo`: ``AdaptiveDPOTrainer``.
"""

from dualloop.controllers import CONTROLLERS, register_controller
from dualloop.losses import LOSSES, register_loss
from dualloop.methods import methods
from dualloop.trainer.adaptive_dpo import AdaptiveDPOTrainer
from dualloop.trainer.arguments import KL_ESTIMATORS, AdaptiveDPOConfig, method_settings
from dualloop.trainer.callbacks import ControllerCallback, HistoryCallback, ProgressCallback
from dualloop.trainer.heads import vocabulary_statistics

__all__ = [
    "AdaptiveDPOConfig",
    "AdaptiveDPOTrainer",
    "CONTROLLERS",
    "ControllerCallback",
    "HistoryCallback",
    "KL_ESTIMATORS",
    "LOSSES",
    "ProgressCallback",
    "method_settings",
    "methods",
    "register_controller",
    "register_loss",
    "vocabulary_statistics",
]
