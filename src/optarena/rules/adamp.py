"""AdamP and SGDP (Heo et al. 2021, "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
Scale-invariant Weights"), with the semantics of clovaai/AdamP (PyPI `adamp` 0.3.0).

Both take their usual direction (Adam's `m / denom`, SGD's momentum buffer) and, for weights of
two or more dimensions that look scale-invariant (the gradient nearly orthogonal to the weight),
remove the direction's radial component and shrink the weight decay by `wd_ratio`.

On the fused path, float32 CPU tensors take a C kernel (`engine/adamp.c`, two passes over memory:
state, direction and row sums; then the projected update); other tensors the compiled `update`.
"""
from __future__ import annotations

import torch

from ..engine import native, ops
from ..engine.hyper import Hyper, boolean, fraction, non_negative, unit_interval
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from .common import moment_scalars, decay_rates, eps, lr, weight_decay


def _cosine(gp: torch.Tensor, gg: torch.Tensor, pp: torch.Tensor, eps) -> torch.Tensor:
    """`|cos(g, p)|` from the sums `<g, p>`, `<g, g>`, `<p, p>`, with `F.cosine_similarity`'s eps clamp."""
    return gp.abs() / (gg.sqrt().clamp_min(eps) * pp.sqrt().clamp_min(eps))


def project_radial_(direction: torch.Tensor, p: torch.Tensor, g: torch.Tensor, delta, eps) -> torch.Tensor | None:
    """Remove the radial component of `direction` (in place) where `p` looks scale-invariant.

    Only tensors with two or more dimensions are tested. Two views are tried in order: one row per
    output channel (`size0 x rest`), then the whole tensor as one row. The first view where every
    row's `|cos(g, p)|` is below `delta / sqrt(row length)` is used: for each row,
    `direction -= p_n * <p_n, direction>` with `p_n = p / (||p|| + eps)`. The cosine uses the raw
    gradient `g` (as the reference does), whatever `direction` is. Returns a 0-d bool tensor, true
    when it projected (the caller then scales the weight decay by `wd_ratio`), or None for tensors
    it never tests.

    Everything comes from four per-row sums, `<g,p>`, `<g,g>`, `<p,p>`, `<p,d>` (the whole-tensor
    view's are their totals), taken in one pass, and `p_n <p_n, d> = p <p,d> / (||p|| + eps)^2`; the
    view is picked with `torch.where`, without a branch, so a compiled kernel does one reduction
    pass and one update pass.
    """
    if p.dim() < 2 or p.numel() == 0:
        return None
    rows = p.shape[0]
    g2, p2, d2 = g.reshape(rows, -1), p.reshape(rows, -1), direction.reshape(rows, -1)
    gp, gg, pp, pd = (g2 * p2).sum(1), (g2 * g2).sum(1), (p2 * p2).sum(1), (p2 * d2).sum(1)
    channel = _cosine(gp, gg, pp, eps).max() < delta / p2.shape[1] ** 0.5
    layer = ~channel & (_cosine(gp.sum(), gg.sum(), pp.sum(), eps) < delta / p.numel() ** 0.5)
    coef = torch.where(channel, pd / (pp.sqrt() + eps) ** 2, pd.sum() / (pp.sum().sqrt() + eps) ** 2)
    coef = torch.where(channel | layer, coef, torch.zeros_like(coef))
    direction.sub_(p * coef.view((rows,) + (1,) * (p.dim() - 1)))
    return channel | layer


# The projection's per-row factors (a few dozen scalar ops) would otherwise be inlined into the
# final pass and recomputed for every 16 elements; materializing them first keeps that pass cheap.
_PROJECTION_COMPILE_OPTIONS = {"realize_opcount_threshold": 10}


def _decay_(p: torch.Tensor, projected: torch.Tensor | None, s) -> None:
    """`p *= 1 - lr*wd*(wd_ratio if projected else 1)` (SGDP's factors include its 1/(1 - momentum))."""
    if not s["decay_on"]:
        return
    if projected is None:
        p.mul_(s["decay"])
    elif isinstance(s["decay"], float):  # eager: choose in Python, keeping the scalar's full precision
        p.mul_(s["decay_projected"] if projected else s["decay"])
    else:  # compiled: 0-d tensors, no data-dependent branch
        p.mul_(torch.where(projected, s["decay_projected"], s["decay"]))


_NESTEROV, _DECAY, _PROJECT = 1, 2, 4  # flags of the C kernels (engine/adamp.c)


