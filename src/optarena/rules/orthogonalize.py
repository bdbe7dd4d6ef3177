"""Approximate orthogonalization of a matrix by a quintic Newton-Schulz iteration (Muon's "NS5").

For `G = U S V^T`, the iteration maps each singular value `s` of the normalized input through the
odd polynomial `f(s) = a s + b s^3 + c s^5` `steps` times, leaving `U` and `V` alone, so the result
is `U f^steps(S / ||G||_F) V^T`. The coefficients (3.4445, -4.7750, 2.0315) trade exactness for
speed: `f'(0) = a` is large, so small singular values grow fast, and instead of converging to 1
the values end up oscillating in a band around it (about 0.7 to 1.2, see tests/test_orthogonalize.py).

Two ways to run it (`method`): "standard" is the reference's own sequence of products (the default,
bit for bit the reference's roundings); "gram" computes the same polynomial with fewer FLOPs, from
the Gram matrix (Dao lab's "Gram Newton-Schulz", 2026) and with symmetric products (below).
"""
from __future__ import annotations

import torch

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
NS_METHODS = ("standard", "gram")
SYMMETRIC_BLOCKS = 4  # 5/8 of the FLOPs of a full product; 8 blocks (9/16) ran no faster here
SYMMETRIC_MIN_ROWS = 256  # below this, one full product is faster than the blocked ones
GRAM_ASPECT = 1.5  # wide inputs (cols >= 1.5 rows) iterate on the Gram matrix, others on X
RESTART_EVERY = 2  # the Gram iteration rebuilds X and X X^T every this many iterations


def newton_schulz(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.bfloat16,
                  method: str = "standard") -> torch.Tensor:
    """`U V^T` of a 2-D `g = U S V^T`, approximately, computed in `dtype` (returned in `dtype`).

    The input is cast to `dtype`, divided by its Frobenius norm + 1e-7 (so every singular value is
    at most 1), and iterated `steps` times with `A = X X^T; X = a X + (b A + (c A) A) X`; a tall
    input (rows > cols) is transposed first so that `A` is the smaller Gram matrix.
    `method="gram"` runs `gram_newton_schulz` on the normalized input instead.
    """
    if g.dim() != 2:
        raise ValueError(f"newton_schulz expects a matrix, got a tensor of shape {tuple(g.shape)}")
    # contiguous: a strided input gives the same matmuls, hence the same bits, as its dense copy
    x = g.to(dtype).contiguous()
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.mT
    x = x / (x.norm() + 1e-7)
    if method == "gram":
        x = gram_newton_schulz(x, steps)
    elif method == "standard":
        x = _iterate(x, steps, torch.matmul)
    else:
        raise ValueError(f"method must be one of {NS_METHODS}, got {method!r}")
    return x.mT if tall else x


def _plus(y: torch.Tensor, x: torch.Tensor, *, alpha: float) -> torch.Tensor:
    """`y + alpha*x`. In bf16 (the reference's dtype) with the reference's roundings: `alpha*x`
    rounded to bf16 before the sum. In other dtypes as one fused multiply-add (torch's
    add-with-alpha kernel), which a compiled kernel with contracted floating point reproduces bit
    for bit (`alpha*x + y` it may contract or not)."""
    return alpha * x + y if x.dtype == torch.bfloat16 else torch.add(y, x, alpha=alpha)


def _iterate(x: torch.Tensor, steps: int, product) -> torch.Tensor:
    """The reference's iteration `A = X X^T; X = a X + (b A + (c A) A) X`, with `product` for the
    two symmetric products (`torch.matmul`, or `symmetric_product`)."""
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        gram = product(x, x.mT)
        cube = product(c * gram, gram)  # scaled before the product, as the reference
        x = _plus(_plus(cube, gram, alpha=b) @ x, x, alpha=a)
    return x


