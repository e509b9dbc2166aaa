"""The ``data`` and ``evaluation`` sections of a phase's parameters, as settings dataclasses.

Each field has a help text and a default; each value is checked once, in ``__post_init__``, and an
unknown key is one error with the closest known one (:func:`dualloop.models.dataclass_from_dict`),
as for the ``model`` (:class:`dualloop.models.ModelSettings`), ``generation``
(:class:`dualloop.generation.GenerationSettings`) and ``training``
(:class:`dualloop.trainer.AdaptiveDPOConfig`) sections.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dualloop.instructions import COMPOSABLE
from dualloop.judges.endpoints import judge_entries
from dualloop.names import did_you_mean
from dualloop.stats import WIN_RATE_METHODS

__all__ = [
    "CUSTOM_PROMPT_SETS",
    "DataSettings",
    "EvaluationSettings",
    "PATH_PROMPT_SETS",
    "TRAIN_SETS",
    "check_choice",
]

TRAIN_SETS = ("verifiable", "ultrafeedback", "hh", "preferences")
# Prompt sets read from evaluation.prompt_paths (the hub sets also from the hub with data.from_hub);
# the custom ones only from there.
PATH_PROMPT_SETS = ("ultrafeedback", "hh", "helpsteer2", "sycophancy-eval", "custom", "custom-instructions")
CUSTOM_PROMPT_SETS = ("custom", "custom-instructions")


def check_choice(section: str, key: str, value: Any, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices``; else one error naming ``section: key=value`` and the closest choice."""
    if value not in choices:
        raise ValueError(f"{section}: {key}={value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}")


