"""AdamP/SGDP's projection on crafted gradients: orthogonal (scale-invariant) vs parallel, 2-D vs 1-D."""
from __future__ import annotations

import pytest
import torch

import optarena
from optarena.rules.adamp import project_radial_

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
    from optarena.rules.adamp import _cosine

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 40, generator=gen, dtype=dtype), torch.randn(9, 40, generator=gen, dtype=dtype)
    x[3] = 0.0
    expected = torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-8).abs()
    got = _cosine((x * y).sum(1), (x * x).sum(1), (y * y).sum(1), 1e-8)
    torch.testing.assert_close(got, expected, rtol=4e-6 if dtype == torch.float32 else 1e-12, atol=0)  # a few ulps
    assert got[3] == 0.0
