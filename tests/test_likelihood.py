"""Answer pairs scored by the model's own length-normalized log-likelihood (dualloop.likelihood),
on the smoke model: against a hand computation from the logits, batched against one at a time,
the cache, bad data files, and the phase summary and Table 2 built from the result files."""

import json

import pytest
import torch

from dualloop import likelihood, report
from dualloop.data import DataError
from dualloop.experiment import Experiment
from dualloop.models import smoke_model
from dualloop.offline_sets import (
    AnswerPair,
    load_rho_deception_qa_pairs,
    load_rho_sycophancy_pairs,
)

ITEMS = [
    AnswerPair("short", "Is the sky blue?", "Yes.", "No, it is green and always has been."),
    AnswerPair(
        "long",
        "Name the capital of France, and say in one sentence why it is the capital.",
        "Paris, the seat of the government since the Middle Ages.",
        "Lyon.",
    ),
]


@pytest.fixture(scope="module")
def smoke():
    return smoke_model(seed=0)


def by_hand(model, tokenizer, item: AnswerPair, answer: str) -> float:
    """log_softmax of the model's logits over prompt + answer, gathered at the answer tokens only,
    averaged: one unpadded sequence, no cache."""
    prompt_ids, answer_ids = likelihood.encode(tokenizer, item.prompt, answer)
    ids = torch.tensor([prompt_ids + answer_ids])
    with torch.no_grad():
        logprobs = model(input_ids=ids).logits[0].log_softmax(dim=-1)
    positions = torch.arange(len(prompt_ids) - 1, len(prompt_ids) + len(answer_ids) - 1)
    return float(logprobs[positions, torch.tensor(answer_ids)].mean())


def scores(model, tokenizer, items):
    encoded = [
        (likelihood.encode(tokenizer, i.prompt, i.preferred), likelihood.encode(tokenizer, i.prompt, i.other))
        for i in items
    ]
    return likelihood.score_batch(
        model, [p[0] for p, _ in encoded], [[p[1], o[1]] for p, o in encoded], tokenizer.pad_token_id
    )


def test_the_mean_logprob_of_the_answer_tokens_equals_a_hand_computation_from_the_logits(smoke):
    model, tokenizer = smoke
    prompts = [likelihood.encode(tokenizer, i.prompt, i.preferred)[0] for i in ITEMS]
    assert len(prompts[0]) != len(prompts[1])  # the batch pads both the prompts and the answers
    batched = scores(model, tokenizer, ITEMS)
    for item, (preferred, other) in zip(ITEMS, batched):
        assert preferred == pytest.approx(by_hand(model, tokenizer, item, item.preferred), abs=1e-5)
        assert other == pytest.approx(by_hand(model, tokenizer, item, item.other), abs=1e-5)


def test_batching_gives_the_numbers_of_one_item_at_a_time(smoke):
    model, tokenizer = smoke
    batched = scores(model, tokenizer, ITEMS)
    alone = [scores(model, tokenizer, [item])[0] for item in ITEMS]
    assert batched == [pytest.approx(row, abs=1e-5) for row in alone]


def test_scores_are_cached_and_a_rerun_calls_no_model(tmp_path, smoke):
    model, tokenizer = smoke
    calls = {"load": 0, "forward": 0}
    model.register_forward_hook(lambda *_: calls.__setitem__("forward", calls["forward"] + 1))

    def load():
        calls["load"] += 1
        return model, tokenizer

    cache_file = tmp_path / "registry" / "likelihood" / "set.jsonl"
    first = likelihood.score_pairs(ITEMS[:1], cache_file=cache_file, load_model=load, batch_size=1)
    assert calls == {"load": 1, "forward": 2}  # the prompt pass and the answers' pass
    both = likelihood.score_pairs(ITEMS, cache_file=cache_file, load_model=load, batch_size=1)
    assert calls == {"load": 2, "forward": 4}  # only the missing item
    again = likelihood.score_pairs(ITEMS, cache_file=cache_file, load_model=load, batch_size=2)
    assert calls == {"load": 2, "forward": 4} and again == both and both["short"] == first["short"]
    changed = [AnswerPair("short", "Is the sky blue?", "Yes!", "No.")]
    with pytest.raises(ValueError, match="line 1: item 'short' has different texts"):
        likelihood.score_pairs(changed, cache_file=cache_file, load_model=load)


def test_score_system_loads_no_model_when_everything_is_cached(tmp_path, monkeypatch):
    import dualloop.generation

    experiment = Experiment.from_parameters(
        profile="smoke",
        output_dir=tmp_path,
        seed=0,
        model={"name_or_path": "smoke"},
        training={},
        data={},
        generation={},
        evaluation={},
    )
    loads = []
    real = dualloop.generation.load_generator
    monkeypatch.setattr(dualloop.generation, "load_generator", lambda *a: loads.append(a) or real(*a))
    path = likelihood.score_system(experiment, "deception-qa-rho", "base")
    assert len(loads) == 1 and path == tmp_path / "results" / "likelihood" / "deception-qa-rho__base.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 26 and all(r["correct"] == (r["logprob_preferred"] > r["logprob_other"]) for r in rows)
    assert likelihood.score_system(experiment, "deception-qa-rho", "base").read_text() == path.read_text()
    assert len(loads) == 1
    assert len(list((tmp_path / "registry" / "likelihood").glob("deception-qa-rho-*.jsonl"))) == 1


