"""The training engine: TRL's ``DPOTrainer`` with a β controller and a choice of loss.

- :mod:`~dualloop.trainer.arguments`: ``AdaptiveDPOConfig`` and the controller and method tables;
- :mod:`~dualloop.trainer.objectives`: the losses by ``loss_type`` and the margin each gives the controllers;
- :mod:`~dualloop.trainer.heads`: response log-probs through TRL's fused head, hidden states, vocabulary statistics;
- :mod:`~dualloop.trainer.reference_cache`: the frozen reference's outputs per micro-batch, shared by runs;
- :mod:`~dualloop.trainer.callbacks`: the controller as checkpointed Trainer state, the history, the printed lines;
- :mod:`~dualloop.trainer.adaptive_dpo`: ``AdaptiveDPOTrainer``.
"""

from dualloop.trainer.adaptive_dpo import AdaptiveDPOTrainer
from dualloop.trainer.arguments import CONTROLLERS, KL_ESTIMATORS, METHODS, AdaptiveDPOConfig, method_settings
from dualloop.trainer.callbacks import ControllerCallback, HistoryCallback, ProgressCallback
from dualloop.trainer.heads import vocabulary_statistics
from dualloop.trainer.objectives import LOSSES

__all__ = [
    "AdaptiveDPOConfig",
    "AdaptiveDPOTrainer",
    "CONTROLLERS",
    "ControllerCallback",
    "HistoryCallback",
    "KL_ESTIMATORS",
    "LOSSES",
    "METHODS",
    "ProgressCallback",
    "method_settings",
    "vocabulary_statistics",
]
