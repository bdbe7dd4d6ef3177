"""Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks") and NorMuon
(Li et al. 2025, "NorMuon: Making Muon more efficient and scalable"), with the semantics of
KellerJordan/Muon `muon.py` (`SingleDeviceMuon`) and zichongli5/NorMuon `normuon.py`
(`SingleDeviceNorMuon`).

Both take SGD momentum, orthogonalize it by Newton-Schulz (`rules/orthogonalize.py`) and step along
the result; NorMuon then normalizes each row by a running second moment. They are matrix rules:
every parameter must have two or more dimensions (a 4-D conv weight is orthogonalized as its
`(out, in*h*w)` flattening). Biases, gains, embeddings and the output head belong to AdamW, which
`optarena.create_optimizer(model, "muon")` arranges.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from ..engine import ops
from ..engine.hyper import Hyper, boolean, integer, one_of, unit_interval
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from .common import lr, weight_decay
from .orthogonalize import NS_DTYPES, NS_METHODS, newton_schulz

SCALES = ("keller", "moonlight")
# The fused path follows eager bit for bit, because a bf16 iteration turns any last-bit difference
# of its input into bf16-sized ones. Inductor would compute a chain of bf16 ops in fp32 and round
# once, and its pattern matcher folds `b*A + mm(...)` into one addmm that adds before rounding the
# product; eager rounds after every op: emulated casts and no pattern matcher. torch's eager CPU
# kernels for lerp and add-with-alpha use fused multiply-adds: contracted floating point.
_NS_COMPILE_OPTIONS = {
    "emulate_precision_casts": True,
    "pattern_matcher": False,
    "cpp.enable_floating_point_contract_flag": "fast",
}


def _muon_hyper() -> dict[str, Hyper]:
    return {
        "lr": lr(0.02),
        "weight_decay": weight_decay(0.0),
        "momentum": Hyper(0.95, unit_interval, "momentum factor (the buffer is a lerp towards the gradient)"),
        "nesterov": Hyper(True, boolean, "orthogonalize the Nesterov look-ahead g + momentum*(buf - g)"),
        "ns_steps": Hyper(5, integer(1), "Newton-Schulz iterations"),
        "ns_dtype": Hyper("bfloat16", one_of(*NS_DTYPES), "dtype of the Newton-Schulz iteration"),
        "ns_method": Hyper("standard", one_of(*NS_METHODS),
                           "the reference's products, or the same polynomial from the Gram matrix with fewer FLOPs"),
        "scale": Hyper("keller", one_of(*SCALES), "shape scale: sqrt(max(1, rows/cols)) or 0.2*sqrt(max(rows, cols))"),
    }


def _scalars(group: dict) -> dict[str, Any]:
    lr_, wd, momentum = group["lr"], group["weight_decay"], group["momentum"]
    return {
        "neg_lr": -lr_,
        "momentum": momentum,
        "one_minus_momentum": 1 - momentum,
        "decay_on": wd != 0,
        "decay": 1 - lr_ * wd,
        "nesterov": group["nesterov"],
        "ns_steps": group["ns_steps"],
        "ns_dtype": group["ns_dtype"],
        "ns_method": group["ns_method"],
        "scale": group["scale"],
    }


def _direction(g: torch.Tensor, buf: torch.Tensor, s) -> torch.Tensor:
    """`buf += (1-momentum) (g - buf)`; the Nesterov look-ahead `g + momentum (buf - g)` or `buf`.
    The reference computes the look-ahead into `p.grad`; here it is a new tensor (same values)."""
    _lerp_(buf, g, s["one_minus_momentum"])
    return _lerp_(g.clone(), buf, s["momentum"]) if s["nesterov"] else buf


def _lerp_(x: torch.Tensor, y: torch.Tensor, weight) -> torch.Tensor:
    """`ops.lerp_`, but torch's lerp also for a 0-d tensor weight of the operands' dtype: compiled
    with contracted floating point, it rounds as the eager kernel does (see _NS_COMPILE_OPTIONS)."""
    if isinstance(weight, torch.Tensor) and x.dtype == y.dtype == weight.dtype:
        return x.lerp_(y, weight)
    return ops.lerp_(x, y, weight)


def _shape_scale(p: torch.Tensor, s) -> float:
    """`keller`: `sqrt(max(1, rows/cols))` of the tensor's LAST TWO dims, as the reference computes it
    from the unflattened gradient (for a conv weight the kernel's h/w, not the flattened matrix's).
    `moonlight`: `0.2*sqrt(max(rows, cols))` of the orthogonalized `(out, -1)` matrix, which gives the
    update an RMS of 0.2 (AdamW's typical one, Moonlight's `lr` matching)."""
    if s["scale"] == "keller":
        return max(1.0, p.shape[-2] / p.shape[-1]) ** 0.5
    return 0.2 * max(p.shape[0], math.prod(p.shape[1:])) ** 0.5


def _orthogonalized(u: torch.Tensor, s) -> torch.Tensor:
    """Newton-Schulz of `u` viewed as `(out, -1)`, in the `ns_dtype`, reshaped back to `u`'s shape."""
    return newton_schulz(u.flatten(1), s["ns_steps"], NS_DTYPES[s["ns_dtype"]], s["ns_method"]).view(u.shape)


