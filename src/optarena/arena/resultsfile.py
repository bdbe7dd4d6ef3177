"""The one typed reader of `results.json` (schema "optarena.arena.results/2").

`read_results(data)` turns a results dict into frozen dataclasses and derives, once, what every
presenter needs: the ranking per workload (best first by mean final metric, failed last), the
winner and whether it is beyond seed noise against the runner-up, the noise mark against AdamW,
the under-tuned flags and the speedup labels. The report and `runner.summary` read these and
re-derive nothing.

Everything in the dict may be missing or null (a failed optimizer has null numbers, an older file
has no `tuned` or `methods`): the reader never raises on such input; a missing number is None, a
missing section is empty, an unknown tuning is None.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import analysis
from .io import finite_or_none
from .plan import BASELINE

__all__ = [
    "Axis", "Capabilities", "Machine", "MethodCard", "MethodRun", "Optimum", "Profiles", "Results", "SearchAxis", "Seed",
    "Settings", "Speedup", "SpeedupFit", "Tuning", "Verdict", "WorkloadResult", "read_results",
]  # fmt: skip

NOT_RUN = "not run"
"""The status of an optimizer the suite names but the workload's runs lack."""


# ----------------------------------------------------------------------------- tolerant access


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list:
    return x if isinstance(x, (list, tuple)) else []


def _str(x: Any) -> str | None:
    return str(x) if x is not None and not isinstance(x, (dict, list)) and str(x) else None


def _int(x: Any) -> int | None:
    v = finite_or_none(x)
    return int(v) if v is not None and v == int(v) else None


def _bool(x: Any) -> bool | None:
    return x if isinstance(x, bool) else None


def _names(first: Any, *more: Any) -> tuple[str, ...]:
    """The names in `first` (a list), then the keys of the dicts in `more` not named yet."""
    names = [str(n) for n in _list(first)]
    for d in more:
        names += [str(n) for n in _dict(d) if str(n) not in names]
    return tuple(dict.fromkeys(names))


# ----------------------------------------------------------------------------- the records


@dataclass(frozen=True)
class Seed:
    """One seed's rerun of the best configuration; `curve` holds (step, value), value nan where not finite."""

    seed: Any
    status: str
    final: float | None
    curve: tuple[tuple[float, float], ...]
    properties: dict[str, float | None]


@dataclass(frozen=True)
class Axis:
    """One hyperparameter's search: the values tried (sorted), the best, and whether the best is
    the smallest ("low") or largest ("high") tried, i.e. the optimum may lie outside the search."""

    name: str
    values: tuple[float, ...]
    best: float | None
    edge: str | None
    searched: bool


@dataclass(frozen=True)
class Tuning:
    """How one (workload, optimizer) was tuned (`runs[w][o]["tuned"]`)."""

    budget: int | None
    trials: int | None
    converged: bool | None
    axes: dict[str, Axis]
    edges: tuple[str, ...]
    under_tuned: bool

    def reasons(self) -> list[str]:
        """Why the tuning may not have found the optimum, in words ("lr at high edge")."""
        words = []
        for name in self.edges:
            edge = self.axes[name].edge if name in self.axes else None
            words.append(f"{name} at {edge} edge" if edge else f"{name} at an edge of its search")
        if not words and self.under_tuned:
            words.append("tuning stopped before it converged" if self.converged is False else "flagged by the tuner")
        return words


@dataclass(frozen=True)
class MethodRun:
    """One optimizer on one workload: the tuned configuration rerun on every seed."""

    workload: str
    optimizer: str
    status: str  # "ok", "failed", or NOT_RUN
    mean: float | None
    std: float | None
    n: int | None
    seeds: tuple[Seed, ...]
    steps_to_target: float | None
    step_ms: float | None
    opt_step_ms: float | None
    state_bytes_per_param: float | None
    best_params: dict[str, Any]
    p_vs_baseline: float | None
    within_noise: bool | None
    properties: dict[str, float | None]
    tuned: Tuning | None  # None: the file records no tuning details
    gap: float | None = None  # mean final metric minus the workload's certified optimum, where known
    relative_gap: float | None = None  # the same, relative to the optimum

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def finished(self) -> bool:
        """Ranked: the run is ok and has a mean final metric."""
        return self.ok and self.mean is not None

    @property
    def finals(self) -> list[float]:
        """The final metric of every seed that finished."""
        return [s.final for s in self.seeds if s.final is not None]

    @property
    def noise_mark(self) -> bool:
        """Within seed noise of AdamW (the ≈ mark); AdamW itself is never marked."""
        return self.within_noise is True and self.optimizer != BASELINE

    @property
    def under_tuned(self) -> bool:
        return self.tuned is not None and self.tuned.under_tuned


