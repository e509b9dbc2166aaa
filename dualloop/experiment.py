"""What a phase notebook calls: train-or-reuse a method, generate, judge, and keep the decisions.

An :class:`Experiment` is built from a notebook's resolved parameters (profile ⊕ phase file): the
model, training, data, generation and evaluation sections. Data flows one way:
``train`` (run registry, :mod:`dualloop.registry`) → ``responses`` (cached generations,
:mod:`dualloop.generation`) → ``compare`` (judges, :mod:`dualloop.judges`) → decisions JSONL under
``output_dir/results/decisions/`` → tables and figures (:mod:`dualloop.report`). Trained runs and
generations live in ``output_dir/registry`` and are shared by every phase writing to the same folder.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dualloop.config import check_seeds
from dualloop.generation import GenerationSettings
from dualloop.judges.endpoints import JUDGES, judge_entries
from dualloop.models import ModelSettings
from dualloop.names import did_you_mean

__all__ = ["Experiment", "BASE", "TRAIN_SETS", "PROMPT_SETS", "JUDGES", "record_best_static_beta", "best_static_beta"]

BASE = "base"  # the untrained model: a system that can be compared but not trained
TRAIN_SETS = ("verifiable", "ultrafeedback", "hh")
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
}
# data.instruction_ids (verifiable only): keep the training pairs and the held-out prompts whose
# constraints are all in this list (the cpu profile's five teachable types); None keeps every one.
# data.eval_pairs: pairs of whole prompts set aside (seeded, before subsampling and label noise)
# on which the trainer reports eval_loss and eval rewards every training.eval_steps steps.
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
CHECKED_PROMPT_SETS = ("verifiable-heldout", "ifbench")
# evaluation.first_prompt: the prompts evaluated are n_prompts from this position of the set on.
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


def _checked(section: str, values: Mapping[str, Any] | None, defaults: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(values or {})
    for key in values:
        if key not in defaults:
            hint = did_you_mean(key, defaults) or f"; known keys: {', '.join(defaults)}"
            raise ValueError(f"{section}: unknown key {key!r}{hint}")
    return {**defaults, **values}


def _check_choice(section: str, key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{section}: {key}={value!r} is not one of {', '.join(choices)}{did_you_mean(value, choices)}")


def _evaluation_prompt(prompt_set: str, number: int, record) -> tuple[str, dict[str, Any]]:
    """(prompt id, {"messages", "metadata"}) of a loaded evaluation record: a ``PromptRecord`` or,
    for preference data, the prompt of a ``PreferencePair``."""
    from dualloop.data import PromptRecord

    if isinstance(record, PromptRecord):
        return record.prompt_id, {"messages": [dict(m) for m in record.messages], "metadata": dict(record.metadata)}
    prompt_id = record.metadata.get("prompt_id") or f"{prompt_set}-{number}"
    return str(prompt_id), {"messages": [dict(m) for m in record.prompt], "metadata": dict(record.metadata)}


@dataclasses.dataclass
class Experiment:
    """The settings shared by a phase's runs, and the steps a notebook calls."""

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
    ) -> Experiment:
        """Validate a notebook's sections; an unknown key or choice is a ``ValueError`` naming it."""
        from dualloop.trainer import AdaptiveDPOConfig

        training_fields = {f.name for f in dataclasses.fields(AdaptiveDPOConfig)}
        _checked("training", training, dict.fromkeys(training_fields))
        if "seed" in training:
            raise ValueError(
                f"training.seed={training['seed']!r}: the seed is the top-level `seed`, shared by training, data "
                "sampling and the judges (train/judge: --seed N; reproduce: --set seed=N or --set seeds=[...])"
            )
        data = _checked("data", data, DATA_KEYS)
        _check_choice("data", "train", data["train"], TRAIN_SETS)
        if not isinstance(data["augmented"], bool):
            raise ValueError(f"data: augmented={data['augmented']!r} must be true or false")
        if not data["augmented"] and data["train"] != "verifiable":
            raise ValueError(f"data: augmented=false selects verifiable pairs, but train is {data['train']!r}")
        if data["instruction_ids"] is not None:
            from dualloop.instructions import COMPOSABLE

            if data["train"] != "verifiable":
                raise ValueError(f"data: instruction_ids selects verifiable pairs, but train is {data['train']!r}")
            if not data["instruction_ids"]:
                raise ValueError("data: instruction_ids is empty (leave it out to keep every constraint type)")
            for instruction_id in data["instruction_ids"]:
                _check_choice("data", "instruction_ids", instruction_id, sorted(COMPOSABLE))
        evaluation = _checked("evaluation", evaluation, EVALUATION_KEYS)
        for key in ("n_prompts", "first_prompt"):
            value = evaluation[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "n_prompts" else 0):
                raise ValueError(f"evaluation.{key}={value!r} must be an integer >= {1 if key == 'n_prompts' else 0}")
        judge_entries(evaluation["judges"])
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

    def with_seed(self, seed: int) -> Experiment:
        """The same settings under another seed (training, data subsample and label noise, the smoke
        model's initialisation, the judges' position coin): each (method, seed) is its own run of the
        registry, and its decisions and instruction scores are kept under ``seed-<n>/`` (the seed the
        experiment was built with keeps the folders themselves)."""
        (seed,) = check_seeds([seed])
        home = self.seed if self.home_seed is None else self.home_seed
        model = dataclasses.replace(self.model, seed=seed)
        folder = "" if seed == home else f"seed-{seed}"
        return dataclasses.replace(self, seed=seed, model=model, home_seed=home, seed_folder=folder)

    def seeded(self, seeds: Sequence[int] | None) -> dict[int, Experiment]:
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

    # ---------------------------------------------------------------- training

    def run_config(self, method: str, **training_overrides: Any) -> dict[str, Any]:
        """The resolved configuration of a training run (what the registry hashes and records)."""
        from dualloop.trainer import AdaptiveDPOConfig, method_settings

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
            "data": self.data,
            "training": training,
        }

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
        from dualloop import data as datasets

        section = self.data
        pairs, held_out = self._loaded_pairs()
        training = [pair for index, pair in enumerate(pairs) if index not in held_out]
        if section["n_pairs"] is not None or section["fraction"] is not None:
            training = datasets.subsample(training, fraction=section["fraction"], n=section["n_pairs"], seed=self.seed)
        if section["label_noise"]:
            training = datasets.flip_labels(training, section["label_noise"], seed=self.seed)
        return training, [pair for index, pair in enumerate(pairs) if index in held_out]

    def _loaded_pairs(self) -> tuple[list, set[int]]:
        """The pairs of the training source (after ``instruction_ids``) and the indices set aside."""
        import random

        from dualloop import data as datasets

        section = self.data
        if section["train"] == "verifiable":
            loaded = datasets.load_verifiable_preferences(section["path"])
        elif section["train"] == "ultrafeedback":
            loaded = datasets.load_ultrafeedback(section["path"], from_hub=section["from_hub"])
        else:
            loaded = datasets.load_hh(section["path"], split="train", from_hub=section["from_hub"])
        pairs = loaded.records
        if not section["augmented"]:
            pairs = [pair for pair in pairs if pair.metadata.get("augmentation") is None]
            if not pairs:
                raise ValueError(f"data: no training pair of {loaded.source} is left after data.augmented=false")
        if section["instruction_ids"] is not None:
            pairs = [pair for pair in pairs if self._within_instruction_ids(pair.metadata["instruction_ids"])]
            if not pairs:
                raise ValueError(
                    f"data: no training pair of {loaded.source} is left after "
                    f"data.instruction_ids={section['instruction_ids']!r}"
                )
        by_prompt: dict[str, list[int]] = {}
        for index, pair in enumerate(pairs):
            by_prompt.setdefault(pair.prompt_text, []).append(index)
        prompts = list(by_prompt)
        random.Random(f"{self.seed}:eval-pairs").shuffle(prompts)
        held_out: set[int] = set()
        for prompt in prompts:
            if len(held_out) >= section["eval_pairs"]:
                break
            held_out.update(by_prompt[prompt])
        if pairs and len(held_out) == len(pairs):
            raise ValueError(f"data: eval_pairs={section['eval_pairs']} leaves no training pair of {len(pairs)}")
        return pairs, held_out

    def _within_instruction_ids(self, instruction_ids: Sequence[str]) -> bool:
        """Whether every constraint of a verifiable prompt is one that ``data.instruction_ids`` keeps."""
        allowed = self.data["instruction_ids"]
        return allowed is None or set(instruction_ids) <= set(allowed)

    def train(self, method: str, **training_overrides: Any):
        """The finished run of ``method`` (a :class:`dualloop.registry.Run`): reused when it exists,
        resumed when it was interrupted, trained otherwise. ``training_overrides`` are
        ``AdaptiveDPOConfig`` fields (``beta``, ``controller_kwargs``, ``learning_rate``, …)."""
        from dualloop.registry import ensure_run

        config = self.run_config(method, **training_overrides)
        return ensure_run(self.registry_dir, config, lambda run: self._trainer(run, config))

    def _trainer(self, run, config: Mapping[str, Any]):
        import torch
        from datasets import Dataset

        from dualloop.data import to_trl_rows
        from dualloop.models import load_policy
        from dualloop.trainer import AdaptiveDPOConfig, AdaptiveDPOTrainer

        policy = load_policy(self.model)
        on_cpu = not torch.cuda.is_available()
        evaluates = {"eval_strategy": "steps"} if self.data["eval_pairs"] else {}
        cache = self.training.get("reference_cache_dir")
        caching = {"reference_cache_dir": str(self.registry_dir / cache)} if cache else {}
        args = AdaptiveDPOConfig(
            output_dir=str(run.path),
            seed=self.seed,
            use_cpu=on_cpu,
            bf16=not on_cpu,
            **{"report_to": [], "gradient_checkpointing": not on_cpu, **evaluates, **config["training"], **caching},
        )
        training, held_out = self.split_pairs()
        dataset = Dataset.from_list(to_trl_rows(training))
        evaluation = Dataset.from_list(to_trl_rows(held_out)) if held_out else None
        return AdaptiveDPOTrainer(
            policy.model,
            args=args,
            train_dataset=dataset,
            eval_dataset=evaluation,
            processing_class=policy.tokenizer,
            peft_config=policy.peft_config,
        )

    # ---------------------------------------------------------------- evaluation

    def prompts(self, prompt_set: str) -> dict[str, dict[str, Any]]:
        """``n_prompts`` held-out prompts of ``prompt_set``: id → {"messages", "metadata"}."""
        from dualloop import data as datasets
        from dualloop.offline_sets import OFFLINE_PROMPT_SETS

        _check_choice("evaluation", "prompt_set", prompt_set, PROMPT_SETS)
        if prompt_set in ("verifiable-heldout", "ifbench"):
            from dualloop.instructions import load_ifbench

            source = (
                load_ifbench()
                if prompt_set == "ifbench"
                else [p for p in datasets.load_verifiable_heldout() if self._within_instruction_ids(p.instruction_ids)]
            )
            records = {
                p.prompt_id: {"messages": [{"role": "user", "content": p.prompt}], "metadata": p.checker_metadata()}
                for p in source
            }
        elif prompt_set in OFFLINE_PROMPT_SETS:
            records = dict(
                _evaluation_prompt(prompt_set, number, record)
                for number, record in enumerate(OFFLINE_PROMPT_SETS[prompt_set]())
            )
        else:
            path = self.evaluation["prompt_paths"].get(prompt_set)
            from_hub = self.data["from_hub"]
            loaded = {
                "ultrafeedback": lambda: datasets.load_ultrafeedback(path, split="test_prefs", from_hub=from_hub),
                "hh": lambda: datasets.load_hh(path, split="test", from_hub=from_hub, on_error="skip"),
                "helpsteer2": lambda: datasets.load_helpsteer2_prompts(path, from_hub=from_hub),
                "sycophancy-eval": lambda: datasets.load_sycophancy_eval(path, from_hub=from_hub),
            }[prompt_set]()
            if loaded.skipped:
                print(
                    f"dualloop.experiment: {prompt_set}: skipped {len(loaded.skipped)} malformed rows of "
                    f"{loaded.source}, e.g. {loaded.skipped[0]}",
                    flush=True,
                )
            records = dict(
                _evaluation_prompt(prompt_set, number, record) for number, record in enumerate(loaded.records)
            )
        first, count = self.evaluation["first_prompt"], self.evaluation["n_prompts"]
        if first + count > len(records):
            raise ValueError(
                f"evaluation.n_prompts={count} (from evaluation.first_prompt={first}) asks for more "
                f"prompts than prompt set {prompt_set!r} holds ({len(records)})"
            )
        chosen = list(records)[first : first + count]
        return {prompt_id: records[prompt_id] for prompt_id in chosen}

    def responses(self, system: str, prompt_set: str, run=None) -> dict[str, str]:
        """Greedy responses of ``system`` (``"base"`` or a trained ``run``) to the prompt set, cached
        (the model is loaded only when a prompt is missing); with ``generation.backend: server``
        requested from the server (the base model by its name, a run by its id: :mod:`dualloop.serving`)."""
        if (system == BASE) != (run is None):
            raise ValueError(f"system {system!r}: pass run= for a trained system and no run for {BASE!r}")
        prompts = {pid: record["messages"] for pid, record in self.prompts(prompt_set).items()}
        out_dir = self.registry_dir / "generations"
        if self.generation.backend == "server":
            from dualloop.serving import generation_endpoint, server_responses

            served = run.id if run is not None else self.model.name_or_path
            endpoint = generation_endpoint(self.generation)
            generated = server_responses(
                endpoint, served, prompts, self.generation, out_dir=out_dir, prompt_set=prompt_set
            )
        else:
            from dualloop.generation import local_responses

            adapter_dir = run.adapter_dir if run is not None else None
            generated = local_responses(
                self.model, adapter_dir, prompts, self.generation, out_dir=out_dir, prompt_set=prompt_set
            )
        return {prompt_id: samples[0] for prompt_id, samples in generated.items()}

    def system_responses(self, systems: Sequence[str], prompt_set: str, runs: Mapping[str, Any]) -> dict[str, dict]:
        """system → prompt id → greedy response, for each of ``systems`` (``runs`` maps trained names to runs)."""
        return {system: self.responses(system, prompt_set, runs.get(system)) for system in systems}

    def local_judge(self, criterion: str):
        """The local model judge of ``evaluation.judges`` for ``criterion`` (re-judging flips need it)."""
        from dualloop.judges import LocalModelJudge

        judge = next((j for j in self.judges(criterion) if isinstance(j, LocalModelJudge)), None)
        if judge is None:
            raise ValueError("re-judging flips need the local model judge: add 'local' to evaluation.judges")
        return judge

    def judges(self, criterion: str, *, both_orders: bool | None = None) -> list:
        """The judges the evaluation section names, for ``criterion``; the gold checker judges only
        verifiable instructions and is left out for the other criteria. An API judge (a preset or an
        endpoint mapping) caches its verdicts in ``registry/judge-cache/<name>.jsonl``. ``both_orders``
        overrides the evaluation section's."""
        from dualloop import judges

        both = self.evaluation["both_orders"] if both_orders is None else both_orders
        made = []
        for entry in judge_entries(self.evaluation["judges"]):
            if isinstance(entry, judges.EndpointJudge):
                cache = self.registry_dir / "judge-cache" / f"{entry.name}.jsonl"
                made.append(
                    judges.OpenAICompatibleJudge.from_endpoint(
                        entry, criterion, seed=self.seed, both_orders=both, cache_path=cache
                    )
                )
            elif entry in ("gold", "gold-loose"):
                if criterion == "instructions":
                    made.append(judges.GoldCheckerJudge(seed=self.seed, both_orders=both, loose=entry == "gold-loose"))
            else:  # local
                from dualloop.models import load_policy

                settings = (
                    self.model
                    if self.evaluation["local_judge_model"] is None
                    else dataclasses.replace(self.model, name_or_path=self.evaluation["local_judge_model"])
                )
                policy = load_policy(dataclasses.replace(settings, lora_r=0))
                made.append(
                    judges.LocalModelJudge(
                        policy.model.eval(),
                        policy.tokenizer,
                        criterion,
                        seed=self.seed,
                        both_orders=both,
                        name=f"local:{settings.name_or_path}",
                    )
                )
        if not made:
            raise ValueError(
                f"evaluation.judges {self.evaluation['judges']} has no judge for criterion {criterion!r}: "
                "the gold checker judges only verifiable instructions; add 'local' or an API judge"
            )
        return made

    def pair_items(self, system_a: str, system_b: str, prompt_set: str, *, runs: Mapping[str, Any]) -> list:
        """The judge's items: each prompt with the two systems' responses (``runs``: system → Run)."""
        from dualloop.judges import PairItem

        prompts = self.prompts(prompt_set)
        answers = {system: self.responses(system, prompt_set, runs.get(system)) for system in (system_a, system_b)}
        return [
            PairItem(
                f"{prompt_set}:{prompt_id}",
                record["messages"][-1]["content"],
                answers[system_a][prompt_id],
                answers[system_b][prompt_id],
                system_a,
                system_b,
                prompt_id,
                {**record["metadata"], "dataset": prompt_set},
            )
            for prompt_id, record in prompts.items()
        ]

    def compare(
        self, system_a: str, system_b: str, prompt_set: str, *, runs: Mapping[str, Any], both_orders: bool | None = None
    ) -> Path:
        """Judge ``system_a`` against ``system_b`` on ``prompt_set`` with every judge; returns the
        decisions file ``results/decisions/[seed-<n>/]<prompt_set>__<a>__vs__<b>[__both-orders].jsonl``
        (rewritten; judged in both orders when ``both_orders``, default the evaluation section's).
        Before any API call it prints each API judge's calls, tokens and US dollars
        (:mod:`dualloop.judges.cost`) and raises ``CostCapExceeded`` (a ValueError) when together
        they exceed ``evaluation.max_cost_usd``."""
        from dualloop.judges import OpenAICompatibleJudge, check_cost_cap, write_decisions

        both = self.evaluation["both_orders"] if both_orders is None else both_orders
        items = self.pair_items(system_a, system_b, prompt_set, runs=runs)
        path = (
            self.results_dir
            / "decisions"
            / self.seed_folder
            / f"{prompt_set}__{system_a}__vs__{system_b}{'__both-orders' if both else ''}.jsonl"
        )
        made = self.judges(PROMPT_SET_CRITERIA[prompt_set], both_orders=both)
        estimates = [judge.estimate(items) for judge in made if isinstance(judge, OpenAICompatibleJudge)]
        for estimate in estimates:
            print(f"dualloop.experiment: {system_a} vs {system_b} on {prompt_set}: {estimate.line()}", flush=True)
        check_cost_cap(estimates, self.evaluation["max_cost_usd"])
        path.unlink(missing_ok=True)
        for judge in made:
            print(
                f"dualloop.experiment: {system_a} vs {system_b} on {prompt_set}: judge {judge.name}, "
                f"{len(items)} pairs",
                flush=True,
            )
            write_decisions(path, judge.judge(items))
        return path

    def instruction_scores(self, system: str, prompt_set: str, run=None) -> Path:
        """Check ``system``'s response to every prompt of a verifiable prompt set, strictly and
        loosely (IFEval's two criteria); returns the file
        ``results/accuracy/[seed-<n>/]<prompt_set>__<system>.jsonl`` (rewritten), one line per prompt:
        ``{"prompt_id", "instruction_ids", "strict": [bool per instruction], "loose": [...]}``."""
        import json

        from dualloop.instructions import check, check_loose

        if prompt_set not in CHECKED_PROMPT_SETS:
            raise ValueError(
                f"prompt set {prompt_set!r} has no instruction checker; accuracies exist for "
                f"{', '.join(CHECKED_PROMPT_SETS)}"
            )
        prompts = self.prompts(prompt_set)
        answers = self.responses(system, prompt_set, run)
        path = self.results_dir / "accuracy" / self.seed_folder / f"{prompt_set}__{system}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            for prompt_id, record in prompts.items():
                ids, kwargs = record["metadata"]["instruction_ids"], record["metadata"]["kwargs"]
                text, answer = record["messages"][-1]["content"], answers[prompt_id]
                handle.write(
                    json.dumps(
                        {
                            "prompt_id": prompt_id,
                            "instruction_ids": ids,
                            "strict": check(answer, ids, kwargs, text),
                            "loose": check_loose(answer, ids, kwargs, text),
                        }
                    )
                    + "\n"
                )
        return path

    def summarize(
        self, phase: str, prompt_set: str, decisions_files: Sequence[Path], *, runs: Mapping[str, Any]
    ) -> Path:
        """:meth:`summarize_seeds` of this experiment's seed alone."""
        return self.summarize_seeds(phase, prompt_set, {self.seed: decisions_files}, runs={self.seed: runs})

    def summarize_seeds(
        self,
        phase: str,
        prompt_set: str,
        decisions_files: Mapping[int, Sequence[Path]],
        *,
        runs: Mapping[int, Mapping[str, Any]],
    ) -> Path:
        """Write the phase summary ``results/<phase>.json`` (:func:`dualloop.summary.seeds_summary`) of
        the comparisons in ``decisions_files`` (seed -> files): every system's strict and loose
        accuracy (on a prompt set with a checker; :meth:`instruction_scores`) and per comparison and
        judge the win rate beside the paired accuracy difference, per seed and, with several seeds,
        pooled over seeds and prompts. ``runs``: seed -> system -> Run of the trained systems. Each
        system's entry also names its run (``run``; ``runs`` per seed with several seeds; None for the
        base model), the KL it reached (``kl``: :func:`dualloop.summary.final_token_kl`, 0 for the base
        model; with several seeds the mean, and ``kl_by_seed``) and what its β controller did
        (``controller``: seed -> :func:`dualloop.controller_facts.run_facts`)."""
        from dualloop import summary
        from dualloop.controller_facts import run_facts
        from dualloop.judges import read_decisions

        experiments = self.seeded(list(decisions_files))
        per_seed = {}
        for seed, files in decisions_files.items():
            decisions = [d for path in files for d in read_decisions(path)]
            systems = list(dict.fromkeys(s for d in decisions for s in (d.system_a, d.system_b)))
            score_files = (
                {s: experiments[seed].instruction_scores(s, prompt_set, runs[seed].get(s)) for s in systems}
                if prompt_set in CHECKED_PROMPT_SETS
                else {}
            )
            per_seed[seed] = (decisions, score_files)
        result = summary.seeds_summary(
            phase, self.profile, prompt_set, per_seed, method=self.evaluation["win_rate_method"]
        )
        seeds = result["seeds"]
        for system, entry in result["systems"].items():
            trained = [runs[seed].get(system) for seed in seeds]
            kls = [summary.final_token_kl(run.history_path) if run is not None else 0.0 for run in trained]
            if len(seeds) == 1:
                entry["run"] = trained[0].id if trained[0] is not None else None
                entry["kl"] = kls[0]
            else:
                entry["runs"] = [run.id if run is not None else None for run in trained]
                entry["kl_by_seed"] = kls
                entry["kl"] = None if None in kls else sum(kls) / len(kls)
            if trained[0] is not None:
                entry["controller"] = {str(seed): run_facts(run) for seed, run in zip(seeds, trained)}
        return summary.write_summary(self.results_dir, result)


