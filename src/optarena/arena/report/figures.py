"""The report's figures as PNG bytes: metric curves, performance profiles, speedup over AdamW.

Drawn on `matplotlib.figure.Figure` objects directly (no pyplot: no global backend or figure
registry is touched); matplotlib is imported only when a report is written. Every optimizer
keeps one color and line style across figures.
"""
from __future__ import annotations

import io
from typing import Any

from ..resultsfile import MethodRun, Results
from .format import fmt_num, fmt_speedup

NAMES = ("curves", "profiles", "speedup")
_STYLES = ("-", "--", "-.", ":")


def draw(results: Results) -> dict[str, bytes]:
    """The figures this run has data for, by name (a subset of `NAMES`)."""
    colors = _colors(list(results.optimizers))
    made = {"curves": _curves(results, colors), "profiles": _profiles(results, colors),
            "speedup": _speedup(results, colors)}  # fmt: skip
    return {k: v for k, v in made.items() if v is not None}


def _mpl_text(s: str) -> str:
    """A string matplotlib shows literally: no mathtext, and no legend-hiding leading '_'."""
    s = str(s).replace("$", r"\$")
    return " " + s if s.startswith("_") else s


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = max(1, min(max_cols, n))
    return (n + cols - 1) // cols, cols


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    fig.clear()  # release the artists; the figure was never registered with pyplot
    return buf.getvalue()