@pytest.mark.parametrize(
    "loader,row,field",
    [
        (load_rho_sycophancy_pairs, {"text": "Q?", "truthful_answer": "(A)"}, "sycophantic_answer"),
        (lambda path: load_rho_deception_qa_pairs([path]), {"id": "x", "prompt": "Q?", "positive": "yes"}, "negative"),
    ],
)
def test_a_row_without_a_field_is_an_error_naming_the_file_the_row_and_the_field(tmp_path, loader, row, field):
    good = {
        "id": "ok",
        "text": "Q?",
        "truthful_answer": "(A)",
        "sycophantic_answer": "(B)",
        "prompt": "Q?",
        "positive": "yes",
        "negative": "no",
    }
    path = tmp_path / "items.json"
    path.write_text(json.dumps([good, row]))
    with pytest.raises(DataError) as raised:
        loader(path)
    assert str(path) in str(raised.value) and "row 2" in str(raised.value) and f"'{field}'" in str(raised.value)


def write_results(path, correct):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            json.dumps(
                {
                    "item_id": f"i{n}",
                    "logprob_preferred": -1.0,
                    "logprob_other": -2.0,
                    "tokens_preferred": 1,
                    "tokens_other": 1,
                    "correct": c,
                }
            )
            + "\n"
            for n, c in enumerate(correct)
        )
    )
    return path


def test_the_phase_summary_and_table_2_hold_the_likelihood_measures(tmp_path):
    from dualloop.summary import read_summary

    experiment = Experiment.from_parameters(
        profile="smoke",
        output_dir=tmp_path,
        seed=0,
        model={"name_or_path": "smoke"},
        training={},
        data={},
        generation={},
        evaluation={},
    )
    files = {
        "dualloop": write_results(tmp_path / "dl.jsonl", [True, True, True, False]),
        "base": write_results(tmp_path / "b.jsonl", [False, True, False, False]),
    }
    path = likelihood.write_phase_summary(experiment, "04_generalization", {}, {"deception-qa-rho": files}, runs={})
    written = read_summary(path)
    assert written["likelihood"]["deception-qa-rho"]["dualloop"]["accuracy"] == 0.75
    assert written["likelihood"]["deception-qa-rho"]["base"]["n"] == 4
    (row,) = written["comparisons"]
    assert (row["a"], row["b"], row["judge"], row["n"], row["accuracy_diff"]) == (
        "dualloop",
        "base",
        "likelihood",
        4,
        0.5,
    )
    assert row["accuracy_diff_ci"][0] < 0 and row["accuracy_diff_ci"][1] == 0.5  # 2 discordant items of 4
    table = report.generalization_table(written, unscored=["mt-bench"]).to_markdown()
    assert "| deception-qa-rho | likelihood accuracy | 75.0% [" in table and "Δ +50.0% [" in table
    assert "| mt-bench | no offline judge (sample answers) | - | - | - |" in table


def test_table_2_of_sets_judged_pairwise_only_keeps_one_win_rate_per_opponent(tmp_path):
    from dualloop.judges import Decision, write_decisions
    from dualloop.summary import read_summary

    experiment = Experiment.from_parameters(
        profile="paper",
        output_dir=tmp_path,
        seed=0,
        model={"name_or_path": "smoke"},
        training={},
        data={},
        generation={},
        evaluation={},
    )
    files = {}
    for prompt_set in ("helpsteer2", "hh"):
        path = tmp_path / f"{prompt_set}.jsonl"
        write_decisions(
            path,
            [
                Decision(
                    f"{prompt_set}:{n}",
                    str(n),
                    "dualloop",
                    "base",
                    "helpful",
                    "gpt-4o-mini",
                    "ab",
                    "A",
                    winner,
                    {"a": "dualloop", "b": "base"}.get(winner, winner),
                )
                for n, winner in enumerate(["a", "a", "b", "tie"])
            ],
        )
        files[prompt_set] = [path]
    written = read_summary(likelihood.write_phase_summary(experiment, "04_generalization", files, {}, runs={}))
    assert [(row["prompt_set"], row["wins"], row["ties"]) for row in written["comparisons"]] == [
        ("helpsteer2", 2, 1),
        ("hh", 2, 1),
    ]
    table = report.generalization_table(written)
    assert table.columns == ["Dataset", "Measure", "vs. Base"]
    assert table.rows[0] == ["helpsteer2", "win rate (gpt-4o-mini)", "win 62.5% [15.1, 100.0]"]
