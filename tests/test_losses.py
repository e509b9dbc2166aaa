"""Losses against hand computations from their papers' formulas (DPO, IPO, AdaDPO (Chen et al.) eq. 7 and
Table 2 with R-DPO, CPO, ORPO and SimPO), against TRL's own implementations, plus their properties.

Expected values are computed with Python's ``math`` on plain floats, one example at a time,
independently of the tensor code under test.
"""

import math
import types
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dualloop.losses import (
    adadpo_loss,
    adaptive_cpo_loss,
    adaptive_ipo_loss,
    adaptive_orpo_loss,
    adaptive_rdpo_loss,
    adaptive_simpo_loss,
    cpo_loss,
    dpo_loss,
    ipo_loss,
    orpo_loss,
    rdpo_loss,
    simpo_loss,
)

with warnings.catch_warnings():  # TRL warns on every import from trl.experimental
    warnings.simplefilter("ignore")
    from trl.experimental.cpo import CPOTrainer
    from trl.experimental.orpo import ORPOTrainer


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def random_logps(seed: int, size: int = 6):
    generator = torch.Generator().manual_seed(seed)
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = (
        -(torch.rand(size, generator=generator, dtype=torch.float64) * 40 + 1) for _ in range(4)
    )
    lengths_chosen = torch.randint(1, 50, (size,), generator=generator)
    lengths_rejected = torch.randint(1, 50, (size,), generator=generator)
    return policy_chosen, policy_rejected, ref_chosen, ref_rejected, lengths_chosen, lengths_rejected


def rows(*tensors):
    return zip(*(t.tolist() for t in tensors))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("per_example_beta", [False, True])
def test_dpo_loss_matches_hand_computation(label_smoothing, per_example_beta):
    pc, pr, rc, rr, _, _ = random_logps(0)
    beta = torch.linspace(0.05, 0.5, 6, dtype=torch.float64) if per_example_beta else 0.1
    out = dpo_loss(pc, pr, rc, rr, beta, label_smoothing=label_smoothing)
    betas = beta.tolist() if per_example_beta else [beta] * 6
    for i, (w, l, refw, refl) in enumerate(rows(pc, pr, rc, rr)):
        margin = (w - refw) - (l - refl)
        expected = -(1 - label_smoothing) * log_sigmoid(betas[i] * margin) - label_smoothing * log_sigmoid(
            -betas[i] * margin
        )
        assert out.losses[i].item() == pytest.approx(expected, rel=1e-10, abs=1e-12)
        assert out.chosen_rewards[i].item() == pytest.approx(betas[i] * (w - refw), rel=1e-12)
        assert out.rejected_rewards[i].item() == pytest.approx(betas[i] * (l - refl), rel=1e-12)


def test_ipo_loss_matches_hand_computation():
    pc, pr, rc, rr, _, _ = random_logps(1)
    out = ipo_loss(pc, pr, rc, rr, 0.2)
    for i, (w, l, refw, refl) in enumerate(rows(pc, pr, rc, rr)):
        assert out.losses[i].item() == pytest.approx(((w - refw) - (l - refl) - 1 / 0.4) ** 2, rel=1e-12)


def hand_adadpo(w, l, refw, refl, beta, *, space, lw=None, ll=None, clip=2.0, k=1.0):
    if space == "ratio":
        a, b = w - refw, l - refl
    else:
        a, b = w, l
    if lw is not None:
        a, b = a / lw, b / ll
    coefficient = k * math.exp(a - b)
    if clip is not None:
        coefficient = min(coefficient, clip)
    beta_w = beta * coefficient
    return -log_sigmoid(beta_w * (w - refw) - beta * (l - refl)), beta_w


