"""SGD with momentum, dampening, Nesterov and L2 weight decay, with torch.optim.SGD's semantics."""
from __future__ import annotations

import torch

from ..engine import ops
from ..engine.hyper import Hyper, boolean, fraction, unit_interval
from ..engine.layout import torch_fused_takes
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from .common import lr, weight_decay


_WIDE = (torch.float32, torch.float64)


class SGDRule(Rule):
    """`g += wd*p; b = momentum*b + (1-dampening)*g (b = g at the first step); p -= lr*(g + momentum*b if nesterov else b)`.

    Momentum may change during a run: while it is 0 the step uses `g` (a kept buffer is ignored),
    and a buffer is created when it first turns non-zero. Created after step 1, the buffer starts
    at 0, so its first value is `(1-dampening)*g` where torch.optim takes `g`: the same unless
    dampening is set."""

    optional_state = ("momentum_buffer",)  # kept (and ignored) while momentum is 0
    hyper = {
        "lr": lr(1e-3),
        "momentum": Hyper(0.0, unit_interval, "momentum factor"),
        "dampening": Hyper(0.0, fraction, "dampening of the momentum"),
        "weight_decay": weight_decay(0.0),
        "nesterov": Hyper(False, boolean, "Nesterov momentum"),
    }

    @staticmethod
    def init(p, g, group):
        return {"momentum_buffer": torch.zeros_like(p)} if group["momentum"] != 0 else {}

    @staticmethod
    def check_group(group):
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum in (0, inf) and dampening == 0")

    @staticmethod
    def needed_state(group):
        # A momentum schedule may start at 0: the buffer is created when momentum first turns non-zero.
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    @staticmethod
    def scalars(group, step):
        first = step == 1
        return {
            "neg_lr": -group["lr"],
            "step": float(step),
            "dampening": group["dampening"],
            "weight_decay": group["weight_decay"],
            "momentum": group["momentum"],
            # The buffer starts at zero; at the first step keeping 0 of it and taking all of g
            # makes it equal to g exactly (torch clones g), without a data-dependent branch.
            "keep": 0.0 if first else group["momentum"],
            "take": 1.0 if first else 1.0 - group["dampening"],
            "nesterov": group["nesterov"],
            "decay": group["weight_decay"] != 0,
            "use_momentum": group["momentum"] != 0,  # a kept buffer is ignored while momentum is 0, as in torch
        }

    @staticmethod
    def update(p, g, state, s):
        if s["decay"]:
            g = ops.add_(g.clone(), p, s["weight_decay"])
        buf = state.get("momentum_buffer")
        if buf is not None and s["use_momentum"]:
            ops.add_(buf.mul_(s["keep"]), g, s["take"])
            g = ops.add_(g.clone(), buf, s["momentum"]) if s["nesterov"] else buf
        ops.add_(p, g, s["neg_lr"])

    @staticmethod
    def fused_kernel(p, g, state, s) -> bool:
        """torch's own fused SGD kernel (same math, one pass over memory)."""
        buf = state.get("momentum_buffer") if s["use_momentum"] else None
        # A private torch kernel: the compiled rule runs where it is missing or does not take the tensors.
        # Not for bf16/fp16: on CPU (torch 2.13) it updates only the last numel % 16 elements of those.
        state = () if buf is None else (buf,)
        if not hasattr(torch, "_fused_sgd_") or not torch_fused_takes(p, g, *state, dtypes=_WIDE):
            return False
        torch._fused_sgd_(
            [p], [g], [] if buf is None else [buf],
            weight_decay=s["weight_decay"], momentum=s["momentum"] if buf is not None else 0.0, lr=-s["neg_lr"],
            dampening=s["dampening"], nesterov=s["nesterov"], maximize=False, is_first_step=s["step"] == 1.0,
        )  # fmt: skip
        return True


class SGD(Optimizer):
    """SGD. Defaults lr 1e-3, momentum 0, dampening 0, weight_decay 0, nesterov False (as torch.optim.SGD)."""

    rule = SGDRule
