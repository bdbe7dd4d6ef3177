"""A small real training run: every registered optimizer, at its documented defaults, on one task.

The task is scikit-learn's bundled handwritten-digits set (1797 8x8 images, no download):
features standardized on the training split, a seeded stratified 80/20 train/validation split,
and an MLP 64 -> 128 -> 10 with ReLU trained with cross-entropy. Every optimizer starts from the
same initial weights and sees the same batches in the same order, so the rows differ only by
the optimizer.

`run_demo` does the training and returns one dict per optimizer; `format_table` renders them.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from typing import Any, Iterable

import torch
from torch import nn

from .engine import NonFiniteGradientError
from .factory import create_optimizer
from .registry import available, create, get

DEFAULT_STEPS = 600
DEFAULT_BATCH_SIZE = 64
DEFAULT_SEED = 0
DEFAULT_THREADS = 2
VALIDATION_FRACTION = 0.2
HIDDEN = 128

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
    "seconds",
)
"""Keys of every row `run_demo` returns.

* `status`: `"ok"` or `"diverged"` (non-finite loss, or a non-finite gradient refused by the
  optimizer); `diverged_at` is the 1-based step where that happened (None when ok).
* `val_loss`, `val_acc`: cross-entropy and accuracy on the validation split after training
  (None when diverged).
* `train_loss`: loss of the last training batch (None when diverged).
* `step_ms`: median wall-clock milliseconds of `optimizer.step()` alone; `iter_ms`: median of a
  whole iteration (zero_grad + forward + backward + step). None if no step completed.
* `seconds`: wall-clock time of the whole run for this optimizer, evaluation included.
"""


class MissingDependencyError(ImportError):
    """The demo's optional dependency (scikit-learn) is not installed."""


def resolve_optimizers(optimizers: Iterable[str] | None) -> list[str]:
    """Registered names to run: all of `available()` when None, else the given ones, checked.

    Unknown names raise `ValueError` (from `optarena.get`) listing the valid ones; names are
    lower-cased and duplicates dropped, keeping the first occurrence.
    """
    if optimizers is None:
        return available()
    if isinstance(optimizers, str):
        optimizers = [optimizers]
    names: list[str] = []
    for name in optimizers:
        get(name)  # raises ValueError listing the valid names
        if name.lower() not in names:
            names.append(name.lower())
    if not names:
        raise ValueError(f"no optimizer given; available: {', '.join(available())}")
    return names


def load_data(seed: int = DEFAULT_SEED) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val): digits, stratified seeded split, standardized on train."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise MissingDependencyError(
            f"the demo needs scikit-learn, which is not installed: {INSTALL_HINT}"
        ) from exc
    digits = load_digits()
    x_tr, x_va, y_tr, y_va = train_test_split(
        digits.data, digits.target, test_size=VALIDATION_FRACTION, stratify=digits.target, random_state=seed
    )
    x_tr = torch.as_tensor(x_tr, dtype=torch.float32)
    x_va = torch.as_tensor(x_va, dtype=torch.float32)
    mean = x_tr.mean(0)
    std = x_tr.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # some border pixels are constant
    return (
        (x_tr - mean) / std,
        torch.as_tensor(y_tr, dtype=torch.long),
        (x_va - mean) / std,
        torch.as_tensor(y_va, dtype=torch.long),
    )