@pytest.mark.parametrize("space", ["ratio", "policy"])
@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("clip,k", [(2.0, 1.0), (None, 1.0), (1.5, 0.7), (2.5, 1.3)])
def test_adadpo_loss_matches_hand_computation(space, normalized, clip, k):
    pc, pr, rc, rr, lc, lr = random_logps(2)
    # Small log-prob differences so the coefficient lands on both sides of the ceiling.
    pc, pr = rc + (pc - rc) * 0.02, rr + (pr - rr) * 0.02
    kwargs = dict(chosen_lengths=lc, rejected_lengths=lr) if normalized else {}
    out = adadpo_loss(pc, pr, rc, rr, 0.1, clip=clip, space=space, k=k, **kwargs)
    for i, (w, l, refw, refl) in enumerate(rows(pc, pr, rc, rr)):
        lengths = dict(lw=lc[i].item(), ll=lr[i].item()) if normalized else {}
        expected_loss, expected_beta_w = hand_adadpo(w, l, refw, refl, 0.1, space=space, clip=clip, k=k, **lengths)
        assert out.losses[i].item() == pytest.approx(expected_loss, rel=1e-10)
        assert out.chosen_beta[i].item() == pytest.approx(expected_beta_w, rel=1e-10)
        assert out.chosen_rewards[i].item() == pytest.approx(expected_beta_w * (w - refw), rel=1e-10)
        assert out.rejected_rewards[i].item() == pytest.approx(0.1 * (l - refl), rel=1e-10)


def test_adadpo_listing1_stable_form():
    """AdaDPO (Chen et al.) Listing 1, transcribed with its own variable names, on one batch."""
    pc, pr, rc, rr, lc, lr = random_logps(3)
    lw, ll = lc.double(), lr.double()
    log_ratio = pc / lw - pr / ll - rc / lw + rr / ll
    beta_w = 0.05 * torch.clamp(log_ratio.exp(), max=2.0)
    expected = -torch.nn.functional.logsigmoid(beta_w * (pc - rc) - 0.05 * (pr - rr))
    out = adadpo_loss(pc, pr, rc, rr, 0.05, chosen_lengths=lc, rejected_lengths=lr)
    torch.testing.assert_close(out.losses, expected, rtol=1e-12, atol=1e-12)


def test_adaptive_table2_variants_match_hand_computation():
    pc, pr, rc, rr, lc, lr = random_logps(4)
    pc, pr = rc + (pc - rc) * 0.02, rr + (pr - rr) * 0.02
    beta, clip = 0.1, 2.0
    ipo = adaptive_ipo_loss(pc, pr, rc, rr, beta, clip=clip)
    rdpo = adaptive_rdpo_loss(pc, pr, rc, rr, beta, chosen_lengths=lc, rejected_lengths=lr, alpha=0.01, clip=clip)
    cpo = adaptive_cpo_loss(pc * 0.01, pr * 0.01, beta, clip=clip)
    simpo = adaptive_simpo_loss(pc, pr, beta, chosen_lengths=lc, rejected_lengths=lr, gamma=0.5, clip=clip)
    orpo = adaptive_orpo_loss(pc, pr, beta, chosen_lengths=lc, rejected_lengths=lr, clip=clip)
    for i, (w, l, refw, refl) in enumerate(rows(pc, pr, rc, rr)):
        yw, yl = lc[i].item(), lr[i].item()
        coef = min(math.exp((w - refw) - (l - refl)), clip)
        assert ipo.losses[i].item() == pytest.approx((coef * (w - refw) - (l - refl) - 1 / (2 * beta)) ** 2, rel=1e-10)
        assert rdpo.losses[i].item() == pytest.approx(
            -log_sigmoid(beta * coef * (w - refw) - beta * (l - refl) - 0.01 * (yw - yl)), rel=1e-10
        )
        cw, cl = w * 0.01, l * 0.01
        coef_cpo = min(math.exp(cw - cl), clip)
        assert cpo.losses[i].item() == pytest.approx(-log_sigmoid(beta * coef_cpo * cw - beta * cl), rel=1e-10)
        coef_simpo = min(yw * math.exp(w) / (yl * math.exp(l)), clip)
        assert simpo.losses[i].item() == pytest.approx(
            -log_sigmoid(beta * coef_simpo / yw * w - beta / yl * l - 0.5), rel=1e-10
        )
        pw, pl = math.exp(w / yw), math.exp(l / yl)
        coef_orpo = min(pw * (1 - pw) / (pl * (1 - pl)), clip)
        odds_w, odds_l = math.log(pw / (1 - pw)), math.log(pl / (1 - pl))
        assert orpo.losses[i].item() == pytest.approx(
            -(math.log(pw) + log_sigmoid(beta * coef_orpo * odds_w - beta * odds_l)), rel=1e-9
        )


