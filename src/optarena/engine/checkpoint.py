"""Checks a `state_dict` against the optimizer it is loaded into, before anything changes.

A checkpoint of another model (other shapes, other parameter counts), of another precision or a
damaged one must fail with a ValueError that names the parameter, the state and what was
expected: a fused kernel handed a wrongly shaped state walks past its memory. The expected
state of a parameter is what its rule's `init` makes under the group's settings (run on the meta
device: shapes without memory), in the form the storage keeps it (`StateStorage.layout`).
"""
from __future__ import annotations

from typing import Any

import torch


def check_loadable(optimizer: Any, state_dict: dict[str, Any]) -> dict[Any, tuple[torch.Tensor, dict]]:
    """Validate `state_dict` (without its "engine" entry) for `optimizer`; return each saved
    parameter id's `(parameter, state)` with `step` as a Python int. Raises ValueError."""
    groups, state = state_dict.get("param_groups"), state_dict.get("state")
    if not isinstance(groups, (list, tuple)) or not isinstance(state, dict):
        raise ValueError("state_dict must hold 'param_groups' (a list) and 'state' (a dict), as Optimizer.state_dict() makes")
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(f"state_dict has {len(groups)} param groups, this optimizer has {len(optimizer.param_groups)}")
    where: dict[Any, tuple[torch.Tensor, str, Any, dict]] = {}
    for index, (saved, group) in enumerate(zip(groups, optimizer.param_groups)):
        if not isinstance(saved, dict) or not isinstance(saved.get("params"), (list, tuple)):
            raise ValueError(f"state_dict param group {index} must be a dict with a 'params' list")
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(
                f"param group {index}: state_dict has {len(saved['params'])} parameters, "
                f"this optimizer's group has {len(group['params'])}"
            )
        rule = optimizer.rule_of(saved)
        settings = {k: spec.default for k, spec in rule.hyper.items()} | saved
        names = group.get("param_names") or saved.get("param_names") or [None] * len(group["params"])
        for j, (saved_id, p) in enumerate(zip(saved["params"], group["params"])):
            label = f"{names[j]!r} (group {index}, index {j})" if names[j] else f"at group {index}, index {j}"
            where[saved_id] = (p, f"parameter {label}", rule, settings)
    loaded = {}
    for saved_id, entries in state.items():
        if saved_id not in where:
            raise ValueError(f"state_dict holds state for parameter id {saved_id!r}, which no param group lists")
        p, label, rule, settings = where[saved_id]
        loaded[saved_id] = (p, _checked(optimizer.storage, p, entries, rule, settings, label))
    return loaded


def expected_state(storage: Any, p: torch.Tensor, rule: Any, group: dict) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """`(required, optional)`: `{entry: (shape, dtype)}` of the state `rule` keeps for `p` under
    `group`, and of state it may keep beyond that (`Rule.optional_state`, shaped like `p`)."""
    try:
        meta = torch.empty_like(p, device="meta")
        fresh = rule.init(meta, meta, group)
    except (NotImplementedError, RuntimeError):  # an init that needs real values
        fresh = rule.init(torch.zeros_like(p), torch.zeros_like(p), group)
    required, optional = {}, {}
    for key, value in fresh.items():
        required.update(storage.layout(key, value, p, rule))
    for key in rule.optional_state:
        if key not in fresh:
            optional.update(storage.layout(key, torch.empty_like(p, device="meta"), p, rule))
    return required, optional


def _checked(storage: Any, p: torch.Tensor, state: Any, rule: Any, group: dict, label: str) -> dict:
    if not isinstance(state, dict):
        raise ValueError(f"state of {label} must be a dict, got {type(state).__name__}")
    if not state:
        return {}
    state = dict(state)
    state["step"] = _step(state.get("step"), label)
    required, optional = expected_state(storage, p, rule, group)
    recreated = set(rule.needed_state(group) or ())  # the engine makes these where they are missing
    for key, value in state.items():
        if key == "step":
            continue
        if key not in required and key not in optional:
            raise ValueError(
                f"state {key!r} of {label} is not state of {rule.__name__} with these settings "
                f"(expected {', '.join(map(repr, required)) or 'none besides step'})"
            )
        shape, dtype = required.get(key) or optional[key]
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state {key!r} of {label} must be a tensor, got {type(value).__name__}")
        if tuple(value.shape) != shape or value.dtype != dtype:
            raise ValueError(
                f"state {key!r} of {label}: expected shape {shape} {_dtype(dtype)}, "
                f"found shape {tuple(value.shape)} {_dtype(value.dtype)}{_hint(storage, value, dtype)}"
            )
    # A state the engine recreates may be missing as a whole (codes and scales), never in part.
    missing = [k for k in required if k not in state and not (_base(k) in recreated and _base(k) not in state)]
    if missing:
        raise ValueError(f"state of {label} lacks {', '.join(map(repr, missing))} (it has {', '.join(map(repr, state))})")
    return state


def _base(entry: str) -> str:
    """The state an entry belongs to: `exp_avg` for `exp_avg.absmax`."""
    return entry.split(".")[0]


def _step(step: Any, label: str) -> int:
    """The step count as an int (torch.optim saves it as a 0-d float tensor)."""
    if isinstance(step, torch.Tensor) and step.numel() == 1:
        value = step.item()
        step = int(value) if float(value).is_integer() else value
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"state 'step' of {label} must be an integer in [0, inf), got {step!r}")
    return step


def _dtype(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _hint(storage: Any, value: torch.Tensor, expected: torch.dtype) -> str:
    if value.dtype == expected:
        return ""
    if torch.uint8 in (value.dtype, expected):
        return (f" (8-bit codes where the other optimizer kept floats, or the reverse: create this one with the "
                f"state_precision and min_8bit_size of the one that saved it; here {storage.precision!r}, "
                f"{storage.min_8bit_size})")
    return (f" (state_precision={storage.precision!r} keeps float state "
            f"{'in the parameter dtype' if storage.precision is None else 'in ' + _dtype(storage.dtype)}: "
            f"cast the checkpoint's state, or create the optimizer with the state_precision it was saved with)")