def _check_count(section: str, key: str, value: Any, *, least: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{section}.{key}={value!r} must be an integer >= {least}" + (" or null" if optional else ""))


def _check_bool(section: str, key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{section}: {key}={value!r} must be true or false")


@dataclass
class DataSettings:
    """The ``data`` section: the preference pairs a run trains on."""

    train: str = field(
        default="verifiable",
        metadata={
            "help": "The training pairs: 'verifiable' (shipped, offline), 'ultrafeedback', 'hh', or 'preferences' "
            "(your own, in any of TRL's preference formats: dualloop.data.load_preferences)."
        },
    )
    path: str | None = field(
        default=None,
        metadata={
            "help": "A local file or folder of the set (needed for 'preferences': .jsonl/.json/.parquet), or a "
            "hub data set id with from_hub; None: the shipped file or the set's hub id."
        },
    )
    from_hub: bool = field(default=False, metadata={"help": "Read `path` (or the set's id) from the hub."})
    revision: str | None = field(
        default=None,
        metadata={
            "help": "With from_hub: the commit (or tag) of the hub data set to read, for training and for the "
            "same set's held-out prompts; part of the run's identity. None: the latest, which its owners may "
            "change under the same id."
        },
    )
    n_pairs: int | None = field(default=None, metadata={"help": "Train on this many pairs (a seeded subsample)."})
    fraction: float | None = field(default=None, metadata={"help": "Train on this fraction of the pairs, in (0, 1]."})
    label_noise: float = field(
        default=0.0, metadata={"help": "Fraction of training pairs whose chosen and rejected are swapped (seeded)."}
    )
    instruction_ids: list[str] | None = field(
        default=None,
        metadata={
            "help": "'verifiable' only: keep the training pairs and held-out prompts whose constraints are all in "
            "this list (the cpu profile's five teachable types); None keeps every one."
        },
    )
    eval_pairs: int = field(
        default=0,
        metadata={
            "help": "Pairs of whole prompts set aside (seeded, before subsampling and label noise) on which the "
            "trainer reports eval_loss and eval rewards every training.eval_steps steps."
        },
    )
    augmented: bool = field(
        default=True,
        metadata={
            "help": "'verifiable' only: false drops the pairs made by a deterministic rewrite "
            "(dualloop.preference_set.AUGMENTATIONS) and trains on the sampled pairs alone."
        },
    )

    def __post_init__(self) -> None:
        check_choice("data", "train", self.train, TRAIN_SETS)
        _check_bool("data", "from_hub", self.from_hub)
        _check_bool("data", "augmented", self.augmented)
        if self.path is not None and (not isinstance(self.path, (str, Path)) or not str(self.path).strip()):
            raise ValueError(f"data: path={self.path!r} must be a file or folder path, or a hub data set id")
        _check_count("data", "n_pairs", self.n_pairs, least=1, optional=True)
        _check_count("data", "eval_pairs", self.eval_pairs, least=0)
        fraction = self.fraction
        if fraction is not None and (
            isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1
        ):
            raise ValueError(f"data.fraction={fraction!r} must be a number in (0, 1], or null")
        noise = self.label_noise
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0 <= noise <= 1:
            raise ValueError(f"data.label_noise={noise!r} must be a number in [0, 1]")
        if self.revision is not None:
            revision = self.revision
            if not isinstance(revision, str) or not revision.strip() or revision != revision.strip():
                raise ValueError(f"data: revision={revision!r} must be a commit hash or a tag")
            reads_hub = (
                self.from_hub and self.train != "verifiable" and (self.path is None or self.train == "preferences")
            )
            if not reads_hub:
                raise ValueError(
                    f"data: revision={revision!r} pins a hub data set, but this section reads none "
                    f"(train={self.train!r}, from_hub={self.from_hub}, path={self.path!r})"
                )
        if self.train == "preferences":
            self._check_preferences_source()
        if not self.augmented and self.train != "verifiable":
            raise ValueError(f"data: augmented=false selects verifiable pairs, but train is {self.train!r}")
        if self.instruction_ids is not None:
            if self.train != "verifiable":
                raise ValueError(f"data: instruction_ids selects verifiable pairs, but train is {self.train!r}")
            if not self.instruction_ids:
                raise ValueError("data: instruction_ids is empty (leave it out to keep every constraint type)")
            for instruction_id in self.instruction_ids:
                check_choice("data", "instruction_ids", instruction_id, sorted(COMPOSABLE))

    def _check_preferences_source(self) -> None:
        """``path`` of ``train: preferences``: a local file or folder, or a hub id with ``from_hub``."""
        if self.path is None:
            raise ValueError(
                "data: train='preferences' needs data.path: a local .jsonl/.json/.parquet file or folder of "
                "preference pairs, or a hub data set id with data.from_hub: true"
            )
        if not self.from_hub and not Path(self.path).exists():
            raise ValueError(
                f"data: path={str(self.path)!r} (train='preferences'): no such file or folder "
                "(set data.from_hub: true to read a hub data set id)"
            )

    def within_instruction_ids(self, instruction_ids: Sequence[str]) -> bool:
        """Whether every constraint of a verifiable prompt is one that ``instruction_ids`` keeps."""
        return self.instruction_ids is None or all(i in self.instruction_ids for i in instruction_ids)


@dataclass
class EvaluationSettings:
    """The ``evaluation`` section: the prompts a phase evaluates on and the judges that compare answers."""

    n_prompts: int = field(default=30, metadata={"help": "Prompts evaluated per prompt set (>= 1)."})
    first_prompt: int = field(
        default=0, metadata={"help": "The prompts evaluated are n_prompts from this position of the set on."}
    )
    judges: list[Any] = field(
        default_factory=lambda: ["gold"],
        metadata={"help": "Names of known judges or endpoint mappings (dualloop.judges.endpoints)."},
    )
    win_rate_method: str = field(
        default="wald", metadata={"help": "The win rate's interval: 'wald', 'wilson' or 'bootstrap'."}
    )
    both_orders: bool = field(default=False, metadata={"help": "Judge every pair in both positions."})
    local_judge_model: str | None = field(
        default=None, metadata={"help": "The `local` judge's model; None: the profile's model."}
    )
    prompt_paths: dict[str, str] = field(
        default_factory=dict,
        metadata={
            "help": "Prompt set -> a local file of its prompts (sets: " + ", ".join(PATH_PROMPT_SETS) + "); "
            "'custom' and 'custom-instructions' are your own prompts (dualloop.data.load_prompt_file), the latter "
            "each with IFEval-style instruction ids and kwargs that the gold checker judges."
        },
    )
    max_cost_usd: float | None = field(
        default=None,
        metadata={
            "help": "A comparison whose API calls are estimated above this many US dollars stops before any call "
            "(dualloop.judges.cost); None: no cap."
        },
    )

    def __post_init__(self) -> None:
        _check_count("evaluation", "n_prompts", self.n_prompts, least=1)
        _check_count("evaluation", "first_prompt", self.first_prompt, least=0)
        judge_entries(self.judges)
        check_choice("evaluation", "win_rate_method", self.win_rate_method, WIN_RATE_METHODS)
        _check_bool("evaluation", "both_orders", self.both_orders)
        if not isinstance(self.prompt_paths, Mapping):
            raise ValueError(f"evaluation.prompt_paths={self.prompt_paths!r} must map prompt set names to file paths")
        for name, path in self.prompt_paths.items():
            if name not in PATH_PROMPT_SETS:
                hint = did_you_mean(name, PATH_PROMPT_SETS) or f"; sets read from a path: {', '.join(PATH_PROMPT_SETS)}"
                raise ValueError(f"evaluation.prompt_paths: unknown prompt set {name!r}{hint}")
            if not isinstance(path, (str, Path)) or not str(path).strip():
                raise ValueError(f"evaluation.prompt_paths.{name}={path!r} must be a file path")
        cap = self.max_cost_usd
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 <= cap < math.inf):
            raise ValueError(f"evaluation.max_cost_usd={cap!r} must be a number >= 0 (USD), or null for no cap")
