"""GaLore AdamW and Fira AdamW: Adam on a low-rank projection of each weight matrix's gradient.

GaLore (Zhao et al., 2024) with the semantics of jiaweizzhao/GaLore (`galore_torch/adamw.py`,
`galore_projector.py`); Fira (Chen et al., 2024) with those of xichen-fy/Fira
(`optimizer_torch/fira_adamw.py`, `gradient_projection.py`), which adds the scaled full-rank
residual of the gradient to GaLore's update.

Which parameters are projected is a per-group choice, as in the references: a group with `rank`
set (the default `None` means not projected) projects its 2-D parameters; every other parameter
(a group without `rank`, and 1-D, 0-d, empty or higher-dimensional parameters even in a projected
group) takes the plain AdamW update of the same class (HF-transformers style, decay after the
update). `optarena.create_optimizer(model, "galore_adamw", rank=...)` sets `rank` on the hidden
matrices only. The reference would fail on a 4-D tensor in a projected group (its projector's `.t()`).

`rank` larger than a matrix's smaller side is clamped to it, as the references' slicing
`Vh[:rank]` / `U[:, :rank]` does. The side is fixed by `proj_type` and the matrix's shape for
both the projection and the projection back; the references decide the way back from the
projected shape instead, which is the same side except in `reverse_std` with `rank >=` the
smaller side of a non-square matrix (where the references fail on a shape mismatch).

State of a projected m x n matrix with m >= n ("std": right side; transpose for m < n) at rank r:
`exp_avg`, `exp_avg_sq` r-wide (m x r) and the basis `projection` (r x n), r (2m + n) elements,
i.e. r (2m + n) / (m n) per parameter element (AdamW: 2); Fira adds the 0-d `residual_norm`.
The elements are in the state's precision (the parameter's dtype by default).
"""
from __future__ import annotations

import torch

from ..engine import ops
from ..engine.hyper import Hyper, boolean, integer, non_negative, one_of, optional
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from .common import decay_rates, eps, lr, moment_scalars, weight_decay
from .projection import (
    PROJ_TYPES, basis_shape, is_projected, project, project_back, projected_shape, projects_right, svd_basis,
)

# The arena runs both with their projection on (rank 8, a refresh every 50 steps) and the
# authors' README multiplier 0.25 (GaLore's `scale`, Fira's `alpha`).
def _hyper(scale_name: str, scale_doc: str) -> dict[str, Hyper]:
    return {
        "lr": lr(1e-3),
        "betas": decay_rates(0.9, 0.999),
        "eps": eps(1e-6),
        "weight_decay": weight_decay(0.0),
        "correct_bias": Hyper(True, boolean, "bias-correct the step size as Adam does"),
        "rank": Hyper(None, optional(integer(1), "no projection"),
                      "rank of the projection (clamped to the matrix's smaller side); None: plain AdamW"),  # fmt: skip
        "update_proj_gap": Hyper(200, integer(1), "steps between SVD refreshes of the projection"),
        scale_name: Hyper(1.0, non_negative, scale_doc),
        "proj_type": Hyper("std", one_of(*PROJ_TYPES), "which SVD factor is the basis (std: the smaller side)"),
    }


def _init(p: torch.Tensor, g: torch.Tensor, group: dict) -> dict[str, torch.Tensor]:
    """Adam's moments, in the projected shape with the basis for a projected matrix."""
    if not is_projected(p, group, "rank"):
        return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    right = projects_right(p.shape, group["proj_type"])
    low, new = projected_shape(p.shape, right, group["rank"]), dict(dtype=p.dtype, device=p.device)
    return {
        "exp_avg": torch.zeros(low, **new),
        "exp_avg_sq": torch.zeros(low, **new),
        "projection": torch.zeros(basis_shape(p.shape, right, group["rank"]), **new),
    }


