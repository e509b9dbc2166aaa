"""Controllers against hand computations of their formulas (DualLoop-DPO eqs. 2–3, β-DPO, ε-DPO), plus properties.

The reference trajectories below are re-derived in plain Python (``math``, ``statistics``) from
the formulas, independently of the tensor code under test.
"""

import json
import math
import random
import statistics

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_statistics import epsilon_steps, logratio_kl, token_kl

from dualloop.controllers import (
    Annealed,
    BatchStats,
    BetaDPO,
    DualLoop,
    EpsilonDPO,
    Static,
)


def margin_stream(seed: int, steps: int, size: int = 8):
    rng = random.Random(seed)
    return [[rng.gauss(rng.uniform(-2, 2), rng.uniform(0.1, 3)) for _ in range(size)] for _ in range(steps)]


def kl_stream(seed: int, steps: int):
    """KL per step: above the 0.04 target for the first half, below it for the second."""
    rng = random.Random(seed)
    return [rng.uniform(0.02, 0.12) if t < steps // 2 else rng.uniform(0.0, 0.05) for t in range(steps)]


def stats_of(margins, **kwargs):
    return BatchStats(torch.tensor(margins, dtype=torch.float64), **kwargs)


# ---------------------------------------------------------------- Static and Annealed


def test_static_gives_its_beta_to_every_example_forever():
    controller = Static(0.2)
    for margins in margin_stream(0, 5):
        decision = controller.decide(stats_of(margins))
        assert decision.beta.tolist() == pytest.approx([0.2] * 8)
        assert decision.weight.tolist() == [1.0] * 8
        controller.step(stats_of(margins))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_annealed_trajectory_matches_schedule(schedule):
    start, end, total = 0.2, 0.05, 10
    controller = Annealed(start, end, total, schedule=schedule)
    for t in range(total + 4):
        x = min(t / total, 1.0)
        g = 1 - x if schedule == "linear" else (1 + math.cos(math.pi * x)) / 2
        expected = end + (start - end) * g
        assert controller.decide(stats_of([0.0, 1.0])).beta.tolist() == pytest.approx([expected] * 2, rel=1e-6)
        assert controller.metrics()["beta/base"] == pytest.approx(expected, rel=1e-12)
        controller.step(stats_of([0.0, 1.0]))
    assert controller.metrics()["beta/base"] == pytest.approx(end)


# ---------------------------------------------------------------- DualLoop


def hand_dualloop(
    margin_batches,
    kls,
    *,
    beta_init=0.1,
    kl_target=0.04,
    lam=4.0,
    eta=0.01,
    ema_alpha=0.1,
    deadband=0.1,
    beta_min=0.05,
    beta_max=2.0,
    fast_loop=True,
    use_ema=True,
    clip=True,
    scope="batch",
    kl_ema_init="target",
):
    """DualLoop-DPO eqs. 2–3 with the EMA, dead-band and clipping of the controller, one step at a time;
    the EMA starts at the target (or, with kl_ema_init="first", at the first KL)."""
    beta_base, kl_ema = beta_init, (kl_target if kl_ema_init == "target" else None)
    betas, bases = [], []
    for margins, kl in zip(margin_batches, kls):
        entropies = []
        for m in margins:
            p = 1 / (1 + math.exp(-beta_base * m))
            entropies.append(-(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2) if 0 < p < 1 else 0.0)
        lam_used = lam if fast_loop else 0.0
        if scope == "batch":
            betas.append([beta_base * (1 + lam_used * sum(entropies) / len(entropies))] * len(margins))
        else:
            betas.append([beta_base * (1 + lam_used * h) for h in entropies])
        alpha = ema_alpha if use_ema else 1.0
        kl_ema = kl if kl_ema is None else (1 - alpha) * kl_ema + alpha * kl
        error = (kl_ema - kl_target) / kl_target
        if abs(error) > deadband:
            beta_base = beta_base * math.exp(eta * error)
            if clip:
                beta_base = min(max(beta_base, beta_min), beta_max)
        bases.append(beta_base)
    return betas, bases


ABLATIONS = {
    "default": {},
    "no_ema": {"use_ema": False},
    "no_fast_loop": {"fast_loop": False},
    "no_clip": {"clip": False},
    "no_deadband": {"deadband": 0.0},
    "example_scope": {"fast_loop_scope": "example"},
    "fast_eta_hits_bounds": {"eta": 0.8, "beta_init": 0.5},
    "ema_starts_at_first_kl": {"kl_ema_init": "first"},
}


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_dualloop_trajectory_matches_hand_computation(ablation):
    options = ABLATIONS[ablation]
    steps = 150
    margins, kls = margin_stream(1, steps), kl_stream(2, steps)
    hand_options = {("scope" if key == "fast_loop_scope" else key): value for key, value in options.items()}
    expected_betas, expected_bases = hand_dualloop(margins, kls, **hand_options)
    controller = DualLoop(**options)
    for t in range(steps):
        decision = controller.decide(stats_of(margins[t]))
        assert decision.beta.tolist() == pytest.approx(expected_betas[t], rel=1e-6)
        controller.step(stats_of(margins[t], kl=kls[t]))
        assert controller.beta_base == pytest.approx(expected_bases[t], rel=1e-12)
    if ablation == "fast_eta_hits_bounds":
        assert min(expected_bases) == 0.05 and max(expected_bases) == 2.0


def test_dualloop_kl_ema_starts_at_the_target_so_a_zero_first_kl_is_one_alpha_step_below_it():
    # A LoRA run's first KL is exactly 0 (the adapter starts at zero). Started at the target, the EMA is
    # (1 - 0.05) * 0.04 = 0.038 after it: e = -0.05, inside the 10 % dead-band, so β_base is held.
    controller = DualLoop(kl_target=0.04, ema_alpha=0.05, deadband=0.1)
    controller.step(stats_of([0.0], kl=0.0))
    assert controller.kl_ema == pytest.approx(0.038, abs=1e-15) and controller.beta_base == 0.1
    assert controller.metrics()["controller/deadband_held"] == 1
    # Started at the first KL, the same step is e = -1: β_base = 0.1 * exp(0.01 * -1).
    first = DualLoop(kl_target=0.04, ema_alpha=0.1, deadband=0.1, kl_ema_init="first")
    first.step(stats_of([0.0], kl=0.0))
    assert first.kl_ema == 0.0 and first.beta_base == pytest.approx(0.1 * math.exp(-0.01), rel=1e-12)
    with pytest.raises(ValueError, match="kl_ema_init"):
        DualLoop(kl_ema_init="zero")


def test_dualloop_holds_beta_inside_deadband():
    controller = DualLoop(kl_target=0.04, deadband=0.1)
    for kl in (0.04, 0.0439, 0.0361, 0.044, 0.0401):
        controller.step(stats_of([0.0], kl=kl))
    assert controller.beta_base == 0.1


def test_dualloop_raises_beta_on_uncertain_batches():
    controller = DualLoop(beta_init=0.1, lam=4.0)
    uncertain = controller.decide(stats_of([0.0] * 4)).beta[0].item()  # σ(0) = 0.5: entropy 1
    confident = controller.decide(stats_of([300.0] * 4)).beta[0].item()
    assert uncertain == pytest.approx(0.1 * 5)
    assert confident == pytest.approx(0.1, rel=1e-6)


def test_dualloop_logged_entropy_is_over_every_micro_batch_of_the_step():
    controller = DualLoop(beta_init=0.1)
    controller.decide(stats_of([0.0, 0.0]))  # h = 1, 1
    controller.decide(stats_of([300.0, 300.0, 300.0, 0.0]))  # h ≈ 0, 0, 0, 1
    controller.step(stats_of([0.0], kl=0.04))
    assert controller.metrics()["entropy"] == pytest.approx(3 / 6, abs=1e-6)  # not the last micro-batch's 1/4
    controller.decide(stats_of([300.0]))
    controller.step(stats_of([0.0], kl=0.04))
    assert controller.metrics()["entropy"] == pytest.approx(0.0, abs=1e-6)  # the next step starts afresh


def test_dualloop_evaluation_changes_no_state():
    controller = DualLoop()
    controller.decide(stats_of([0.5, -0.5]))
    before = controller.state_dict()
    controller.decide(stats_of([9.0, 9.0]), train=False)
    assert controller.state_dict() == before


# ---------------------------------------------------------------- β-DPO


def test_beta_dpo_without_filtering_matches_hand_computation():
    beta0, a, gamma = 0.1, 0.6, 0.9
    controller = BetaDPO(beta0, a=a, rho=0.0, gamma=gamma)
    m0 = sigma0 = 0.0
    for margins in margin_stream(3, 60):
        m0 = gamma * m0 + (1 - gamma) * statistics.fmean(margins)
        sigma0 = gamma * sigma0 + (1 - gamma) * statistics.stdev(margins)
        expected = max(beta0 * (1 + a * (statistics.fmean(margins) - m0)), 1e-3)
        decision = controller.decide(stats_of(margins))
        assert decision.weight.tolist() == [1.0] * 8
        assert decision.beta.tolist() == pytest.approx([expected] * 8, rel=1e-6)
        metrics = controller.metrics()
        assert metrics["m0"] == pytest.approx(m0, rel=1e-12, abs=1e-15)
        assert metrics["sigma0"] == pytest.approx(sigma0, rel=1e-12)


def test_beta_dpo_with_filtering_keeps_floor_n_times_one_minus_rho_and_uses_their_mean():
    beta0, a, gamma, rho = 0.1, 0.6, 0.9, 0.2
    controller = BetaDPO(beta0, a=a, rho=rho, gamma=gamma, seed=7)
    m0 = 0.0
    for margins in margin_stream(4, 40, size=10):
        m0 = gamma * m0 + (1 - gamma) * statistics.fmean(margins)
        decision = controller.decide(stats_of(margins))
        kept = [m for m, w in zip(margins, decision.weight.tolist()) if w == 1.0]
        assert len(kept) == math.floor(10 * (1 - rho)) == 8
        assert set(decision.weight.tolist()) <= {0.0, 1.0}
        expected = max(beta0 * (1 + a * (statistics.fmean(kept) - m0)), 1e-3)
        assert decision.beta.tolist() == pytest.approx([expected] * 10, rel=1e-6)


def test_beta_dpo_sampling_is_seeded_and_prefers_margins_near_m0():
    margins = margin_stream(5, 30, size=10)
    masks = []
    for _ in range(2):
        controller = BetaDPO(0.1, rho=0.5, seed=11)
        masks.append([controller.decide(stats_of(m)).weight.tolist() for m in margins])
    assert masks[0] == masks[1]
    other = BetaDPO(0.1, rho=0.5, seed=12)
    assert [other.decide(stats_of(m)).weight.tolist() for m in margins] != masks[0]

    # One outlier far from the running mean is dropped far more often than the central margins.
    controller = BetaDPO(0.1, rho=0.5, seed=0)
    outlier_kept = 0
    for t in range(200):
        batch = [0.1 * ((t + i) % 5 - 2) for i in range(9)] + [25.0]
        outlier_kept += int(controller.decide(stats_of(batch)).weight[-1].item())
    assert outlier_kept < 40  # uniform sampling would keep it ~100 times out of 200


def test_beta_dpo_batch_of_one_keeps_sigma_and_skips_filtering():
    controller = BetaDPO(0.1, rho=0.2)
    controller.decide(stats_of([1.0, 3.0]))
    sigma0 = controller.metrics()["sigma0"]
    decision = controller.decide(stats_of([2.0]))
    assert controller.metrics()["sigma0"] == sigma0 == pytest.approx(0.1 * statistics.stdev([1.0, 3.0]))
    assert decision.weight.tolist() == [1.0]


def test_beta_dpo_beta_has_a_floor_and_evaluation_changes_no_state():
    controller = BetaDPO(0.1, a=10.0, rho=0.0, gamma=0.0)
    controller.decide(stats_of([5.0, 5.0]))
    assert controller.decide(stats_of([-50.0, -60.0])).beta[0].item() == pytest.approx(0.1 * (1 + 10 * 0), rel=1e-6)
    floor_controller = BetaDPO(0.1, a=10.0, rho=0.0, gamma=0.9)
    floor_controller.decide(stats_of([5.0, 5.0]))
    before = floor_controller.state_dict()
    assert floor_controller.decide(stats_of([-50.0, -60.0]), train=False).beta[0].item() == pytest.approx(1e-3)
    assert floor_controller.state_dict() == before


# ---------------------------------------------------------------- ε-DPO


def hand_log_softmax(row):
    top = max(row)
    log_total = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_total for v in row]


