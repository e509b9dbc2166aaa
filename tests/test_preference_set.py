"""Tests for dualloop.preference_set: pairing, the labelled augmentations, the builder and its CLI,
and the shipped set's per-type signal."""

import json
from collections import Counter

import pytest

from dualloop import data, instructions, preference_set
from dualloop.preference_set import AUGMENTATIONS, TEACHABLE, augmented_pair, pair_by_score


def test_pair_by_score_pairs_best_with_worst_and_drops_ties():
    responses = ["a", "b", "c", "d", "e"]
    # ranked by score, ties in sampling order: b, a, d, c, e -> (b, e), (a, c); d is left over
    assert pair_by_score(responses, [0.5, 1.0, 0.0, 0.5, 0.0]) == [(1, 4), (0, 2)]
    assert pair_by_score(responses[:4], [0.0, 1.0, 0.25, 0.75]) == [(1, 0), (3, 2)]
    assert pair_by_score(responses[:3], [0.5, 0.5, 0.5]) == []
    assert pair_by_score(["same", "same ", "other"], [1.0, 0.0, 0.0]) == [(0, 2)]  # duplicate text counts once


FAILING = (
    "Sure, here is my answer. Tea needs hot water, a good leaf, and patience. Steep it for three minutes, then "
    "pour it into a warm cup and add milk if you like it that way, or drink it plain"
)


@pytest.mark.parametrize(
    "instruction_id, kwargs, expected",
    [
        ("change_case:english_lowercase", {}, FAILING.lower()),
        ("punctuation:no_comma", {}, FAILING.replace(", ", " ").replace(",", "")),
        (
            "length_constraints:number_words",
            {"num_words": 30, "relation": "less than"},
            "Sure, here is my answer. Tea needs hot water, a good leaf, and patience.",
        ),
        ("startend:end_checker", {"end_phrase": "Any other questions?"}, FAILING + " Any other questions?"),
    ],
)
def test_each_augmentation_rewrites_a_failing_sample_into_one_that_follows(instruction_id, kwargs, expected):
    prompt = instructions.VerifiablePrompt("train-0-1", "Describe tea.", (instruction_id,), (kwargs,), "train")
    assert not all(instructions.check(FAILING, prompt.instruction_ids, prompt.kwargs, prompt.prompt))
    chosen, rejected, name = augmented_pair(prompt, [FAILING])
    assert (chosen, rejected, name) == (expected, FAILING, AUGMENTATIONS[instruction_id][0])
    assert all(instructions.check(chosen, prompt.instruction_ids, prompt.kwargs, prompt.prompt))


def test_a_sample_the_transform_cannot_change_gives_no_augmented_pair():
    prompt = instructions.VerifiablePrompt(
        "train-0-2", "Describe tea.", ("change_case:english_lowercase",), ({},), "train"
    )
    assert augmented_pair(prompt, ["already lowercase, so nothing to rewrite"]) is None


