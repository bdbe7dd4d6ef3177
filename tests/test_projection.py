"""AdamP/SGDP's projection on crafted gradients: orthogonal (scale-invariant) vs parallel, 2-D vs 1-D;
and the fused path's C kernel (engine/adamp.c) against the eager update."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import optarena
from optarena.engine import native
from optarena.rules.adamp import _cosine, project_radial_

import checkpoint
from native_kernels import needs_compiler

LR, WD, WD_RATIO, MOMENTUM = 0.1, 0.1, 0.25, 0.9
CONFIGS = {
    "adamp": {"lr": LR, "weight_decay": WD, "wd_ratio": WD_RATIO},
    "sgdp": {"lr": LR, "weight_decay": WD, "wd_ratio": WD_RATIO, "momentum": MOMENTUM},
}
# The radial shrink factor of a projected weight: 1 - lr*wd*wd_ratio (SGDP: divided by 1 - momentum).
SHRINK = {"adamp": LR * WD * WD_RATIO, "sgdp": LR * WD * WD_RATIO / (1 - MOMENTUM)}
UNPROJECTED_SHRINK = {"adamp": LR * WD, "sgdp": LR * WD / (1 - MOMENTUM)}


def weight(shape=(4, 6), seed=0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal_rows(p: torch.Tensor, seed=1) -> torch.Tensor:
    """A gradient orthogonal to each row of p (the channel view fires)."""
    r = torch.randn(p.shape, generator=torch.Generator().manual_seed(seed), dtype=p.dtype)
    rows, r2 = p.reshape(p.shape[0], -1), r.reshape(p.shape[0], -1)
    return (r2 - (r2 * rows).sum(1, keepdim=True) / (rows * rows).sum(1, keepdim=True) * rows).reshape(p.shape)


def nearly_orthogonal(p: torch.Tensor, seed=1) -> torch.Tensor:
    """`orthogonal_rows` plus a radial part 1% of its size per row: |cos| ~ 0.01, below delta/sqrt(6)."""
    g = orthogonal_rows(p, seed)
    rows, g2 = p.reshape(p.shape[0], -1), g.reshape(p.shape[0], -1)
    return (g2 + 0.01 * (g2.norm(dim=1) / rows.norm(dim=1)).unsqueeze(1) * rows).reshape(p.shape)


def orthogonal_whole(p: torch.Tensor, seed=1) -> torch.Tensor:
    """A gradient orthogonal to p as a whole but clearly not to its rows (only the layer view fires)."""
    g = torch.zeros_like(p)
    g[0] = p[1].norm() ** 2 * p[0]
    g[1] = -p[0].norm() ** 2 * p[1]  # <g, p> = 0, each of the two rows has |cos| = 1
    return g


def one_step(name: str, p0: torch.Tensor, g: torch.Tensor, **kw) -> torch.Tensor:
    p = p0.clone().requires_grad_()
    opt = optarena.create(name, [p], **{**CONFIGS[name], **kw})
    p.grad = g.clone()
    opt.step()
    return p.detach()


def rowwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.reshape(a.shape[0], -1) * b.reshape(b.shape[0], -1)).sum(1)


def test_projection_removes_the_radial_component_row_by_row():
    p = weight()
    tangential = orthogonal_rows(p, seed=2)
    direction = tangential + 0.7 * p  # a direction with a radial part to remove
    assert project_radial_(direction, p, nearly_orthogonal(p), delta=0.1, eps=1e-8)
    assert rowwise_dot(direction, p).abs().max() < 1e-6 * p.norm() * direction.norm()
    torch.testing.assert_close(direction, tangential, rtol=1e-6, atol=1e-6)  # the tangential part is kept


def test_parallel_gradient_is_not_projected():
    p = weight()
    g = 0.5 * p
    direction = g.clone()
    assert not project_radial_(direction, p, g, delta=0.1, eps=1e-8)
    assert torch.equal(direction, g)


def test_one_dimensional_params_are_never_projected():
    p = weight((24,))
    g = orthogonal_rows(p.reshape(1, -1)).reshape(-1)
    direction = g + 0.7 * p
    before = direction.clone()
    assert not project_radial_(direction, p, g, delta=0.1, eps=1e-8)
    assert torch.equal(direction, before)


@pytest.mark.parametrize("name", ["adamp", "sgdp"])
@pytest.mark.parametrize("nesterov", [False, True])
def test_orthogonal_gradient_gives_a_tangential_update(name, nesterov):
    p0 = weight()
    g = nearly_orthogonal(p0)
    update = one_step(name, p0, g, weight_decay=0.0, nesterov=nesterov) - p0
    assert update.norm() > 1e-3
    assert rowwise_dot(update, p0).abs().max() < 1e-6 * update.norm() * p0.norm()


@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_projected_weight_decays_by_wd_ratio(name):
    p0 = weight()
    g = nearly_orthogonal(p0)
    update = one_step(name, p0, g) - p0
    # the update is the tangential step plus the radial decay -shrink * p
    radial = rowwise_dot(update, p0) / rowwise_dot(p0, p0)
    torch.testing.assert_close(radial, torch.full_like(radial, -SHRINK[name]), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_layer_view_fires_when_only_the_whole_tensor_is_orthogonal(name):
    p0 = weight()
    g = orthogonal_whole(p0)
    direction = g.clone()
    assert project_radial_(direction, p0, g, delta=0.1, eps=1e-8)
    update = one_step(name, p0, g) - p0
    radial = (update * p0).sum() / (p0 * p0).sum()
    assert abs(radial.item() + SHRINK[name]) < 1e-9
    assert rowwise_dot(update, p0).abs().max() > 1e-3  # rows are not individually tangential


@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_parallel_gradient_takes_the_plain_step(name):
    """No projection: the 2-D weight moves exactly as its 1-D flattening (never projected), full decay."""
    p0 = weight()
    g = 0.5 * p0
    matrix = one_step(name, p0, g)
    flat = one_step(name, p0.reshape(-1), g.reshape(-1))
    assert torch.equal(matrix.reshape(-1), flat)


def test_one_dimensional_param_with_orthogonal_gradient_takes_the_plain_step():
    p0 = weight((24,))
    g = nearly_orthogonal(p0.reshape(1, -1)).reshape(-1)
    q = p0.clone().requires_grad_()
    adamw = torch.optim.AdamW([q], lr=LR, weight_decay=WD)
    q.grad = g.clone()
    adamw.step()
    torch.testing.assert_close(one_step("adamp", p0, g), q.detach(), rtol=0, atol=1e-12)
    # SGDP's first step: buffer = g, p = p * (1 - lr*wd/(1-momentum)) - lr*g
    expected = p0 * (1 - UNPROJECTED_SHRINK["sgdp"]) - LR * g
    torch.testing.assert_close(one_step("sgdp", p0, g), expected, rtol=0, atol=1e-12)


def test_sgdp_without_nesterov_projects_its_momentum_buffer():
    """The reference's quirk: the direction is the buffer itself, so the stored buffer is projected too."""
    p0 = weight()
    g = nearly_orthogonal(p0)
    for nesterov, projected in ((False, True), (True, False)):
        p = p0.clone().requires_grad_()
        opt = optarena.create("sgdp", [p], momentum=MOMENTUM, lr=LR, nesterov=nesterov)
        p.grad = g.clone()
        opt.step()
        buf = opt.state[p]["momentum_buffer"]
        if projected:
            assert rowwise_dot(buf, p0).abs().max() < 1e-9
        else:
            assert torch.equal(buf, g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cosine_from_sums_is_torchs_cosine_similarity(dtype):
    """The cosine from per-row sums agrees with F.cosine_similarity (the reference's), zero rows included."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 40, generator=gen, dtype=dtype), torch.randn(9, 40, generator=gen, dtype=dtype)
    x[3] = 0.0
    expected = torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-8).abs()
    got = _cosine((x * y).sum(1), (x * x).sum(1), (y * y).sum(1), 1e-8)
    torch.testing.assert_close(got, expected, rtol=4e-6 if dtype == torch.float32 else 1e-12, atol=0)  # a few ulps
    assert got[3] == 0.0


# --- The fused path's C kernel (engine/adamp.c) against the eager update -------------------------

# (8, 5000): rows of two work items (4096 elements each) and more elements than the kernel runs on
# one thread; (32, 64, 5, 5): a conv weight, 1600 per row, also multi-threaded; the rest small.
SHAPES = [(6, 40), (8, 5000), (5, 3, 3, 3), (32, 64, 5, 5)]
DELTA, EPS = 0.1, 1e-8


def view_of(p: torch.Tensor, g: torch.Tensor) -> str:
    """Which view the eager `project_radial_` takes for (p, g) at the default delta and eps."""
    rows = p.shape[0]
    g2, p2 = g.reshape(rows, -1).double(), p.reshape(rows, -1).double()
    gp, gg, pp = (g2 * p2).sum(1), (g2 * g2).sum(1), (p2 * p2).sum(1)
    if _cosine(gp, gg, pp, EPS).max() < DELTA / p2.shape[1] ** 0.5:
        return "channel"
    if _cosine(gp.sum(), gg.sum(), pp.sum(), EPS) < DELTA / p.numel() ** 0.5:
        return "layer"
    return "none"


def tangential(p: torch.Tensor) -> torch.Tensor:
    """`orthogonal_rows` plus a radial part that keeps each row's |cos| at a fifth of the channel
    threshold `delta / sqrt(row length)` (the channel view fires)."""
    g = orthogonal_rows(p)
    rows, g2 = p.reshape(p.shape[0], -1), g.reshape(p.shape[0], -1)
    part = 0.2 * DELTA / rows.shape[1] ** 0.5
    return (g2 + part * (g2.norm(dim=1) / rows.norm(dim=1)).unsqueeze(1) * rows).reshape(p.shape)


def radial_gradient(p: torch.Tensor) -> torch.Tensor:
    return 0.5 * p + 0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=p.dtype)


def layer_only(p: torch.Tensor) -> torch.Tensor:
    """`orthogonal_whole`, scaled to entries of order one."""
    return orthogonal_whole(p) / (p[0].norm() * p[1].norm())


GRADIENTS = {"channel": tangential, "layer": layer_only, "none": radial_gradient}


def eager_and_kernel(name, p0, gradient, steps=3, threads=None, **kw):
    """`steps` steps of the rule's eager `update` and of its `fused_kernel` from the same start, fed the
    same gradients (`gradient(p)` of the eager path's current weight): both weights and both states."""
    rule = optarena.get(name).rule
    group = optarena.create(name, [p0.clone().requires_grad_()], **{**CONFIGS[name], **kw}).param_groups[0]
    pe, pk = p0.clone(), p0.clone()
    se = rule.init(pe, None, group)
    sk = {k: v.clone() for k, v in se.items()}
    previous = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        for step in range(1, steps + 1):
            g = gradient(pe).float()
            s = rule.scalars(group, step)
            rule.update(pe, g.clone(), se, s)
            assert rule.fused_kernel(pk, g.clone(), sk, s), "the C kernel did not take the tensor"
    finally:
        torch.set_num_threads(previous)
    return (pe, se), (pk, sk)


def assert_agree(eager, kernel, p0):
    (pe, se), (pk, sk) = eager, kernel
    # to float32 rounding, relative to how far the weight moved (the projection's sums are taken in
    # another order, the bias correction is multiplied by its reciprocal)
    assert torch.linalg.vector_norm(pk - pe) <= 1e-5 * torch.linalg.vector_norm(pe - p0)
    for key in se:
        assert torch.linalg.vector_norm(sk[key] - se[key]) <= 1e-5 * torch.linalg.vector_norm(se[key]), key


@needs_compiler
def test_the_kernel_builds():
    assert native.load("adamp") is not None, "a C compiler is present but engine/adamp.c did not build"


@needs_compiler
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("view", ["channel", "layer", "none"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_kernel_agrees_with_eager(name, nesterov, view, shape):
    p0 = weight(shape).float()
    g0 = GRADIENTS[view](p0.double()).float()
    assert view_of(p0, g0) == view  # the crafted gradient takes the view under test
    eager, kernel = eager_and_kernel(name, p0, lambda p: GRADIENTS[view](p.double()), nesterov=nesterov)
    assert_agree(eager, kernel, p0)


@needs_compiler
@pytest.mark.parametrize("view", ["channel", "layer", "none"])
@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_kernel_without_weight_decay_agrees_with_eager(name, view):
    p0 = weight((8, 5000)).float()
    eager, kernel = eager_and_kernel(name, p0, lambda p: GRADIENTS[view](p.double()), weight_decay=0.0)
    assert_agree(eager, kernel, p0)


@needs_compiler
@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_kernel_decays_by_wd_ratio_when_it_projects(name):
    """One step from zero state on a scale-invariant weight: the radial change of each row is the
    projected shrink alone (a check of the decay choice that does not go through the eager code)."""
    p0 = weight((8, 5000)).float()
    (_, _), (pk, _) = eager_and_kernel(name, p0, lambda p: tangential(p.double()), steps=1)
    radial = rowwise_dot(pk - p0, p0) / rowwise_dot(p0, p0)
    torch.testing.assert_close(radial, torch.full_like(radial, -SHRINK[name]), rtol=1e-4, atol=1e-7)


@needs_compiler
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_kernel_projects_sgdps_buffer_without_nesterov(nesterov):
    p0 = weight((8, 5000)).float()
    eager, kernel = eager_and_kernel("sgdp", p0, lambda p: tangential(p.double()), steps=1, nesterov=nesterov)
    assert_agree(eager, kernel, p0)
    buf = kernel[1]["momentum_buffer"]
    if nesterov:  # the buffer is (1 - dampening) g, untouched by the projection
        torch.testing.assert_close(buf, tangential(p0.double()).float(), rtol=1e-6, atol=1e-7)
    else:  # the buffer was the direction, projected to be tangential
        assert rowwise_dot(buf, p0).abs().max() < 1e-4 * buf.norm() * p0.norm() / 8
        assert not torch.allclose(buf, tangential(p0.double()).float(), rtol=1e-3, atol=0)


@needs_compiler
@pytest.mark.parametrize("name", ["adamp", "sgdp"])
@pytest.mark.parametrize("shape", [(5000,), (7,), ()], ids=str)
def test_kernel_takes_unprojected_vectors_in_one_pass(name, shape):
    p0 = weight(shape).float()
    g = tangential(p0.double().reshape(1, -1)).reshape(shape).float()  # would project if it were a matrix
    eager, kernel = eager_and_kernel(name, p0, lambda p: g, nesterov=True)
    assert_agree(eager, kernel, p0)


@needs_compiler
@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_kernel_result_does_not_depend_on_the_number_of_threads(name):
    p0 = weight((32, 64, 5, 5)).float()
    gradient = lambda p: tangential(p.double())  # noqa: E731
    one = eager_and_kernel(name, p0, gradient, threads=1)[1]
    two = eager_and_kernel(name, p0, gradient, threads=2)[1]
    assert torch.equal(one[0], two[0])
    assert all(torch.equal(one[1][k], two[1][k]) for k in one[1])


@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_kernel_declines_what_it_cannot_take(name):
    """Not float32, not contiguous, mismatched shapes: False and nothing touched (the compiled path runs)."""
    rule = optarena.get(name).rule
    p = torch.randn(6, 8)
    group = optarena.create(name, [p.clone().requires_grad_()], **CONFIGS[name]).param_groups[0]
    s = rule.scalars(group, 1)
    cases = [
        (p.t(), torch.randn(8, 6)),                           # non-contiguous parameter
        (p.clone(), torch.randn(8, 6).t()),                   # non-contiguous gradient
        (p.to(torch.bfloat16), torch.randn(6, 8)),            # bf16 parameter (fp32 state)
        (p.double(), torch.randn(6, 8, dtype=torch.float64)),
        (p.clone(), torch.randn(6, 8)[:, :4].contiguous()),   # another shape
        (torch.empty(0, 3), torch.empty(0, 3)),
    ]  # fmt: skip
    for q, g in cases:
        state = {k: v.float() for k, v in rule.init(q, g, group).items()}
        before = q.clone(), {k: v.clone() for k, v in state.items()}
        assert rule.fused_kernel(q, g, state, s) is False
        assert torch.equal(q, before[0]) and all(torch.equal(state[k], before[1][k]) for k in state)


def test_without_native_code_the_kernel_declines(tmp_path):
    script = "\n".join([
        "import torch, optarena",
        "from optarena.engine import native",
        "assert native.load('adamp') is None",
        "for name in ('adamp', 'sgdp'):",
        "    rule = optarena.get(name).rule",
        "    p, g = torch.randn(6, 8), torch.randn(6, 8)",
        "    group = optarena.create(name, [p.clone().requires_grad_()]).param_groups[0]",
        "    assert rule.fused_kernel(p, g, rule.init(p, g, group), rule.scalars(group, 1)) is False",
    ])  # fmt: skip
    env = {**os.environ, "OPTARENA_NATIVE": "0", "OPTARENA_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def train_quadratic(opt, params, steps):
    """Scale-invariant gradients for the first two weights (`model_params`: they project), gradients
    pulling the others towards a fixed target (they do not)."""
    gen = torch.Generator().manual_seed(7)
    targets = [torch.randn(p.shape, generator=gen) for p in params]
    for _ in range(steps):
        for i, (p, t) in enumerate(zip(params, targets)):
            q = p.detach().double()
            p.grad = (tangential(q) if i < 2 else q - t.double()).to(p.dtype)
        opt.step()


def model_params(dtype=torch.float32):
    gen = torch.Generator().manual_seed(5)
    shapes = [(8, 5000), (16, 8, 3, 3), (40,), (6, 40)]
    return [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in shapes]


@needs_compiler
@pytest.mark.parametrize("name", ["adamp", "sgdp"])
@pytest.mark.parametrize("nesterov", [False, True], ids=["plain", "nesterov"])
def test_fused_optimizer_runs_the_kernel_only_and_agrees_with_eager(name, nesterov, kernel_only):
    init, a, b = model_params(), model_params(), model_params()
    kw = {**CONFIGS[name], "nesterov": nesterov}
    train_quadratic(optarena.create(name, a, **kw), a, 5)
    train_quadratic(optarena.create(name, b, fused=True, **kw), b, 5)
    for x, y, p0 in zip(a, b, init):
        assert torch.linalg.vector_norm(y.detach() - x.detach()) <= 1e-5 * torch.linalg.vector_norm(x - p0).detach()


@needs_compiler
@pytest.mark.parametrize("name", ["adamp", "sgdp"])
def test_fused_kernel_resumes_bit_identically(name):
    kw = {**CONFIGS[name], "nesterov": name == "adamp"}
    params = model_params()
    opt = optarena.create(name, params, fused=True, **kw)
    train_quadratic(opt, params, 3)
    saved = checkpoint.save(params, opt)
    train_quadratic(opt, params, 4)
    opt2, resumed = checkpoint.restore(saved, lambda ps: optarena.create(name, ps, fused=True, **kw))
    train_quadratic(opt2, resumed, 4)
    for p, q in zip(params, resumed):
        assert torch.equal(p, q)
        assert all(torch.equal(opt.state[p][k], opt2.state[q][k]) for k in opt.state[p] if k != "step")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["adamp", "sgdp"])
@pytest.mark.parametrize("case", ["no-native", "non-contiguous", "bf16"])
def test_fused_fallbacks_agree_with_eager(name, case, monkeypatch):
    """Where the kernel does not apply the fused step still agrees with eager: without native code
    and with bf16 weights the compiled path runs; a transposed (non-contiguous) weight takes the
    eager path (`kernels._fusable`), and this checks that the kernel declines it."""
    if case == "no-native":
        monkeypatch.setattr(native, "load", lambda name="codec8": None)
    dtype = torch.bfloat16 if case == "bf16" else torch.float32

    def params():
        ps = model_params(dtype)
        if case == "non-contiguous":
            ps = [p.detach().t().contiguous().t().requires_grad_() if p.dim() == 2 else p for p in ps]
            assert not ps[0].is_contiguous()
        return ps

    init, a, b = params(), params(), params()
    train_quadratic(optarena.create(name, a, **CONFIGS[name]), a, 4)
    train_quadratic(optarena.create(name, b, fused=True, **CONFIGS[name]), b, 4)
    tolerance = 5e-2 if dtype == torch.bfloat16 else 1e-5  # bf16: eager rounds each op to bf16, compiled code once
    for x, y, p0 in zip(a, b, init):
        moved = torch.linalg.vector_norm((x.detach() - p0.detach()).float())
        assert torch.linalg.vector_norm((y.detach() - x.detach()).float()) <= tolerance * moved
