"""What an arena run is made of: a plan, and the Optuna studies it creates up front.

Every unit of work is a trial in a study. The budget is fixed and equal by construction:

* `tune` (per workload x optimizer): at most `trials` configurations chosen by the procedure of
  `tuning.py` (the same for every method, from its card's axes); the first round (the lr sweep)
  is enqueued when the plan is created, each later round by the worker that finishes the round
  before it. Seed 0.
* `final` (per workload x optimizer): the best tuned configuration rerun on `seeds`; ready once
  its `tune` study has finished.
* `scale` (AdamW on the `scale` workloads): the best AdamW configuration at `factor` x the step
  budget on every seed, for the data-equivalent speedup fit.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage

from ..registry import available, card, methods
from . import tuning
from .procs import gone, this_process
from .storage import ArenaError
from .workloads import WORKLOADS, get_workload

SUITES: dict[str, dict[str, Any]] = {
    "quick": {"trials": 6, "seeds": 2, "scale": {"noisy-quadratic": [2, 4]}},
    "standard": {"trials": 16, "seeds": 5, "scale": {"noisy-quadratic": [2, 4, 8], "charlm": [2, 4, 8]}},
}
BASELINE = "adamw"
PLAN_VERSION = 2


@dataclass(frozen=True)
class StudySpec:
    name: str
    kind: str  # "tune" | "final" | "scale"
    workload: str
    optimizer: str
    direction: str
    configs: tuple[dict[str, Any], ...]
    depends_on: str | None = None
    budget: int = 0  # tune: the most configurations tuning may run (`configs` is its first round)

    def __post_init__(self) -> None:
        if not self.budget:
            object.__setattr__(self, "budget", len(self.configs))


@dataclass
class Plan:
    name: str
    suite: str
    optimizers: list[str]
    workloads: list[str]
    trials: int
    seeds: list[int]
    threads: int = 1
    scale: dict[str, list[int]] = field(default_factory=dict)
    steps_override: int | None = None  # every workload's budget, for smoke runs and tests
    version: int = PLAN_VERSION

    def steps(self, workload: str) -> int:
        return self.steps_override or get_workload(workload).budget(self.suite)

    def study_name(self, workload: str, optimizer: str, kind: str) -> str:
        return f"{self.name}:{workload}:{optimizer}:{kind}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Plan":
        if data.get("version") != PLAN_VERSION:
            raise ArenaError(f"the storage holds a plan of version {data.get('version')}, this optarena reads {PLAN_VERSION}")
        return cls(**data)

    def studies(self) -> list[StudySpec]:
        """Every study of the plan, in the order workers take them up."""
        tune, final, scale = [], [], []
        for w in self.workloads:
            workload = get_workload(w)
            direction = "maximize" if workload.higher_is_better else "minimize"
            steps = self.steps(w)
            for o in self.optimizers:
                if not card(o).applies_to(w):
                    continue
                tname = self.study_name(w, o, "tune")
                axes = card(o).search
                configs = tuple(tuning_config(axes, i, point, 0, steps)
                                for i, point in enumerate(tuning.first_round(axes, self.trials)))  # fmt: skip
                tune.append(StudySpec(tname, "tune", w, o, direction, configs, budget=self.trials))
                configs = tuple({"config": i, "seed": s, "steps": steps} for i, s in enumerate(self.seeds))
                final.append(StudySpec(self.study_name(w, o, "final"), "final", w, o, direction, configs, tname))
            if w in self.scale and BASELINE in self.optimizers:
                pairs = [(f, s) for f in self.scale[w] for s in self.seeds]
                configs = tuple(
                    {"config": i, "seed": s, "steps": f * steps, "factor": f} for i, (f, s) in enumerate(pairs)
                )
                scale.append(StudySpec(self.study_name(w, BASELINE, "scale"), "scale", w, BASELINE, direction,
                                       configs, self.study_name(w, BASELINE, "tune")))  # fmt: skip
        return tune + final + scale


def tuning_config(axes: dict, number: int, point: tuple[int, ...], round_: int, steps: int) -> dict[str, Any]:
    """The attributes of tuning configuration `number`: its grid point, values and round."""
    return {"config": number, "seed": 0, "steps": steps, "params": tuning.values(axes, point), "point": list(point),
            "round": round_}  # fmt: skip


def make_plan(
    suite: str,
    *,
    optimizers: list[str] | None = None,
    workloads: list[str] | None = None,
    trials: int | None = None,
    seeds: int | None = None,
    threads: int = 1,
    name: str | None = None,
    steps: int | None = None,
) -> Plan:
    """A plan for `suite` with the user's overrides, every name checked (errors list the valid ones)."""
    if suite not in SUITES:
        raise ArenaError(f"unknown suite {suite!r}; valid suites: {', '.join(SUITES)}")
    cfg = SUITES[suite]
    works = list(workloads) if workloads else list(WORKLOADS)
    bad = [w for w in works if w not in WORKLOADS]
    if bad:
        raise ArenaError(f"unknown workload(s) {', '.join(bad)}; valid workloads: {', '.join(WORKLOADS)}")
    applicable = [m for m in methods() if any(card(m).applies_to(w) for w in works)]
    opts = list(optimizers) if optimizers else applicable
    valid = sorted(set(available()) | set(methods()))
    bad = [o for o in opts if o not in valid]
    if bad:
        raise ArenaError(f"unknown optimizer(s) {', '.join(bad)}; valid optimizers: {', '.join(valid)}")
    for o in opts:
        try:
            method = card(o)
        except ValueError as err:
            raise ArenaError(str(err)) from None
        if o not in applicable:
            raise ArenaError(f"{o} runs only on the workload(s) {', '.join(method.workloads)}; add one to --workloads")
    for value, what in ((trials, "trials"), (seeds, "seeds"), (threads, "threads"), (steps, "steps")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ArenaError(f"{what} must be an integer in [1, inf), got {value!r}")
    n_seeds = seeds or cfg["seeds"]
    scale = {w: list(f) for w, f in cfg["scale"].items() if w in works}
    plan = Plan(name or suite, suite, opts, works, trials or cfg["trials"], list(range(1, n_seeds + 1)), threads, scale,
                steps_override=steps)  # fmt: skip
    if name is None:  # the same command names the same run; changed arguments (or budgets) a new one
        body = {k: v for k, v in plan.to_json().items() if k != "name"}
        plan.name = f"{suite}-{hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:8]}"
    return plan


def _plan_study(plan_name: str) -> str:
    return f"{plan_name}:plan"


def create_studies(storage: BaseStorage, plan: Plan, wait: float = 60.0) -> None:
    """Store `plan` and create (once) every study with its enqueued configurations.

    Rerunning with the same plan continues; a different plan under the same name is refused. Of
    several processes creating the same run at once, one creates it and the others wait for it
    (until the creator, recorded as `creator`, is known to have exited, or up to `wait` seconds;
    then the rest is filled in: an interrupted creation, or one cut off a damaged journal).
    """
    try:
        holder = optuna.create_study(storage=storage, study_name=_plan_study(plan.name))
        holder.set_user_attr("creator", this_process())
        holder.set_user_attr("plan", plan.to_json())
    except optuna.exceptions.DuplicatedStudyError:
        holder = optuna.load_study(storage=storage, study_name=_plan_study(plan.name))
        deadline = time.monotonic() + wait
        while not holder.user_attrs.get("created") and time.monotonic() < deadline:
            if gone(*holder.user_attrs.get("creator", ["", 0, 0])):
                break
            time.sleep(0.5)
            holder = optuna.load_study(storage=storage, study_name=_plan_study(plan.name))
    stored = holder.user_attrs.get("plan")
    if stored is not None:
        if stored != json.loads(json.dumps(plan.to_json())):
            raise ArenaError(
                f"the storage already holds a run named {plan.name!r} with a different plan "
                f"(stored: {json.dumps(stored)}); choose another --name, --out or --storage"
            )
        if holder.user_attrs.get("created"):
            return
    else:
        holder.set_user_attr("plan", plan.to_json())
    for spec in plan.studies():
        study = optuna.create_study(storage=storage, study_name=spec.name, direction=spec.direction, load_if_exists=True)
        have = {t.user_attrs.get("config") for t in study.get_trials(deepcopy=False)}
        for config in spec.configs:
            if config["config"] not in have:
                study.enqueue_trial(config.get("params", {}), user_attrs={**config, "kind": spec.kind})
    holder.set_user_attr("created", True)


def run_names(storage: BaseStorage) -> list[str]:
    """The arena runs a storage holds."""
    return sorted(s[: -len(":plan")] for s in optuna.get_all_study_names(storage) if s.endswith(":plan"))


def load_plan(storage: BaseStorage, name: str | None) -> Plan:
    """The plan of the run `name`; None: the storage's only run."""
    if name is None:
        names = run_names(storage)
        if len(names) != 1:
            raise ArenaError(f"the storage holds {len(names)} arena runs ({', '.join(names) or 'none'}); name one with --name")
        name = names[0]
    try:
        holder = optuna.load_study(storage=storage, study_name=_plan_study(name))
    except KeyError:
        names = run_names(storage)
        raise ArenaError(f"the storage holds no arena run named {name!r}; runs there: {', '.join(names) or 'none'}") from None
    if not holder.user_attrs.get("created"):
        raise ArenaError(f"the run {name!r} is still being created; start workers after `arena run`/`arena plan` returns")
    return Plan.from_json(holder.user_attrs["plan"])
