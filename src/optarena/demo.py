"""A small real training run: every registered optimizer, at its documented defaults, on one task.

The task is the arena's `digits-mlp` workload (scikit-learn's bundled handwritten digits, no
download; see `arena/workloads/digits_mlp.py`) and each run is the arena's own training loop,
`arena.train.train`, with no searched values: the method's defaults (plus the fixed kwargs of its
card) under the arena's lr schedule (linear warm-up, cosine decay to zero). Every optimizer starts
from the same initial weights and sees the same batches in the same order (both from the seed), so
the rows differ only by the optimizer.

`run_demo` does the training and returns one dict per optimizer; `format_table` renders them.
"""
from __future__ import annotations

import time
from typing import Any, Iterable

import torch

from .registry import available, card, get

WORKLOAD = "digits-mlp"
DEFAULT_STEPS = 200  # the digits workload's quick budget
DEFAULT_SEED = 0
DEFAULT_THREADS = 1  # as the arena's runs: the model is tiny, more threads mostly wait on each other

INSTALL_HINT = "pip install 'optarena[demo]'"

ROW_FIELDS = (
    "optimizer",
    "status",
    "diverged_at",
    "steps_done",
    "val_loss",
    "val_acc",
    "train_loss",
    "step_ms",
    "iter_ms",
    "state_bytes_per_param",
    "seconds",
)
"""Keys of every row `run_demo` returns.

* `status`: `"ok"` or `"diverged"` (non-finite loss, a non-finite gradient refused by the
  optimizer, or a non-finite validation loss after the last step); `diverged_at` is the 1-based
  step where that happened (None when ok).
* `val_loss`, `val_acc`: cross-entropy and accuracy on the validation split after training
  (None when diverged).
* `train_loss`: mean training loss over the last evaluation interval (the last tenth of the
  steps; None when diverged).
* `step_ms`: median wall-clock milliseconds of `optimizer.step()` alone; `iter_ms`: median of a
  whole iteration (forward + zero_grad + backward + step). None if no step completed.
* `state_bytes_per_param`: bytes of optimizer state per trained parameter element.
* `seconds`: wall-clock time of the whole run for this optimizer, evaluations included.
"""


class MissingDependencyError(ImportError):
    """The demo's optional dependency (scikit-learn) is not installed."""


def resolve_optimizers(optimizers: Iterable[str] | None) -> list[str]:
    """Registered names to run: all of `available()` that the arena can run (those with a card)
    when None, else the given ones, checked.

    Unknown names, and names without a card, raise `ValueError` listing the valid ones; names are
    lower-cased and duplicates dropped, keeping the first occurrence.
    """
    if optimizers is None:
        return [name for name in available() if _has_card(name)]
    if isinstance(optimizers, str):
        optimizers = [optimizers]
    names: list[str] = []
    for name in optimizers:
        get(name)  # raises ValueError listing the valid names
        card(name)  # raises ValueError: the arena's loop cannot run a method without a card
        if name.lower() not in names:
            names.append(name.lower())
    if not names:
        raise ValueError(f"no optimizer given; available: {', '.join(available())}")
    return names


def _has_card(name: str) -> bool:
    try:
        card(name)
    except ValueError:
        return False
    return True


def _require_scikit_learn() -> None:
    try:
        import sklearn.datasets  # noqa: F401
        import sklearn.model_selection  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(f"the demo needs scikit-learn, which is not installed: {INSTALL_HINT}") from exc


def header(names: list[str], steps: int, seed: int, threads: int) -> str:
    """The line printed before the run: the task, the budget and the optimizers."""
    from .arena.workloads import get_workload

    return (f"{get_workload(WORKLOAD).description}; {steps} steps, seed {seed}, {threads} thread(s); each optimizer "
            f"at its documented defaults, warm-up then cosine lr decay: {', '.join(names)}")  # fmt: skip


def _row(name: str, record: dict[str, Any], steps: int, seconds: float) -> dict[str, Any]:
    """One `ROW_FIELDS` row from `arena.train.train`'s record."""
    ok = record["status"] == "ok"
    metrics = record["metrics"]
    return {
        "optimizer": name,
        "status": record["status"],
        "diverged_at": None if ok else min(record["steps_done"] + 1, steps),
        "steps_done": record["steps_done"],
        "val_loss": metrics.get("val_loss") if ok else None,
        "val_acc": record["final"] if ok else None,
        "train_loss": record["train_loss"][-1][1] if ok and record["train_loss"] else None,
        "step_ms": record["opt_step_ms"],
        "iter_ms": record["step_ms"],
        "state_bytes_per_param": record["state_bytes_per_param"],
        "seconds": seconds,
    }


def run_demo(
    optimizers: Iterable[str] | None = None,
    steps: int = DEFAULT_STEPS,
    seed: int = DEFAULT_SEED,
    threads: int | None = DEFAULT_THREADS,
) -> list[dict[str, Any]]:
    """Train the `digits-mlp` workload with each optimizer (all registered ones when None) at its
    defaults, through the arena's training loop.

    Same data split, initial weights and batch order for every optimizer (the split is the
    workload's fixed one; weights and order from `seed`). `threads` is the torch thread count of
    the runs (None: the current one); the thread count and the global RNG are restored afterwards.
    Returns one row per optimizer, in order, with the keys `ROW_FIELDS`.
    Raises `ValueError` for unknown optimizer names or bad sizes, and `MissingDependencyError`
    (an `ImportError`) when scikit-learn is not installed.
    """
    from .arena.train import train
    from .arena.workloads import get_workload

    names = resolve_optimizers(optimizers)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    _require_scikit_learn()
    workload = get_workload(WORKLOAD)
    previous_threads = torch.get_num_threads()
    rows = []
    try:
        with torch.random.fork_rng(devices=[]):  # train seeds the global RNG
            for name in names:
                start = time.perf_counter()
                record = train(workload, name, {}, seed=seed, steps=steps, threads=threads or previous_threads)
                rows.append(_row(name, record, steps, time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous_threads)
    return rows


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of `run_demo` rows, with a legend for the loss, timing and state columns."""
    header_ = ("optimizer", "val loss", "val acc", "train loss", "step ms", "iter ms", "state B/param")
    body = []
    for r in rows:
        if r["status"] == "diverged":
            cells = (r["optimizer"], f"diverged at step {r['diverged_at']}", "-", "-")
        else:
            cells = (r["optimizer"], _num(r["val_loss"], ".4f"), _num(r["val_acc"], ".2%"),
                     _num(r["train_loss"], ".4f"))  # fmt: skip
        body.append(cells + (_num(r["step_ms"], ".3f"), _num(r["iter_ms"], ".3f"),
                             _num(r.get("state_bytes_per_param"), ".2f")))  # fmt: skip
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header_)]

    def line(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

    out = [line(header_), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    out.append("val = validation split after the last step; train loss = mean over the last tenth of the steps.")
    out.append(
        "Median wall-clock ms per step: 'step ms' = optimizer.step() alone, "
        "'iter ms' = forward + zero_grad + backward + step. State: optimizer state bytes per parameter."
    )
    return "\n".join(out)
