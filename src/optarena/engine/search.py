"""Search spaces: the range each tunable hyperparameter is searched over in fair comparisons.

A rule declares `search_space` next to its hyperparameters: keys are constructor arguments
(`"lr"`), one element of a tuple argument (`"betas[0]"`), or a `create_optimizer` dict argument's
entry (`"aux_kwargs.lr"`). The spaces are workload-agnostic on purpose (AlgoPerf's external
tuning): an optimizer whose good settings move from task to task pays for it in the arena.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

_ELEMENT = re.compile(r"^(\w+)\[(\d+)\]$")


@dataclass(frozen=True)
class Tunable:
    """A closed range [low, high], searched uniformly, or uniformly in log space when `log`."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"Tunable needs finite low < high, got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale Tunable needs low > 0, got {self.low}")

    def at(self, u: float) -> float:
        """The value at quantile `u` in [0, 1] of the range (in log space when `log`)."""
        if not 0.0 <= u <= 1.0:
            raise ValueError(f"u must be in [0, 1], got {u}")
        if self.log:
            return math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        return self.low + u * (self.high - self.low)

    def clip(self, value: float) -> float:
        return min(max(float(value), self.low), self.high)


def log_range(low: float, high: float) -> Tunable:
    return Tunable(low, high, log=True)


def linear_range(low: float, high: float) -> Tunable:
    return Tunable(low, high, log=False)


def optimizer_kwargs(values: Mapping[str, float], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor kwargs from searched `values`: `"betas[0]"` replaces one element of the default
    tuple `defaults["betas"]`; `"aux_kwargs.lr"` becomes `{"aux_kwargs": {"lr": ...}}`."""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if (match := _ELEMENT.match(key)) is not None:
            name, index = match.group(1), int(match.group(2))
            current = list(kwargs.get(name, defaults.get(name, ())))
            if index >= len(current):
                raise ValueError(f"{key}: {name} has {len(current)} elements")
            current[index] = value
            kwargs[name] = tuple(current)
        elif "." in key:
            outer, inner = key.split(".", 1)
            kwargs.setdefault(outer, {})[inner] = value
        else:
            kwargs[key] = value
    return kwargs


def default_values(space: Mapping[str, Tunable], defaults: Mapping[str, Any]) -> dict[str, float]:
    """The point of `space` at the method's documented defaults (clipped into the range)."""
    out = {}
    for key, tunable in space.items():
        if (match := _ELEMENT.match(key)) is not None:
            value = defaults[match.group(1)][int(match.group(2))]
        elif "." in key:
            outer, inner = key.split(".", 1)
            value = defaults[outer][inner]
        else:
            value = defaults[key]
        out[key] = tunable.clip(value)
    return out
