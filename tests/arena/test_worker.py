"""Scale-out and resumption: workers share studies through a storage, interruptions lose nothing.

The invariant every test checks (`assert_exactly_once`): in every study of the plan each
configuration finished exactly once, trial numbers are 0..n-1 with no gaps or repeats, and each
tuning study ran exactly the rounds the procedure prescribes for its results (however many
workers ran them, in whatever order).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

import optarena
from optarena.arena import tuning
from optarena.arena.errors import ArenaError
from optarena.arena.plan import create_studies, load_plan, make_plan
from optarena.arena.storage import open_storage
from optarena.arena.worker import HEARTBEAT_KEY, MAX_ATTEMPTS, Worker, fail_stale, reconcile

pytestmark = pytest.mark.slow


def tiny_plan(name: str, steps: int = 600, trials: int = 4):
    return make_plan("quick", optimizers=["adamw", "sgd"], workloads=["rosenbrock"], trials=trials, seeds=2,
                     name=name, steps=steps)  # fmt: skip


def assert_exactly_once(storage, plan) -> dict[str, list]:
    trials_by_study = {}
    for spec in plan.studies():
        study = optuna.load_study(storage=storage, study_name=spec.name)
        trials = study.get_trials(deepcopy=False)
        assert sorted(t.number for t in trials) == list(range(len(trials))), spec.name
        complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.user_attrs["config"])
        configs = [t.user_attrs["config"] for t in complete]
        expected = list(range(len(configs))) if spec.kind == "tune" else [c["config"] for c in spec.configs]
        assert configs == expected, spec.name  # each once, none missing
        assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
        if spec.kind == "tune":
            assert_rounds_replay(spec, [(tuple(t.user_attrs["point"]), t.value) for t in complete])
        trials_by_study[spec.name] = trials
    return trials_by_study


def assert_rounds_replay(spec, done) -> None:
    """The tuning study ran the procedure's rounds for its own results, and stopped where it says."""
    axes, higher = optarena.card(spec.optimizer).search, spec.direction == "maximize"
    batch, i = tuning.first_round(axes, spec.budget), 0
    while batch:
        assert [p for p, _ in done[i:i + len(batch)]] == batch, spec.name
        i += len(batch)
        batch = tuning.next_round(axes, done[:i], spec.budget, higher)
    assert i == len(done) <= spec.budget, spec.name


def completed(storage, plan) -> int:
    return sum(t.state == TrialState.COMPLETE for t in all_trials(storage, plan))


def all_trials(storage, plan) -> list:
    return [t for spec in plan.studies()
            for t in optuna.load_study(storage=storage, study_name=spec.name).get_trials(deepcopy=False)]  # fmt: skip


def worker_cmd(url: str, name: str) -> list[str]:
    return [sys.executable, "-m", "optarena", "arena", "worker", "--storage", url, "--name", name, "--quiet"]


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def states(storage, plan) -> list[TrialState]:
    return [t.state for spec in plan.studies()
            for t in optuna.load_study(storage=storage, study_name=spec.name).get_trials(deepcopy=False)]  # fmt: skip