BEST_STATIC_BETA_FILE = "best_static_beta.json"


def record_best_static_beta(experiment: Experiment, win_rates: Mapping[float, float]) -> float:
    """Phase 1's choice: the static β with the highest win rate against the base model, written to
    ``results/best_static_beta.json`` with the rates it was chosen from; returns it."""
    import json

    best = max(win_rates, key=lambda beta: (win_rates[beta], -beta))
    experiment.results_dir.mkdir(parents=True, exist_ok=True)
    (experiment.results_dir / BEST_STATIC_BETA_FILE).write_text(
        json.dumps({"best_static_beta": best, "win_rate_vs_base": {str(b): r for b, r in win_rates.items()}}, indent=1)
        + "\n"
    )
    return best


def best_static_beta(experiment: Experiment, default: float) -> float:
    """The β phase 1 chose for this output folder, or ``default`` (with a printed note) when phase 1
    has not run there."""
    import json

    path = experiment.results_dir / BEST_STATIC_BETA_FILE
    if not path.is_file():
        print(f"dualloop.experiment: no {path} (phase 1 has not run here); static β = {default}", flush=True)
        return default
    return float(json.loads(path.read_text())["best_static_beta"])


# An ablation that turns off one switch of DualLoop, and the counter in the full run's log that says
# how often the full controller used that switch (DualLoop.metrics).
SWITCH_COUNTERS = {("clip", False): "controller/clip_acted", ("deadband", 0.0): "controller/deadband_held"}


