"""Any OpenAI-compatible endpoint, over real sockets against a local chat-completions server: judges
named by a mapping in evaluation.judges, server generation (base model by name, runs by run id) through
the generation cache, the vllm command serving a registry, and the cost printed (and capped) before
the first judge call. No model is loaded."""

import json
import re
import subprocess
import sys

import pytest
from fake_chat_server import FakeChatServer

from dualloop.__main__ import main
from dualloop.chat_client import ChatEndpoint, EndpointError
from dualloop.config import ParamsError, check_values
from dualloop.experiment import Experiment
from dualloop.generation import GenerationSettings
from dualloop.judges import (
    CostCapExceeded,
    EndpointJudge,
    OpenAICompatibleJudge,
    PairItem,
    read_decisions,
    write_decisions,
)
from dualloop.judges.cost import estimate_tokens
from dualloop.judges.pairwise import judge_messages
from dualloop.registry import Run
from dualloop.serving import server_responses

KEY_ENV = "ENDPOINT_TEST_KEY"  # a name the redaction rule would not guess: registered by the judge
KEY = "sk-endpoint-0123456789abcdef"
RUN_ID = "0123456789abcdef"
PROMPTS = {f"p{k}": f"Prompt number {k}." for k in range(5)}


@pytest.fixture(autouse=True)
def key_and_no_key_on_disk(tmp_path, monkeypatch):
    """The key is in the environment only; no file under tmp_path holds it after the test."""
    monkeypatch.setenv(KEY_ENV, KEY)
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), f"{path} holds the API key"


def judge_mapping(server, **changes):
    return {"name": "my-judge", "model": "judge-test", "base_url": server.base_url, "api_key_env": KEY_ENV, **changes}


def experiment(tmp_path, server, *, judges, **evaluation):
    return Experiment.from_parameters(
        profile="smoke",
        output_dir=tmp_path / "out",
        seed=0,
        model={"name_or_path": "smoke"},
        training={"max_steps": 1},
        data={"n_pairs": 4},
        generation={
            "max_new_tokens": 8,
            "batch_size": 2,
            "backend": "server",
            "base_url": server.base_url,
            "api_key_env": KEY_ENV,
        },
        evaluation={"n_prompts": 3, "judges": judges, **evaluation},
    )


def a_run(tmp_path) -> Run:
    return Run(tmp_path / "out" / "registry" / RUN_ID)


# ---------------------------------------------------------------- judges


def test_a_mapping_judge_decides_through_the_server_under_its_name(tmp_path, capsys):
    with FakeChatServer(key=KEY) as server:
        built = experiment(tmp_path, server, judges=["gold", judge_mapping(server, usd_per_mtok_in=2.0)])
        path = built.compare(RUN_ID, "base", "verifiable-heldout", runs={RUN_ID: a_run(tmp_path)})
        judged = [body for body in server.bodies if body["model"] == "judge-test"]
        assert len(judged) == 3
        assert all(auth == f"Bearer {KEY}" for auth in server.authorizations)
    decisions = read_decisions(path)
    assert {d.judge for d in decisions} == {"gold-checker", "my-judge"}
    mine = [d for d in decisions if d.judge == "my-judge"]
    assert len(mine) == 3 and all(d.verdict in ("A", "B") for d in mine)
    assert (tmp_path / "out" / "registry" / "judge-cache" / "my-judge.jsonl").is_file()
    printed = capsys.readouterr().out
    assert "judge my-judge: 3 calls" in printed and "USD" in printed