@dataclass(frozen=True)
class Verdict:
    """The winner of a workload and whether it is beyond seed noise against the runner-up
    (two-sided Welch test of the per-seed finals, p < 0.05); `beyond_noise` None: cannot tell
    (no runner-up, fewer than two finished seeds on a side, or no spread at all)."""

    winner: MethodRun | None
    runner_up: MethodRun | None
    p_value: float | None
    beyond_noise: bool | None
    flagged: tuple[MethodRun, ...]  # the under-tuned ones among winner and runner-up


@dataclass(frozen=True)
class Optimum:
    """A workload's certified global optimum of its metric (`results["optimum"][w]`)."""

    value: float | None
    lower_bound: float | None
    solver: str | None
    seconds: float | None
    width: int | None


@dataclass(frozen=True)
class WorkloadResult:
    name: str
    metric: str
    higher_is_better: bool
    steps: int | None
    description: str | None
    target: float | None
    runs: dict[str, MethodRun]  # every optimizer of the suite, in suite order
    ranking: tuple[MethodRun, ...]  # best first by mean final metric; failed and not run last
    verdict: Verdict
    optimum: Optimum | None = None

    @property
    def winner(self) -> MethodRun | None:
        return self.verdict.winner

    @property
    def under_tuned(self) -> list[MethodRun]:
        return [r for r in self.ranking if r.under_tuned]

    @property
    def tuning_known(self) -> bool:
        """Whether every run records how it was tuned (older files do not)."""
        return all(r.tuned is not None for r in self.runs.values() if r.status != NOT_RUN)


@dataclass(frozen=True)
class Profiles:
    """Performance profiles: ρ(τ) per optimizer at `taus` and a score (higher is better)."""

    taus: tuple[float | None, ...]
    rho: dict[str, tuple[float | None, ...]]
    score: dict[str, float | None]
    cost: str

    def order(self, optimizers: tuple[str, ...]) -> list[str]:
        """The profiled optimizers, best score first (no score last), ties in suite order."""
        names = [o for o in optimizers if o in self.score or o in self.rho]
        names += [o for o in (*self.score, *self.rho) if o not in names]
        return sorted(dict.fromkeys(names), key=lambda o: (self.score.get(o) is None, -(self.score.get(o) or 0.0)))


@dataclass(frozen=True)
class Speedup:
    """A data-equivalent speedup over AdamW: a finite `value`, or `beyond` (better than anything
    AdamW's fit reaches, ">max"), or neither (not available)."""

    value: float | None
    beyond: bool


@dataclass(frozen=True)
class SpeedupFit:
    budgets: tuple[float | None, ...]
    adamw_losses: tuple[float | None, ...]
    fit: dict[str, float | None] | None  # alpha, exponent, beta of L(T) = alpha * T^-exponent + beta
    note: str | None
    values: dict[str, Speedup]


@dataclass(frozen=True)
class SearchAxis:
    center: float | None
    grid: str | None
    source: str | None


@dataclass(frozen=True)
class Capabilities:
    matrix_only: bool | None
    needs_create_graph: bool | None
    fused: str | None
    state_precisions: tuple[str, ...]


@dataclass(frozen=True)
class MethodCard:
    """What a method is and how the arena searches it (`results["methods"][o]`)."""

    name: str
    cls: str | None
    paper: str | None
    reference: str | None
    capabilities: Capabilities
    search: dict[str, SearchAxis]
    fixed: dict[str, Any]


@dataclass(frozen=True)
class Machine:
    cpu: str | None
    threads: int | None
    torch: str | None
    python: str | None


@dataclass(frozen=True)
class Settings:
    trials: int | None
    seeds: tuple[Any, ...]
    tuning: str | None  # the tuning procedure in one line


@dataclass(frozen=True)
class Results:
    schema: str | None
    suite: str | None
    created: str | None
    machine: Machine | None
    settings: Settings
    optimizers: tuple[str, ...]
    workloads: dict[str, WorkloadResult]
    profiles: Profiles | None
    speedup: dict[str, SpeedupFit]
    methods: dict[str, MethodCard]

    @property
    def under_tuned(self) -> list[MethodRun]:
        return [r for w in self.workloads.values() for r in w.under_tuned]

    @property
    def tuning_known(self) -> bool:
        return all(w.tuning_known for w in self.workloads.values())


# ----------------------------------------------------------------------------- reading