# ---------------------------------------------------------------- Table 2's base forms (β_w = β_l = β)

# Three examples, summed log-probs of the policy (pc, pr) and reference (rc, rr), lengths in tokens.
SMALL = dict(
    pc=[-3.0, -12.5, -7.25],
    pr=[-4.5, -9.0, -20.0],
    rc=[-3.5, -11.0, -8.0],
    rr=[-4.0, -10.5, -18.0],
    lc=[3, 10, 6],
    lr=[5, 7, 16],
)


def small_batch(dtype=torch.float64):
    pc, pr, rc, rr = (torch.tensor(SMALL[name], dtype=dtype) for name in ("pc", "pr", "rc", "rr"))
    return pc, pr, rc, rr, torch.tensor(SMALL["lc"]), torch.tensor(SMALL["lr"])


def beta_arg(per_example: bool):
    """β as the loss receives it (a float or a tensor [3]) and as a list of python floats."""
    values = [0.1, 0.35, 0.05] if per_example else [0.2] * 3
    return (torch.tensor(values, dtype=torch.float64) if per_example else 0.2), values


def assert_output(out, losses, chosen_rewards, rejected_rewards, betas, rel=1e-12):
    for i in range(len(losses)):
        assert out.losses[i].item() == pytest.approx(losses[i], rel=rel)
        assert out.chosen_rewards[i].item() == pytest.approx(chosen_rewards[i], rel=rel)
        assert out.rejected_rewards[i].item() == pytest.approx(rejected_rewards[i], rel=rel)
        assert out.chosen_beta[i].item() == pytest.approx(betas[i], rel=rel)


@pytest.mark.parametrize("per_example_beta", [False, True])
def test_rdpo_loss_matches_hand_computation(per_example_beta):
    pc, pr, rc, rr, lc, lr = small_batch()
    beta, betas = beta_arg(per_example_beta)
    out = rdpo_loss(pc, pr, rc, rr, beta, chosen_lengths=lc, rejected_lengths=lr, alpha=0.02)
    # Example 0 written out: log(P_w/R_w) = −3 + 3.5, log(P_l/R_l) = −4.5 + 4, |y_w| − |y_l| = 3 − 5.
    assert out.losses[0].item() == pytest.approx(
        math.log1p(math.exp(-(betas[0] * 0.5 - betas[0] * -0.5 - 0.02 * -2))), rel=1e-12
    )
    losses, chosen, rejected = [], [], []
    for b, (w, l, refw, refl, yw, yl) in zip(betas, zip(*SMALL.values())):
        losses.append(-log_sigmoid(b * (w - refw) - b * (l - refl) - 0.02 * (yw - yl)))
        chosen.append(b * (w - refw))
        rejected.append(b * (l - refl))
    assert_output(out, losses, chosen, rejected, betas)


@pytest.mark.parametrize("per_example_beta", [False, True])
def test_cpo_loss_matches_hand_computation(per_example_beta):
    pc, pr, _, _, _, _ = small_batch()
    beta, betas = beta_arg(per_example_beta)
    out = cpo_loss(pc, pr, beta)
    assert out.losses[0].item() == pytest.approx(math.log1p(math.exp(-(betas[0] * -3.0 - betas[0] * -4.5))), rel=1e-12)
    w, l = SMALL["pc"], SMALL["pr"]
    assert_output(
        out,
        [-log_sigmoid(b * w[i] - b * l[i]) for i, b in enumerate(betas)],
        [b * w[i] for i, b in enumerate(betas)],
        [b * l[i] for i, b in enumerate(betas)],
        betas,
    )


