"""The arena's pure math against values derived by hand (the arithmetic is written out in each test)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from optarena.arena.analysis import (
    PowerLawFit,
    data_equivalent_speedup,
    effective_rank,
    excess_kurtosis,
    fit_power_law,
    performance_profile,
    profile_score,
    steps_to_target,
    summarize,
    welch_p_value,
    within_noise,
)

INF = math.inf


# ---------------------------------------------------------------------------------------------
# steps_to_target


def test_steps_to_target_higher_is_better_is_inclusive():
    curve = [(0, 0.1), (10, 0.5), (20, 0.9), (30, 0.95)]
    assert steps_to_target(curve, 0.9, higher_is_better=True) == 20.0  # 0.9 >= 0.9
    assert steps_to_target(curve, 0.5, higher_is_better=True) == 10.0
    assert steps_to_target(curve, 0.96, higher_is_better=True) == INF


def test_steps_to_target_lower_is_better():
    curve = [(0, 2.0), (5, 1.0), (10, 0.4), (15, 0.2)]
    assert steps_to_target(curve, 0.5, higher_is_better=False) == 10.0
    assert steps_to_target(curve, 2.0, higher_is_better=False) == 0.0  # 2.0 <= 2.0 at the first eval
    assert steps_to_target(curve, 0.1, higher_is_better=False) == INF


def test_steps_to_target_non_finite_metrics_never_reach():
    # inf >= 0.2 and -inf <= 0.2 would count numerically; a diverged eval must not.
    assert steps_to_target([(0, math.nan), (1, INF), (2, 0.3)], 0.2, higher_is_better=True) == 2.0
    assert steps_to_target([(0, -INF), (1, math.nan), (2, 0.1)], 0.2, higher_is_better=False) == 2.0
    assert steps_to_target([(0, math.nan)], 0.2, higher_is_better=False) == INF


def test_steps_to_target_empty_curve_and_repeated_step():
    assert steps_to_target([], 1.0, higher_is_better=True) == INF
    assert steps_to_target([(5, 0.0), (5, 1.0)], 1.0, higher_is_better=True) == 5.0


def test_steps_to_target_bad_input():
    with pytest.raises(ValueError, match="curve"):
        steps_to_target([(10, 0.1), (5, 0.2)], 0.5, higher_is_better=True)
    with pytest.raises(ValueError, match=r"curve\[1\]"):
        steps_to_target([(0, 0.1), (1,)], 0.5, higher_is_better=True)
    with pytest.raises(ValueError, match="target"):
        steps_to_target([(0, 0.1)], math.nan, higher_is_better=True)


# ---------------------------------------------------------------------------------------------
# performance profiles

# Best per workload: w1 = min(10, 20, inf) = 10, w2 = min(40, 20, 30) = 20.
# Ratios: A = (10/10, 40/20) = (1, 2); B = (20/10, 20/20) = (2, 1); C = (inf, 30/20) = (inf, 1.5).
COSTS = {"A": {"w1": 10, "w2": 40}, "B": {"w1": 20, "w2": 20}, "C": {"w1": INF, "w2": 30}}


def test_performance_profile_hand_example():
    taus = [1.0, 1.5, 1.99, 2.0, 4.0, 1e9, INF]
    rho = performance_profile(COSTS, taus)
    assert rho["A"] == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert rho["B"] == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
    # C never counts w1 (missed), not even at tau = inf; w2 counts from 1.5 on.
    assert rho["C"] == [0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    assert performance_profile(COSTS, []) == {"A": [], "B": [], "C": []}


def test_profile_score_hand_example():
    s = profile_score(COSTS)  # tau_max = 4, interval length 3
    # A: rho = 0.5 on [1, 2), 1 on [2, 4] -> (0.5 * 1 + 1 * 2) / 3 = 2.5 / 3.
    assert s["A"] == pytest.approx(2.5 / 3, abs=1e-15)
    assert s["B"] == pytest.approx(2.5 / 3, abs=1e-15)
    # C: rho = 0 on [1, 1.5), 0.5 on [1.5, 4] -> 0.5 * 2.5 / 3.
    assert s["C"] == pytest.approx(0.5 * 2.5 / 3, abs=1e-15)
    s2 = profile_score(COSTS, tau_max=2.0)  # interval length 1
    # A: 0.5 on [1, 2) and 1 at the single point 2 -> 0.5; C: 0.5 on [1.5, 2] -> 0.25.
    assert s2["A"] == pytest.approx(0.5, abs=1e-15)
    assert s2["C"] == pytest.approx(0.25, abs=1e-15)


def test_profile_score_matches_a_fine_riemann_sum_of_the_profile():
    costs = {"A": {"w1": 1, "w2": 3, "w3": 7}, "B": {"w1": 2, "w2": 1, "w3": INF}, "C": {"w1": 5, "w2": 2, "w3": 2}}
    n = 30000
    taus = 1 + 3 * (np.arange(n) + 0.5) / n  # midpoints on [1, 4]
    rho = performance_profile(costs, taus)
    exact = profile_score(costs, tau_max=4.0)
    for opt in costs:
        # Each step of rho moves the midpoint rule by at most (1/3 share) * (3/n) / 3 = 1/(3n).
        assert exact[opt] == pytest.approx(float(np.mean(rho[opt])), abs=3 / n)


def test_profile_best_everywhere_scores_one_and_ties_share_the_best():
    assert profile_score({"only": {"w1": 3.0, "w2": 100.0}}) == {"only": 1.0}
    s = profile_score({"A": {"w": 5.0}, "B": {"w": 5.0}})
    assert s == {"A": 1.0, "B": 1.0}  # both at ratio 1
    # A ratio beyond tau_max contributes nothing: 5 / 1 = 5 > 4.
    assert profile_score({"A": {"w": 1.0}, "B": {"w": 5.0}})["B"] == 0.0


def test_profile_all_miss_workload_counts_for_nobody():
    costs = {"A": {"w1": 1.0, "w2": INF}, "B": {"w1": 2.0, "w2": INF}}
    # Ratios: A = (1, inf), B = (2, inf).
    assert performance_profile(costs, [10.0, INF]) == {"A": [0.5, 0.5], "B": [0.5, 0.5]}
    s = profile_score(costs)
    assert s["A"] == pytest.approx((4 - 1) / 2 / 3, abs=1e-15)  # 0.5
    assert s["B"] == pytest.approx((4 - 2) / 2 / 3, abs=1e-15)  # 1/3
    assert profile_score({"A": {"w": INF}, "B": {"w": INF}}) == {"A": 0.0, "B": 0.0}


def test_profile_bad_input():
    with pytest.raises(ValueError, match="costs"):
        profile_score({"A": {"w1": 1.0}, "B": {"w2": 1.0}})
    with pytest.raises(ValueError, match="costs"):
        performance_profile({"A": {"w1": 1.0, "w2": 2.0}, "B": {"w1": 1.0}}, [1.0])
    with pytest.raises(ValueError, match=r"costs\['A'\]\['w1'\]"):
        profile_score({"A": {"w1": 0.0}})
    with pytest.raises(ValueError, match=r"costs\['A'\]\['w1'\]"):
        profile_score({"A": {"w1": math.nan}})
    with pytest.raises(ValueError, match="costs"):
        profile_score({})
    with pytest.raises(ValueError, match="costs"):
        profile_score({"A": {}})
    with pytest.raises(ValueError, match="tau_max"):
        profile_score(COSTS, tau_max=1.0)
    with pytest.raises(ValueError, match="taus"):
        performance_profile(COSTS, [math.nan])


# ---------------------------------------------------------------------------------------------
# power-law fit and data-equivalent speedup


def test_power_law_loss_and_inverse_by_hand():
    fit = PowerLawFit(alpha=2.0, exponent=0.5, beta=1.0)
    assert fit.loss(100) == pytest.approx(1.2)  # 2 / sqrt(100) + 1
    assert fit.loss(400) == pytest.approx(1.1)  # 2 / 20 + 1
    assert fit.budget(1.1) == pytest.approx(400)  # (2 / 0.1)^2
    assert fit.budget(1.2) == pytest.approx(100)  # (2 / 0.2)^2
    assert fit.budget(1.0) == INF  # at the asymptote
    assert fit.budget(0.9) == INF  # below it
    with pytest.raises(ValueError, match="budget"):
        fit.loss(0.0)
    with pytest.raises(ValueError, match="loss"):
        fit.budget(math.nan)


def test_data_equivalent_speedup_by_hand():
    fit = PowerLawFit(alpha=2.0, exponent=0.5, beta=1.0)
    assert data_equivalent_speedup(fit, 1.1, 100) == pytest.approx(4.0)  # D_eff = (2/0.1)^2 = 400
    assert data_equivalent_speedup(fit, 1.2, 100) == pytest.approx(1.0)  # matches AdamW
    assert data_equivalent_speedup(fit, 1.4, 100) == pytest.approx(0.25)  # D_eff = (2/0.4)^2 = 25
    assert data_equivalent_speedup(fit, 0.95, 100) == INF  # beats the asymptote
    with pytest.raises(ValueError, match="budget"):
        data_equivalent_speedup(fit, 1.1, 0)


def test_fit_recovers_the_hand_example():
    # L(D) = 2 D^-0.5 + 1 at D = 100, 200, 400.
    losses = [2 / 10 + 1, 2 / math.sqrt(200) + 1, 2 / 20 + 1]
    fit = fit_power_law([100, 200, 400], losses)
    assert fit.exponent == pytest.approx(0.5, rel=1e-6)
    assert fit.alpha == pytest.approx(2.0, rel=1e-6)
    assert fit.beta == pytest.approx(1.0, rel=1e-6)
    assert data_equivalent_speedup(fit, 1.1, 100) == pytest.approx(4.0, rel=1e-5)


@pytest.mark.parametrize(
    "budgets, losses",
    [
        ([10, 20, 40], [3.0, 2.0, 1.5]),  # (3-2)/(2-1.5) = 2 -> exponent 1, alpha/20 = 1 -> alpha 20, beta 1
        ([1e9, 2e9, 4e9], [4.0, 3.0, 2.4]),  # ratio 1/0.6 = 5/3 -> exponent log2(5/3)
        ([7, 14, 28], [1.0, 0.9, 0.85]),  # ratio 0.1/0.05 = 2 -> exponent 1
        ([1, 2, 4], [5.0, 1.0, 0.2]),  # ratio 4/0.8 = 5 -> exponent log2(5)
    ],
)
def test_fit_three_geometric_points_is_exact(budgets, losses):
    l1, l2, l4 = losses
    exponent = math.log2((l1 - l2) / (l2 - l4))
    # l1 - l2 = alpha D^-e (1 - 2^-e)  ->  alpha = (l1 - l2) D^e / (1 - 2^-e);  beta = l1 - alpha D^-e.
    alpha = (l1 - l2) * budgets[0] ** exponent / (1 - 2**-exponent)
    beta = l1 - (l1 - l2) / (1 - 2**-exponent)
    fit = fit_power_law(budgets, losses)
    assert fit.exponent == pytest.approx(exponent, rel=1e-6)
    assert fit.alpha == pytest.approx(alpha, rel=1e-5)
    assert fit.beta == pytest.approx(beta, rel=1e-6, abs=1e-9)
    for d, loss in zip(budgets, losses):  # the bounded search resolves the exponent to ~1e-8
        assert fit.loss(d) == pytest.approx(loss, rel=1e-7)


def test_fit_many_points_order_free_and_least_squares():
    budgets = [1e6, 3e6, 1e7, 3e7, 1e8]
    clean = [5 * d**-0.3 + 2 for d in budgets]
    fit = fit_power_law(budgets[::-1], clean[::-1])  # unsorted input is sorted by budget
    assert (fit.alpha, fit.exponent, fit.beta) == pytest.approx((5, 0.3, 2), rel=1e-6)

    # With noise the fit is a least-squares minimum: no worse than the generating law.
    noisy = [c + e for c, e in zip(clean, [2e-3, -1e-3, 1.5e-3, -2e-3, 0.5e-3])]
    fit = fit_power_law(budgets, noisy)

    def sse(f):
        return sum((f.loss(d) - y) ** 2 for d, y in zip(budgets, noisy))

    assert sse(fit) <= sse(PowerLawFit(5.0, 0.3, 2.0))
    for de in (-1e-3, 1e-3):  # and re-solving alpha, beta at a nudged exponent does not beat it
        x = np.asarray(budgets) ** -(fit.exponent + de)
        a, b = np.polyfit(x, noisy, 1)
        assert sse(fit) <= sse(PowerLawFit(a, fit.exponent + de, b)) + 1e-18


def test_fit_bad_input():
    with pytest.raises(ValueError, match="budgets"):
        fit_power_law([1, 2], [2.0, 1.0])
    with pytest.raises(ValueError, match="budgets"):
        fit_power_law([0, 1, 2], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="budgets"):
        fit_power_law([1, 2, 2], [3.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="budgets and losses"):
        fit_power_law([1, 2, 4], [3.0, 2.0])
    with pytest.raises(ValueError, match="losses"):
        fit_power_law([1, 2, 4], [3.0, math.nan, 1.0])
    with pytest.raises(ValueError, match="losses"):
        fit_power_law([1, 2, 4], [3.0, 3.0, 1.0])  # not strictly decreasing
    with pytest.raises(ValueError, match="losses"):
        fit_power_law([1, 2, 4], [1.0, 2.0, 3.0])


# ---------------------------------------------------------------------------------------------
# significance


def test_welch_p_value_by_hand():
    # a = 1,2,3; b = 4,5,6: sample variances 1, 1; se^2 = 1/3 + 1/3 = 2/3; t^2 = 9 / (2/3) = 13.5;
    # Welch df = (2/3)^2 / ((1/3)^2/2 + (1/3)^2/2) = 4. Student t with 4 df, with x = t / sqrt(1 + t^2/4):
    # two-sided p = 1 - (3/4) x (1 - x^2/12); x^2 = 13.5 / 4.375 = 108/35.
    x = math.sqrt(108 / 35)
    expected = 1 - 0.75 * x * (1 - x * x / 12)
    assert welch_p_value([1, 2, 3], [4, 5, 6]) == pytest.approx(expected, rel=1e-9)
    assert welch_p_value([4, 5, 6], [1, 2, 3]) == pytest.approx(expected, rel=1e-9)
    # One side constant: a = 1,1,1; b = 2,3,4: se^2 = 1/3, t = -2 sqrt(3), t^2 = 12, df = 2.
    # Student t with 2 df: two-sided p = 1 - |t| / sqrt(2 + t^2) = 1 - sqrt(12/14).
    assert welch_p_value([1, 1, 1], [2, 3, 4]) == pytest.approx(1 - math.sqrt(6 / 7), rel=1e-9)


def test_welch_p_value_untestable_and_equal_means():
    assert welch_p_value([1, 2, 3], [0, 2, 4]) == 1.0  # equal means 2 and 2
    assert math.isnan(welch_p_value([1.0], [1.0, 2.0]))  # fewer than 2 values
    assert math.isnan(welch_p_value([1.0, 2.0], []))
    assert math.isnan(welch_p_value([1.0, 1.0], [2.0, 2.0]))  # zero variance on both sides
    assert math.isnan(welch_p_value([0.1, 0.1, 0.1], [0.1, 0.1]))  # ... with equal means too
    assert math.isnan(welch_p_value([1.0, math.nan], [1.0, 2.0]))  # a diverged seed


def test_within_noise():
    # p from test_welch_p_value_by_hand is about 0.021.
    assert within_noise([1, 2, 3], [4, 5, 6]) is False
    assert within_noise([1, 2, 3], [4, 5, 6], alpha=0.01) is True
    assert within_noise([1, 2, 3], [0, 2, 4]) is True
    assert within_noise([1.0], [2.0, 3.0]) is None
    with pytest.raises(ValueError, match="alpha"):
        within_noise([1, 2], [3, 4], alpha=0.0)


# ---------------------------------------------------------------------------------------------
# properties of a solution


def test_effective_rank_by_hand():
    assert effective_rank(np.eye(5)) == pytest.approx(5.0, rel=1e-12)  # p_i = 1/5: exp(log 5)
    assert effective_rank(np.outer([1.0, 2.0, 3.0], [4.0, 5.0])) == pytest.approx(1.0, rel=1e-9)
    assert effective_rank(np.diag([1.0, 1.0, 0.0, 0.0])) == pytest.approx(2.0, rel=1e-12)
    # diag(3, 1): p = 3/4, 1/4; exp(H) = (3/4)^(-3/4) (1/4)^(-1/4) = 4 / 3^(3/4).
    assert effective_rank(np.diag([3.0, 1.0])) == pytest.approx(4 / 3**0.75, rel=1e-12)
    assert effective_rank(7.0 * np.diag([3.0, 1.0])) == pytest.approx(4 / 3**0.75, rel=1e-12)  # scale-free
    assert effective_rank(np.zeros((3, 4))) == 0.0


def test_effective_rank_torch_and_conv_kernel():
    assert effective_rank(torch.eye(3, requires_grad=True)) == pytest.approx(3.0, rel=1e-6)
    # A conv kernel (out=4, in=2, 3, 3) whose (4, 18) view has orthogonal unit rows -> s = 1,1,1,1.
    kernel = torch.zeros(4, 2, 3, 3)
    kernel.view(4, 18)[torch.arange(4), torch.tensor([0, 5, 9, 17])] = 1.0
    assert effective_rank(kernel) == pytest.approx(4.0, rel=1e-6)


def test_effective_rank_bad_input():
    with pytest.raises(ValueError, match="matrix"):
        effective_rank(np.ones(3))
    with pytest.raises(ValueError, match="matrix"):
        effective_rank(np.array([[1.0, math.nan]]))


# Sample excess kurtosis is asymptotically normal with variance, by the delta method on m4 / m2^2
# (symmetric law, standardized moments k4, k6, k8): (k8 - k4^2 - 4 k4 (k6 - k4) + 4 k4^2 (k4 - 1)) / n.
#   Gaussian: k4, k6, k8 = 3, 15, 105      -> 96 - 144 + 72 = 24
#   uniform:  k4, k6, k8 = 9/5, 27/7, 9    -> 5.76 - 7.2 * 2.057 + 12.96 * 0.8 ~= 1.32
#   Laplace:  k4, k6, k8 = 6, 90, 2520     -> 2484 - 2016 + 720 = 1188
# With n = 400_000 the standard errors are 0.0077, 0.0018, 0.054; the bounds below are ~5 of them.
N = 400_000


def test_excess_kurtosis_of_known_laws():
    rng = np.random.default_rng(0)
    assert abs(excess_kurtosis(rng.standard_normal(N))) < 0.04
    assert abs(excess_kurtosis(rng.uniform(-1, 1, N)) - (-1.2)) < 0.01
    assert abs(excess_kurtosis(rng.laplace(0, 1, N)) - 3.0) < 0.3
    assert excess_kurtosis([-2.5, 2.5, 2.5, -2.5]) == pytest.approx(-2.0, abs=1e-12)  # m4 = m2^2


def test_excess_kurtosis_by_hand_and_inputs():
    # 0,0,0,1: mu = 1/4, m2 = (3/16 + 9/16)/4 = 3/16, m4 = (3/256 + 81/256)/4 = 21/256,
    # m4 / m2^2 = (21/256) / (9/256) = 7/3 -> excess -2/3.
    assert excess_kurtosis([0.0, 0.0, 0.0, 1.0]) == pytest.approx(-2 / 3, rel=1e-12)
    assert excess_kurtosis(torch.tensor([[0.0, 0.0], [0.0, 1.0]])) == pytest.approx(-2 / 3, rel=1e-12)
    assert math.isnan(excess_kurtosis([0.1, 0.1, 0.1]))
    with pytest.raises(ValueError, match="values"):
        excess_kurtosis([])
    with pytest.raises(ValueError, match="values"):
        excess_kurtosis([1.0, INF])


# ---------------------------------------------------------------------------------------------
# summarize


def test_summarize():
    s = summarize([4.0, 1.0, 3.0, 2.0])
    # mean 2.5; squared deviations 2.25, 0.25, 0.25, 2.25 sum to 5 -> std sqrt(5/3).
    assert s == {"mean": 2.5, "std": pytest.approx(math.sqrt(5 / 3)), "n": 4, "min": 1.0, "max": 4.0}
    assert summarize([7]) == {"mean": 7.0, "std": 0.0, "n": 1, "min": 7.0, "max": 7.0}
    with pytest.raises(ValueError, match="values"):
        summarize([])


def test_summarize_propagates_non_finite():
    s = summarize([1.0, INF])
    assert s["mean"] == INF and math.isnan(s["std"]) and s["max"] == INF and s["min"] == 1.0
    s = summarize([1.0, math.nan, 2.0])
    assert all(math.isnan(s[k]) for k in ("mean", "std", "min", "max")) and s["n"] == 3
