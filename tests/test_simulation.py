"""The walkthrough's formulas and what its simulated controllers are claimed to show."""

import math

import pytest

from dualloop.controllers import DualLoop, Static
from dualloop.simulation import ToyTraining, gradient_balance, gradient_scale, margin_after_steps, simulate, summarize


def test_gradient_scale_is_eq1_of_the_paper():
    for beta, margin in ((0.1, 0.0), (0.5, 2.0), (2.0, -1.0)):
        assert gradient_scale(beta, margin) == pytest.approx(beta / (1 + math.exp(beta * margin)))
    assert gradient_scale(0.2, 0.0) == pytest.approx(0.5 * 0.2)  # laziness: 0.5 β at M = 0


def test_margin_after_steps_follows_the_push_of_eq1():
    path = margin_after_steps(0.5, 3, learning_rate=2.0)
    expected = [0.0]
    for _ in range(3):
        expected.append(expected[-1] + 2.0 * 0.5 / (1 + math.exp(0.5 * expected[-1])))
    assert path.tolist() == pytest.approx(expected)


def test_gradient_balance_table_reproduces_papers_003_example():
    """P_w = 0.10, P_l = 0.02: DPO's gradient on y_w is 1/5 of that on y_l; AdaDPO balances it up to C."""
    table = gradient_balance([(0.10, 0.02), (0.3, 0.2)], clip=2.0)
    assert table["DPO |dL/dP_w| / |dL/dP_l|"].tolist() == pytest.approx([0.2, 0.2 / 0.3])
    assert table["AdaDPO |dL/dP_w| / |dL/dP_l|"].tolist() == pytest.approx([2.0 * 0.2, 1.0])
    unclipped = gradient_balance([(0.10, 0.02)], clip=None)
    assert unclipped["AdaDPO |dL/dP_w| / |dL/dP_l|"].item() == pytest.approx(1.0)


def test_dualloop_holds_the_simulated_kl_near_its_target_where_static_beta_drifts():
    trajectories = {
        "static": simulate(Static(0.1), 300, ToyTraining(seed=1)),
        "dualloop": simulate(DualLoop(kl_target=0.04), 300, ToyTraining(seed=1)),
    }
    summary = summarize(trajectories, kl_target=0.04, last=100)
    assert summary.loc["dualloop", "|KL − target| / target"] < 0.15
    assert summary.loc["static", "|KL − target| / target"] > 1.0


def test_fast_loop_raises_beta_on_uncertain_batches():
    frame = simulate(DualLoop(), 70, ToyTraining(seed=2, uncertain_every=7))
    ratio = frame["beta"] / frame["beta/base"].shift(1, fill_value=0.1)
    assert ratio[frame["uncertain"]].min() > ratio[~frame["uncertain"]].iloc[20:].max()
