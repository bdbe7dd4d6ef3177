"""AdamW and SGD follow torch.optim's trajectories on the golden objective (1e-6 relative displacement)."""
from __future__ import annotations

import pytest
import torch

import optarena
from quadsin import load, relative_displacement, replay

CASE = load("lion__mixed.json")  # only its params and coefficients are used
TOL = 1e-6
STEPS = 30

SGD_CONFIGS = [
    {"lr": 0.05},
    {"lr": 0.05, "weight_decay": 0.1},
    {"lr": 0.05, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.9, "dampening": 0.5, "weight_decay": 0.01},
    {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
]
ADAMW_CONFIGS = [
    {},
    {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1},
    {"lr": 0.01, "weight_decay": 0.0},
]


def assert_same_trajectory(ours, theirs):
    init = torch.cat([torch.tensor(p["init"]) for p in CASE["params"]])
    for step in theirs:
        assert relative_displacement(ours[step], theirs[step], init) <= TOL, step


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize("kwargs", ADAMW_CONFIGS, ids=str)
def test_adamw_matches_torch(kwargs, fused):
    """Eager against torch's single-tensor AdamW, fused against torch's fused AdamW."""
    flavour = {"fused": True} if fused else {"foreach": False}
    theirs = replay(CASE, lambda g: torch.optim.AdamW(g, **flavour, **kwargs), STEPS)
    ours = replay(CASE, lambda g: optarena.AdamW(g, fused=fused, **kwargs), STEPS)
    assert_same_trajectory(ours, theirs)


@pytest.mark.parametrize("kwargs", SGD_CONFIGS, ids=str)
def test_sgd_matches_torch(kwargs):
    theirs = replay(CASE, lambda g: torch.optim.SGD(g, foreach=False, **kwargs), STEPS)
    ours = replay(CASE, lambda g: optarena.SGD(g, **kwargs), STEPS)
    assert_same_trajectory(ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", SGD_CONFIGS[2:], ids=str)
def test_fused_sgd_matches_torch(kwargs):
    theirs = replay(CASE, lambda g: torch.optim.SGD(g, foreach=False, **kwargs), STEPS)
    ours = replay(CASE, lambda g: optarena.SGD(g, fused=True, **kwargs), STEPS)
    assert_same_trajectory(ours, theirs)


def test_parity_check_is_sharp():
    """A 1% different lr is far outside the tolerance, so the comparisons above can fail."""
    theirs = replay(CASE, lambda g: torch.optim.AdamW(g, lr=0.0101), STEPS)
    ours = replay(CASE, lambda g: optarena.AdamW(g, lr=0.01), STEPS)
    init = torch.cat([torch.tensor(p["init"]) for p in CASE["params"]])
    assert relative_displacement(ours[STEPS], theirs[STEPS], init) > 100 * TOL


@pytest.mark.parametrize("fused", [False, True], ids=["eager", "fused"])
@pytest.mark.parametrize(
    "schedule,dampening",
    [([0.0, 0.0, 0.9, 0.9, 0.9, 0.9], 0.0), ([0.9, 0.9, 0.9, 0.0, 0.0, 0.9], 0.5)],
    ids=["warmup-from-zero", "off-and-on-with-dampening"],
)
def test_sgd_momentum_schedule_matches_torch(schedule, dampening, fused):
    """Momentum changed between steps (a warm-up from 0, or switched off and on) acts as in torch."""

    def run(make):
        out = {}
        params = [torch.tensor([1.0, -1.0], requires_grad=True)]
        opt = make(params)
        for step, momentum in enumerate(schedule, start=1):
            for group in opt.param_groups:
                group["momentum"] = momentum
            params[0].grad = torch.tensor([1.0, 0.5]) * step
            opt.step()
            out[step] = params[0].detach().clone()
        return out

    theirs = run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=schedule[0], dampening=dampening))
    ours = run(lambda ps: optarena.SGD(ps, lr=0.1, momentum=schedule[0], dampening=dampening, fused=fused))
    for step in theirs:
        torch.testing.assert_close(ours[step], theirs[step], rtol=1e-6, atol=1e-7)
