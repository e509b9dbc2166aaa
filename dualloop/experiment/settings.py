"""An experiment's settings: the sections a phase is built from, checked once, its seeds and its folders.

:meth:`ExperimentSettings.from_parameters` builds each section's settings dataclass from a notebook's
resolved parameters — ``model`` (:class:`~dualloop.models.ModelSettings`), ``data`` and ``evaluation``
(:mod:`dualloop.experiment.sections`), ``generation`` (:class:`~dualloop.generation.GenerationSettings`);
``training`` holds :class:`~dualloop.trainer.AdaptiveDPOConfig` fields — so an unknown key or a bad value
is one ``ValueError`` naming it before any work starts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from dualloop.config import check_seeds
from dualloop.experiment.sections import (
    TRAIN_SETS,
    DataSettings,
    EvaluationSettings,
)
from dualloop.generation import GenerationSettings
from dualloop.judges.endpoints import JUDGES
from dualloop.models import ModelSettings, dataclass_from_dict
from dualloop.names import did_you_mean
from dualloop.trainer import AdaptiveDPOConfig

__all__ = ["BASE", "JUDGES", "PROMPT_SETS", "TRAIN_SETS", "ExperimentSettings"]

BASE = "base"  # the untrained model: a system that can be compared but not trained
PROMPT_SETS = (
    "verifiable-heldout",
    "ifbench",
    "mt-bench",
    "sycophancy-rho",
    "refusal-rho",
    "ultrafeedback",
    "hh",
    "helpsteer2",
    "sycophancy-eval",
    "custom",
    "custom-instructions",
)
# Criterion of each prompt set (DualLoop-DPO, Phase 4); the gold judges decide verifiable sets.
PROMPT_SET_CRITERIA = {
    "verifiable-heldout": "instructions",
    "ifbench": "instructions",
    "mt-bench": "helpful",
    "sycophancy-rho": "truthful",
    "refusal-rho": "safer",
    "ultrafeedback": "helpful",
    "hh": "safer",
    "helpsteer2": "helpful",
    "sycophancy-eval": "truthful",
    "custom": "helpful",
    "custom-instructions": "instructions",
}
# Controller arguments added after runs of the registry existed, written into a run's identity so that
# a run trained under the earlier behaviour is not reused: DualLoop-DPO's KL EMA used to start at the
# first observed KL (kl_ema_init="first"); it now starts at the KL target.
IDENTITY_CONTROLLER_DEFAULTS = {"dualloop": {"kl_ema_init": "target"}}
# Training settings that say where outputs are cached, not what is trained: not part of a run's
# identity (a relative reference_cache_dir is a folder of the registry).
CACHE_SETTINGS = ("reference_cache_dir",)
# Prompt sets whose prompts carry verifiable instructions: strict and loose accuracy per system.
CHECKED_PROMPT_SETS = ("verifiable-heldout", "ifbench", "custom-instructions")


def _check_training_keys(training: Mapping[str, Any]) -> None:
    """Every key of ``training`` is an ``AdaptiveDPOConfig`` field, and the seed is not one of them."""
    known = [f.name for f in dataclasses.fields(AdaptiveDPOConfig)]
    for key in training:
        if key not in known:
            hint = did_you_mean(key, known) or f"; known keys: {', '.join(known)}"
            raise ValueError(f"training: unknown key {key!r}{hint}")
    if "seed" in training:
        raise ValueError(
            f"training.seed={training['seed']!r}: the seed is the top-level `seed`, shared by training, data "
            "sampling and the judges (train/judge: --seed N; reproduce: --set seed=N or --set seeds=[...])"
        )


@dataclasses.dataclass
class ExperimentSettings:
    """The settings shared by a phase's runs: the checked sections, the seed, the output folders."""

    profile: str
    output_dir: Path
    seed: int
    model: ModelSettings
    training: dict[str, Any]
    data: DataSettings
    generation: GenerationSettings
    evaluation: EvaluationSettings

    @classmethod
    def from_parameters(
        cls,
        *,
        profile: str,
        output_dir: str | Path,
        seed: int,
        model: Mapping[str, Any],
        training: Mapping[str, Any],
        data: Mapping[str, Any],
        generation: Mapping[str, Any],
        evaluation: Mapping[str, Any],
    ) -> Self:
        """Validate a notebook's sections; an unknown key or a bad value is a ``ValueError`` naming it."""
        _check_training_keys(training)
        return cls(
            profile,
            Path(output_dir),
            seed,
            ModelSettings.from_dict({"seed": seed, **model}, "model"),
            dict(training),
            dataclass_from_dict(DataSettings, data, "data"),
            GenerationSettings.from_dict(generation, "generation"),
            dataclass_from_dict(EvaluationSettings, evaluation, "evaluation"),
        )

    # The seed the experiment was built with; under another seed (with_seed) decisions and instruction
    # scores go to the subfolder seed_folder, "seed-<n>".
    home_seed: int | None = None
    seed_folder: str = ""

    def with_seed(self, seed: int) -> Self:
        """The same settings under another seed (training, data subsample and label noise, the smoke
        model's initialisation, the judges' position coin): each (method, seed) is its own run of the
        registry, and its decisions and instruction scores are kept under ``seed-<n>/`` (the seed the
        experiment was built with keeps the folders themselves)."""
        (seed,) = check_seeds([seed])
        home = self.seed if self.home_seed is None else self.home_seed
        model = dataclasses.replace(self.model, seed=seed)
        folder = "" if seed == home else f"seed-{seed}"
        return dataclasses.replace(self, seed=seed, model=model, home_seed=home, seed_folder=folder)

    def seeded(self, seeds: Sequence[int] | None) -> dict[int, Self]:
        """seed -> :meth:`with_seed` for a phase's ``seeds`` (None: the experiment's own seed alone); an
        empty list, a repeated or a non-integer seed is a ``ValueError`` naming ``seeds``."""
        chosen = [self.seed] if seeds is None else check_seeds(list(seeds) if isinstance(seeds, tuple) else seeds)
        return {seed: self.with_seed(seed) for seed in chosen}

    # ---------------------------------------------------------------- folders

    @property
    def registry_dir(self) -> Path:
        return self.output_dir / "registry"

    @property
    def results_dir(self) -> Path:
        return self.output_dir / "results"

    @property
    def figures_dir(self) -> Path:
        return self.output_dir / "figures"

    @property
    def tables_dir(self) -> Path:
        return self.output_dir / "tables"