def hand_sequence_logp(logits, labels, mask):
    return sum(hand_log_softmax(logits[t])[labels[t]] for t in range(len(labels)) if mask[t])


def test_epsilon_steps_match_hand_computation():
    generator = torch.Generator().manual_seed(0)
    pairs, length, vocab, epsilon = 6, 5, 7, 0.3
    policy = torch.randn(2 * pairs, length, vocab, generator=generator, dtype=torch.float64) * 3
    ref = torch.randn(2 * pairs, length, vocab, generator=generator, dtype=torch.float64) * 3
    labels = torch.randint(0, vocab, (2 * pairs, length), generator=generator)
    mask = (torch.rand(2 * pairs, length, generator=generator) > 0.3).long()
    mask[:, -1] = 1
    steps = epsilon_steps(policy, ref, labels, mask, epsilon, chunk_size=3)

    expected = []
    for i in range(pairs):
        z = {}
        for name, (a, b) in {
            "theta": (1.0, 0.0),
            "plus": (1 + epsilon, -epsilon),
            "minus": (1 - epsilon, epsilon),
        }.items():
            logps = []
            for row in (i, i + pairs):
                mixed = (a * policy[row] + b * ref[row]).tolist()
                logps.append(hand_sequence_logp(mixed, labels[row].tolist(), mask[row].tolist()))
            z[name] = logps[0] - logps[1]
        if z["plus"] > z["theta"] > z["minus"]:
            expected.append(1)
        elif z["minus"] > z["theta"] > z["plus"]:
            expected.append(-1)
        else:
            expected.append(0)
    assert steps.tolist() == expected
    assert set(expected) == {-1, 0, 1} or len(set(expected)) >= 2


