"""The human report of an arena run: report.md and a self-contained report.html.

`write_report(results, out_dir)` reads a results dict (schema "optarena.arena.results/1", the
content of results.json) and writes, atomically:

- `report.html`: one file with inline CSS and the figures embedded as base64 PNG; it links to
  nothing outside itself, so it can be mailed or archived as is;
- `report.md`: the same tables as GitHub markdown, with the figures written next to it as
  `figures/*.png` and linked relatively.

The report is built once as a list of neutral blocks (headings, paragraphs, tables, figures,
lists) holding plain text; each renderer escapes every piece of text for its own format, so
optimizer and workload names never reach the output unescaped.

Everything in the results may be missing: an optimizer may have failed on a workload (null
numbers), the speedup section may be empty, a workload may record no solution properties.
Missing numbers print as "—".

matplotlib is needed for the figures; it is imported when a report is written, and the
figures are drawn on `matplotlib.figure.Figure` objects directly (no pyplot, so no global
backend or figure registry is touched).
"""
from __future__ import annotations

import base64
import html
import io
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from .io import write_atomic

__all__ = ["write_report"]

MISSING = "—"
NOISE_MARK = "≈"
FIGURE_DIR = "figures"
_FIGURE_NAMES = ("curves", "profiles", "speedup")

_PROPERTY_TITLES = {
    "effective_rank": "Effective rank",
    "activation_kurtosis": "Activation kurtosis",
    "tail_error": "Tail error",
}


# ----------------------------------------------------------------------------- numbers


def _finite(x: Any) -> float | None:
    """`x` as a finite float, or None (None, bool, non-numbers, inf and nan all give None)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _compact_exp(s: str) -> str:
    """'1.23e-05' -> '1.23e-5', '4e+06' -> '4e6'."""
    m = re.fullmatch(r"(-?[\d.]+)e([+-])0*(\d+)", s)
    if not m:
        return s
    mant, sign, exp = m.groups()
    return f"{mant}e{'-' if sign == '-' else ''}{exp}"


def fmt_num(x: Any, sig: int = 4) -> str:
    """A number with `sig` significant digits, without trailing zeros or needless exponents."""
    if x is None or isinstance(x, bool):
        return MISSING if x is None else str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    if abs(v) >= 10 ** sig:
        return f"{v:.0f}"
    return _compact_exp(f"{v:.{sig}g}")


def _fmt_value(v: Any, sig: int = 3) -> str:
    """A hyperparameter value: numbers with `sig` digits, sequences in parentheses."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return str(v) if abs(v) < 10 ** 6 else fmt_num(v, sig)
    if isinstance(v, float):
        return fmt_num(v, sig)
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(_fmt_value(u, sig) for u in v) + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={_fmt_value(u, sig)}" for k, u in v.items()) + "}"
    return str(v)


def _fmt_params(params: Any) -> str:
    if not isinstance(params, dict) or not params:
        return MISSING
    return ", ".join(f"{k}={_fmt_value(v)}" for k, v in params.items())


def _fmt_steps(x: Any) -> str:
    v = _finite(x)
    if v is None:
        return MISSING
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else fmt_num(v, 4)


def _fmt_date(created: Any) -> str:
    if not isinstance(created, str) or not created:
        return MISSING
    try:
        d = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created
    offset = d.utcoffset()
    if offset is None:
        return d.strftime("%Y-%m-%d %H:%M")
    return d.strftime("%Y-%m-%d %H:%M") + (" UTC" if not offset else d.strftime(" UTC%z"))


# ----------------------------------------------------------------------------- document model


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]
    align: list[str] | None = None  # "l" or "r" per column
    notes: list[str] = field(default_factory=list)


@dataclass
class Block:
    kind: str  # "h1" "h2" "h3" "p" "table" "figure" "ul"
    text: str = ""
    table: Table | None = None
    items: list[str] = field(default_factory=list)
    figure: str = ""  # key into the figures dict


