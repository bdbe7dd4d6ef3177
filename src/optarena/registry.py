"""The registry: method names -> classes and their cards, and `create` to build one by name."""
from __future__ import annotations

from typing import Any, Iterable

import torch

_REGISTRY: dict[str, type[torch.optim.Optimizer]] = {}
_CARDS: dict[str, Any] = {}


def register(name: str, cls: type[torch.optim.Optimizer], card: Any = None) -> type[torch.optim.Optimizer]:
    """Make `cls` available as `create(name, ...)`; names are lower case and unique. `card` (an
    `optarena.cards.Card` named `name`) is what the arena needs to run and tune the method."""
    if name != name.lower() or not name:
        raise ValueError(f"optimizer names are non-empty and lower case, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"optimizer name {name!r} is already registered to {_REGISTRY[name].__name__}")
    if card is not None and (card.name != name or card.cls is not cls):
        raise ValueError(f"card must describe {name!r} ({cls.__name__}), got the card of {card.name!r} ({card.cls.__name__})")
    _REGISTRY[name] = cls
    if card is not None:
        _CARDS[name] = card
    return cls


def register_trainer(card: Any) -> None:
    """Make a method that is not an optimizer (a card with a `trainer`) known to the arena as `card.name`."""
    if card.trainer is None:
        raise ValueError(f"card {card.name!r} has no trainer; optimizers are registered with register(name, cls, card=...)")
    if card.name in _REGISTRY or (card.name in _CARDS and _CARDS[card.name] is not card):
        raise ValueError(f"method name {card.name!r} is already registered")
    _CARDS[card.name] = card


def methods() -> list[str]:
    """Every method the arena can run: the optimizers with cards and the trainers, sorted."""
    return sorted(_CARDS)


def card(name: str) -> Any:
    """The card of the method registered as `name`; ValueError if it has none (the arena cannot run it)."""
    if not isinstance(name, str) or name.lower() not in _CARDS:
        get(name)  # an unknown name: the error lists the optimizers
    found = _CARDS.get(name.lower())
    if found is None:
        raise ValueError(f"optimizer {name!r} has no card, so the arena cannot tune it; register it with "
                         "optarena.register(name, cls, card=optarena.cards.Card(...))")  # fmt: skip
    return found


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
