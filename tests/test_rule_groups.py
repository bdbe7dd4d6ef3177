"""Param groups may name another method's rule: one optimizer, one state_dict, one scheduler."""
from __future__ import annotations


import pytest
import torch

import optarena
from optarena.rules.adamw import AdamWRule

import checkpoint


def make():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(5, 4, generator=gen).requires_grad_(), torch.randn(4, generator=gen).requires_grad_()]


def run(opt, params, steps):
    for _ in range(steps):
        opt.zero_grad()
        sum(((p - 0.5) ** 2).sum() for p in params).backward()
        opt.step()


def test_each_group_follows_its_own_rule():
    mixed = make()
    opt = optarena.SGD([{"params": [mixed[0]], "momentum": 0.9},
                        {"params": [mixed[1]], "rule": "adamw", "lr": 0.01, "betas": (0.8, 0.99)}], lr=0.05)  # fmt: skip
    a, b = make(), make()
    ref_sgd = optarena.SGD([a[0]], lr=0.05, momentum=0.9)
    ref_adamw = optarena.AdamW([b[1]], lr=0.01, betas=(0.8, 0.99))
    run(opt, mixed, 5)
    run(ref_sgd, [a[0]], 5)
    run(ref_adamw, [b[1]], 5)
    assert torch.equal(mixed[0], a[0]) and torch.equal(mixed[1], b[1])
    adamw_group = opt.param_groups[1]
    assert "momentum" not in adamw_group and adamw_group["weight_decay"] == AdamWRule.hyper["weight_decay"].default
    assert set(opt.state[mixed[1]]) == {"step", "exp_avg", "exp_avg_sq"}


def test_mixed_groups_resume_bit_identically():
    def build(params):
        return optarena.Lion([{"params": [params[0]]}, {"params": [params[1]], "rule": "adamw", "lr": 0.01}], lr=1e-3)

    params = make()
    opt = build(params)
    run(opt, params, 3)
    saved = checkpoint.save(params, opt)
    run(opt, params, 3)
    opt2, resumed = checkpoint.restore(saved, build)
    run(opt2, resumed, 3)
    assert all(torch.equal(x, y) for x, y in zip(params, resumed))


def test_group_rule_errors_name_the_problem():
    p = make()
    with pytest.raises(ValueError, match="available"):
        optarena.SGD([{"params": p, "rule": "adamx"}])
    with pytest.raises(ValueError, match="rule must be a registered optimizer name"):
        optarena.SGD([{"params": p, "rule": AdamWRule}])
    with pytest.raises(ValueError, match="momentum"):  # AdamW's group does not take SGD's arguments
        optarena.SGD([{"params": p, "rule": "adamw", "momentum": 0.9}])
    with pytest.raises(ValueError, match="nesterov"):  # cross-argument checks of the group's rule
        optarena.AdamW([{"params": p, "rule": "sgd", "nesterov": True}])


class MatrixOnlyRule(AdamWRule):
    matrix_only = True


class MatrixOnly(optarena.Optimizer):
    rule = MatrixOnlyRule


def test_matrix_only_rules_refuse_vectors_and_point_to_the_factory():
    p = make()
    with pytest.raises(ValueError, match="create_optimizer"):
        MatrixOnly(p)
    MatrixOnly([{"params": [p[0]]}, {"params": [p[1]], "rule": "adamw"}]).step()  # the usual split is fine
