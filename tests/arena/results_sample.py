"""Hand-built results dicts (schema "optarena.arena.results/2") for the report, the reader and
the run summary.

`sample_results()`: three optimizers on two workloads, with the awkward cases a reader must
survive: a failed run with null numbers, a missed target (null steps_to_target), a diverged seed,
an infinite speedup stored as null, and a workload without solution properties. It records no
tuning details or method cards, like a file written before they existed. `tuned_results()` adds
them (`runs[w][o]["tuned"]`, `methods`, `settings["tuning"]`), with two rows under-tuned.
"""
from __future__ import annotations

import math

OPTIMIZERS = ["adamw", "lion", "muon"]
WORKLOADS = ["rosenbrock", "mlp_digits"]
TUNING = ("lr sweep on a log2 grid (5 points) around each method card's centre, then coordinate descent; "
          "budget 6 runs")


def _curve(steps: int, start: float, end: float, n: int = 6) -> list[list[float]]:
    pts = []
    for i in range(n + 1):
        s = steps * i // n
        frac = i / n
        pts.append([s, start * (end / start) ** frac])  # geometric: lines up on log axes
    return pts


def _seed(seed: int, steps: int, start: float, end: float, *, props: bool, status: str = "ok",
          step_ms: float = 1.2) -> dict:
    curve = _curve(steps, start, end) if status == "ok" else _curve(steps // 2, start, start * 3, n=3)
    return {
        "seed": seed, "status": status, "final": curve[-1][1] if status == "ok" else None,
        "curve": curve, "train_loss": [[s, abs(v) + 0.01] for s, v in curve],
        "step_ms": step_ms, "opt_step_ms": step_ms / 4, "state_bytes_per_param": 8.0,
        "properties": ({"effective_rank": 11.5 + seed, "activation_kurtosis": 2.1 * seed, "tail_error": 0.2}
                       if props and status == "ok" else {}),
    }


def _run(steps: int, start: float, ends: list[float], *, props: bool, params: dict,
         steps_to_target: float | None, p: float | None, within: bool | None,
         statuses: tuple[str, ...] = ("ok", "ok")) -> dict:
    seeds = [_seed(i + 1, steps, start, e, props=props, status=st) for i, (e, st) in enumerate(zip(ends, statuses))]
    finals = [s["final"] for s in seeds if s["final"] is not None]
    mean = sum(finals) / len(finals) if finals else None
    std = (math.sqrt(sum((f - mean) ** 2 for f in finals) / (len(finals) - 1)) if len(finals) > 1 else 0.0) if finals else None
    ok = bool(finals)
    return {
        "status": "ok" if ok else "failed",
        "best_params": params,
        "tuning": [{"number": k, "params": params, "value": (ends[0] * (1 + k) if ok else None),
                    "state": "COMPLETE" if ok else "FAIL"} for k in range(3)],
        "seeds": seeds,
        "final": {"mean": mean, "std": std, "n": len(finals)},
        "steps_to_target": steps_to_target,
        "step_ms": 1.234 if ok else None, "opt_step_ms": 0.3087 if ok else None,
        "state_bytes_per_param": 8.0 if ok else None,
        "vs_adamw": {"p_value": p, "within_noise": within},
        "properties": ({"effective_rank": 12.5, "activation_kurtosis": 3.15, "tail_error": 0.2}
                       if props and ok else {"effective_rank": None, "activation_kurtosis": None, "tail_error": None}),
    }


def sample_results() -> dict:
    """3 optimizers x 2 workloads: muon fails on rosenbrock, lion misses the mlp target, one of
    lion's rosenbrock seeds diverged, muon's mlp speedup is infinite (null); rosenbrock records
    no solution properties."""
    rb, mlp = 200, 300
    runs = {
        "rosenbrock": {
            "adamw": _run(rb, 10.0, [1e-3, 1.4e-3], props=False, params={"lr": 0.0123456, "weight_decay": 0.0},
                          steps_to_target=180.0, p=None, within=None),
            "lion": _run(rb, 10.0, [5e-4, 9e-4], props=False, params={"lr": 1.234e-5, "betas": [0.9, 0.99]},
                         steps_to_target=120.0, p=0.41, within=True, statuses=("ok", "diverged")),
            "muon": _run(rb, 10.0, [1.0, 1.0], props=False, params={"lr": 0.02, "momentum": 0.95},
                         steps_to_target=None, p=None, within=None, statuses=("diverged", "diverged")),
        },
        "mlp_digits": {
            "adamw": _run(mlp, 0.1, [0.95, 0.96], props=True, params={"lr": 3e-3, "weight_decay": 0.1},
                          steps_to_target=260.0, p=None, within=None),
            "lion": _run(mlp, 0.1, [0.90, 0.91], props=True, params={"lr": 3e-4, "weight_decay": 1.0},
                         steps_to_target=None, p=0.003, within=False),
            "muon": _run(mlp, 0.1, [0.97, 0.975], props=True, params={"lr": 0.02, "nesterov": True},
                         steps_to_target=150.0, p=0.01, within=False),
        },
    }
    return {
        "schema": "optarena.arena.results/2",
        "created": "2026-11-22T05:00:00+00:00",
        "suite": "quick",
        "machine": {"cpu": "Test CPU @ 2.0GHz", "threads": 2, "torch": "2.13.0", "python": "3.11.7"},
        "settings": {"trials": 3, "seeds": [1, 2], "storage": "sqlite:///arena.db"},
        "optimizers": list(OPTIMIZERS),
        "workloads": list(WORKLOADS),
        "workload_info": {
            "rosenbrock": {"metric": "f", "higher_is_better": False, "steps": rb,
                           "description": "The 2-D Rosenbrock valley."},
            "mlp_digits": {"metric": "val_accuracy", "higher_is_better": True, "steps": mlp,
                           "description": "An MLP on 8x8 digits."},
        },
        "targets": {"rosenbrock": 1.2e-3, "mlp_digits": 0.955},
        "runs": runs,
        "profiles": {
            "taus": [1.0, 1.5, 2.0, 3.0, 4.0],
            "rho": {"adamw": [0.0, 1.0, 1.0, 1.0, 1.0], "lion": [0.5, 0.5, 0.5, 0.5, 0.5],
                    "muon": [0.5, 0.5, 0.5, 0.5, 0.5]},
            "score": {"adamw": 0.875, "lion": 0.5, "muon": 0.5},
            "cost": "steps_to_target",
        },
        "speedup": {
            "mlp_digits": {"budgets": [300, 600, 1200], "adamw_losses": [0.21, 0.16, 0.13],
                           "fit": {"alpha": 5.1, "exponent": 0.62, "beta": 0.1},
                           "speedup": {"lion": 0.62, "muon": None}, "note": None},
        },
    }


def tuned(lr: tuple[list[float], float], *, wd: tuple[list[float], float] | None = None, trials: int = 6,
          converged: bool = True, edges: dict[str, str] | None = None) -> dict:
    """A `tuned` record: lr (values tried, best) and optionally weight_decay; `edges` names the
    axes whose best is at an edge ("low"/"high"), which makes the row under-tuned."""
    edges = edges or {}
    axes = {"lr": {"values": sorted(lr[0]), "best": lr[1], "edge": edges.get("lr"), "searched": len(lr[0]) > 1}}
    if wd is not None:
        axes["weight_decay"] = {"values": sorted(wd[0]), "best": wd[1], "edge": edges.get("weight_decay"),
                                "searched": len(wd[0]) > 1}
    return {"budget": 6, "trials": trials, "converged": converged, "axes": axes, "edges": list(edges),
            "under_tuned": bool(edges)}


def card(name: str, cls: str, lr: float, *, matrix_only: bool = False) -> dict:
    return {
        "name": name, "class": cls, "paper": f"The {name} paper (2024)", "reference": f"github.com/example/{name}",
        "capabilities": {"matrix_only": matrix_only, "needs_create_graph": False, "fused": "c",
                         "state_precisions": ["fp32", "bf16"]},
        "search": {"lr": {"center": lr, "grid": "x2 steps, log", "source": f"{name} paper, table 3"}},
        "fixed": {"eps": 1e-8},
    }


def tuned_results() -> dict:
    """`sample_results()` with tuning details and method cards: lion (the winner on rosenbrock) has
    its best lr at the high edge, and on mlp_digits (last) its lr at the high edge and its weight
    decay at the low edge."""
    res = sample_results()
    res["settings"]["tuning"] = TUNING
    grid = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
    runs = res["runs"]
    runs["rosenbrock"]["adamw"]["tuned"] = tuned((grid, 3e-3))
    runs["rosenbrock"]["lion"]["tuned"] = tuned((grid[:3], 1e-3), edges={"lr": "high"})
    runs["rosenbrock"]["muon"]["tuned"] = tuned(([0.02], 0.02), trials=1, converged=False)
    runs["mlp_digits"]["adamw"]["tuned"] = tuned((grid, 3e-3), wd=([0.0, 0.1, 1.0], 0.1))
    runs["mlp_digits"]["lion"]["tuned"] = tuned((grid[:2], 3e-4), wd=([0.1, 1.0], 0.1),
                                                edges={"lr": "high", "weight_decay": "low"})
    runs["mlp_digits"]["muon"]["tuned"] = tuned(([0.01, 0.02, 0.04], 0.02), trials=5)
    res["methods"] = {"adamw": card("AdamW", "optarena.AdamW", 1e-3), "lion": card("Lion", "optarena.Lion", 3e-4),
                      "muon": card("Muon", "optarena.Muon", 0.02, matrix_only=True)}
    return res
