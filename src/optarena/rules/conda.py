"""Conda (Column-Normalized Adam), with the semantics of jie040109/Conda (`conda_torch/conda.py`,
`conda_torch/projector.py`).

Adam whose second moment lives in a rotated basis of each weight matrix: the first moment `m` is
kept in full space and, every `update_proj_gap` steps, its SVD gives an orthogonal basis (`Vh`
when rows >= cols, else `U`, full rank). `m` and the gradient are projected onto the basis, the
second moment `v` is accumulated there and normalizes the projected `m`, and the result is
projected back. Weight decay is decoupled and applied after the update, to the updated weights.

Which parameters are projected is a per-group choice, as in the authors' training scripts: a
group with `update_proj_gap` set (the default `None` means not projected) projects its 2-D
parameters; every other parameter (a group without `update_proj_gap`, and 1-D, 0-d, empty or
higher-dimensional parameters even in a projected group) takes the plain AdamW-style update. The
reference would fail on those in a projected group (its projector needs a matrix; a batched 4-D
SVD factor breaks its `.t()`); the authors project only `nn.Linear` weights.
"""
from __future__ import annotations

import torch

from ..engine import ops
from ..engine.hyper import Hyper, boolean, integer, non_negative, one_of, optional
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from .common import moment_scalars, decay_rates, eps, lr, weight_decay
from .projection import (  # the projection helpers' home; conda re-exports is_projected, projects_right
    PROJ_TYPES, basis_shape, is_projected, project, project_back, projected_shape, projects_right, svd_basis,
)


class CondaRule(Rule):
    """Per step, with `t` the parameter's step:

    * `m = b1 m + (1 - b1) g` (the raw gradient, also for projected matrices).
    * Projected matrix: at steps 1, 1 + gap, 1 + 2 gap, ... the basis `P` is refreshed from the
      thin SVD `m = U S Vh` of this `m` (`P = Vh` on the right, `U` on the left; kept in the
      state as `projection`, so a resumed run continues with it);
      `v = b2 v + (1 - b2) proj(g)^2` with `v` in the projected coordinates and not rotated when
      the basis changes; `u = scale * back(proj(m) / (sqrt(v) + eps))`, where right:
      `proj(x) = x P^T`, `back(y) = y P`; left: `proj(x) = P^T x`, `back(y) = P y`.
    * Otherwise: `v = b2 v + (1 - b2) g^2`; `u = m / (sqrt(v) + eps)`.
    * `p -= lr sqrt(1 - b2^t) / (1 - b1^t) u` (`lr u` without `correct_bias`); then, when
      weight_decay > 0, `p -= lr wd p` on the updated `p`.

    The SVD runs in float32 (float64 for float64 parameters) and its factor is stored in the
    state's precision. A matrix is projected or not from its first step on: the state's
    `projection` decides (switching `update_proj_gap` between None and a number later changes the
    cadence of refreshes, not which tensors are projected), and its state is shaped for the
    side `proj_type` chose then: changing `proj_type` later is not supported. On the fused path a non-square
    matrix runs eagerly (its basis is not shaped like the parameter, which the engine does not
    fuse); a square one is compiled with the SVD, the refresh being a per-step switch.
    """

    exact_state = ("projection",)
    hyper = {
        "lr": lr(1e-3),
        "betas": decay_rates(0.9, 0.999),
        "eps": eps(1e-8),
        "weight_decay": weight_decay(0.0),
        "correct_bias": Hyper(True, boolean, "bias-correct the step size as Adam does"),
        "update_proj_gap": Hyper(None, optional(integer(1), "no projection"), "steps between SVD refreshes of the basis; None: no projection"),
        "scale": Hyper(1.0, non_negative, "multiplier of a projected matrix's update"),
        "proj_type": Hyper("std", one_of(*PROJ_TYPES), "which SVD factor is the basis (std: the smaller side)"),
    }

    @staticmethod
    def init(p, g, group):
        state = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        if is_projected(p, group):
            # The SVD's thin factors: right Vh (k, cols), left U (rows, k), k = min(rows, cols);
            # v lives in the projected shape, p's own for "std" (right exactly when rows >= cols).
            right = projects_right(p.shape, group["proj_type"])
            new = dict(dtype=p.dtype, device=p.device)
            state["projection"] = torch.zeros(basis_shape(p.shape, right), **new)
            state["exp_avg_sq"] = torch.zeros(projected_shape(p.shape, right), **new)
        return state

    @staticmethod
    def scalars(group, step):
        b1, b2 = group["betas"]
        lr_, wd, gap = group["lr"], group["weight_decay"], group["update_proj_gap"]
        step_size = lr_ * (1 - b2**step) ** 0.5 / (1 - b1**step) if group["correct_bias"] else lr_
        return {
            **moment_scalars(group),
            "neg_step_size": -step_size,
            "scale": float(group["scale"]),
            "neg_decay": -lr_ * wd,
            "decay_on": wd > 0,
            # the reference refreshes when its 0-based count of previous steps is a multiple of gap
            "refresh": gap is not None and (step - 1) % gap == 0,
            "proj_type": group["proj_type"],
        }

    @staticmethod
    def update(p, g, state, s):
        m, v = state["exp_avg"], state["exp_avg_sq"]
        ops.add_(m.mul_(s["beta1"]), g, s["one_minus_beta1"])
        basis = state.get("projection")
        if basis is None:
            ops.addcmul_(v.mul_(s["beta2"]), g, g, s["one_minus_beta2"])
            u = m / v.sqrt().add_(s["eps"])
        else:
            right = projects_right(p.shape, s["proj_type"])
            if s["refresh"]:
                basis.copy_(svd_basis(m, right))
            # Row-major operands: a transposed layout would change the SVD's and BLAS's rounding.
            g, mw = g.to(basis.dtype).contiguous(), m.to(basis.dtype).contiguous()
            pg, pm = project(g, basis, right), project(mw, basis, right)
            ops.addcmul_(v.mul_(s["beta2"]), pg, pg, s["one_minus_beta2"])
            n = pm / v.sqrt().add_(s["eps"])
            u = project_back(n, basis, right) * s["scale"]
        ops.add_(p, u, s["neg_step_size"])
        if s["decay_on"]:
            ops.add_(p, p, s["neg_decay"])


class Conda(Optimizer):
    """Conda. Defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0, correct_bias True (as
    the reference's constructor); projection per group: update_proj_gap (None: plain Adam, the
    reference's groups without it), scale 1.0, proj_type "std"."""

    rule = CondaRule
