"""Statistics of pairwise judging (dualloop.stats) against hand computations, the DualLoop-DPO paper's tables
and statsmodels/numpy computed directly."""

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa

from dualloop.stats import (
    agreement,
    cohens_kappa,
    confusion_table,
    count_outcomes,
    flip_rate_by_entropy,
    length_controlled_win_rate,
    planned_width,
    pool,
    pooled_over_seeds,
    round_half_up,
    win_rate,
    win_rate_of,
)

Z95 = 1.959963984540054  # scipy.stats.norm.ppf(0.975)

# DualLoop-DPO paper, Table 1 (N = 400 decisions per comparison): rate, low, high in percent.
TABLE_1 = {"vs. Base": (87.0, 83.7, 90.3), "vs. Static": (86.3, 82.9, 89.6), "vs. Annealed": (86.0, 82.6, 89.4)}
# The integer counts: k / 400 printed to one decimal (half-up) gives the rate; 86.3 % can only be
# 345 / 400 = 86.25 %, 86.0 % only 344 / 400, 87.0 % only 348 / 400.
TABLE_1_COUNTS = {"vs. Base": 348, "vs. Static": 345, "vs. Annealed": 344}


def test_table_1_counts_are_the_only_ones_printing_the_papers_rates():
    for row, (rate, _, _) in TABLE_1.items():
        matching = [k for k in range(401) if math.floor(1000 * k / 400 + 0.5) / 10 == rate]
        assert matching == [TABLE_1_COUNTS[row]]


@pytest.mark.parametrize("row", list(TABLE_1))
def test_wald_reproduces_table_1_intervals_from_counts(row):
    result = win_rate(TABLE_1_COUNTS[row], 400)
    assert result.percent() == TABLE_1[row]
    # the Wald interval by hand: p +/- z sqrt(p (1 - p) / n)
    p = TABLE_1_COUNTS[row] / 400
    half = Z95 * math.sqrt(p * (1 - p) / 400)
    assert result.low == pytest.approx(p - half, abs=1e-12)
    assert result.high == pytest.approx(p + half, abs=1e-12)
    assert (result.n, result.method) == (400, "wald")


def test_wilson_interval_equals_the_hand_formula():
    wins, n = 37, 50
    p = wins / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2))
    result = win_rate(wins, n, "wilson")
    assert result.rate == p
    assert result.low == pytest.approx(centre - half, abs=1e-9)
    assert result.high == pytest.approx(centre + half, abs=1e-9)


def test_bootstrap_is_seeded_and_close_to_wald_at_large_n():
    first = win_rate(310, 400, "bootstrap", seed=3, ties=20)
    again = win_rate(310, 400, "bootstrap", seed=3, ties=20)
    assert first == again
    wald = win_rate(310, 400)
    assert abs(first.low - wald.low) < 0.01 and abs(first.high - wald.high) < 0.01
    assert win_rate(50, 50, "bootstrap").percent() == (100.0, 100.0, 100.0)


def test_bootstrap_needs_ties_when_wins_are_not_whole():
    with pytest.raises(ValueError, match="ties"):
        win_rate(10.5, 20, "bootstrap")


def test_ties_count_half_and_are_reported():
    result = win_rate_of(["win", "tie", "loss", "win", "tie", 1, 0.5, 0])
    # wins by hand: 1 + .5 + 0 + 1 + .5 + 1 + .5 + 0 = 4.5 of 8
    assert (result.wins, result.ties, result.n, result.rate) == (4.5, 3, 8, 4.5 / 8)
    assert count_outcomes(["tie", "tie"]) == (1.0, 2, 2)


@pytest.mark.parametrize(
    ("wins", "n", "name"),
    [
        (401, 400, "wins=401"),
        (0, 0, "n=0"),
        (-1, 10, "wins=-1"),
        (float("nan"), 10, "wins=nan"),
        (3, float("nan"), "n=nan"),
        (3, -5, "n=-5"),
        (3.3, 10, "wins=3.3"),
        (3, 10.5, "n=10.5"),
    ],
)
def test_bad_counts_raise_naming_the_argument(wins, n, name):
    with pytest.raises(ValueError, match=name):
        win_rate(wins, n)


