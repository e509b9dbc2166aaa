"""β controllers: small stateful objects that decide the β each example's loss uses, one module each.

Per training micro-batch the trainer calls ``decide(stats)`` with the margins of that micro-batch
(gathered over all processes) and gets the per-example β and loss weight for all of them. Once per
optimizer step it calls ``step(stats)`` with the statistics of the whole global batch (every
micro-batch of the accumulation, every process), so every process holds the same β. The interface,
the statistics a controller can ask for and the registry are in :mod:`dualloop.controllers.base`;
a new controller is one dataclass registered with :func:`register_controller` (README, "Adding a
controller or a loss").

- :mod:`~dualloop.controllers.static`: a fixed β (DPO);
- :mod:`~dualloop.controllers.annealed`: a linear or cosine schedule;
- :mod:`~dualloop.controllers.dual_loop`: DualLoop-DPO's fast and slow loops (eqs. 2–3);
- :mod:`~dualloop.controllers.beta_dpo`: β-DPO (Wu et al. 2024, arXiv 2407.08639);
- :mod:`~dualloop.controllers.epsilon_dpo`: ε-DPO (Lee et al. 2025, arXiv 2502.13177).
"""

from dualloop.controllers.base import (
    CONTROLLERS,
    STATISTICS,
    BatchStats,
    BetaDecision,
    Controller,
    controller_class,
    register_controller,
)

# isort: off
# (the registry lists the controllers in this order)
from dualloop.controllers.static import Static
from dualloop.controllers.annealed import Annealed
from dualloop.controllers.dual_loop import DualLoop, normalized_binary_entropy
from dualloop.controllers.beta_dpo import BetaDPO
from dualloop.controllers.epsilon_dpo import EpsilonDPO, epsilon_steps_from_logps
# isort: on

__all__ = [
    "CONTROLLERS",
    "STATISTICS",
    "Annealed",
    "BatchStats",
    "BetaDPO",
    "BetaDecision",
    "Controller",
    "DualLoop",
    "EpsilonDPO",
    "Static",
    "controller_class",
    "epsilon_steps_from_logps",
    "normalized_binary_entropy",
    "register_controller",
]
