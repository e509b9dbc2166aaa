"""Hostile inputs, as a new user (or a misbehaving endpoint, or a colleague on the same box) gives them:
bad parameters and CLI values, data files written by other tools, judge endpoints that fail or echo the
key, and two processes writing one folder. After every case no file written holds the API key."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fake_chat_server import FakeChatServer

from dualloop.__main__ import main
from dualloop.config import ParamsError, check_profile_name, check_values, parse_override, parse_overrides
from dualloop.data import DataError, load_verifiable_preferences
from dualloop.judges import (
    Decision,
    JudgeAPIError,
    MissingAPIKeyError,
    OpenAICompatibleJudge,
    PairItem,
    read_decisions,
    retry_wait,
    write_decisions,
)
from dualloop.locking import LockHeld, file_lock, lock_path
from dualloop.redaction import redact

KEY_ENV = "HOSTILE_API_KEY"
KEY = "sk-hostile-0123456789abcdef"
ROW = {
    "prompt": "Write in lowercase.",
    "chosen": "ok",
    "rejected": "OK",
    "score_gap": 1,
    "instruction_ids": ["change_case:english_lowercase"],
    "kwargs": [{}],
}


@pytest.fixture(autouse=True)
def no_key_on_disk(tmp_path, monkeypatch):
    """Every case runs with the key in the environment and ends with no file under tmp_path holding it."""
    monkeypatch.setenv(KEY_ENV, KEY)
    monkeypatch.chdir(tmp_path)
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"{path} holds the API key"


def items(n):
    return [
        PairItem(f"i{k}", f"prompt {k}", f"GOOD answer {k}", f"bad answer {k}", "dualloop", "static") for k in range(n)
    ]


def api_judge(server, tmp_path, **kwargs):
    kwargs.setdefault("cache_path", tmp_path / "cache.jsonl")
    kwargs.setdefault("backoff_base", 0.001)
    return OpenAICompatibleJudge("general", base_url=server.base_url, api_key_env=KEY_ENV, model="judge-test", **kwargs)


# ---------------------------------------------------------------- parameters


def test_set_at_any_depth_and_mapping_values_merge():
    assert parse_override("training.controller_kwargs.lam=2.5") == ("training", {"controller_kwargs": {"lam": 2.5}})
    merged = parse_overrides(
        ["training.controller_kwargs.lam=2.5", "training.controller_kwargs.eta=0.02", "training.beta=0.2"]
    )
    assert merged == {"training": {"controller_kwargs": {"lam": 2.5, "eta": 0.02}, "beta": 0.2}}


@pytest.mark.parametrize("text", ["training..lam=1", "=3", "training.beta", "training.beta=[1,"])
def test_malformed_set_is_refused_by_name(text):
    with pytest.raises(ParamsError, match="--set"):
        parse_override(text)


@pytest.mark.parametrize(
    ("parameters", "named"),
    [
        ({"training": {"learning_rate": "abc"}}, "training.learning_rate='abc'"),
        ({"training": {"controller_kwargs": {"lam": "four"}}}, "training.controller_kwargs.lam='four'"),
        ({"training": {"beta": float("nan")}}, "training.beta=nan must be a finite number"),
        ({"training": {"learning_rate": -1e-4}}, "training.learning_rate=-0.0001 must be a finite number > 0"),
        ({"training": {"max_steps": 0}}, "training.max_steps=0 must be an integer >= 1"),
        ({"training": {"max_steps": 2.5}}, "training.max_steps=2.5 must be an integer >= 1"),
        ({"evaluation": {"n_prompts": -195}}, "evaluation.n_prompts=-195 must be an integer >= 1"),
        ({"training": {"controller_kwargs": {"kl_target": float("inf")}}}, "training.controller_kwargs.kl_target=inf"),
        ({"training": {"controller_kwargs": {"lamb": 2}}}, "training.controller_kwargs.lamb.*did you mean 'lam'"),
        ({"training": {"max_stepz": 3}}, "training.max_stepz: unknown key.*did you mean 'max_steps'"),
        ({"training": {"gradient_checkpointing": "yes"}}, "training.gradient_checkpointing='yes' must be bool"),
    ],
)
def test_bad_values_are_refused_naming_key_path_and_value(parameters, named):
    with pytest.raises(ParamsError, match=named):
        check_values(parameters, "test")


def test_a_judge_without_its_api_key_is_refused_before_work(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ParamsError, match="gpt-4o-mini.*OPENAI_API_KEY"):
        check_values({"evaluation": {"judges": ["gold", "gpt-4o-mini"]}}, "test")


@pytest.mark.parametrize("profile", ["../profiles/smoke", "/tmp/smoke", "smoke.yaml", ""])
def test_profiles_are_names_not_paths(profile):
    with pytest.raises(ParamsError, match="not a path"):
        check_profile_name(profile)


# ---------------------------------------------------------------- command line


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["train", "--steps", "0"], "--steps 0: must be an integer >= 1"),
        (["train", "--steps", "-3"], "--steps -3"),
        (["train", "--set", "training.learning_rate=abc"], "training.learning_rate='abc'"),
        (["train", "--set", "training.controller_kwargs.lam=four"], "training.controller_kwargs.lam='four'"),
        (["train", "--set", "training.beta=.nan"], "training.beta=nan"),
        (["train", "--profile", "../params/profiles/smoke"], "not a path"),
    ],
)
def test_cli_refuses_bad_values_in_one_line_with_exit_2(argv, named, tmp_path, capsys):
    if "--profile" not in argv:
        argv = [*argv, "--profile", "smoke"]
    code = main([argv[0], "--method", "dualloop", "--out", str(tmp_path / "out"), *argv[1:]])
    error = capsys.readouterr().err
    assert code == 2 and len(error.strip().splitlines()) == 1 and "Traceback" not in error
    assert named in error
    assert not (tmp_path / "out").exists()  # nothing trained or written


def test_cli_judge_without_api_key_refuses_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    code = main(
        [
            "judge",
            "--profile",
            "smoke",
            "--a",
            "dualloop",
            "--b",
            "base",
            "--prompts",
            "verifiable-heldout",
            "--out",
            str(tmp_path / "out"),
            "--set",
            "evaluation.judges=[gold, gemini-2.0-flash]",
        ]
    )
    assert code == 2 and "GEMINI_API_KEY" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_reproduce_finds_a_misspelt_sub_key_before_the_first_phase(tmp_path, capsys):
    code = main(
        [
            "reproduce",
            "--profile",
            "smoke",
            "--phases",
            "0,2",
            "--out",
            str(tmp_path / "out"),
            "--set",
            "training.max_stepz=3",
        ]
    )
    error = capsys.readouterr().err
    assert code == 2 and "phase 02" in error and "max_stepz" in error and "max_steps" in error
    assert not (tmp_path / "out").exists()  # phase 00 never ran


def test_reproduce_finds_more_prompts_than_the_set_holds_before_the_first_phase(tmp_path, capsys):
    argv = ["reproduce", "--profile", "smoke", "--phases", "0,2", "--out", str(tmp_path / "out")]
    code = main([*argv, "--set", "evaluation.n_prompts=100000"])
    error = capsys.readouterr().err
    assert code == 2 and "phase 02" in error and "n_prompts=100000" in error and "holds" in error
    assert not (tmp_path / "out").exists()  # phase 00 never ran, nothing was trained


def test_cli_errors_are_redacted(tmp_path, capsys):
    code = main(
        [
            "train",
            "--profile",
            "smoke",
            "--method",
            "dualloop",
            "--out",
            str(tmp_path / "out"),
            "--set",
            f"training.controller_kwargs.lam={KEY}",
        ]
    )
    error = capsys.readouterr().err
    assert code == 2 and KEY not in error and "<secret>" in error


# ---------------------------------------------------------------- data files


def test_an_empty_data_file_is_named(tmp_path):
    (tmp_path / "pairs.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"row 1 of .*pairs\.jsonl: '<file>' is empty"):
        load_verifiable_preferences(tmp_path / "pairs.jsonl")


def test_non_utf8_bytes_are_named_by_file_and_line(tmp_path):
    latin = json.dumps({**ROW, "chosen": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    lines = [json.dumps(ROW).encode()] * 2 + [latin]
    (tmp_path / "pairs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(DataError, match=r"row 3 of .*pairs\.jsonl: '<line>' has byte 0xe9 at column \d+"):
        load_verifiable_preferences(tmp_path / "pairs.jsonl")


def test_bom_crlf_and_a_trailing_blank_line_load(tmp_path):
    text = "\ufeff" + "\r\n".join(json.dumps({**ROW, "prompt": f"p{k}"}) for k in range(3)) + "\r\n\r\n"
    (tmp_path / "pairs.jsonl").write_bytes(text.encode("utf-8"))
    loaded = load_verifiable_preferences(tmp_path / "pairs.jsonl")
    assert [pair.prompt_text for pair in loaded.records] == ["p0", "p1", "p2"]
    (tmp_path / "pairs.json").write_bytes(("\ufeff" + json.dumps([ROW]) + "\r\n").encode())
    assert len(load_verifiable_preferences(tmp_path / "pairs.json").records) == 1


def test_an_empty_json_list_is_named(tmp_path):
    (tmp_path / "pairs.json").write_text("[]")
    with pytest.raises(DataError, match="empty list"):
        load_verifiable_preferences(tmp_path / "pairs.json")


# ---------------------------------------------------------------- judges over a real socket


def test_a_reply_echoing_the_key_is_stored_redacted(tmp_path):
    with FakeChatServer(key=KEY, echo_key=True) as server:
        server.script = ["echo", "echo"]
        judge = api_judge(server, tmp_path, max_concurrency=1)
        decisions = judge.judge(items(2))
        write_decisions(tmp_path / "decisions.jsonl", decisions)
    assert decisions[0].verdict == "unparseable" and "<secret>" in decisions[0].raw
    assert decisions[1].winner == "a" and judge.unparseable == 1


def test_an_error_body_echoing_the_key_is_redacted(tmp_path):
    with FakeChatServer(key=KEY, echo_key=True) as server:
        server.script = ["500"] * 2
        with pytest.raises(JudgeAPIError, match="gave up after 2 attempts") as failure:
            api_judge(server, tmp_path, max_retries=1).judge(items(1))
        server.script = ["malformed"]
        with pytest.raises(JudgeAPIError, match="malformed reply") as malformed:
            api_judge(server, tmp_path, max_retries=0).judge(items(1))
    assert KEY not in str(failure.value) and KEY not in str(malformed.value) and "<secret>" in str(malformed.value)


def test_a_rejected_key_echoed_back_is_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY + "-wrong")
    with FakeChatServer(key=KEY, echo_key=True) as server, pytest.raises(JudgeAPIError, match="HTTP 401") as error:
        api_judge(server, tmp_path).judge(items(1))
    assert KEY not in str(error.value)


@pytest.mark.parametrize("failure", ["408", "reset", "500", "503", "429"])
def test_transient_failures_are_retried(failure, tmp_path):
    with FakeChatServer(key=KEY, echo_key=True) as server:
        server.script = [failure, failure]
        decisions = api_judge(server, tmp_path, max_concurrency=1, max_retries=3).judge(items(1))
    assert decisions[0].winner == "a" and server.requests == 3


def test_retry_after_is_honoured_and_backoff_is_jittered(tmp_path):
    with FakeChatServer(key=KEY, retry_after="0.2") as server:
        server.script = ["503"]
        judge = api_judge(server, tmp_path, max_concurrency=1, backoff_max=5.0)
        waits = []
        judge.sleep = waits.append
        judge.judge(items(1))
    assert waits == [0.2]
    jittered = {retry_wait(3, 0.1, 60.0) for _ in range(20)}
    assert len(jittered) > 1 and all(0.4 <= wait <= 0.8 for wait in jittered)
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 <= retry_wait(0, 0.1, 60.0, date) <= 30


def test_an_unparseable_verdict_is_asked_again_on_a_rerun(tmp_path):
    with FakeChatServer(key=KEY) as server:
        server.script = ["garbage", "garbage"]
        first = api_judge(server, tmp_path, max_concurrency=1).judge(items(1))
        rerun = api_judge(server, tmp_path, max_concurrency=1).judge(items(1))
    assert first[0].verdict == "unparseable" and rerun[0].winner == "a" and server.requests == 3


def test_an_endpoint_judges_key_under_any_variable_name_is_redacted(tmp_path, monkeypatch):
    from dualloop.judges import EndpointJudge

    monkeypatch.setenv("VLLM_PASS", KEY + "-vllm")  # a name the redaction rule would not guess
    with FakeChatServer(key=KEY + "-vllm", echo_key=True) as server:
        server.script = ["echo"]
        endpoint = EndpointJudge("mine", "judge-test", server.base_url, "VLLM_PASS")
        judge = OpenAICompatibleJudge.from_endpoint(endpoint, cache_path=tmp_path / "cache.jsonl", parse_retries=0)
        decision = judge.judge(items(1))[0]
        write_decisions(tmp_path / "decisions.jsonl", [decision])
    assert decision.judge == "mine" and decision.raw == "A, says Bearer <secret>"


def test_a_missing_key_fails_before_any_request(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with FakeChatServer(key=KEY) as server:
        with pytest.raises(MissingAPIKeyError, match=KEY_ENV):
            api_judge(server, tmp_path)
        assert server.requests == 0


def test_every_writer_redacts(tmp_path):
    from dualloop.pipeline import _ProgressLog
    from dualloop.registry import open_run

    decision = Decision("i1", "p1", "a", "b", "general", "j", "ab", "unparseable", None, None, raw=f"key {KEY}")
    assert read_decisions(write_decisions(tmp_path / "d.jsonl", [decision]))[0].raw == "key <secret>"
    run = open_run(tmp_path / "registry", {"seed": 0, "note": KEY})
    assert run.config["note"] == "<secret>"
    _ProgressLog(tmp_path / "reproduce.log")(f"Authorization: Bearer {KEY}")
    assert redact(KEY) == "<secret>"


# ---------------------------------------------------------------- two processes

_JUDGING = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, sys.argv[3])
    from test_hostile import items
    from pathlib import Path
    from dualloop.judges import OpenAICompatibleJudge, write_decisions
    out = Path(sys.argv[2])
    judge = OpenAICompatibleJudge("general", base_url=sys.argv[1], api_key_env="{KEY_ENV}", model="judge-test",
                                  cache_path=out / "cache.jsonl", max_concurrency=2)
    write_decisions(out / "decisions.jsonl", judge.judge(items(12)))
""")


