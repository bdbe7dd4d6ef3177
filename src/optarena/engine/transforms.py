"""Gradient transforms: rewrite the gradients of all parameters before any rule sees them.

As in optax, a transform is `init` (its state, saved in the optimizer's `state_dict`) plus `update`
(new gradients from old). Transforms run in the order given, after the non-finite check and
before the rule; they see every parameter that has a gradient, across all param groups, in the
order of the param groups and of their parameters (a fixed order, so random draws are reproducible).

The built-in transforms rewrite the gradients in place, as `torch.nn.utils.clip_grad_norm_` does:
after `step`, `p.grad` holds the gradient the rule used (clipped, noised), and no gradient-sized
copy is kept. A user transform may instead return new tensors; `p.grad` then stays as computed.

Second-moment gradients. A transform may return a `SplitGradients(grads, second_moment)` instead
of a list: `grads` go on through the later transforms to the rule as usual, `second_moment` (one
tensor per parameter, e.g. the unclipped gradients) is handed to the rule for its second-moment
estimate only (AdamW's `exp_avg_sq`). Later transforms do not touch `second_moment`. Such a
transform sets `splits_second_moment = True`, so that the optimizer can refuse, at construction,
a rule that has no use for it (`Rule.second_moment_grad`).
"""
from __future__ import annotations

import math
import zlib
from fractions import Fraction
from typing import Any, NamedTuple

import torch

from .hyper import _number, non_negative, positive


class SplitGradients(NamedTuple):
    """What a transform returns when the rule's second moment must see other gradients than the rest."""

    grads: list[torch.Tensor]
    second_moment: list[torch.Tensor]


class GradientTransform:
    """Base class. `update` may rewrite the gradients in place (as `clip_grad_norm_` does) or return new ones.

    `state` is the dict `init` returned (as saved in and loaded from the optimizer's `state_dict`);
    `update` keeps everything that must survive a checkpoint in it, never on `self`.
    """

    splits_second_moment: bool = False
    """True when `update` returns `SplitGradients` (the optimizer checks that its rule accepts them)."""

    acts_on: str = "gradients"
    """`"gradients"`: runs before the rule on the gradients. `"updates"`: runs after the rule on each
    parameter's change of this step (`UpdateClip`); returning new tensors replaces the changes."""

    def init(self) -> dict[str, Any]:
        return {}

    def update(
        self, grads: list[torch.Tensor], params: list[torch.Tensor], state: dict[str, Any]
    ) -> list[torch.Tensor] | SplitGradients:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all gradients taken as one vector (accumulated in float32 or wider)."""
    if not grads:
        return torch.zeros(())
    device = grads[0].device  # parameters may live on several devices: gather the norms on one
    norms = [torch.linalg.vector_norm(g, dtype=torch.promote_types(g.dtype, torch.float32)).to(device) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms))


def clip_factor(tensors: list[torch.Tensor], max_norm: float, eps: float) -> float | torch.Tensor:
    """`min(1, max_norm / (||t|| + eps))` over all `tensors`: a Python float (computed in double),
    or, inside a user's compiled step, a 0-d tensor (a float would need a host sync: a graph break)."""
    norm = global_norm(tensors)
    if torch.compiler.is_compiling():
        return torch.clamp(max_norm / (norm + eps), max=1.0)
    return min(1.0, max_norm / (norm.item() + eps))


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
        coef = clip_factor(grads, self.max_norm, self.eps)
        if isinstance(coef, torch.Tensor) or coef < 1.0 or self.always_scale:
            for g in grads:
                g.mul_(coef)
        return grads


def _noise_dtype(g: torch.Tensor) -> torch.dtype:
    # Drawn in float32 for half-precision gradients (then rounded once when added), else in their dtype.
    return g.dtype if g.dtype in (torch.float32, torch.float64) else torch.float32


def _device_seed(seed: int, device: torch.device) -> int:
    """The seed of `device`'s generator: distinct per device, so two GPUs never draw the same noise."""
    return (seed + zlib.crc32(str(device).encode())) % 2**63


class GradientNoise(GradientTransform):
    """Add Gaussian noise to every gradient: `g += N(0, eta / (1 + t)^gamma)` (Neelakantan et al. 2015).

    `eta` is the noise *variance* at the first step (the paper's eta in {0.01, 0.3, 1.0}); it decays
    with exponent `gamma` (0.55 in the paper). `t` counts the steps this transform has run, from 0,
    as optax's `add_noise` does: the first step has variance `eta`, the second `eta / 2^gamma`.
    Steps skipped under `nonfinite="skip"` do not count.

    The noise comes from this transform's own `torch.Generator`, one per device, drawn on the
    gradient's device, parameter after parameter in the optimizer's order, in float32 (float64 for
    float64 gradients; half-precision gradients get float32 noise rounded once on addition).
    Generator states (keyed by device) and `t` live in the transform state, so a resumed run on the
    same devices draws the same noise.
    `seed=None` takes a seed from torch's global generator when the optimizer is built (so
    `torch.manual_seed` makes runs reproducible). Gradients are rewritten in place.
    """

    def __init__(self, eta: float, gamma: float = 0.55, seed: int | None = None):
        self.eta = non_negative("eta", eta)
        self.gamma = non_negative("gamma", gamma)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be None or a non-negative int, got {seed!r}")
        self.seed = seed

    def init(self):
        seed = self.seed if self.seed is not None else int(torch.randint(0, 2**62, ()).item())
        return {"step": 0, "seed": seed, "rng": {}}

    def variance(self, t: int) -> float:
        """The noise variance at step `t` (counted from 0)."""
        return self.eta / (1 + t) ** self.gamma

    def update(self, grads, params, state):
        std = math.sqrt(self.variance(state["step"]))
        generators: dict[str, torch.Generator] = {}
        for g in grads:
            key = str(g.device)
            gen = generators.get(key)
            if gen is None:
                gen = generators[key] = torch.Generator(g.device)
                if key in state["rng"]:
                    gen.set_state(state["rng"][key].cpu())
                else:
                    gen.manual_seed(_device_seed(state["seed"], g.device))
            noise = torch.randn(g.shape, generator=gen, dtype=_noise_dtype(g), device=g.device)
            if noise.dtype == g.dtype:
                g.add_(noise, alpha=std)
            else:
                g.copy_(noise.mul_(std).add_(g))
        for key, gen in generators.items():
            state["rng"][key] = gen.get_state()
        state["step"] += 1
        return grads