def _apply(p: torch.Tensor, update: torch.Tensor, s) -> None:
    """Decoupled weight decay before the step, `p *= 1 - lr*wd`, then `p -= lr * update`."""
    if s["decay_on"]:
        decay = s["decay"]
        if isinstance(decay, torch.Tensor) and p.dtype == torch.float32:
            # Compiled: the product in float64 is exact, so rounding it gives eager's `p * decay`
            # bit for bit, and no multiply-add can fuse it with the update's product below.
            p.copy_(p.double().mul_(decay.double()))
        else:
            p.mul_(decay)
    # In the wider of the two dtypes (a bf16 update is added to an fp32 parameter in fp32, as torch does).
    ops.add_(p, update.to(torch.promote_types(update.dtype, p.dtype)), s["neg_lr"])


class MuonRule(Rule):
    """`buf = lerp(buf, g, 1-momentum)`; `u = lerp(g, buf, momentum)` (Nesterov) or `buf`;
    `O = NS(u as (out, -1)) * shape scale` (in `ns_dtype`); `p *= 1 - lr*wd`; `p -= lr*O`."""

    hyper = _muon_hyper()
    matrix_only = True  # the engine refuses 1-D parameters and points to create_optimizer
    compile_options = _NS_COMPILE_OPTIONS

    @staticmethod
    def init(p, g, group):
        return {"momentum_buffer": torch.zeros_like(p)}

    @staticmethod
    def scalars(group, step):
        return _scalars(group)

    @staticmethod
    def update(p, g, state, s):
        o = _orthogonalized(_direction(g, state["momentum_buffer"], s), s)
        scale = _shape_scale(p, s)
        if scale != 1.0:  # rounded to the ns_dtype, as the reference (written so inductor rounds the same)
            o = (o.float() * scale).to(o.dtype)
        _apply(p, o, s)


class NorMuonRule(Rule):
    """Muon's `O` (in float32 after the iteration), then per row (over the last dim of the tensor):
    `v = lerp(v, mean(O^2), 1-beta2)` (no bias correction); `O' = O / (sqrt(v) + 1e-10)`;
    `O' *= ||O|| / (||O'|| + 1e-10)` (norms over the last two dims); `O' *= shape scale`;
    `p *= 1 - lr*wd`; `p -= lr*O'`.

    As in the reference, a 4-D weight `[o, i, h, w]` is orthogonalized flattened but normalized in
    its own shape: `v` has shape `[o, i, h, 1]` and the norm is restored per `[o, i]` slice."""

    nonnegative_state = ("second_momentum_buffer",)
    hyper = {**_muon_hyper(), "beta2": Hyper(0.95, unit_interval, "decay rate of the per-row second moment")}
    matrix_only = True
    compile_options = _NS_COMPILE_OPTIONS

    @staticmethod
    def init(p, g, group):
        return {"momentum_buffer": torch.zeros_like(p), "second_momentum_buffer": torch.zeros_like(p[..., :1])}

    @staticmethod
    def scalars(group, step):
        return {**_scalars(group), "one_minus_beta2": 1 - group["beta2"]}

    @staticmethod
    def update(p, g, state, s):
        v = state["second_momentum_buffer"]
        o = _orthogonalized(_direction(g, state["momentum_buffer"], s), s)
        o = o.to(torch.promote_types(torch.float32, p.dtype))  # the reference normalizes in float32
        norm = o.norm(dim=(-2, -1), keepdim=True)
        ops.lerp_(v, (o * o).mean(dim=-1, keepdim=True), s["one_minus_beta2"])
        o = o * (1 / (v.sqrt() + 1e-10))
        o = o * (norm / (o.norm(dim=(-2, -1), keepdim=True) + 1e-10))
        scale = _shape_scale(p, s)
        if scale != 1.0:
            o = o * scale
        _apply(p, o, s)


class Muon(Optimizer):
    """Muon. Defaults lr 0.02, weight_decay 0, momentum 0.95, nesterov True, ns_steps 5,
    ns_dtype "bfloat16", scale "keller" (as KellerJordan/Muon), ns_method "standard" (the
    reference's products; "gram": same polynomial, ~0.7x the time, see rules/orthogonalize.py).
    Matrices only."""

    rule = MuonRule


class NorMuon(Optimizer):
    """NorMuon. Defaults lr 0.02, weight_decay 0, momentum 0.95, beta2 0.95, nesterov True, ns_steps 5,
    ns_dtype "bfloat16", scale "keller" (as zichongli5/NorMuon), ns_method "standard" (as Muon).
    Matrices only."""

    rule = NorMuonRule
