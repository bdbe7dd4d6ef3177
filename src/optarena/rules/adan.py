"""Adan (Xie et al. 2022, "Adaptive Nesterov Momentum Algorithm"), sail-sg/Adan's reference.

Betas follow the reference code's convention, `1 - ` the paper's: (0.98, 0.92, 0.99).
"""
from __future__ import annotations

import torch

from ..engine import ops
from ..engine.hyper import Hyper, boolean, non_negative
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from ..engine.transforms import GlobalNormClip
from .common import decay_rates, eps, lr, weight_decay


class AdanRule(Rule):
    """With d = g - g_prev (0 at the first step):
    `m = b1 m + (1-b1) g; v = b2 v + (1-b2) d; n = b3 n + (1-b3)(g + b2 d)^2;
    u = (m/bc1 + b2 v/bc2) / (sqrt(n/bc3) + eps)`; then `p = (p - lr u)/(1 + lr wd)` (proximal)
    or, with `no_prox`, `p = p (1 - lr wd) - lr u`."""

    hyper = {
        "lr": lr(1e-3),
        "betas": decay_rates(0.98, 0.92, 0.99),
        "eps": eps(1e-8),
        "weight_decay": weight_decay(0.0),
        "no_prox": Hyper(False, boolean, "decoupled decay before the step instead of the proximal division"),
    }

    @staticmethod
    def init(p, g, group):
        return {
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.zeros_like(p),
            "exp_avg_diff": torch.zeros_like(p),
            "prev_grad": g.clone(memory_format=torch.preserve_format),
        }

    @staticmethod
    def scalars(group, step):
        b1, b2, b3 = group["betas"]
        lr_, wd = group["lr"], group["weight_decay"]
        return {
            "beta1": b1,
            "beta2": b2,
            "beta3": b3,
            "one_minus_beta1": 1 - b1,
            "one_minus_beta2": 1 - b2,
            "one_minus_beta3": 1 - b3,
            "eps": group["eps"],
            "neg_step_size": -lr_ / (1 - b1**step),
            "neg_step_size_diff": -lr_ * b2 / (1 - b2**step),
            "bias_correction3_sqrt": (1 - b3**step) ** 0.5,
            "decay": 1 - lr_ * wd,
            "prox": 1 + lr_ * wd,
            "no_prox": group["no_prox"],
        }

    @staticmethod
    def update(p, g, state, s):
        m, v, n, prev = state["exp_avg"], state["exp_avg_diff"], state["exp_avg_sq"], state["prev_grad"]
        d = g - prev
        ops.add_(m.mul_(s["beta1"]), g, s["one_minus_beta1"])
        ops.add_(v.mul_(s["beta2"]), d, s["one_minus_beta2"])
        c = d.mul_(s["beta2"]).add_(g)
        ops.addcmul_(n.mul_(s["beta3"]), c, c, s["one_minus_beta3"])
        denom = (n.sqrt() / s["bias_correction3_sqrt"]).add_(s["eps"])
        if s["no_prox"]:
            p.mul_(s["decay"])
        ops.addcdiv_(p, m, denom, s["neg_step_size"])
        ops.addcdiv_(p, v, denom, s["neg_step_size_diff"])
        if not s["no_prox"]:
            p.div_(s["prox"])
        prev.copy_(g)


class Adan(Optimizer):
    """Adan. Defaults lr 1e-3, betas (0.98, 0.92, 0.99), eps 1e-8, weight_decay 0, no_prox False,
    max_grad_norm 0 (off). `max_grad_norm > 0` clips the global gradient norm over all groups
    before the step, rewriting `p.grad` as the reference does (a `GlobalNormClip` transform)."""

    rule = AdanRule
    optimizer_wide = {"max_grad_norm": Hyper(0.0, non_negative, "global gradient-norm clip, 0 = off")}

    def builtin_transforms(self, max_grad_norm=0.0, eps=1e-8, **_):
        return [GlobalNormClip(max_grad_norm, eps=eps, always_scale=True)] if max_grad_norm > 0 else []