def test_epsilon_dpo_beta_tilde_and_global_update():
    beta, epsilon = 0.1, 0.01
    controller = EpsilonDPO(beta, epsilon)
    rng = random.Random(3)
    for _ in range(50):
        steps = [rng.choice([-1, 0, 1]) for _ in range(8)]
        stats = BatchStats(torch.zeros(8), epsilon_steps=torch.tensor(steps))
        decision = controller.decide(stats)
        assert decision.beta.tolist() == pytest.approx([beta / (1 + epsilon * s) for s in steps], rel=1e-6)
        controller.step(stats)
        beta = beta / (1 + epsilon * statistics.fmean(steps))
        assert controller.metrics()["beta/base"] == pytest.approx(beta, rel=1e-12)
        assert controller.metrics()["epsilon/step_up_fraction"] == pytest.approx(steps.count(1) / 8)


def test_token_kl_matches_hand_computation():
    generator = torch.Generator().manual_seed(1)
    policy = torch.randn(3, 4, 6, generator=generator, dtype=torch.float64)
    ref = torch.randn(3, 4, 6, generator=generator, dtype=torch.float64)
    mask = torch.tensor([[0, 1, 1, 1], [0, 0, 1, 1], [1, 1, 1, 0]])
    values = []
    for n in range(3):
        for t in range(4):
            if mask[n, t]:
                p, q = hand_log_softmax(policy[n, t].tolist()), hand_log_softmax(ref[n, t].tolist())
                values.append(sum(math.exp(a) * (a - b) for a, b in zip(p, q)))
    assert token_kl(policy, ref, mask, chunk_size=2).item() == pytest.approx(statistics.fmean(values), rel=1e-6)
    assert token_kl(policy, policy, mask).item() == pytest.approx(0.0, abs=1e-7)