def test_two_processes_judging_one_folder_give_each_decision_once(tmp_path):
    tests = str(Path(__file__).parent)
    with FakeChatServer(key=KEY, delay=0.02) as server:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _JUDGING, server.base_url, str(tmp_path), tests],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    decisions = read_decisions(tmp_path / "decisions.jsonl")
    assert sorted(d.item_id for d in decisions) == sorted(f"i{k}" for k in range(12))
    assert server.requests == 12  # the second process waited for the cache and asked nothing


_TRAINING = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from types import SimpleNamespace
    from dualloop.registry import ensure_run

    class Trainer:
        def __init__(self, run):
            self.args = SimpleNamespace(output_dir=str(run.path), should_save=True)
        def train(self, resume_from_checkpoint=None):
            with open(sys.argv[2], "a") as trained:
                trained.write(f"{os.getpid()}\\n")
            time.sleep(1.0)
        def save_model(self, path):
            Path(path).mkdir(parents=True, exist_ok=True)

    ensure_run(sys.argv[1], {"seed": 0, "method": "dualloop"}, Trainer)
""")


def test_two_trainings_of_one_configuration_train_once(tmp_path):
    trained = tmp_path / "trained.txt"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _TRAINING, str(tmp_path / "registry"), str(trained)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert len(trained.read_text().splitlines()) == 1
    assert sum("reusing" in output for output in outputs) == 1


_HOLDING = textwrap.dedent("""
    import sys, time
    from dualloop.locking import file_lock
    with file_lock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(30)
""")


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDING, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"PID {holder.pid} on "):
            with file_lock(out, timeout=0):
                pass
        from dualloop.pipeline import reproduce

        with pytest.raises(LockHeld, match=f"PID {holder.pid}"):
            reproduce("smoke", phases=[0], out=out)
        assert not (out / "reproduce.log").exists()
    finally:
        holder.kill()
        holder.wait()
    with file_lock(out, timeout=0):  # a holder that was killed leaves a lock that is taken over
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert lock_path(out).read_text() == ""  # released


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = tmp_path / "decisions.jsonl"
    lock_path(target).write_text(json.dumps({"pid": int(dead.stdout), "host": "h", "started": "t", "command": "c"}))
    with file_lock(target, timeout=0):
        pass
    assert f"taking over the lock of PID {int(dead.stdout)}" in capsys.readouterr().out
