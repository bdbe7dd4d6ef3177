"""AdamW (Loshchilov & Hutter 2019), with torch.optim.AdamW's semantics and defaults."""
from __future__ import annotations

import torch

from ..engine import ops
from ..engine.layout import torch_fused_takes
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from .common import decay_rates, eps, lr, weight_decay


def adam_step(p, g, g2, state, s) -> None:
    """Adam's moments and step (no decay): eps added to the bias-corrected sqrt(v)."""
    m, v = state["exp_avg"], state["exp_avg_sq"]
    ops.lerp_(m, g, s["one_minus_beta1"])
    ops.addcmul_(v.mul_(s["beta2"]), g2, g2, s["one_minus_beta2"])
    denom = (v.sqrt() / s["bias_correction2_sqrt"]).add_(s["eps"])
    ops.addcdiv_(p, m, denom, s["neg_step_size"])


class AdamWRule(Rule):
    """Decoupled decay before the step; Adam moments; eps added to the bias-corrected sqrt(v)."""

    hyper = {"lr": lr(1e-3), "betas": decay_rates(0.9, 0.999), "eps": eps(1e-8), "weight_decay": weight_decay(1e-2)}
    second_moment_grad = True  # exp_avg_sq may take its own gradient g2 (e.g. the unclipped one)

    @staticmethod
    def init(p, g, group):
        return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    @staticmethod
    def scalars(group, step):
        b1, b2 = group["betas"]
        return {
            "lr": group["lr"],
            "beta1": b1,
            "beta2": b2,
            "eps": group["eps"],
            "weight_decay": group["weight_decay"],
            "step": float(step),
            "decay": 1 - group["lr"] * group["weight_decay"],
            "one_minus_beta1": 1 - b1,
            "one_minus_beta2": 1 - b2,
            "neg_step_size": -group["lr"] / (1 - b1**step),
            "bias_correction2_sqrt": (1 - b2**step) ** 0.5,
        }

    @staticmethod
    def update(p, g, state, s, g2=None):
        p.mul_(s["decay"])
        adam_step(p, g, g if g2 is None else g2, state, s)

    @staticmethod
    def fused_kernel(p, g, state, s) -> bool:
        """torch's own fused AdamW kernel (same math, one pass over memory)."""
        # A private torch kernel: the compiled rule runs where it is missing or does not take the tensors.
        if not hasattr(torch, "_fused_adamw_") or not torch_fused_takes(p, g, state["exp_avg"], state["exp_avg_sq"]):
            return False
        step = torch.tensor(s["step"], dtype=torch.float32, device=p.device)
        torch._fused_adamw_(
            [p], [g], [state["exp_avg"]], [state["exp_avg_sq"]], [], [step],
            lr=s["lr"], beta1=s["beta1"], beta2=s["beta2"], weight_decay=s["weight_decay"],
            eps=s["eps"], amsgrad=False, maximize=False,
        )  # fmt: skip
        return True


class AdamW(Optimizer):
    """AdamW. Defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2 (as torch.optim.AdamW)."""

    rule = AdamWRule
