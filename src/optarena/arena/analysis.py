"""The arena's pure math: time to target, performance profiles, data-equivalent speedup,
significance and properties of a trained solution.

Nothing here trains or reads files: every function takes plain numbers (lists, numpy arrays, and for
the solution properties also torch tensors) and returns Python floats, so the arena's conclusions can
be checked by hand. Bad input raises `ValueError` naming the offending argument.

scipy (installed with the `test` and `demo` extras) is imported lazily, by `fit_power_law` and
`welch_p_value` only.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "PowerLawFit",
    "data_equivalent_speedup",
    "effective_rank",
    "excess_kurtosis",
    "fit_power_law",
    "performance_profile",
    "profile_score",
    "steps_to_target",
    "summarize",
    "welch_p_value",
    "within_noise",
]


def _float_array(values: Any, name: str) -> np.ndarray:
    """`values` (list, numpy array or torch tensor) as a flat float64 array; ValueError naming `name`."""
    if hasattr(values, "detach"):  # a torch tensor, without importing torch
        values = values.detach().cpu().double().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numbers, got {values!r}") from e
    return arr.reshape(-1)


# ---------------------------------------------------------------------------------------------
# Time to target


def steps_to_target(curve: Sequence[tuple[float, float]], target: float, higher_is_better: bool) -> float:
    """The first step of `curve` whose metric reaches `target`; `math.inf` if none does.

    `curve` holds (step, metric) pairs in increasing step order (the evaluations of one run).
    "Reaches" is `metric >= target` when `higher_is_better`, else `metric <= target`. A non-finite
    metric (a diverged run) never reaches the target, and an empty curve never reaches it either.
    Counting evaluation steps, not wall time, keeps the cost independent of the machine.
    """
    target = float(target)
    if not math.isfinite(target):
        raise ValueError(f"target must be finite, got {target}")
    previous = -math.inf
    reached = math.inf
    for i, pair in enumerate(curve):
        try:
            step, metric = pair
            step, metric = float(step), float(metric)
        except (TypeError, ValueError) as e:
            raise ValueError(f"curve[{i}] must be a (step, metric) pair of numbers, got {pair!r}") from e
        if not math.isfinite(step):
            raise ValueError(f"curve[{i}] has a non-finite step {step}")
        if step < previous:
            raise ValueError(f"curve must be in increasing step order; step {step} at curve[{i}] follows {previous}")
        previous = step
        if reached == math.inf and math.isfinite(metric):
            if (metric >= target) if higher_is_better else (metric <= target):
                reached = step  # keep scanning only to validate the order of the rest
    return reached


# ---------------------------------------------------------------------------------------------
# Performance profiles (AlgoPerf, Dahl et al. 2023; after Dolan & More 2002)


def _ratios(costs: Mapping[str, Mapping[str, float]]) -> dict[str, np.ndarray]:
    """Validated performance ratios cost / best cost, per optimizer, in one fixed workload order."""
    if not costs:
        raise ValueError("costs must hold at least one optimizer")
    optimizers = list(costs)
    workloads = sorted(costs[optimizers[0]])
    if not workloads:
        raise ValueError(f"costs[{optimizers[0]!r}] must hold at least one workload")
    table = np.empty((len(optimizers), len(workloads)))
    for i, opt in enumerate(optimizers):
        if sorted(costs[opt]) != workloads:
            raise ValueError(
                f"costs: every optimizer must list the same workloads; {opt!r} has {sorted(costs[opt])}, "
                f"{optimizers[0]!r} has {workloads}"
            )
        for j, w in enumerate(workloads):
            c = float(costs[opt][w])
            if not (c > 0):  # also rejects nan
                raise ValueError(f"costs[{opt!r}][{w!r}] must be > 0 or inf (a miss), got {c}")
            table[i, j] = c
    best = table.min(axis=0)
    with np.errstate(invalid="ignore"):
        ratios = np.where(np.isfinite(table) & np.isfinite(best), table / best, np.inf)
    return {opt: ratios[i] for i, opt in enumerate(optimizers)}


def performance_profile(costs: Mapping[str, Mapping[str, float]], taus: Iterable[float]) -> dict[str, list[float]]:
    """rho_o(tau): the share of workloads on which optimizer o is within a factor tau of the best.

    `costs[optimizer][workload]` is a cost such as steps to target (lower is better, `inf` = target
    missed); every optimizer must list the same workloads. For each workload the best cost b_w is
    the minimum over optimizers and o's ratio is r = cost / b_w (so the best has r = 1). A missed
    target has r = inf and never counts, even at tau = inf; a workload every optimizer missed counts
    for nobody. Profiles compare optimizers across workloads whose costs have different scales.
    """
    ratios = _ratios(costs)
    taus = _float_array(list(taus), "taus")
    if np.isnan(taus).any():
        raise ValueError(f"taus must not contain nan, got {taus.tolist()}")
    return {
        opt: [float(np.mean(np.isfinite(r) & (r <= tau))) for tau in taus]
        for opt, r in ratios.items()
    }


def profile_score(costs: Mapping[str, Mapping[str, float]], tau_max: float = 4.0) -> dict[str, float]:
    """The area under each optimizer's performance profile on [1, tau_max], divided by tau_max - 1.

    A score of 1 means best (r = 1) on every workload; 0 means never within tau_max of the best. rho
    is a step function, so the area is exact: a workload with finite ratio r contributes
    max(0, tau_max - r) / (tau_max - 1) and a missed one contributes 0, averaged over workloads.
    """
    tau_max = float(tau_max)
    if not (math.isfinite(tau_max) and tau_max > 1):
        raise ValueError(f"tau_max must be finite and > 1, got {tau_max}")
    scores = {}
    for opt, r in _ratios(costs).items():
        with np.errstate(invalid="ignore"):
            area = np.where(np.isfinite(r), np.maximum(0.0, tau_max - r), 0.0)
        scores[opt] = float(np.mean(area) / (tau_max - 1))
    return scores


# ---------------------------------------------------------------------------------------------
# Data-equivalent speedup (Wen et al. 2025, "Fantastic Pretraining Optimizers and Where to Find Them")


@dataclass(frozen=True)
class PowerLawFit:
    """L(D) = alpha * D**(-exponent) + beta: a baseline's (AdamW's) loss against its budget D.

    beta is the asymptotic loss at infinite budget.
    """

    alpha: float
    exponent: float
    beta: float

    def loss(self, budget: float) -> float:
        """The fitted loss at `budget` (> 0)."""
        budget = float(budget)
        if not budget > 0:
            raise ValueError(f"budget must be > 0, got {budget}")
        return float(self.alpha * budget ** (-self.exponent) + self.beta)

    def budget(self, loss: float) -> float:
        """The inverse: the budget D at which the fit reaches `loss`, (alpha / (loss - beta))**(1/exponent).

        `inf` when loss <= beta: better than the baseline's asymptote, which no budget reaches.
        """
        loss = float(loss)
        if math.isnan(loss):
            raise ValueError("loss must not be nan")
        if loss <= self.beta:
            return math.inf
        try:
            return float((self.alpha / (loss - self.beta)) ** (1.0 / self.exponent))
        except OverflowError:
            return math.inf


def _linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares y ~ a * x + b: (a, b, sum of squared residuals)."""
    xm, ym = x.mean(), y.mean()
    dx, dy = x - xm, y - ym
    a = float(dx @ dy / (dx @ dx))
    b = float(ym - a * xm)
    res = dy - a * dx
    return a, b, float(res @ res)