def test_build_on_the_smoke_model_writes_pairs_heldout_and_provenance(tmp_path):
    code = preference_set.main(
        [
            "build",
            "--out",
            str(tmp_path),
            "--model",
            "smoke",
            "--train",
            "10",
            "--heldout",
            "5",
            "--samples",
            "3",
            "--max-new-tokens",
            "12",
            "--batch-size",
            "4",
            "--seed",
            "3",
            "--min-pairs-per-type",
            "2",
        ]
    )
    assert code == 0
    provenance = json.loads((tmp_path / data.PROVENANCE_FILE).read_text())
    assert provenance["model"] == "smoke|float32|seed=0" and provenance["seed"] == 3
    assert provenance["command"].startswith("python -m dualloop.preference_set build --out ")
    assert provenance["n_samples"] == 30 and provenance["instruction_ids"] == list(TEACHABLE)
    samples = {}
    for line in next((tmp_path / "generations").glob("*.jsonl")).read_text().splitlines():
        record = json.loads(line)
        samples[record["id"]] = record["responses"]
    pairs = data.load_verifiable_preferences(tmp_path / data.PAIRS_FILE)
    assert len(pairs) == provenance["n_pairs"] > 0
    for pair in pairs:
        ids, kwargs = pair.metadata["instruction_ids"], pair.metadata["kwargs"]
        assert len(ids) == 1 and ids[0] in TEACHABLE
        assert all(instructions.check(pair.chosen, ids, kwargs, pair.prompt_text))
        assert not all(instructions.check(pair.rejected, ids, kwargs, pair.prompt_text))
        assert pair.rejected in samples[pair.metadata["prompt_id"]]
        natural = pair.metadata["augmentation"] is None
        assert natural == (pair.chosen in samples[pair.metadata["prompt_id"]])
    per_type = provenance["per_type"]
    counts = Counter((p.metadata["instruction_ids"][0], p.metadata["augmentation"] is None) for p in pairs)
    for instruction_id, entry in per_type.items():
        assert entry["natural_pairs"] == counts[(instruction_id, True)]
        assert entry["augmented_pairs"] == counts[(instruction_id, False)]
        if entry["augmented_pairs"]:  # augmentation tops up only a type short of natural pairs
            assert entry["natural_pairs"] + entry["augmented_pairs"] <= 2
    heldout = data.load_verifiable_heldout(tmp_path / data.HELDOUT_FILE)
    assert len(heldout) == 5 and not {p.base_task for p in heldout} & {p.metadata["base_task"] for p in pairs}
    # the same seed rebuilds the same set from its cached samples
    again = tmp_path / "again"
    again.mkdir()
    (again / "generations").symlink_to(tmp_path / "generations")
    preference_set.main(
        [
            "build",
            "--out",
            str(again),
            "--model",
            "smoke",
            "--train",
            "10",
            "--heldout",
            "5",
            "--samples",
            "3",
            "--max-new-tokens",
            "12",
            "--batch-size",
            "4",
            "--seed",
            "3",
            "--min-pairs-per-type",
            "2",
        ]
    )
    assert (again / data.PAIRS_FILE).read_text() == (tmp_path / data.PAIRS_FILE).read_text()


def test_build_refuses_an_instruction_type_without_a_checker(tmp_path):
    with pytest.raises(ValueError, match="instruction_ids: 'ratio:stop_words' has no composable checker"):
        preference_set.build_verifiable_preferences(
            None, None, "x", out_dir=tmp_path, instruction_ids=["ratio:stop_words"]
        )


def test_the_shipped_set_has_signal_for_every_type_it_trains():
    provenance = json.loads((data.SHIPPED_DIR / data.PROVENANCE_FILE).read_text())
    pairs = data.load_verifiable_preferences()
    by_type = Counter(pair.metadata["instruction_ids"][0] for pair in pairs)
    assert set(by_type) == set(TEACHABLE)
    assert all(count >= 40 for count in by_type.values()), by_type
    for instruction_id, entry in provenance["per_type"].items():
        assert entry["natural_pairs"] + entry["augmented_pairs"] == by_type[instruction_id]
    heldout = data.load_verifiable_heldout()
    assert len({p.prompt for p in heldout}) == len(heldout) >= 200
    assert {p.instruction_ids[0] for p in heldout} == set(TEACHABLE)


@pytest.mark.slow
def test_the_builder_regenerates_the_shipped_samples_of_its_first_batch(tmp_path):
    """The first 16 training prompts sampled again from the seed give the shipped samples exactly."""
    from dualloop.generation import GenerationSettings, generate_responses, load_generator
    from dualloop.models import ModelSettings

    provenance = json.loads((data.SHIPPED_DIR / data.PROVENANCE_FILE).read_text())
    settings = GenerationSettings(**provenance["generation"])
    model, tokenizer, identity = load_generator(
        ModelSettings(name_or_path="smollm2-135m-instruct", device="cpu", lora_r=0)
    )
    assert identity == provenance["model"]
    prompts = instructions.compose_prompts(
        settings.batch_size,
        split="train",
        seed=provenance["seed"],
        max_instructions=1,
        instruction_ids=provenance["instruction_ids"],
    )
    fresh = generate_responses(
        model,
        tokenizer,
        {p.prompt_id: p.prompt for p in prompts},
        settings,
        out_dir=tmp_path,
        identity=identity,
        prompt_set=f"verifiable-train-seed{provenance['seed']}",
    )
    shipped = {}
    for line in next((data.SHIPPED_DIR / "generations").glob("*.jsonl")).read_text().splitlines():
        record = json.loads(line)
        shipped[record["id"]] = record["responses"]
    assert all(fresh[p.prompt_id] == shipped[p.prompt_id] for p in prompts)
