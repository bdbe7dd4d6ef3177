"""A worker: takes enqueued trials of a plan's studies one at a time until none is left.

Taking a trial is atomic in every Optuna storage (a WAITING trial moves to RUNNING for exactly
one worker), so any number of workers, on any machines sharing the storage, run each
configuration once. While a trial runs, a thread records a heartbeat on it. A RUNNING trial
whose heartbeat is older than `grace` seconds, or whose worker process on this host is gone,
is stale: the first worker to notice fails it and enqueues the same configuration again. A
worker interrupted with Ctrl-C does the same for its own trial before it exits (a Ctrl-C while it
takes a trial or tells a result waits for that to finish: `_InterruptGate`). So an interrupted
run loses nothing and no configuration finishes twice.

Tuning proceeds in rounds (`tuning.py`): the worker that tells the last result of a round
enqueues the next (an idle worker does it too, should that worker have died first). Two workers
may both enqueue the same round; the copy with the higher trial number is dropped when taken.
"""
from __future__ import annotations

import math
import os
import signal
import threading
import time
from datetime import datetime, timezone
from typing import Any, Callable

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from ..registry import card
from . import tuning
from .plan import Plan, StudySpec, tuning_config
from .procs import gone, this_process
from .train import train
from .workloads import get_workload

HEARTBEAT_S = float(os.environ.get("OPTARENA_HEARTBEAT_S", "10"))
HEARTBEAT_KEY = "optarena:heartbeat"
MAX_ATTEMPTS = 3
"""A configuration whose worker died this many times is recorded as an error (a crash it causes,
e.g. out of memory, would otherwise take down every worker in turn)."""
PLAN_KEYS = ("kind", "config", "seed", "steps", "params", "factor", "point", "round")


