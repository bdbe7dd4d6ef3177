"""diffGrad's fused path on float32 CPU tensors: the C kernel (engine/diffgrad.c) against the eager update."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

import optarena
from optarena.engine import kernels

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                reason="no C compiler: the compiled path runs (tested in test_generic)")  # fmt: skip
# (300, 200): more elements than the kernel runs on one thread; (8, 3, 5, 5): a conv weight.
SHAPES = [(7,), (300, 200), (8, 3, 5, 5)]
CONFIGS = [{"lr": 0.01}, {"lr": 0.01, "weight_decay": 1e-3}, {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6}]


def run(fused: bool, cfg: dict, steps: int = 10, grads=None):
    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(s, generator=gen).requires_grad_() for s in SHAPES]
    opt = optarena.DiffGrad(params, fused=fused, nonfinite="propagate", **cfg)
    for k in range(steps):
        for i, p in enumerate(params):
            p.grad = grads(k, p) if grads else torch.randn(p.shape, generator=gen)
        opt.step()
    return params, opt


@pytest.fixture
def no_compile(monkeypatch):
    """The kernel must take every tensor here: the compiled path would fail the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the compiled path ran")

    monkeypatch.setattr(kernels, "_compiled", refuse)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["plain", "weight-decay", "betas-eps"])
def test_kernel_agrees_with_eager(no_compile, cfg):
    eager, opt_e = run(False, cfg)
    fused, opt_f = run(True, cfg)
    for a, b in zip(eager, fused):
        # a few float32 roundings apart: the kernel's exp for the sigmoid is within 2 ulp of torch's
        torch.testing.assert_close(b, a, rtol=2e-6, atol=1e-7)
        for key in ("exp_avg", "exp_avg_sq", "previous_grad"):
            torch.testing.assert_close(opt_f.state[b][key], opt_e.state[a][key], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("difference", [0.0, 1e-6, 0.5, 3.0, 20.0, 87.5, 200.0, math.inf], ids=str)
def test_friction_over_the_whole_range(no_compile, difference):
    """`|g_prev - g|` from zero to beyond float's exp range: the friction sigmoid(d) in (0.5, 1]."""
    def grads(k, p):  # the second step's gradient is `difference` away from the first's
        return torch.full(p.shape, 1.0 if k == 0 else 1.0 + difference)

    eager, _ = run(False, {"lr": 0.1}, steps=2, grads=grads)
    fused, _ = run(True, {"lr": 0.1}, steps=2, grads=grads)
    for a, b in zip(eager, fused):
        if math.isinf(difference):
            assert torch.isnan(a).all() and torch.isnan(b).all()  # inf gradient: m/sqrt(v) = inf/inf
        else:
            torch.testing.assert_close(b, a, rtol=2e-6, atol=1e-7)


def test_non_finite_gradients_propagate_like_eager(no_compile):
    def grads(k, p):
        g = torch.ones(p.shape)
        g.view(-1)[0] = math.nan
        return g

    eager, _ = run(False, {"lr": 0.1}, steps=2, grads=grads)
    fused, _ = run(True, {"lr": 0.1}, steps=2, grads=grads)
    for a, b in zip(eager, fused):
        assert torch.equal(torch.isnan(a), torch.isnan(b)) and torch.isnan(b.view(-1)[0])
        torch.testing.assert_close(b[~torch.isnan(b)], a[~torch.isnan(a)], rtol=2e-6, atol=1e-7)


def test_result_does_not_depend_on_the_thread_count():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = run(True, CONFIGS[1])
        torch.set_num_threads(max(2, threads))
        two, _ = run(True, CONFIGS[1])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_kernel_declines_what_it_does_not_take():
    rule = optarena.get("diffgrad").rule
    p = torch.randn(6, 8)
    group = optarena.DiffGrad([p.clone().requires_grad_()]).param_groups[0]
    s = rule.scalars(group, 1)
    for q, g in [(p.bfloat16(), p.bfloat16()), (p.t(), p.t()), (torch.empty(0), torch.empty(0))]:
        state = rule.init(q, g, group)
        before = {k: v.clone() for k, v in state.items()}
        assert rule.fused_kernel(q, g, state, s) is False
        assert all(torch.equal(v, before[k]) for k, v in state.items())