def symmetric_product(a: torch.Tensor, b: torch.Tensor, blocks: int | None = None,
                      min_rows: int | None = None) -> torch.Tensor:
    """`a @ b` for a product known to be symmetric (`X X^T`, or two commuting symmetric matrices).

    The rows are cut into `blocks` strips; strip `i` is multiplied only from its diagonal block to
    the right, and the blocks left of the diagonal are the transposes of those above it: (k+1)/2k of
    the FLOPs of the full product (torch has no symmetric matmul). Below `min_rows` rows, or when
    autograd records the product (`out=` is not differentiable): `a @ b`. `blocks` and `min_rows`
    default to `SYMMETRIC_BLOCKS` and `SYMMETRIC_MIN_ROWS`, read at call time. Compiled callers
    get it as one opaque custom op: its products write into slices of the result (`out=`), which
    dynamo cannot trace, and the alternative, concatenating the strips, costs a sixth of the saving
    in copies. Eager callers skip the custom op's dispatch (~0.25 ms a call here) and run the same
    function.
    """
    blocks = SYMMETRIC_BLOCKS if blocks is None else blocks
    min_rows = SYMMETRIC_MIN_ROWS if min_rows is None else min_rows
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        return a @ b
    if torch.compiler.is_compiling():
        return _symmetric_product_op(a, b, blocks, min_rows)
    return _symmetric_product(a, b, blocks, min_rows)


def _symmetric_product(a: torch.Tensor, b: torch.Tensor, blocks: int, min_rows: int) -> torch.Tensor:
    m = a.shape[0]
    if m < max(min_rows, blocks * blocks):
        return a @ b
    size = -(-m // blocks)
    cuts = [i * size for i in range(blocks)]  # (blocks-1) * size < m: every strip has rows
    out = torch.empty(m, m, dtype=torch.result_type(a, b), device=a.device)
    for s in cuts:
        torch.mm(a[s : s + size], b[:, s:], out=out[s : s + size, s:])
    for s in cuts[:-1]:
        out[s + size :, s : s + size].copy_(out[s : s + size, s + size :].mT)
    return out


_symmetric_product_op = torch.library.custom_op("optarena::symmetric_product", mutates_args=())(_symmetric_product)


@_symmetric_product_op.register_fake
def _(a, b, blocks, min_rows):
    return a.new_empty(a.shape[0], b.shape[1], dtype=torch.result_type(a, b))


def gram_newton_schulz(x: torch.Tensor, steps: int) -> torch.Tensor:
    """The Newton-Schulz iterates of a normalized `m x n` matrix `x` (`m <= n`), with fewer FLOPs.

    Every iterate is `X_k = Q_k X_0` with `Q_k` a polynomial in `R_0 = X_0 X_0^T`, so a wide input
    (`n >= GRAM_ASPECT * m`) iterates on `m x m` matrices only: with `Z = b R + c R^2` and
    `B = a I + Z`, `Q <- B Q` and `R <- B R B` (`= X_{k+1} X_{k+1}^T`); `X = Q X_0` at the end. All
    these products are symmetric (`symmetric_product`). In bf16 the rounding errors of `R` grow by
    up to `B^2` (~12) per iteration, so every `RESTART_EVERY` iterations `X` is rebuilt as `Q X`
    and `R` recomputed from it. Measured against the exact (float64) iterates, its bf16 error is
    0.6-0.7x the standard bf16 iteration's on low-rank and ill-conditioned (1e6) inputs and
    1.0-1.45x on Gaussian ones (both 2-5%), with the same singular value band
    (tests/test_orthogonalize.py). Inputs nearer to square run the standard iteration with
    symmetric products for `X X^T` and `(c A) A`. In bf16 on this project's CPU: 1024 x 4096 in
    0.63x the standard iteration's time, 1024 x 1024 in 0.86x (docs/performance.md).
    """
    a, b, c = NS_COEFFICIENTS
    m, n = x.shape
    if n < GRAM_ASPECT * m:
        return _iterate(x, steps, symmetric_product)
    eye = torch.eye(m, dtype=x.dtype, device=x.device)
    r = symmetric_product(x, x.mT)
    q = None
    for k in range(steps):
        if q is not None and k % RESTART_EVERY == 0:
            x, q = q @ x, None
            r = symmetric_product(x, x.mT)
        z = _plus(symmetric_product(c * r, r), r, alpha=b)
        q = _plus(z, eye, alpha=a) if q is None else _plus(symmetric_product(z, q), q, alpha=a)
        if k + 1 < steps and (k + 1) % RESTART_EVERY:
            rb = _plus(symmetric_product(z, r), r, alpha=a)
            r = _plus(symmetric_product(z, rb), rb, alpha=a)
    return x if q is None else q @ x