def read_results(data: dict) -> Results:
    """The typed view of a results dict; tolerant of any missing or null field."""
    data = _dict(data)
    runs = _dict(data.get("runs"))
    optimizers = _names(data.get("optimizers"), *runs.values())
    info, targets = _dict(data.get("workload_info")), _dict(data.get("targets"))
    optima, cards = _dict(data.get("optimum")), _dict(data.get("methods"))

    def applies(o: str, w: str) -> bool:  # a method confined to some workloads (its card says which)
        only = _dict(cards.get(o)).get("workloads")
        return not isinstance(only, list) or w in only

    workloads = {}
    for w in _names(data.get("workloads"), runs):
        per_w = _dict(runs.get(w))
        workloads[w] = _workload(w, _dict(info.get(w)), finite_or_none(targets.get(w)),
                                 {o: _run(w, o, per_w.get(o)) for o in optimizers if applies(o, w)},
                                 _optimum(optima.get(w)))  # fmt: skip
    machine = data.get("machine")
    settings = _dict(data.get("settings"))
    return Results(
        schema=_str(data.get("schema")),
        suite=_str(data.get("suite")),
        created=_str(data.get("created")),
        machine=_machine(machine) if isinstance(machine, dict) and machine else None,
        settings=Settings(_int(settings.get("trials")), tuple(_list(settings.get("seeds"))),
                          _str(settings.get("tuning"))),  # fmt: skip
        optimizers=optimizers,
        workloads=workloads,
        profiles=_profiles(data.get("profiles")),
        speedup={str(w): _speedup(e, workloads.get(str(w))) for w, e in _dict(data.get("speedup")).items()
                 if isinstance(e, dict)},  # fmt: skip
        methods={str(o): _card(str(o), c) for o, c in _dict(data.get("methods")).items() if isinstance(c, dict)},
    )


def _machine(m: dict) -> Machine:
    return Machine(_str(m.get("cpu")), _int(m.get("threads")), _str(m.get("torch")), _str(m.get("python")))


def _seed(s: dict) -> Seed:
    curve = []
    for point in _list(s.get("curve")):
        if len(_list(point)) >= 2 and (x := finite_or_none(point[0])) is not None:
            y = finite_or_none(point[1])
            curve.append((x, float("nan") if y is None else y))
    props = {str(k): finite_or_none(v) for k, v in _dict(s.get("properties")).items()}
    return Seed(s.get("seed"), _str(s.get("status")) or "ok", finite_or_none(s.get("final")), tuple(curve), props)


def _properties(run: dict, seeds: tuple[Seed, ...]) -> dict[str, float | None]:
    """The run's aggregated properties, else the mean over the seeds that recorded them."""
    out = {str(k): finite_or_none(v) for k, v in _dict(run.get("properties")).items()}
    if any(v is not None for v in out.values()):
        return out
    acc: dict[str, list[float]] = {}
    for s in seeds:
        for k, v in s.properties.items():
            acc.setdefault(k, []).extend([v] if v is not None else [])
    return {**out, **{k: (sum(vs) / len(vs) if vs else None) for k, vs in acc.items()}}


def _tuning(t: Any) -> Tuning | None:
    if not isinstance(t, dict):
        return None
    axes = {}
    for name, a in _dict(t.get("axes")).items():
        a = _dict(a)
        values = sorted(v for v in (finite_or_none(x) for x in _list(a.get("values"))) if v is not None)
        edge = a.get("edge") if a.get("edge") in ("low", "high") else None
        searched = _bool(a.get("searched"))
        axes[str(name)] = Axis(str(name), tuple(values), finite_or_none(a.get("best")), edge,
                               searched if searched is not None else len(values) > 1)  # fmt: skip
    edges = tuple(str(e) for e in _list(t.get("edges")))
    return Tuning(_int(t.get("budget")), _int(t.get("trials")), _bool(t.get("converged")), axes, edges,
                  t.get("under_tuned") is True)  # fmt: skip


def _run(w: str, o: str, run: Any) -> MethodRun:
    if not isinstance(run, dict):
        return MethodRun(w, o, NOT_RUN, None, None, None, (), None, None, None, None, {}, None, None, {}, None)
    final, vs = _dict(run.get("final")), _dict(run.get("vs_adamw"))
    seeds = tuple(_seed(s) for s in _list(run.get("seeds")) if isinstance(s, dict))
    return MethodRun(
        workload=w,
        optimizer=o,
        status=_str(run.get("status")) or "ok",
        mean=finite_or_none(final.get("mean")),
        std=finite_or_none(final.get("std")),
        n=_int(final.get("n")),
        seeds=seeds,
        steps_to_target=finite_or_none(run.get("steps_to_target")),
        step_ms=finite_or_none(run.get("step_ms")),
        opt_step_ms=finite_or_none(run.get("opt_step_ms")),
        state_bytes_per_param=finite_or_none(run.get("state_bytes_per_param")),
        best_params={str(k): v for k, v in _dict(run.get("best_params")).items()},
        p_vs_baseline=finite_or_none(vs.get("p_value")),
        within_noise=_bool(vs.get("within_noise")),
        properties=_properties(run, seeds),
        tuned=_tuning(run.get("tuned")),
        gap=finite_or_none(_dict(run.get("gap")).get("absolute")),
        relative_gap=finite_or_none(_dict(run.get("gap")).get("relative")),
    )


