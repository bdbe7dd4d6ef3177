"""A damaged journal file: detected on open, its torn tail repaired (a copy kept), damage before
valid records refused by name, lost work redone exactly once, and a good report never replaced
by one made from storage that lost results.

The journal comes from a real tiny `arena run` in a subprocess (so its worker is gone, as after a
crash); each test cuts or damages a copy of it.
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from optarena.arena import runner
from optarena.arena.errors import ArenaError
from optarena.arena.journal import BACKUP_INFIX, GuardedJournal, scan
from optarena.arena.plan import create_studies, make_plan
from optarena.arena.results import finished_keys
from optarena.arena.storage import open_storage
from optarena.arena.worker import Worker
from optarena.cli import main
from test_worker import assert_exactly_once, completed, states, wait_for  # tests/arena is on sys.path

ARGS = ["--optimizers", "adamw,sgd", "--workloads", "rosenbrock", "--trials", "2", "--seeds", "2", "--steps", "20"]
REPORT = ("results.json", "report.md", "report.html")


def the_plan():
    return make_plan("quick", optimizers=["adamw", "sgd"], workloads=["rosenbrock"], trials=2, seeds=2, steps=20)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run folder (journal, results.json, report) from `optarena arena run` in a subprocess."""
    out = tmp_path_factory.mktemp("finished") / "run"
    subprocess.run([sys.executable, "-m", "optarena", "arena", "run", *ARGS, "--out", str(out), "--quiet"],
                   check=True, capture_output=True, timeout=300)  # fmt: skip
    return out


