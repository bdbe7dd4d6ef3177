"""A model-aware factory: param groups the way practitioners build them (timm's convention).

* No weight decay on biases, normalization gains and every other parameter with `ndim <= 1`,
  nor on names matched by `no_decay` patterns or listed by the model's `no_weight_decay()`;
  `decay=(name, param) -> bool` replaces that rule entirely.
* Optional layer-wise lr decay: the parameter in block `i` of `n` (the first `.<int>.` in its
  name) gets `lr * layer_decay ** (n + 1 - (i + 1))`; parameters before the first block
  (embeddings) are layer 0, those after the last (final norm, head) layer n + 1 (scale 1).
  `layer_id=(name) -> int` overrides the assignment.
* Matrix rules (Muon, NorMuon): `create_optimizer` returns one optimizer whose hidden matrices
  take the rule and whose other parameters (embeddings, head, first conv, biases, gains) take
  groups naming `rule="adamw"` (see `hidden_matrices` and `AUX_DEFAULTS`).
* Projection rules (GaLore, Fira: `Rule.projection_kwargs`): the same split, but the projection
  kwargs (`rank`, ...) go to the hidden matrices' groups only; the other parameters stay in
  groups of the same optimizer without them (its plain AdamW update).
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
    only: Callable[[str, torch.nn.Parameter], bool] | None = None,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Param groups of `model`'s trainable parameters: (weight decay on/off) x (layer lr scale).

    `only` keeps the parameters it accepts (layer depths still count all of them); `extra` is
    merged into every group (e.g. `{"rule": "adamw", "betas": ...}`).
    """
    if layer_decay is not None and not 0 < layer_decay <= 1:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}")
    everything = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not everything:
        raise ValueError("model has no trainable parameters")
    named = [(n, p) for n, p in everything if only is None or only(n, p)]
    patterns = list(no_decay)
    hook = getattr(model, "no_weight_decay", None)
    listed = set(hook()) if callable(hook) else set()

    def decays(name: str, p: torch.nn.Parameter) -> bool:
        if decay is not None:
            return bool(decay(name, p))
        return p.ndim > 1 and name not in listed and not any(fnmatch.fnmatchcase(name, pat) for pat in patterns)

    names = [n for n, _ in everything]
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
            groups[key].update(extra or {})
        groups[key]["params"].append(p)
        groups[key]["param_names"].append(name)
    return list(groups.values())


AUX_DEFAULTS = {"lr": 3e-4, "betas": (0.9, 0.95), "eps": 1e-10}
"""The AdamW that Keller Jordan's `MuonWithAuxAdam` gives everything that is not a hidden matrix."""


def hidden_matrices(model: torch.nn.Module) -> Callable[[str, torch.nn.Parameter], bool]:
    """The default routing for matrix rules: True for hidden weight matrices (2-D or conv kernels).

    Not hidden: parameters with fewer than 2 dimensions (biases, gains), embedding tables, names
    the model lists in `no_weight_decay()` (positional embeddings, class tokens), the first
    convolution's kernel, and the output head, taken to be the last `nn.Linear` in module order
    (name it with `aux_patterns` when a model registers its head earlier).
    """
    hook = getattr(model, "no_weight_decay", None)
    aux, linears, first_conv = set(hook()) if callable(hook) else set(), [], None
    for prefix, module in model.named_modules():
        weight = f"{prefix}.weight" if prefix else "weight"
        if isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
            aux.add(weight)
        elif isinstance(module, torch.nn.modules.conv._ConvNd) and first_conv is None:
            first_conv = weight
        elif isinstance(module, torch.nn.Linear):
            linears.append(weight)
    aux.update(w for w in (first_conv, linears[-1] if linears else None) if w)
    return lambda name, p: p.ndim >= 2 and name not in aux


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
    matrix: Callable[[str, torch.nn.Parameter], bool] | None = None,
    aux_patterns: Iterable[str] = (),
    aux: str = "adamw",
    aux_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """The optimizer registered as `name` over `model`, with `param_groups`' grouping.

    `lr` and `weight_decay` default to the method's own defaults; other kwargs go to the optimizer.
    For a method that updates matrices only (Muon, NorMuon) the result is still ONE optimizer: the
    hidden matrices (`hidden_matrices`, or your `matrix(name, p)` predicate; names matching
    `aux_patterns` never) get the method, everything else groups that name `rule=aux` (AdamW) with
    `AUX_DEFAULTS` updated by `aux_kwargs` (its `lr`, `weight_decay`, `betas`, ...; weight decay
    defaults to the method's). Biases and gains get no weight decay in either part.
    For a projection method (GaLore, Fira: the rule's `projection_kwargs`, e.g. `rank`) those
    kwargs are set on the hidden matrices' groups only (routed as above); every other parameter is
    in groups of the same optimizer without them, i.e. its plain AdamW update.
    """
    cls = get(name)
    rule = getattr(cls, "rule", None)
    hyper = rule.hyper if rule is not None else {}
    lr = hyper["lr"].default if lr is None else lr
    if weight_decay is None:
        weight_decay = hyper["weight_decay"].default if "weight_decay" in hyper else 0.0
    common = dict(no_decay=no_decay, decay=decay, layer_decay=layer_decay, layer_id=layer_id)
    projection = rule.projection_kwargs if rule is not None else ()
    if rule is None or not (rule.matrix_only or projection):
        return cls(param_groups(model, lr=lr, weight_decay=weight_decay, **common), lr=lr, weight_decay=weight_decay,
                   **kwargs)  # fmt: skip
    patterns = list(aux_patterns)
    routed = matrix or hidden_matrices(model)

    def is_matrix(n: str, p: torch.nn.Parameter) -> bool:
        return bool(routed(n, p)) and not any(fnmatch.fnmatchcase(n, pat) for pat in patterns)

    if not rule.matrix_only:  # a projection rule: its projection kwargs on the hidden matrices only
        projected = {k: kwargs.pop(k) for k in projection if k in kwargs}
        groups = param_groups(model, lr=lr, weight_decay=weight_decay, only=is_matrix, extra=projected, **common)
        groups += param_groups(model, lr=lr, weight_decay=weight_decay, only=lambda n, p: not is_matrix(n, p), **common)
        return cls(groups, lr=lr, weight_decay=weight_decay, **kwargs)
    aux_cfg = {**AUX_DEFAULTS, "weight_decay": weight_decay, **(aux_kwargs or {})}
    aux_lr, aux_wd = aux_cfg.pop("lr"), aux_cfg.pop("weight_decay")
    groups = param_groups(model, lr=lr, weight_decay=weight_decay, only=is_matrix, **common)
    groups += param_groups(model, lr=aux_lr, weight_decay=aux_wd, only=lambda n, p: not is_matrix(n, p),
                           extra={"rule": aux, **aux_cfg}, **common)  # fmt: skip
    return cls(groups, lr=lr, weight_decay=weight_decay, **kwargs)