def test_logratio_kl_is_absolute_log_ratio_per_token():
    value = logratio_kl(
        torch.tensor([-3.0, -5.0]),
        torch.tensor([-4.0, -1.0]),
        torch.tensor([-2.0, -5.5]),
        torch.tensor([-4.5, -2.0]),
        torch.tensor([4, 6]),
        torch.tensor([5, 5]),
    )
    assert value == pytest.approx((1.0 + 0.5 + 0.5 + 1.0) / 20)


# ---------------------------------------------------------------- properties

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
kl_values = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.lists(finite, min_size=1, max_size=6), kl_values), min_size=1, max_size=25),
    st.sampled_from(["batch", "example"]),
)
def test_dualloop_beta_is_finite_and_bounded_for_any_finite_statistics(batches, scope):
    controller = DualLoop(eta=0.5, fast_loop_scope=scope)
    for margins, kl in batches:
        beta = controller.decide(stats_of(margins)).beta
        assert torch.isfinite(beta).all()
        assert (beta >= 0.05 - 1e-9).all() and (beta <= 2.0 * (1 + 4.0) + 1e-6).all()
        controller.step(stats_of(margins, kl=kl))
        assert 0.05 <= controller.beta_base <= 2.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(finite, min_size=1, max_size=8), min_size=1, max_size=20))
