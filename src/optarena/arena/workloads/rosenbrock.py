"""Rosenbrock's banana function in 2-D: a deterministic, ill-conditioned curved valley.

f(x) = (1 - x0)^2 + 100 (x1 - x0^2)^2, started at the classic hard point (-2, 2); the minimum
is f(1, 1) = 0. No data (`next_batch` returns None) and no randomness: the seed is ignored, so
every run of an optimizer is identical and differences come from the optimizer alone. It tests
how a method follows a narrow curved valley. Metric `f` (lower is better) is the loss itself.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import evaluating
from .base import Task, Workload

START = (-2.0, 2.0)


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2


class RosenbrockModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.x = nn.Parameter(torch.tensor(START))

    def forward(self) -> torch.Tensor:
        return rosenbrock(self.x)


class RosenbrockTask(Task):
    def __init__(self, seed: int):
        self.seed = seed  # unused: the problem is deterministic
        self.model = RosenbrockModel()

    def next_batch(self) -> None:
        return None

    def loss(self, batch: None) -> torch.Tensor:
        return self.model()

    def evaluate(self) -> dict[str, float]:
        with evaluating(self.model):
            return {"f": float(self.model())}


WORKLOAD = Workload(
    name="rosenbrock",
    description="2-D Rosenbrock function from (-2, 2); deterministic curved valley, minimum f(1, 1) = 0",
    metric="f",
    higher_is_better=False,
    steps={"quick": 1000, "standard": 5000},
    build=RosenbrockTask,
)
