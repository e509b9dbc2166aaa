"""An experiment's evaluation: prompt sets, answers (local or from a server), judges, the cost cap,
instruction scores and the phase summary."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dualloop import data as datasets
from dualloop import judges, summary
from dualloop.controller_facts import run_facts
from dualloop.data import PromptRecord, data_fingerprint
from dualloop.experiment.sections import CUSTOM_PROMPT_SETS, check_choice
from dualloop.experiment.settings import (
    BASE,
    CHECKED_PROMPT_SETS,
    PROMPT_SET_CRITERIA,
    PROMPT_SETS,
    ExperimentSettings,
)
from dualloop.generation import local_responses
from dualloop.instructions import check, check_loose, load_ifbench
from dualloop.judges import (
    LocalModelJudge,
    OpenAICompatibleJudge,
    PairItem,
    check_cost_cap,
    read_decisions,
    write_decisions,
)
from dualloop.judges.endpoints import judge_entries
from dualloop.models import load_policy
from dualloop.offline_sets import OFFLINE_PROMPT_SETS
from dualloop.serving import generation_endpoint, server_responses

__all__ = ["Evaluation"]


def _evaluation_prompt(prompt_set: str, number: int, record) -> tuple[str, dict[str, Any]]:
    """(prompt id, {"messages", "metadata"}) of a loaded evaluation record: a ``PromptRecord`` or,
    for preference data, the prompt of a ``PreferencePair``."""
    if isinstance(record, PromptRecord):
        return record.prompt_id, {"messages": [dict(m) for m in record.messages], "metadata": dict(record.metadata)}
    prompt_id = record.metadata.get("prompt_id") or f"{prompt_set}-{number}"
    return str(prompt_id), {"messages": [dict(m) for m in record.prompt], "metadata": dict(record.metadata)}


class Evaluation(ExperimentSettings):
    """What a phase evaluates with: ``prompts``, ``responses``, ``judges``, ``compare``, ``instruction_scores``
    and ``summarize``/``summarize_seeds``."""

    def prompts(self, prompt_set: str) -> dict[str, dict[str, Any]]:
        """``n_prompts`` held-out prompts of ``prompt_set``: id → {"messages", "metadata"}."""
        check_choice("evaluation", "prompt_set", prompt_set, PROMPT_SETS)
        if prompt_set in ("verifiable-heldout", "ifbench"):
            source = (
                load_ifbench()
                if prompt_set == "ifbench"
                else [
                    p for p in datasets.load_verifiable_heldout() if self.data.within_instruction_ids(p.instruction_ids)
                ]
            )
            records = {
                p.prompt_id: {"messages": [{"role": "user", "content": p.prompt}], "metadata": p.checker_metadata()}
                for p in source
            }
        elif prompt_set in CUSTOM_PROMPT_SETS:
            path = self.evaluation.prompt_paths.get(prompt_set)
            if path is None:
                raise ValueError(
                    f"evaluation.prompt_paths.{prompt_set} is missing: prompt set {prompt_set!r} reads your own "
                    "prompts from the local .jsonl/.json/.parquet file named there"
                )
            loaded = datasets.load_prompt_file(path, require_instructions=prompt_set == "custom-instructions")
            records = dict(_evaluation_prompt(prompt_set, number, record) for number, record in enumerate(loaded))
        elif prompt_set in OFFLINE_PROMPT_SETS:
            records = dict(
                _evaluation_prompt(prompt_set, number, record)
                for number, record in enumerate(OFFLINE_PROMPT_SETS[prompt_set]())
            )
        else:
            path = self.evaluation.prompt_paths.get(prompt_set)
            from_hub = self.data.from_hub
            # the held-out split of the training set's own repository, at the revision training read
            revision = self.data.revision if prompt_set == self.data.train else None
            loaded = {
                "ultrafeedback": lambda: datasets.load_ultrafeedback(
                    path, split="test_prefs", from_hub=from_hub, revision=revision
                ),
                "hh": lambda: datasets.load_hh(
                    path, split="test", from_hub=from_hub, revision=revision, on_error="skip"
                ),
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
        first, count = self.evaluation.first_prompt, self.evaluation.n_prompts
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
        prompt_set = self._cached_set_name(prompt_set)
        if self.generation.backend == "server":
            served = run.id if run is not None else self.model.name_or_path
            endpoint = generation_endpoint(self.generation)
            generated = server_responses(
                endpoint,
                served,
                prompts,
                self.generation,
                out_dir=out_dir,
                prompt_set=prompt_set,
                server_identity=f"dtype={self.model.dtype}",
            )
        else:
            adapter_dir = run.adapter_dir if run is not None else None
            generated = local_responses(
                self.model, adapter_dir, prompts, self.generation, out_dir=out_dir, prompt_set=prompt_set
            )
        return {prompt_id: samples[0] for prompt_id, samples in generated.items()}

    def _cached_set_name(self, prompt_set: str) -> str:
        """The name answers to ``prompt_set`` are cached under: your own prompt file's name carries its
        content hash, so an edited file, or another file with the same ids, is answered anew."""
        if prompt_set not in CUSTOM_PROMPT_SETS:
            return prompt_set
        return f"{prompt_set}-{data_fingerprint(self.evaluation.prompt_paths[prompt_set])[:12]}"

    def system_responses(self, systems: Sequence[str], prompt_set: str, runs: Mapping[str, Any]) -> dict[str, dict]:
        """system → prompt id → greedy response, for each of ``systems`` (``runs`` maps trained names to runs)."""
        return {system: self.responses(system, prompt_set, runs.get(system)) for system in systems}

    def local_judge(self, criterion: str):
        """The local model judge of ``evaluation.judges`` for ``criterion`` (re-judging flips need it)."""
        judge = next((j for j in self.judges(criterion) if isinstance(j, LocalModelJudge)), None)
        if judge is None:
            raise ValueError("re-judging flips need the local model judge: add 'local' to evaluation.judges")
        return judge

    def judges(self, criterion: str, *, both_orders: bool | None = None) -> list:
        """The judges the evaluation section names, for ``criterion``; the gold checker judges only
        verifiable instructions and is left out for the other criteria. An API judge (a preset or an
        endpoint mapping) caches its verdicts in ``registry/judge-cache/<name>.jsonl``. ``both_orders``
        overrides the evaluation section's."""
        both = self.evaluation.both_orders if both_orders is None else both_orders
        made: list[judges.PairwiseJudge] = []
        for entry in judge_entries(self.evaluation.judges):
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
                settings = (
                    self.model
                    if self.evaluation.local_judge_model is None
                    else dataclasses.replace(self.model, name_or_path=self.evaluation.local_judge_model)
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
                f"evaluation.judges {self.evaluation.judges} has no judge for criterion {criterion!r}: "
                "the gold checker judges only verifiable instructions; add 'local' or an API judge"
            )
        return made

    def pair_items(self, system_a: str, system_b: str, prompt_set: str, *, runs: Mapping[str, Any]) -> list:
        """The judge's items: each prompt with the two systems' responses (``runs``: system → Run)."""
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
        both = self.evaluation.both_orders if both_orders is None else both_orders
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
        check_cost_cap(estimates, self.evaluation.max_cost_usd)
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
            phase, self.profile, prompt_set, per_seed, method=self.evaluation.win_rate_method
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
                known = [kl for kl in kls if kl is not None]
                entry["kl"] = sum(known) / len(known) if len(known) == len(kls) else None
            if trained[0] is not None:
                entry["controller"] = {str(seed): run_facts(run) for seed, run in zip(seeds, trained)}
        return summary.write_summary(self.results_dir, result)
