"""A noisy quadratic model (NQM): a 32x32 matrix parameter on a fixed ill-conditioned quadratic.

The noisy quadratic of Zhang et al. (2019, "Which algorithmic choices matter at which batch
sizes?") in matrix form. The parameter is a bare 32x32 `nn.Parameter` `w` (so matrix methods such
as Muon update it), initialized N(0, 1) from the seed. The curvature `h` (32x32, elementwise) is
log-spaced from 1e-3 to 1 (condition number 1e3) in a fixed permutation, the same for every seed.

Each batch is a noise draw c ~ N(0, sigma^2 / h) (elementwise, sigma = `SIGMA` = 0.2) from the
seeded data generator, and the training loss is 0.5 * sum(h * (w - c)^2): its gradient
h * (w - c) has expectation h * w (the true gradient) and covariance sigma^2 * h, i.e. gradient
noise proportional to the curvature, as for minibatch noise near a minimum. The noise floor of a
constant step size is visible against the progress on the flat directions, so step-size
schedules and averaging matter. Metric `loss` (lower is better) is the noise-free objective
0.5 * sum(h * w^2) (no normalization: at initialization it is about 74).
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ._common import evaluating, generators
from .base import Task, Workload

SIZE = 32
SIGMA = 0.2
H_MIN, H_MAX = 1e-3, 1.0


@functools.lru_cache(maxsize=None)
def curvature() -> torch.Tensor:
    """The fixed curvature: logspace(1e-3, 1) over the 32*32 entries, in a fixed shuffled order."""
    values = torch.logspace(math.log10(H_MIN), math.log10(H_MAX), SIZE * SIZE, dtype=torch.float64)
    perm = torch.randperm(SIZE * SIZE, generator=torch.Generator().manual_seed(0))
    return values[perm].reshape(SIZE, SIZE).to(torch.float32)


class NoisyQuadraticModel(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = nn.Parameter(w)
        self.register_buffer("h", curvature().clone())

    def objective(self) -> torch.Tensor:
        """The noise-free objective 0.5 * sum(h * w^2)."""
        return 0.5 * (self.h * self.w.square()).sum()


class NoisyQuadraticTask(Task):
    def __init__(self, seed: int):
        init, self.generator = generators(seed)
        self.model = NoisyQuadraticModel(torch.randn(SIZE, SIZE, generator=init))

    def next_batch(self) -> torch.Tensor:
        noise = torch.randn(SIZE, SIZE, generator=self.generator)
        return noise * (SIGMA / self.model.h.sqrt())

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.model.h * (self.model.w - batch).square()).sum()

    def evaluate(self) -> dict[str, float]:
        with evaluating(self.model):
            return {"loss": float(self.model.objective())}


WORKLOAD = Workload(
    name="noisy-quadratic",
    description=f"noisy quadratic, 32x32 matrix parameter, curvature 1e-3..1, gradient noise sigma={SIGMA}",
    metric="loss",
    higher_is_better=False,
    steps={"quick": 200, "standard": 2000},
    build=NoisyQuadraticTask,
)