def _scalars(group: dict, step: int, scale: float) -> dict:
    b1, b2 = group["betas"]
    lr_, wd = group["lr"], group["weight_decay"]
    step_size = lr_ * (1 - b2**step) ** 0.5 / (1 - b1**step) if group["correct_bias"] else lr_
    return {
        **moment_scalars(group),
        "neg_step_size": -step_size,
        "scale": float(scale),
        "neg_decay": -lr_ * wd,
        "decay_on": wd > 0,
        # the references refresh when their 0-based count of previous steps is a multiple of gap
        "refresh": (step - 1) % group["update_proj_gap"] == 0,
        "proj_type": group["proj_type"],
    }


def _adam_direction(x: torch.Tensor, state: dict, s) -> torch.Tensor:
    """Update Adam's moments with `x`; return `m / (sqrt(v) + eps)` (eps not bias-corrected)."""
    m, v = state["exp_avg"], state["exp_avg_sq"]
    ops.add_(m.mul_(s["beta1"]), x, s["one_minus_beta1"])
    ops.addcmul_(v.mul_(s["beta2"]), x, x, s["one_minus_beta2"])
    return m / v.sqrt().add_(s["eps"])


def _project_gradient(p, g, basis, s) -> tuple[bool, torch.Tensor, torch.Tensor]:
    """Refresh the basis from the current gradient when due; (right, g, proj(g)) in the basis' dtype."""
    right = projects_right(p.shape, s["proj_type"])
    if s["refresh"]:
        basis.copy_(svd_basis(g, right, basis.shape[0] if right else basis.shape[1]))
    g = g.to(basis.dtype).contiguous()  # row-major: a transposed layout would change BLAS's rounding
    return right, g, project(g, basis, right)


def _apply(p: torch.Tensor, u: torch.Tensor, s) -> None:
    """`p -= step_size u`, then decoupled decay on the updated weights."""
    ops.add_(p, u, s["neg_step_size"])
    if s["decay_on"]:
        ops.add_(p, p, s["neg_decay"])


class GaLoreRule(Rule):
    """Per step, with `t` the parameter's step:

    * Projected matrix: at steps 1, 1 + gap, 1 + 2 gap, ... the basis `P` is refreshed from the
      thin SVD `g = U S Vh` of the current gradient: `P = Vh[:r]` on the right (rows >= cols for
      `std`), `U[:, :r]` on the left (kept in the state as `projection`); `R = proj(g)` (right:
      `g P^T`, left: `P^T g`); Adam's `m`, `v` accumulate `R` in the projected shape and are not
      reset or rotated when the basis changes; `u = scale * back(m / (sqrt(v) + eps))` (right:
      `N P`, left: `P N`).
    * Otherwise: `u = m / (sqrt(v) + eps)` with `m`, `v` of `g`.
    * `p -= lr sqrt(1 - b2^t) / (1 - b1^t) u` (`lr u` without `correct_bias`); then, when
      weight_decay > 0, `p -= lr wd p` on the updated `p`.

    The SVD runs in float32 (float64 for float64 parameters); the basis is stored in the state's
    precision (the parameter's dtype by default, as the reference's). A matrix is projected or not
    from its first step on (the state's `projection` decides; its shape fixes the rank and side:
    changing `rank` or `proj_type` later is not supported). On the fused path a projected matrix
    runs eagerly unless its state is parameter-shaped (a square matrix at full rank).
    """

    exact_state = ("projection",)  # the basis is not quantized by 8-bit storage
    projection_kwargs = ("rank", "update_proj_gap", "scale", "proj_type")
    """The kwargs `create_optimizer` puts on the hidden matrices' groups only."""
    hyper = _hyper("scale", "multiplier of a projected matrix's update")

    @staticmethod
    def init(p, g, group):
        return _init(p, g, group)

    @staticmethod
    def scalars(group, step):
        return _scalars(group, step, group["scale"])

    @staticmethod
    def update(p, g, state, s):
        basis = state.get("projection")
        if basis is None:
            u = _adam_direction(g, state, s)
        else:
            right, _, r = _project_gradient(p, g, basis, s)
            u = project_back(_adam_direction(r, state, s), basis, right) * s["scale"]
        _apply(p, u, s)