@pytest.mark.parametrize("normalized", [True, False])
@pytest.mark.parametrize("per_example_beta", [False, True])
def test_orpo_loss_matches_hand_computation(normalized, per_example_beta):
    pc, pr, _, _, lc, lr = small_batch()
    beta, betas = beta_arg(per_example_beta)
    kwargs = dict(chosen_lengths=lc, rejected_lengths=lr) if normalized else {}
    out = orpo_loss(pc, pr, beta, **kwargs)
    losses, chosen, rejected = [], [], []
    for i, b in enumerate(betas):
        yw, yl = (SMALL["lc"][i], SMALL["lr"][i]) if normalized else (1, 1)
        pw, pl = math.exp(SMALL["pc"][i] / yw), math.exp(SMALL["pr"][i] / yl)
        odds_w, odds_l = math.log(pw / (1 - pw)), math.log(pl / (1 - pl))
        losses.append(-(math.log(pw) + log_sigmoid(b * odds_w - b * odds_l)))
        chosen.append(b * odds_w)
        rejected.append(b * odds_l)
    assert_output(out, losses, chosen, rejected, betas, rel=1e-10)


@pytest.mark.parametrize("per_example_beta", [False, True])
def test_simpo_loss_matches_hand_computation(per_example_beta):
    pc, pr, _, _, lc, lr = small_batch()
    beta, betas = beta_arg(per_example_beta)
    out = simpo_loss(pc, pr, beta, chosen_lengths=lc, rejected_lengths=lr, gamma=0.5)
    # Example 0 written out: β/|y_w| · log P_w = β · (−3/3), β/|y_l| · log P_l = β · (−4.5/5), γ = 0.5.
    assert out.losses[0].item() == pytest.approx(
        math.log1p(math.exp(-(betas[0] * -1.0 - betas[0] * -0.9 - 0.5))), rel=1e-12
    )
    losses, chosen, rejected = [], [], []
    for b, w, l, yw, yl in zip(betas, SMALL["pc"], SMALL["pr"], SMALL["lc"], SMALL["lr"]):
        losses.append(-log_sigmoid(b / yw * w - b / yl * l - 0.5))
        chosen.append(b / yw * w)
        rejected.append(b / yl * l)
    assert_output(out, losses, chosen, rejected, betas)


def base_and_adaptive(method: str, via: str, beta):
    """(base, adaptive) outputs of one Table 2 method on a batch where the adaptive coefficient is 1.

    ``via="ceiling"``: C = 1 with k = 1e30, so ``min(k · ratio, C)`` is exactly 1 whatever the ratio.
    ``via="balanced"``: the rejected side is built so that the ratio itself is 1 (k = 1, C = 2).
    """
    pc, pr, rc, rr, lc, lr = small_batch()
    if via == "balanced":
        pr = {
            "rdpo": rr + (pc - rc),  # P_w R_l / (P_l R_w) = 1
            "cpo": pc.clone(),  # P_w / P_l = 1
            "simpo": pc + torch.log(lc.double() / lr),  # |y_w| P_w / (|y_l| P_l) = 1
            # P_l = 1 − P_w per token: P_w(1 − P_w) / (P_l(1 − P_l)) = 1 with P_w ≠ P_l.
            "orpo": torch.log1p(-torch.exp(pc / lc)) * lr,
        }[method]
    adaptive_kwargs = dict(clip=1.0, k=1e30) if via == "ceiling" else dict(clip=2.0, k=1.0)
    lengths = dict(chosen_lengths=lc, rejected_lengths=lr)
    if method == "rdpo":
        return (
            rdpo_loss(pc, pr, rc, rr, beta, alpha=0.02, **lengths),
            adaptive_rdpo_loss(pc, pr, rc, rr, beta, alpha=0.02, **lengths, **adaptive_kwargs),
        )
    if method == "cpo":
        return cpo_loss(pc, pr, beta), adaptive_cpo_loss(pc, pr, beta, **adaptive_kwargs)
    if method == "orpo":
        return orpo_loss(pc, pr, beta, **lengths), adaptive_orpo_loss(pc, pr, beta, **lengths, **adaptive_kwargs)
    return (
        simpo_loss(pc, pr, beta, gamma=0.5, **lengths),
        adaptive_simpo_loss(pc, pr, beta, gamma=0.5, **lengths, **adaptive_kwargs),
    )


