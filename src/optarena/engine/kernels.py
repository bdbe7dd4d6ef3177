"""How a rule's update is executed: eagerly (the reference) or as one fused kernel per tensor.

The fused path compiles `read state -> rule.update -> write state` with `torch.compile`, so the
storage's decode/encode (bf16) fuses with the math; 8-bit state (codes plus per-block scales, not
parameter-shaped) runs the eager path even with `fused=True`. Sizes are dynamic: one compilation per rule,
storage, dtype, number of dimensions and bool switches serves every tensor size (the first one
in a process costs ~20 s on a laptop CPU, later ones seconds; inductor caches them on disk).
Scalars become 0-d tensors so that changing lr or the step never recompiles (dynamo's own
handling of Python floats is not used: it can bake a float passed as an op's `alpha` into the graph).
"""
from __future__ import annotations

from typing import Callable

import torch

from .rule import Rule, Scalars
from .layout import like_param
from .storage import HALF, StateStorage

Kernel = Callable[[torch.Tensor, torch.Tensor, dict, Scalars], None]

_COMPILED: dict[tuple, Callable] = {}
# Sizes are dynamic, so inductor decides whether a loop runs on all threads from the size seen
# at compile time (and its on-disk cache then reuses that decision for every size): compiled
# first on a small tensor, the kernel would stay single-threaded on large ones. With dynamic
# threads every loop gets a parallel region and OpenMP sizes it at run time.
_INDUCTOR_OPTIONS = {"cpp.dynamic_threads": True}


def apply_eager(rule: type[Rule], storage: StateStorage, p, g, stored: dict, s: Scalars, g2=None, only_if=None) -> None:
    """Read the working state, run the rule's update, write the state back.

    A half-precision parameter (bf16, fp16) is updated in float32 and rounded once ("opmath", as
    torch's fused kernels): the rule sees float32 copies of it and of its gradients, and state
    read in float32 (`storage.working_dtype`). `g2`, when a transform split it off, is the
    gradient for the rule's second moment (`Rule.second_moment_grad`). `only_if` (a 0-d bool
    tensor, in compiled steps) keeps the old parameter and state where it is False.
    """
    work = storage.read(stored, p, rule)
    target = None
    if p.dtype in HALF:
        target, p, g = p, p.float(), g.float()
        g2 = None if g2 is None else g2.float()
    old = None if only_if is None else [t.clone() for t in (p, *work.values())]
    if g2 is None:
        rule.update(p, g, work, s)
    else:
        rule.update(p, g, work, s, g2)
    if old is not None:
        for new, kept in zip((p, *work.values()), old):
            new.copy_(torch.where(only_if, new, kept))
    storage.write(stored, work, rule)
    if target is not None:
        target.copy_(p)


def apply_traced(rule: type[Rule], storage: StateStorage, items: list[tuple], only_if=None) -> None:
    """The step inside a user's `torch.compile`d training step: the rules' torch ops are traced
    into the user's graph (and fused by its compiler), whatever `fused` says; ctypes calls, torch's
    private fused kernels and nested compiled wrappers would only break the graph."""
    for p, g, stored, s, g2 in items:
        apply_eager(rule, storage, p, g, stored, s, g2, only_if)


def _compiled(rule: type[Rule], storage: StateStorage, p: torch.Tensor, stored: dict, s: "StepScalars", g2, n: int) -> Callable:
    """The compiled update for this combination of everything a graph specializes on.

    The key holds dtype, number of dimensions, the state's names, the rule's bool switches and
    whether a g2 was split off. Bools are baked into the wrapper; float scalars arrive packed in
    one 1-D tensor, state as a tuple, tensors in their own shape (not as flattened views): few
    inputs and no view bases means few guards, which dominate the cost of a call on small tensors.
    One call updates `n` tensors of one shape (their tuples unrolled into one graph), so that cost
    is paid once per chunk, not once per tensor.
    """
    floats, switches = s.layout()
    key = (rule, storage.precision, p.dtype, p.device.type, p.dim(), tuple(stored), floats, switches, g2 is not None, n)
    fn = _COMPILED.get(key)
    if fn is None:
        # A fresh code object per key: dynamo counts recompilations per code object, so keys
        # sharing one wrapper would exhaust each other's recompile budget.
        scope = {
            "apply_eager": apply_eager, "rule": rule, "storage": storage,
            "names": tuple(stored), "floats": floats, "switches": switches, "n": n,
        }  # fmt: skip
        exec(
            "def fused_update(ps, gs, states, packed, g2s):\n"
            "    s = dict(zip(floats, packed.unbind(0)))\n"
            "    s.update(switches)\n"
            "    for i in range(n):\n"
            "        g2 = None if g2s is None else g2s[i]\n"
            "        apply_eager(rule, storage, ps[i], gs[i], dict(zip(names, states[i])), s, g2)\n",
            scope,
        )
        fn = torch.compile(scope["fused_update"], dynamic=True, fullgraph=True, options={**_INDUCTOR_OPTIONS, **rule.compile_options})
        _COMPILED[key] = fn
    return fn


