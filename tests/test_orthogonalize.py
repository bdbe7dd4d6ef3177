"""Newton-Schulz orthogonalization (rules/orthogonalize.py) and the matrix handling of Muon and NorMuon.

The quintic f(s) = 3.4445 s - 4.7750 s^3 + 2.0315 s^5 acts on each singular value of the input
divided by its Frobenius norm. Iterated 5 times (exactly, in float64) it maps every s in
[1.5e-3, 1] into [0.680, 1.2024] and never exceeds 1.2024 anywhere in [0, 1]; smaller singular
values grow by about 3.4445^5 ~ 486 but do not reach the band. So the band asserted here is
[0.67, 1.21] for singular values with s / ||G||_F >= 2e-3 (float32), widened by bf16 rounding
([0.62, 1.25]); the singular vectors are the input's.
"""
from __future__ import annotations

import pytest
import torch

import optarena
from optarena.rules import orthogonalize
from optarena.rules.orthogonalize import newton_schulz, symmetric_product

BAND = {torch.float32: (0.67, 1.21), torch.bfloat16: (0.65, 1.22)}
# ||O - U diag(o) V^T|| / ||O||: bf16 rounding of the iterates mixes the directions of the small
# singular values that are still growing (up to 0.17 measured at condition number 1e4).
VECTOR_TOL = {torch.float32: 1e-4, torch.bfloat16: 0.25}


def with_condition(m: int, n: int, cond: float | None, seed: int = 0) -> torch.Tensor:
    """A float32 matrix: Gaussian (cond None) or with log-spaced singular values from 1 to 1/cond."""
    gen = torch.Generator().manual_seed(seed)
    if cond is None:
        return torch.randn(m, n, generator=gen)
    k = min(m, n)
    u, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    s = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), k, dtype=torch.float64)
    return ((u * s) @ v.T).float()


@pytest.fixture
def small_blocks(monkeypatch):
    """Symmetric products in blocks from 16 rows on, so that small matrices take the blocked path."""
    monkeypatch.setattr(orthogonalize, "SYMMETRIC_MIN_ROWS", 16)


@pytest.mark.parametrize("method", ["standard", "gram"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(96, 48), (48, 96)], ids=["tall", "wide"])
@pytest.mark.parametrize("cond", [None, 1e2, 1e3, 1e4], ids=["gaussian", "cond1e2", "cond1e3", "cond1e4"])
def test_singular_values_land_in_the_band(small_blocks, dtype, shape, cond, method):
    g = with_condition(*shape, cond)
    out = newton_schulz(g, steps=5, dtype=dtype, method=method)
    assert out.shape == g.shape and out.dtype == dtype
    u, s, vh = torch.linalg.svd(g.double(), full_matrices=False)
    o = out.double()
    mapped = (u.T @ o @ vh.T).diagonal()  # what each input singular value became
    residual = o - (u * mapped) @ vh
    assert residual.norm() <= VECTOR_TOL[dtype] * o.norm()  # same singular vectors
    lo, hi = BAND[dtype]
    assert mapped.max() <= hi
    reached = s / g.double().norm() >= 2e-3
    assert reached.sum() >= mapped.numel() // 2  # (all but cond 1e3: 38 of 48, 1e4: 29 of 48)
    assert mapped[reached].min() >= lo, mapped[reached].min()
    assert (torch.linalg.svdvals(o) >= lo).sum() >= reached.sum()
    # The rest are still growing: far above their normalized input size, never negative.
    assert (mapped[~reached] >= 100 * s[~reached] / g.double().norm()).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape", [(64, 16), (16, 64), (32, 32)])
def test_orthogonal_input_stays_near_orthogonal(dtype, shape):
    q, _ = torch.linalg.qr(torch.randn(max(shape), min(shape), generator=torch.Generator().manual_seed(1)))
    q = q if shape[0] >= shape[1] else q.T
    out = newton_schulz(q, dtype=dtype).double()
    sv = torch.linalg.svdvals(out)
    lo, hi = BAND[dtype]
    assert lo <= sv.min() and sv.max() <= hi
    # All singular values are equal (1/sqrt(k) after normalization), so the output is the input
    # scaled by f^5(1/sqrt(k)): exactly in float32, within bf16 rounding (4.6% measured) in bf16.
    tol = 1e-5 if dtype == torch.float32 else 0.06
    assert (out / sv.mean() - q.double()).norm() <= tol * q.norm()
    if dtype == torch.float32:
        assert sv.max() - sv.min() <= 1e-5


