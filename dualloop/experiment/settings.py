"""An experiment's settings: the sections a phase is built from, checked once, its seeds and its folders.

The constants name what the ``data`` and ``evaluation`` sections accept (each key's meaning in the
comment above it); :meth:`ExperimentSettings.from_parameters` checks a notebook's resolved sections
(an unknown key or choice is one ``ValueError`` naming it) before any work starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

from dualloop.config import check_seeds
from dualloop.generation import GenerationSettings
from dualloop.instructions import COMPOSABLE
from dualloop.judges.endpoints import JUDGES, judge_entries
from dualloop.models import ModelSettings
from dualloop.names import did_you_mean
from dualloop.trainer import AdaptiveDPOConfig

__all__ = ["BASE", "JUDGES", "PROMPT_SETS", "TRAIN_SETS", "ExperimentSettings"]

BASE = "base"  # the untrained model: a system that can be compared but not trained
TRAIN_SETS = ("verifiable", "ultrafeedback", "hh", "preferences")
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
# data.instruction_ids (verifiable only): keep the training pairs and the held-out prompts whose
# constraints are all in this list (the cpu profile's five teachable types); None keeps every one.
# data.eval_pairs: pairs of whole prompts set aside (seeded, before subsampling and label noise)
# on which the trainer reports eval_loss and eval rewards every training.eval_steps steps.
# data.train: preferences trains on your own pairs in any of TRL's preference formats
# (dualloop.data.load_preferences): data.path names a local .jsonl/.json/.parquet file or folder, or,
# with data.from_hub: true, a hub data set id (its "train" split).
# data.augmented (verifiable only): false drops the pairs made by a deterministic rewrite
# (dualloop.preference_set.AUGMENTATIONS) and trains on the sampled pairs alone.
DATA_KEYS = {
    "train": "verifiable",
    "path": None,
    "from_hub": False,
    "n_pairs": None,
    "fraction": None,
    "label_noise": 0.0,
    "instruction_ids": None,
    "eval_pairs": 0,
    "augmented": True,
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
# evaluation.first_prompt: the prompts evaluated are n_prompts from this position of the set on.
# evaluation.prompt_paths: prompt set -> local file of that set's prompts (PATH_PROMPT_SETS); the sets
# "custom" and "custom-instructions" are your own prompts (dualloop.data.load_prompt_file), the
# latter each with IFEval-style instruction ids and kwargs that the gold checker judges.
# evaluation.judges: names of JUDGES or endpoint mappings (dualloop.judges.endpoints).
# evaluation.max_cost_usd: a comparison whose API calls are estimated above it stops before any call
# (dualloop.judges.cost); None: no cap.
EVALUATION_KEYS = {
    "n_prompts": 30,
    "first_prompt": 0,
    "judges": ["gold"],
    "win_rate_method": "wald",
    "both_orders": False,
    "local_judge_model": None,
    "prompt_paths": {},
    "max_cost_usd": None,
}
# Prompt sets read from evaluation.prompt_paths (the hub sets also from the hub with data.from_hub);
# the custom ones only from there.
PATH_PROMPT_SETS = ("ultrafeedback", "hh", "helpsteer2", "sycophancy-eval", "custom", "custom-instructions")
CUSTOM_PROMPT_SETS = ("custom", "custom-instructions")


def _checked(section: str, values: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(values or {})
    for key in values:
        if key not in defaults:
            hint = did_you_mean(key, defaults) or f"; known keys: {', '.join(defaults)}"
            raise ValueError(f"{section}: unknown key {key!r}{hint}")
    return {**defaults, **values}


def check_choice(section: str, key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{section}: {key}={value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}")


def _check_preferences_source(data: Mapping[str, Any]) -> None:
    """``data.path`` of ``data.train: preferences``: a local file or folder, or a hub id with ``from_hub``."""
    source = data["path"]
    where = "a hub data set id (data.from_hub: true)" if data["from_hub"] else "a local .jsonl/.json/.parquet file"
    if source is None:
        raise ValueError(
            "data: train='preferences' needs data.path: a local .jsonl/.json/.parquet file or folder of "
            "preference pairs, or a hub data set id with data.from_hub: true"
        )
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise ValueError(f"data: path={source!r} must be {where} of preference pairs")
    if not data["from_hub"] and not Path(source).exists():
        raise ValueError(
            f"data: path={str(source)!r} (train='preferences'): no such file or folder "
            "(set data.from_hub: true to read a hub data set id)"
        )


def _check_prompt_paths(prompt_paths: Any) -> None:
    """``evaluation.prompt_paths``: a mapping of the prompt sets that read a file to a path."""
    if not isinstance(prompt_paths, Mapping):
        raise ValueError(f"evaluation.prompt_paths={prompt_paths!r} must map prompt set names to file paths")
    for name, path in prompt_paths.items():
        if name not in PATH_PROMPT_SETS:
            hint = did_you_mean(name, PATH_PROMPT_SETS) or f"; sets read from a path: {', '.join(PATH_PROMPT_SETS)}"
            raise ValueError(f"evaluation.prompt_paths: unknown prompt set {name!r}{hint}")
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise ValueError(f"evaluation.prompt_paths.{name}={path!r} must be a file path")


@dataclasses.dataclass
class ExperimentSettings:
    """The settings shared by a phase's runs: the checked sections, the seed, the output folders."""

    profile: str
    output_dir: Path
    seed: int
    model: ModelSettings
    training: dict[str, Any]
    data: dict[str, Any]
    generation: GenerationSettings
    evaluation: dict[str, Any]

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
        """Validate a notebook's sections; an unknown key or choice is a ``ValueError`` naming it."""
        training_fields = {f.name for f in dataclasses.fields(AdaptiveDPOConfig)}
        _checked("training", training, dict.fromkeys(training_fields))
        if "seed" in training:
            raise ValueError(
                f"training.seed={training['seed']!r}: the seed is the top-level `seed`, shared by training, data "
                "sampling and the judges (train/judge: --seed N; reproduce: --set seed=N or --set seeds=[...])"
            )
        data = _checked("data", data, DATA_KEYS)
        check_choice("data", "train", data["train"], TRAIN_SETS)
        if data["train"] == "preferences":
            _check_preferences_source(data)
        if not isinstance(data["augmented"], bool):
            raise ValueError(f"data: augmented={data['augmented']!r} must be true or false")
        if not data["augmented"] and data["train"] != "verifiable":
            raise ValueError(f"data: augmented=false selects verifiable pairs, but train is {data['train']!r}")
        if data["instruction_ids"] is not None:
            if data["train"] != "verifiable":
                raise ValueError(f"data: instruction_ids selects verifiable pairs, but train is {data['train']!r}")
            if not data["instruction_ids"]:
                raise ValueError("data: instruction_ids is empty (leave it out to keep every constraint type)")
            for instruction_id in data["instruction_ids"]:
                check_choice("data", "instruction_ids", instruction_id, sorted(COMPOSABLE))
        evaluation = _checked("evaluation", evaluation, EVALUATION_KEYS)
        for key in ("n_prompts", "first_prompt"):
            value = evaluation[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "n_prompts" else 0):
                raise ValueError(f"evaluation.{key}={value!r} must be an integer >= {1 if key == 'n_prompts' else 0}")
        judge_entries(evaluation["judges"])
        _check_prompt_paths(evaluation["prompt_paths"])
        cap = evaluation["max_cost_usd"]
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 <= cap < math.inf):
            raise ValueError(f"evaluation.max_cost_usd={cap!r} must be a number >= 0 (USD), or null for no cap")
        return cls(
            profile,
            Path(output_dir),
            seed,
            ModelSettings.from_dict({"seed": seed, **model}, "model"),
            dict(training),
            data,
            GenerationSettings.from_dict(generation, "generation"),
            evaluation,
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

    def within_instruction_ids(self, instruction_ids: Sequence[str]) -> bool:
        """Whether every constraint of a verifiable prompt is one that ``data.instruction_ids`` keeps."""
        allowed = self.data["instruction_ids"]
        return allowed is None or set(instruction_ids) <= set(allowed)
