"""Memory layouts: when a kernel that walks raw memory may take a set of tensors, and how to make
a gradient match its parameter's layout.

A fused kernel (torch's `_fused_adamw_`/`_fused_sgd_`, the C kernels) pairs the i-th element in
memory of the parameter with the i-th element of the gradient and of each state tensor. That is
the same element only when every tensor has the same shape and strides and covers its memory
densely (a slice of a larger tensor does not). A gradient assigned by hand may have other strides
than its parameter (`g.t().contiguous().t()`); such pairs must never reach a raw-memory kernel.
"""
from __future__ import annotations

import torch


def is_dense(t: torch.Tensor) -> bool:
    """Whether `t`'s elements fill one block of memory without gaps or overlaps, in some order of
    its dimensions (contiguous, channels-last, transposed; not a strided slice or an expand)."""
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def same_dense_layout(p: torch.Tensor, *others: torch.Tensor) -> bool:
    """Whether a kernel walking memory element by element may take `p` with `others`: one shape,
    one dtype-independent stride pattern, dense, on one device."""
    if not is_dense(p):
        return False
    shape, strides, device = p.shape, p.stride(), p.device
    return all(t.shape == shape and t.stride() == strides and t.device == device for t in others)


def like_param(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """`g`, or a copy of it in `p`'s memory layout where their strides differ and `p` is dense,
    so that the fused kernels can take the pair (values unchanged)."""
    if g.stride() == p.stride() or not is_dense(p) or g.shape != p.shape:
        return g
    return torch.empty_like(p, dtype=g.dtype).copy_(g)


TORCH_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def torch_fused_takes(p: torch.Tensor, *others: torch.Tensor, dtypes: tuple = TORCH_FUSED_DTYPES) -> bool:
    """Whether torch's private fused kernels (`_fused_adamw_`, `_fused_sgd_`) may take these
    tensors: one floating dtype of `dtypes` and one dense layout (they walk raw memory and trust
    their caller: mismatched shapes crash, mismatched strides pair the wrong elements)."""
    return (
        p.dtype in dtypes
        and all(t.dtype == p.dtype for t in others)
        and same_dense_layout(p, *others)
    )
