"""From the storage's finished trials to the versioned `results.json` (schema in docs/arena.md).

Targets are tuned AdamW's median final metric per workload; steps to target are the first
evaluation at which the pointwise median-over-seeds curve reaches it (a miss counts as never);
performance profiles use those steps as the cost; the data-equivalent speedup inverts AdamW's
loss-vs-budget fit.
"""
from __future__ import annotations

import math
import platform
import statistics
from datetime import datetime, timezone
from typing import Any

import numpy as np
import optuna
import torch
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ..registry import card
from ..system import cpu_name
from . import analysis, tuning
from .io import finite_or_none
from .plan import BASELINE, Plan
from .worker import finished_configs
from .workloads import get_workload

SCHEMA = "optarena.arena.results/2"
PROPERTIES = ("effective_rank", "activation_kurtosis", "tail_error")
FIT_EXPONENT = (1.01e-3, 9.9)
"""A fitted exponent outside this open range sits at analysis.fit_power_law's search bound: no fit."""
TAUS = [float(t) for t in np.linspace(1.0, 4.0, 61)]


def _median(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def _seed_entries(finished: dict[int, FrozenTrial]) -> list[dict[str, Any]]:
    """The record of each finished configuration (`worker.finished_configs`), in configuration order."""
    out = []
    for t in finished.values():
        if "error" in t.user_attrs:
            out.append({"seed": t.user_attrs["seed"], "status": "error", "error": t.user_attrs["error"], "final": None,
                        "curve": [], "train_loss": [], "properties": {}})  # fmt: skip
        else:
            out.append(dict(t.user_attrs["record"], factor=t.user_attrs.get("factor", 1)))
    return out


def _tuning(study: optuna.Study) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        record = t.user_attrs.get("record", {})
        if "duplicate_of" in t.user_attrs:
            continue
        rows.append({"number": t.number, "config": t.user_attrs.get("config"), "params": t.user_attrs.get("params"),
                     "point": t.user_attrs.get("point"), "round": t.user_attrs.get("round"),
                     "value": finite_or_none(t.value), "state": t.state.name,
                     "status": record.get("status", "error" if "error" in t.user_attrs else "interrupted")})  # fmt: skip
    return rows


def machine(threads: int) -> dict[str, Any]:
    return {"cpu": cpu_name(), "threads": threads, "torch": torch.__version__, "python": platform.python_version()}


def collect(storage: BaseStorage, plan: Plan, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The results dict of a finished (or partly finished) plan."""
    load = lambda name: optuna.load_study(storage=storage, study_name=name)  # noqa: E731
    runs: dict[str, dict[str, Any]] = {}
    info, targets, optima = {}, {}, {}
    for w in plan.workloads:
        workload = get_workload(w)
        info[w] = {"metric": workload.metric, "higher_is_better": workload.higher_is_better,
                   "steps": plan.steps(w), "description": workload.description}  # fmt: skip
        runs[w] = {}
        for o in plan.optimizers:
            if not card(o).applies_to(w):
                continue
            finished = finished_configs(load(plan.study_name(w, o, "final")))
            seeds = _seed_entries(finished)
            tune = load(plan.study_name(w, o, "tune"))
            best = next((t.user_attrs["params"] for t in finished.values() if "params" in t.user_attrs), None)
            finals = [s["final"] for s in seeds if s.get("final") is not None]
            done = [(tuple(t.user_attrs["point"]), t.value) for t in finished_configs(tune).values()]
            runs[w][o] = {
                "status": "ok" if finals else "failed",
                "best_params": best,
                "tuning": _tuning(tune),
                "tuned": tuning.summary(card(o).search, done, plan.trials, workload.higher_is_better),
                "seeds": seeds,
                "final": _summary(finals),
            }
        base = runs[w].get(BASELINE)
        targets[w] = finite_or_none(statistics.median(s["final"] if s.get("final") is not None else
                                                      (-math.inf if workload.higher_is_better else math.inf)
                                                      for s in base["seeds"])) if base and base["status"] == "ok" else None
        for o, run in runs[w].items():
            _derive(run, targets[w], workload.higher_is_better, base)
        if workload.optimum is not None:
            optima[w] = workload.optimum()
            for run in runs[w].values():
                run["gap"] = _gap(run["final"]["mean"], optima[w]["value"])
    results = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "suite": plan.suite,
        "machine": machine(plan.threads),
        "settings": {"trials": plan.trials, "seeds": plan.seeds, "threads": plan.threads, "name": plan.name,
                     "tuning": tuning.describe(plan.trials), **(settings or {})},  # fmt: skip
        "optimizers": list(plan.optimizers),
        "methods": {o: card(o).describe() for o in plan.optimizers},
        "workloads": list(plan.workloads),
        "workload_info": info,
        "targets": targets,
        "optimum": optima,
        "runs": runs,
        "profiles": _profiles(runs, plan),
        "speedup": {w: _speedup(storage, plan, w, runs[w]) for w in plan.scale if BASELINE in plan.optimizers},
    }
    return results


def _gap(mean: float | None, best: float) -> dict[str, float | None]:
    """How far a final metric is from the known global optimum: absolute and relative to it."""
    if mean is None:
        return {"absolute": None, "relative": None}
    return {"absolute": mean - best, "relative": (mean - best) / abs(best) if best else None}


def _summary(finals: list[float]) -> dict[str, Any]:
    if not finals:
        return {"mean": None, "std": None, "n": 0}
    s = analysis.summarize(finals)
    return {"mean": finite_or_none(s["mean"]), "std": finite_or_none(s["std"]), "n": int(s["n"])}


def _derive(run: dict[str, Any], target: float | None, higher: bool, base: dict[str, Any] | None) -> None:
    ok = [s for s in run["seeds"] if s.get("final") is not None]
    curve = median_curve(run["seeds"], higher)
    reached = analysis.steps_to_target(curve, target, higher) if target is not None and curve else math.inf
    run["steps_to_target"] = finite_or_none(reached)
    run["step_ms"] = _median([s.get("step_ms") for s in ok])
    run["opt_step_ms"] = _median([s.get("opt_step_ms") for s in ok])
    run["state_bytes_per_param"] = _median([s.get("state_bytes_per_param") for s in ok])
    mine = [s["final"] for s in ok]
    theirs = [s["final"] for s in base["seeds"] if s.get("final") is not None] if base else []
    p = analysis.welch_p_value(mine, theirs) if len(mine) >= 2 and len(theirs) >= 2 else math.nan
    run["vs_adamw"] = {"p_value": finite_or_none(p), "within_noise": analysis.within_noise(mine, theirs)
                       if len(mine) >= 2 and len(theirs) >= 2 else None}  # fmt: skip
    run["properties"] = {k: _median([finite_or_none(s.get("properties", {}).get(k)) for s in ok]) for k in PROPERTIES}


def median_curve(seeds: list[dict[str, Any]], higher: bool) -> list[list[float]]:
    """The pointwise median over seeds of the evaluation curves (a diverged seed counts as worst
    from where it stopped). Its last point is the median final metric, the way targets are set,
    so tuned AdamW reaches its own target at its last evaluation at the latest."""
    worst = -math.inf if higher else math.inf
    steps = sorted({step for s in seeds for step, _ in s.get("curve", [])})
    if not seeds or not steps:
        return []
    by_seed = [dict((step, value) for step, value in s.get("curve", [])) for s in seeds]
    return [[step, statistics.median(c.get(step, worst) for c in by_seed)] for step in steps]


def _profiles(runs: dict[str, dict[str, Any]], plan: Plan) -> dict[str, Any]:
    """AlgoPerf's profiles over the methods that run on every workload of the plan (a method
    confined to some workloads, like a convex solver, is compared where it runs, not here)."""
    everywhere = [o for o in plan.optimizers if all(o in runs[w] for w in plan.workloads)]
    costs = {o: {w: (runs[w][o]["steps_to_target"] if runs[w][o]["steps_to_target"] is not None else math.inf)
                 for w in plan.workloads} for o in everywhere}  # fmt: skip
    rho = analysis.performance_profile(costs, TAUS)
    score = analysis.profile_score(costs)
    return {"taus": TAUS, "rho": rho, "score": score, "cost": "steps_to_target"}


def _speedup(storage: BaseStorage, plan: Plan, w: str, runs: dict[str, Any]) -> dict[str, Any]:
    T = plan.steps(w)
    entry: dict[str, Any] = {"budgets": [T], "adamw_losses": [], "fit": None, "speedup": {o: None for o in runs}, "note": None}
    if get_workload(w).higher_is_better:
        entry["note"] = "the speedup fit needs a loss (lower-is-better metric)"
        return entry
    scale = _seed_entries(finished_configs(optuna.load_study(storage=storage, study_name=plan.study_name(w, BASELINE, "scale"))))
    by_factor: dict[int, list[float]] = {1: [s["final"] for s in runs[BASELINE]["seeds"] if s.get("final") is not None]}
    for s in scale:
        if s.get("final") is not None:
            by_factor.setdefault(int(s["factor"]), []).append(s["final"])
    factors = sorted(f for f, v in by_factor.items() if v)
    entry["budgets"] = [f * T for f in factors]
    entry["adamw_losses"] = [statistics.fmean(by_factor[f]) for f in factors]
    try:
        fit = analysis.fit_power_law(entry["budgets"], entry["adamw_losses"])
    except ValueError as err:
        entry["note"] = f"no fit: {err}"
        return entry
    entry["fit"] = {"alpha": fit.alpha, "exponent": fit.exponent, "beta": fit.beta}
    if not FIT_EXPONENT[0] < fit.exponent < FIT_EXPONENT[1]:
        entry["note"] = (f"AdamW's losses at {entry['budgets']} steps do not bend like a power law (fitted exponent "
                         f"{fit.exponent:.3g} at the search bound): budgets too small for a data-scaling fit; "
                         "no speedup reported (the standard suite's budgets are meant for it)")  # fmt: skip
        return entry
    for o, run in runs.items():
        mean = run["final"]["mean"]
        entry["speedup"][o] = finite_or_none(analysis.data_equivalent_speedup(fit, mean, T)) if mean is not None else None
    return entry


def finished_keys(results: dict[str, Any]) -> set[tuple[Any, ...]]:
    """What a results dict holds as done: (workload, optimizer, "tune", config) per finished tuning
    configuration, (..., "final", seed) per seed, (..., "scale", budget) per speedup budget."""
    keys: set[tuple[Any, ...]] = set()
    for w, runs in (results.get("runs") or {}).items():
        for o, run in runs.items():
            keys |= {(w, o, "tune", t.get("config")) for t in run.get("tuning", [])
                     if t.get("state") == "COMPLETE" or t.get("status") == "error"}  # fmt: skip
            keys |= {(w, o, "final", s.get("seed")) for s in run.get("seeds", [])}
    for w, entry in (results.get("speedup") or {}).items():
        keys |= {(w, BASELINE, "scale", b) for b in entry.get("budgets", [])}
    return keys


def lost_results(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The results of the same run that `old` holds and `new` lacks, in words (empty: none lost)."""
    if (old.get("settings") or {}).get("name") != (new.get("settings") or {}).get("name"):
        return []
    words = {"tune": "tuning configuration", "final": "seed", "scale": "budget"}
    lost = sorted(finished_keys(old) - finished_keys(new), key=str)
    return [f"{w}/{o} {words[kind]} {x}" for w, o, kind, x in lost]