class Doc:
    def __init__(self) -> None:
        self.blocks: list[Block] = []

    def h1(self, text: str) -> None:
        self.blocks.append(Block("h1", text))

    def h2(self, text: str) -> None:
        self.blocks.append(Block("h2", text))

    def h3(self, text: str) -> None:
        self.blocks.append(Block("h3", text))

    def p(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def ul(self, items: Iterable[str]) -> None:
        self.blocks.append(Block("ul", items=list(items)))

    def table(self, table: Table) -> None:
        self.blocks.append(Block("table", table=table))

    def figure(self, key: str, caption: str) -> None:
        self.blocks.append(Block("figure", caption, figure=key))


# ----------------------------------------------------------------------------- reading results


def _runs(results: dict) -> dict:
    runs = results.get("runs")
    return runs if isinstance(runs, dict) else {}


def _run(results: dict, w: str, opt: str) -> dict | None:
    r = _runs(results).get(w)
    r = r.get(opt) if isinstance(r, dict) else None
    return r if isinstance(r, dict) else None


def _info(results: dict, w: str) -> dict:
    info = (results.get("workload_info") or {}).get(w)
    return info if isinstance(info, dict) else {}


def _higher(results: dict, w: str) -> bool:
    return bool(_info(results, w).get("higher_is_better", False))


def _workloads(results: dict) -> list[str]:
    ws = list(results.get("workloads") or [])
    for w in _runs(results):  # robust to a runs dict naming more than the list
        if w not in ws:
            ws.append(w)
    return [str(w) for w in ws]


def _optimizers(results: dict) -> list[str]:
    opts = list(results.get("optimizers") or [])
    for per_w in _runs(results).values():
        if isinstance(per_w, dict):
            for o in per_w:
                if o not in opts:
                    opts.append(o)
    return [str(o) for o in opts]


def _final_mean(run: dict | None) -> float | None:
    if not run:
        return None
    final = run.get("final")
    return _finite(final.get("mean")) if isinstance(final, dict) else None


def _ok(run: dict | None) -> bool:
    return bool(run) and run.get("status", "ok") == "ok"


def _sorted_opts(results: dict, w: str) -> list[str]:
    """Best first by mean final metric; failed or missing runs last (in suite order)."""
    higher = _higher(results, w)
    opts = _optimizers(results)

    def key(item: tuple[int, str]) -> tuple:
        i, o = item
        run = _run(results, w, o)
        m = _final_mean(run) if _ok(run) else None
        if m is None:
            return (1, 0.0, i)
        return (0, -m if higher else m, i)

    return [o for _, o in sorted(enumerate(opts), key=key)]


def _seed_curve(seed: dict) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for point in seed.get("curve") or []:
        if not isinstance(point, (list, tuple)) or len(point) < 2:
            continue
        x = _finite(point[0])
        if x is None:
            continue
        y = _finite(point[1])
        xs.append(x)
        ys.append(math.nan if y is None else y)
    return xs, ys


def _properties(run: dict | None) -> dict[str, float | None]:
    """The run's aggregated properties, else the mean over seeds that recorded them."""
    if not run:
        return {}
    props = run.get("properties")
    out: dict[str, float | None] = {}
    if isinstance(props, dict):
        out = {str(k): _finite(v) for k, v in props.items()}
    if any(v is not None for v in out.values()):
        return out
    acc: dict[str, list[float]] = {}
    for seed in run.get("seeds") or []:
        sp = seed.get("properties") if isinstance(seed, dict) else None
        if isinstance(sp, dict):
            for k, v in sp.items():
                acc.setdefault(str(k), [])
                if _finite(v) is not None:
                    acc[str(k)].append(float(v))
    for k, vs in acc.items():
        out[k] = sum(vs) / len(vs) if vs else None
    return out


def _speedup_label(value: Any, run: dict | None, entry: dict) -> tuple[float | None, str]:
    """(finite speedup or None, label). Null speedup reads as '>max' when the fit exists and the
    optimizer's run is fine (its loss lies beyond what the AdamW fit reaches), else 'n/a'."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isinf(value) and value > 0:
            return None, ">max"
        v = _finite(value)
        if v is not None:
            return v, f"{fmt_num(v, 3)}x"
        return None, "n/a"
    if value is None and isinstance(entry.get("fit"), dict) and _ok(run) and _final_mean(run) is not None:
        return None, ">max"
    return None, "n/a"


# ----------------------------------------------------------------------------- figures


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
    n = cmap.N
    return {o: cmap(i % n) for i, o in enumerate(opts)}


_STYLES = ("-", "--", "-.", ":")


def _style(opts: list[str], o: str) -> str:
    """A line style per optimizer, the same in every figure (colors alone repeat past ten)."""
    return _STYLES[opts.index(o) % len(_STYLES)] if o in opts else "-"


def _fig_curves(results: dict, colors: dict[str, Any]) -> bytes | None:
    import numpy as np
    from matplotlib.figure import Figure

    workloads = _workloads(results)
    if not workloads:
        return None
    rows, cols = _grid(len(workloads))
    fig = Figure(figsize=(4.4 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    targets = results.get("targets") or {}
    drew_any = False
    legend: dict[str, Any] = {}  # one legend for all panels, outside them
    for idx, w in enumerate(workloads):
        ax = axes[idx // cols][idx % cols]
        info = _info(results, w)
        metric = str(info.get("metric", "metric"))
        higher = bool(info.get("higher_is_better", False))
        values: list[float] = []
        for o in _sorted_opts(results, w):
            run = _run(results, w, o)
            if not run:
                continue
            curves = []
            for seed in run.get("seeds") or []:
                if not isinstance(seed, dict) or seed.get("status", "ok") != "ok":
                    continue
                xs, ys = _seed_curve(seed)
                if len(xs) >= 1:
                    order = np.argsort(xs)
                    curves.append((np.asarray(xs)[order], np.asarray(ys)[order]))
            if not curves:
                continue
            grid = np.unique(np.concatenate([c[0] for c in curves]))
            stack = np.full((len(curves), len(grid)), np.nan)
            for k, (xs, ys) in enumerate(curves):
                good = np.isfinite(ys)
                if not good.any():
                    continue
                inside = (grid >= xs[good][0]) & (grid <= xs[good][-1])
                stack[k, inside] = np.interp(grid[inside], xs[good], ys[good])
            keep = np.isfinite(stack).any(axis=0)
            if not keep.any():
                continue
            grid, stack = grid[keep], stack[:, keep]
            with np.errstate(all="ignore"):
                mean = np.nanmean(stack, axis=0)
                lo = np.nanmin(stack, axis=0)
                hi = np.nanmax(stack, axis=0)
            ax.plot(grid, mean, color=colors[o], lw=1.6, ls=_style(list(colors), o), label=_mpl_text(o),
                    marker="." if len(grid) < 3 else None)  # fmt: skip
            if len(curves) > 1:
                ax.fill_between(grid, lo, hi, color=colors[o], alpha=0.18, lw=0)
            values.extend(v for v in np.concatenate([lo, hi]) if np.isfinite(v))
            drew_any = True
        target = _finite(targets.get(w)) if isinstance(targets, dict) else None
        if target is not None:
            ax.axhline(target, color="0.3", ls="--", lw=1.0, label="target")
            values.append(target)
        if not higher and values and min(values) > 0:
            ax.set_yscale("log")
        arrow = "higher is better" if higher else "lower is better"
        ax.set_title(_mpl_text(w), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel(f"{_mpl_text(metric)} ({arrow})", fontsize=8)
        ax.grid(True, alpha=0.3, which="both")
        handles, labels = ax.get_legend_handles_labels()
        legend.update((label, h) for h, label in zip(handles, labels) if label not in legend)
        if not handles:
            ax.text(0.5, 0.5, "no curves", ha="center", va="center", transform=ax.transAxes, color="0.5")
    for idx in range(len(workloads), rows * cols):
        axes[idx // cols][idx % cols].set_visible(False)
    if not drew_any and not any(_finite((targets or {}).get(w)) is not None for w in workloads):
        fig.clear()
        return None
    if legend:
        order = [_mpl_text(o) for o in colors if _mpl_text(o) in legend] + [k for k in legend if k == "target"]
        fig.legend([legend[k] for k in order], order, loc="outside right upper", fontsize=8)
    return _png(fig)


def _fig_profiles(results: dict, colors: dict[str, Any]) -> bytes | None:
    from matplotlib.figure import Figure

    prof = results.get("profiles")
    if not isinstance(prof, dict):
        return None
    taus = [_finite(t) for t in prof.get("taus") or []]
    rho = prof.get("rho") or {}
    score = prof.get("score") or {}
    if not taus or any(t is None for t in taus) or not isinstance(rho, dict) or not rho:
        return None
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.subplots()
    if not isinstance(score, dict):
        score = {}

    def best_first(o: str) -> float:
        s = _finite(score.get(o))
        return -s if s is not None else math.inf

    order = sorted(rho, key=best_first)
    drew = False
    for i, o in enumerate(order):
        ys = [_finite(v) for v in rho.get(o) or []]
        if len(ys) != len(taus):
            continue
        ys = [0.0 if v is None else v for v in ys]
        s = _finite(score.get(o))
        label = f"{_mpl_text(o)} ({fmt_num(s, 3)})" if s is not None else _mpl_text(o)
        ax.step(taus, ys, where="post", color=colors.get(o), lw=1.8, ls=_style(list(colors), o), label=label)
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


def _fig_speedup(results: dict, colors: dict[str, Any]) -> bytes | None:
    from matplotlib.figure import Figure

    speedup = results.get("speedup")
    if not isinstance(speedup, dict) or not speedup:
        return None
    workloads = [w for w, e in speedup.items() if isinstance(e, dict)]
    if not workloads:
        return None
    rows, cols = _grid(len(workloads))
    fig = Figure(figsize=(4.4 * cols, 3.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for idx, w in enumerate(workloads):
        ax = axes[idx // cols][idx % cols]
        entry = speedup[w]
        per_opt = entry.get("speedup") if isinstance(entry.get("speedup"), dict) else {}
        opts = [o for o in _optimizers(results) if o in per_opt] + [o for o in per_opt if o not in _optimizers(results)]
        bars = [(o, *_speedup_label(per_opt[o], _run(results, w, str(o)), entry)) for o in opts]
        finite = [v for _, v, _ in bars if v is not None]
        top = max(finite + [1.0]) * 1.25
        for i, (o, v, label) in enumerate(bars):
            color = colors.get(o, "0.5")
            if v is not None:
                ax.bar(i, v, color=color, edgecolor="black", lw=0.6)
                ax.text(i, v, label, ha="center", va="bottom", fontsize=7)
            else:
                h = top if label == ">max" else 0.2 * top
                face = color if label == ">max" else "white"
                ax.bar(i, h, color=face, alpha=0.45 if label == ">max" else 1.0, hatch="//",
                       edgecolor="black", lw=0.6)
                ax.text(i, h, label, ha="center", va="bottom", fontsize=7)
        ax.axhline(1.0, color="0.25", ls="--", lw=1.0)
        ax.set_xticks(range(len(bars)), [_mpl_text(o) for o, _, _ in bars], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, top * 1.12)
        ax.set_title(_mpl_text(w), fontsize=10)
        ax.set_ylabel("speedup over AdamW", fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        if not bars:
            ax.text(0.5, 0.5, "no speedups", ha="center", va="center", transform=ax.transAxes, color="0.5")
    for idx in range(len(workloads), rows * cols):
        axes[idx // cols][idx % cols].set_visible(False)
    return _png(fig)


def _figures(results: dict) -> dict[str, bytes]:
    colors = _colors(_optimizers(results))
    made = {
        "curves": _fig_curves(results, colors),
        "profiles": _fig_profiles(results, colors),
        "speedup": _fig_speedup(results, colors),
    }
    return {k: v for k, v in made.items() if v is not None}


# ----------------------------------------------------------------------------- building the report


def _summary_table(results: dict, w: str) -> Table:
    info = _info(results, w)
    metric = str(info.get("metric", "metric"))
    arrow = "↑" if info.get("higher_is_better") else "↓"
    seeds_total = len((results.get("settings") or {}).get("seeds") or [])
    columns = ["Optimizer", f"Final {metric} {arrow} (mean ± std)", "Steps to target", "ms/step",
               "Opt-step ms", "State B/param", "Best hyperparameters"]
    rows = []
    marked = False
    partial = False
    for o in _sorted_opts(results, w):
        run = _run(results, w, o)
        if run is None:
            rows.append([o, "not run", MISSING, MISSING, MISSING, MISSING, MISSING])
            continue
        final = run.get("final") if isinstance(run.get("final"), dict) else {}
        mean, std = _finite(final.get("mean")), _finite(final.get("std"))
        if not _ok(run):
            cell = f"failed ({run.get('status')})" if run.get("status") != "failed" else "failed"
        elif mean is None:
            cell = MISSING
        else:
            n = final.get("n")
            show_std = std is not None and not (isinstance(n, int) and n < 2)
            cell = fmt_num(mean) + (f" ± {fmt_num(std, 2)}" if show_std else "")
            if isinstance(n, int) and seeds_total and n < seeds_total:
                cell += f" ({n}/{seeds_total} seeds)"
                partial = True
            vs = run.get("vs_adamw") if isinstance(run.get("vs_adamw"), dict) else {}
            if vs.get("within_noise") is True and o != "adamw":
                cell += f" {NOISE_MARK}"
                marked = True
        rows.append([
            o,
            cell,
            _fmt_steps(run.get("steps_to_target")),
            fmt_num(_finite(run.get("step_ms")), 3),
            fmt_num(_finite(run.get("opt_step_ms")), 3),
            fmt_num(_finite(run.get("state_bytes_per_param")), 3),
            _fmt_params(run.get("best_params")),
        ])
    notes = []
    if marked:
        notes.append(f"{NOISE_MARK}: the difference to AdamW's mean final {metric} is within seed "
                     "noise (not significant across the seeds). No mark: the difference is "
                     "significant, for better or worse, or was not tested (AdamW itself, failed "
                     "runs, fewer than two seeds, no spread).")
    if partial:
        notes.append("(k/n seeds): only k of the n seeds finished; the others diverged or errored.")
    return Table(columns, rows, ["l", "r", "r", "r", "r", "r", "l"], notes)


def _profile_table(results: dict) -> Table | None:
    prof = results.get("profiles")
    if not isinstance(prof, dict):
        return None
    score = prof.get("score") if isinstance(prof.get("score"), dict) else {}
    rho = prof.get("rho") if isinstance(prof.get("rho"), dict) else {}
    taus = prof.get("taus") or []
    opts = [o for o in _optimizers(results) if o in score or o in rho]
    opts += [o for o in list(score) + list(rho) if o not in opts]
    opts = list(dict.fromkeys(opts))
    if not opts:
        return None

    def key(o: str) -> float:
        s = _finite(score.get(o))
        return -s if s is not None else math.inf

    opts.sort(key=key)
    tau_lo = fmt_num(_finite(taus[0]), 3) if taus else "1"
    tau_hi = fmt_num(_finite(taus[-1]), 3) if taus else MISSING
    rows = []
    for o in opts:
        r = rho.get(o) if isinstance(rho.get(o), list) else []
        rows.append([o, fmt_num(_finite(score.get(o)), 3),
                     fmt_num(_finite(r[0]), 3) if r else MISSING,
                     fmt_num(_finite(r[-1]), 3) if r else MISSING])
    return Table(["Optimizer", "Score", f"ρ(τ={tau_lo})", f"ρ(τ={tau_hi})"], rows, ["l", "r", "r", "r"])


def _speedup_section(doc: Doc, results: dict) -> None:
    speedup = results.get("speedup")
    entries = {w: e for w, e in speedup.items() if isinstance(e, dict)} if isinstance(speedup, dict) else {}
    if not entries:
        doc.p("No speedup estimate was made in this run.")
        return
    ws = list(entries)
    opts = _optimizers(results)
    for e in entries.values():
        per = e.get("speedup") if isinstance(e.get("speedup"), dict) else {}
        opts += [o for o in per if o not in opts]
    rows = []
    for o in opts:
        cells = []
        seen = False
        for w in ws:
            per = entries[w].get("speedup") if isinstance(entries[w].get("speedup"), dict) else {}
            if o in per:
                seen = True
                cells.append(_speedup_label(per[o], _run(results, w, o), entries[w])[1])
            else:
                cells.append(MISSING)
        if seen:
            rows.append([o] + cells)
    doc.table(Table(["Optimizer"] + ws, rows, ["l"] + ["r"] * len(ws),
                    ["Nx: the optimizer's final loss at budget T equals AdamW's at N·T (from the fit "
                     "below); >max: better than anything the AdamW fit reaches at any budget; "
                     "n/a: not available (failed run or no fit)."]))
    items = []
    for w, e in entries.items():
        parts = []
        budgets = ", ".join(_fmt_steps(b) for b in e.get("budgets") or [])
        if budgets:
            parts.append(f"AdamW budgets {budgets} steps")
        losses = ", ".join(fmt_num(_finite(x), 4) for x in e.get("adamw_losses") or [])
        if losses:
            parts.append(f"AdamW losses {losses}")
        fit = e.get("fit")
        if isinstance(fit, dict):
            parts.append(f"fit L(T) = {fmt_num(_finite(fit.get('alpha')), 3)} · "
                         f"T^-{fmt_num(_finite(fit.get('exponent')), 3)} + {fmt_num(_finite(fit.get('beta')), 3)}")
        else:
            parts.append("no fit")
        if e.get("note"):
            parts.append(f"note: {e['note']}")
        item = f"{w}: " + "; ".join(parts)
        items.append(item)
    doc.ul(items)


def _properties_table(results: dict) -> Table | None:
    keys: list[str] = []
    cells: list[tuple[str, str, dict]] = []
    for w in _workloads(results):
        per_w = []
        for o in _sorted_opts(results, w):
            props = _properties(_run(results, w, o))
            per_w.append((w, o, props))
            for k, v in props.items():
                if v is not None and k not in keys:
                    keys.append(k)
        if any(any(v is not None for v in p.values()) for _, _, p in per_w):
            cells.extend(per_w)
    if not keys:
        return None
    keys.sort(key=lambda k: (list(_PROPERTY_TITLES).index(k) if k in _PROPERTY_TITLES else len(_PROPERTY_TITLES), k))
    columns = ["Workload", "Optimizer"] + [_PROPERTY_TITLES.get(k, k.replace("_", " ").capitalize()) for k in keys]
    rows = [[w, o] + [fmt_num(p.get(k), 4) for k in keys] for w, o, p in cells]
    return Table(columns, rows, ["l", "l"] + ["r"] * len(keys))


def _failures(results: dict) -> list[str]:
    items = []
    for w in _workloads(results):
        for o in _optimizers(results):
            run = _run(results, w, o)
            if run is None:
                continue
            seeds = [s for s in run.get("seeds") or [] if isinstance(s, dict)]
            bad = [s for s in seeds if s.get("status", "ok") != "ok"]
            if not _ok(run):
                detail = ", ".join(f"seed {s.get('seed')}: {s.get('status')}" for s in bad)
                items.append(f"{o} on {w}: {run.get('status')}" + (f" ({detail})" if detail else ""))
            else:
                for s in bad:
                    items.append(f"{o} on {w}, seed {s.get('seed')}: {s.get('status')}")
    return items


def _build(results: dict, figures: dict[str, bytes]) -> tuple[str, Doc]:
    suite = str(results.get("suite") or "?")
    title = f"optarena arena report: {suite} suite"
    doc = Doc()
    doc.h1(title)
    machine = results.get("machine") if isinstance(results.get("machine"), dict) else {}
    settings = results.get("settings") if isinstance(results.get("settings"), dict) else {}
    meta = [f"Suite: {suite}", f"Date: {_fmt_date(results.get('created'))}"]
    if machine:
        m = machine.get("cpu") or "unknown CPU"
        if machine.get("threads") is not None:
            m += f", {machine.get('threads')} threads"
        if machine.get("torch"):
            m += f", torch {machine.get('torch')}"
        if machine.get("python"):
            m += f", Python {machine.get('python')}"
        meta.append(f"Machine: {m}")
    seeds = settings.get("seeds") or []
    if settings.get("trials") is not None or seeds:
        meta.append(f"Tuning: {settings.get('trials', MISSING)} trials per optimizer and workload; "
                    f"seeds {', '.join(str(s) for s in seeds) or MISSING}")
    meta.append(f"Optimizers: {', '.join(_optimizers(results)) or MISSING}; "
                f"workloads: {', '.join(_workloads(results)) or MISSING}")
    doc.ul(meta)

    doc.h2("How to read this")
    n_trials = settings.get("trials")
    trials_s = f"the same number of tuning trials ({n_trials})" if n_trials is not None else "the same number of tuning trials"
    doc.p(f"Every optimizer is tuned on every workload with {trials_s}, so no optimizer gets "
          "more tuning effort than another. The best configuration is then "
          f"rerun on {len(seeds) or 'several'} seeds. The reported metric is the one at the end of "
          "training, after the learning rate has decayed to zero; tables show the mean ± standard "
          "deviation over the seeds that finished. The target of a workload is tuned AdamW's median "
          "final metric; steps to target count the training steps until an optimizer first reaches "
          f"it ({MISSING} when it never does). {NOISE_MARK} after a mean marks an optimizer whose "
          "difference to AdamW is within seed noise. Timings are medians: ms/step is a whole "
          "training step, opt-step ms only the optimizer's update.")

    doc.h2("Results per workload")
    targets = results.get("targets") if isinstance(results.get("targets"), dict) else {}
    for w in _workloads(results):
        info = _info(results, w)
        doc.h3(w)
        desc = []
        if info.get("description"):
            desc.append(str(info["description"]).rstrip("."))
        metric = info.get("metric")
        if metric:
            desc.append(f"metric: {metric} ({'higher' if info.get('higher_is_better') else 'lower'} is better)")
        if info.get("steps") is not None:
            desc.append(f"{info['steps']} steps")
        desc.append(f"target: {fmt_num(_finite(targets.get(w)))}")
        doc.p("; ".join(desc) + ".")
        doc.table(_summary_table(results, w))
    if "curves" in figures:
        doc.figure("curves", "Metric curves of the tuned configurations: mean over seeds, the band "
                             "spans min to max; dashed: the target.")

    doc.h2("Performance profiles")
    prof = results.get("profiles") if isinstance(results.get("profiles"), dict) else {}
    cost = prof.get("cost") or "steps_to_target"
    ptable = _profile_table(results)
    if ptable is None:
        doc.p("No performance profiles were computed.")
    else:
        doc.p(f"ρ(τ) is the fraction of workloads on which an optimizer's cost ({cost}) is within "
              "τ times the best optimizer's on that workload; ρ(1) is the fraction it wins, and a "
              "workload it never solves counts against it at every τ. Higher curves and scores are better.")
        doc.table(ptable)
        if "profiles" in figures:
            doc.figure("profiles", "Performance profiles; the legend gives each optimizer's score.")

    doc.h2("Speedup over AdamW")
    doc.p("Data-equivalent speedup: how many times more steps AdamW would need to match the "
          "optimizer's final loss, from a power-law fit of AdamW's loss at growing budgets. "
          "1 means as good as AdamW.")
    _speedup_section(doc, results)
    if "speedup" in figures:
        doc.figure("speedup", "Speedup over AdamW (dashed: 1, no speedup); hatched bars are "
                              "beyond the fit (>max) or not available (n/a).")

    doc.h2("Solution properties")
    props = _properties_table(results)
    if props is None:
        doc.p("No solution properties were recorded.")
    else:
        doc.p("Properties of the trained solutions, averaged over seeds: effective rank of the "
              "weight matrices, excess kurtosis of hidden activations, and the error on the tail "
              "of the data, where the workload defines them.")
        doc.table(props)

    doc.h2("Failed and diverged runs")
    failures = _failures(results)
    if failures:
        doc.ul(failures)
    else:
        doc.p("None: every seed of every tuned configuration finished.")
    return title, doc


# ----------------------------------------------------------------------------- rendering

_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")
_MD_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_escape(text: str, line_start: bool = True) -> str:
    """Text shown literally in GitHub markdown, on one line.

    `&` and `<` become entities (so no raw HTML gets through), markdown punctuation is
    backslash-escaped (`_` only where it could open emphasis), and with `line_start` a leading
    character that would start a heading, quote or list is escaped too (not needed in table cells).
    """
    s = str(text).replace("&", "&amp;").replace("<", "&lt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = _MD_UNDERSCORE.sub(r"\\_", s)
    s = " ".join(s.split())
    if line_start:
        if s[:1] in ("#", ">", "-", "+", "="):
            s = "\\" + s
        else:
            s = re.sub(r"^(\d+)([.)])(?=\s|$)", r"\1\\\2", s)
    return s


def _render_md(title: str, doc: Doc, figure_paths: dict[str, str]) -> str:
    out: list[str] = []
    for b in doc.blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + md_escape(b.text))
        elif b.kind == "p":
            out.append(md_escape(b.text))
        elif b.kind == "ul":
            out.append("\n".join("- " + md_escape(i) for i in b.items))
        elif b.kind == "figure":
            out.append(f"![{md_escape(b.text)}]({figure_paths[b.figure]})\n\n*{md_escape(b.text)}*")
        elif b.kind == "table" and b.table is not None:
            t = b.table
            align = t.align or ["l"] * len(t.columns)
            lines = ["| " + " | ".join(md_escape(c, False) for c in t.columns) + " |",
                     "|" + "|".join("---:" if a == "r" else ":---" for a in align) + "|"]
            for row in t.rows:
                lines.append("| " + " | ".join(md_escape(c, False) or " " for c in row) + " |")
            out.append("\n".join(lines))
            for note in t.notes:
                out.append("<sub>" + md_escape(note) + "</sub>")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
h3 { font-size: 1.1em; margin-top: 1.4em; }
.table-wrap { overflow-x: auto; margin: .6em 0; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; vertical-align: top; }
th { background: #f4f4f4; text-align: left; }
td.r { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafafa; }
p.note { font-size: .85em; color: #555; margin: .2em 0 .8em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
ul.meta { list-style: none; padding-left: 0; color: #444; }
"""


def _render_html(title: str, doc: Doc, figures: dict[str, bytes]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>"]
    in_section = False
    first_ul = True
    for b in doc.blocks:
        if b.kind == "h1":
            out.append(f"<header><h1>{e(b.text)}</h1></header>")
        elif b.kind == "h2":
            if in_section:
                out.append("</section>")
            anchor = re.sub(r"[^a-z0-9]+", "-", b.text.lower()).strip("-")
            out.append(f'<section id="{e(anchor)}">')
            out.append(f"<h2>{e(b.text)}</h2>")
            in_section = True
        elif b.kind == "h3":
            out.append(f"<h3>{e(b.text)}</h3>")
        elif b.kind == "p":
            out.append(f"<p>{e(b.text)}</p>")
        elif b.kind == "ul":
            cls = ' class="meta"' if first_ul and not in_section else ""
            first_ul = False
            out.append(f"<ul{cls}>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif b.kind == "figure":
            data = base64.b64encode(figures[b.figure]).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{data}" alt="{e(b.text)}">'
                       f"<figcaption>{e(b.text)}</figcaption></figure>")
        elif b.kind == "table" and b.table is not None:
            t = b.table
            align = t.align or ["l"] * len(t.columns)
            rows = ['<div class="table-wrap"><table>', "<thead><tr>"
                    + "".join(f"<th>{e(c)}</th>" for c in t.columns) + "</tr></thead>", "<tbody>"]
            for row in t.rows:
                rows.append("<tr>" + "".join(
                    f'<td class="{"r" if a == "r" else "l"}">{e(c)}</td>' for c, a in zip(row, align)) + "</tr>")
            rows.append("</tbody></table></div>")
            out.append("\n".join(rows))
            for note in t.notes:
                out.append(f'<p class="note">{e(note)}</p>')
    if in_section:
        out.append("</section>")
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- entry point


def write_report(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """Write report.md (+ figures/*.png) and a self-contained report.html into `out_dir`.

    Returns {"md": path of report.md, "html": path of report.html}. All files are written
    atomically; figures this run does not draw are removed from `figures/` so that a reused
    directory holds no stale plot.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = _figures(results)
    title, doc = _build(results, figures)

    fig_dir = out_dir / FIGURE_DIR
    figure_paths: dict[str, str] = {}
    for name, png in figures.items():
        write_atomic(fig_dir / f"{name}.png", png)
        figure_paths[name] = f"{FIGURE_DIR}/{name}.png"
    for name in _FIGURE_NAMES:
        stale = fig_dir / f"{name}.png"
        if name not in figures and stale.exists():
            stale.unlink()

    md_path = write_atomic(out_dir / "report.md", _render_md(title, doc, figure_paths))
    html_path = write_atomic(out_dir / "report.html", _render_html(title, doc, figures))
    return {"md": md_path, "html": html_path}
