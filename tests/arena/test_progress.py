"""`arena run`'s progress: plain lines (counts, ETA, last configuration) when stdout is not a
terminal, rich's bar on one, nothing when disabled; driven by a fake worker, no training."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from optarena.arena import runner
from optarena.arena.runner import Progress


class FakeWorker:
    """Two studies; per study the configurations finished and still to run (`left`, what a real
    worker's budget and tuning procedure say) are set by the test."""

    def __init__(self, tune: int, final: int):
        self.specs = [SimpleNamespace(name="tune-a"), SimpleNamespace(name="final-a")]
        self.finished = {"tune-a": 0, "final-a": 0}
        self.remaining = {"tune-a": tune, "final-a": final}

    def study(self, name: str) -> str:
        return name

    def left(self, spec) -> int:
        return self.remaining[spec.name]

    def pending(self) -> int:
        return sum(self.remaining.values())

    def finish(self, study: str) -> None:
        self.finished[study] += 1
        self.remaining[study] -= 1


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def worker(monkeypatch):
    w = FakeWorker(tune=4, final=2)
    monkeypatch.setattr(runner, "finished_configs", lambda study: dict.fromkeys(range(w.finished[study])))
    return w


def _info(study: str, config: int) -> dict:
    kind = study.split("-")[0]
    return {"study": study, "kind": kind, "workload": "charlm", "optimizer": "muon", "config": config}


def _lines(capsys) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_plain_lines_per_finished_study_and_every_interval(worker, capsys):
    clock = Clock()
    with Progress(worker, clock=clock) as progress:
        assert progress.bar is None
        assert _lines(capsys) == ["[ 0:00] 0/6 configurations done, eta ?"]
        for config, at in ((0, 10), (1, 20)):
            progress("start", _info("tune-a", config))
            clock.now = 100 + at
            worker.finish("tune-a")
            progress("done", _info("tune-a", config))
        assert _lines(capsys) == []  # within the interval, no study finished
        worker.remaining["tune-a"] = 0  # the tuning stopped under its budget: finished, the total shrinks
        clock.now = 121
        progress("start", _info("final-a", 0))
        assert _lines(capsys) == []
        clock.now = 130
        worker.finish("final-a")
        progress("done", _info("final-a", 0))  # a study is seen finished: a line at once
        assert _lines(capsys) == ["[ 0:30] 3/4 configurations done, eta 0:10 — last: final charlm / muon #0"]
        clock.now = 140
        progress("idle", {})
        assert _lines(capsys) == []
        clock.now = 165
        progress("idle", {})
        assert _lines(capsys) == ["[ 1:05] 3/4 configurations done, eta 0:22 — last: final charlm / muon #0 "
                                  "(waiting for other workers)"]  # fmt: skip
        progress("error", {**_info("final-a", 1), "error": "RuntimeError: boom"})
        assert _lines(capsys) == ["error final-a #1: RuntimeError: boom"]
        clock.now = 3800
        worker.finish("final-a")
    assert _lines(capsys) == ["[1:01:40] 4/4 configurations done, eta 0:00 — last: final charlm / muon #1"]


def test_disabled_prints_nothing(worker, capsys):
    with Progress(worker, enabled=False) as progress:
        progress("start", _info("tune-a", 0))
        worker.finish("tune-a")
        progress("done", _info("tune-a", 0))
        progress("start", _info("final-a", 0))
    assert capsys.readouterr().out == ""


def test_no_final_line_after_an_interruption(worker, capsys):
    with pytest.raises(KeyboardInterrupt):
        with Progress(worker, clock=Clock()):
            capsys.readouterr()
            raise KeyboardInterrupt
    assert capsys.readouterr().out == ""


def test_a_terminal_gets_the_live_bar(worker, monkeypatch, capsys):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    with Progress(worker) as progress:
        assert progress.bar is not None
        progress("start", _info("tune-a", 0))
        worker.finish("tune-a")
        worker.remaining["tune-a"] -= 1
        progress("done", _info("tune-a", 0))
        task = progress.bar.tasks[0]
        assert (task.completed, task.total) == (1, 5)  # done + pending: the total shrank
    assert "configurations done" not in capsys.readouterr().out