def test_a_server_without_auth_gets_no_key(tmp_path):
    with FakeChatServer(key=None) as server:
        built = experiment(tmp_path, server, judges=[judge_mapping(server, api_key_env=None)])
        (judge,) = built.judges("general")
        decision = judge.judge([PairItem("i", "Which?", "GOOD one", "bad one", "a", "b")])[0]
        assert server.authorizations == [None]
    assert decision.judge == "my-judge" and decision.winner == "a"


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"base_url": "ftp://example.org/v1"}, "evaluation.judges[1].base_url='ftp://example.org/v1' is not an http"),
        ({"base_url": "localhost:8000"}, "evaluation.judges[1].base_url='localhost:8000'"),
        (
            {"base_url": "http://user:hunter2-secret@127.0.0.1:1/v1"},
            "evaluation.judges[1].base_url='http://***@127.0.0.1:1/v1' holds credentials (user:password@)",
        ),
        (
            {"base_url": "http://127.0.0.1:1/v1?key=hunter2-secret"},
            "evaluation.judges[1].base_url='http://127.0.0.1:1/v1?…' has a query or fragment",
        ),
        ({"usd_per_mtok_in": -0.5}, "evaluation.judges[1].usd_per_mtok_in=-0.5 must be a number >= 0"),
        ({"deadline_s": 0}, "evaluation.judges[1].deadline_s=0 must be a number of seconds > 0"),
        ({"name": "gpt-4o-mini"}, "evaluation.judges[1].name='gpt-4o-mini' clashes with a known judge"),
        ({"name": "gold-checker"}, "evaluation.judges[1].name='gold-checker' clashes"),
        ({"base_ur": "http://x"}, "evaluation.judges[1]: unknown key 'base_ur' (did you mean 'base_url'?)"),
        ({"model": None}, "evaluation.judges[1].model=None"),
        ({"api_key_env": "sk-a-key-as-a-value"}, "evaluation.judges[1].api_key_env='sk-a-key-as-a-value' must name"),
        ({"api_key_env": "UNSET_ENDPOINT_KEY"}, "evaluation.judges[1].api_key_env='UNSET_ENDPOINT_KEY': the environ"),
    ],
)
def test_bad_judge_mappings_are_refused_naming_key_path_and_value(change, named):
    mapping = {"name": "mine", "model": "m", "base_url": "http://127.0.0.1:1/v1", "api_key_env": KEY_ENV, **change}
    with pytest.raises(ParamsError, match=re.escape("test: " + named)) as error:
        check_values({"evaluation": {"judges": ["gold", mapping]}}, "test")
    assert "hunter2" not in str(error.value)  # a secret typed into a URL is never printed


def test_a_judge_mapping_missing_a_key_or_named_twice_is_refused():
    mapping = {"name": "mine", "model": "m", "base_url": "http://127.0.0.1:1/v1"}
    with pytest.raises(ParamsError, match=r"evaluation.judges\[0\]: missing key 'api_key_env'"):
        check_values({"evaluation": {"judges": [mapping]}}, "test")
    twice = {**mapping, "api_key_env": None}
    with pytest.raises(ParamsError, match=r"evaluation.judges\[1\]: judge 'mine' is named twice"):
        check_values({"evaluation": {"judges": [twice, twice]}}, "test")


# ---------------------------------------------------------------- cost before calls


def test_the_cost_is_printed_and_a_cap_below_it_stops_before_any_call(tmp_path, capsys):
    with FakeChatServer(key=KEY) as server:
        mapping = judge_mapping(server, usd_per_mtok_in=1000.0, usd_per_mtok_out=1000.0)
        capped = experiment(tmp_path, server, judges=[mapping], max_cost_usd=0.01)
        runs = {RUN_ID: a_run(tmp_path)}
        items = capped.pair_items(RUN_ID, "base", "verifiable-heldout", runs=runs)  # generated now, cached after
        server.reset_counts()
        with pytest.raises(CostCapExceeded, match=r"evaluation.max_cost_usd=0.01: .* 3 judge calls .* USD"):
            capped.compare(RUN_ID, "base", "verifiable-heldout", runs=runs)
        assert server.requests == 0
        printed = capsys.readouterr().out
        tokens = sum(
            estimate_tokens(judge_messages(i.prompt, i.response_a, i.response_b, "instructions")) for i in items
        )
        assert (
            f"judge my-judge: 3 calls, ~{tokens} input + 15 output tokens, ~USD {tokens * 1e-3 + 0.015:.4f}" in printed
        )
        allowed = experiment(tmp_path, server, judges=[mapping], max_cost_usd=100.0)
        allowed.compare(RUN_ID, "base", "verifiable-heldout", runs=runs)
        assert server.requests == 3
        server.reset_counts()
        allowed.compare(RUN_ID, "base", "verifiable-heldout", runs=runs)  # all cached: nothing to pay
        assert server.requests == 0 and "judge my-judge: 0 calls" in capsys.readouterr().out


