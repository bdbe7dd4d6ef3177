"""diffGrad (Dubey et al. 2019, "diffGrad: An Optimization Method for Convolutional Neural Networks"),
with the semantics of shivram1987/diffGrad's `diffGrad_v2.py` (v1 keeps a reference to the live
gradient, so its friction is always sigmoid(0) after the first step).

On the fused path, float32 CPU tensors take a C kernel (`engine/diffgrad.c`, one pass over memory);
other tensors the compiled `update`."""
from __future__ import annotations

import torch

from ..engine import native, ops
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from .common import moment_scalars, decay_rates, eps, lr, weight_decay


_DECAY = 2  # engine/diffgrad.c's flag for the coupled weight decay


class DiffGradRule(Rule):
    """With g the gradient plus the coupled L2 term `wd * p`:
    `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; dfc = sigmoid(|g_prev - g|)` (g_prev is 0 at the
    first step, then the previous step's decayed gradient);
    `p -= lr * sqrt(1 - b2^t)/(1 - b1^t) * dfc * m / (sqrt(v) + eps)`. The friction scales only the
    step, not the stored m; eps is added to the uncorrected sqrt(v). Unlike the reference, `p.grad`
    itself is left untouched."""

    hyper = {"lr": lr(1e-3), "betas": decay_rates(0.9, 0.999), "eps": eps(1e-8), "weight_decay": weight_decay(0.0)}
    second_moment_grad = True  # exp_avg_sq may take its own gradient g2 (e.g. the unclipped one)

    @staticmethod
    def init(p, g, group):
        return {
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.zeros_like(p),
            "previous_grad": torch.zeros_like(p),
        }

    @staticmethod
    def scalars(group, step):
        b1, b2 = group["betas"]
        return {
            **moment_scalars(group),
            "weight_decay": group["weight_decay"],
            "decay": group["weight_decay"] != 0,
            "neg_step_size": -group["lr"] * (1 - b2**step) ** 0.5 / (1 - b1**step),
        }

    @staticmethod
    def update(p, g, state, s, g2=None):
        m, v, prev = state["exp_avg"], state["exp_avg_sq"], state["previous_grad"]
        if s["decay"]:
            g = ops.add_(g.clone(), p, s["weight_decay"])
            g2 = None if g2 is None else ops.add_(g2.clone(), p, s["weight_decay"])
        g2 = g if g2 is None else g2
        ops.add_(m.mul_(s["beta1"]), g, s["one_minus_beta1"])
        ops.addcmul_(v.mul_(s["beta2"]), g2, g2, s["one_minus_beta2"])
        denom = v.sqrt().add_(s["eps"])
        friction = torch.sigmoid((prev - g).abs_())
        prev.copy_(g)
        ops.addcdiv_(p, m * friction, denom, s["neg_step_size"])

    @staticmethod
    def fused_kernel(p, g, state, s) -> bool:
        """The C kernel (`engine/diffgrad.c`, one pass) for float32 CPU tensors; False, with nothing
        updated, for anything else (the compiled `update` then runs)."""
        moments = (state["exp_avg"], state["exp_avg_sq"], state["previous_grad"])
        return native.run_step(native.DIFFGRAD, p, g, moments, (p.numel(),), s, _DECAY if s["decay"] else 0)


class DiffGrad(Optimizer):
    """diffGrad. Defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0 (coupled L2, as the reference)."""

    rule = DiffGradRule