@pytest.mark.parametrize("method", ["rdpo", "cpo", "orpo", "simpo"])
@pytest.mark.parametrize("via", ["ceiling", "balanced"])
@pytest.mark.parametrize("per_example_beta", [False, True])
def test_adaptive_form_with_coefficient_one_is_the_base_form(method, via, per_example_beta):
    beta, betas = beta_arg(per_example_beta)
    base, adaptive = base_and_adaptive(method, via, beta)
    tolerance = dict(rtol=0.0, atol=0.0) if via == "ceiling" else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(adaptive.chosen_beta, torch.tensor(betas, dtype=torch.float64), **tolerance)
    torch.testing.assert_close(base.chosen_beta, torch.tensor(betas, dtype=torch.float64), rtol=0.0, atol=0.0)
    for field in ("losses", "chosen_rewards", "rejected_rewards"):
        torch.testing.assert_close(getattr(adaptive, field), getattr(base, field), **tolerance)


def test_adaptive_form_differs_from_base_form_when_the_coefficient_is_not_one():
    """The coefficient-one equalities above are not vacuous: on the unbalanced batch the forms differ."""
    pc, pr, rc, rr, lc, lr = small_batch()
    lengths = dict(chosen_lengths=lc, rejected_lengths=lr)
    pairs = [
        (
            rdpo_loss(pc, pr, rc, rr, 0.2, alpha=0.02, **lengths),
            adaptive_rdpo_loss(pc, pr, rc, rr, 0.2, alpha=0.02, **lengths),
        ),
        (cpo_loss(pc, pr, 0.2), adaptive_cpo_loss(pc, pr, 0.2)),
        (orpo_loss(pc, pr, 0.2, **lengths), adaptive_orpo_loss(pc, pr, 0.2, **lengths)),
        (simpo_loss(pc, pr, 0.2, **lengths), adaptive_simpo_loss(pc, pr, 0.2, **lengths)),
    ]
    for base, adaptive in pairs:
        assert not torch.allclose(base.losses, adaptive.losses, rtol=1e-6, atol=0)


# ---------------------------------------------------------------- equality with TRL 1.16's implementations


def trl_trainer_stub(**attributes) -> types.SimpleNamespace:
    """The attributes TRL's ``CPOTrainer.cpo_loss`` / ``ORPOTrainer.odds_ratio_loss`` read from ``self``.

    Both are instance methods that read only ``beta``, ``label_smoothing``, ``loss_type``, ``simpo_gamma``,
    ``alpha`` and ``accelerator.device``; building a trainer needs a model and a dataset, so the tests bind
    TRL's unmodified functions to this stand-in with ``types.MethodType``.
    """
    return types.SimpleNamespace(accelerator=types.SimpleNamespace(device=torch.device("cpu")), **attributes)


