"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), google/automl's reference.

On the fused path, float32 CPU tensors take a C kernel (`engine/lion.c`, one pass over memory); other
tensors the compiled `update`."""
from __future__ import annotations

import torch

from ..engine import native, ops
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from .common import decay_rates, lr, weight_decay


class LionRule(Rule):
    """`p *= 1 - lr*wd; p -= lr*sign(b1*m + (1-b1)*g); m = b2*m + (1-b2)*g`. No eps, no bias correction."""

    hyper = {"lr": lr(1e-4), "betas": decay_rates(0.9, 0.99), "weight_decay": weight_decay(0.0)}

    @staticmethod
    def init(p, g, group):
        return {"exp_avg": torch.zeros_like(p)}

    @staticmethod
    def scalars(group, step):
        b1, b2 = group["betas"]
        return {
            "neg_lr": -group["lr"],
            "decay": 1 - group["lr"] * group["weight_decay"],
            "beta1": b1,
            "one_minus_beta1": 1 - b1,
            "beta2": b2,
            "one_minus_beta2": 1 - b2,
        }

    @staticmethod
    def update(p, g, state, s):
        m = state["exp_avg"]
        p.mul_(s["decay"])
        ops.add_(p, torch.sign(m * s["beta1"] + g * s["one_minus_beta1"]), s["neg_lr"])
        ops.add_(m.mul_(s["beta2"]), g, s["one_minus_beta2"])

    @staticmethod
    def fused_kernel(p, g, state, s) -> bool:
        """The C kernel (`engine/lion.c`, one pass) for float32 CPU tensors; False, with nothing
        updated, for anything else (the compiled `update` then runs)."""
        return native.run_step(native.LION, p, g, (state["exp_avg"],), (p.numel(),), s)


class Lion(Optimizer):
    """Lion. Defaults lr 1e-4, betas (0.9, 0.99), weight_decay 0; the authors advise an lr 3-10x
    smaller than AdamW's and a weight decay 3-10x larger."""

    rule = LionRule