def test_beta_dpo_beta_is_finite_and_floored_for_any_finite_margins(batches):
    controller = BetaDPO(0.1, rho=0.3)
    for margins in batches:
        decision = controller.decide(stats_of(margins))
        assert torch.isfinite(decision.beta).all() and (decision.beta >= 1e-3 - 1e-12).all()
        assert decision.weight.sum() >= 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from([-1, 0, 1]), min_size=1, max_size=8), min_size=1, max_size=40))
def test_epsilon_dpo_beta_is_finite_and_positive(batches):
    controller = EpsilonDPO(0.1, 0.01)
    for steps in batches:
        stats = BatchStats(torch.zeros(len(steps)), epsilon_steps=torch.tensor(steps))
        assert (controller.decide(stats).beta > 0).all()
        controller.step(stats)
        assert math.isfinite(controller.metrics()["beta/base"]) and controller.metrics()["beta/base"] > 0


def make_controllers():
    return {
        "static": lambda: Static(0.1),
        "annealed": lambda: Annealed(0.2, 0.05, 30, schedule="cosine"),
        "dualloop": lambda: DualLoop(eta=0.2),
        "beta-dpo": lambda: BetaDPO(0.1, seed=3),
        "epsilon-dpo": lambda: EpsilonDPO(0.1, 0.05),
    }


def run_steps(controller, margins, kls, steps, start, stop):
    trajectory = []
    for t in range(start, stop):
        stats = stats_of(margins[t], kl=kls[t], epsilon_steps=torch.tensor(steps[t]))
        decision = controller.decide(stats)
        controller.step(stats)
        trajectory.append((decision.beta.tolist(), decision.weight.tolist(), controller.metrics()))
    return trajectory


@pytest.mark.parametrize("name", list(make_controllers()))
def test_state_dict_round_trip_mid_run_continues_the_identical_trajectory(name):
    factory = make_controllers()[name]
    total, split = 40, 17
    margins, kls = margin_stream(6, total), kl_stream(7, total)
    rng = random.Random(8)
    steps = [[rng.choice([-1, 0, 1]) for _ in range(8)] for _ in range(total)]
    uninterrupted = run_steps(factory(), margins, kls, steps, 0, total)
    first = factory()
    head = run_steps(first, margins, kls, steps, 0, split)
    resumed = factory()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))  # as a checkpoint stores it
    tail = run_steps(resumed, margins, kls, steps, split, total)
    assert head + tail == uninterrupted


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make,name",
    [
        (lambda: Static(0.0), "beta"),
        (lambda: Static(-1.0), "beta"),
        (lambda: Static(float("nan")), "beta"),
        (lambda: Annealed(0.2, 0.0, 10), "end"),
        (lambda: Annealed(0.2, 0.1, 0), "total_steps"),
        (lambda: Annealed(0.2, 0.1, 10, schedule="exponential"), "schedule"),
        (lambda: DualLoop(beta_init=0.0), "beta_init"),
        (lambda: DualLoop(beta_min=2.0, beta_max=2.0), "beta_min"),
        (lambda: DualLoop(beta_min=3.0, beta_max=2.0), "beta_min"),
        (lambda: DualLoop(kl_target=0.0), "kl_target"),
        (lambda: DualLoop(kl_target=-0.1), "kl_target"),
        (lambda: DualLoop(beta_init=5.0), "beta_init"),
        (lambda: DualLoop(ema_alpha=0.0), "ema_alpha"),
        (lambda: DualLoop(fast_loop_scope="token"), "fast_loop_scope"),
        (lambda: BetaDPO(0.0), "beta0"),
        (lambda: BetaDPO(0.1, rho=1.0), "rho"),
        (lambda: EpsilonDPO(0.1, epsilon=1.0), "epsilon"),
        (lambda: EpsilonDPO(-0.1), "beta"),
    ],
)
def test_invalid_arguments_raise_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=name):
        make()


