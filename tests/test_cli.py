"""The command line's messages: list options say what they expect, Ctrl-C ends every command with
exit status 130 and one line on stderr (the arena's worker hands its trial back first: see
tests/arena/test_worker.py and, for a real Ctrl-C on `arena run`, tests/arena/test_journal.py)."""
from __future__ import annotations

import pytest

import optarena
from optarena import cli, demo
from optarena.arena import runner
from optarena.arena.workloads import WORKLOADS


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["arena", "run", "--workloads", ""], "expected comma-separated workload names, e.g. rosenbrock,charlm"),
        (["arena", "plan", "--workloads", " , "], "expected comma-separated workload names"),
        (["arena", "run", "--optimizers", ""], "expected comma-separated optimizer names, e.g. adamw,sgd"),
        (["demo", "--optimizers", ","], "expected comma-separated optimizer names"),
    ],
)
def test_an_empty_list_option_says_what_it_expects(argv, expected, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the usage lines
    option = argv[2] if argv[0] == "arena" else argv[1]
    assert f"error: argument {option}: {expected}" in error
    if "workload" in expected:
        assert "optimizer" not in error and error.endswith(f"valid workloads: {', '.join(WORKLOADS)}")
    else:
        assert "workload" not in error and error.endswith(f"valid optimizers: {', '.join(optarena.available())}")


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


CONTINUE = "interrupted; rerun the same command to continue"


@pytest.mark.parametrize(
    "argv, target, line",
    [
        (["arena", "run", "--quiet"], "run_arena", f"optarena arena run: {CONTINUE}"),
        (["arena", "worker", "--storage", "journal:x.journal"], "work", f"optarena arena worker: {CONTINUE}"),
        (["arena", "report"], "finish", "optarena arena report: interrupted; rerun the same command to write the report"),
        (["demo", "--optimizers", "sgd"], None, "optarena demo: interrupted"),
    ],
)
def test_ctrl_c_exits_130_with_one_line(argv, target, line, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    if target is None:
        monkeypatch.setattr(demo, "run_demo", _interrupt)
    else:
        monkeypatch.setattr(runner, target, _interrupt)
        monkeypatch.setattr(runner, "preflight", lambda plan: None)
        monkeypatch.setattr("optarena.arena.plan.load_plan", lambda storage, name: None)
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == line + "\n"