def train_ablation(
    experiment: Experiment,
    full_run,
    controller_kwargs: Mapping[str, Any],
    *,
    constants: Mapping[str, Any] | None = None,
):
    """The run of DualLoop-DPO with ``controller_kwargs`` (an ablation of phase 3: its switches) over the
    controller ``constants`` the full run trained with.

    ``full_run`` is ``experiment.train("dualloop", controller_kwargs=constants)``. An ablation that only removes the clip and/or
    the dead-band changes β_base only at steps where that switch acts; when the full run's log says
    it never acted (``controller/clip_acted`` / ``controller/deadband_held`` 0 at its last step),
    the ablation sets the same β at every step and trains the same model, so ``full_run`` is
    returned, with a printed line saying so. Every other ablation is trained.
    """
    counters = [SWITCH_COUNTERS.get(item) for item in controller_kwargs.items()]
    rows = full_run.history()
    last_step = max((row.get("step", 0) for row in rows), default=0)
    logged = [row for row in rows if "controller/clip_acted" in row]
    if counters and None not in counters and logged and logged[-1]["step"] == last_step:
        if all(logged[-1][counter] == 0 for counter in counters):
            print(
                f"dualloop.experiment: {dict(controller_kwargs)}: {' and '.join(map(str, counters))} 0 over the "
                f"{last_step} steps of the full DualLoop run {full_run.id}, so this ablation is that run "
                "(the same β at every step); not retrained",
                flush=True,
            )
            return full_run
    return experiment.train("dualloop", controller_kwargs={**(constants or {}), **controller_kwargs})
