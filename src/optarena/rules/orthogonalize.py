"""Approximate orthogonalization of a matrix by a quintic Newton-Schulz iteration (Muon's "NS5").

For `G = U S V^T`, the iteration maps each singular value `s` of the normalized input through the
odd polynomial `f(s) = a s + b s^3 + c s^5` `steps` times, leaving `U` and `V` alone, so the result
is `U f^steps(S / ||G||_F) V^T`. The coefficients (3.4445, -4.7750, 2.0315) trade exactness for
speed: `f'(0) = a` is large, so small singular values grow fast, and instead of converging to 1
the values end up oscillating in a band around it (about 0.7 to 1.2, see tests/test_orthogonalize.py).
"""
from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def newton_schulz(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """`U V^T` of a 2-D `g = U S V^T`, approximately, computed in `dtype` (returned in `dtype`).

    The input is cast to `dtype`, divided by its Frobenius norm + 1e-7 (so every singular value is
    at most 1), and iterated `steps` times with `A = X X^T; X = a X + (b A + (c A) A) X`; a tall
    input (rows > cols) is transposed first so that `A` is the smaller Gram matrix.
    """
    if g.dim() != 2:
        raise ValueError(f"newton_schulz expects a matrix, got a tensor of shape {tuple(g.shape)}")
    a, b, c = NS_COEFFICIENTS
    # contiguous: a strided input gives the same matmuls, hence the same bits, as its dense copy
    x = g.to(dtype).contiguous()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.mT
    x = x / (x.norm() + 1e-7)
    # bf16 (the reference's dtype): the reference's own roundings, `b*A` and `a*X` rounded to bf16
    # before the sums. Other dtypes: each sum `y + alpha*x` as one fused multiply-add (torch's
    # add-with-alpha kernel), which a compiled kernel with contracted floating point reproduces
    # bit for bit (`a*X + Y` it may contract or not).
    fma = dtype != torch.bfloat16
    for _ in range(steps):
        gram = x @ x.mT
        cube = (c * gram) @ gram  # scaled before the product, as the reference
        poly = torch.add(cube, gram, alpha=b) if fma else b * gram + cube
        x = torch.add(poly @ x, x, alpha=a) if fma else a * x + poly @ x
    return x.mT if tall else x
