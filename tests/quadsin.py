"""The golden files' `quadsin` objective and their comparison (see tests/golden/README.md)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

GOLDEN = Path(__file__).parent / "golden"


def load(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


def make_params(case: dict, dtype=torch.float32) -> list[torch.Tensor]:
    return [
        torch.tensor(p["init"], dtype=dtype).reshape(p["shape"]).requires_grad_() for p in case["params"]
    ]


def coefficients(case: dict, dtype=torch.float32) -> list[tuple[torch.Tensor, ...]]:
    return [
        tuple(torch.tensor(p[k], dtype=dtype).reshape(p["shape"]) for k in "abc") for p in case["params"]
    ]


def loss_fn(params, coeffs) -> torch.Tensor:
    total = torch.zeros((), dtype=params[0].dtype)
    for p, (a, b, c) in zip(params, coeffs):
        total = total + (0.5 * a * p**2 + b * p + c * torch.sin(p)).sum()
    return total


def param_groups(case: dict, params: list[torch.Tensor]) -> list[dict]:
    """The file's groups: listed indices with their extra kwargs, the rest in a first group."""
    groups = case.get("groups") or []
    listed = {i for g in groups for i in g["indices"]}
    first = [p for i, p in enumerate(params) if i not in listed]
    out = [{"params": first}] if first else []
    out += [{"params": [params[i] for i in g["indices"]], **g["kwargs"]} for g in groups]
    return out


def replay(case: dict, make_optimizer, steps: int | None = None) -> dict[int, torch.Tensor]:
    """Run the golden protocol; returns {step: flat concatenated params} for the recorded steps."""
    params = make_params(case)
    coeffs = coefficients(case)
    opt = make_optimizer(param_groups(case, params))
    steps = steps or case["steps"]
    out = {}
    for step in range(1, steps + 1):
        for p in params:
            p.grad = None
        loss_fn(params, coeffs).backward()
        opt.step()
        out[step] = torch.cat([p.detach().reshape(-1) for p in params]).clone()
    return out


def flat_init(case: dict) -> torch.Tensor:
    return torch.cat([torch.tensor(p["init"], dtype=torch.float32) for p in case["params"]])


def relative_displacement(got: torch.Tensor, ref: torch.Tensor, init: torch.Tensor) -> float:
    # At least 1e-30 below, as the golden files' own comparison: a recorded step that leaves the
    # parameters at init (SOAP's first step) demands a bit-identical replay (0/1e-30), not a NaN.
    moved = torch.linalg.vector_norm(ref - init).clamp_min(1e-30)
    return float(torch.linalg.vector_norm((got - init) - (ref - init)) / moved)


def max_error(case: dict, trajectory: dict[int, torch.Tensor]) -> float:
    init = flat_init(case)
    return max(
        relative_displacement(trajectory[int(step)], torch.cat([torch.tensor(r) for r in ref]), init)
        for step, ref in case["trajectory"].items()
    )
