"""The registry: optimizer names -> classes, and `create` to build one by name."""
from __future__ import annotations

from typing import Any, Iterable

import torch

_REGISTRY: dict[str, type[torch.optim.Optimizer]] = {}


def register(name: str, cls: type[torch.optim.Optimizer]) -> type[torch.optim.Optimizer]:
    """Make `cls` available as `create(name, ...)`; names are lower case and unique."""
    if name != name.lower() or not name:
        raise ValueError(f"optimizer names are non-empty and lower case, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"optimizer name {name!r} is already registered to {_REGISTRY[name].__name__}")
    _REGISTRY[name] = cls
    return cls


def available() -> list[str]:
    """The registered optimizer names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[torch.optim.Optimizer]:
    """The class registered as `name` (case-insensitive); unknown names raise ValueError listing the valid ones."""
    cls = _REGISTRY.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(available())}")
    return cls


def create(name: str, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], **kwargs: Any) -> torch.optim.Optimizer:
    """Build the optimizer registered as `name` over `params` (tensors or param-group dicts)."""
    return get(name)(params, **kwargs)
