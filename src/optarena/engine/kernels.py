"""How a rule's update is executed: eagerly (the reference) or as one fused kernel per tensor.

The fused path compiles `read state -> rule.update -> write state` with `torch.compile`, so the
storage's decode/encode fuses with the math. Elementwise rules run on 1-D views with dynamic
shapes: one compilation per rule, storage and dtype combination serves every tensor size (rules
that reduce over a tensor, like AdamP's projection, compile once per number of dimensions)
(compiled once per process, ~20 s on a laptop CPU; inductor caches it on disk after that).
Scalars become 0-d tensors so that changing lr or the step never recompiles (dynamo's own
handling of Python floats is not used: it can bake a float passed as an op's `alpha` into the graph).
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .rule import Rule, Scalars
from .storage import StateStorage

Kernel = Callable[[torch.Tensor, torch.Tensor, dict, Scalars], None]

_COMPILED: dict[tuple, Callable] = {}


def apply_eager(rule: type[Rule], storage: StateStorage, p, g, stored: dict, s: Scalars, g2=None) -> None:
    """Read the working state, run the rule's update, write the state back.

    `g2`, when a transform split it off, is the gradient for the rule's second moment (`Rule.second_moment_grad`).
    """
    work = {k: storage.read(v, p) for k, v in stored.items()}
    if g2 is None:
        rule.update(p, g, work, s)
    else:
        rule.update(p, g, work, s, g2)
    for k, v in stored.items():
        storage.write(v, work[k])


def _compiled(rule: type[Rule], storage: StateStorage, p: torch.Tensor, stored: dict, s: Scalars, g2) -> Callable:
    # The key holds everything a graph specializes on (dtype, the rule's bool switches, state
    # present, a split-off g2), so each wrapper compiles about once; sizes and float scalars are dynamic.
    switches = tuple(sorted((k, v) for k, v in s.items() if isinstance(v, bool)))
    ndim = 1 if rule.elementwise else p.dim()
    key = (rule, storage.precision, p.dtype, p.device.type, ndim, tuple(stored), switches, g2 is not None)
    fn = _COMPILED.get(key)
    if fn is None:
        # A fresh code object per key: dynamo counts recompilations per code object, so keys
        # sharing one wrapper would exhaust each other's recompile budget.
        scope = {"apply_eager": apply_eager, "rule": rule, "storage": storage}
        exec("def fused_update(p, g, stored, s, g2):\n    apply_eager(rule, storage, p, g, stored, s, g2)\n", scope)
        fn = torch.compile(scope["fused_update"], dynamic=True, fullgraph=True)
        _COMPILED[key] = fn
    return fn


def _as_tensors(s: Scalars, param: torch.Tensor) -> dict[str, Any]:
    # float32 (float64 for float64 parameters): the precision in which torch's eager kernels
    # apply a Python scalar to such tensors.
    dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
    return {k: torch.tensor(v, dtype=dtype, device=param.device) if isinstance(v, float) else v for k, v in s.items()}


def _fusable(p: torch.Tensor, g: torch.Tensor, stored: dict, g2) -> bool:
    tensors = (p, g, *stored.values(), *(() if g2 is None else (g2,)))
    return p.numel() >= 2 and all(t.is_contiguous() and t.shape == p.shape for t in tensors)


def apply_fused(rule: type[Rule], storage: StateStorage, p, g, stored: dict, s: Scalars, g2=None) -> None:
    """One fused kernel for this tensor where possible, else the eager path.

    The choice depends only on the tensor's layout and size, so a given tensor always takes the
    same path and resumed runs stay bit-identical.
    """
    # A rule's own fused kernel knows one gradient only: with a split-off g2 the compiled path runs.
    if rule.fused_kernel is not None and g2 is None and all(storage.is_passthrough(v, p) for v in stored.values()):
        if rule.fused_kernel(p, g, stored, s):
            return
    if not _fusable(p, g, stored, g2):
        apply_eager(rule, storage, p, g, stored, s, g2)
        return
    # Elementwise rules run on 1-D views (one graph for every shape); others keep their shape
    # (one graph per number of dimensions). detach: requires_grad would be one more guard.
    shape = (-1,) if rule.elementwise else p.shape
    fn = _compiled(rule, storage, p, stored, s, g2)
    fn(
        p.detach().view(shape), g.view(shape), {k: v.view(shape) for k, v in stored.items()},
        _as_tensors(s, p), None if g2 is None else g2.view(shape),
    )  # fmt: skip