def fit_power_law(budgets: Sequence[float], losses: Sequence[float]) -> PowerLawFit:
    """Least-squares fit of L(D) = alpha * D**(-exponent) + beta to (budget, loss) points.

    For a fixed exponent, alpha and beta enter linearly and are solved exactly; the exponent then
    minimizes the residual, bracketed on a log grid over [1e-3, 10] and refined by a bounded 1-D
    search. Needs at least 3 points with distinct, strictly positive budgets and finite losses that
    strictly decrease with budget (otherwise there is no meaningful power law). Losses that do not
    bend like a power law (e.g. decreasing linearly in log D) push the exponent to the search bound.
    """
    from scipy.optimize import minimize_scalar

    d = _float_array(budgets, "budgets")
    y = _float_array(losses, "losses")
    if d.size != y.size:
        raise ValueError(f"budgets and losses must have the same length, got {d.size} and {y.size}")
    if d.size < 3:
        raise ValueError(f"budgets: need at least 3 points to fit alpha, exponent and beta, got {d.size}")
    if not (np.isfinite(d).all() and (d > 0).all()):
        raise ValueError(f"budgets must be finite and > 0, got {d.tolist()}")
    if not np.isfinite(y).all():
        raise ValueError(f"losses must be finite, got {y.tolist()}")
    order = np.argsort(d, kind="stable")
    d, y = d[order], y[order]
    if not (np.diff(d) > 0).all():
        raise ValueError(f"budgets must be distinct, got {d.tolist()}")
    if not (np.diff(y) < 0).all():
        raise ValueError(f"losses must strictly decrease as the budget grows, got {y.tolist()} at budgets {d.tolist()}")

    # Work with D / D0 in [1, ...] so the regressor stays in (0, 1]; alpha is rescaled at the end.
    d0 = d[0]
    scaled = d / d0

    def sse(exponent: float) -> float:
        return _linear_fit(scaled ** (-exponent), y)[2]

    lo, hi = 1e-3, 10.0
    grid = np.geomspace(lo, hi, 121)
    values = np.array([sse(e) for e in grid])
    k = int(np.argmin(values))
    bracket = (grid[max(k - 1, 0)], grid[min(k + 1, grid.size - 1)])
    result = minimize_scalar(sse, bounds=bracket, method="bounded", options={"xatol": 1e-12, "maxiter": 500})
    exponent = float(result.x) if result.fun <= values[k] else float(grid[k])
    a, beta, _ = _linear_fit(scaled ** (-exponent), y)
    # a * (D / d0)**(-e) = (a * d0**e) * D**(-e)
    return PowerLawFit(alpha=float(a * d0**exponent), exponent=exponent, beta=beta)


