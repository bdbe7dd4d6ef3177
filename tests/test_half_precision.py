"""Half-precision parameters (bfloat16, float16) are updated in float32 and rounded once ("opmath",
as torch's fused kernels), on every path, with state kept in the requested precision."""
from __future__ import annotations

import pytest
import torch

import optarena
from specs import SPECS
from test_generic import make_params

HALF = [torch.bfloat16, torch.float16]
# The fused path of every rule is the compiled `update` (the same apply_eager, traced) unless it has
# a kernel of its own: eager runs for all, fused for the kernels' rules (torch's AdamW and SGD, the
# C kernels' Lion, which decline half precision) and two compiled rules (Adan; Conda with its SVD),
# so the suite does not compile every rule twice more (bf16, fp16).
FUSED_NAMES = ("adamw", "sgd", "lion", "adan", "conda")
CASES = [(name, False) for name in SPECS] + [pytest.param(n, True, marks=pytest.mark.slow) for n in FUSED_NAMES]
IDS = [f"{name}-eager" for name in SPECS] + [f"{name}-fused" for name in FUSED_NAMES]


def one_step(name, params, fused, grads, **kw):
    opt = optarena.create(name, params, fused=fused, **{**SPECS[name].kwargs, **kw})
    for p, g in zip(params, grads):
        p.grad = g.to(p.dtype)
    opt.step()
    return opt


@pytest.mark.parametrize("dtype", HALF, ids=str)
@pytest.mark.parametrize("name,fused", CASES, ids=IDS)
def test_a_half_precision_step_is_the_float32_step_rounded_once(name, dtype, fused):
    half = make_params(name, dtype)
    wide = [p.detach().float().requires_grad_() for p in half]
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(p.shape, generator=gen).to(dtype) for p in half]  # values a half holds exactly
    opt16 = one_step(name, half, fused, grads)
    opt32 = one_step(name, wide, fused, grads)
    for p16, p32 in zip(half, wide):
        assert p16.dtype == dtype
        if fused:  # torch's fused kernels order their float32 operations their own way: at most one half ulp
            torch.testing.assert_close(p16, p32.to(dtype), rtol=2 * torch.finfo(dtype).eps, atol=1e-6)
        else:
            assert torch.equal(p16, p32.to(dtype)), (p16.float() - p32).abs().max()
        state16, state32 = opt16.state[p16], opt32.state[p32]
        for key, value in state16.items():
            if not torch.is_tensor(value):
                continue
            if opt16.storage.precision is None and value.is_floating_point():
                assert value.dtype == dtype, key  # kept in the parameter's dtype
                torch.testing.assert_close(value, state32[key].to(dtype), rtol=2 * torch.finfo(dtype).eps, atol=0)
            else:  # 8-bit codes and scales of the same float32 values
                assert torch.equal(value, state32[key]), key


@pytest.mark.parametrize("name,fused", CASES, ids=IDS)
def test_float16_with_small_gradients_stays_finite(name, fused):
    """The issue's case: three steps with gradients of 1e-2, where eps = 1e-8 and the second moments
    underflow in float16 arithmetic (p / (0 + 0) = inf): computed in float32 the steps stay finite."""
    params = make_params(name, torch.float16)
    opt = optarena.create(name, params, fused=fused, **SPECS[name].kwargs)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for p in params:
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).half()
        opt.step()
    for p in params:
        assert p.dtype == torch.float16 and torch.isfinite(p).all()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["adamw", "lion", "adan"])
def test_state_precision_is_kept_for_half_parameters(name, precision):
    params = make_params(name, torch.float16)
    gen = torch.Generator().manual_seed(1)
    opt = one_step(name, params, False, [torch.randn(p.shape, generator=gen) for p in params], state_precision=precision)
    want = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    for p in params:
        assert p.dtype == torch.float16
        assert all(v.dtype == want for v in opt.state[p].values() if torch.is_tensor(v) and v.is_floating_point())
