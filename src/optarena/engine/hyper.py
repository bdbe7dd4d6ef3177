"""Hyperparameter specs: each has a default and a check whose error names the argument and its range."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of a rule: its default and the check that normalizes or rejects a value."""

    default: Any
    check: Check
    doc: str = ""


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            import torch

            if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
                return _number(name, value.item())
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        raise ValueError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def non_negative(name: str, value: Any) -> float:
    """A finite number in [0, inf)."""
    value = _number(name, value)
    if value < 0:
        raise ValueError(f"{name} must be in [0, inf), got {value}")
    return value


def positive(name: str, value: Any) -> float:
    """A finite number in (0, inf)."""
    value = _number(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be in (0, inf), got {value}")
    return value


def unit_interval(name: str, value: Any) -> float:
    """A number in [0, 1): a decay rate such as a beta or a momentum."""
    value = _number(name, value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


def fraction(name: str, value: Any) -> float:
    """A number in [0, 1]: a share, such as the dampening of a momentum."""
    value = _number(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return value


def betas(count: int) -> Check:
    """A tuple of `count` decay rates, each in [0, 1)."""

    def check(name: str, value: Any) -> tuple[float, ...]:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != count:
            raise ValueError(f"{name} must be a sequence of {count} numbers, each in [0, 1), got {value!r}")
        return tuple(unit_interval(f"{name}[{i}]", b) for i, b in enumerate(value))

    return check


def integer(low: int) -> Check:
    """A whole number in [low, inf) (bools refused)."""

    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer in [{low}, inf), got {value!r}")
        return value

    return check


def one_of(*choices: Any) -> Check:
    """One of a fixed set of values (e.g. names of variants)."""

    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    return check


def optional(inner: Check, meaning: str) -> Check:
    """None (`meaning`, e.g. "no projection") or a value `inner` accepts."""

    def check(name: str, value: Any) -> Any:
        if value is None:
            return None
        try:
            return inner(name, value)
        except ValueError as err:
            raise ValueError(f"{err} (or None: {meaning})") from None

    return check


def boolean(name: str, value: Any) -> bool:
    """True or False."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def resolve(specs: dict[str, Hyper], given: dict[str, Any], where: str) -> dict[str, Any]:
    """Checked values for `given`; unknown names raise ValueError listing the accepted ones."""
    unknown = sorted(set(given) - set(specs))
    if unknown:
        raise ValueError(
            f"{where}: unknown argument(s) {', '.join(map(repr, unknown))}; accepted: {', '.join(sorted(specs))}"
        )
    return {name: specs[name].check(name, value) for name, value in given.items()}
