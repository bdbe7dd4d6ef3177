"""SOAP (Vyas et al. 2024, "SOAP: Improving and Stabilizing Shampoo using Adam"), with the semantics
of the authors' `soap.py` (nikhilvyas/SOAP).

Adam run in the eigenbasis of Shampoo's factors. For each preconditioned mode k of a parameter
(a side of at most `max_precond_dim`), the factor `GG_k` is an exponential average of the gradient's
mode-k Gram matrix `G_(k) G_(k)^T` (for a matrix: `G G^T` on the rows, `G^T G` on the columns) and
`Q_k` an orthonormal estimate of its eigenvectors. Per step:

1. The first step only builds the preconditioner: `GG_k = (1 - shampoo_beta) G_(k) G_(k)^T`,
   `Q_k` = eigenvectors of `GG_k` in descending eigenvalue order; parameters are left untouched
   (no update, no weight decay).
2. Later steps (t = step - 1 counts the updates): `G' = G x_k Q_k^T` for every preconditioned mode;
   `m = b1 m + (1-b1) G'`, `v = b2 v + (1-b2) G'^2` (both kept in the eigenbasis);
   `u = (m / (sqrt(v) + eps)) x_k Q_k`; `p -= lr sqrt(1-b2^t)/(1-b1^t) u` (with `correct_bias`),
   then decoupled decay on the updated weights, `p -= lr wd p`.
3. Then the factors take the current gradient (`GG_k` lerps towards `G_(k) G_(k)^T` with weight
   `1 - shampoo_beta`; `shampoo_beta < 0` means `betas[1]`), and every `precondition_frequency`
   updates the basis is refreshed by one power iteration and a QR decomposition: the columns of
   `Q_k` are sorted by the estimated eigenvalues `diag(Q_k^T GG_k Q_k)` (descending), `v` is
   permuted along mode k the same way, and `Q_k = qr(GG_k Q_k).Q`. `m` is taken back to the
   parameter's basis with the old `Q` and re-projected with the new one (on every update step,
   as the reference does).

Modes larger than `max_precond_dim` are not preconditioned (their basis is the identity); a 1-D
parameter is preconditioned only with `precondition_1d=True`; a 0-d parameter has no mode, so it
is plain Adam (still skipping its first step), which is what the reference's code does for it.
State per parameter: `exp_avg`, `exp_avg_sq` (the parameter's shape, in the eigenbasis) and
`GG_k`, `Q_k` (d_k x d_k) for each preconditioned mode k; all tensors, so a checkpoint resumes
bit-identically. `precondition_frequency` and `shampoo_beta` are read from the group on every
step (the reference freezes them in the state at the first step).

Eigendecompositions and QR run in float32 for lower-precision parameters (as in the reference) and
in float64 for float64 parameters (the reference casts those to float32). The rule is not compiled
on the fused path (`compilable = False`): `eigh`/`qr`/`argsort` dominate and vary by step.

Options of the reference not supported yet (they raise ValueError): `merge_dims=True` and
`data_format="channels_last"`.
"""
from __future__ import annotations

import math

import torch

from ..engine import ops
from ..engine.ops import decomposable
from ..engine.hyper import Hyper, boolean, integer
from ..engine.optimizer import Optimizer
from ..engine.rule import Rule
from .common import decay_rates, eps, lr, weight_decay


def _shampoo_beta(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value) < 1.0 or value != value:
        raise ValueError(f"{name} must be a number < 1 (negative: use betas[1]), got {value!r}")
    return float(value)


def _merge_dims(name, value):
    if boolean(name, value):
        raise ValueError(f"{name}=True is not supported yet (only merge_dims=False)")
    return value


def _data_format(name, value):
    if value == "channels_last":
        raise ValueError(f"{name}='channels_last' is not supported yet (only 'channels_first')")
    if value != "channels_first":
        raise ValueError(f"{name} must be 'channels_first' (or 'channels_last', not supported yet), got {value!r}")
    return value


def preconditioned_modes(p: torch.Tensor, group: dict) -> list[int]:
    """The dimensions of `p` that get a Shampoo factor (the reference's non-empty `GG` entries)."""
    if p.dim() == 1:
        return [0] if group["precondition_1d"] and p.shape[0] <= group["max_precond_dim"] else []
    return [k for k, d in enumerate(p.shape) if d <= group["max_precond_dim"]]


def _modes(x: torch.Tensor, state: dict) -> list[torch.Tensor | None]:
    return [state.get(f"Q_{k}") for k in range(x.dim())]


def project(x: torch.Tensor, bases: list) -> torch.Tensor:
    """x x_k Q_k^T for every mode with a basis (into the eigenbasis).

    Each step contracts the leading axis and appends the result as the last one, so after every
    mode has been visited the axes are back in their order."""
    for q in bases:
        x = x.movedim(0, -1) if q is None else torch.tensordot(x, q, dims=([0], [0]))
    return x


def project_back(x: torch.Tensor, bases: list) -> torch.Tensor:
    """x x_k Q_k for every mode with a basis (back to the parameter's basis)."""
    for q in bases:
        x = x.movedim(0, -1) if q is None else torch.tensordot(x, q, dims=([0], [1]))
    return x