def build_model(seed: int = DEFAULT_SEED, n_in: int = 64, n_out: int = 10) -> nn.Module:
    """The MLP n_in -> 128 -> n_out (ReLU), initialized from `seed` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(n_in, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, n_out))


def batch_order(n: int, steps: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Index batches for `steps` steps: seeded reshuffles each epoch, incomplete last batch dropped."""
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} exceeds the {n} training examples")
    gen = torch.Generator().manual_seed(seed)
    per_epoch = n // batch_size
    batches: list[torch.Tensor] = []
    while len(batches) < steps:
        perm = torch.randperm(n, generator=gen)
        batches.extend(perm[i * batch_size : (i + 1) * batch_size] for i in range(per_epoch))
    return batches[:steps]


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(cross-entropy, accuracy) of `model` on (x, y)."""
    model.eval()
    logits = model(x)
    model.train()
    loss = nn.functional.cross_entropy(logits, y).item()
    acc = (logits.argmax(1) == y).float().mean().item()
    return loss, acc


def build_optimizer(name: str, model: nn.Module) -> torch.optim.Optimizer:
    """`name` at its defaults; a matrix-only method (Muon) gets the hidden matrices and leaves the
    rest to AdamW, as `create_optimizer` splits them."""
    rule = getattr(get(name), "rule", None)
    if rule is not None and rule.matrix_only:
        return create_optimizer(model, name)
    return create(name, model.parameters())


def train_one(
    name: str,
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    batches: list[torch.Tensor],
) -> dict[str, Any]:
    """Train `model` in place with optimizer `name` at its defaults over `batches`; one result row."""
    x_tr, y_tr, x_va, y_va = data
    start = time.perf_counter()
    opt = build_optimizer(name, model)
    step_s: list[float] = []
    iter_s: list[float] = []
    train_loss = math.nan
    diverged_at = None
    for i, idx in enumerate(batches, start=1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx])
        train_loss = loss.item()
        if not math.isfinite(train_loss):
            diverged_at = i
            break
        loss.backward()
        t1 = time.perf_counter()
        try:
            opt.step()
        except NonFiniteGradientError:
            diverged_at = i
            break
        t2 = time.perf_counter()
        step_s.append(t2 - t1)
        iter_s.append(t2 - t0)

    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS)
    row.update(
        optimizer=name,
        steps_done=len(step_s),
        step_ms=1e3 * statistics.median(step_s) if step_s else None,
        iter_ms=1e3 * statistics.median(iter_s) if iter_s else None,
    )
    if diverged_at is None:
        val_loss, val_acc = evaluate(model, x_va, y_va)
        if not math.isfinite(val_loss):  # the weights blew up at the very last step
            diverged_at = len(batches)
    if diverged_at is None:
        row.update(status="ok", val_loss=val_loss, val_acc=val_acc, train_loss=train_loss)
    else:
        row.update(status="diverged", diverged_at=diverged_at)
    row["seconds"] = time.perf_counter() - start
    return row


def run_demo(
    optimizers: Iterable[str] | None = None,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    threads: int | None = DEFAULT_THREADS,
) -> list[dict[str, Any]]:
    """Train the digits MLP with each optimizer (all registered ones when None) at its defaults.

    Same data split, initial weights and batch order for every optimizer (all from `seed`).
    `threads` fixes `torch.set_num_threads` for the run (restored afterwards; None leaves it).
    Returns one row per optimizer, in order, with the keys `ROW_FIELDS`.
    Raises `ValueError` for unknown optimizer names or bad sizes, and `MissingDependencyError`
    (an `ImportError`) when scikit-learn is not installed.
    """
    names = resolve_optimizers(optimizers)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    data = load_data(seed)
    batches = batch_order(len(data[0]), steps, batch_size, seed)
    initial = build_model(seed, n_in=data[0].shape[1], n_out=int(data[1].max()) + 1)
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return [train_one(name, copy.deepcopy(initial), data, batches) for name in names]
    finally:
        torch.set_num_threads(previous_threads)


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of `run_demo` rows, with a legend for the timing columns."""
    header = ("optimizer", "val loss", "val acc", "train loss", "step ms", "iter ms")
    body = []
    for r in rows:
        if r["status"] == "diverged":
            cells = (r["optimizer"], f"diverged at step {r['diverged_at']}", "-", "-")
        else:
            cells = (r["optimizer"], _num(r["val_loss"], ".4f"), _num(r["val_acc"], ".2%"), _num(r["train_loss"], ".4f"))
        body.append(cells + (_num(r["step_ms"], ".3f"), _num(r["iter_ms"], ".3f")))
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells):
        first = cells[0].ljust(widths[0])
        return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(b) for b in body]
    out.append("val = validation split after the last step; train loss = last training batch.")
    out.append(
        "Median wall-clock ms per step: 'step ms' = optimizer.step() alone, "
        "'iter ms' = zero_grad + forward + backward + step."
    )
    return "\n".join(out)