@pytest.mark.parametrize("per_example_beta", [False, True])
def test_cpo_loss_equals_trl_cpo_sigmoid(per_example_beta):
    pc, pr, _, _, _, _ = random_logps(7)
    beta = torch.linspace(0.05, 0.5, 6, dtype=torch.float64) if per_example_beta else 0.1
    stub = trl_trainer_stub(beta=beta, label_smoothing=0.0, loss_type="sigmoid", alpha=0.0)
    trl_losses, trl_chosen, trl_rejected = types.MethodType(CPOTrainer.cpo_loss, stub)(pc, pr)
    out = cpo_loss(pc, pr, beta)
    torch.testing.assert_close(out.losses, trl_losses, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out.chosen_rewards, trl_chosen, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out.rejected_rewards, trl_rejected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("per_example_beta", [False, True])
def test_simpo_loss_equals_trl_cpo_simpo_on_per_token_averages(per_example_beta):
    """TRL's SimPO path (``loss_type="simpo"``) is fed per-token average log-probs by ``CPOTrainer``
    itself; ours takes summed log-probs and the lengths. Feeding TRL the averages, the two agree."""
    pc, pr, _, _, lc, lr = random_logps(8)
    beta = torch.linspace(0.5, 2.5, 6, dtype=torch.float64) if per_example_beta else 2.0
    stub = trl_trainer_stub(beta=beta, label_smoothing=0.0, loss_type="simpo", simpo_gamma=0.5, alpha=0.0)
    trl_losses, trl_chosen, trl_rejected = types.MethodType(CPOTrainer.cpo_loss, stub)(pc / lc, pr / lr)
    out = simpo_loss(pc, pr, beta, chosen_lengths=lc, rejected_lengths=lr, gamma=0.5)
    torch.testing.assert_close(out.losses, trl_losses, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out.chosen_rewards, trl_chosen, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(out.rejected_rewards, trl_rejected, rtol=1e-12, atol=1e-14)


def test_orpo_loss_odds_ratio_term_equals_trl_at_beta_one():
    """TRL's ORPO: ``loss = NLL − mean(λ · log σ(log odds_w − log odds_l))`` with λ = ``beta`` outside the
    log-sigmoid; Table 2 (our ``orpo_loss``) puts β inside. At β = λ = 1 the odds-ratio terms coincide:
    ``orpo_loss(...).losses + log P_w == −odds_ratio_loss(...)[0]`` on per-token average log-probs. At
    β = λ ≠ 1 the per-example objectives ``−log P_w − λ log σ(·)`` and ours differ (not an equality)."""
    pc, pr, _, _, lc, lr = random_logps(9)
    lc, lr = lc + 40, lr + 40  # per-token averages in (−1, 0): TRL computes them in float32
    chosen, rejected = (pc / lc).float(), (pr / lr).float()
    trl_losses = types.MethodType(ORPOTrainer.odds_ratio_loss, trl_trainer_stub(beta=1.0))(chosen, rejected)[0]
    out = orpo_loss(pc.float(), pr.float(), 1.0, chosen_lengths=lc, rejected_lengths=lr)
    torch.testing.assert_close(out.losses + chosen, -trl_losses)

    trl_half = types.MethodType(ORPOTrainer.odds_ratio_loss, trl_trainer_stub(beta=0.5))(chosen, rejected)[0]
    ours_half = orpo_loss(pc.float(), pr.float(), 0.5, chosen_lengths=lc, rejected_lengths=lr)
    assert not torch.allclose(ours_half.losses, -chosen - trl_half, rtol=1e-3, atol=0)


# ---------------------------------------------------------------- properties

finite_logp = st.floats(min_value=-60.0, max_value=-0.01, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(finite_logp, finite_logp, finite_logp, finite_logp), min_size=1, max_size=8),
    st.floats(min_value=1e-3, max_value=5.0),
)
def test_adadpo_coefficient_carries_no_gradient_and_loss_is_finite(values, beta):
    pc, pr, rc, rr = (torch.tensor(col, dtype=torch.float64, requires_grad=True) for col in zip(*values))
    out = adadpo_loss(pc, pr, rc, rr, beta)
    assert not out.chosen_beta.requires_grad
    assert torch.isfinite(out.losses).all()
    out.losses.sum().backward()
    # With sg(β_w): ∂L/∂πw = −σ(−Δ)·β_w exactly; a gradient through β_w would add a term.
    delta = (out.chosen_beta * (pc - rc) - beta * (pr - rr)).detach()
    torch.testing.assert_close(pc.grad, -torch.sigmoid(-delta) * out.chosen_beta, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pr.grad, torch.sigmoid(-delta) * beta, rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(
    st.floats(min_value=0.05, max_value=0.95),
    st.floats(min_value=0.05, max_value=0.95),
    st.floats(min_value=0.05, max_value=0.95),
    st.floats(min_value=0.05, max_value=0.95),
    st.floats(min_value=0.01, max_value=1.0),
)
def test_adadpo_balances_gradients_on_probabilities(p_w, p_l, r_w, r_l, beta):
    """AdaDPO (Chen et al.) eq. (8): with the ceiling not binding, |∂L/∂P_w| = |∂L/∂P_l| (policy space)
    and |∂L/∂x_w| = |∂L/∂x_l| with x = P/R (ratio space)."""
    probs = torch.tensor([p_w, p_l], dtype=torch.float64, requires_grad=True)
    refs = torch.tensor([math.log(r_w), math.log(r_l)], dtype=torch.float64)
    logp = probs.log()
    out = adadpo_loss(logp[:1], logp[1:], refs[:1], refs[1:], beta, space="policy", clip=None)
    out.losses.sum().backward()
    assert abs(probs.grad[0].item()) == pytest.approx(abs(probs.grad[1].item()), rel=1e-9)

    ratios = torch.tensor([p_w / r_w, p_l / r_l], dtype=torch.float64, requires_grad=True)
    policy_logp = ratios.log() + refs  # log P = log x + log R
    out = adadpo_loss(policy_logp[:1], policy_logp[1:], refs[:1], refs[1:], beta, space="ratio", clip=None)
    out.losses.sum().backward()
    assert abs(ratios.grad[0].item()) == pytest.approx(abs(ratios.grad[1].item()), rel=1e-9)


def test_adadpo_gradient_ratio_on_log_probs_is_the_coefficient():
    """∂L/∂log P_w : ∂L/∂log P_l = β_w : β_l = min(k·exp(ℓ), C) when the ceiling does not bind."""
    pc, pr, rc, rr, lc, lr = random_logps(5)
    pc, pr = (rc + (pc - rc) * 0.01).requires_grad_(), (rr + (pr - rr) * 0.01).requires_grad_()
    out = adadpo_loss(pc, pr, rc, rr, 0.1, chosen_lengths=lc, rejected_lengths=lr, clip=100.0, k=1.0)
    out.losses.sum().backward()
    expected_ratio = torch.exp((pc / lc - pr / lr - rc / lc + rr / lr).detach())
    torch.testing.assert_close((pc.grad / pr.grad).abs(), expected_ratio, rtol=1e-9, atol=0)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(finite_logp, finite_logp, finite_logp, finite_logp), min_size=1, max_size=8),
    st.floats(min_value=1e-3, max_value=10.0),
)
def test_dpo_and_ipo_losses_are_finite_and_nonnegative(values, beta):
    pc, pr, rc, rr = (torch.tensor(col, dtype=torch.float64) for col in zip(*values))
    for out in (dpo_loss(pc, pr, rc, rr, beta), ipo_loss(pc, pr, rc, rr, beta), adadpo_loss(pc, pr, rc, rr, beta)):
        assert torch.isfinite(out.losses).all() and (out.losses >= 0).all()