def _two_workers_share(url: str, name: str) -> None:
    storage = open_storage(url)
    plan = tiny_plan(name)
    create_studies(storage, plan)
    procs = [subprocess.Popen(worker_cmd(url, name), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]  # fmt: skip
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ran = [int(out.split("ran ")[1].split()[0]) for out in outputs]
    assert sum(ran) == completed(storage, plan), outputs  # no configuration run twice
    assert min(ran) >= 1, f"one worker did all the work: {ran}"
    assert_exactly_once(storage, plan)


def test_two_workers_share_a_journal_file(tmp_path):
    _two_workers_share(f"journal:{tmp_path / 's.journal'}", "share")


def test_two_workers_share_postgresql(postgres_url):
    _two_workers_share(postgres_url, "share-pg")


def _killed_then_rerun(url: str, name: str, sig: int) -> dict:
    storage = open_storage(url)
    plan = tiny_plan(name, steps=3000, trials=3)
    create_studies(storage, plan)
    proc = subprocess.Popen(worker_cmd(url, name), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: TrialState.COMPLETE in states(storage, plan) and TrialState.RUNNING in states(storage, plan),
                 what="a finished and a running trial")  # fmt: skip
        os.kill(proc.pid, sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    # the rerun: same host, the dead worker's pid is gone, so its trial is stale at once
    Worker(storage, load_plan(storage, name), grace=3600).run()
    trials = assert_exactly_once(storage, plan)
    failed = [t for ts in trials.values() for t in ts if t.state == TrialState.FAIL]
    assert len(failed) == 1  # the one that was running when the worker died
    retried = [t for ts in trials.values() for t in ts if t.user_attrs.get("retry_of") == failed[0].number
               and t.user_attrs["config"] == failed[0].user_attrs["config"]]  # fmt: skip
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    return failed[0].user_attrs


def test_killed_worker_on_postgresql_rerun_completes(postgres_url):
    attrs = _killed_then_rerun(postgres_url, "kill-pg", signal.SIGKILL)
    assert attrs["interrupted"] == "stale heartbeat"


def test_ctrl_c_hands_the_trial_back(tmp_path):
    attrs = _killed_then_rerun(f"journal:{tmp_path / 's.journal'}", "ctrl-c", signal.SIGINT)
    assert attrs["interrupted"] == "KeyboardInterrupt"  # handed back by the worker itself


def test_stale_heartbeat_from_another_host_is_requeued_once(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 's.journal'}")
    plan = tiny_plan("stale", trials=2)
    create_studies(storage, plan)
    study = optuna.load_study(storage=storage, study_name=plan.studies()[0].name)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[0]
    assert storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
    storage.set_trial_system_attr(waiting._trial_id, HEARTBEAT_KEY, [time.time() - 100, "elsewhere", 0, 1, 10.0])
    assert fail_stale(study, grace=1000) == 0  # fresh enough: left alone
    assert fail_stale(study, grace=50) == 1
    assert fail_stale(study, grace=50) == 0  # already handed back: not twice
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials].count(TrialState.FAIL) == 1
    copy = trials[-1]
    assert copy.state == TrialState.WAITING and copy.user_attrs["retry_of"] == waiting.number
    assert copy.system_attrs["fixed_params"] == waiting.system_attrs["fixed_params"]
    assert socket.gethostname() != "elsewhere"


def test_a_configuration_lost_between_fail_and_enqueue_is_enqueued_again(tmp_path):
    """A worker killed after failing its trial but before enqueueing the copy loses nothing."""
    storage = open_storage(f"journal:{tmp_path / 's.journal'}")
    plan = tiny_plan("lost", steps=30, trials=2)
    create_studies(storage, plan)
    study = optuna.load_study(storage=storage, study_name=plan.studies()[0].name)
    trial = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))[0]
    storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING)
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # ... and the process died here
    assert reconcile(study) == 1 and reconcile(study) == 0
    Worker(storage, load_plan(storage, "lost"), grace=3600).run()
    assert_exactly_once(storage, plan)


def test_a_configuration_that_keeps_killing_its_worker_becomes_an_error(tmp_path):
    storage = open_storage(f"journal:{tmp_path / 's.journal'}")
    plan = tiny_plan("crash", steps=30, trials=2)
    create_studies(storage, plan)
    study = optuna.load_study(storage=storage, study_name=plan.studies()[0].name)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        waiting = [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
                   if t.user_attrs["config"] == 0]  # fmt: skip
        assert len(waiting) == 1 and waiting[0].user_attrs.get("attempt", 1) == attempt
        storage.set_trial_state_values(waiting[0]._trial_id, TrialState.RUNNING)
        storage.set_trial_system_attr(waiting[0]._trial_id, HEARTBEAT_KEY, [0.0, "elsewhere", 0, 1, 10.0])
        assert fail_stale(study, grace=1) == 1
    last = study.get_trials(deepcopy=False)[-1]
    assert last.state == TrialState.FAIL and last.user_attrs["error"].startswith(f"interrupted {MAX_ATTEMPTS} times")
    assert not [t for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)) if t.user_attrs["config"] == 0]
    assert reconcile(study) == 0  # an error is finished: not brought back
    Worker(storage, load_plan(storage, "crash"), grace=3600).run()  # the rest of the plan still completes


