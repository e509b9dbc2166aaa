"""An experiment's training: a run's identity, the training pairs, and the trainer that trains or resumes it."""

from __future__ import annotations

import copy
import dataclasses
import random
from collections.abc import Mapping
from typing import Any

import torch
from datasets import Dataset

from dualloop import data as datasets
from dualloop.data import data_fingerprint, to_trl_rows
from dualloop.experiment.settings import CACHE_SETTINGS, IDENTITY_CONTROLLER_DEFAULTS, ExperimentSettings
from dualloop.models import load_policy
from dualloop.registry import ensure_run
from dualloop.trainer import AdaptiveDPOConfig, AdaptiveDPOTrainer, method_settings

__all__ = ["Training"]


class Training(ExperimentSettings):
    """``train(method)`` and what it needs: the run's resolved configuration and the data section's pairs."""

    def run_config(self, method: str, **training_overrides: Any) -> dict[str, Any]:
        """The resolved configuration of a training run (what the registry hashes and records)."""
        training = method_settings(method, {**self.training, **training_overrides})
        added = IDENTITY_CONTROLLER_DEFAULTS.get(training["controller"])
        if added:
            training["controller_kwargs"] = {**added, **(training.get("controller_kwargs") or {})}
        # None where None is the default anyway (``controller_kwargs=None``) names the same run as leaving it out
        unset = {f.name for f in dataclasses.fields(AdaptiveDPOConfig) if f.default is None}
        training = {
            key: value
            for key, value in training.items()
            if (value is not None or key not in unset) and key not in CACHE_SETTINGS
        }
        return {
            "seed": self.seed,
            "method": method,
            "model": dataclasses.asdict(self.model),
            "data": self._data_identity(),
            "training": training,
        }

    def _data_identity(self) -> dict[str, Any]:
        """The data section as a run's identity holds it; a local ``data.path`` (a file or folder, of any
        training set) adds its content hash (``data_sha256``), so that an edited file trains a new run.
        (The shipped set, ``path`` None, is versioned with the code; a hub data set by its id and ``revision``,
        which is left out while None so that the identities of runs from before it existed still hold.)"""
        identity = dataclasses.asdict(self.data)
        if identity["revision"] is None:
            del identity["revision"]
        if self.data.from_hub or self.data.path is None:
            return identity
        return {**identity, "data_sha256": data_fingerprint(self.data.path)}

    def preference_pairs(self) -> list:
        """The training pairs the data section describes (seeded subsample and label noise), without
        the evaluation pairs."""
        return self.split_pairs()[0]

    def evaluation_pairs(self) -> list:
        """The ``data.eval_pairs`` pairs set aside for the trainer's evaluation: all pairs of
        seeded randomly chosen prompts, at least ``eval_pairs`` of them (none when 0)."""
        return self.split_pairs()[1]

    def split_pairs(self) -> tuple[list, list]:
        """(training pairs, evaluation pairs) of the data section, from one load of the source."""
        section = self.data
        pairs, held_out = self._loaded_pairs()
        training = [pair for index, pair in enumerate(pairs) if index not in held_out]
        if section.n_pairs is not None or section.fraction is not None:
            training = datasets.subsample(training, fraction=section.fraction, n=section.n_pairs, seed=self.seed)
        if section.label_noise:
            training = datasets.flip_labels(training, section.label_noise, seed=self.seed)
        return training, [pair for index, pair in enumerate(pairs) if index in held_out]

    def _loaded_pairs(self) -> tuple[list, set[int]]:
        """The pairs of the training source (after ``augmented`` and ``instruction_ids``) and the indices set aside."""
        section = self.data
        if section.train == "verifiable":
            loaded = datasets.load_verifiable_preferences(section.path)
        elif section.train == "ultrafeedback":
            loaded = datasets.load_ultrafeedback(section.path, from_hub=section.from_hub, revision=section.revision)
        elif section.train == "preferences" and section.path is not None:  # DataSettings requires the path
            loaded = datasets.load_preferences(section.path, from_hub=section.from_hub, revision=section.revision)
        else:
            loaded = datasets.load_hh(section.path, split="train", from_hub=section.from_hub, revision=section.revision)
        pairs = loaded.records
        if not section.augmented:
            pairs = [pair for pair in pairs if pair.metadata.get("augmentation") is None]
            if not pairs:
                raise ValueError(f"data: no training pair of {loaded.source} is left after data.augmented=false")
        if section.instruction_ids is not None:
            pairs = [pair for pair in pairs if section.within_instruction_ids(pair.metadata["instruction_ids"])]
            if not pairs:
                raise ValueError(
                    f"data: no training pair of {loaded.source} is left after "
                    f"data.instruction_ids={section.instruction_ids!r}"
                )
        by_prompt: dict[str, list[int]] = {}
        for index, pair in enumerate(pairs):
            by_prompt.setdefault(pair.prompt_text, []).append(index)
        prompts = list(by_prompt)
        random.Random(f"{self.seed}:eval-pairs").shuffle(prompts)
        held_out: set[int] = set()
        for prompt in prompts:
            if len(held_out) >= section.eval_pairs:
                break
            held_out.update(by_prompt[prompt])
        if pairs and len(held_out) == len(pairs):
            raise ValueError(f"data: eval_pairs={section.eval_pairs} leaves no training pair of {len(pairs)}")
        return pairs, held_out

    def train(self, method: str, **training_overrides: Any):
        """The finished run of ``method`` (a :class:`dualloop.registry.Run`): reused when it exists,
        resumed when it was interrupted, trained otherwise. ``training_overrides`` are
        ``AdaptiveDPOConfig`` fields (``beta``, ``controller_kwargs``, ``learning_rate``, …)."""
        config = self.run_config(method, **training_overrides)
        return ensure_run(self.registry_dir, config, lambda run: self._trainer(run, config))

    def _trainer(self, run, config: Mapping[str, Any]):
        """The trainer of ``run``. Under full fine-tuning (``model.lora_r: 0``, no adapter to switch off) the
        reference is a frozen copy of the policy as loaded, as TRL would load it again by name (which a
        model without a hub name, e.g. ``smoke``, does not have). The pairs are read first: a bad row is
        named before the model loads."""
        training, held_out = self.split_pairs()
        policy = load_policy(self.model)
        on_cpu = not torch.cuda.is_available()
        evaluates = {"eval_strategy": "steps"} if self.data.eval_pairs else {}
        cache = self.training.get("reference_cache_dir")
        caching = {"reference_cache_dir": str(self.registry_dir / cache)} if cache else {}
        args = AdaptiveDPOConfig(
            output_dir=str(run.path),
            seed=self.seed,
            use_cpu=on_cpu,
            bf16=not on_cpu,
            **{"report_to": [], "gradient_checkpointing": not on_cpu, **evaluates, **config["training"], **caching},
        )
        dataset = Dataset.from_list(to_trl_rows(training))
        evaluation = Dataset.from_list(to_trl_rows(held_out)) if held_out else None
        reference = None if policy.peft_config is not None else copy.deepcopy(policy.model).eval()
        return AdaptiveDPOTrainer(
            policy.model,
            reference,
            args=args,
            train_dataset=dataset,
            eval_dataset=evaluation,
            processing_class=policy.tokenizer,
            peft_config=policy.peft_config,
        )
