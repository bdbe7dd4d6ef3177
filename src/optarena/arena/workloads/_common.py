"""Small helpers shared by the workloads: seeded generators, an epoch sampler, eval mode, init.

Nothing here touches the global RNG: models are constructed on the meta device (so their default
`reset_parameters` draws nothing) and then initialized from a local `torch.Generator`.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)

_MASK = (1 << 63) - 1


def generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """Two independent local generators derived from `seed`: (initialization, data order)."""
    master = torch.Generator().manual_seed(int(seed) & _MASK)
    init_seed, data_seed = (int(s) for s in torch.randint(0, 2**62, (2,), generator=master))
    return torch.Generator().manual_seed(init_seed), torch.Generator().manual_seed(data_seed)


def on_meta(factory: Callable[[], M]) -> M:
    """`factory()` built on the meta device and materialized (uninitialized) on the CPU.

    The caller must initialize every parameter and buffer afterwards.
    """
    with torch.device("meta"):
        module = factory()
    return module.to_empty(device="cpu")


def torch_default_init_(module: nn.Module, generator: torch.Generator) -> None:
    """PyTorch's default Linear/Conv init (U(+-1/sqrt(fan_in)) for weight and bias), seeded."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            fan_in = m.weight[0].numel()
            bound = 1.0 / math.sqrt(fan_in)
            with torch.no_grad():
                m.weight.uniform_(-bound, bound, generator=generator)
                if m.bias is not None:
                    m.bias.uniform_(-bound, bound, generator=generator)


class EpochSampler:
    """An infinite stream of index batches over `n` items, reshuffled every epoch from `generator`.

    Every item is seen exactly once per epoch; a batch that crosses an epoch boundary takes the
    rest of the old permutation and the start of the new one.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator):
        if n <= 0 or batch_size <= 0:
            raise ValueError(f"need n > 0 and batch_size > 0, got {n}, {batch_size}")
        self.n, self.batch_size, self.generator = n, batch_size, generator
        self.epoch = 0
        self._perm = torch.randperm(n, generator=generator)
        self._pos = 0

    def next(self) -> torch.Tensor:
        parts, need = [], self.batch_size
        while need:
            if self._pos == self.n:
                self._perm, self._pos, self.epoch = torch.randperm(self.n, generator=self.generator), 0, self.epoch + 1
            take = min(need, self.n - self._pos)
            parts.append(self._perm[self._pos:self._pos + take])
            self._pos += take
            need -= take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """`torch.no_grad()` and `model.eval()` for the block; the previous train/eval mode after it."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