def data_equivalent_speedup(fit: PowerLawFit, loss: float, budget: float) -> float:
    """How many times more data the baseline needs to match `loss` reached with `budget`.

    fit.budget(loss) / budget, where `fit` is the baseline's power law: above 1 the optimizer is
    worth more data than it used; `inf` when it beats the baseline's asymptote.
    """
    budget = float(budget)
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be finite and > 0, got {budget}")
    return fit.budget(loss) / budget


# ---------------------------------------------------------------------------------------------
# Significance


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch t-test p-value for "a and b (e.g. final metrics over seeds) share a mean".

    nan when not testable: fewer than 2 values on either side, both sides constant (zero variance),
    or a non-finite value (a diverged seed). Equal means give p = 1. With the few seeds an arena can
    afford the test has little power: a large p means "no evidence of a difference", not "equal".
    """
    from scipy import stats

    x, y = _float_array(a, "a"), _float_array(b, "b")
    if x.size < 2 or y.size < 2:
        return math.nan
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return math.nan
    if x.mean() == y.mean():
        return 1.0
    with warnings.catch_warnings():  # scipy warns of precision loss when one side is constant; it is exact
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(x, y, equal_var=False).pvalue)


def within_noise(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> bool | None:
    """Whether a and b are indistinguishable at level `alpha` (Welch p >= alpha); None if not testable.

    With few seeds the test has little power, so True often only means "too few seeds to tell".
    """
    alpha = float(alpha)
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    p = welch_p_value(a, b)
    return None if math.isnan(p) else bool(p >= alpha)


# ---------------------------------------------------------------------------------------------
# Properties of a solution


def effective_rank(matrix: Any) -> float:
    """Roy & Vetterli's (2007) effective rank: exp of the entropy of the normalized singular values.

    p_i = s_i / sum(s), erank = exp(-sum p_i log p_i): between 1 (rank one) and min(shape) (flat
    spectrum), and continuous, unlike the numerical rank. Tensors with more than 2 dimensions (conv
    kernels) are reshaped to (out, -1). Accepts torch tensors or numpy arrays; a zero matrix gives 0.
    """
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().double().numpy()
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim < 2:
        raise ValueError(f"matrix must have at least 2 dimensions, got shape {m.shape}")
    if m.size == 0:
        raise ValueError(f"matrix must not be empty, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError("matrix must be finite")
    m = m.reshape(m.shape[0], -1)
    s = np.linalg.svd(m, compute_uv=False)
    total = s.sum()
    if total == 0:
        return 0.0
    p = s[s > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def excess_kurtosis(values: Any) -> float:
    """Excess kurtosis of all elements: E[(x - mu)^4] / var^2 - 3, with population moments in float64.

    0 for a Gaussian, -1.2 for a uniform, -2 for a symmetric two-point distribution (the minimum),
    3 for a Laplace; large values flag outlier features (heavy-tailed activations or weights).
    Constant input gives nan. Accepts torch tensors, numpy arrays or nested lists.
    """
    x = _float_array(values, "values")
    if x.size == 0:
        raise ValueError("values must not be empty")
    if not np.isfinite(x).all():
        raise ValueError("values must be finite")
    if np.ptp(x) == 0:
        return math.nan
    d = x - x.mean()
    d2 = d * d
    var = d2.mean()
    return float((d2 * d2).mean() / (var * var) - 3.0)


# ---------------------------------------------------------------------------------------------
# Summaries


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """mean, std (sample, ddof=1; 0.0 for a single value), n, min and max of `values`.

    Nothing is dropped: a non-finite value (a diverged seed) propagates into mean, std, min and max
    so that it cannot go unnoticed.
    """
    x = _float_array(list(values), "values")
    if x.size == 0:
        raise ValueError("values must not be empty")
    with np.errstate(invalid="ignore"):
        std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
        return {
            "mean": float(np.mean(x)),
            "std": std,
            "n": int(x.size),
            "min": float(np.min(x)),
            "max": float(np.max(x)),
        }