@pytest.mark.parametrize("m", [16, 37, 64])
def test_symmetric_product_equals_the_full_product(m):
    x = torch.randn(m, 3 * m, generator=torch.Generator().manual_seed(m), dtype=torch.float64)
    gram = symmetric_product(x, x.mT, min_rows=0)
    size = -(-m // 4)  # the first strip's blocks right of its diagonal block are mirrored below it
    assert torch.equal(gram[size:, :size], gram[:size, size:].mT)
    torch.testing.assert_close(gram, x @ x.mT, rtol=1e-12, atol=1e-12)
    r = gram / gram.norm()
    poly = 2 * r + r @ r  # commutes with r: the product is symmetric
    torch.testing.assert_close(symmetric_product(poly, r, min_rows=0), poly @ r, rtol=1e-12, atol=1e-12)
    assert torch.equal(symmetric_product(x[:15], x[:15].mT, min_rows=0), x[:15] @ x[:15].mT)  # too small to cut


@pytest.mark.parametrize("steps", [0, 1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("shape", [(40, 120), (120, 40), (48, 48), (48, 64)], ids=["gram", "gram-tall", "square", "near-square"])
def test_gram_method_computes_the_standard_iterates(small_blocks, shape, steps):
    """In float64 both methods evaluate the same polynomial: equal to rounding, restarts included."""
    g = with_condition(*shape, 1e3).double()
    standard = newton_schulz(g, steps, torch.float64)
    torch.testing.assert_close(newton_schulz(g, steps, torch.float64, "gram"), standard, rtol=0, atol=1e-9)


def _low_rank(m: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(m, 8, generator=gen) @ torch.randn(8, n, generator=gen) + 0.01 * torch.randn(m, n, generator=gen)


@pytest.mark.parametrize("kind", ["gaussian", "cond1e6", "low-rank"])
def test_gram_method_in_bf16_is_as_accurate_as_the_standard_iteration(small_blocks, kind):
    """bf16 rounding moves both methods away from the exact iterates by comparable amounts (measured:
    the Gram iteration 0.6-0.7x the standard one's error on ill-conditioned and low-rank inputs,
    1.0-1.45x on Gaussian ones, where both are 3-5%)."""
    g = {"gaussian": lambda: with_condition(64, 256, None), "cond1e6": lambda: with_condition(64, 256, 1e6),
         "low-rank": lambda: _low_rank(64, 256)}[kind]()
    exact = newton_schulz(g.double(), 5, torch.float64)

    def error(out):
        return float((out.double() - exact).norm() / exact.norm())

    gram = newton_schulz(g, 5, torch.bfloat16, "gram")
    # Measured 1.30 / 0.68 / 0.65; bf16 GEMM kernels round differently on other CPUs, hence the margin.
    assert error(gram) <= (1.7 if kind == "gaussian" else 0.9) * error(newton_schulz(g, 5, torch.bfloat16))
    assert torch.linalg.svdvals(gram.double()).max() <= BAND[torch.bfloat16][1]


def test_symmetric_product_under_autograd_is_the_full_product():
    x = torch.randn(32, 48, dtype=torch.float64, requires_grad=True)
    out = symmetric_product(x, x.mT, min_rows=0)  # `out=` products would refuse to record a graph
    out.sum().backward()
    torch.testing.assert_close(out, x @ x.mT)
    torch.testing.assert_close(x.grad, 2 * x.detach().sum(0).expand(32, 48))  # d/dx sum(x x^T)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(40, 100), (40, 40)], ids=["gram", "square"])
def test_compiled_blocked_products_match_eager_bit_for_bit(small_blocks, monkeypatch, shape):
    """The fused path runs `symmetric_product` as a custom op inside the compiled graph; with blocks
    from 16 rows these shapes take it (the compile cache is emptied: its key does not hold the size)."""
    from optarena.engine import kernels

    monkeypatch.setattr(kernels, "_COMPILED", {})
    gen = torch.Generator().manual_seed(4)
    w, grads = torch.randn(shape, generator=gen), [torch.randn(shape, generator=gen) for _ in range(3)]
    p, _ = _run("muon", w, grads, lr=0.05, weight_decay=0.1, ns_method="gram")
    q, _ = _run("muon", w, grads, lr=0.05, weight_decay=0.1, ns_method="gram", fused=True)
    assert torch.equal(p, q)


def test_restarts_keep_the_bf16_gram_iteration_stable(small_blocks, monkeypatch):
    """Without restarts, bf16 rounding errors of `X X^T` grow by ~12x per iteration and blow the
    low-rank input's small singular values far out of the band; restarting every 2 iterations holds them."""
    g = _low_rank(64, 256)
    assert torch.linalg.svdvals(newton_schulz(g, 5, torch.bfloat16, "gram").double()).max() <= BAND[torch.bfloat16][1]
    monkeypatch.setattr(orthogonalize, "RESTART_EVERY", 100)
    assert torch.linalg.svdvals(newton_schulz(g, 5, torch.bfloat16, "gram").double()).max() > 2.0


def test_steps_and_input_checks():
    g = with_condition(8, 4, 1e2)
    assert torch.equal(newton_schulz(g, steps=0, dtype=torch.float32), g / (g.norm() + 1e-7))
    with pytest.raises(ValueError, match="matrix"):
        newton_schulz(torch.ones(3))
    with pytest.raises(ValueError, match="method must be one of"):
        newton_schulz(g, method="fast")
    assert newton_schulz(torch.zeros(0, 3)).shape == (0, 3)


def _run(name, param, grads, **kwargs):
    p = param.clone().requires_grad_()
    opt = optarena.create(name, [p], **kwargs)
    for g in grads:
        p.grad = g.reshape(p.shape).clone()
        opt.step()
    return p.detach(), opt


@pytest.mark.parametrize("name", ["muon", "normuon"])
@pytest.mark.parametrize("ns_dtype", ["float32", "bfloat16"])
def test_conv_weight_step_equals_its_flattening(name, ns_dtype):
    """A conv kernel is orthogonalized as its (out, in*h*w) matrix: Muon's steps are the same bits.
    (Square kernel, out <= in*h*w: here the reference's shape scale, taken from the kernel's last
    two dims, is 1 for both; see the next test.) NorMuon normalizes in the kernel's own shape (the
    reference's choice), so its 4-D step differs from the flattened one."""
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(8, 4, 3, 3, generator=gen)
    grads = [torch.randn(8, 4, 3, 3, generator=gen) for _ in range(3)]
    kw = {"lr": 0.05, "weight_decay": 0.1, "ns_dtype": ns_dtype}
    conv, _ = _run(name, w, grads, **kw)
    flat, _ = _run(name, w.reshape(8, -1), grads, **kw)
    if name == "muon":
        assert torch.equal(conv.reshape(8, -1), flat)
    else:
        assert not torch.allclose(conv.reshape(8, -1), flat, rtol=0, atol=1e-6)


def test_keller_scale_of_a_conv_kernel_uses_its_last_two_dims():
    """The reference computes sqrt(max(1, rows/cols)) from the unflattened gradient: a 3x1 kernel
    gets sqrt(3) where its (4, 6) flattening would get 1."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 2, 3, 1, generator=gen)
    g = torch.randn(4, 2, 3, 1, generator=gen)
    kw = {"lr": 0.01, "ns_dtype": "float32"}
    conv, _ = _run("muon", w, [g], **kw)
    flat, _ = _run("muon", w.reshape(4, -1), [g], **kw)
    torch.testing.assert_close((conv - w).reshape(4, -1), 3**0.5 * (flat - w.reshape(4, -1)), rtol=1e-4, atol=1e-7)


def test_moonlight_scale_is_a_fixed_rms():
    """scale="moonlight": 0.2*sqrt(max(rows, cols)) gives the update an RMS of about 0.2*|band value|."""
    gen = torch.Generator().manual_seed(4)
    w, g = torch.randn(64, 16, generator=gen), torch.randn(64, 16, generator=gen)
    p, _ = _run("muon", w, [g], lr=1.0, scale="moonlight", ns_dtype="float32", nesterov=False, momentum=0.0)
    rms = (p - w).pow(2).mean().sqrt()
    assert 0.2 * 0.67 <= rms <= 0.2 * 1.21


@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (8, 4, 3, 3)])
def test_normuon_state_and_norm_restoration(shape):
    """NorMuon's state: the momentum buffer and one value per row (last dim of the tensor); its
    first update has the norm of Muon's (per matrix, or per [o, i] slice of a 4-D kernel)."""
    gen = torch.Generator().manual_seed(5)
    w, g = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    kw = {"lr": 0.1, "ns_dtype": "float32"}
    p_mu, _ = _run("muon", w, [g], **kw)
    p_nor, opt = _run("normuon", w, [g], **kw)
    state = opt.state[opt.param_groups[0]["params"][0]]
    assert state["momentum_buffer"].shape == shape
    assert state["second_momentum_buffer"].shape == shape[:-1] + (1,)
    d_mu, d_nor = p_mu - w, p_nor - w
    torch.testing.assert_close(
        d_nor.norm(dim=(-2, -1)), d_mu.norm(dim=(-2, -1)), rtol=1e-5, atol=0
    )
    assert not torch.allclose(d_nor, d_mu, rtol=1e-3, atol=0)  # the direction did change


def test_grad_is_not_modified():
    """The reference writes the Nesterov look-ahead into p.grad; here the gradient stays as given."""
    gen = torch.Generator().manual_seed(6)
    for name in ("muon", "normuon"):
        p = torch.randn(6, 5, generator=gen).requires_grad_()
        opt = optarena.create(name, [p])
        for _ in range(2):
            p.grad = torch.randn(6, 5, generator=gen)
            kept = p.grad.clone()
            opt.step()
            assert torch.equal(p.grad, kept)
