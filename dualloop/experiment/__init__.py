"""What a phase notebook calls: train-or-reuse a method, generate, judge, and keep the decisions.

An :class:`Experiment` is built from a notebook's resolved parameters (profile ⊕ phase file): the
model, training, data, generation and evaluation sections. Data flows one way:
``train`` (run registry, :mod:`dualloop.registry`) → ``responses`` (cached generations,
:mod:`dualloop.generation`) → ``compare`` (judges, :mod:`dualloop.judges`) → decisions JSONL under
``output_dir/results/decisions/`` → tables and figures (:mod:`dualloop.report`). Trained runs and
generations live in ``output_dir/registry`` and are shared by every phase writing to the same folder.

- :mod:`~dualloop.experiment.sections`: the ``data`` and ``evaluation`` sections' settings dataclasses;
- :mod:`~dualloop.experiment.settings`: every section built and checked once; seeds; folders;
- :mod:`~dualloop.experiment.training`: a run's identity, the training pairs, the trainer;
- :mod:`~dualloop.experiment.evaluation`: prompts, answers, judges, cost, scores, summaries;
- :mod:`~dualloop.experiment.phases`: phase 1's best static β, phase 3's ablations.
"""

from dualloop.experiment.evaluation import Evaluation
from dualloop.experiment.phases import best_static_beta, record_best_static_beta, train_ablation
from dualloop.experiment.settings import (
    BASE,
    CHECKED_PROMPT_SETS,
    JUDGES,
    PROMPT_SET_CRITERIA,
    PROMPT_SETS,
    TRAIN_SETS,
)
from dualloop.experiment.training import Training

__all__ = [
    "BASE",
    "CHECKED_PROMPT_SETS",
    "JUDGES",
    "PROMPT_SETS",
    "PROMPT_SET_CRITERIA",
    "TRAIN_SETS",
    "Experiment",
    "best_static_beta",
    "record_best_static_beta",
    "train_ablation",
]


class Experiment(Training, Evaluation):
    """The settings shared by a phase's runs (:class:`~dualloop.experiment.settings.ExperimentSettings`), and
    the steps a notebook calls: ``train`` (:class:`~dualloop.experiment.training.Training`) and ``prompts``,
    ``responses``, ``compare``, ``summarize`` (:class:`~dualloop.experiment.evaluation.Evaluation`)."""