class StepScalars(dict):
    """A rule's scalars for one (param group, step), shared by the group's tensors: what the
    compiled path derives from them (the packed tensor, the key's layout) is built once."""

    def layout(self) -> tuple[tuple, tuple]:
        """(names of the float scalars, (name, value) of the others): part of the compile key."""
        if "_layout" not in self.__dict__:
            floats = tuple(k for k, v in self.items() if isinstance(v, float))
            self._layout = (floats, tuple((k, v) for k, v in self.items() if not isinstance(v, float)))
        return self._layout

    def packed(self, param: torch.Tensor) -> torch.Tensor:
        # float32 (float64 for float64 parameters): the precision in which torch's eager kernels
        # apply a Python scalar to such tensors.
        dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
        cache = self.__dict__.setdefault("_packed", {})
        key = (dtype, param.device)
        if key not in cache:
            values = [v for v in self.values() if isinstance(v, float)]
            cache[key] = torch.tensor(values, dtype=dtype, device=param.device)
        return cache[key]


def _fusable(p: torch.Tensor, g: torch.Tensor, stored: dict, g2) -> bool:
    tensors = (p, g, *stored.values(), *(() if g2 is None else (g2,)))
    return p.numel() >= 2 and all(t.is_contiguous() and t.shape == p.shape for t in tensors)


def apply_fused(rule: type[Rule], storage: StateStorage, items: list[tuple]) -> None:
    """Update `items` (`(p, g, stored, s, g2)` each) with fused kernels where possible, else eagerly.

    A rule's own fused kernel runs per tensor; compiled updates run per chunk of tensors that share
    a shape and their scalars (same group and step). The choice and the chunks depend only on the
    tensors' layout, sizes and order, so a resumed run takes the same paths and stays bit-identical.
    """
    buckets: dict[tuple, list[tuple]] = {}
    for p, g, stored, s, g2 in items:
        # Kernels pair elements by memory position: a gradient laid out otherwise than its
        # parameter (assigned by hand, `g.t().contiguous().t()`) is copied into the parameter's layout.
        g, g2 = like_param(g, p), None if g2 is None else like_param(g2, p)
        # A rule's own fused kernel knows one gradient only: with a split-off g2 the compiled path runs.
        if rule.fused_kernel is not None and g2 is None and storage.kernel_ready(stored, p):
            if rule.fused_kernel(p, g, stored, s):
                continue
        if not rule.compilable or not _fusable(p, g, stored, g2):
            apply_eager(rule, storage, p, g, stored, s, g2)
            continue
        s = s if isinstance(s, StepScalars) else StepScalars(s)
        buckets.setdefault((id(s), tuple(p.shape), g2 is not None), []).append((p, g, stored, s, g2))
    for bucket in buckets.values():
        start = 0
        while start < len(bucket):
            n = 1 << (min(rule.max_chunk, len(bucket) - start).bit_length() - 1)
            chunk, start = bucket[start : start + n], start + n
            p, _, stored, s, g2 = chunk[0]
            # detach: requires_grad would be one more guard per tensor.
            _compiled(rule, storage, p, stored, s, g2, n)(
                tuple(c[0].detach() for c in chunk), tuple(c[1] for c in chunk),
                tuple(tuple(c[2].values()) for c in chunk), s.packed(p),
                None if g2 is None else tuple(c[4] for c in chunk),
            )  # fmt: skip
