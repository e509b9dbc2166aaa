"""Pairwise judges (dualloop.judges): blind seeded order, the API judge over real sockets against a
local chat-completions server, and the gold checker judge (the local model judge: test_local_judge.py)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_chat_server import FakeChatServer

from dualloop.judges import (
    CRITERIA,
    Decision,
    GoldCheckerJudge,
    JudgeAPIError,
    MissingAPIKeyError,
    OpenAICompatibleJudge,
    PairItem,
    ShownPair,
    criterion_question,
    parse_verdict,
    position_consistency,
    read_decisions,
    retry_wait,
    shown_order,
    write_decisions,
)
from dualloop.stats import win_rate_of

KEY_ENV = "DUALLOOP_TEST_JUDGE_KEY"
FAKE_KEY = "sk-fake-0123456789abcdefSECRET"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    return FAKE_KEY


def items(n, *, good_on_a=True):
    """Pairs whose better response (containing GOOD, which the fake server prefers) is system_a's."""
    return [
        PairItem(
            f"item-{i}",
            f"Question {i}?",
            f"GOOD answer {i}" if good_on_a else f"weak answer {i}",
            f"weak answer {i}" if good_on_a else f"GOOD answer {i}",
            "dualloop",
            "static",
        )
        for i in range(n)
    ]


def api_judge(server, tmp_path, **kwargs):
    kwargs.setdefault("cache_path", tmp_path / "cache.jsonl")
    kwargs.setdefault("backoff_base", 0.001)
    kwargs.setdefault("timeout", 5.0)
    kwargs.setdefault("api_key_env", KEY_ENV)
    return OpenAICompatibleJudge("general", base_url=server.base_url, model="judge-test", **kwargs)


def test_the_papers_criteria_by_name():
    assert criterion_question("helpful") == "Which response is more helpful and well-structured?"
    assert criterion_question("truthful") == "Which response is more truthful and less sycophantic?"
    assert criterion_question("safer") == "Which response is safer?"
    assert "general" in CRITERIA
    with pytest.raises(ValueError, match="criterion='kind'"):
        criterion_question("kind")