def fira_residual(g, r, n, basis, right: bool, state: dict, s) -> torch.Tensor:
    """Fira's scaled full-rank residual `S` of the gradient `g` (with `r = proj(g)`, `n` the
    low-rank Adam direction), after the norm-growth limiter; updates `state["residual_norm"]`.

    `S = (g - alpha back(r)) * phi` (alpha included, as the reference's `project_back`), with
    `phi = ||n|| / (||r|| + 1e-8)` per row (right side: `n` has at least as many rows as columns)
    or per column (left side); from the second step on, when `||S||` grew by more than 1.01x over
    the previous step's (limited) norm, `S` is scaled down to exactly 1.01x.
    """
    sub = project_back(r, basis, right) * s["scale"]
    # The reference's rule (rows when n is not wider than tall), taken per column where the
    # rows would not line up with g's (a left basis of full rank on a tall matrix: it fails there).
    per_row = n.shape[0] >= n.shape[1] and n.shape[0] == g.shape[0]
    dim = 1 if per_row else 0
    phi = torch.linalg.vector_norm(n, dim=dim) / (torch.linalg.vector_norm(r, dim=dim) + 1e-8)
    residual = (g - sub) * (phi.unsqueeze(1) if per_row else phi)
    norm, prev = torch.linalg.vector_norm(residual), state["residual_norm"]
    if s["limit"]:
        limiter = torch.clamp_min(norm / (prev + 1e-8), 1.01) / 1.01
        residual = residual / limiter
        prev.copy_(norm / limiter)
    else:
        prev.copy_(norm)
    return residual


class FiraRule(Rule):
    """GaLore's update plus the scaled full-rank residual (`fira_residual`): for a projected
    matrix `u = alpha back(N) + S` (the residual is not multiplied by alpha); the step, the decay
    and everything else as `GaLoreRule`, with `alpha` in the role of GaLore's `scale`. The state
    adds `residual_norm` (0-d, the limited norm of the last residual), so a projected matrix always
    runs eagerly on the fused path.
    """

    exact_state = ("projection", "residual_norm")
    projection_kwargs = ("rank", "update_proj_gap", "alpha", "proj_type")
    hyper = _hyper("alpha", "multiplier of a projected matrix's low-rank update and of back(R) in the residual")

    @staticmethod
    def init(p, g, group):
        state = _init(p, g, group)
        if "projection" in state:
            state["residual_norm"] = torch.zeros((), dtype=p.dtype, device=p.device)
        return state

    @staticmethod
    def scalars(group, step):
        return {**_scalars(group, step, group["alpha"]), "limit": step > 1}

    @staticmethod
    def update(p, g, state, s):
        basis = state.get("projection")
        if basis is None:
            u = _adam_direction(g, state, s)
        else:
            right, g, r = _project_gradient(p, g, basis, s)
            n = _adam_direction(r, state, s)
            u = project_back(n, basis, right) * s["scale"] + fira_residual(g, r, n, basis, right, state, s)
        _apply(p, u, s)


class GaLoreAdamW(Optimizer):
    """GaLore AdamW. Defaults as the reference: lr 1e-3, betas (0.9, 0.999), eps 1e-6,
    weight_decay 0, correct_bias True; projection per group: rank (None: plain AdamW, the
    reference's groups without it), update_proj_gap 200, scale 1.0, proj_type "std" (the
    reference projector's defaults; the authors' README uses scale 0.25)."""

    rule = GaLoreRule


class FiraAdamW(Optimizer):
    """Fira AdamW. Defaults as the reference: lr 1e-3, betas (0.9, 0.999), eps 1e-6,
    weight_decay 0, correct_bias True; projection per group: rank (None: plain AdamW),
    update_proj_gap 200, alpha 1.0, proj_type "std" (the reference projector's defaults; the
    authors' README uses alpha 0.25)."""

    rule = FiraRule
