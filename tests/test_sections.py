"""The data and evaluation sections: every value checked once, where its field is defined."""

from __future__ import annotations

import dataclasses

import pytest

from dualloop.experiment.sections import DataSettings, EvaluationSettings
from dualloop.models import dataclass_from_dict


@pytest.mark.parametrize(
    "values, message",
    [
        ({"n_pairs": True}, "data.n_pairs=True must be an integer >= 1 or null"),  # YAML `yes`
        ({"n_pairs": 0}, "data.n_pairs=0 must be an integer >= 1 or null"),
        ({"label_noise": True}, "data.label_noise=True must be a number in [0, 1]"),
        ({"label_noise": 1.5}, "data.label_noise=1.5 must be a number in [0, 1]"),
        ({"fraction": 0}, "data.fraction=0 must be a number in (0, 1], or null"),
        ({"eval_pairs": -1}, "data.eval_pairs=-1 must be an integer >= 0"),
        ({"from_hub": "no"}, "data: from_hub='no' must be true or false"),
        ({"train": "hh-rlhf"}, "data: train='hh-rlhf' is not one of"),
        ({"train": "preferences"}, "data: train='preferences' needs data.path"),
        ({"augmented": False, "train": "hh"}, "data: augmented=false selects verifiable pairs"),
        ({"instruction_ids": []}, "data: instruction_ids is empty"),
        ({"pth": "x.jsonl"}, "data: unknown key 'pth' (did you mean 'path'?)"),
        ({"revision": "v1.0"}, "data: revision='v1.0' pins a hub data set, but this section reads none"),
        ({"revision": "v1.0", "from_hub": True}, "reads none (train='verifiable', from_hub=True, path=None)"),
        (
            {"revision": "v1.0", "from_hub": True, "train": "hh", "path": "hh.jsonl"},
            "reads none (train='hh', from_hub=True, path='hh.jsonl')",
        ),
        ({"revision": " v1 ", "from_hub": True, "train": "hh"}, "data: revision=' v1 ' must be a commit hash or a tag"),
    ],
)
def test_a_bad_data_value_is_one_error_naming_key_and_value(values, message):
    with pytest.raises((ValueError, TypeError)) as error:
        dataclass_from_dict(DataSettings, values, "data")
    assert message in str(error.value)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"n_prompts": 0}, "evaluation.n_prompts=0 must be an integer >= 1"),
        ({"first_prompt": True}, "evaluation.first_prompt=True must be an integer >= 0"),
        ({"win_rate_method": "walds"}, "evaluation: win_rate_method='walds' is not one of wald, wilson, bootstrap"),
        ({"both_orders": 1}, "evaluation: both_orders=1 must be true or false"),
        ({"max_cost_usd": -1}, "evaluation.max_cost_usd=-1 must be a number >= 0"),
        ({"prompt_paths": {"custm": "p.jsonl"}}, "unknown prompt set 'custm' (did you mean 'custom'?)"),
    ],
)
def test_a_bad_evaluation_value_is_one_error_naming_key_and_value(values, message):
    with pytest.raises((ValueError, TypeError)) as error:
        dataclass_from_dict(EvaluationSettings, values, "evaluation")
    assert message in str(error.value)


def test_every_field_has_a_help_text_and_the_defaults_are_valid():
    for cls in (DataSettings, EvaluationSettings):
        assert all(f.metadata.get("help") for f in dataclasses.fields(cls)), cls
        cls()  # the defaults pass their own checks
