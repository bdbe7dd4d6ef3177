"""What a workload is: a model, seeded data, a training loss and an evaluation metric.

A `Workload` is a static description (name, metric, step budgets per suite) plus `build(seed)`,
which returns a fresh `Task`: the model initialized from `seed` and a training stream whose
order is fixed by `seed`. Everything a trainer needs goes through the `Task`; the arena never
looks inside a workload's data.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable

import torch


class DatasetMissingError(RuntimeError):
    """A workload's dataset is not installed; the message says how to install it."""


class Task(abc.ABC):
    """One built instance of a workload: a model and its seeded data."""

    model: torch.nn.Module

    @abc.abstractmethod
    def next_batch(self) -> Any:
        """The next training batch of the seeded stream (infinite; epochs reshuffle with the seed)."""

    @abc.abstractmethod
    def loss(self, batch: Any) -> torch.Tensor:
        """Scalar training loss of the model on `batch` (with the graph, ready for backward)."""

    @abc.abstractmethod
    def evaluate(self) -> dict[str, float]:
        """Validation metrics under `torch.no_grad()` and `model.eval()` (restoring train mode).

        Must contain the workload's `metric`; may add more (e.g. `val_loss`, `tail_error`).
        """

    def activations(self) -> list[torch.Tensor]:
        """Hidden-layer activations on a fixed validation batch (for the excess-kurtosis property).

        Empty when the workload has no hidden layers to speak of.
        """
        return []


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    metric: str  # key in Task.evaluate()
    higher_is_better: bool
    steps: dict[str, int]  # step budget per suite: {"quick": ..., "standard": ...}
    build: Callable[[int], Task]  # seed -> fresh Task
    evals: int = 10  # evaluations per run (every steps // evals steps, and at the end)
    optimum: Callable[[], dict[str, Any]] | None = None
    """The metric's certified global optimum, where one is known: `{"value", "lower_bound", "solver",
    ...}` (relu-global); the results then give every optimizer's distance to it."""

    def budget(self, suite: str) -> int:
        if suite not in self.steps:
            raise ValueError(f"suite must be one of {sorted(self.steps)}, got {suite!r}")
        return self.steps[suite]
