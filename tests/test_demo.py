"""The `optarena demo` training run and the command line around it.

Exit-status contract of `optarena.cli.main`: it returns 0 on success and 2 (after printing
"optarena demo: error: ..." to stderr) for an unknown optimizer name or a missing optional
dependency; argparse raises SystemExit(0) for --help.
"""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import optarena
import optarena.arena.train
from optarena import cli, demo

STEPS = 150  # AdamW reaches ~0.95 validation accuracy here; ~1-2 s
# One thread: the model is tiny, and two threads on a busy 2-core machine spin-wait badly.


@pytest.fixture(scope="module")
def rows():
    pytest.importorskip("sklearn")
    return demo.run_demo(["adamw", "sgd"], steps=STEPS, seed=0, threads=1)


@pytest.mark.slow
def test_rows_have_the_documented_fields(rows):
    assert [r["optimizer"] for r in rows] == ["adamw", "sgd"]
    for r in rows:
        assert set(r) == set(demo.ROW_FIELDS)
        assert r["status"] == "ok" and r["diverged_at"] is None
        assert r["steps_done"] == STEPS
        assert 0.0 <= r["val_acc"] <= 1.0
        assert math.isfinite(r["val_loss"]) and math.isfinite(r["train_loss"])
        assert 0.0 < r["step_ms"] <= r["iter_ms"]
        assert r["seconds"] > 0
    assert rows[0]["state_bytes_per_param"] == 8.0  # AdamW: two float32 moments


@pytest.mark.slow
def test_adamw_learns_the_digits(rows):
    adamw, sgd = rows
    # 10 balanced classes: chance is 0.1 accuracy and ln(10) ~ 2.30 cross-entropy.
    assert adamw["val_acc"] > 0.85
    assert adamw["val_loss"] < 0.6
    # SGD at its defaults (lr 1e-3, no momentum) barely moves in 150 steps: the optimizers really differ.
    # (Both ran through the arena's loop, so with its warm-up and cosine decay.)
    assert sgd["val_acc"] < adamw["val_acc"] - 0.3


@pytest.mark.slow
def test_same_seed_same_result(rows):
    pytest.importorskip("sklearn")
    again = demo.run_demo(["adamw"], steps=STEPS, seed=0, threads=1)[0]
    assert again["val_loss"] == rows[0]["val_loss"]
    assert again["train_loss"] == rows[0]["train_loss"]


def test_the_demo_is_the_arena_workload():
    pytest.importorskip("sklearn")
    from optarena.arena.workloads import get_workload

    assert get_workload(demo.WORKLOAD).name == "digits-mlp"
    assert "digits" in demo.header(["adamw"], 10, 0, 1) and "adamw" in demo.header(["adamw"], 10, 0, 1)


@pytest.mark.slow
def test_run_demo_restores_threads_and_global_rng():
    pytest.importorskip("sklearn")
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    demo.run_demo(["sgd"], steps=3, threads=1 if threads > 1 else 2)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng)


def _build_with(make):
    """A stand-in for the arena's `build_optimizer(name, model, values)` (demo runs go through it)."""
    return lambda name, model, values: make(name, model.parameters())


@pytest.mark.slow
def test_diverging_loss_is_reported_not_raised(monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.setattr(optarena.arena.train, "build_optimizer",
                        _build_with(lambda name, params: optarena.create(name, params, lr=1e8)))  # fmt: skip
    rows = demo.run_demo(["sgd", "adamw"], steps=50, threads=1)
    for r in rows:
        assert r["status"] == "diverged"
        assert 1 <= r["diverged_at"] <= 50
        assert r["val_loss"] is None and r["val_acc"] is None
    assert "diverged at step" in demo.format_table(rows)


class _RefusesAtStep3(torch.optim.SGD):
    def step(self, closure=None):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 3:
            raise optarena.NonFiniteGradientError("a gradient holds inf or NaN")
        return super().step(closure)


@pytest.mark.slow
def test_nonfinite_gradient_error_marks_diverged(monkeypatch):
    pytest.importorskip("sklearn")
    refusing = _build_with(lambda name, params: _RefusesAtStep3(params, lr=1e-3))
    monkeypatch.setattr(optarena.arena.train, "build_optimizer", refusing)
    (row,) = demo.run_demo(["sgd"], steps=10, threads=1)
    assert row["status"] == "diverged" and row["diverged_at"] == 3 and row["steps_done"] == 2


def test_unknown_optimizer_fails_listing_valid_names(capsys):
    assert cli.main(["demo", "--optimizers", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown optimizer 'nope'" in err
    for name in optarena.available():
        assert name in err


def test_unknown_optimizer_in_run_demo_raises_value_error():
    with pytest.raises(ValueError, match="available: .*adamw"):
        demo.run_demo(["adamw", "nope"], steps=1)


def test_missing_scikit_learn_names_the_extra(monkeypatch, capsys):
    for module in ("sklearn", "sklearn.datasets", "sklearn.model_selection"):
        monkeypatch.setitem(sys.modules, module, None)  # a None entry makes importing it raise ImportError
    with pytest.raises(demo.MissingDependencyError, match=r"pip install 'optarena\[demo\]'"):
        demo.run_demo(["sgd"], steps=1)
    assert cli.main(["demo", "--optimizers", "sgd", "--steps", "1"]) == 2
    assert "pip install 'optarena[demo]'" in capsys.readouterr().err


def test_help_lists_demo(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    assert "demo" in capsys.readouterr().out


def test_demo_help_and_python_dash_m():
    out = subprocess.run(
        [sys.executable, "-m", "optarena", "demo", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in ("--optimizers", "--steps", "--seed", "--threads"):
        assert flag in out
    assert "--batch-size" not in out  # the workload fixes the batch


def test_no_command_prints_help_and_fails(capsys):
    assert cli.main([]) == 2
    assert "demo" in capsys.readouterr().err


def test_format_table_shows_every_optimizer():
    rows = [
        dict.fromkeys(demo.ROW_FIELDS) | dict(optimizer="adamw", status="ok", val_loss=0.1, val_acc=0.97,
                                               train_loss=0.02, step_ms=0.4, iter_ms=0.9, steps_done=5,
                                               state_bytes_per_param=8.0),
        dict.fromkeys(demo.ROW_FIELDS) | dict(optimizer="lion", status="diverged", diverged_at=7, steps_done=6,
                                               step_ms=0.3, iter_ms=0.8),
    ]
    table = demo.format_table(rows)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["optimizer", "val", "loss"]
    assert "97.00%" in table and "diverged at step 7" in table and "8.00" in table
    assert "optimizer.step() alone" in table


def test_matrix_method_runs_with_the_split():
    """Muon takes the MLP's hidden matrix and leaves the head and biases to AdamW (no ValueError)."""
    rows = demo.run_demo(["muon"], steps=30, threads=1)
    assert rows[0]["status"] == "ok" and math.isfinite(rows[0]["val_loss"])