def test_bad_method_alpha_ties_and_outcomes_raise():
    with pytest.raises(ValueError, match="method='exact'"):
        win_rate(3, 10, "exact")
    with pytest.raises(ValueError, match="alpha=1.5"):
        win_rate(3, 10, alpha=1.5)
    with pytest.raises(ValueError, match="ties=3"):
        win_rate(3, 10, ties=3)  # 3 ties make 1.5 wins of the 3: not a whole number of full wins
    with pytest.raises(ValueError, match=r"outcomes\[1\]='unparseable'"):
        count_outcomes(["win", "unparseable"])


def test_table_3_aggregate_pools_the_decisions_of_both_judges():
    # DualLoop-DPO paper, Table 3, vs. Beta-DPO: primary 91.3 %, secondary 63.8 %, N = 200 per judge.
    # The half-win counts that print so at N = 200: 182.5 (91.25 %) and 127.5 (63.75 %).
    primary, secondary = win_rate(182.5, 200), win_rate(127.5, 200)
    assert primary.percent()[0] == 91.3 and secondary.percent()[0] == 63.8
    pooled = pool([primary, secondary])
    assert (pooled.wins, pooled.n) == (310.0, 400)
    assert pooled.rate == pytest.approx((0.9125 + 0.6375) / 2)
    # The paper prints 77.6 %. With 200 decisions per judge no counts give it: 77.6 is the mean of the
    # two rounded percentages, (91.3 + 63.8) / 2 = 77.55 (equal N makes pooling the mean of the rates).
    # Pooling does give it when a judge has fewer parsed decisions, e.g. 127 / 199 for the secondary:
    assert round_half_up((91.3 + 63.8) / 2) == 77.6
    fewer = pool([primary, win_rate(127, 199)])
    assert win_rate(127, 199).percent()[0] == 63.8 and fewer.percent()[0] == 77.6  # 309.5 / 399 = 77.57 %
    assert round_half_up((91.0 + 63.9) / 2) == 77.5  # vs. Epsilon-DPO, printed 77.5 %


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 300), st.data())
def test_pooling_equal_n_gives_the_mean_rate(n, data):
    halves = data.draw(st.lists(st.integers(0, 2 * n), min_size=1, max_size=4))
    results = [win_rate(h / 2, n) for h in halves]
    assert pool(results).rate == pytest.approx(np.mean([r.rate for r in results]))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 500), st.data(), st.sampled_from(["wald", "wilson"]))
def test_interval_contains_rate_and_stays_in_unit_range(n, data, method):
    wins = data.draw(st.integers(0, 2 * n)) / 2
    result = win_rate(wins, n, method)
    assert 0.0 <= result.low <= result.rate <= result.high <= 1.0


def test_agreement_and_kappa_by_hand():
    a = ["a", "a", "b", "b", "a", "b", "a", "a", "b", "a"]
    b = ["a", "b", "b", "b", "a", "a", "a", "a", "b", "b"]
    # table (rows a, cols b): [[a,a]=4, [a,b]=2], [[b,a]=1, [b,b]=3]
    assert agreement(a, b) == 0.7
    table, categories = confusion_table(a, b)
    assert categories == ["a", "b"] and table.tolist() == [[4, 2], [1, 3]]
    p_o = 0.7
    p_e = (6 / 10) * (5 / 10) + (4 / 10) * (5 / 10)  # marginals: a (6, 4), b (5, 5)
    assert cohens_kappa(a, b) == pytest.approx((p_o - p_e) / (1 - p_e))


def test_kappa_equals_statsmodels_on_the_same_table():
    rng = np.random.default_rng(7)
    a = rng.choice(["a", "b", "tie"], size=200, p=[0.6, 0.3, 0.1]).tolist()
    b = [x if rng.random() < 0.75 else rng.choice(["a", "b", "tie"]) for x in a]
    table = np.zeros((3, 3))
    order = {"a": 0, "b": 1, "tie": 2}
    for x, y in zip(a, b):
        table[order[x], order[y]] += 1
    assert cohens_kappa(a, b) == pytest.approx(sm_cohens_kappa(table).kappa, abs=1e-12)


