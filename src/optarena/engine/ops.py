"""Scalar-weighted tensor ops that accept a Python float or a 0-d tensor as the scalar.

With a float (the eager path) they call torch's own fused ops (`lerp_`, `addcmul_`, ...), so an
eager rule matches torch.optim's kernels bit for bit; with a 0-d tensor (the compiled path,
where scalars are tensors so a new lr never recompiles) they fall back to plain arithmetic,
which inductor fuses. Rules use these instead of `alpha=`/`value=` arguments.
"""
from __future__ import annotations

import torch

Scalar = float | torch.Tensor


def add_(x: torch.Tensor, y: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """x += alpha * y"""
    return x.add_(y, alpha=alpha) if isinstance(alpha, float) else x.add_(y * alpha)


def lerp_(x: torch.Tensor, y: torch.Tensor, weight: Scalar) -> torch.Tensor:
    """x += weight * (y - x)"""
    return x.lerp_(y, weight) if isinstance(weight, float) else x.add_((y - x) * weight)


def addcmul_(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, value: Scalar) -> torch.Tensor:
    """x += value * a * b"""
    return x.addcmul_(a, b, value=value) if isinstance(value, float) else x.add_(a * value * b)


def addcdiv_(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, value: Scalar) -> torch.Tensor:
    """x += value * a / b"""
    return x.addcdiv_(a, b, value=value) if isinstance(value, float) else x.add_(a / b * value)
