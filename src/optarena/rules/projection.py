"""The SVD projection of a weight matrix's update shared by Conda, GaLore and Fira (one home).

A projected matrix keeps an orthonormal basis `P` (`projection` in its state), refreshed from the
thin SVD of some matrix (Conda: the first moment; GaLore, Fira: the current gradient). On the
right, `P` holds rows of `Vh` and `proj(x) = x P^T`, `back(y) = y P`; on the left, columns of `U`
and `proj(x) = P^T x`, `back(y) = P y`. Which side is decided by `proj_type` and the shape.
"""
from __future__ import annotations

import torch

from ..engine.ops import decomposable

PROJ_TYPES = ("std", "reverse_std", "left", "right")


def is_projected(p: torch.Tensor, group: dict, key: str = "update_proj_gap") -> bool:
    """Whether `p` is projected: a non-empty matrix in a group whose `key` is set (not None).

    Conda switches on with `update_proj_gap`, GaLore and Fira with `rank`."""
    return group[key] is not None and p.dim() == 2 and p.numel() > 0


def projects_right(shape, proj_type: str) -> bool:
    """The side of the basis: right (`Vh`, `G @ Vh^T`) or left (`U`, `U^T @ G`).

    `std`: right when rows >= cols (the smaller basis), `reverse_std` the opposite; `left` and
    `right` fix the side.
    """
    rows, cols = shape
    if proj_type == "std":
        return rows >= cols
    if proj_type == "reverse_std":
        return rows < cols
    return proj_type == "right"


def basis_shape(shape, right: bool, rank: int | None = None) -> tuple[int, int]:
    """The shape of the basis of an `shape` matrix: `(r, cols)` on the right, `(rows, r)` on the left,
    with `r = min(rank, rows, cols)` (`rank` None: the thin SVD's full `min(rows, cols)`)."""
    rows, cols = shape
    r = min(rows, cols) if rank is None else min(rank, rows, cols)
    return (r, cols) if right else (rows, r)


def projected_shape(shape, right: bool, rank: int | None = None) -> tuple[int, int]:
    """The shape of `proj(x)` for an `shape` matrix: `(rows, r)` on the right, `(r, cols)` on the left."""
    rows, cols = shape
    r = min(rows, cols) if rank is None else min(rank, rows, cols)
    return (rows, r) if right else (r, cols)


def svd_basis(x: torch.Tensor, right: bool, rank: int | None = None) -> torch.Tensor:
    """The first `rank` right (`Vh[:rank]`) or left (`U[:, :rank]`) singular vectors of `x`.

    torch.linalg.svd (thin) in float32 (float64 for float64 input), the factors taken as returned:
    the references carry state across refreshes in projected coordinates, so the relative signs
    of consecutive bases matter and no sign normalization is applied.
    """
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    x, poison = decomposable(x.to(work))  # a non-finite gradient gives a NaN basis, not an exception
    # Row-major operands: a transposed layout would change the SVD's rounding.
    U, _, Vh = torch.linalg.svd(x.contiguous(), full_matrices=False)
    return (Vh[:rank] if right else U[:, :rank]) + poison


def project(x: torch.Tensor, basis: torch.Tensor, right: bool) -> torch.Tensor:
    """`x P^T` (right) or `P^T x` (left)."""
    return x @ basis.T if right else basis.T @ x


def project_back(y: torch.Tensor, basis: torch.Tensor, right: bool) -> torch.Tensor:
    """`y P` (right) or `P y` (left)."""
    return y @ basis if right else basis @ y