def _optimum(o: Any) -> Optimum | None:
    if not isinstance(o, dict):
        return None
    return Optimum(finite_or_none(o.get("value")), finite_or_none(o.get("lower_bound")), _str(o.get("solver")),
                   finite_or_none(o.get("seconds")), _int(o.get("width")))  # fmt: skip


def _workload(name: str, info: dict, target: float | None, runs: dict[str, MethodRun],
              optimum: Optimum | None = None) -> WorkloadResult:
    higher = bool(info.get("higher_is_better", False))
    order = list(runs)

    def key(r: MethodRun) -> tuple:
        if not r.finished:
            return (1, 0.0, order.index(r.optimizer))
        return (0, -r.mean if higher else r.mean, order.index(r.optimizer))

    ranking = tuple(sorted(runs.values(), key=key))
    return WorkloadResult(name, _str(info.get("metric")) or "metric", higher, _int(info.get("steps")),
                          _str(info.get("description")), target, runs, ranking, _verdict(ranking), optimum)  # fmt: skip


def _verdict(ranking: tuple[MethodRun, ...]) -> Verdict:
    top = [r for r in ranking[:2] if r.finished]
    winner = top[0] if top else None
    runner_up = top[1] if len(top) > 1 else None
    p = beyond = None
    if runner_up is not None and len(winner.finals) >= 2 and len(runner_up.finals) >= 2:
        p = finite_or_none(analysis.welch_p_value(winner.finals, runner_up.finals))
        within = analysis.within_noise(winner.finals, runner_up.finals)  # the same test, at its level
        beyond = None if within is None else not within
    return Verdict(winner, runner_up, p, beyond, tuple(r for r in top if r.under_tuned))


def _profiles(p: Any) -> Profiles | None:
    p = _dict(p)
    rho = {str(o): tuple(finite_or_none(v) for v in _list(ys)) for o, ys in _dict(p.get("rho")).items()}
    score = {str(o): finite_or_none(v) for o, v in _dict(p.get("score")).items()}
    if not rho and not score:
        return None
    return Profiles(tuple(finite_or_none(t) for t in _list(p.get("taus"))), rho, score,
                    _str(p.get("cost")) or "steps_to_target")  # fmt: skip


def _speedup(e: dict, workload: WorkloadResult | None) -> SpeedupFit:
    """A null speedup reads as beyond the fit when the fit is usable (no note) and the optimizer
    finished: its loss lies below anything the AdamW fit reaches."""
    fit = e.get("fit")
    fit = {k: finite_or_none(fit.get(k)) for k in ("alpha", "exponent", "beta")} if isinstance(fit, dict) else None
    note = _str(e.get("note"))
    values = {}
    for o, v in _dict(e.get("speedup")).items():
        run = workload.runs.get(str(o)) if workload else None
        if isinstance(v, float) and v == math.inf:
            values[str(o)] = Speedup(None, True)
        elif (x := finite_or_none(v)) is not None:
            values[str(o)] = Speedup(x, False)
        else:
            values[str(o)] = Speedup(None, v is None and fit is not None and note is None and run is not None
                                     and run.finished)  # fmt: skip
    return SpeedupFit(tuple(finite_or_none(b) for b in _list(e.get("budgets"))),
                      tuple(finite_or_none(x) for x in _list(e.get("adamw_losses"))), fit, note, values)  # fmt: skip


def _card(name: str, c: dict) -> MethodCard:
    caps = _dict(c.get("capabilities"))
    search = {str(k): SearchAxis(finite_or_none(_dict(a).get("center")), _str(_dict(a).get("grid")),
                                 _str(_dict(a).get("source"))) for k, a in _dict(c.get("search")).items()}  # fmt: skip
    return MethodCard(
        name=_str(c.get("name")) or name,
        cls=_str(c.get("class")),
        paper=_str(c.get("paper")),
        reference=_str(c.get("reference")),
        capabilities=Capabilities(_bool(caps.get("matrix_only")), _bool(caps.get("needs_create_graph")),
                                  _str(caps.get("fused")), tuple(str(s) for s in _list(caps.get("state_precisions")))),
        search=search,
        fixed={str(k): v for k, v in _dict(c.get("fixed")).items()},
    )
