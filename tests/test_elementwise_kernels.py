"""The one-pass C kernels of the fused path on float32 CPU tensors (engine/diffgrad.c, engine/lion.c)
against the eager update."""
from __future__ import annotations

import math

import pytest
import torch

import optarena
from native_kernels import needs_compiler

pytestmark = needs_compiler
# (300, 200): more elements than the kernels run on one thread; (8, 3, 5, 5): a conv weight.
SHAPES = [(7,), (300, 200), (8, 3, 5, 5)]
CONFIGS = {
    "diffgrad": [{"lr": 0.01}, {"lr": 0.01, "weight_decay": 1e-3}, {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6}],
    "lion": [{"lr": 1e-3}, {"lr": 1e-3, "weight_decay": 0.5}, {"lr": 3e-3, "betas": (0.8, 0.9)}],
}
CASES = [(name, cfg) for name, cfgs in CONFIGS.items() for cfg in cfgs]
STATE = {"diffgrad": ("exp_avg", "exp_avg_sq", "previous_grad"), "lion": ("exp_avg",)}


def run(name: str, fused: bool, cfg: dict, steps: int = 10, grads=None):
    gen = torch.Generator().manual_seed(3)
    params = [torch.randn(s, generator=gen).requires_grad_() for s in SHAPES]
    opt = optarena.create(name, params, fused=fused, nonfinite="propagate", **cfg)
    for k in range(steps):
        for p in params:
            p.grad = grads(k, p) if grads else torch.randn(p.shape, generator=gen)
        opt.step()
    return params, opt


@pytest.mark.parametrize("name,cfg", CASES, ids=[f"{n}-{i}" for n, cfgs in CONFIGS.items() for i in range(len(cfgs))])
def test_kernel_agrees_with_eager(kernel_only, name, cfg):
    eager, opt_e = run(name, False, cfg)
    fused, opt_f = run(name, True, cfg)
    for a, b in zip(eager, fused):
        # a few float32 roundings apart (diffGrad: the kernel's exp is within 2 ulp of torch's)
        torch.testing.assert_close(b, a, rtol=2e-6, atol=1e-7)
        for key in STATE[name]:
            torch.testing.assert_close(opt_f.state[b][key], opt_e.state[a][key], rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("difference", [0.0, 1e-6, 0.5, 3.0, 20.0, 87.5, 200.0, math.inf], ids=str)
def test_diffgrad_friction_over_the_whole_range(kernel_only, difference):
    """`|g_prev - g|` from zero to beyond float's exp range: the friction sigmoid(d) in (0.5, 1]."""
    def grads(k, p):  # the second step's gradient is `difference` away from the first's
        return torch.full(p.shape, 1.0 if k == 0 else 1.0 + difference)

    eager, _ = run("diffgrad", False, {"lr": 0.1}, steps=2, grads=grads)
    fused, _ = run("diffgrad", True, {"lr": 0.1}, steps=2, grads=grads)
    for a, b in zip(eager, fused):
        if math.isinf(difference):
            assert torch.isnan(a).all() and torch.isnan(b).all()  # inf gradient: m/sqrt(v) = inf/inf
        else:
            torch.testing.assert_close(b, a, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", CONFIGS)
def test_non_finite_gradients_propagate_like_eager(kernel_only, name):
    """With `nonfinite="propagate"` a NaN gradient spreads exactly as in eager (Lion: sign(NaN) = 0,
    as torch.sign, so its parameter stays and its moment turns NaN)."""
    def grads(k, p):
        g = torch.ones(p.shape)
        g.view(-1)[0] = math.nan
        return g

    eager, opt_e = run(name, False, CONFIGS[name][0], steps=2, grads=grads)
    fused, opt_f = run(name, True, CONFIGS[name][0], steps=2, grads=grads)
    for a, b in zip(eager, fused):
        for x, y in [(a, b)] + [(opt_e.state[a][k], opt_f.state[b][k]) for k in STATE[name]]:
            assert torch.equal(torch.isnan(x), torch.isnan(y))
            torch.testing.assert_close(y[~torch.isnan(y)], x[~torch.isnan(x)], rtol=2e-6, atol=1e-7)
    assert any(torch.isnan(opt_f.state[b]["exp_avg"]).any() for b in fused)


@pytest.mark.parametrize("name", CONFIGS)
def test_result_does_not_depend_on_the_thread_count(name):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one, _ = run(name, True, CONFIGS[name][1])
        torch.set_num_threads(max(2, threads))
        two, _ = run(name, True, CONFIGS[name][1])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


@pytest.mark.parametrize("name", CONFIGS)
def test_kernel_declines_what_it_does_not_take(name):
    rule = optarena.get(name).rule
    p = torch.randn(6, 8)
    group = optarena.create(name, [p.clone().requires_grad_()]).param_groups[0]
    s = rule.scalars(group, 1)
    for q, g in [(p.bfloat16(), p.bfloat16()), (p.t(), p.t()), (torch.empty(0), torch.empty(0))]:
        state = rule.init(q, g, group)
        before = {k: v.clone() for k, v in state.items()}
        assert rule.fused_kernel(q, g, state, s) is False
        assert all(torch.equal(v, before[k]) for k, v in state.items())