def test_unreachable_postgresql_is_a_clear_error_before_training():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    start = time.monotonic()
    with pytest.raises(ArenaError, match="cannot open storage 'postgresql.*127.0.0.1"):
        open_storage(f"postgresql://u:secret@127.0.0.1:{port}/db")
    assert time.monotonic() - start < 30


def test_password_is_redacted_in_errors():
    with pytest.raises(ArenaError) as info:
        open_storage("postgresql://u:hunter2@127.0.0.1:1/db")
    assert "hunter2" not in str(info.value)


def _interrupted_at(monkeypatch, tmp_path, name: str, where: str):
    """Run a worker in this process with a Ctrl-C delivered at `where`: right after `_pop` claimed a
    trial, or right before a finished trial is told. Returns (storage, plan, that trial's number)."""
    from optarena.arena import worker as worker_module

    storage = open_storage(f"journal:{tmp_path / 's.journal'}")
    plan = tiny_plan(name, steps=50, trials=2)
    create_studies(storage, plan)
    seen = []
    if where == "pop":
        real_pop = worker_module._pop

        def pop_then_interrupt(study):
            trial = real_pop(study)
            if trial is not None and not seen:
                seen.append(trial.number)
                os.kill(os.getpid(), signal.SIGINT)  # arrives before run_trial could hand the trial back
            return trial

        monkeypatch.setattr(worker_module, "_pop", pop_then_interrupt)
    else:
        real_tell = optuna.Study.tell

        def interrupt_then_tell(study, trial, *args, **kwargs):
            if not seen and kwargs.get("state") is None:
                seen.append(trial.number)
                os.kill(os.getpid(), signal.SIGINT)  # arrives between the result's writes
            return real_tell(study, trial, *args, **kwargs)

        monkeypatch.setattr(optuna.Study, "tell", interrupt_then_tell)
    with pytest.raises(KeyboardInterrupt):
        Worker(storage, load_plan(storage, name)).run()
    return storage, plan, seen[0]


def test_ctrl_c_just_after_a_trial_is_taken_hands_it_back(monkeypatch, tmp_path):
    storage, plan, number = _interrupted_at(monkeypatch, tmp_path, "pop-race", "pop")
    study = optuna.load_study(storage=storage, study_name=plan.studies()[0].name)
    trial = study.get_trials(deepcopy=False)[number]
    assert trial.state == TrialState.FAIL and trial.user_attrs["interrupted"] == "KeyboardInterrupt"
    monkeypatch.undo()
    Worker(storage, load_plan(storage, "pop-race")).run()
    assert_exactly_once(storage, plan)


def test_ctrl_c_while_a_result_is_told_waits_for_it(monkeypatch, tmp_path):
    storage, plan, number = _interrupted_at(monkeypatch, tmp_path, "tell-race", "tell")
    study = optuna.load_study(storage=storage, study_name=plan.studies()[0].name)
    trial = study.get_trials(deepcopy=False)[number]
    assert trial.state == TrialState.COMPLETE and "record" in trial.user_attrs
    monkeypatch.undo()
    Worker(storage, load_plan(storage, "tell-race")).run()
    assert_exactly_once(storage, plan)


def test_a_tuning_round_enqueued_twice_runs_once(tmp_path):
    """Two workers finishing a round at once both enqueue the next: the later copy is dropped when taken."""
    storage = open_storage(f"journal:{tmp_path / 's.journal'}")
    plan = tiny_plan("dup", steps=50, trials=6)
    create_studies(storage, plan)
    worker = Worker(storage, plan)
    assert worker.run(max_trials=3) == 3  # the first study's lr sweep; its last tell enqueued the next round
    study = optuna.load_study(storage=storage, study_name=plan.studies()[0].name)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert waiting and {t.user_attrs["round"] for t in waiting} == {1}
    assert worker.advance(plan.studies()[0]) == 0  # the round is under way: nothing more
    for t in waiting:  # what a second worker racing the first would have added
        study.enqueue_trial(t.system_attrs["fixed_params"], user_attrs=dict(t.user_attrs))
    worker.run()
    dropped = [t for t in study.get_trials(deepcopy=False) if "duplicate_of" in t.user_attrs]
    assert len(dropped) == len(waiting) and {t.state for t in dropped} == {TrialState.FAIL}
    assert_exactly_once(storage, plan)
