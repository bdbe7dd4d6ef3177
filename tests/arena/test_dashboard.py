"""`optarena arena dashboard`: opens optuna-dashboard on the run's storage (here a stand-in that
records its arguments: nothing is served), or says how to install it."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import optuna
import pytest

from optarena.arena.storage import open_storage
from optarena.cli import main


@pytest.fixture
def served(monkeypatch):
    calls = []
    monkeypatch.setitem(sys.modules, "optuna_dashboard",
                        SimpleNamespace(run_server=lambda storage, **kw: calls.append((storage, kw))))  # fmt: skip
    return calls


def _run_folder(path):
    optuna.create_study(storage=open_storage(f"journal:{path / 'studies.journal'}"), study_name="quick-abc/tune")
    return path


def test_missing_optuna_dashboard_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails
    assert main(["arena", "dashboard", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "pip install optuna-dashboard" in err[0]


def test_opens_the_run_folders_journal_by_default(served, tmp_path, monkeypatch, capsys):
    run = _run_folder(tmp_path / "runs" / "arena")
    monkeypatch.chdir(tmp_path)
    assert main(["arena", "dashboard"]) == 0
    (storage, kw), = served
    assert kw == {"host": "localhost", "port": 8080}
    assert [s.study_name for s in storage.get_all_studies()] == ["quick-abc/tune"]
    assert "studies.journal: http://localhost:8080/" in capsys.readouterr().out
    served.clear()
    assert main(["arena", "dashboard", "--storage", f"journal:{run / 'studies.journal'}", "--port", "9001"]) == 0
    assert served[0][1]["port"] == 9001


def test_no_run_in_the_folder_is_an_error(served, tmp_path, capsys):
    assert main(["arena", "dashboard", "--out", str(tmp_path / "none")]) == 2
    assert "no run in" in capsys.readouterr().err and not served
    assert not (tmp_path / "none").exists()  # nothing created


def test_the_port_must_be_a_positive_integer(served, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["arena", "dashboard", "--port", "0"])
    assert exc.value.code == 2 and "expected a positive integer" in capsys.readouterr().err
