"""Conda's own semantics: when the basis is refreshed, where it comes from, and the plain-Adam groups."""
from __future__ import annotations

import pytest
import torch

import optarena


def quad_grads(params, step):
    """Deterministic, step-dependent gradients (so m, and with it the SVD, changes every step)."""
    gen = torch.Generator().manual_seed(100 + step)
    for p in params:
        p.grad = p.detach() * 0.5 + torch.randn(p.shape, generator=gen)


def run(opt, params, steps, record=None):
    for t in range(1, steps + 1):
        quad_grads(params, t)
        opt.step()
        if record is not None:
            record(t)


def matrices():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(6, 4, generator=g).requires_grad_(), torch.randn(4, 6, generator=g).requires_grad_()]


@pytest.mark.parametrize("gap", [1, 3, 4])
def test_basis_changes_exactly_every_gap_steps_and_is_the_svd_of_m(gap):
    params = matrices()
    opt = optarena.create("conda", [{"params": params, "update_proj_gap": gap}], lr=0.01)
    seen = {i: [] for i in range(len(params))}

    def record(t):
        for i, p in enumerate(params):
            st = opt.state[p]
            seen[i].append(st["projection"].clone())
            if (t - 1) % gap == 0:  # steps 1, 1 + gap, ...: the thin SVD of this step's m
                U, _, Vh = torch.linalg.svd(st["exp_avg"], full_matrices=False)
                rows, cols = p.shape
                expected = Vh if rows >= cols else U  # the smaller side: a full-rank square basis
                assert st["projection"].shape == (min(rows, cols),) * 2
                assert torch.equal(st["projection"], expected), (t, i)

    run(opt, params, 12, record)
    for i in seen:
        for t in range(2, 13):
            changed = not torch.equal(seen[i][t - 1], seen[i][t - 2])
            assert changed == ((t - 1) % gap == 0), (i, t)


def test_side_follows_proj_type():
    params = matrices()
    opt = optarena.create("conda", [{"params": params, "update_proj_gap": 2, "proj_type": "reverse_std"}])
    run(opt, params, 1)
    tall, wide = (opt.state[p] for p in params)
    U, _, Vh = torch.linalg.svd(tall["exp_avg"], full_matrices=False)
    assert torch.equal(tall["projection"], U) and tall["exp_avg_sq"].shape == (4, 4)
    U, _, Vh = torch.linalg.svd(wide["exp_avg"], full_matrices=False)
    assert torch.equal(wide["projection"], Vh) and wide["exp_avg_sq"].shape == (4, 4)


def test_one_projected_step_by_hand():
    lr, b1, b2, eps, wd, scale = 0.02, 0.9, 0.99, 1e-8, 0.1, 0.5
    params = matrices()
    init = [p.detach().clone() for p in params]
    opt = optarena.create(
        "conda",
        [{"params": params, "update_proj_gap": 5, "scale": scale}],
        lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd,
    )  # fmt: skip
    run(opt, params, 1)
    quad_grads(init, 1)
    for p0, p in zip(init, params):
        g = p0.grad.double()
        m = (1 - b1) * g
        U, _, Vh = torch.linalg.svd(m, full_matrices=False)
        if p0.shape[0] >= p0.shape[1]:
            proj, back = (lambda x: x @ Vh.T), (lambda y: y @ Vh)
        else:
            proj, back = (lambda x: U.T @ x), (lambda y: U @ y)
        v = (1 - b2) * proj(g) ** 2
        u = back(proj(m) / (v.sqrt() + eps)) * scale
        expected = p0.double() - lr * (1 - b2) ** 0.5 / (1 - b1) * u
        expected = expected - lr * wd * expected  # decay after the update, on the updated weights
        torch.testing.assert_close(p.detach().double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("correct_bias", [True, False])
def test_plain_group_is_adam_with_decay_after_the_update(correct_bias):
    lr, b1, b2, eps, wd = 0.05, 0.8, 0.95, 1e-6, 0.2
    g = torch.Generator().manual_seed(3)
    shapes = [(5, 3), (7,), (2, 3, 2, 2), ()]
    params = [torch.randn(s, generator=g).requires_grad_() for s in shapes]
    ref = [p.detach().double().clone() for p in params]
    # A projected group: only matrices are projected, the rest gets the plain update too.
    opt = optarena.create(
        "conda",
        [{"params": params[:1]}, {"params": params[1:], "update_proj_gap": 2}],
        lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, correct_bias=correct_bias,
    )  # fmt: skip
    m = [torch.zeros_like(r) for r in ref]
    v = [torch.zeros_like(r) for r in ref]
    for t in range(1, 8):
        quad_grads(params, t)
        grads = [p.grad.double() for p in params]
        opt.step()
        for i, gr in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * gr
            v[i] = b2 * v[i] + (1 - b2) * gr**2
            step_size = lr * (1 - b2**t) ** 0.5 / (1 - b1**t) if correct_bias else lr
            ref[i] = ref[i] - step_size * m[i] / (v[i].sqrt() + eps)  # eps outside the bias correction
            ref[i] = ref[i] - lr * wd * ref[i]
    for p, r in zip(params, ref):
        torch.testing.assert_close(p.detach().double(), r, rtol=1e-5, atol=1e-6)
    assert all("projection" not in opt.state[p] for p in params)


def test_no_projection_by_default_and_arguments_are_checked():
    p = torch.randn(4, 3, requires_grad=True)
    opt = optarena.create("conda", [p])
    run(opt, [p], 1)
    assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
    for kwargs, name in [
        ({"update_proj_gap": 0}, "update_proj_gap"),
        ({"update_proj_gap": True}, "update_proj_gap"),
        ({"proj_type": "full"}, "proj_type"),
        ({"scale": float("inf")}, "scale"),
    ]:
        with pytest.raises(ValueError, match=name):
            optarena.create("conda", [p], **kwargs)
        with pytest.raises(ValueError, match=name):
            opt.add_param_group({"params": [torch.zeros(2, 2, requires_grad=True)], **kwargs})


@pytest.mark.slow
def test_square_matrix_compiled_with_its_svd_matches_eager():
    """A square matrix's basis is shaped like it, so the fused path compiles the SVD refresh."""
    runs = []
    for fused in (False, True):
        p = torch.randn(5, 5, generator=torch.Generator().manual_seed(2)).requires_grad_()
        opt = optarena.create("conda", [{"params": [p], "update_proj_gap": 3}], lr=0.01, fused=fused)
        run(opt, [p], 7)
        runs.append((p.detach().clone(), opt.state[p]["projection"].clone()))
    (pe, be), (pf, bf) = runs
    torch.testing.assert_close(pf, pe, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bf.abs(), be.abs(), rtol=1e-4, atol=1e-5)  # singular vectors up to sign