def test_the_presets_are_priced_at_their_list_prices(monkeypatch):
    from dualloop.judges import OpenAICompatibleJudge

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    item = PairItem("i", "Which?", "one", "two", "a", "b")
    mini = OpenAICompatibleJudge().estimate([item])
    flash = OpenAICompatibleJudge.gemini_flash().estimate([item])
    assert (mini.usd_per_mtok_in, mini.usd_per_mtok_out) == (0.15, 0.60)
    assert (flash.usd_per_mtok_in, flash.usd_per_mtok_out) == (0.10, 0.40)
    assert mini.calls == 1 and mini.output_tokens == 5 and "list prices as read 2026-12-02" in mini.line()


def test_max_cost_usd_must_be_a_number_at_least_0(tmp_path):
    with FakeChatServer(key=KEY) as server, pytest.raises(ValueError, match=r"evaluation.max_cost_usd=-1"):
        experiment(tmp_path, server, judges=["gold"], max_cost_usd=-1)


# ---------------------------------------------------------------- server generation


def test_server_generation_asks_for_the_base_model_by_name_and_a_run_by_its_id(tmp_path):
    with FakeChatServer(key=None) as server:
        built = experiment(tmp_path, server, judges=["gold"])
        base = built.responses("base", "verifiable-heldout")
        trained = built.responses(RUN_ID, "verifiable-heldout", a_run(tmp_path))
        assert {body["model"] for body in server.bodies} == {"smoke", RUN_ID}
        assert all(body["temperature"] == 0 and body["max_tokens"] == 8 for body in server.bodies)
        prompts = built.prompts("verifiable-heldout")
        for prompt_id, record in prompts.items():
            assert base[prompt_id] == f"smoke answers: {record['messages'][-1]['content']}".strip()
            assert trained[prompt_id] == f"{RUN_ID} answers: {record['messages'][-1]['content']}".strip()
        server.reset_counts()
        assert built.responses("base", "verifiable-heldout") == base  # cached: no request
        assert built.responses(RUN_ID, "verifiable-heldout", a_run(tmp_path)) == trained
        assert server.requests == 0


def test_an_interrupted_server_generation_resumes_without_asking_again(tmp_path):
    settings = GenerationSettings(max_new_tokens=8, batch_size=2, backend="server", base_url="http://127.0.0.1:1/v1")
    with FakeChatServer(key=KEY) as server:
        endpoint = ChatEndpoint(server.base_url, KEY_ENV, max_retries=0)
        server.script = ["ok", "ok", "ok", "500"]  # the second batch fails for good
        with pytest.raises(EndpointError, match="HTTP 500"):
            server_responses(endpoint, "model-x", PROMPTS, settings, out_dir=tmp_path, prompt_set="set")
        (cache,) = tmp_path.glob("set-*.jsonl")
        done = {json.loads(line)["id"] for line in cache.read_text().splitlines()}
        assert done == {"p0", "p1"}
        server.reset_counts()
        responses = server_responses(endpoint, "model-x", PROMPTS, settings, out_dir=tmp_path, prompt_set="set")
        asked = {body["messages"][-1]["content"] for body in server.bodies}
        assert asked == {PROMPTS[p] for p in PROMPTS if p not in done}
    assert responses == {p: [f"model-x answers: {text}"] for p, text in PROMPTS.items()}


@pytest.mark.parametrize(
    "bad, named",
    [
        ("empty", "an empty completion"),
        ("null", "an empty completion"),
        ("wrong-model", "a reply from model 'some-other-model', not 'model-x'"),
        ("gzip-broken", "DecodingError"),
        ("surrogate", "a reply whose text cannot be encoded"),
        ("huge", "a reply over 10000 bytes"),
        ("trickle", "no complete reply within 0.3 s"),
        ("malformed", "malformed reply"),
    ],
)
def test_a_bad_server_reply_is_retried_then_named_and_never_cached(tmp_path, bad, named):
    settings = GenerationSettings(max_new_tokens=8, batch_size=1, backend="server", base_url="http://127.0.0.1:1/v1")
    prompts = {"p0": PROMPTS["p0"]}
    with FakeChatServer(key=KEY) as server:
        endpoint = ChatEndpoint(
            server.base_url, KEY_ENV, max_retries=1, backoff_base=0.0, deadline=0.3, max_reply_bytes=10_000
        )
        server.script = [bad, bad]  # the first try and its one retry
        with pytest.raises(EndpointError) as error:
            server_responses(endpoint, "model-x", prompts, settings, out_dir=tmp_path, prompt_set="set")
        assert str(error.value).startswith("set prompt 'p0': model-x at ") and named in str(error.value)
        assert server.requests == 2
        assert not any(path.read_text().strip() for path in tmp_path.glob("set-*.jsonl"))  # nothing kept
        server.script = [bad]  # once bad, then good: the retry's answer is the one kept
        assert server_responses(endpoint, "model-x", prompts, settings, out_dir=tmp_path, prompt_set="set") == {
            "p0": [f"model-x answers: {PROMPTS['p0']}"]
        }