def gram(g: torch.Tensor, k: int) -> torch.Tensor:
    """G_(k) G_(k)^T: the mode-k unfolding times its transpose (d_k x d_k)."""
    unfolded = g.movedim(k, 0).reshape(g.shape[k], math.prod(g.shape) // max(g.shape[k], 1))
    return unfolded @ unfolded.T


def _linalg_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def eigenbasis(gg: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of the symmetric factor, columns in descending eigenvalue order."""
    a, poison = decomposable(gg.to(_linalg_dtype(gg)))  # a non-finite factor gives a NaN basis
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    try:
        _, q = torch.linalg.eigh(a + 1e-30 * eye)
    except RuntimeError:  # no convergence: retry in double precision, as the reference does
        _, q = torch.linalg.eigh(a.double() + 1e-30 * eye.double())
        q = q.to(a.dtype)
    return (torch.flip(q, [1]) + poison).to(gg.dtype)


class SOAPRule(Rule):
    """Adam in the eigenbasis of Shampoo's factors; first step builds the basis only; decay after the update."""

    exact_state = ("GG", "Q")  # Shampoo factors and their eigenbases stay exact
    hyper = {
        "lr": lr(3e-3),
        "betas": decay_rates(0.95, 0.95),
        "shampoo_beta": Hyper(-1.0, _shampoo_beta, "decay rate of the Shampoo factors (negative: betas[1])"),
        "eps": eps(1e-8),
        "weight_decay": weight_decay(1e-2),
        "precondition_frequency": Hyper(10, integer(1), "updates between eigenbasis refreshes"),
        "max_precond_dim": Hyper(10000, integer(0), "largest side that gets a Shampoo factor"),
        "merge_dims": Hyper(False, _merge_dims, "merge small dimensions (not supported yet)"),
        "precondition_1d": Hyper(False, boolean, "precondition 1-D parameters too"),
        "normalize_grads": Hyper(False, boolean, "scale each update to unit RMS"),
        "data_format": Hyper("channels_first", _data_format, "layout of 4-D parameters"),
        "correct_bias": Hyper(True, boolean, "Adam's bias correction"),
    }
    compilable = False  # eigh / qr / argsort per step: the fused path runs this rule eagerly

    @staticmethod
    def init(p, g, group):
        # Contiguous whatever p's layout, as the gradient is made below: the projections (and so the
        # eigenbases of nearly singular factors) then see the same numbers for any layout of p.
        state = {"exp_avg": torch.zeros(p.shape, dtype=p.dtype, device=p.device)}
        state["exp_avg_sq"] = torch.zeros_like(state["exp_avg"])
        for k in preconditioned_modes(p, group):
            d = p.shape[k]
            state[f"GG_{k}"] = torch.zeros(d, d, dtype=p.dtype, device=p.device)
            state[f"Q_{k}"] = torch.zeros(d, d, dtype=p.dtype, device=p.device)
        return state

    @staticmethod
    def scalars(group, step):
        b1, b2 = group["betas"]
        t = step - 1  # the reference's state["step"]: updates made, the first step makes none
        shampoo_beta = group["shampoo_beta"] if group["shampoo_beta"] >= 0 else b2
        step_size = group["lr"]
        if t > 0 and group["correct_bias"]:
            step_size = step_size * (1 - b2**t) ** 0.5 / (1 - b1**t)
        return {
            "first": step == 1,
            "refresh": t > 0 and t % group["precondition_frequency"] == 0,
            "normalize_grads": group["normalize_grads"],
            "beta1": b1,
            "beta2": b2,
            "one_minus_beta1": 1 - b1,
            "one_minus_beta2": 1 - b2,
            "eps": group["eps"],
            "neg_step_size": -step_size if t > 0 else 0.0,
            "neg_decay": -group["lr"] * group["weight_decay"],
            "factor_weight": 1 - shampoo_beta,
        }

    @staticmethod
    def update(p, g, state, s):
        m, v = state["exp_avg"], state["exp_avg_sq"]
        g = g.to(m.dtype).contiguous()  # the working precision of the state (fp32 state of bf16 params)
        bases = _modes(g, state)
        modes = [k for k, q in enumerate(bases) if q is not None]
        if s["first"]:
            for k in modes:
                ops.lerp_(state[f"GG_{k}"], gram(g, k), s["factor_weight"])
                state[f"Q_{k}"].copy_(eigenbasis(state[f"GG_{k}"]))
            return
        gp = project(g, bases)
        ops.add_(m.mul_(s["beta1"]), gp, s["one_minus_beta1"])
        ops.add_(v.mul_(s["beta2"]), gp.square(), s["one_minus_beta2"])
        u = project_back(m / v.sqrt().add_(s["eps"]), bases)
        if s["normalize_grads"]:
            u = u / (1e-30 + u.square().mean().sqrt())
        ops.add_(p, u, s["neg_step_size"])
        ops.add_(p, p, s["neg_decay"])  # decoupled decay on the updated weights
        # The preconditioner takes the current gradient; m leaves the old basis for the new one.
        m_param = project_back(m, bases)
        for k in modes:
            ops.lerp_(state[f"GG_{k}"], gram(g, k), s["factor_weight"])
        if s["refresh"]:
            for k in modes:
                gg, q = state[f"GG_{k}"], state[f"Q_{k}"]
                dtype = _linalg_dtype(gg)
                a, o = gg.to(dtype), q.to(dtype)
                order = torch.argsort(torch.diagonal(o.T @ a @ o), descending=True)
                v.copy_(v.index_select(k, order))
                power, poison = decomposable(a @ o[:, order])
                q.copy_((torch.linalg.qr(power).Q + poison).to(q.dtype))
        m.copy_(project(m_param, bases))


class SOAP(Optimizer):
    """SOAP. Defaults lr 3e-3, betas (0.95, 0.95), shampoo_beta -1 (= betas[1]), eps 1e-8,
    weight_decay 0.01, precondition_frequency 10, max_precond_dim 10000 (as nikhilvyas/SOAP).

    The first step of each parameter only builds its preconditioner (the parameter is unchanged)."""

    rule = SOAPRule