def test_bad_statistics_raise_naming_the_field():
    with pytest.raises(ValueError, match="margins"):
        BatchStats(torch.tensor([0.1, float("nan")]))
    with pytest.raises(ValueError, match="margins"):
        BatchStats(torch.tensor([[0.1, 0.2]]))
    with pytest.raises(TypeError, match="margins"):
        BatchStats([0.1, 0.2])
    with pytest.raises(ValueError, match="kl"):
        BatchStats(torch.tensor([0.1]), kl=float("inf"))
    with pytest.raises(ValueError, match="kl"):
        BatchStats(torch.tensor([0.1]), kl=-0.5)
    with pytest.raises(ValueError, match="epsilon_steps"):
        BatchStats(torch.tensor([0.1, 0.2]), epsilon_steps=torch.tensor([1]))
    with pytest.raises(ValueError, match="epsilon_steps"):
        BatchStats(torch.tensor([0.1]), epsilon_steps=torch.tensor([2]))
    with pytest.raises(ValueError, match="kl"):
        DualLoop().step(stats_of([0.1]))
    with pytest.raises(ValueError, match="epsilon_steps"):
        EpsilonDPO().decide(stats_of([0.1]))
    with pytest.raises(ValueError, match="ref_logits"):
        token_kl(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), torch.ones(2, 3))
    with pytest.raises(ValueError, match="2B rows"):
        epsilon_steps(
            torch.zeros(3, 2, 4), torch.zeros(3, 2, 4), torch.zeros(3, 2, dtype=torch.long), torch.ones(3, 2), 0.01
        )
    with pytest.raises(ValueError, match="load_state_dict"):
        DualLoop().load_state_dict({"beta_base": 0.1})


def test_dualloop_counts_the_steps_where_the_clip_acted_and_the_dead_band_held():
    stats = lambda kl: BatchStats(margins=torch.zeros(2), kl=kl)  # noqa: E731
    # β_base = 2 = β_max; KL = 0.08 → e = 1 → log β_base + 0.01 > log 2: the clip keeps β_base at 2
    controller = DualLoop(beta_init=2.0, beta_max=2.0, use_ema=False)
    controller.step(stats(0.08))
    assert controller.beta_base == 2.0
    assert controller.metrics()["controller/clip_acted"] == 1
    # KL = 0 → e = −1 → β_base = 2·e^(−0.01), inside the bounds: the clip does not act
    controller.step(stats(0.0))
    assert controller.beta_base == pytest.approx(2.0 * math.exp(-0.01), rel=1e-15)
    # KL = 0.042 → e = 0.05 ≤ 0.1: the dead-band holds; KL = 0.04 → e = 0: nothing to hold
    controller.step(stats(0.042))
    controller.step(stats(0.04))
    assert controller.metrics()["controller/clip_acted"] == 1
    assert controller.metrics()["controller/deadband_held"] == 1
    assert controller.state_dict()["clip_acted"] == 1 and controller.state_dict()["deadband_held"] == 1


@given(st.integers(0, 10_000), st.floats(0.001, 0.5))
@settings(max_examples=40, deadline=None)
def test_while_a_switch_has_not_acted_its_ablation_sets_the_same_beta(seed, eta):
    """The premise of phase 3's reuse: no-clip (no-dead-band) equals the full controller at every step
    while controller/clip_acted (controller/deadband_held) is 0, and departs at the step it turns 1."""
    kls = [random.Random(seed + t).uniform(0.0, 0.3) for t in range(30)]
    for counter, ablation in (
        ("controller/clip_acted", {"clip": False}),
        ("controller/deadband_held", {"deadband": 0.0}),
    ):
        full = DualLoop(eta=eta, beta_max=0.3)
        ablated = DualLoop(eta=eta, beta_max=0.3, **ablation)
        for kl in kls:
            full.step(BatchStats(margins=torch.zeros(1), kl=kl))
            ablated.step(BatchStats(margins=torch.zeros(1), kl=kl))
            if full.metrics()[counter] == 0:
                assert ablated.beta_base == full.beta_base
            else:
                assert ablated.beta_base != full.beta_base
                break