class _Heartbeat:
    """Records (time, host, pid namespace, pid, interval) on a trial every `interval` seconds until
    stopped; a storage hiccup is retried at the next beat, never ends the heartbeat."""

    def __init__(self, storage: BaseStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop_event = threading.Event()
        self.beat()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def beat(self) -> None:
        self.storage.set_trial_system_attr(
            self.trial_id, HEARTBEAT_KEY, [time.time(), *this_process(), self.interval]
        )

    def _run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.beat()
            except UpdateFinishedTrialError:  # another worker judged the trial stale: nothing to keep alive
                return
            except Exception:  # noqa: BLE001 - a transient storage error: try again at the next beat
                continue

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join()


def _is_stale(trial: FrozenTrial, grace: float, now: float) -> bool:
    beat = trial.system_attrs.get(HEARTBEAT_KEY)
    if beat is None:
        started = trial.datetime_start or datetime.now(timezone.utc)
        if started.tzinfo is None:
            started = started.astimezone()
        return now - started.timestamp() > grace
    stamp, host, namespace, pid, interval = beat
    if gone(host, namespace, pid):
        return True
    return now - float(stamp) > max(grace, 3 * float(interval))


def requeue(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Fail `trial` and enqueue its configuration again (after `MAX_ATTEMPTS` interrupted attempts,
    record it as an error instead); False if another worker got there first. Should the process
    die between the two writes, `reconcile` enqueues the configuration again later."""
    storage = study._storage
    attempt = int(trial.user_attrs.get("attempt", 1))
    try:
        storage.set_trial_user_attr(trial._trial_id, "interrupted", reason)
        if attempt >= MAX_ATTEMPTS:
            storage.set_trial_user_attr(trial._trial_id, "error", f"interrupted {attempt} times (last: {reason})")
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False
    if attempt < MAX_ATTEMPTS:
        _enqueue(study, trial, attempt + 1)
    return True


def _enqueue(study: optuna.Study, trial: FrozenTrial, attempt: int) -> None:
    attrs = {k: v for k, v in trial.user_attrs.items() if k in PLAN_KEYS}
    study.enqueue_trial(trial.system_attrs.get("fixed_params", {}), user_attrs={**attrs, "retry_of": trial.number,
                                                                                "attempt": attempt})  # fmt: skip


def reconcile(study: optuna.Study) -> int:
    """Enqueue again every configuration that has no finished, waiting or running trial left (its
    worker died between failing a trial and enqueueing its copy); returns how many."""
    trials = study.get_trials(deepcopy=False)
    alive = {t.user_attrs.get("config") for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    done = finished_configs(study)
    lost = {}
    for t in trials:
        config = t.user_attrs.get("config")
        if config in alive or config in done:
            continue
        lost[config] = t  # the latest attempt
    for t in lost.values():
        _enqueue(study, t, int(t.user_attrs.get("attempt", 1)))
    return len(lost)


def fail_stale(study: optuna.Study, grace: float) -> int:
    now = time.time()
    count = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if _is_stale(trial, grace, now) and requeue(study, trial, "stale heartbeat"):
            count += 1
    return count


def finished_configs(study: optuna.Study) -> dict[int, FrozenTrial]:
    """The finished trial of each configuration: COMPLETE, or FAIL with an `error` (a bug or a
    broken environment is recorded, not retried). The first by number if, exceptionally, several."""
    done: dict[int, FrozenTrial] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        if t.state == TrialState.COMPLETE or "error" in t.user_attrs:
            done.setdefault(t.user_attrs["config"], t)
    return dict(sorted(done.items()))


def best_trial(study: optuna.Study, direction: str) -> FrozenTrial | None:
    """The best finished tuning trial: the best finite value, ties to the lower configuration."""
    finished = list(finished_configs(study).values())
    i = tuning.best([((), t.value) for t in finished], direction == "maximize")
    return None if i is None else finished[i]


def _pop(study: optuna.Study) -> optuna.Trial | None:
    """Take the first waiting trial (atomically); a duplicate of a configuration that an earlier
    trial already holds (two workers enqueued the same tuning round) is failed as such, not run."""
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        try:
            if not storage.set_trial_state_values(t._trial_id, TrialState.RUNNING):
                continue
        except UpdateFinishedTrialError:
            continue
        original = _held_by_earlier(study, t)
        if original is None:
            return optuna.Trial(study, t._trial_id)
        storage.set_trial_user_attr(t._trial_id, "duplicate_of", original)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return None


def _held_by_earlier(study: optuna.Study, trial: FrozenTrial) -> int | None:
    """The number of an earlier trial waiting for, running or having finished `trial`'s configuration."""
    config = trial.user_attrs.get("config")
    for t in study.get_trials(deepcopy=False):
        if t.number >= trial.number or t.user_attrs.get("config") != config:
            continue
        if t.state in (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE) or "error" in t.user_attrs:
            return t.number
    return None


class _InterruptGate:
    """Holds Ctrl-C (SIGINT) back while the worker owns a trial it could not yet hand back: from the
    moment `_pop` may claim one until `run_trial`'s handler is in place, and while a finished trial
    is told. `release()` delivers a held Ctrl-C (through the previous handler: KeyboardInterrupt by
    default). Off the main thread, where Python cannot set signal handlers, it does nothing."""

    def __init__(self):
        self._previous = None
        self._caught = False

    def hold(self) -> None:
        if threading.current_thread() is threading.main_thread() and self._previous is None:
            self._caught = False
            self._previous = signal.signal(signal.SIGINT, self._record)

    def _record(self, signum, frame) -> None:
        self._caught = True

    def release(self) -> None:
        previous, self._previous = self._previous, None
        if previous is None:
            return
        signal.signal(signal.SIGINT, previous)
        if self._caught:
            self._caught = False
            if callable(previous):
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                raise KeyboardInterrupt


class Worker:
    """Runs a plan's trials. `on_event(kind, info)` is told "start"/"done"/"requeued"/"idle"."""

    def __init__(
        self,
        storage: BaseStorage,
        plan: Plan,
        *,
        heartbeat: float = HEARTBEAT_S,
        grace: float | None = None,
        poll: float = 1.0,
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ):
        self.storage, self.plan = storage, plan
        self.specs = plan.studies()
        self.heartbeat, self.grace = heartbeat, grace if grace is not None else 3 * heartbeat
        self.poll = poll
        self.on_event = on_event or (lambda kind, info: None)
        self._studies: dict[str, optuna.Study] = {}
        self._tuned: set[str] = set()  # tuning studies whose procedure has stopped
        self._gate = _InterruptGate()

    def study(self, name: str) -> optuna.Study:
        if name not in self._studies:
            self._studies[name] = optuna.load_study(storage=self.storage, study_name=name)
        return self._studies[name]

    def ready(self, spec: StudySpec) -> bool:
        if spec.depends_on is None:
            return True
        return self.left(next(s for s in self.specs if s.name == spec.depends_on)) == 0

    def left(self, spec: StudySpec) -> int:
        """Configurations of `spec` still to run; for tuning, at most the rest of its budget (0 once
        the procedure has stopped)."""
        done = len(finished_configs(self.study(spec.name)))
        if spec.kind != "tune":
            return max(0, len(spec.configs) - done)
        if spec.name in self._tuned:
            return 0
        if done < len(self._configs(spec)) or self._next_round(spec):
            return max(1, spec.budget - done)
        self._tuned.add(spec.name)
        return 0

    def pending(self) -> int:
        """Configurations of the plan not finished yet (tuning: what its budget still allows)."""
        return sum(self.left(s) for s in self.specs)

    def _configs(self, spec: StudySpec) -> set[int]:
        return {t.user_attrs.get("config") for t in self.study(spec.name).get_trials(deepcopy=False)}

    def _next_round(self, spec: StudySpec) -> list[tuple[int, ...]]:
        """The next round of `spec`'s tuning, given that the rounds so far have finished."""
        study = self.study(spec.name)
        done = [(tuple(t.user_attrs["point"]), t.value) for t in finished_configs(study).values()]
        higher = spec.direction == "maximize"
        return tuning.next_round(card(spec.optimizer).search, done, spec.budget, higher)

    def advance(self, spec: StudySpec) -> int:
        """Enqueue the next tuning round of `spec` if the current one has finished; returns how many."""
        study = self.study(spec.name)
        configs = self._configs(spec)
        if spec.name in self._tuned or len(finished_configs(study)) < len(configs):
            return 0
        points = self._next_round(spec)
        rounds = [t.user_attrs.get("round", 0) for t in study.get_trials(deepcopy=False)]
        axes = card(spec.optimizer).search
        for j, point in enumerate(points):
            config = tuning_config(axes, len(configs) + j, point, max(rounds) + 1, spec.configs[0]["steps"])
            study.enqueue_trial(config["params"], user_attrs={**config, "kind": "tune"})
        return len(points)

    def run(self, max_trials: int | None = None) -> int:
        """Work until every configuration is finished (or `max_trials` were run); returns how many ran."""
        ran = 0
        while max_trials is None or ran < max_trials:
            for spec in self.specs:
                if not self.ready(spec):
                    continue
                self._gate.hold()  # released inside run_trial, once the trial can be handed back
                try:
                    trial = _pop(self.study(spec.name))
                except BaseException:
                    self._gate.release()
                    raise
                if trial is None:
                    self._gate.release()
                    continue
                self.run_trial(spec, trial)
                ran += 1
                break
            else:
                requeued = sum(fail_stale(self.study(s.name), self.grace) for s in self.specs)
                requeued += sum(reconcile(self.study(s.name)) for s in self.specs)
                requeued += sum(self.advance(s) for s in self.specs if s.kind == "tune")
                if requeued:
                    self.on_event("requeued", {"count": requeued})
                    continue
                if self.pending() == 0:
                    return ran
                self.on_event("idle", {})
                time.sleep(self.poll)
        return ran

    def run_trial(self, spec: StudySpec, trial: optuna.Trial) -> None:
        study = self.study(spec.name)
        info = {"study": spec.name, "kind": spec.kind, "workload": spec.workload, "optimizer": spec.optimizer,
                "number": trial.number}  # fmt: skip
        beat = None
        try:
            self._gate.release()  # a Ctrl-C held since the trial was taken is raised here, and handled
            attrs = study._storage.get_trial(trial._trial_id).user_attrs
            info["config"] = attrs["config"]
            beat = _Heartbeat(self.storage, trial._trial_id, self.heartbeat)
            self.on_event("start", info)
            values = self.values(spec, trial, attrs)
            # tuning scores the end of training only: no evaluations along the way (they cost a
            # third of a Fashion-MNIST run); seeds and scale runs record the curve
            record = train(get_workload(spec.workload), spec.optimizer, values, seed=attrs["seed"],
                           steps=attrs["steps"], threads=self.plan.threads,
                           evals=1 if spec.kind == "tune" else None)  # fmt: skip
        except BaseException as err:
            if beat is not None:
                beat.stop()
            frozen = study._storage.get_trial(trial._trial_id)
            if not isinstance(err, Exception):  # Ctrl-C, SystemExit: hand the configuration back
                requeue(study, frozen, type(err).__name__)
                raise
            # a bug or a broken environment: recorded (the report lists it), not retried
            trial.set_user_attr("error", f"{type(err).__name__}: {err}")
            study.tell(trial, state=TrialState.FAIL)
            self.on_event("error", {**info, "error": f"{type(err).__name__}: {err}"})
            return
        beat.stop()
        value = record["final"]
        if value is None:
            value = -math.inf if spec.direction == "maximize" else math.inf
        self._gate.hold()  # a Ctrl-C now waits until the result is told (and the next round enqueued)
        try:
            trial.set_user_attr("record", record)
            study.tell(trial, value)
            if spec.kind == "tune":
                self.advance(spec)
        except UpdateFinishedTrialError:  # judged stale meanwhile (e.g. a long storage outage): its copy counts
            self.on_event("requeued", {"count": 0})
            return
        finally:
            self._gate.release()
        self.on_event("done", {**info, "value": value, "status": record["status"]})

    def values(self, spec: StudySpec, trial: optuna.Trial, attrs: dict[str, Any]) -> dict[str, float]:
        """The configuration to train: the trial's own (tuning; also shown as Optuna params), or
        the best tuned one (seeds, scale), recorded as the trial's `params`."""
        if spec.kind == "tune":
            return {k: trial.suggest_float(k, v, v) for k, v in attrs["params"].items()}
        study = self.study(spec.depends_on)
        best = best_trial(study, spec.direction)
        if best is None:  # every tuning trial diverged: rerun the card's centre so the failure is on record
            best = finished_configs(study)[0]
        trial.set_user_attr("best_of_tuning", best.number)
        trial.set_user_attr("params", best.user_attrs["params"])
        return dict(best.user_attrs["params"])
