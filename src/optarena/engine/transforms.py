"""Gradient transforms: rewrite the gradients of all parameters before any rule sees them.

As in optax, a transform is `init` (its state, saved in the optimizer's `state_dict`) plus `update`
(new gradients from old). Transforms run in the order given, after the non-finite check and
before the rule; they see every parameter that has a gradient, across all param groups.
"""
from __future__ import annotations

from typing import Any

import torch

from .hyper import non_negative, positive


class GradientTransform:
    """Base class. `update` may rewrite the gradients in place (as `clip_grad_norm_` does) or return new ones."""

    def init(self) -> dict[str, Any]:
        return {}

    def update(self, grads: list[torch.Tensor], params: list[torch.Tensor], state: dict[str, Any]) -> list[torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all gradients taken as one vector (accumulated in float32 or wider)."""
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]))


class GlobalNormClip(GradientTransform):
    """Scale all gradients by `min(1, max_norm / (||g|| + eps))`, `||g||` the norm over all of them.

    Rewrites the gradients in place, like `torch.nn.utils.clip_grad_norm_`. `always_scale=True`
    multiplies even when the factor is 1, which is what Adan's reference does.
    """

    def __init__(self, max_norm: float, eps: float = 1e-6, always_scale: bool = False):
        self.max_norm = positive("max_norm", max_norm)
        self.eps = non_negative("eps", eps)
        self.always_scale = always_scale

    def update(self, grads, params, state):
        coef = min(1.0, self.max_norm / (global_norm(grads).item() + self.eps))
        if coef < 1.0 or self.always_scale:
            for g in grads:
                g.mul_(coef)
        return grads