# ---------------------------------------------------------------- bad input


def test_bad_beta_and_shapes_name_the_argument():
    pc, pr, rc, rr, lc, lr = random_logps(6)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, 0.0)
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, torch.full((6,), float("nan")))
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(pc, pr, rc, rr, torch.ones(5))
    with pytest.raises(TypeError, match="beta"):
        dpo_loss(pc, pr, rc, rr, "0.1")
    with pytest.raises(ValueError, match="ref_rejected_logps"):
        dpo_loss(pc, pr, rc, rr[:5], 0.1)
    with pytest.raises(ValueError, match="policy_chosen_logps"):
        dpo_loss(pc.unsqueeze(0), pr, rc, rr, 0.1)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(pc, pr, rc, rr, 0.1, label_smoothing=0.5)
    with pytest.raises(ValueError, match="space"):
        adadpo_loss(pc, pr, rc, rr, 0.1, space="logit")
    with pytest.raises(ValueError, match="clip"):
        adadpo_loss(pc, pr, rc, rr, 0.1, clip=0.0)
    with pytest.raises(ValueError, match="together"):
        adadpo_loss(pc, pr, rc, rr, 0.1, chosen_lengths=lc)
    with pytest.raises(ValueError, match="chosen_lengths"):
        adadpo_loss(pc, pr, rc, rr, 0.1, chosen_lengths=lc * 0, rejected_lengths=lr)
    with pytest.raises(ValueError, match="chosen_lengths"):
        adaptive_simpo_loss(pc, pr, 0.1, chosen_lengths=None, rejected_lengths=None)
    with pytest.raises(ValueError, match="chosen_lengths"):
        simpo_loss(pc, pr, 0.1, chosen_lengths=None, rejected_lengths=None)
    with pytest.raises(ValueError, match="rdpo_loss"):
        rdpo_loss(pc, pr, rc, rr, 0.1, chosen_lengths=None, rejected_lengths=None, alpha=0.01)
    with pytest.raises(ValueError, match="alpha"):
        rdpo_loss(pc, pr, rc, rr, 0.1, chosen_lengths=lc, rejected_lengths=lr, alpha=-0.1)
    with pytest.raises(ValueError, match="gamma"):
        simpo_loss(pc, pr, 0.1, chosen_lengths=lc, rejected_lengths=lr, gamma=float("inf"))
    with pytest.raises(ValueError, match="orpo_loss needs log-probabilities < 0"):
        orpo_loss(pc, -pr, 0.1)
    with pytest.raises(ValueError, match="beta"):
        cpo_loss(pc, pr, -0.1)


