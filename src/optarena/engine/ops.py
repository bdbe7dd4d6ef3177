"""Scalar-weighted tensor ops that accept a Python float or a 0-d tensor as the scalar.

With a float (the eager path) and operands of one dtype they call torch's own fused ops
(`lerp_`, `addcmul_`, ...), so an eager rule matches torch.optim's kernels bit for bit; with a
0-d tensor (the compiled path, where scalars are tensors so a new lr never recompiles), inside a
user's compiled step (where floats are symbolic) or with mixed dtypes (bf16 parameters with fp32
state) they fall back to plain arithmetic, computed in the wider dtype and rounded once into `x`.
Rules use these instead of `alpha=`/`value=` arguments.

`decomposable` prepares a matrix for a decomposition (SVD, eigh, QR) that must propagate NaN
instead of raising, as element-wise ops do; Conda, GaLore, Fira and SOAP share it.
"""
from __future__ import annotations

import torch

Scalar = float | torch.Tensor


def _native(scalar: Scalar, x: torch.Tensor, *others: torch.Tensor) -> bool:
    # Traced in a user's compiled step, floats are symbolic: an op's `alpha=`/`weight` argument
    # would specialize them (a recompilation per new lr), arithmetic does not.
    return isinstance(scalar, float) and all(t.dtype == x.dtype for t in others) and not torch.compiler.is_compiling()


def add_(x: torch.Tensor, y: torch.Tensor, alpha: Scalar) -> torch.Tensor:
    """x += alpha * y"""
    return x.add_(y, alpha=alpha) if _native(alpha, x, y) else x.add_(y * alpha)


def lerp_(x: torch.Tensor, y: torch.Tensor, weight: Scalar) -> torch.Tensor:
    """x += weight * (y - x)"""
    return x.lerp_(y, weight) if _native(weight, x, y) else x.add_((y - x) * weight)


def addcmul_(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, value: Scalar) -> torch.Tensor:
    """x += value * a * b"""
    return x.addcmul_(a, b, value=value) if _native(value, x, a, b) else x.add_(a * value * b)


def addcdiv_(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, value: Scalar) -> torch.Tensor:
    """x += value * a / b"""
    return x.addcdiv_(a, b, value=value) if _native(value, x, a, b) else x.add_(a / b * value)


def decomposable(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(x with its non-finite entries zeroed, poison)`, `poison` a 0-d tensor: 0, or NaN when `x`
    held inf/NaN. A decomposition (SVD, eigh, QR) of a non-finite matrix raises instead of
    propagating; adding `poison` to what is computed from the zeroed matrix propagates NaN the
    way element-wise math does (`nonfinite="propagate"`, an overflowing outer product), without
    a host sync."""
    finite = torch.isfinite(x)
    poison = torch.where(finite.all(), 0.0, float("nan")).to(x.dtype)
    return torch.where(finite, x, torch.zeros((), dtype=x.dtype, device=x.device)), poison