def _native_step(kernel: native.Kernel, p: torch.Tensor, g: torch.Tensor, state: tuple, s) -> bool:
    """Run `engine/adamp.c`'s fused step (`native.ADAMP` or `native.SGDP`) on `p`, `g` and the state
    tensors (in the C function's order) with the rule's scalars `s`; False, with nothing updated,
    where it does not apply (not float32 on CPU, not contiguous, shapes differ, empty, no
    compiler, out of memory: the compiled path then runs). Tensors of fewer than two dimensions take
    the kernel's one-pass, unprojected step.

    The result does not depend on the number of threads (each row's sums are taken in a fixed
    order), so a resumed run stays bit-identical."""
    project = p.dim() >= 2
    rows = p.shape[0] if project else 1
    flags = (_NESTEROV if s["nesterov"] else 0) | (_DECAY if s["decay_on"] else 0) | (_PROJECT if project else 0)
    sizes = (rows, p.numel() // max(rows, 1))  # (an empty tensor: declined by run_step)
    return native.run_step(kernel, p, g, state, sizes, s, flags)


def _projection_hyper() -> dict[str, Hyper]:
    return {
        "delta": Hyper(0.1, non_negative, "scale-invariant when every |cos(g, p)| < delta / sqrt(row length)"),
        "wd_ratio": Hyper(0.1, non_negative, "weight-decay multiplier for projected (scale-invariant) weights"),
        "nesterov": Hyper(False, boolean, "Nesterov momentum"),
    }


class AdamPRule(Rule):
    """Adam moments; `d = m / (sqrt(v)/sqrt(1 - b2^t) + eps)` (Nesterov: `(b1 m + (1-b1) g)` over the
    same denominator); `project_radial_(d)`; `p *= 1 - lr*wd*(wd_ratio if projected else 1)`;
    `p -= lr/(1 - b1^t) * d`."""

    hyper = {
        "lr": lr(1e-3),
        "betas": decay_rates(0.9, 0.999),
        "eps": eps(1e-8),
        "weight_decay": weight_decay(0.0),
        **_projection_hyper(),
    }
    second_moment_grad = True  # exp_avg_sq may take its own gradient g2 (e.g. the unclipped one)
    compile_options = _PROJECTION_COMPILE_OPTIONS
    max_chunk = 1  # eight unrolled projections compiled into one graph ran 3x slower than one each

    @staticmethod
    def init(p, g, group):
        return {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    @staticmethod
    def scalars(group, step):
        b1, b2 = group["betas"]
        lr_, wd = group["lr"], group["weight_decay"]
        return {
            **moment_scalars(group),
            "delta": group["delta"],
            "nesterov": group["nesterov"],
            "bias_correction2_sqrt": (1 - b2**step) ** 0.5,
            "neg_step_size": -lr_ / (1 - b1**step),
            "decay_on": wd > 0,
            "decay": 1 - lr_ * wd,
            "decay_projected": 1 - lr_ * wd * group["wd_ratio"],
        }

    @staticmethod
    def update(p, g, state, s, g2=None):
        g2 = g if g2 is None else g2
        m, v = state["exp_avg"], state["exp_avg_sq"]
        ops.add_(m.mul_(s["beta1"]), g, s["one_minus_beta1"])
        ops.addcmul_(v.mul_(s["beta2"]), g2, g2, s["one_minus_beta2"])
        denom = (v.sqrt() / s["bias_correction2_sqrt"]).add_(s["eps"])
        if s["nesterov"]:
            direction = (m * s["beta1"] + g * s["one_minus_beta1"]) / denom
        else:
            direction = m / denom
        _decay_(p, project_radial_(direction, p, g, s["delta"], s["eps"]), s)
        ops.add_(p, direction, s["neg_step_size"])

    @staticmethod
    def fused_kernel(p, g, state, s) -> bool:
        """The C kernel (`engine/adamp.c`): two passes over memory, for float32 CPU tensors."""
        return _native_step(native.ADAMP, p, g, (state["exp_avg"], state["exp_avg_sq"]), s)


class AdamP(Optimizer):
    """AdamP. Defaults lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0 (decoupled), delta 0.1,
    wd_ratio 0.1, nesterov False (as clovaai/AdamP)."""

    rule = AdamPRule


class SGDPRule(Rule):
    """`b = momentum*b + (1-dampening)*g` (b starts at 0); `d = g + momentum*b` (Nesterov) or `d = b`;
    `project_radial_(d)`; `p *= 1 - lr*wd*(wd_ratio if projected else 1)/(1 - momentum)`; `p -= lr*d`.
    Without Nesterov `d` is the buffer itself, so a projection also projects the stored buffer, as
    in the reference."""

    hyper = {
        "lr": lr(1e-3),
        "momentum": Hyper(0.0, unit_interval, "momentum factor (the decay is divided by 1 - momentum)"),
        "dampening": Hyper(0.0, fraction, "dampening of the momentum"),
        "weight_decay": weight_decay(0.0),
        "eps": eps(1e-8),
        **_projection_hyper(),
    }

    compile_options = _PROJECTION_COMPILE_OPTIONS

    @staticmethod
    def init(p, g, group):
        return {"momentum_buffer": torch.zeros_like(p)}

    @staticmethod
    def scalars(group, step):
        lr_, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
        return {
            "momentum": momentum,
            "take": 1 - group["dampening"],
            "eps": group["eps"],
            "delta": group["delta"],
            "nesterov": group["nesterov"],
            "neg_lr": -lr_,
            "decay_on": wd != 0,
            "decay": 1 - lr_ * wd / (1 - momentum),
            "decay_projected": 1 - lr_ * wd * group["wd_ratio"] / (1 - momentum),
        }

    @staticmethod
    def update(p, g, state, s):
        buf = state["momentum_buffer"]
        ops.add_(buf.mul_(s["momentum"]), g, s["take"])
        direction = ops.add_(g.clone(), buf, s["momentum"]) if s["nesterov"] else buf
        _decay_(p, project_radial_(direction, p, g, s["delta"], s["eps"]), s)
        ops.add_(p, direction, s["neg_lr"])

    @staticmethod
    def fused_kernel(p, g, state, s) -> bool:
        """The C kernel (`engine/adamp.c`): two passes over memory, for float32 CPU tensors."""
        return _native_step(native.SGDP, p, g, (state["momentum_buffer"],), s)


class SGDP(Optimizer):
    """SGDP. Defaults lr 1e-3 (the reference requires one), momentum 0, dampening 0, weight_decay 0,
    nesterov False, eps 1e-8, delta 0.1, wd_ratio 0.1 (as clovaai/AdamP)."""

    rule = SGDPRule
