"""State storage: the one place where optimizer state is allocated, read and written back.

Rules never see how state is stored. At a parameter's first step the engine hands the rule's
initial state to `encode`; on every step it `read`s a working tensor (which the rule updates in
place) and `write`s it back. A storage that keeps state in the working precision returns the
stored tensor itself from `read`, so `write` costs nothing; a compressed storage (bf16 here,
8-bit block-wise later) decodes on read and re-encodes on write.
"""
from __future__ import annotations

import torch

PRECISIONS = (None, "fp32", "bf16")


class StateStorage:
    """Keeps each state tensor in one dtype (`None`: the parameter's own, as torch.optim does).

    The working dtype is the wider of the stored and the parameter dtype, so bf16 state of an
    fp32 parameter is updated in fp32 and rounded to nearest when written back.
    """

    def __init__(self, precision: str | None = None):
        if precision not in PRECISIONS:
            raise ValueError(f"state_precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.dtype = {None: None, "fp32": torch.float32, "bf16": torch.bfloat16}[precision]

    def encode(self, value: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """The stored form of a freshly initialized state tensor."""
        dtype = self.dtype or param.dtype
        if not value.is_floating_point():
            return value
        return value.to(dtype=dtype, memory_format=torch.preserve_format)

    @staticmethod
    def read(stored: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
        """The working tensor the rule updates in place."""
        if not stored.is_floating_point():
            return stored
        work = torch.promote_types(stored.dtype, param.dtype)
        return stored if stored.dtype == work else stored.to(work)

    @staticmethod
    def write(stored: torch.Tensor, work: torch.Tensor) -> None:
        """Persist the updated working tensor."""
        if work is not stored:
            stored.copy_(work)

    def is_passthrough(self, stored: torch.Tensor, param: torch.Tensor) -> bool:
        """Whether `read` returns the stored tensor itself (kernels may then update it directly)."""
        return not stored.is_floating_point() or torch.promote_types(stored.dtype, param.dtype) == stored.dtype

    def __repr__(self) -> str:
        return f"StateStorage({self.precision!r})"
