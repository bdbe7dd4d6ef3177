"""bitsandbytes' 8-bit optimizers (Dettmers et al. 2022): `AdamW8bit`, `Lion8bit`.

Their state is block-wise 8-bit by default (`state_precision="8bit"`, blocks of 256, tensors
under `min_8bit_size` = 4096 elements in float32); any other optimizer gets the same storage with
`state_precision="8bit"`. The rules are bitsandbytes':

* AdamW8bit: `p -= lr sqrt(bc2)/bc1 * m / (sqrt(v) + sqrt(bc2) eps)` (= torch's AdamW step), then
  the decoupled decay `p *= 1 - lr wd` AFTER the step, as bitsandbytes' CUDA kernel and
  ALGORITHMS.md have it. (Its CPU backend decays before the step, as torch's AdamW; the
  difference is O(lr^2 wd) per step.)
* Lion8bit: Lion's rule (decay before the step), as bitsandbytes'.

Rounding is to the nearest code (the paper, the CUDA kernel); bitsandbytes' CPU backend rounds
through a 65,536-entry table, which differs only for values within one table step of a midpoint.
"""
from __future__ import annotations

from typing import Any

from ..engine.optimizer import Optimizer
from .adamw import AdamWRule, adam_step
from .lion import LionRule


class AdamW8bitRule(AdamWRule):
    """AdamW with the decoupled decay applied after the step, to the updated weights."""

    fused_kernel = None  # torch's fused AdamW decays first

    @staticmethod
    def update(p, g, state, s, g2=None):
        adam_step(p, g, g if g2 is None else g2, state, s)
        p.mul_(s["decay"])


class _EightBit(Optimizer):
    def __init__(self, params: Any, *, state_precision: str | None = "8bit", **kwargs: Any):
        super().__init__(params, state_precision=state_precision, **kwargs)


class AdamW8bit(_EightBit):
    """bitsandbytes' AdamW8bit. Defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 1e-2
    (as bitsandbytes), state_precision "8bit", min_8bit_size 4096."""

    rule = AdamW8bitRule


class Lion8bit(_EightBit):
    """bitsandbytes' Lion8bit. Defaults lr 1e-4, betas (0.9, 0.99), weight_decay 0, state 8-bit."""

    rule = LionRule