def test_a_dated_snapshot_of_the_requested_model_is_its_reply():
    from dualloop.chat_client import _reply_text

    reply = json.dumps({"model": "gpt-4o-mini-2024-07-18", "choices": [{"message": {"content": "A"}}]}).encode()
    assert _reply_text(reply, "gpt-4o-mini", allow_empty=False) == "A"


def test_a_prefill_is_continued_and_the_server_key_comes_from_its_variable(tmp_path):
    settings = GenerationSettings(backend="server", base_url="http://127.0.0.1:1/v1", api_key_env=KEY_ENV)
    prefilled = {"q": [{"role": "user", "content": "Pick one."}, {"role": "assistant", "content": "The answer is ("}]}
    with FakeChatServer(key=KEY) as server:
        endpoint = ChatEndpoint(server.base_url, settings.api_key_env)
        server_responses(endpoint, "m", prefilled, settings, out_dir=tmp_path, prompt_set="s")
        (body,) = server.bodies
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    with pytest.raises(ParamsError, match="generation.api_key_env='UNSET_ENDPOINT_KEY'"):
        check_values({"generation": {"backend": "server", "api_key_env": "UNSET_ENDPOINT_KEY"}}, "test")


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"backend": "remote"}, "backend='remote' is not one of local, server"),
        ({"backend": "server"}, "base_url=None is not an http(s) URL"),
        ({"backend": "server", "base_url": "127.0.0.1:8000"}, "base_url='127.0.0.1:8000'"),
        ({"backend": "server", "base_url": "https://u:hunter2-secret@h/v1"}, "base_url='https://***@h/v1' holds"),
        ({"backend": "server", "base_url": "http://h/v1#hunter2-secret"}, "base_url='http://h/v1#…' has a query"),
        ({"base_url": "http://u:hunter2-secret@h/v1"}, "base_url='http://***@h/v1' is used only with backend"),
        ({"request_deadline_s": 0}, "request_deadline_s=0 must be > 0"),
        ({"base_url": "http://127.0.0.1:8000/v1"}, "base_url='http://127.0.0.1:8000/v1' is used only with backend"),
        ({"backend": "server", "base_url": "http://h/v1", "do_sample": True}, "generates greedily"),
    ],
)
def test_bad_server_settings_are_named(values, named):
    with pytest.raises(ValueError, match=re.escape(named)) as error:
        GenerationSettings.from_dict(values, "generation")
    assert "hunter2" not in str(error.value)


# ---------------------------------------------------------------- the vllm command


def test_serve_command_serves_every_finished_run_by_its_id(tmp_path, capsys):
    registry = tmp_path / "out" / "registry"
    finished = []
    for run_id, model, complete in [
        ("aaaaaaaaaaaaaaaa", "smoke", True),
        ("bbbbbbbbbbbbbbbb", "smoke", True),
        ("cccccccccccccccc", "smoke", False),  # still training
        ("dddddddddddddddd", "another-base", True),  # an adapter of another base model
    ]:
        run = Run(registry / run_id)
        run.adapter_dir.mkdir(parents=True)
        (run.path / "config.json").write_text(json.dumps({"model": {"name_or_path": model, "lora_r": 16}}))
        if complete:
            run.mark_complete()
            finished.append(run)
    (registry / "generations").mkdir()
    code = main(["serve-command", "--profile", "smoke", "--out", str(tmp_path / "out")])
    command = capsys.readouterr().out.strip()
    assert code == 0 and command.startswith(
        "python -m vllm.entrypoints.openai.api_server --model smoke --served-model-name smoke --dtype float32 "
        "--enable-lora"
    )
    assert "--max-lora-rank 16 --lora-modules " in command
    for run in finished[:2]:
        assert f"{run.id}={run.adapter_dir.resolve()}" in command.split()
    assert "cccccccccccccccc" not in command and "dddddddddddddddd" not in command


