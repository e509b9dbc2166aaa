"""Tests for benchmarks/beta_lever.py: the β lever of a run read from its training log, and its refusals."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("beta_lever", ROOT / "benchmarks" / "beta_lever.py")
beta_lever = importlib.util.module_from_spec(spec)
sys.modules["beta_lever"] = beta_lever
spec.loader.exec_module(beta_lever)


def write_run(registry: Path, name: str, method: str, seed: int, kwargs: dict, rows: list[dict]) -> Path:
    run = registry / name
    run.mkdir(parents=True)
    config = {"method": method, "seed": seed, "training": {"controller": method, "controller_kwargs": kwargs}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    (run / "COMPLETE").write_text("")
    return run


def rows(betas, norms, margins, token_kl):
    return [
        {"step": step, "beta": b, "grad_norm": g, "rewards/margins": m, "kl/token": kl}
        for step, (b, g, m, kl) in enumerate(zip(betas, norms, margins, token_kl), 1)
    ]


def test_the_turning_point_is_where_a_pairs_gradient_stops_growing_with_beta():
    x = beta_lever.MARGIN_TURNING_POINT
    assert x / (1 + math.exp(-x)) == pytest.approx(1.0, abs=1e-15)  # x σ(x) = 1
    # d/dβ [β σ(−βM)] by autograd, at M = 1: positive below β = x, negative above
    for beta, sign in ((0.5 * x, 1), (0.99 * x, 1), (1.01 * x, -1), (3 * x, -1)):
        b = torch.tensor(beta, dtype=torch.float64, requires_grad=True)
        (b * torch.sigmoid(-b)).backward()
        assert math.copysign(1, b.grad.item()) == sign


def test_a_run_whose_gradient_scales_with_beta_has_slope_one_and_its_windows_by_hand(tmp_path):
    betas = [0.5 * 0.5**k for k in range(48)]
    norms = [3.0 * b for b in betas]  # ‖g‖ = 3 β exactly
    margins = [0.1] * 40 + [-2.0] * 4 + [1.5] * 4  # 4 of 48 past x* (a negative margin never is)
    token_kl = [0.01 * step for step in range(1, 49)]
    run = write_run(tmp_path, "aaaa", "dualloop", 1, {"clip": False}, rows(betas, norms, margins, token_kl))
    entry = beta_lever.lever(run)
    assert entry["slope"] == pytest.approx(1.0, abs=1e-9)
    assert entry["beyond"] == 4 and entry["steps"] == 48
    assert entry["clipped"] == 1  # ‖g‖ = 3 β exceeds max_grad_norm 1.0 at step 1 alone (1.5)
    saturated = rows(betas, [*norms[:10], 0.0, *norms[11:]], margins, token_kl)  # every pair past σ's reach
    other = write_run(tmp_path, "abab", "dualloop", 2, {"clip": False}, saturated)
    assert beta_lever.lever(other)["slope"] == pytest.approx(1.0, abs=1e-9)
    assert beta_lever.lever(other)["grad_norm"][0] == 0.0
    assert entry["beta"] == (betas[-1], 0.5) and entry["grad_norm"] == (norms[-1], 1.5)
    # token KL at step 16: mean of steps 13..16 = 0.01 * 14.5
    assert entry["token_kl"][16] == pytest.approx(0.145)
    assert entry["token_kl"][48] == pytest.approx(0.01 * 46.5)


def test_the_table_names_what_differs_between_runs_of_one_method_and_marks_a_constant_beta(tmp_path, capsys):
    flat = rows([0.1] * 20, [2.0] * 20, [0.3] * 20, [0.02] * 20)
    write_run(tmp_path, "bbbb", "static", 0, {}, flat)
    write_run(
        tmp_path, "cccc", "dualloop", 0, {"clip": False, "kl_target": 0.15}, rows([0.5, 0.1], [9, 2], [0, 0], [0, 0])
    )
    write_run(tmp_path, "dddd", "dualloop", 0, {"kl_target": 0.15}, rows([0.5, 0.99], [9, 2], [0, 0], [0, 0]))
    (tmp_path / "eeee").mkdir()  # an unfinished run (no COMPLETE) is not read
    assert beta_lever.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5
    static = next(line for line in out if line.startswith("| bbbb |"))
    # constant β: no slope; 16 steps logged but not 32 or 48
    assert static == "| bbbb | static | 0 | – | 0.1 | 2 | – | 20 of 20 | 0 of 20 | 0.020 | – | – |"
    assert "| cccc | dualloop | 0 | clip=False | 0.1–0.5 | 2–9 | 0.93 | 2 of 2 | 0 of 2 |" in "\n".join(out)
    assert "| dddd | dualloop | 0 | defaults | 0.5–0.99 | 2–9 | – |" in "\n".join(out)  # β spans under 2×: no slope
    assert beta_lever.main([str(tmp_path), "--method", "static"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3


def test_a_bad_log_or_identity_is_one_line_naming_the_file_and_step(tmp_path, capsys):
    run = write_run(tmp_path, "ffff", "static", 0, {}, rows([0.1, 0.1], [2.0, -1.0], [0, 0], [0, 0]))
    assert beta_lever.main([str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"beta_lever: {run / 'history.jsonl'}, step 2: grad_norm = -1.0 is not a number ≥ 0"
    for key, value in (("rewards/margins", "wide"), ("rewards/margins", float("nan")), ("beta", True)):
        bad = rows([0.1, 0.1], [2.0, 2.0], [0, 0], [0, 0])
        bad[1][key] = value
        (run / "history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in bad))
        assert beta_lever.main([str(tmp_path)]) == 2
        assert f"step 2: {key} = {value!r} is not" in capsys.readouterr().err
    (run / "history.jsonl").write_text('{"step": 1, "beta": 0.1, "grad_norm": 1}\n{oops\n')
    assert beta_lever.main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"beta_lever: {run / 'history.jsonl'}, line 2: not JSON")
    (run / "config.json").write_text("{}")
    assert beta_lever.main([str(tmp_path)]) == 2
    assert (
        capsys.readouterr().err.strip() == f"beta_lever: {run / 'config.json'}: not a run identity (KeyError: 'method')"
    )
    assert beta_lever.main([str(tmp_path / "nowhere")]) == 2
    assert "not a registry folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert beta_lever.main([str(empty)]) == 2
    assert "no finished run" in capsys.readouterr().err