@pytest.fixture
def run_dir(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def backups(journal: Path) -> list[Path]:
    return sorted(journal.parent.glob(journal.name + BACKUP_INFIX + "*"))


def line_starts(data: bytes) -> list[int]:
    return [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")][:-1]


def test_scan_finds_the_first_bad_line_and_whether_valid_records_follow():
    good = b'{"op_code":0,"a":1}\n{"op_code":4,"b":2}\n'
    assert scan(b"") is None and scan(good) is None
    torn = scan(good + b'{"op_code":6,"tri')
    assert (torn.line, torn.offset, torn.tail) == (3, len(good), True) and "no end of line" in torn.reason
    assert scan(good + b'{"op_code":6}').tail  # complete JSON whose newline never made it: still torn
    garbage = scan(good + b"garbage\n\x00\x00\n")
    assert (garbage.line, garbage.tail, garbage.next_good) == (3, True, None) and "not JSON" in garbage.reason
    assert "not an Optuna journal record" in scan(good + b"[1, 2]\n").reason
    middle = scan(b'{"op_code":0}\n{"op_co{"op_code":4}\n' + good)
    assert (middle.line, middle.offset, middle.tail, middle.next_good) == (2, 14, False, 3)


def test_truncation_at_random_offsets_is_repaired_and_a_rerun_does_every_unit_exactly_once(run_dir, capsys):
    """Cut at seeded random offsets (mid-record and exactly at line ends) past the run's first two
    records (before them a creation cut short cannot name its creator and waits `wait` seconds),
    one of them while the run's studies were being created (filled in at once: the creator is gone)."""
    journal = run_dir / "studies.journal"
    data = journal.read_bytes()
    starts = line_starts(data)
    rng = random.Random(20240611)
    inside = [i for i in range(starts[2] + 1, len(data)) if data[i - 1] != ord("\n")]  # mid-record cuts
    creating = rng.choice([i for i in inside if i < data.index(b'"created"')])
    mid = sorted(rng.sample(inside, 4))
    ends = sorted(rng.sample(starts[3:], 2))  # cuts exactly after a record: nothing to detect
    plan = the_plan()
    for offset in [creating] + mid + ends + [len(data) - 1]:  # the last: only the final newline lost
        cut = data[:offset]
        journal.write_bytes(cut)
        for old in backups(journal):
            old.unlink()
        storage = open_storage(f"journal:{journal}")
        err = capsys.readouterr().err
        if cut.endswith(b"\n"):
            assert backups(journal) == [] and err == "" and journal.read_bytes() == cut
        else:
            (backup,) = backups(journal)
            assert backup.read_bytes() == cut  # the file as it was, byte for byte
            keep = cut.rfind(b"\n") + 1
            assert journal.read_bytes() == data[:keep]  # only the torn record is gone
            line = cut.count(b"\n") + 1
            assert f"the journal {journal} is damaged from line {line} on" in err and str(backup) in err
        create_studies(storage, plan)
        pending = Worker(storage, plan).pending()  # tuning: what its budget allows, an upper bound
        assert pending >= 1  # every cut here loses at least the last result
        before = completed(storage, plan)
        ran = Worker(storage, plan, grace=0.5).run()
        assert ran == completed(storage, plan) - before and 1 <= ran <= pending, offset  # nothing run twice
        assert_exactly_once(storage, plan)
        assert scan(journal.read_bytes()) is None


def test_report_from_a_damaged_journal_never_replaces_a_good_one(run_dir, tmp_path, capsys, monkeypatch):
    journal = run_dir / "studies.journal"
    good = {name: (run_dir / name).read_bytes() for name in REPORT}
    data = journal.read_bytes()
    starts = line_starts(data)
    journal.write_bytes(data[: starts[len(starts) * 3 // 5] + 7])  # the later part of the run is lost, mid-record
    assert main(["arena", "report", "--out", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "is damaged from line" in err and len(backups(journal)) == 1  # repaired on open
    assert "not writing the report" in err and "no longer has" in err and "rosenbrock/" in err
    assert {name: (run_dir / name).read_bytes() for name in REPORT} == good  # untouched
    # elsewhere it is written, with a loud warning that the run is not finished
    elsewhere = tmp_path / "partial"
    assert main(["arena", "report", "--storage", f"journal:{journal}", "--out", str(elsewhere)]) == 0
    assert "is not finished" in capsys.readouterr().err
    shown = finished_keys(json.loads((elsewhere / "results.json").read_text()))
    assert shown < finished_keys(json.loads(good["results.json"]))
    # the same `arena run` redoes the lost work and then replaces the report
    monkeypatch.setattr(runner, "Worker", partial(Worker, grace=0.5))  # the journal is seconds old
    assert main(["arena", "run", *ARGS, "--out", str(run_dir), "--quiet"]) == 0
    assert_exactly_once(open_storage(f"journal:{journal}"), the_plan())
    rewritten = json.loads((run_dir / "results.json").read_text())
    assert finished_keys(rewritten) == finished_keys(json.loads(good["results.json"]))


@pytest.mark.parametrize("garbage", [b"garbage\n", b"\x00\x00\x00\x00", b'{"op_code":8,"tr\n\n{"x":1}\n'])
def test_garbage_appended_is_cut_off(run_dir, capsys, garbage):
    journal = run_dir / "studies.journal"
    data = journal.read_bytes()
    journal.write_bytes(data + garbage)
    storage = open_storage(f"journal:{journal}")
    assert journal.read_bytes() == data
    (backup,) = backups(journal)
    assert backup.read_bytes() == data + garbage
    line = data.count(b"\n") + 1
    assert f"damaged from line {line} on" in capsys.readouterr().err
    assert Worker(storage, the_plan()).pending() == 0  # nothing of the run was lost
    open_storage(f"journal:{journal}")  # sound now: no second repair
    assert len(backups(journal)) == 1 and capsys.readouterr().err == ""


def test_damage_before_valid_records_is_refused_by_file_and_line(run_dir, capsys):
    journal = run_dir / "studies.journal"
    data = journal.read_bytes()
    starts = line_starts(data)
    torn = data[: starts[20] + 40] + data[starts[21]:]  # line 21 torn, the next record glued onto it
    journal.write_bytes(torn)
    with pytest.raises(ArenaError, match=f"journal {journal} is damaged at line 21 .*valid records follow it "
                       r"\(line 22\).*move studies.journal away to start the run over"):  # fmt: skip
        open_storage(f"journal:{journal}")
    assert journal.read_bytes() == torn and backups(journal) == []  # nothing guessed, nothing changed
    for argv in (["arena", "report", "--out", str(run_dir)], ["arena", "run", *ARGS, "--out", str(run_dir), "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"journal {journal} is damaged at line 21" in err and "Traceback" not in err


def test_an_append_never_glues_onto_a_record_another_process_tore(run_dir, capsys):
    journal = run_dir / "studies.journal"
    storage = open_storage(f"journal:{journal}")
    study = optuna.load_study(storage=storage, study_name=the_plan().studies()[0].name)
    data = journal.read_bytes()
    with open(journal, "ab") as f:  # a worker dies halfway through its record
        f.write(b'{"op_code":8,"worker_id":"gone","trial_id":0,"user_')
    study.set_user_attr("after", 1)
    assert scan(journal.read_bytes()) is None and journal.read_bytes().startswith(data)
    (backup,) = backups(journal)
    assert backup.read_bytes().endswith(b'"user_')
    assert "damaged from line" in capsys.readouterr().err
    again = optuna.load_study(storage=open_storage(f"journal:{journal}"), study_name=study.study_name)
    assert again.user_attrs["after"] == 1


def test_damage_by_an_unguarded_writer_while_open_names_the_file_and_line(run_dir):
    journal = run_dir / "studies.journal"
    storage = open_storage(f"journal:{journal}")
    study = optuna.load_study(storage=storage, study_name=the_plan().studies()[0].name)
    data = journal.read_bytes()
    record = data[line_starts(data)[-1]:]
    with open(journal, "ab") as f:  # a torn record, then another writer's records glued on
        f.write(record[:30] + record + record)
    line = data.count(b"\n") + 1
    with pytest.raises(ArenaError, match=f"journal {journal} was damaged while in use at line {line} .*run the command"):
        study.user_attrs  # any read


def test_a_write_that_fails_halfway_leaves_no_partial_record(tmp_path, monkeypatch):
    path = tmp_path / "s.journal"
    storage = open_storage(f"journal:{path}")
    study = optuna.create_study(storage=storage, study_name="s")
    before = path.read_bytes()
    real = os.pwrite

    def disk_fills_up(fd, data, offset):
        if offset == len(before):
            return real(fd, data[:10], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", disk_fills_up)
    with pytest.raises(OSError, match="No space left"):
        study.set_user_attr("big", "x" * 1000)
    monkeypatch.undo()
    assert path.read_bytes() == before  # the ten bytes written are gone again
    study.set_user_attr("small", 1)
    assert optuna.load_study(storage=open_storage(f"journal:{path}"), study_name="s").user_attrs == {"small": 1}
    assert isinstance(storage._backend, GuardedJournal)


@pytest.mark.slow
def test_ctrl_c_on_arena_run_exits_130_with_one_line_and_a_rerun_finishes(tmp_path):
    out = tmp_path / "run"
    argv = ["arena", "run", "--optimizers", "adamw", "--workloads", "rosenbrock", "--trials", "3", "--seeds", "1",
            "--steps", "3000", "--out", str(out), "--quiet"]  # fmt: skip
    plan = make_plan("quick", optimizers=["adamw"], workloads=["rosenbrock"], trials=3, seeds=1, steps=3000)
    url = f"journal:{out / 'studies.journal'}"

    def one_done_one_running() -> bool:
        if not (out / "studies.journal").exists():
            return False
        try:
            now = states(open_storage(url), plan)
        except (KeyError, ArenaError):  # the run is still being created
            return False
        return TrialState.COMPLETE in now and TrialState.RUNNING in now

    proc = subprocess.Popen([sys.executable, "-m", "optarena", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        wait_for(one_done_one_running, timeout=120, what="a finished and a running trial")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err == "optarena arena run: interrupted; rerun the same command to continue\n"
    assert main(argv) == 0  # the same command continues; nothing ran twice
    assert_exactly_once(open_storage(url), plan)
