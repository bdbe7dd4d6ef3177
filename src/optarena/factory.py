"""A model-aware factory: param groups the way practitioners build them (timm's convention).

* No weight decay on biases, normalization gains and every other parameter with `ndim <= 1`,
  nor on names matched by `no_decay` patterns or listed by the model's `no_weight_decay()`;
  `decay=(name, param) -> bool` replaces that rule entirely.
* Optional layer-wise lr decay: the parameter in block `i` of `n` (the first `.<int>.` in its
  name) gets `lr * layer_decay ** (n + 1 - (i + 1))`; parameters before the first block
  (embeddings) are layer 0, those after the last (final norm, head) layer n + 1 (scale 1).
  `layer_id=(name) -> int` overrides the assignment.
Each group carries `param_names`, so which parameter went where can be inspected.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any, Callable, Iterable

import torch

from .registry import get

_BLOCK = re.compile(r"\.(\d+)\.")


def _default_layer_ids(names: list[str]) -> dict[str, int]:
    found = {n: int(m.group(1)) + 1 for n in names if (m := _BLOCK.search(f".{n}"))}
    last = max(found.values(), default=0)
    ids, seen_block = {}, False
    for n in names:
        if n in found:
            ids[n], seen_block = found[n], True
        else:
            ids[n] = last + 1 if seen_block else 0
    return ids


def param_groups(
    model: torch.nn.Module,
    *,
    lr: float,
    weight_decay: float,
    no_decay: Iterable[str] = (),
    decay: Callable[[str, torch.nn.Parameter], bool] | None = None,
    layer_decay: float | None = None,
    layer_id: Callable[[str], int] | None = None,
) -> list[dict[str, Any]]:
    """Param groups of `model`'s trainable parameters: (weight decay on/off) x (layer lr scale)."""
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ValueError("model has no trainable parameters")
    patterns = list(no_decay)
    hook = getattr(model, "no_weight_decay", None)
    listed = set(hook()) if callable(hook) else set()

    def decays(name: str, p: torch.nn.Parameter) -> bool:
        if decay is not None:
            return bool(decay(name, p))
        return p.ndim > 1 and name not in listed and not any(fnmatch.fnmatchcase(name, pat) for pat in patterns)

    names = [n for n, _ in named]
    ids = {n: layer_id(n) for n in names} if layer_id else _default_layer_ids(names)
    top = max(ids.values())
    groups: dict[tuple[bool, int], dict[str, Any]] = {}
    for name, p in named:
        on = decays(name, p)
        depth = ids[name] if layer_decay is not None else top
        key = (on, depth)
        if key not in groups:
            scale = layer_decay ** (top - depth) if layer_decay is not None else 1.0
            groups[key] = {"params": [], "param_names": [], "lr": lr * scale, "weight_decay": weight_decay if on else 0.0}
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return list(groups.values())


def create_optimizer(
    model: torch.nn.Module,
    name: str,
    lr: float | None = None,
    weight_decay: float | None = None,
    *,
    no_decay: Iterable[str] = (),
    decay: Callable[[str, torch.nn.Parameter], bool] | None = None,
    layer_decay: float | None = None,
    layer_id: Callable[[str], int] | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """The optimizer registered as `name` over `model`, with `param_groups`' grouping.

    `lr` and `weight_decay` default to the method's own defaults; other kwargs go to the optimizer.
    """
    cls = get(name)
    hyper = getattr(cls, "rule", None).hyper if hasattr(cls, "rule") else {}
    lr = hyper["lr"].default if lr is None else lr
    if weight_decay is None:
        weight_decay = hyper["weight_decay"].default if "weight_decay" in hyper else 0.0
    groups = param_groups(
        model, lr=lr, weight_decay=weight_decay, no_decay=no_decay, decay=decay, layer_decay=layer_decay,
        layer_id=layer_id,
    )  # fmt: skip
    return cls(groups, lr=lr, weight_decay=weight_decay, **kwargs)
