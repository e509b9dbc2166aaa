"""Blind pairwise judges and their decisions (DualLoop-DPO, "Experiments": blind pairwise judging).

A judge sees a prompt and two responses in a seeded random order, says which is better under a
named criterion, and the verdict is mapped back to the two systems. One job per module:

- :mod:`~dualloop.judges.decisions`: the records (``PairItem``, ``Decision``, its schema), the
  decisions file (one writer, each decision once), position consistency and paired winners;
- :mod:`~dualloop.judges.pairwise`: the criteria, the judge's messages, the position coin, the
  strict verdict parser and the base class ``PairwiseJudge``;
- :mod:`~dualloop.judges.gold`: ``GoldCheckerJudge``, the verifiable-instruction checker (strict or loose);
- :mod:`~dualloop.judges.local`: ``LocalModelJudge``, a loaded causal LM's probabilities of "A" and "B";
- :mod:`~dualloop.judges.api`: ``OpenAICompatibleJudge``, any chat-completions endpoint, with retries
  (the HTTP request is :mod:`dualloop.chat_client`'s, shared with server generation);
- :mod:`~dualloop.judges.endpoints`: the entries of ``evaluation.judges`` (known names, endpoint mappings);
- :mod:`~dualloop.judges.cost`: the calls, tokens and US dollars of a judging, estimated before any call;
- :mod:`~dualloop.judges.cache`: the API judges' verdict cache.
"""

from dualloop.judges.api import (
    GEMINI_OPENAI_BASE_URL,
    OPENAI_BASE_URL,
    JudgeAPIError,
    MissingAPIKeyError,
    OpenAICompatibleJudge,
    check_api_key,
    retry_wait,
)
from dualloop.judges.cost import CostCapExceeded, CostEstimate, check_cost_cap
from dualloop.judges.decisions import (
    JUDGE_PROMPT_VERSION,
    Decision,
    PairItem,
    ShownPair,
    Verdict,
    decide,
    paired_winners,
    position_consistency,
    read_decisions,
    write_decisions,
)
from dualloop.judges.endpoints import API_JUDGES, JUDGES, EndpointJudge, judge_entries
from dualloop.judges.gold import GoldCheckerJudge
from dualloop.judges.local import LocalModelJudge
from dualloop.judges.pairwise import (
    CRITERIA,
    SYSTEM_PROMPT,
    PairwiseJudge,
    criterion_question,
    judge_messages,
    parse_verdict,
    shown_order,
)

__all__ = [
    "API_JUDGES",
    "CRITERIA",
    "GEMINI_OPENAI_BASE_URL",
    "JUDGES",
    "JUDGE_PROMPT_VERSION",
    "OPENAI_BASE_URL",
    "SYSTEM_PROMPT",
    "CostCapExceeded",
    "CostEstimate",
    "Decision",
    "EndpointJudge",
    "GoldCheckerJudge",
    "JudgeAPIError",
    "LocalModelJudge",
    "MissingAPIKeyError",
    "OpenAICompatibleJudge",
    "PairItem",
    "PairwiseJudge",
    "ShownPair",
    "Verdict",
    "check_api_key",
    "check_cost_cap",
    "criterion_question",
    "decide",
    "judge_entries",
    "judge_messages",
    "paired_winners",
    "parse_verdict",
    "position_consistency",
    "read_decisions",
    "retry_wait",
    "shown_order",
    "write_decisions",
]