def test_position_coin_is_seeded_and_balanced():
    ids = [f"p{i}" for i in range(2000)]
    orders = [shown_order(0, i) for i in ids]
    assert orders == [shown_order(0, i) for i in ids]
    assert 0.46 < orders.count("ab") / len(ids) < 0.54  # binomial sd 0.011: well inside 3.5 sd
    assert orders != [shown_order(1, i) for i in ids]


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A", "A"),
        (" B\n", "B"),
        ("**A**", "A"),
        ("B.", "B"),
        ('"A"', "A"),
        ("(B)", "B"),
        ("Response A", None),
        ("a", None),
        ("A or B", None),
        ("", None),
        (None, None),
        ("AB", None),
    ],
)
def test_strict_verdict_parser(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize("env", [KEY_ENV, "UNSET_API_KEY"])  # a name the redaction rule does not know, one it does
def test_missing_key_fails_before_any_request(env, monkeypatch, tmp_path):
    monkeypatch.delenv(env, raising=False)
    with FakeChatServer(key=FAKE_KEY) as server:
        with pytest.raises(MissingAPIKeyError, match=f"environment variable {env} is not set"):
            api_judge(server, tmp_path, api_key_env=env)
        assert server.requests == 0


def test_gemini_preset_uses_googles_openai_compatible_endpoint(monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    with pytest.raises(MissingAPIKeyError, match="GEMINI_API_KEY is not set"):
        OpenAICompatibleJudge.gemini_flash("truthful")
    monkeypatch.setenv("GEMINI_API_KEY", FAKE_KEY)
    judge = OpenAICompatibleJudge.gemini_flash("truthful")
    assert (judge.model, judge.name, judge.criterion) == ("gemini-2.0-flash", "gemini-2.0-flash", "truthful")
    assert judge.base_url == "https://generativelanguage.googleapis.com/v1beta/openai"
    assert FAKE_KEY not in repr(judge)


def test_api_judge_maps_blind_verdicts_back_and_records_the_order(key, tmp_path):
    pairs = items(30)
    with FakeChatServer(key=key) as server:
        decisions = api_judge(server, tmp_path, seed=3).judge(pairs)
    assert [d.item_id for d in decisions] == [p.item_id for p in pairs]
    assert all(d.winner == "a" and d.winner_system == "dualloop" and d.outcome() == "win" for d in decisions)
    assert [d.order_shown for d in decisions] == [shown_order(3, p.item_id) for p in pairs]
    assert {d.verdict for d in decisions} == {"A", "B"}  # both orders occurred, so both letters did
    assert all(body["model"] == "judge-test" and body["temperature"] == 0.0 for body in server.bodies)
    with FakeChatServer(key=key) as server:
        swapped = api_judge(server, tmp_path, seed=3).judge(items(30, good_on_a=False))
    assert all(d.winner == "b" and d.winner_system == "static" and d.outcome() == "loss" for d in swapped)


def test_concurrency_bound_is_respected(key, tmp_path):
    with FakeChatServer(key=key, delay=0.05) as server:
        api_judge(server, tmp_path, max_concurrency=3).judge(items(24))
    assert server.requests == 24
    assert 1 < server.max_in_flight <= 3


def test_retries_on_429_500_slow_and_malformed(key, tmp_path):
    with FakeChatServer(key=key, slow_seconds=1.0) as server:
        server.script = ["429", "500", "slow", "malformed"]
        judge = api_judge(server, tmp_path, max_concurrency=1, max_retries=4, timeout=0.3)
        decisions = judge.judge(items(1))
    assert decisions[0].winner == "a"
    assert server.requests == 5  # four failures, then the answer


def test_backoff_doubles_is_capped_and_honours_retry_after(key, tmp_path):
    with FakeChatServer(key=key, retry_after="0.25") as server:
        server.script = ["500", "500", "429", "500", "500"]
        judge = api_judge(server, tmp_path, max_concurrency=1, max_retries=5, backoff_base=0.01, backoff_max=0.03)
        waits = []
        judge.sleep = waits.append
        assert judge.judge(items(1))[0].winner == "a"
    # attempt k waits 0.01 * 2**k, capped, jittered in its upper half; the 429's Retry-After 0.25 is capped
    for wait, ceiling in zip(waits, [0.01, 0.02, 0.03, 0.03, 0.03], strict=True):
        assert ceiling / 2 <= wait <= ceiling
    assert waits[2] == 0.03


def test_retries_exhausted_raise_without_caching(key, tmp_path):
    with FakeChatServer(key=key) as server:
        server.script = ["500"] * 3
        judge = api_judge(server, tmp_path, max_concurrency=1, max_retries=2)
        with pytest.raises(JudgeAPIError, match="gave up after 3 attempts .*HTTP 500"):
            judge.judge(items(1))
        assert server.requests == 3
        assert not (tmp_path / "cache.jsonl").exists()
        assert judge.judge(items(1))[0].winner == "a"  # the next run asks again
        assert server.requests == 4


def test_unparseable_reply_is_asked_again_then_recorded_not_guessed(key, tmp_path):
    with FakeChatServer(key=key) as server:
        server.script = ["garbage", "garbage", "garbage", "garbage"]
        judge = api_judge(server, tmp_path, max_concurrency=1, parse_retries=1)
        first, second = judge.judge(items(2))
    assert server.requests == 4
    for decision in (first, second):
        assert (decision.verdict, decision.winner, decision.outcome()) == ("unparseable", None, None)
        assert decision.raw == "Both responses are fine."


def test_a_reparsed_reply_counts_once(key, tmp_path):
    with FakeChatServer(key=key) as server:
        server.script = ["garbage"]
        decision = api_judge(server, tmp_path, max_concurrency=1, parse_retries=2).judge(items(1))[0]
    assert server.requests == 2 and decision.winner == "a"


def test_rerun_makes_zero_calls(key, tmp_path):
    with FakeChatServer(key=key) as server:
        first = api_judge(server, tmp_path).judge(items(10))
        server.reset_counts()
        again = api_judge(server, tmp_path).judge(items(10))
        assert server.requests == 0
        assert first == again
        # the other order of each pair is another question: exactly those 10 are asked
        api_judge(server, tmp_path, both_orders=True).judge(items(10))
        assert server.requests == 10
        server.reset_counts()
        OpenAICompatibleJudge(
            "helpful",
            base_url=server.base_url,
            api_key_env=KEY_ENV,
            model="judge-test",
            cache_path=tmp_path / "cache.jsonl",
        ).judge(items(10))
        assert server.requests == 10  # another criterion too


_KILLED_RUN = """
import json, sys
from dualloop.judges import OpenAICompatibleJudge, PairItem
items = [PairItem(**row) for row in json.load(open(sys.argv[3]))]
judge = OpenAICompatibleJudge("general", base_url=sys.argv[1], api_key_env="KEY_ENV", model="judge-test",
                              cache_path=sys.argv[2], max_concurrency=2, backoff_base=0.001)
judge.judge(items)
""".replace("KEY_ENV", KEY_ENV)


def test_killed_run_loses_no_decision_and_repeats_no_call(key, tmp_path):
    pairs = items(40)
    items_file = tmp_path / "items.json"
    items_file.write_text(json.dumps([p.__dict__ for p in pairs]))
    cache = tmp_path / "cache.jsonl"
    with FakeChatServer(key=key, delay=0.2) as server:  # 40 pairs, 2 at a time: about 4 s unkilled
        env = {**os.environ, KEY_ENV: FAKE_KEY, "PYTHONPATH": str(REPO)}
        process = subprocess.Popen(
            [sys.executable, "-c", _KILLED_RUN, server.base_url, str(cache), str(items_file)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120  # a guard against a hang, not a timing assertion
        while time.monotonic() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 6):
            assert process.poll() is None, f"the judging run ended before it was killed: {process.stderr.read()}"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        process.stderr.close()
        finished = [json.loads(line) for line in cache.read_text().splitlines() if line.endswith("}")]
        assert 6 <= len(finished) < 40, "the run was not killed midway"
        answered_before_kill = server.completed
        server.reset_counts()
        judge = api_judge(server, tmp_path)
        decisions = judge.judge(pairs)
        # every finished decision came from the cache; only the rest were asked, each once
        finished_keys = {row["key"] for row in finished}
        finished_prompts = {
            p.prompt for p in pairs if judge.cache_key(ShownPair(p, shown_order(0, p.item_id))) in finished_keys
        }
        asked = [
            re.search(r"\[User prompt\]\n(.*?)\n", body["messages"][1]["content"]).group(1) for body in server.bodies
        ]
        assert len(finished_prompts) == len(finished)
        assert not finished_prompts & set(asked)
        assert sorted(asked) == sorted({p.prompt for p in pairs} - finished_prompts)
        assert answered_before_kill >= len(finished)
        server.reset_counts()
        assert api_judge(server, tmp_path).judge(pairs) == decisions
        assert server.requests == 0
    assert all(d.winner == "a" for d in decisions)


def test_a_line_cut_off_by_a_kill_is_ignored_and_judged_again(key, tmp_path, capsys):
    cache = tmp_path / "cache.jsonl"
    with FakeChatServer(key=key) as server:
        api_judge(server, tmp_path).judge(items(3))
        lines = cache.read_text().splitlines()
        cache.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])  # the last write was cut off
        server.reset_counts()
        decisions = api_judge(server, tmp_path).judge(items(3))
        assert "line 3 was cut off" in capsys.readouterr().out
        assert server.requests == 1 and all(d.winner == "a" for d in decisions)
        server.reset_counts()
        api_judge(server, tmp_path).judge(items(3))
        assert server.requests == 0 and "cut off" not in capsys.readouterr().out  # the cut line was replaced


def test_the_key_is_never_written_or_shown(key, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with FakeChatServer(key=key) as server:
        judge = api_judge(server, out, both_orders=True)
        decisions = judge.judge(items(6))
        write_decisions(out / "decisions.jsonl", decisions)
        assert FAKE_KEY not in repr(judge) and FAKE_KEY not in str(vars(judge))
        # a server that rejects the key and echoes it back: the error must not carry it
        monkeypatch.setenv(KEY_ENV, "sk-wrong-key-should-not-leak")
        wrong = api_judge(server, out, cache_path=out / "other.jsonl")
        with pytest.raises(JudgeAPIError, match="HTTP 401") as error:
            wrong.judge(items(1))
        assert "sk-wrong-key-should-not-leak" not in str(error.value)
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"cache.jsonl", "decisions.jsonl"}
    for path in written:
        assert FAKE_KEY not in path.read_text()
        assert "sk-wrong-key-should-not-leak" not in path.read_text()


def test_both_orders_and_position_consistency(key, tmp_path):
    with FakeChatServer(key=key) as server:
        decisions = api_judge(server, tmp_path, both_orders=True).judge(items(5))
    assert [d.order_shown for d in decisions] == ["ab", "ba"] * 5
    assert position_consistency(decisions) == 1.0
    with pytest.raises(ValueError, match="both_orders=True"):
        position_consistency(decisions[::2])


def test_decisions_file_round_trip(tmp_path):
    decision = Decision(
        "i1",
        "p1",
        "dualloop",
        "static",
        "general",
        "gold-checker",
        "ba",
        "B",
        "a",
        "dualloop",
        details={"satisfied_A": [True], "satisfied_B": [False]},
    )
    path = write_decisions(tmp_path / "d.jsonl", [decision, decision])
    assert read_decisions(path) == [decision]  # a decision already in the file is not written again
    write_decisions(path, [decision])
    assert read_decisions(path) == [decision]
    path.write_text(path.read_text() + '{"item_id": "x"}\n')
    with pytest.raises(ValueError, match="record 2: not a decision record"):
        read_decisions(path)


def test_gold_checker_judge_counts_satisfied_instructions_and_ties():
    metadata = {"instruction_ids": ["change_case:english_lowercase", "punctuation:no_comma"], "kwargs": [{}, {}]}
    pairs = [
        PairItem(
            "win", "Describe tea.", "tea is warm and calm", "Tea is warm, calm", "dualloop", "base", metadata=metadata
        ),
        PairItem("loss", "Describe tea.", "Tea, warm", "tea is warm", "dualloop", "base", metadata=metadata),
        PairItem("tie", "Describe tea.", "Tea is warm", "tea is warm, calm", "dualloop", "base", metadata=metadata),
    ]
    decisions = GoldCheckerJudge(seed=1, both_orders=True).judge(pairs)
    assert [d.outcome() for d in decisions] == ["win", "win", "loss", "loss", "tie", "tie"]
    assert decisions[0].details == {"satisfied_A": [True, True], "satisfied_B": [False, False]}
    assert decisions[1].details == {"satisfied_A": [False, False], "satisfied_B": [True, True]}
    result = win_rate_of([d.outcome() for d in decisions])
    assert (result.wins, result.ties, result.n) == (3.0, 2, 6)
    # a composed prompt carries what the gold judge needs
    from dualloop.instructions import compose_prompts

    prompt = compose_prompts(1, seed=0, instruction_ids=["punctuation:no_comma"])[0]
    item = PairItem(
        "composed", prompt.prompt, "no commas here", "one, two", "dualloop", "base", metadata=prompt.checker_metadata()
    )
    assert GoldCheckerJudge().judge([item])[0].winner_system == "dualloop"
    with pytest.raises(ValueError, match="metadata has no 'instruction_ids'"):
        GoldCheckerJudge().judge([PairItem("x", "p", "a", "b")])


def test_duplicate_item_ids_are_refused():
    with pytest.raises(ValueError, match="'dup' appears twice"):
        GoldCheckerJudge().judge([PairItem("dup", "p", "a", "b"), PairItem("dup", "p", "c", "d")])


# ---------------------------------------------------------------- endpoints that fail or echo the key
# The key is a user's (the api_key fixture): under a name the redaction rule knows, and on no file afterwards.


def test_a_reply_echoing_the_key_is_stored_redacted(api_key, tmp_path):
    with FakeChatServer(key=api_key.value, echo_key=True) as server:
        server.script = ["echo", "echo"]
        judge = api_judge(server, tmp_path, api_key_env=api_key.env, max_concurrency=1)
        decisions = judge.judge(items(2))
        write_decisions(tmp_path / "decisions.jsonl", decisions)
    assert decisions[0].verdict == "unparseable" and "<secret>" in decisions[0].raw
    assert decisions[1].winner == "a" and judge.unparseable == 1


def test_an_error_body_echoing_the_key_is_redacted(api_key, tmp_path):
    with FakeChatServer(key=api_key.value, echo_key=True) as server:
        server.script = ["500"] * 2
        with pytest.raises(JudgeAPIError, match="gave up after 2 attempts") as failure:
            api_judge(server, tmp_path, api_key_env=api_key.env, max_retries=1).judge(items(1))
        server.script = ["malformed"]
        with pytest.raises(JudgeAPIError, match="malformed reply") as malformed:
            api_judge(server, tmp_path, api_key_env=api_key.env, max_retries=0).judge(items(1))
    assert api_key.value not in str(failure.value) and api_key.value not in str(malformed.value)
    assert "<secret>" in str(malformed.value)


def test_a_rejected_key_echoed_back_is_redacted(api_key, tmp_path, monkeypatch):
    monkeypatch.setenv(api_key.env, api_key.value + "-wrong")
    with (
        FakeChatServer(key=api_key.value, echo_key=True) as server,
        pytest.raises(JudgeAPIError, match="HTTP 401") as error,
    ):
        api_judge(server, tmp_path, api_key_env=api_key.env).judge(items(1))
    assert api_key.value not in str(error.value)


@pytest.mark.parametrize("failure", ["408", "reset", "500", "503", "429"])
def test_transient_failures_are_retried(failure, api_key, tmp_path):
    with FakeChatServer(key=api_key.value, echo_key=True) as server:
        server.script = [failure, failure]
        decisions = api_judge(server, tmp_path, api_key_env=api_key.env, max_concurrency=1, max_retries=3).judge(
            items(1)
        )
    assert decisions[0].winner == "a" and server.requests == 3


def test_retry_after_is_honoured_and_backoff_is_jittered(api_key, tmp_path):
    with FakeChatServer(key=api_key.value, retry_after="0.2") as server:
        server.script = ["503"]
        judge = api_judge(server, tmp_path, api_key_env=api_key.env, max_concurrency=1, backoff_max=5.0)
        waits = []
        judge.sleep = waits.append
        judge.judge(items(1))
    assert waits == [0.2]
    jittered = {retry_wait(3, 0.1, 60.0) for _ in range(20)}
    assert len(jittered) > 1 and all(0.4 <= wait <= 0.8 for wait in jittered)
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_wait(0, 0.1, 60.0, date) <= 30


def test_an_unparseable_verdict_is_asked_again_on_a_rerun(api_key, tmp_path):
    with FakeChatServer(key=api_key.value) as server:
        server.script = ["garbage", "garbage"]
        first = api_judge(server, tmp_path, api_key_env=api_key.env, max_concurrency=1).judge(items(1))
        rerun = api_judge(server, tmp_path, api_key_env=api_key.env, max_concurrency=1).judge(items(1))
    assert first[0].verdict == "unparseable" and rerun[0].winner == "a" and server.requests == 3


# ---------------------------------------------------------------- two processes judging one folder

_JUDGING = """
import sys
sys.path.insert(0, sys.argv[3])
from pathlib import Path
from test_judges import items
from dualloop.judges import OpenAICompatibleJudge, write_decisions
out = Path(sys.argv[2])
judge = OpenAICompatibleJudge("general", base_url=sys.argv[1], api_key_env=sys.argv[4], model="judge-test",
                              cache_path=out / "cache.jsonl", max_concurrency=2)
write_decisions(out / "decisions.jsonl", judge.judge(items(12)))
"""


def test_two_processes_judging_one_folder_give_each_decision_once(api_key, tmp_path):
    tests = str(Path(__file__).parent)
    with FakeChatServer(key=api_key.value, delay=0.02) as server:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _JUDGING, server.base_url, str(tmp_path), tests, api_key.env],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    decisions = read_decisions(tmp_path / "decisions.jsonl")
    assert sorted(d.item_id for d in decisions) == sorted(f"item-{k}" for k in range(12))
    assert server.requests == 12  # the second process waited for the cache and asked nothing
