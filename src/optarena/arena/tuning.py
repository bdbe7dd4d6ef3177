"""The tuning procedure: the same for every method, at the same budget of training runs.

Round 0 sweeps the learning rate: the method card's centre and a factor 4 either side (DeepOBS
sweeps lr on a log grid first), every other axis at its centre. Then coordinate descent
(Fantastic Pretraining Optimizers, Wen et al. 2025), coarse to fine: from the best point so far,
the untried neighbours along the first axis, in the card's priority order, that has any, first
`stride` grid points away (lr: x4), then one (x2), are run (both at once, so an axis is never
left with one side tried). A best value at the end of what was tried therefore gets the point
beyond it before anything else is refined: the range extends where the optimum lies, at x4 a
step. It stops when every neighbour of the best point has been tried (a local optimum of the
grid: `converged`) or the budget is spent; neighbours that do not all fit in what is left of
the budget are not started.

Each round depends only on the results of the rounds before it (never on how many workers ran
them, or in what order), so a run is reproducible and resumes exactly. Points are tuples of grid
indices, one per axis in the card's order; values are `Axis.value(index)`.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from ..cards import Axis

Point = tuple[int, ...]
Done = Sequence[tuple[Point, "float | None"]]
"""Finished runs in configuration order: (point, final metric; None or non-finite when it failed)."""


def values(axes: Mapping[str, Axis], point: Sequence[int]) -> dict[str, float]:
    """The hyperparameter values of a grid point."""
    return {name: axis.value(k) for (name, axis), k in zip(axes.items(), point)}


def first_round(axes: Mapping[str, Axis], budget: int) -> list[Point]:
    """The lr sweep: `2 * sweep + 1` points centred on the card (fewer if the budget is smaller)."""
    if budget < 1:
        raise ValueError(f"budget must be an integer in [1, inf), got {budget}")
    if not axes:  # nothing to tune (a trainer without hyperparameters): one run at its defaults
        return [()]
    lr = next(iter(axes.values()))
    half = min(lr.sweep, (budget - 1) // 2)
    rest = (0,) * (len(axes) - 1)
    return [(k * lr.stride, *rest) for k in range(-half, half + 1) if lr.valid(k * lr.stride)]


def best(done: Done, higher_is_better: bool) -> int | None:
    """Index in `done` of the best finite result (ties: the earlier configuration); None if none."""
    sign = -1.0 if higher_is_better else 1.0
    finite = [(sign * v, i) for i, (_, v) in enumerate(done) if v is not None and math.isfinite(v)]
    return min(finite)[1] if finite else None


def _incumbent(done: Done, higher_is_better: bool) -> Point:
    """The best point; when every run failed, the smallest lr tried (the search goes lower)."""
    i = best(done, higher_is_better)
    return done[i][0] if i is not None else min(p for p, _ in done)


def next_round(axes: Mapping[str, Axis], done: Done, budget: int, higher_is_better: bool) -> list[Point]:
    """The points to run next once every point of `done` has finished; [] when tuning is over."""
    left = budget - len(done)
    if left <= 0 or not done:
        return []
    tried = {tuple(p) for p, _ in done}
    center = tuple(_incumbent(done, higher_is_better))
    for i, axis in enumerate(axes.values()):
        for step in sorted({axis.stride, 1}, reverse=True):  # coarse, then fine
            around = [center[:i] + (center[i] + d,) + center[i + 1:] for d in (-step, step)
                      if axis.valid(center[i] + d)]  # fmt: skip
            untried = [p for p in around if p not in tried]
            if untried:
                if len(untried) <= left:
                    return untried
                break  # this axis does not fit: try the next
    return []


def summary(axes: Mapping[str, Axis], done: Done, budget: int, higher_is_better: bool) -> dict[str, Any]:
    """Where tuning ended, for results.json: per axis the values tried, the best, and whether the
    best is at an edge of what was tried (with a grid point beyond it: the optimum may lie outside;
    a hard bound of the hyperparameter is not an edge); `under_tuned` when any axis is. When every
    run failed, the smallest lr tried counts as the best (the search was going lower)."""
    i = best(done, higher_is_better)
    center = done[i][0] if i is not None else (_incumbent(done, higher_is_better) if done else None)
    report: dict[str, Any] = {}
    for j, (name, axis) in enumerate(axes.items()):
        ks = sorted({p[j] for p, _ in done})
        edge = None
        if center is not None and (len(ks) > 1 or (i is None and j == 0)):
            if center[j] == ks[0] and axis.valid(center[j] - 1):
                edge = "low"
            elif center[j] == ks[-1] and axis.valid(center[j] + 1):
                edge = "high"
        report[name] = {"values": [axis.value(k) for k in ks], "best": axis.value(center[j]) if center else None,
                        "edge": edge, "searched": len(ks) > 1}  # fmt: skip
    edges = [name for name, entry in report.items() if entry["edge"]]
    converged = bool(done) and not next_round(axes, done, math.inf, higher_is_better)  # type: ignore[arg-type]
    return {"budget": budget, "trials": len(done), "converged": converged, "axes": report, "edges": edges,
            "under_tuned": bool(edges)}  # fmt: skip


def describe(budget: int) -> str:
    """The procedure in one line, for the report."""
    return (f"lr at each method card's centre and x4 either side, then coordinate descent over the card's axes "
            f"in priority order (lr in x4 steps while its best is at an edge, then x2), a winning edge extended "
            f"first; {budget} training runs per method and workload")  # fmt: skip