SECOND_MOMENT_OPTIONS = ("clipped", "unclipped")


class CoordinateClip(GradientTransform):
    """Clip every coordinate to `[-tau, tau]`: `g if |g| < tau else sign(g) * tau` (Pan & Li 2023).

    Give exactly one of:

    * `threshold`: a fixed `tau > 0`;
    * `top_fraction` in (0, 1]: `tau` is recomputed each step as the k-th largest `|g|` over the
      gradients of *all* parameters taken as one vector of N coordinates, with
      `k = ceil(top_fraction * N)` (at least 1; `top_fraction` is read as the decimal it is written
      as, so 0.01 of 300 coordinates is k = 3, not 4 from float rounding). At least k coordinates
      have `|g| >= tau`, more when values tie at tau; ties change nothing since a coordinate with
      `|g| == tau` is left as it is. `top_fraction=1` takes tau = the smallest `|g|`. The search
      holds all |g| as one vector (float32, float64 if a gradient is float64) for the step.
      tau is applied in each gradient's dtype (a fixed threshold is rounded to bf16 for bf16 gradients).

    `second_moment="unclipped"` is the paper's Adam variant: the first moment (and everything else
    the rule does) takes the clipped gradient, the second moment the unclipped one. Only rules
    with a second-moment estimate that accept a separate gradient (`Rule.second_moment_grad`, e.g.
    AdamW, DiffGrad, AdamP) can use it; others raise ValueError when the optimizer is built. The default
    `"clipped"` gives the rule only the clipped gradient. Gradients are rewritten in place (with
    `"unclipped"`, a copy of the unclipped ones is kept for the step).
    """

    def __init__(self, top_fraction: float | None = None, threshold: float | None = None,
                 second_moment: str = "clipped"):  # fmt: skip
        if (top_fraction is None) == (threshold is None):
            raise ValueError(
                f"give exactly one of top_fraction and threshold, got top_fraction={top_fraction!r}, "
                f"threshold={threshold!r}"
            )
        if top_fraction is not None:
            top_fraction = _number("top_fraction", top_fraction)
            if not 0.0 < top_fraction <= 1.0:
                raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        if threshold is not None:
            threshold = positive("threshold", threshold)
        if second_moment not in SECOND_MOMENT_OPTIONS:
            raise ValueError(f"second_moment must be one of {SECOND_MOMENT_OPTIONS}, got {second_moment!r}")
        self.top_fraction = top_fraction
        self.threshold = threshold
        self.second_moment = second_moment

    @property
    def splits_second_moment(self) -> bool:
        return self.second_moment == "unclipped"

    def tau(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """The threshold for these gradients, as a 0-d tensor (float32, float64 for float64 gradients)."""
        wide = any(g.dtype == torch.float64 for g in grads)
        dtype = torch.float64 if wide else torch.float32
        device = grads[0].device if grads else torch.device("cpu")
        if self.threshold is not None:
            return torch.tensor(self.threshold, dtype=dtype, device=device)
        flat = torch.cat([g.detach().reshape(-1).to(device=device, dtype=dtype).abs() for g in grads])
        n = flat.numel()
        k = max(1, math.ceil(Fraction(repr(self.top_fraction)) * n))
        return flat.kthvalue(n - k + 1).values  # the k-th largest = the (n - k + 1)-th smallest

    def update(self, grads, params, state):
        total = sum(g.numel() for g in grads)
        unclipped = [g.clone() for g in grads] if self.splits_second_moment else None
        if total:
            tau = self.tau(grads)
            for g in grads:
                t = tau.to(device=g.device, dtype=g.dtype)
                g.clamp_(min=-t, max=t)
        return grads if unclipped is None else SplitGradients(grads, unclipped)


class UpdateClip(GradientTransform):
    """Clip the step itself: scale every parameter's change of this step by `min(1, max_norm / (||u|| + eps))`,
    `||u||` the norm of all the changes taken as one vector.

    Runs after the rule (`acts_on = "updates"`), whatever transforms came before, so it bounds what
    any optimizer moves per step (Lion's sign steps, Adam's early steps). It costs one copy of the
    parameters per step, taken before the rule runs.
    """

    acts_on = "updates"

    def __init__(self, max_norm: float, eps: float = 1e-6):
        self.max_norm = positive("max_norm", max_norm)
        self.eps = non_negative("eps", eps)

    def update(self, grads, params, state):
        coef = clip_factor(grads, self.max_norm, self.eps)
        return grads if not isinstance(coef, torch.Tensor) and coef == 1.0 else [u * coef for u in grads]