def _colors(opts: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"] if len(opts) <= 10 else colormaps["tab20"]
    return {o: cmap(i % cmap.N) for i, o in enumerate(opts)}


def _style(opts: list[str], o: str) -> str:
    """A line style per optimizer, the same in every figure (colors alone repeat past ten)."""
    return _STYLES[opts.index(o) % len(_STYLES)] if o in opts else "-"


def _band(run: MethodRun) -> tuple[Any, Any, Any, int] | None:
    """(steps, mean, min, max over the seeds, number of seeds) on the union of the seeds' steps;
    each seed's curve is interpolated inside its own finite range only."""
    import numpy as np

    curves = []
    for seed in run.seeds:
        if seed.status == "ok" and seed.curve:
            xs, ys = np.asarray([p[0] for p in seed.curve]), np.asarray([p[1] for p in seed.curve])
            order = np.argsort(xs)
            curves.append((xs[order], ys[order]))
    if not curves:
        return None
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    stack = np.full((len(curves), len(grid)), np.nan)
    for k, (xs, ys) in enumerate(curves):
        good = np.isfinite(ys)
        if good.any():
            inside = (grid >= xs[good][0]) & (grid <= xs[good][-1])
            stack[k, inside] = np.interp(grid[inside], xs[good], ys[good])
    keep = np.isfinite(stack).any(axis=0)
    if not keep.any():
        return None
    grid, stack = grid[keep], stack[:, keep]
    with np.errstate(all="ignore"):
        return grid, np.nanmean(stack, axis=0), np.nanmin(stack, axis=0), np.nanmax(stack, axis=0), len(curves)


def _curves(results: Results, colors: dict[str, Any]) -> bytes | None:
    import numpy as np
    from matplotlib.figure import Figure

    workloads = list(results.workloads.values())
    if not workloads:
        return None
    rows, cols = _grid(len(workloads))
    fig = Figure(figsize=(4.4 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    drew_any = False
    legend: dict[str, Any] = {}  # one legend for all panels, outside them
    for idx, w in enumerate(workloads):
        ax = axes[idx // cols][idx % cols]
        values: list[float] = []
        for run in w.ranking:
            band = _band(run)
            if band is None:
                continue
            grid, mean, lo, hi, n = band
            o = run.optimizer
            ax.plot(grid, mean, color=colors[o], lw=1.6, ls=_style(list(colors), o), label=_mpl_text(o),
                    marker="." if len(grid) < 3 else None)  # fmt: skip
            if n > 1:
                ax.fill_between(grid, lo, hi, color=colors[o], alpha=0.18, lw=0)
            values.extend(v for v in np.concatenate([lo, hi]) if np.isfinite(v))
            drew_any = True
        if w.target is not None:
            ax.axhline(w.target, color="0.3", ls="--", lw=1.0, label="target")
            values.append(w.target)
        if not w.higher_is_better and values and min(values) > 0:
            ax.set_yscale("log")
        arrow = "higher is better" if w.higher_is_better else "lower is better"
        ax.set_title(_mpl_text(w.name), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{_mpl_text(w.metric)} ({arrow})", fontsize=8)
        ax.grid(True, alpha=0.3, which="both")
        handles, labels = ax.get_legend_handles_labels()
        legend.update((label, h) for h, label in zip(handles, labels) if label not in legend)
        if not handles:
            ax.text(0.5, 0.5, "no curves", ha="center", va="center", transform=ax.transAxes, color="0.5")
    for idx in range(len(workloads), rows * cols):
        axes[idx // cols][idx % cols].set_visible(False)
    if not drew_any and all(w.target is None for w in workloads):
        fig.clear()
        return None
    if legend:
        order = [_mpl_text(o) for o in colors if _mpl_text(o) in legend] + [k for k in legend if k == "target"]
        fig.legend([legend[k] for k in order], order, loc="outside right upper", fontsize=8)
    return _png(fig)


def _profiles(results: Results, colors: dict[str, Any]) -> bytes | None:
    from matplotlib.figure import Figure

    prof = results.profiles
    if prof is None or not prof.taus or any(t is None for t in prof.taus) or not prof.rho:
        return None
    taus = list(prof.taus)
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    drew = False
    for o in prof.order(results.optimizers):
        ys = prof.rho.get(o, ())
        if len(ys) != len(taus):
            continue
        s = prof.score.get(o)
        label = f"{_mpl_text(o)} ({fmt_num(s, 3)})" if s is not None else _mpl_text(o)
        ax.step(taus, [0.0 if v is None else v for v in ys], where="post", color=colors.get(o), lw=1.8,
                ls=_style(list(colors), o), label=label)  # fmt: skip
        drew = True
    if not drew:
        fig.clear()
        return None
    ax.set_xlim(min(taus), max(taus))
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("τ (cost within τ × the best optimizer's)")
    ax.set_ylabel("ρ(τ): fraction of workloads")
    ax.grid(True, alpha=0.3)
    fig.legend(fontsize=8, loc="outside right upper", title="optimizer (score)", title_fontsize=8)
    return _png(fig)


def _speedup(results: Results, colors: dict[str, Any]) -> bytes | None:
    from matplotlib.figure import Figure

    if not results.speedup:
        return None
    rows, cols = _grid(len(results.speedup))
    fig = Figure(figsize=(4.4 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for idx, (w, entry) in enumerate(results.speedup.items()):
        ax = axes[idx // cols][idx % cols]
        opts = [o for o in results.optimizers if o in entry.values] + [o for o in entry.values if o not in results.optimizers]
        bars = [(o, entry.values[o]) for o in opts]
        top = max([s.value for _, s in bars if s.value is not None] + [1.0]) * 1.25
        for i, (o, s) in enumerate(bars):
            color = colors.get(o, "0.5")
            if s.value is not None:
                ax.bar(i, s.value, color=color, edgecolor="black", lw=0.6)
                ax.text(i, s.value, fmt_speedup(s), ha="center", va="bottom", fontsize=7)
            else:
                h = top if s.beyond else 0.2 * top
                ax.bar(i, h, color=color if s.beyond else "white", alpha=0.45 if s.beyond else 1.0, hatch="//",
                       edgecolor="black", lw=0.6)  # fmt: skip
                ax.text(i, h, fmt_speedup(s), ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="0.25", ls="--", lw=1.0)
        ax.set_xticks(range(len(bars)), [_mpl_text(o) for o, _ in bars], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, top * 1.12)
        ax.set_title(_mpl_text(w), fontsize=10)
        ax.set_ylabel("speedup over AdamW", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        if not bars:
            ax.text(0.5, 0.5, "no speedups", ha="center", va="center", transform=ax.transAxes, color="0.5")
    for idx in range(len(results.speedup), rows * cols):
        axes[idx // cols][idx % cols].set_visible(False)
    return _png(fig)