def test_agreement_needs_paired_nonempty_decisions():
    with pytest.raises(ValueError, match="len\\(a\\)=2 != len\\(b\\)=1"):
        agreement(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        cohens_kappa([], [])


def test_flip_rate_by_entropy_bucket_by_hand():
    judgments = [["a", "a", "a"], ["a", "b", "a"], ["b", "b", "b"], ["a", "b", "b"], ["b", "b", "a"], ["a", "a", "a"]]
    entropy = [0.1, 0.2, 0.5, 0.6, 0.9, 0.95]
    low, high = flip_rate_by_entropy(judgments, entropy, edges=[0.0, 0.5, 1.0])
    # [0, 0.5): items 0, 1 -> 4 re-judgments, 1 flip; [0.5, 1]: items 2..5 -> 8 re-judgments, 3 flips
    assert (low.items, low.rejudgments, low.flips) == (2, 4, 1)
    assert (high.items, high.rejudgments, high.flips) == (4, 8, 3)
    assert low.flip_rate == 0.25 and high.flip_rate == 3 / 8
    tertiles = flip_rate_by_entropy(judgments, entropy, n_buckets=3)
    assert [b.items for b in tertiles] == [2, 2, 2]
    assert sum(b.flips for b in tertiles) == 4


def test_flip_rate_rejects_single_judgments_and_uncovered_entropy():
    with pytest.raises(ValueError, match="at least 2"):
        flip_rate_by_entropy([["a"], ["a", "b"]], [0.1, 0.2], n_buckets=1)
    with pytest.raises(ValueError, match="do not cover"):
        flip_rate_by_entropy([["a", "a"]], [0.7], edges=[0.0, 0.5])


def _newton_logistic(y, x):
    """Independent logistic regression (Newton-Raphson) with its inverse Fisher information."""
    beta = np.zeros(x.shape[1])
    for _ in range(100):
        p = 1 / (1 + np.exp(-x @ beta))
        hessian = x.T @ (x * (p * (1 - p))[:, None])
        beta = beta + np.linalg.solve(hessian, x.T @ (y - p))
    p = 1 / (1 + np.exp(-x @ beta))
    covariance = np.linalg.inv(x.T @ (x * (p * (1 - p))[:, None]))
    return beta, covariance


def test_length_controlled_win_rate_equals_an_independent_fit():
    rng = np.random.default_rng(11)
    length_a = rng.integers(50, 400, 120).astype(float)
    length_b = rng.integers(50, 400, 120).astype(float)
    difference = length_a - length_b
    logit = 0.4 + 1.5 * np.tanh(difference / difference.std(ddof=1))
    y = (rng.random(120) < 1 / (1 + np.exp(-logit))).astype(float)
    y[:6] = 0.5  # ties
    beta, covariance = _newton_logistic(
        y, np.column_stack([np.ones(120), np.tanh(difference / difference.std(ddof=1))])
    )
    result = length_controlled_win_rate(y, length_a, length_b)
    rate = 1 / (1 + np.exp(-beta[0]))
    assert result.rate == pytest.approx(rate, abs=1e-6)
    assert result.length_coef == pytest.approx(beta[1], abs=1e-6)
    assert result.se == pytest.approx(rate * (1 - rate) * math.sqrt(covariance[0, 0]), rel=1e-5)
    assert result.low < result.rate < result.high
    assert result.n == 120


def test_length_controlled_rate_removes_a_pure_length_preference():
    # The judge prefers the longer response every time; lengths are symmetric around zero difference.
    difference = np.array([-40, -30, -20, -10, 10, 20, 30, 40] * 5, dtype=float)
    y = (difference > 0).astype(float)
    y[[0, 7]] = 1 - y[[0, 7]]  # two against the length trend keep the fit finite
    raw = y.mean()
    result = length_controlled_win_rate(y, 100 + difference, np.full(40, 100.0))
    assert raw == 0.5 and result.rate == pytest.approx(0.5, abs=0.02)
    assert result.length_coef > 1


def test_length_controlled_rate_rejects_bad_input():
    with pytest.raises(ValueError, match="same"):
        length_controlled_win_rate([1, 0, 1], [5, 5, 5], [3, 3, 3])
    with pytest.raises(ValueError, match=r"preferences\[1\]=2.0"):
        length_controlled_win_rate([1, 2, 0], [1, 2, 3], [3, 2, 1])
    with pytest.raises(ValueError, match="one entry per pair"):
        length_controlled_win_rate([1, 0, 1], [1, 2], [3, 2, 1])


# --- accuracies and paired accuracy differences -----------------------------------------------


def _wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval by its formula (Wilson 1927)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("successes, n", [(62, 200), (0, 200), (200, 200), (3, 10)])
def test_accuracy_is_the_pass_fraction_with_the_wilson_interval(successes, n):
    from dualloop.stats import accuracy

    result = accuracy([True] * successes + [False] * (n - successes))
    low, high = _wilson(successes, n)
    assert (result.n, result.successes, result.method) == (n, successes, "wilson")
    assert result.rate == pytest.approx(successes / n)
    assert result.low == pytest.approx(max(low, 0.0), abs=1e-12)
    assert result.high == pytest.approx(min(high, 1.0), abs=1e-12)


def test_paired_difference_when_every_discordant_prompt_favours_a():
    """a passes 30, b 10 of 200, b's passes inside a's: 20 discordant, all for a. Clopper-Pearson
    for 20/20 is [0.025^(1/20), 1], so the interval is (20/200)(2·0.025^(1/20) − 1) .. 0.1."""
    from dualloop.stats import paired_accuracy_difference

    result = paired_accuracy_difference([True] * 30 + [False] * 170, [True] * 10 + [False] * 190)
    assert (result.a_only, result.b_only, result.n, result.method) == (20, 0, 200, "exact-mcnemar")
    assert result.difference == pytest.approx(0.1)
    assert result.low == pytest.approx(0.1 * (2 * 0.025 ** (1 / 20) - 1), abs=1e-12)
    assert result.high == pytest.approx(0.1)


def test_paired_difference_of_a_mixed_table_by_hand():
    """a_only = 3, b_only = 1 of n = 8: Clopper-Pearson bounds of 3/4 from the beta quantiles
    Beta(0.025; 3, 2) and Beta(0.975; 4, 1) = 0.975^(1/4), mapped by (4/8)(2π − 1)."""
    from scipy.stats import beta as beta_distribution

    from dualloop.stats import paired_accuracy_difference

    a = [True, True, True, True, False, False, True, False]
    b = [False, False, False, True, True, False, True, False]
    result = paired_accuracy_difference(a, b)
    assert (result.a_only, result.b_only) == (3, 1)
    assert result.difference == pytest.approx(2 / 8)
    assert result.low == pytest.approx(0.5 * (2 * beta_distribution.ppf(0.025, 3, 2) - 1), abs=1e-10)
    assert result.high == pytest.approx(0.5 * (2 * 0.975 ** (1 / 4) - 1), abs=1e-10)


def test_the_difference_interval_excludes_zero_exactly_when_mcnemars_exact_test_rejects():
    from scipy.stats import binomtest

    from dualloop.stats import paired_accuracy_difference

    for a_only in range(0, 16):
        for b_only in range(0, 16):
            if a_only + b_only == 0:
                continue
            n = 40
            a = [True] * a_only + [False] * b_only + [True] * 5 + [False] * (n - a_only - b_only - 5)
            b = [False] * a_only + [True] * b_only + [True] * 5 + [False] * (n - a_only - b_only - 5)
            result = paired_accuracy_difference(a, b)
            rejects = binomtest(a_only, a_only + b_only, 0.5).pvalue < 0.05
            assert (result.low > 0 or result.high < 0) == rejects, (a_only, b_only)


def test_no_discordant_prompt_gives_a_zero_difference_and_bad_input_is_named():
    from dualloop.stats import accuracy, paired_accuracy_difference

    same = paired_accuracy_difference([True, False], [True, False])
    assert (same.difference, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same prompts: 2 != 1"):
        paired_accuracy_difference([True, False], [True])
    with pytest.raises(ValueError, match=r"passes\[1\]=0.5 must be True or False"):
        accuracy([True, 0.5])
    with pytest.raises(ValueError, match="passes is empty"):
        accuracy([])


# ---------------------------------------------------------------- several seeds


def test_pooled_over_seeds_equals_the_crossed_anova_by_hand_with_a_seed_without_discordant_prompts():
    # Paired differences a - b, 2 seeds x 6 prompts; seed 1 has no discordant prompt. Grand mean 1/6;
    # seed means 1/3, 0 -> MS_seed = 6 * 2 * (1/6)^2 / 1 = 1/3; prompt means 1/2, 1/2, 1/2, 0, 0, -1/2 ->
    # MS_prompt = 2 * (3/9 + 2/36 + 4/9) / 5 = 1/3; residuals ±1/3 (x3), ∓1/6 (x2), ∓2/3 per seed ->
    # MS_residual = 2 * 5/6 / (1 * 5) = 1/3. Both components truncate to 0, Var = (1/3) / 12 = 1/36, se = 1/6,
    # and the interval has the residual's (S - 1)(N - 1) = 5 degrees of freedom: t = 2.5705818.
    pooled = pooled_over_seeds([[1, 1, 1, 0, 0, -1], [0, 0, 0, 0, 0, 0]])
    assert pooled.estimate == pytest.approx(1 / 6) and pooled.by_seed == pytest.approx((1 / 3, 0.0))
    assert (pooled.var_seed, pooled.var_prompt) == (0.0, 0.0) and pooled.var_residual == pytest.approx(1 / 3)
    assert pooled.se == pytest.approx(1 / 6, rel=1e-12) and pooled.df == pytest.approx(5.0)
    half = 2.5705818 / 6
    assert (pooled.low, pooled.high) == pytest.approx((1 / 6 - half, 1 / 6 + half), abs=1e-7)


def test_pooled_over_seeds_counts_seed_prompt_and_residual_variance_by_hand():
    # 2 seeds x 4 prompts. Grand 0.5; seed means 0.75, 0.25 -> MS_seed = 4 * 2 * 0.0625 / 1 = 0.5;
    # prompt means 0.5, 0.5, 0, 1 -> MS_prompt = 2 * 0.5 / 3 = 1/3; every residual is ±0.25 ->
    # MS_residual = 8 * 0.0625 / 3 = 1/6. var_seed = (0.5 - 1/6) / 4 = 1/12, var_prompt = (1/3 - 1/6) / 2 = 1/12,
    # Var = (MS_seed + MS_prompt - MS_residual) / 8 = 1/12 -> se = 0.2886751. Satterthwaite:
    # (1/12)^2 / ((0.5/8)^2 / 1 + (1/24)^2 / 3 + (1/48)^2 / 3) = 1.5 degrees of freedom; t = 6.0 or so puts
    # both ends at the bounds.
    pooled = pooled_over_seeds([[1, 1, 0, 1], [0, 0, 0, 1]])
    assert pooled.estimate == 0.5 and pooled.by_seed == (0.75, 0.25)
    assert pooled.var_seed == pytest.approx(1 / 12) and pooled.var_prompt == pytest.approx(1 / 12)
    assert pooled.var_residual == pytest.approx(1 / 6)
    assert pooled.se == pytest.approx(math.sqrt(1 / 12), rel=1e-12) and pooled.df == pytest.approx(1.5)
    assert (pooled.low, pooled.high) == (-1.0, 1.0)


def test_seeds_that_change_nothing_give_the_shared_answers_sample_variance_with_n_minus_1_df():
    # The same answers under every seed: no seed or residual variance; the standard error is the answers'
    # sample sd (variance 1/3 of [1, 0, 1, 0]) over sqrt(N), not smaller for three seeds, and t has N - 1 = 3 df.
    pooled = pooled_over_seeds([[True, False, True, False]] * 3, bounds=(0.0, 1.0))
    assert pooled.var_seed == 0.0 and pooled.var_residual == 0.0
    assert pooled.se == pytest.approx(math.sqrt((1 / 3) / 4), rel=1e-12) and pooled.df == pytest.approx(3.0)
    assert pooled.high == 1.0 and pooled.low == 0.0  # 0.5 ± 3.182 * 0.289, kept inside the bounds


def test_planned_width_at_the_expected_mean_squares_by_hand():
    # σ²_a = 0.001, σ²_b = 0.02, σ²_e = 0.2 for 5 seeds x 200 prompts: E[MS_seed] = 200 * 0.001 + 0.2 = 0.4,
    # E[MS_prompt] = 5 * 0.02 + 0.2 = 0.3, E[MS_residual] = 0.2. Var = (0.4 + 0.3 - 0.2) / 1000 = 5e-4, se = 0.0223607;
    # Satterthwaite: (5e-4)^2 / ((4e-4)^2 / 4 + (3e-4)^2 / 199 + (2e-4)^2 / 796) = 6.1724566; t = 2.4304349.
    plan = planned_width(0.001, 0.02, 0.2, seeds=5, prompts=200)
    assert (plan.seeds, plan.prompts, len(plan.half_widths)) == (5, 200, 4000)
    assert plan.at_expected == pytest.approx(2.4304349 * math.sqrt(5e-4), rel=1e-7)
    # No seed component: Var = (3 * 0.02 + 0.2) / 600, with the prompts' N - 1 = 199 degrees of freedom.
    flat = planned_width(0.0, 0.02, 0.2, seeds=3, prompts=200)
    assert flat.at_expected == pytest.approx(1.9719565 * math.sqrt(0.26 / 600))
    # ... which is optimistic: a run estimates σ²_a above 0 about 4 times in 10, and then has about S - 1 df.
    assert flat.median > flat.at_expected and flat.share_within(flat.at_expected) < 0.7
    # More seeds or more prompts never widen it; the draws are seeded.
    medians = [planned_width(0.001, 0.02, 0.2, s, n).median for s, n in ((3, 200), (5, 200), (5, 400), (9, 400))]
    assert medians == sorted(medians, reverse=True)
    assert np.array_equal(
        planned_width(0.001, 0.02, 0.2, 3, 50).half_widths, planned_width(0.001, 0.02, 0.2, 3, 50).half_widths
    )


def test_planned_width_simulates_what_pooled_over_seeds_gives_on_tables_drawn_from_the_model():
    # 1000 tables x[s, i] = a_s + b_i + e_si with normal effects, 3 seeds x 30 prompts, pooled one by one: the
    # distribution of their half-widths is what planned_width draws (its mean squares are exactly scaled
    # chi-squares for normal effects), up to Monte Carlo error (a share of 1000 has a standard error of 0.016 or less).
    var_seed, var_prompt, var_residual, seeds, prompts = 0.004, 0.02, 0.2, 3, 30
    rng = np.random.default_rng(7)
    halves = []
    for _ in range(1000):
        table = (
            rng.normal(0, math.sqrt(var_seed), (seeds, 1))
            + rng.normal(0, math.sqrt(var_prompt), (1, prompts))
            + rng.normal(0, math.sqrt(var_residual), (seeds, prompts))
        )
        pooled = pooled_over_seeds(table.tolist(), bounds=(-1e9, 1e9))
        halves.append(pooled.high - pooled.estimate)
    plan = planned_width(var_seed, var_prompt, var_residual, seeds, prompts)
    # (compared as shares within targets: the median falls between the few-df and many-df modes and wanders)
    for target in (0.12, 0.2, 0.3, 0.5):
        assert float(np.mean(np.asarray(halves) <= target)) == pytest.approx(plan.share_within(target), abs=0.06)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=2, max_value=5),
    st.integers(min_value=3, max_value=12),
    st.randoms(use_true_random=False),
)
def test_planned_width_at_a_tables_own_design_is_its_pooled_half_width(seeds, prompts, rng):
    # Planning from a table's own estimated components, at its own S and N, with the expected mean squares,
    # gives back its interval (where the bounds do not cut it): those components imply the table's mean squares.
    table = [[rng.choice((-1, 0, 0, 1)) for _ in range(prompts)] for _ in range(seeds)]
    pooled = pooled_over_seeds(table, bounds=(-1e9, 1e9))
    plan = planned_width(pooled.var_seed, pooled.var_prompt, pooled.var_residual, seeds, prompts, draws=2)
    assert plan.at_expected == pytest.approx(pooled.high - pooled.estimate, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((-0.1, 0.0, 0.2, 3, 200), "planned_width: var_seed=-0.1 must not be negative"),
        ((0.0, float("nan"), 0.2, 3, 200), "planned_width: var_prompt=nan must be finite"),
        ((0.0, 0.0, 0.2, 1, 200), "planned_width: seeds=1 must be an integer ≥ 2"),
        ((0.0, 0.0, 0.2, 3, 2.5), "planned_width: prompts=2.5 must be an integer ≥ 2"),
    ],
)
def test_planned_width_refuses_what_it_cannot_plan(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        planned_width(*arguments)


@pytest.mark.parametrize(
    "values, message",
    [
        ([[1, 0, 1]], "≥ 2 seeds"),
        ([[1, 0], [1]], "same prompts"),
        ([[1, float("nan")], [0, 1]], "finite"),
        ([[1, "yes"], [0, 1]], "must be a number"),
        ([[1, 0], [0, 1]], "bounds"),
    ],
)
def test_pooled_over_seeds_refuses_what_it_cannot_pool(values, message):
    with pytest.raises(ValueError, match=message):
        pooled_over_seeds(values, bounds=(1.0, 0.0) if message == "bounds" else (-1.0, 1.0))
