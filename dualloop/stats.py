"""Statistics of pairwise judging: win rates, intervals, agreement, flip rates, length control.

The papers' claims are win rates from blind pairwise judging (DualLoop-DPO, Tables 1-3) and, for
AdaDPO (Chen et al.), length-controlled win rates. This module turns judge outcomes into those
numbers; it never judges, trains or reads files.

Conventions
- An *outcome* is one judge decision from the point of view of system A (the system whose win
  rate is reported, e.g. DualLoop-DPO): ``"win"``, ``"loss"`` or ``"tie"`` (equivalently the
  scores 1, 0 and 0.5). A tie counts as half a win and the number of ties is reported.
- ``win_rate`` uses the normal approximation ("Wald") by default: it reproduces DualLoop-DPO's
  Table 1 exactly from N = 400 decisions (348/400 -> 87.0 % [83.7, 90.3]). Wilson and a
  percentile bootstrap are options. Intervals are those of statsmodels' ``proportion_confint``
  (which clips the Wald interval to [0, 1]).
- Aggregation over judges (Table 3's "aggregated" column) pools the decisions of all judges:
  the pooled win rate is total wins over total decisions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

OUTCOME_SCORES = {"win": 1.0, "tie": 0.5, "loss": 0.0}
WIN_RATE_METHODS = ("wald", "wilson", "bootstrap")
_STATSMODELS_METHOD = {"wald": "normal", "wilson": "wilson"}


@dataclass(frozen=True)
class WinRate:
    """A win rate with its (1 - alpha) interval.

    rate, low, high are fractions in [0, 1]; wins counts a tie as half; ties is the number of
    ties among the n decisions (None where the caller did not report it).
    """

    rate: float
    low: float
    high: float
    n: int
    wins: float
    ties: int | None
    method: str
    alpha: float

    def percent(self, digits: int = 1) -> tuple[float, float, float]:
        """(rate, low, high) in percent, rounded half-up as the paper prints them."""
        rate, low, high = (round_half_up(100.0 * v, digits) for v in (self.rate, self.low, self.high))
        return rate, low, high


def round_half_up(value: float, digits: int = 1) -> float:
    """Round half away from zero (86.25 -> 86.3), the convention of DualLoop-DPO's tables.

    Python's round() rounds half to even and is subject to binary representation (86.25 -> 86.2).
    """
    scale = 10**digits
    return math.floor(abs(value) * scale + 0.5 + 1e-9) / scale * (1 if value >= 0 else -1)


def _check_number(name: str, value: float, *, negative: bool = False, boolean: bool = False) -> float:
    """A finite number (a bool only with ``boolean``), not negative unless ``negative``."""
    numbers = (int, float, np.integer, np.floating) + ((bool, np.bool_) if boolean else ())
    if isinstance(value, bool) and not boolean or not isinstance(value, numbers):
        raise ValueError(f"{name}={value!r} must be a number")
    value = float(value)
    if math.isnan(value) or math.isinf(value):
        raise ValueError(f"{name}={value!r} must be finite")
    if value < 0 and not negative:
        raise ValueError(f"{name}={value!r} must not be negative")
    return value


def _check_counts(wins: float, n: int, ties: int | None) -> tuple[float, int, int | None]:
    wins_value = _check_number("wins", wins)
    n_value = _check_number("n", n)
    if n_value == 0:
        raise ValueError("n=0: a win rate needs at least one decision")
    if n_value != int(n_value):
        raise ValueError(f"n={n!r} must be a whole number of decisions")
    if 2 * wins_value != int(2 * wins_value):
        raise ValueError(f"wins={wins!r} must be a multiple of 0.5 (a tie counts as half a win)")
    if wins_value > n_value:
        raise ValueError(f"wins={wins!r} exceeds n={n!r}")
    if ties is not None:
        ties_value = _check_number("ties", ties)
        if ties_value != int(ties_value):
            raise ValueError(f"ties={ties!r} must be a whole number")
        full_wins = wins_value - ties_value / 2
        if full_wins < 0 or full_wins != int(full_wins) or full_wins + ties_value > n_value:
            raise ValueError(
                f"ties={ties!r} is inconsistent with wins={wins!r} and n={n!r}: "
                "wins must be (full wins) + ties / 2 with full wins + ties <= n"
            )
        ties = int(ties_value)
    return wins_value, int(n_value), ties


def win_rate(
    wins: float,
    n: int,
    method: str = "wald",
    alpha: float = 0.05,
    *,
    ties: int | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
) -> WinRate:
    """Win rate wins / n with a (1 - alpha) interval (DualLoop-DPO, Tables 1-3).

    wins: the number of decisions won, a tie counting as half (a multiple of 0.5).
    n: the number of decisions. ties: how many of them were ties (reported; required by the
    bootstrap when wins is not whole, since the resampled outcomes depend on it).
    method: "wald" (normal approximation, the paper's), "wilson", or "bootstrap" (percentile
    bootstrap of the mean outcome over n_boot resamples, seeded).
    """
    if method not in WIN_RATE_METHODS:
        raise ValueError(f"method={method!r} is not one of {WIN_RATE_METHODS}")
    alpha_value = _check_number("alpha", alpha)
    if not 0 < alpha_value < 1:
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    wins, n, ties = _check_counts(wins, n, ties)
    rate = wins / n
    if method == "bootstrap":
        if ties is None and wins != int(wins):
            raise ValueError(f"ties=None with wins={wins}: the bootstrap needs the number of ties; pass ties=")
        n_ties = ties or 0
        full_wins = wins - n_ties / 2
        probabilities = [full_wins / n, n_ties / n, (n - full_wins - n_ties) / n]
        rng = np.random.default_rng(seed)
        draws = rng.multinomial(n, probabilities, size=n_boot)
        rates = (draws[:, 0] + 0.5 * draws[:, 1]) / n
        low, high = np.quantile(rates, [alpha_value / 2, 1 - alpha_value / 2])
    else:
        from statsmodels.stats.proportion import proportion_confint

        low, high = proportion_confint(wins, n, alpha=alpha_value, method=_STATSMODELS_METHOD[method])
        # the rate lies inside both intervals; clamp the ~1e-17 rounding of Wilson's bounds at 0 and n
        low, high = min(float(low), rate), max(float(high), rate)
    return WinRate(float(rate), float(low), float(high), n, wins, ties, method, alpha_value)


def count_outcomes(outcomes: Sequence[str | float]) -> tuple[float, int, int]:
    """(wins, ties, n) of a sequence of outcomes ("win"/"tie"/"loss" or 1/0.5/0); None entries
    (an unparseable judge reply) are not decisions and raise: filter them and report them."""
    wins = 0.0
    ties = 0
    for index, outcome in enumerate(outcomes):
        score = OUTCOME_SCORES.get(outcome) if isinstance(outcome, str) else outcome
        if score not in (0.0, 0.5, 1.0) or isinstance(score, bool):
            raise ValueError(
                f"outcomes[{index}]={outcome!r} is not an outcome: use 'win', 'tie', 'loss' "
                "(or 1, 0.5, 0); drop unparseable decisions and report them"
            )
        wins += score
        ties += score == 0.5
    return wins, ties, len(outcomes)


def win_rate_of(outcomes: Sequence[str | float], method: str = "wald", alpha: float = 0.05, **kwargs) -> WinRate:
    """win_rate of a sequence of outcomes, ties counted as half and reported."""
    wins, ties, n = count_outcomes(outcomes)
    return win_rate(wins, n, method, alpha, ties=ties, **kwargs)


def pool(results: Sequence[WinRate], method: str | None = None, alpha: float | None = None) -> WinRate:
    """Aggregate win rates over judges by pooling their decisions (Table 3's "aggregated" column).

    With the same number of decisions per judge the pooled rate is the mean of the judges' rates.
    method and alpha default to those of the first result.
    """
    if not results:
        raise ValueError("results is empty: pool needs at least one judge's win rate")
    wins = sum(r.wins for r in results)
    n = sum(r.n for r in results)
    counted = [r.ties for r in results]
    ties = None if None in counted else sum(t for t in counted if t is not None)
    return win_rate(wins, n, method or results[0].method, alpha or results[0].alpha, ties=ties)


def _paired(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"a and b must judge the same items: len(a)={len(a)} != len(b)={len(b)}")
    if len(a) == 0:
        raise ValueError("a and b are empty: agreement needs at least one item judged by both")


def agreement(a: Sequence, b: Sequence) -> float:
    """Fraction of items on which two judges give the same decision (DualLoop-DPO: 83.3 % in Phase 2)."""
    _paired(a, b)
    return sum(x == y for x, y in zip(a, b)) / len(a)


def confusion_table(a: Sequence, b: Sequence) -> tuple[np.ndarray, list]:
    """Square table of counts (rows: judge a's decision, columns: judge b's) over the sorted
    union of the decisions seen, and that list of categories."""
    _paired(a, b)
    categories = sorted(set(a) | set(b), key=str)
    index = {c: i for i, c in enumerate(categories)}
    table = np.zeros((len(categories), len(categories)))
    for x, y in zip(a, b):
        table[index[x], index[y]] += 1
    return table, categories


def cohens_kappa(a: Sequence, b: Sequence) -> float:
    """Cohen's kappa of two judges' decisions on the same items (DualLoop-DPO: kappa ~ 0.38),
    statsmodels' cohens_kappa on the confusion table. NaN when both judges give one same
    decision everywhere (kappa is undefined: chance agreement is 1)."""
    from statsmodels.stats.inter_rater import cohens_kappa as sm_cohens_kappa

    table, _ = confusion_table(a, b)
    if table.shape[0] == 1:
        return float("nan")
    return float(sm_cohens_kappa(table, return_results=False))


@dataclass(frozen=True)
class FlipBucket:
    """Flip statistics of the items whose entropy lies in [low, high] (the last bucket is closed)."""

    low: float
    high: float
    items: int
    rejudgments: int
    flips: int

    @property
    def flip_rate(self) -> float:
        return self.flips / self.rejudgments if self.rejudgments else float("nan")


def flip_rate_by_entropy(
    judgments: Sequence[Sequence], entropy: Sequence[float], n_buckets: int = 3, edges: Sequence[float] | None = None
) -> list[FlipBucket]:
    """Flip rate on re-judging, by entropy bucket (DualLoop-DPO, Limitations: 90 prompts x 3,
    ~7 % flips in every bucket).

    judgments[i] holds the repeated decisions on item i, the first being the original one; a flip
    is a re-judgment that differs from the original, and a bucket's flip rate is its flips over its
    re-judgments. entropy[i] is the item's entropy (e.g. the normalized binary entropy h_i of
    DualLoop-DPO's fast loop). Buckets are entropy quantiles (n_buckets of them) unless edges are given; an
    item equal to an inner edge falls in the upper bucket.
    """
    _paired(judgments, entropy)
    entropy_values = np.asarray([_check_finite_entropy(i, e) for i, e in enumerate(entropy)])
    if edges is None:
        if n_buckets < 1:
            raise ValueError(f"n_buckets={n_buckets} must be at least 1")
        edges = np.quantile(entropy_values, np.linspace(0, 1, n_buckets + 1)).tolist()
    bounds = np.asarray(edges, dtype=float)
    if len(bounds) < 2 or np.any(np.diff(bounds) < 0):
        raise ValueError(f"edges={bounds.tolist()} must be at least two non-decreasing values")
    if entropy_values.min() < bounds[0] or entropy_values.max() > bounds[-1]:
        raise ValueError(
            f"edges={bounds.tolist()} do not cover the entropy range [{entropy_values.min()}, {entropy_values.max()}]"
        )
    bucket_of = np.searchsorted(bounds[1:-1], entropy_values, side="right")
    buckets = []
    for b in range(len(bounds) - 1):
        members = [judgments[int(i)] for i in np.flatnonzero(bucket_of == b)]
        for repeated in members:
            if len(repeated) < 2:
                raise ValueError(f"an item in bucket {b} has {len(repeated)} judgment(s): a flip needs at least 2")
        rejudgments = sum(len(r) - 1 for r in members)
        flips = sum(sum(d != r[0] for d in r[1:]) for r in members)
        buckets.append(FlipBucket(float(bounds[b]), float(bounds[b + 1]), len(members), rejudgments, flips))
    return buckets


def _check_finite_entropy(index: int, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"entropy[{index}]={value!r} must be finite")
    return value


@dataclass(frozen=True)
class LengthControlledWinRate:
    """AlpacaEval-2-style length-controlled win rate: the GLM's predicted preference at zero
    length difference, its delta-method standard error and a (1 - alpha) interval computed on
    the logit scale; length_coef is the fitted coefficient of tanh(standardized length difference)."""

    rate: float
    se: float
    low: float
    high: float
    intercept: float
    length_coef: float
    n: int


def length_controlled_win_rate(
    preferences: Sequence[float], length_a: Sequence[float], length_b: Sequence[float], alpha: float = 0.05
) -> LengthControlledWinRate:
    """Length-controlled win rate of system A over system B (Dubois et al. 2024, AlpacaEval 2;
    used by AdaDPO (Chen et al.)).

    Fits the logistic GLM  logit P(A preferred) = theta + phi * tanh(d / sd(d)),  d = length_a -
    length_b (sd: sample standard deviation), with statsmodels (Binomial family; a tie is the
    preference 0.5). The length-controlled rate is sigmoid(theta), the prediction at d = 0; its
    standard error is sigmoid'(theta) * se(theta) (delta method). AlpacaEval's per-instruction
    difficulty term is left out: each comparison here is one pair of systems.
    """
    import statsmodels.api as sm
    from scipy.stats import norm

    n = len(preferences)
    if not (n == len(length_a) == len(length_b)):
        raise ValueError(
            f"preferences, length_a, length_b must have one entry per pair: {n}, {len(length_a)}, {len(length_b)}"
        )
    if n < 3:
        raise ValueError(f"{n} pairs: the length-controlled GLM needs at least 3")
    y = np.asarray(preferences, dtype=float)
    bad = np.flatnonzero(~np.isfinite(y) | (y < 0) | (y > 1))
    if bad.size:
        raise ValueError(f"preferences[{bad[0]}]={float(y[bad[0]])!r} must be in [0, 1] (1 = A preferred, 0.5 = tie)")
    difference = np.asarray(length_a, dtype=float) - np.asarray(length_b, dtype=float)
    if not np.all(np.isfinite(difference)):
        raise ValueError("length_a and length_b must be finite")
    spread = difference.std(ddof=1)
    if spread == 0:
        raise ValueError("every length difference is the same: the length term cannot be fit; use win_rate")
    design = np.column_stack([np.ones(n), np.tanh(difference / spread)])
    fit = sm.GLM(y, design, family=sm.families.Binomial()).fit()
    theta, phi = (float(v) for v in fit.params)
    se_theta = float(fit.bse[0])
    rate = 1.0 / (1.0 + math.exp(-theta))
    z = float(norm.ppf(1 - alpha / 2))
    low, high = (1.0 / (1.0 + math.exp(-(theta + s * z * se_theta))) for s in (-1, 1))
    return LengthControlledWinRate(rate, rate * (1 - rate) * se_theta, low, high, theta, phi, n)


# --- accuracies of one system, and the paired difference of two ------------------------------


@dataclass(frozen=True)
class Proportion:
    """A proportion successes / n with its (1 - alpha) interval (fractions in [0, 1])."""

    rate: float
    low: float
    high: float
    n: int
    successes: int
    method: str
    alpha: float


def _booleans(name: str, values: Sequence[bool]) -> list[bool]:
    checked = []
    for index, value in enumerate(values):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name}[{index}]={value!r} must be True or False (did the prompt pass?)")
        checked.append(bool(value))
    if not checked:
        raise ValueError(f"{name} is empty: an accuracy needs at least one prompt")
    return checked


def accuracy(passes: Sequence[bool], alpha: float = 0.05) -> Proportion:
    """Prompt-level accuracy (IFEval, Zhou et al. 2023, arXiv 2311.07911: the fraction of prompts
    whose every instruction is followed) with the Wilson score interval (statsmodels'
    ``proportion_confint(method="wilson")``), which stays inside [0, 1] and is not degenerate at
    0 or n successes."""
    from statsmodels.stats.proportion import proportion_confint

    checked = _booleans("passes", passes)
    alpha = _check_alpha(alpha)
    successes, n = sum(checked), len(checked)
    low, high = proportion_confint(successes, n, alpha=alpha, method="wilson")
    rate = successes / n
    return Proportion(rate, min(float(low), rate), max(float(high), rate), n, successes, "wilson", alpha)


def _check_alpha(alpha: float) -> float:
    value = _check_number("alpha", alpha)
    if not 0 < value < 1:
        raise ValueError(f"alpha={alpha!r} must lie in (0, 1)")
    return value


@dataclass(frozen=True)
class PairedDifference:
    """accuracy(a) - accuracy(b) on the same n prompts, with its (1 - alpha) interval.

    a_only / b_only count the discordant prompts (passed by one system only); the difference is
    (a_only - b_only) / n.
    """

    difference: float
    low: float
    high: float
    n: int
    a_only: int
    b_only: int
    method: str
    alpha: float


def paired_accuracy_difference(
    a_passes: Sequence[bool], b_passes: Sequence[bool], alpha: float = 0.05
) -> PairedDifference:
    """The paired difference of two systems' accuracies on the same prompts, with an exact
    McNemar-based interval.

    Conditional on the m = a_only + b_only discordant prompts, a_only ~ Binomial(m, π) and the
    difference is (m / n)(2π − 1) (McNemar's test is the exact binomial test of π = 1/2). The
    interval is the Clopper–Pearson interval [π_L, π_U] of a_only / m (statsmodels'
    ``proportion_confint(method="beta")``) mapped through that line:
    [(m/n)(2π_L − 1), (m/n)(2π_U − 1)]. It excludes 0 exactly when the exact two-sided McNemar
    test rejects at level alpha. With no discordant prompt the difference and its interval are 0:
    the two systems agree on every prompt.
    """
    from statsmodels.stats.proportion import proportion_confint

    a = _booleans("a_passes", a_passes)
    b = _booleans("b_passes", b_passes)
    if len(a) != len(b):
        raise ValueError(f"a_passes and b_passes must score the same prompts: {len(a)} != {len(b)}")
    alpha = _check_alpha(alpha)
    n = len(a)
    a_only = sum(x and not y for x, y in zip(a, b))
    b_only = sum(y and not x for x, y in zip(a, b))
    discordant = a_only + b_only
    difference = (a_only - b_only) / n
    if discordant == 0:
        return PairedDifference(0.0, 0.0, 0.0, n, 0, 0, "exact-mcnemar", alpha)
    low, high = proportion_confint(a_only, discordant, alpha=alpha, method="beta")
    scale = discordant / n
    return PairedDifference(
        difference,
        min(scale * (2 * float(low) - 1), difference),
        max(scale * (2 * float(high) - 1), difference),
        n,
        a_only,
        b_only,
        "exact-mcnemar",
        alpha,
    )


# --- several seeds: one estimate over seeds and prompts ----------------------------------------


@dataclass(frozen=True)
class SeedPooled:
    """The mean of a per-prompt quantity over S seeds × N prompts (the same prompts in every seed),
    with its (1 - alpha) interval and the per-seed means.

    ``var_seed``, ``var_prompt`` and ``var_residual`` are the estimated variance components of the
    crossed model x[s, i] = μ + a_s + b_i + e_si (:func:`pooled_over_seeds`); ``se`` is the standard
    error of ``estimate`` and ``df`` the Satterthwaite degrees of freedom of its interval.
    """

    estimate: float
    low: float
    high: float
    se: float
    df: float
    by_seed: tuple[float, ...]
    n_prompts: int
    var_seed: float
    var_prompt: float
    var_residual: float
    method: str
    alpha: float


def pooled_over_seeds(
    values: Sequence[Sequence[float]], alpha: float = 0.05, bounds: tuple[float, float] = (-1.0, 1.0)
) -> SeedPooled:
    """The grand mean of ``values[s][i]`` (seed s, prompt i: a pass 0/1, a paired difference
    a − b in {−1, 0, 1}, a win score in {0, ½, 1}) with a normal interval whose variance counts
    both the seeds and the prompts.

    Seeds and prompts are crossed (every seed answers the same N prompts), so the model is the
    two-way random-effects model x[s, i] = μ + a_s + b_i + e_si with seed effects a (variance
    σ²_a: how a method's training varies with the seed), prompt effects b (σ²_b: which prompts
    favour it, shared by all seeds) and interaction e (σ²_e). With the mean squares of the S × N
    table, MS_seed = N Σ_s (x̄_s − x̄)² / (S − 1), MS_prompt = S Σ_i (x̄_i − x̄)² / (N − 1) and
    MS_residual = Σ_si (x_si − x̄_s − x̄_i + x̄)² / ((S − 1)(N − 1)), the moment (ANOVA)
    estimators, each truncated at 0, are σ²_e = MS_residual, σ²_a = (MS_seed − MS_residual) / N,
    σ²_b = (MS_prompt − MS_residual) / S, and Var(x̄) = σ²_a / S + σ²_b / N + σ²_e / (S N).
    Var(x̄) is a linear combination Σ_k c_k MS_k of the mean squares (each component kept contributes
    its MS and subtracts MS_residual, all over S N), so the interval is x̄ ± t_{1−α/2, ν} √Var(x̄) with
    Satterthwaite's ν = (Σ_k c_k MS_k)² / Σ_k (c_k MS_k)² / df_k (df: S − 1, N − 1, (S − 1)(N − 1)):
    when the seeds' disagreement dominates, ν is near S − 1 and the interval is as wide as a few seeds
    allow; when the prompts dominate, ν is near N − 1 and t is about z. It is kept inside ``bounds``.
    Seeds that change nothing (the same answers under every seed) give no seed or residual variance:
    Var(x̄) is the shared answers' sample variance over N, with ν = N − 1. Needs S ≥ 2 seeds and
    N ≥ 2 prompts (one seed: use the one-seed statistics).
    """
    alpha = _check_alpha(alpha)
    if not bounds[0] < bounds[1]:
        raise ValueError(f"pooled_over_seeds: bounds={bounds!r} must be (low, high) with low < high")
    rows = [
        [_check_number(f"values[{s}][{i}]", v, negative=True, boolean=True) for i, v in enumerate(row)]
        for s, row in enumerate(values)
    ]
    if len({len(row) for row in rows}) > 1:
        raise ValueError(f"pooled_over_seeds: every seed must score the same prompts, got {[len(r) for r in rows]}")
    table = np.asarray(rows, dtype=float)
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 2:
        raise ValueError(f"pooled_over_seeds needs ≥ 2 seeds × ≥ 2 prompts of equal length, got shape {table.shape}")
    seeds, prompts = table.shape
    grand = float(table.mean())
    seed_means, prompt_means = table.mean(axis=1), table.mean(axis=0)
    ms_seed = prompts * float(((seed_means - grand) ** 2).sum()) / (seeds - 1)
    ms_prompt = seeds * float(((prompt_means - grand) ** 2).sum()) / (prompts - 1)
    residual = table - seed_means[:, None] - prompt_means[None, :] + grand
    ms_residual = float((residual**2).sum()) / ((seeds - 1) * (prompts - 1))
    var_seed, var_prompt, se, df, half = (
        float(value) for value in _crossed_interval(ms_seed, ms_prompt, ms_residual, seeds, prompts, alpha)
    )
    low, high = max(float(bounds[0]), grand - half), min(float(bounds[1]), grand + half)
    return SeedPooled(
        grand,
        min(low, grand),
        max(high, grand),
        se,
        df,
        tuple(float(m) for m in seed_means),
        prompts,
        var_seed,
        var_prompt,
        ms_residual,
        "crossed-random-effects",
        alpha,
    )


def _crossed_interval(
    ms_seed: Any, ms_prompt: Any, ms_residual: Any, seeds: int, prompts: int, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """From the mean squares of S × N crossed tables (numbers or arrays of them, one entry per table):
    (σ²_a, σ²_b, se, Satterthwaite ν, half-width) of each grand mean, as :func:`pooled_over_seeds` describes."""
    from scipy.stats import t as student_t

    ms_seed, ms_prompt, ms_residual = np.broadcast_arrays(
        *(np.asarray(m, dtype=float) for m in (ms_seed, ms_prompt, ms_residual))
    )
    # a component is kept where its mean square exceeds the residual's beyond rounding
    kept_seed, kept_prompt = (ms - ms_residual > 1e-12 * np.maximum(ms, ms_residual) for ms in (ms_seed, ms_prompt))
    var_seed = np.where(kept_seed, (ms_seed - ms_residual) / prompts, 0.0)
    var_prompt = np.where(kept_prompt, (ms_prompt - ms_residual) / seeds, 0.0)
    variance = var_seed / seeds + var_prompt / prompts + ms_residual / (seeds * prompts)
    # Var(x̄) as Σ c_k MS_k: a kept component adds its mean square and subtracts the residual's
    cells = seeds * prompts
    terms = (
        (kept_seed * ms_seed / cells, seeds - 1),
        (kept_prompt * ms_prompt / cells, prompts - 1),
        ((1.0 - kept_seed - kept_prompt.astype(float)) * ms_residual / cells, (seeds - 1) * (prompts - 1)),
    )
    spread = sum(value**2 / df for value, df in terms)
    positive = (variance > 0) & (spread > 0)
    df = np.divide(variance**2, spread, out=np.full(variance.shape, math.inf), where=positive)
    half = np.where(variance > 0, student_t.ppf(1 - alpha / 2, df) * np.sqrt(variance), 0.0)
    return var_seed, var_prompt, np.sqrt(variance), df, half


@dataclass(frozen=True)
class PlannedWidth:
    """The half-widths :func:`pooled_over_seeds` would give in simulated runs of ``seeds`` × ``prompts``
    (``half_widths``, sorted), and ``at_expected``: the half-width at the expected mean squares."""

    seeds: int
    prompts: int
    at_expected: float
    half_widths: np.ndarray

    @property
    def median(self) -> float:
        """The median half-width over the simulated runs."""
        return float(np.median(self.half_widths))

    def share_within(self, target: float) -> float:
        """The share of simulated runs whose half-width is at most ``target``."""
        return float(np.mean(self.half_widths <= target))


def planned_width(
    var_seed: float,
    var_prompt: float,
    var_residual: float,
    seeds: int,
    prompts: int,
    alpha: float = 0.05,
    draws: int = 4000,
    random_state: int = 0,
) -> PlannedWidth:
    """The pooled interval that a design of ``seeds`` × ``prompts`` would give a quantity whose crossed
    variance components are (σ²_a, σ²_b, σ²_e) — e.g. those a :class:`SeedPooled` of an earlier run estimated.

    Under the crossed model the mean squares are independent, each its expectation times χ²_df / df:
    E[MS_seed] = N σ²_a + σ²_e (df S − 1), E[MS_prompt] = S σ²_b + σ²_e (N − 1), E[MS_residual] = σ²_e
    ((S − 1)(N − 1)) — exact for normal effects, an approximation for 0/±1 differences. ``draws`` sets of
    mean squares are drawn (seeded by ``random_state``) and each run's interval is computed exactly as
    :func:`pooled_over_seeds` computes it, components truncated at 0 and Satterthwaite's ν included: a
    run whose seeds disagree by chance gets few degrees of freedom and a wide interval, as a real one
    does, so the half-widths are a distribution, not one number. ``at_expected`` plugs the expectations in
    instead (at an estimate's own design it is that estimate's half-width); it is optimistic where σ²_a is
    near 0, because a real run then estimates σ²_a above 0 about 4 times in 10. A plan, not a promise: with
    few seeds σ²_a itself is poorly known, so plan from the run with the most seeds.
    """
    for name, value in (("var_seed", var_seed), ("var_prompt", var_prompt), ("var_residual", var_residual)):
        _check_number(f"planned_width: {name}", value)
    for name, count in (("seeds", seeds), ("prompts", prompts), ("draws", draws)):
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 2:
            raise ValueError(f"planned_width: {name}={count!r} must be an integer ≥ 2")
    alpha = _check_alpha(alpha)
    expected = (prompts * var_seed + var_residual, seeds * var_prompt + var_residual, var_residual)
    dfs = (seeds - 1, prompts - 1, (seeds - 1) * (prompts - 1))
    at_expected = float(_crossed_interval(*expected, seeds, prompts, alpha)[4])
    rng = np.random.default_rng(random_state)
    ms_seed, ms_prompt, ms_residual = (
        mean * rng.chisquare(df, size=draws) / df for mean, df in zip(expected, dfs, strict=True)
    )
    half_widths = np.sort(_crossed_interval(ms_seed, ms_prompt, ms_residual, seeds, prompts, alpha)[4])
    return PlannedWidth(int(seeds), int(prompts), at_expected, half_widths)