def test_an_endpoint_judges_key_under_any_variable_name_is_redacted(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_PASS", KEY + "-vllm")  # a name the redaction rule would not guess
    with FakeChatServer(key=KEY + "-vllm", echo_key=True) as server:
        server.script = ["echo"]
        endpoint = EndpointJudge("mine", "judge-test", server.base_url, "VLLM_PASS")
        judge = OpenAICompatibleJudge.from_endpoint(endpoint, cache_path=tmp_path / "cache.jsonl", parse_retries=0)
        pair = PairItem("i0", "prompt 0", "GOOD answer 0", "bad answer 0", "dualloop", "static")
        decision = judge.judge([pair])[0]
        write_decisions(tmp_path / "decisions.jsonl", [decision])
    assert decision.judge == "mine" and decision.raw == "A, says Bearer <secret>"


_GENERATING = """
import sys
from dualloop.chat_client import ChatEndpoint
from dualloop.generation import GenerationSettings
from dualloop.serving import server_responses

base_url, out_dir, key_env = sys.argv[1:4]
prompts = {f"p{k}": f"Prompt number {k}." for k in range(5)}
settings = GenerationSettings(max_new_tokens=8, batch_size=1, backend="server", base_url="http://127.0.0.1:1/v1")
server_responses(ChatEndpoint(base_url, key_env), "model-x", prompts, settings, out_dir=out_dir, prompt_set="set")
"""


def test_two_processes_sharing_one_generation_cache_ask_for_each_answer_once(tmp_path):
    with FakeChatServer(key=KEY, delay=0.05) as server:
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _GENERATING, server.base_url, str(tmp_path), KEY_ENV],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for _ in range(2)
        ]
        outputs = [process.communicate(timeout=60)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    assert server.requests == len(PROMPTS)  # the second process waited for the cache and asked nothing
    (cache,) = tmp_path.glob("set-*.jsonl")
    assert sorted(json.loads(line)["id"] for line in cache.read_text().splitlines()) == sorted(PROMPTS)


def test_the_serve_line_names_the_offline_models_converted_folder_and_the_profiles_dtype(monkeypatch, tmp_path):
    import dualloop.models
    from dualloop.models import ModelSettings
    from dualloop.serving import serve_command

    monkeypatch.setattr(dualloop.models, "offline_model_dir", lambda: tmp_path / "converted")
    line = serve_command(ModelSettings(name_or_path="smollm2-135m-instruct", dtype="float32"), [])
    assert line.split() == [
        *"python -m vllm.entrypoints.openai.api_server --model".split(),
        str(tmp_path / "converted"),
        *"--served-model-name smollm2-135m-instruct --dtype float32".split(),
    ]
    (tmp_path / "my-model").mkdir()
    local = serve_command(ModelSettings(name_or_path=str(tmp_path / "my-model"), dtype="bfloat16"), [])
    assert f"--model {tmp_path / 'my-model'} " in local and local.endswith("--dtype bfloat16")


def test_the_repetition_penalty_is_sent_unless_switched_off_and_keys_the_cache(tmp_path):
    prompts = {"p0": PROMPTS["p0"]}
    with FakeChatServer(key=KEY) as server:
        endpoint = ChatEndpoint(server.base_url, KEY_ENV, max_retries=0)
        for send, expected in ((True, 1.2), (False, None)):
            settings = GenerationSettings(
                backend="server", base_url="http://127.0.0.1:1/v1", send_repetition_penalty=send
            )
            server_responses(endpoint, "model-x", prompts, settings, out_dir=tmp_path, prompt_set="set")
            assert server.bodies[-1].get("repetition_penalty") == expected
        server_responses(
            endpoint, "model-x", prompts, settings, out_dir=tmp_path, prompt_set="set", server_identity="dtype=bfloat16"
        )
    assert server.requests == 3  # each penalty and each server identity has its own cache
    assert len(list(tmp_path.glob("set-*.jsonl"))) == 3


def test_a_judge_whose_every_verdict_is_unparseable_is_one_line_saying_so(tmp_path, capsys):
    with FakeChatServer(key=KEY) as server:
        server.script = ["ok", "ok"] + ["garbage"] * 40  # two answers, then verdicts that name no response
        judge = f"{{name: mine, model: judge-test, base_url: '{server.base_url}', api_key_env: {KEY_ENV}}}"
        code = main(
            [
                *("judge", "--profile", "smoke", "--a", "base", "--b", "base", "--prompts", "verifiable-heldout"),
                *("--out", str(tmp_path / "out"), "--set", "evaluation.n_prompts=2"),
                *("--set", f"generation={{backend: server, base_url: '{server.base_url}', api_key_env: {KEY_ENV}}}"),
                *("--set", f"evaluation.judges=[{judge}]"),
            ]
        )
    out = capsys.readouterr().out
    assert code == 0
    assert "judge mine: unparseable 2; every verdict unparseable, no win rate" in out


def test_the_deadline_of_a_request_is_a_setting_of_the_server_and_of_each_judge():
    from dualloop.judges.endpoints import judge_entry
    from dualloop.serving import generation_endpoint

    settings = GenerationSettings(backend="server", base_url="http://127.0.0.1:1/v1", request_deadline_s=30.0)
    endpoint = generation_endpoint(settings)
    assert (endpoint.deadline, endpoint.max_reply_bytes) == (30.0, 1_000_000)
    mapping = {"name": "mine", "model": "m", "base_url": "http://127.0.0.1:1/v1", "api_key_env": None, "deadline_s": 12}
    judge = OpenAICompatibleJudge.from_endpoint(judge_entry(mapping, "evaluation.judges[0]"))
    assert judge.endpoint.deadline == 12.0


# ---------------------------------------------------------------- a hostile session, then every file it wrote

URL_SECRETS = ("hunter2-password", "tok-in-the-query", "tok-in-the-fragment")


def test_a_hostile_session_leaves_no_secret_it_used_in_any_file(tmp_path, monkeypatch, capsys):
    """Secrets typed into URLs (judge mappings and the generation server, on each command) are refused before
    anything is written; a judging that then runs with the key from its variable writes it nowhere. Afterwards
    every file under the session's folder is read: none holds a secret (the autouse fixture: nor the key)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    urls = [
        f"http://user:{URL_SECRETS[0]}@127.0.0.1:1/v1",
        f"http://127.0.0.1:1/v1?api_key={URL_SECRETS[1]}",
        f"http://127.0.0.1:1/v1#{URL_SECRETS[2]}",
    ]
    judge = ["judge", "--profile", "smoke", "--a", "base", "--b", "base", "--prompts", "verifiable-heldout"]
    commands = []
    for url in urls:
        mapping = f"{{name: mine, model: m, base_url: '{url}', api_key_env: {KEY_ENV}}}"
        server = ["generation.backend=server", f"generation.base_url={url}"]
        commands += [
            [*judge, "--set", f"evaluation.judges=[{mapping}]"],
            [*judge, *(a for s in server for a in ("--set", s))],
            ["reproduce", "--profile", "smoke", "--phases", "2", "--set", f"evaluation.judges=[gold, {mapping}]"],
            ["serve-command", "--profile", "smoke", *(a for s in server for a in ("--set", s))],
        ]
    for command in commands:
        assert main([*command, "--out", str(out)]) == 2, command
        printed = capsys.readouterr()
        assert not any(secret in printed.err + printed.out for secret in URL_SECRETS), printed.err
    with FakeChatServer(key=KEY, echo_key=True) as server:
        server.script = ["echo"] * 3
        built = experiment(tmp_path, server, judges=["gold", judge_mapping(server)])
        built.compare(RUN_ID, "base", "verifiable-heldout", runs={RUN_ID: a_run(tmp_path)})
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "my-judge.jsonl" for path in written)  # the judging wrote its cache
    for path in written:
        for secret in URL_SECRETS:
            assert secret.encode() not in path.read_bytes(), f"{path} holds {secret}"