# ---------------------------------------------------------------- a controller of one's own


@pytest.fixture
def restored_registries():
    """The controller and loss registries as they were before the test (a registration is global)."""
    from dualloop.controllers import CONTROLLERS
    from dualloop.losses import LOSSES

    saved = dict(CONTROLLERS), dict(LOSSES)
    yield
    for registry, before in zip((CONTROLLERS, LOSSES), saved, strict=True):
        registry.clear()
        registry.update(before)


def test_a_controller_defined_outside_the_package_trains_through_the_method_path(tmp_path, restored_registries):
    # As in README's "Adding a controller or a loss": a notebook cell defines and registers it.
    from dataclasses import dataclass, field

    from dualloop.__main__ import main
    from dualloop.controllers import BatchStats, BetaDecision, Controller, register_controller
    from dualloop.registry import Run

    @register_controller
    @dataclass(eq=False)
    class HalvingBeta(Controller):
        """β halves after every optimizer step, down to a floor; it asks the trainer for the KL."""

        name = "halving"
        beta_argument = "beta"
        needs = frozenset({"kl"})

        beta: float = field(default=0.1, metadata={"help": "β at step 0."})
        floor: float = field(default=0.01, metadata={"help": "The smallest β."})

        def __post_init__(self):
            self._beta, self._kl = self.beta, -1.0

        def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
            beta = torch.full_like(stats.margins, self._beta)
            return BetaDecision(beta, torch.ones_like(beta))

        def step(self, stats: BatchStats) -> None:
            self._beta, self._kl = max(self._beta / 2, self.floor), stats.kl

        def state_dict(self):
            return {"beta": self._beta, "kl": self._kl}

        def metrics(self):
            return {"beta/base": self._beta, "kl": self._kl}

    argv = ["train", "--profile", "smoke", "--method", "halving", "--steps", "2", "--out", str(tmp_path)]
    assert main([*argv, "--set", "training.controller_kwargs.floor=0.04"]) == 0
    (run_dir,) = [path.parent for path in (tmp_path / "registry").rglob("COMPLETE")]
    run = Run(run_dir)
    assert run.config["training"]["controller"] == "halving"
    rows = [row for row in run.history() if "loss" in row]
    assert [row["beta/base"] for row in rows] == [0.05, 0.04]  # 0.1 → 0.05 → max(0.025, floor 0.04)
    assert all(row["kl"] >= 0 for row in rows)  # the trainer computed the KL the controller declared


def test_a_notebook_cell_run_twice_replaces_its_controller(restored_registries):
    from dataclasses import dataclass, field

    from dualloop.controllers import CONTROLLERS, Controller, register_controller

    def cell():
        @register_controller
        @dataclass(eq=False)
        class HalvingBeta(Controller):
            name = "halving"
            beta_argument = "beta"
            beta: float = field(default=0.1, metadata={"help": "β."})

            decide = step = state_dict = metrics = lambda self, *args, **kwargs: None

        return HalvingBeta

    first, again = cell(), cell()
    assert first is not again and CONTROLLERS["halving"] is again


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"name": "static"}, "controller name 'static' is taken"),
        ({"beta_argument": "b"}, "beta_argument='b' must name one of its arguments"),
        ({"needs": frozenset({"entropy"})}, "unknown HalvingBeta.needs 'entropy'"),
        ({"needs": frozenset({"epsilon_steps"})}, "needs epsilon_steps, which are computed at its argument `epsilon`"),
    ],
)
def test_a_controller_that_cannot_be_trained_is_refused_at_registration(attributes, message, restored_registries):
    from dataclasses import dataclass, field

    from dualloop.controllers import Controller, register_controller

    @dataclass(eq=False)
    class HalvingBeta(Controller):
        name = "halving"
        beta_argument = "beta"
        beta: float = field(default=0.1, metadata={"help": "β."})

        decide = step = state_dict = metrics = lambda self, *args, **kwargs: None

    for key, value in attributes.items():
        setattr(HalvingBeta, key, value)
    with pytest.raises(ValueError, match=message):
        register_controller(HalvingBeta)
