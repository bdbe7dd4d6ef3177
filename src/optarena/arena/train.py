"""One training run: a workload, an optimizer configuration, a seed and a step budget.

The learning rate follows a linear warm-up over the first 5% of steps, then a cosine decay that
reaches zero at the last step (every param group scaled alike, so a Muon/AdamW split keeps its lr
ratio). The score is the workload's metric at the END of training: comparisons at intermediate
checkpoints flip once the lr decays (Wen et al. 2025). Evaluations every `steps // evals` steps
are untimed; the per-step times cover forward, backward and the optimizer step.
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Mapping

import torch

from ..engine import NonFiniteGradientError
from ..factory import create_optimizer, hidden_matrices
from ..registry import card
from .analysis import effective_rank, excess_kurtosis
from .workloads.base import Workload

WARMUP_FRACTION = 0.05


def lr_factor(step: int, steps: int, warmup_fraction: float = WARMUP_FRACTION) -> float:
    """The lr multiplier before update `step` (0-based) of `steps`: linear warm-up, cosine to zero."""
    warmup = max(1, round(warmup_fraction * steps))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup + 1) / max(1, steps - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def build_optimizer(name: str, model: torch.nn.Module, values: Mapping[str, float]) -> torch.optim.Optimizer:
    """`create_optimizer(model, name, ...)` at the searched `values` and the card's fixed kwargs."""
    return create_optimizer(model, name, **card(name).kwargs(values))


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer's state (torch's 0-d `step` tensors included)."""
    return sum(t.nbytes for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor))


def state_bytes_per_param(optimizer: torch.optim.Optimizer) -> float:
    """`state_bytes` per trainable parameter element."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return state_bytes(optimizer) / max(1, sum(p.numel() for p in params))


def solution_properties(model: torch.nn.Module, activations: list[torch.Tensor], metrics: Mapping[str, float]) -> dict:
    """Effective rank of the hidden weight matrices, excess kurtosis of hidden activations (means
    over matrices / layers), and the rare-class error where the workload reports one."""
    is_hidden = hidden_matrices(model)
    ranks = [effective_rank(p.detach()) for n, p in model.named_parameters() if is_hidden(n, p)]
    kurt = [excess_kurtosis(a) for a in activations]
    kurt = [k for k in kurt if math.isfinite(k)]
    return {
        "effective_rank": statistics.fmean(ranks) if ranks else None,
        "activation_kurtosis": statistics.fmean(kurt) if kurt else None,
        "tail_error": metrics.get("tail_error"),
    }


def train_by_trainer(workload: Workload, task: Any, method: Any, values: Mapping[str, float], *, seed: int,
                     steps: int) -> dict[str, Any]:
    """A method that is not an optimizer: its trainer trains `task` its own way (`steps` is its
    iteration budget); the record has the final evaluation only, and `step_ms` is its wall time
    over `steps`, so ms/step x steps is its training time as for the optimizers."""
    t0 = time.perf_counter()
    try:
        method.trainer(task, method.kwargs(values), steps=steps, seed=seed)
    except (ArithmeticError, RuntimeError) as err:  # numerical breakdown: diverged, as for an optimizer
        return {"seed": seed, "status": "diverged", "final": None, "metrics": {}, "curve": [], "train_loss": [],
                "steps_done": 0, "step_ms": None, "opt_step_ms": None, "state_bytes_per_param": None,
                "properties": {}, "error": f"{type(err).__name__}: {err}"}  # fmt: skip
    seconds = time.perf_counter() - t0
    metrics = task.evaluate()
    final = metrics.get(workload.metric)
    status = "ok" if final is not None and math.isfinite(final) else "diverged"
    return {
        "seed": seed, "status": status, "final": final if status == "ok" else None,
        "metrics": {k: float(v) for k, v in metrics.items()}, "curve": [[steps, float(final)]] if status == "ok" else [],
        "train_loss": [], "steps_done": steps, "step_ms": 1e3 * seconds / steps, "opt_step_ms": None,
        "state_bytes_per_param": None,
        "properties": solution_properties(task.model, task.activations(), metrics) if status == "ok" else {},
    }  # fmt: skip


def train(
    workload: Workload,
    optimizer: str,
    values: Mapping[str, float],
    *,
    seed: int,
    steps: int,
    threads: int = 1,
    evals: int | None = None,
) -> dict[str, Any]:
    """Train and evaluate; returns the run's record (see `results` for the schema of a seed entry).

    A non-finite loss or a non-finite gradient (the engine's default policy raises) ends the run
    as `"diverged"` with `final` None; the curve so far is kept.
    """
    if steps < 1:
        raise ValueError(f"steps must be an integer in [1, inf), got {steps}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    task = workload.build(seed)
    method = card(optimizer)
    if method.trainer is not None:
        return train_by_trainer(workload, task, method, values, seed=seed, steps=steps)
    model = task.model
    model.train()
    opt = build_optimizer(optimizer, model, values)
    create_graph = card(optimizer).needs_create_graph  # second-order methods differentiate the gradient
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, steps))
    evals = evals or workload.evals
    every = max(1, steps // evals)
    curve: list[list[float]] = []
    train_loss: list[list[float]] = []
    step_s: list[float] = []
    opt_s: list[float] = []
    window: list[float] = []
    metrics: dict[str, float] = {}
    status = "ok"
    for step in range(1, steps + 1):
        batch = task.next_batch()
        t0 = time.perf_counter()
        loss = task.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward(create_graph=create_graph)
        t1 = time.perf_counter()
        value = loss.item()
        if not math.isfinite(value):
            status = "diverged"
            break
        try:
            opt.step()
        except NonFiniteGradientError:
            status = "diverged"
            break
        t2 = time.perf_counter()
        schedule.step()
        step_s.append(t2 - t0)
        opt_s.append(t2 - t1)
        window.append(value)
        if step % every == 0 or step == steps:
            metrics = task.evaluate()
            curve.append([step, float(metrics[workload.metric])])
            train_loss.append([step, statistics.fmean(window)])
            window = []
    if status != "ok":
        metrics = {}  # else: the evaluation after the last step, in the curve as well
    final = metrics.get(workload.metric)
    if final is not None and not math.isfinite(final):
        status, final = "diverged", None
    return {
        "seed": seed,
        "status": status,
        "final": final,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "curve": curve,
        "train_loss": train_loss,
        "steps_done": len(step_s),
        "step_ms": 1e3 * statistics.median(step_s) if step_s else None,
        "opt_step_ms": 1e3 * statistics.median(opt_s) if opt_s else None,
        "state_bytes_per_param": state_bytes_per_param(opt),
        "properties": solution_properties(model, task.activations(), metrics) if status == "ok" else {},
    }