# ---------------------------------------------------------------- a loss of one's own


def test_a_loss_defined_outside_the_package_trains_as_a_method(tmp_path):
    # As in README's "Adding a controller or a loss": a notebook cell defines and registers it.
    from dataclasses import dataclass, field

    from dualloop.__main__ import main
    from dualloop.losses import LOSSES, Loss, LossOutput, SequenceLogps, register_loss
    from dualloop.registry import Run

    @dataclass(frozen=True)
    class HingeArguments:
        delta: float = field(default=1.0, metadata={"help": "The margin δ the hinge asks for."})

    def dpo_margin(logps: SequenceLogps) -> torch.Tensor:
        chosen, rejected, ref_chosen, ref_rejected = logps.referenced()
        return (chosen - ref_chosen) - (rejected - ref_rejected)

    def hinge(logps: SequenceLogps, beta: torch.Tensor, arguments: HingeArguments) -> LossOutput:
        """SLiC's hinge on DPO's margin: ``max(0, δ − β M)``."""
        chosen, rejected, ref_chosen, ref_rejected = logps.referenced()
        losses = torch.relu(arguments.delta - beta * dpo_margin(logps))
        return LossOutput(
            losses, (beta * (chosen - ref_chosen)).detach(), (beta * (rejected - ref_rejected)).detach(), beta
        )

    before = dict(LOSSES)
    try:
        register_loss(Loss("hinge", hinge, dpo_margin, needs_reference=True, arguments=HingeArguments, method=True))
        argv = ["train", "--profile", "smoke", "--method", "hinge", "--steps", "2", "--out", str(tmp_path)]
        assert main([*argv, "--set", "training.loss_kwargs.delta=0.5"]) == 0
    finally:
        LOSSES.clear()
        LOSSES.update(before)
    (run_dir,) = [path.parent for path in (tmp_path / "registry").rglob("COMPLETE")]
    run = Run(run_dir)
    training = run.config["training"]
    assert (training["controller"], training["loss_type"], training["loss_kwargs"]) == (
        "static",
        "hinge",
        {"delta": 0.5},
    )
    first = next(row for row in run.history() if "loss" in row)
    # step 1: the LoRA adapter starts at zero, so the policy is the reference, M = 0 and the loss is δ
    assert first["loss"] == pytest.approx(0.5, abs=1e-6)


def test_a_loss_with_a_taken_name_or_no_arguments_dataclass_is_refused():
    from dualloop.losses import LOSSES, Loss, register_loss

    sigmoid = LOSSES["sigmoid"]
    assert register_loss(Loss("sigmoid", sigmoid.loss, sigmoid.margin, True, type(sigmoid.arguments()))) is not None
    LOSSES["sigmoid"] = sigmoid  # the same definition again replaced it (a notebook cell run twice)
    with pytest.raises(ValueError, match="loss name 'sigmoid' is taken"):
        register_loss(Loss("sigmoid", lambda logps, beta, arguments: None, sigmoid.margin, True))
    with pytest.raises(TypeError, match="arguments must be a dataclass"):
        register_loss(Loss("other", sigmoid.loss, sigmoid.margin, True, arguments=dict))
