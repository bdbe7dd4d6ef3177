"""SOAP's own semantics (the reference's quirks), beyond the generic tests and the golden replay."""
from __future__ import annotations

import pytest
import torch

import optarena


def quadratic_grads(params, seed):
    """Set fixed pseudo-random gradients (no autograd needed: SOAP only reads p.grad)."""
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)


def test_first_step_only_builds_the_preconditioner():
    params = [torch.randn(6, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(), torch.randn(3)]
    params[1].requires_grad_()
    before = [p.detach().clone() for p in params]
    opt = optarena.SOAP(params, lr=0.1, weight_decay=0.5)
    quadratic_grads(params, 1)
    g = params[0].grad.clone()
    opt.step()
    for p, b in zip(params, before):
        assert torch.equal(p, b)  # no update and no decay, bit for bit
    st = opt.state[params[0]]
    assert st["step"] == 1
    assert torch.count_nonzero(st["exp_avg"]) == 0 and torch.count_nonzero(st["exp_avg_sq"]) == 0
    beta = 0.95  # shampoo_beta=-1 means betas[1]
    torch.testing.assert_close(st["GG_0"], (1 - beta) * g @ g.T)
    torch.testing.assert_close(st["GG_1"], (1 - beta) * g.T @ g)
    for k in (0, 1):
        q, gg = st[f"Q_{k}"], st[f"GG_{k}"]
        torch.testing.assert_close(q.T @ q, torch.eye(q.shape[0]), atol=1e-5, rtol=0)
        eig = torch.diagonal(q.T @ gg @ q)
        assert torch.all(eig[:-1] >= eig[1:] - 1e-6)  # descending eigenvalue order
    assert set(opt.state[params[1]]) == {"step", "exp_avg", "exp_avg_sq"}  # 1-D: no factor by default


@pytest.mark.parametrize("frequency", [1, 3])
def test_eigenbasis_refreshes_every_precondition_frequency_updates(frequency):
    p = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)).requires_grad_()
    opt = optarena.SOAP([p], lr=0.01, precondition_frequency=frequency)
    changed = []
    previous = None
    for step in range(1, 12):
        quadratic_grads([p], step)
        opt.step()
        q = (opt.state[p]["Q_0"].clone(), opt.state[p]["Q_1"].clone())
        if previous is not None:
            changed.append(step if not all(torch.equal(a, b) for a, b in zip(q, previous)) else None)
        previous = q
    # Updates are counted from the second step (t = step - 1): refresh when t % frequency == 0.
    expected = [s if (s - 1) % frequency == 0 else None for s in range(2, 12)]
    assert changed == expected


def test_refresh_is_one_power_iteration_and_qr_with_v_permuted_and_m_reprojected():
    torch.manual_seed(0)
    p = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    opt = optarena.SOAP([p], lr=0.01, precondition_frequency=2)
    for step in (1, 2):
        quadratic_grads([p], step)
        opt.step()
    st = opt.state[p]
    q_old = [st["Q_0"].clone(), st["Q_1"].clone()]
    m_old, v_old, gg_old = st["exp_avg"].clone(), st["exp_avg_sq"].clone(), [st["GG_0"].clone(), st["GG_1"].clone()]
    quadratic_grads([p], 3)
    g = p.grad.clone()
    opt.step()  # t = 2: refresh
    b1 = b2 = 0.95
    gp = q_old[0].T @ g @ q_old[1]
    m_mid = b1 * m_old + (1 - b1) * gp
    v_mid = b2 * v_old + (1 - b2) * gp**2
    gg = [gg_old[0] + (1 - b2) * (g @ g.T - gg_old[0]), gg_old[1] + (1 - b2) * (g.T @ g - gg_old[1])]
    torch.testing.assert_close(st["GG_0"], gg[0])
    torch.testing.assert_close(st["GG_1"], gg[1])
    v = v_mid
    q_new = []
    for k in (0, 1):
        order = torch.argsort(torch.diagonal(q_old[k].T @ gg[k] @ q_old[k]), descending=True)
        v = v.index_select(k, order)
        q_new.append(torch.linalg.qr(gg[k] @ q_old[k][:, order]).Q)
    torch.testing.assert_close(st["Q_0"], q_new[0])
    torch.testing.assert_close(st["Q_1"], q_new[1])
    torch.testing.assert_close(st["exp_avg_sq"], v)
    # m, seen in the parameter's basis, is unchanged by the change of basis.
    m_param = q_old[0] @ m_mid @ q_old[1].T
    torch.testing.assert_close(st["exp_avg"], q_new[0].T @ m_param @ q_new[1])


def test_update_is_adam_in_the_eigenbasis():
    """Step 2 by hand: u = Q_L (m / (sqrt(v) + eps)) Q_R^T, bias corrections with t = 1, decay after."""
    torch.manual_seed(0)
    p = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    lr, wd, eps = 0.1, 0.2, 1e-8
    opt = optarena.SOAP([p], lr=lr, weight_decay=wd, eps=eps, betas=(0.9, 0.99))
    quadratic_grads([p], 1)
    opt.step()
    ql, qr = opt.state[p]["Q_0"].clone(), opt.state[p]["Q_1"].clone()
    quadratic_grads([p], 2)
    x0, g = p.detach().clone(), p.grad.clone()
    opt.step()
    gp = ql.T @ g @ qr
    m, v = 0.1 * gp, 0.01 * gp**2
    step_size = lr * (1 - 0.99) ** 0.5 / (1 - 0.9)
    x = x0 - step_size * (ql @ (m / (v.sqrt() + eps)) @ qr.T)
    torch.testing.assert_close(p.detach(), x - lr * wd * x)


def test_identity_basis_reduces_to_adam_with_decay_after_the_update():
    """Sides above max_precond_dim get no factor (identity basis) and 1-D/0-d params none by
    default: SOAP is then Adam that skips its first step, with decoupled decay on the updated weights."""
    torch.manual_seed(0)
    shapes = [(6, 5), (5,), ()]
    params = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    ref = [p.detach().clone() for p in params]
    lr, (b1, b2), eps, wd = 0.05, (0.9, 0.99), 1e-6, 0.1
    opt = optarena.SOAP(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, max_precond_dim=4)
    m = [torch.zeros_like(x) for x in ref]
    v = [torch.zeros_like(x) for x in ref]
    for step in range(1, 8):
        quadratic_grads(params, step)
        grads = [p.grad.clone() for p in params]
        opt.step()
        if step == 1:
            continue
        t = step - 1
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            ref[i] = ref[i] - lr * (1 - b2**t) ** 0.5 / (1 - b1**t) * m[i] / (v[i].sqrt() + eps)
            ref[i] = ref[i] - lr * wd * ref[i]
        for p, r in zip(params, ref):
            torch.testing.assert_close(p.detach(), r, rtol=1e-12, atol=1e-12)
    assert all(set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"} for p in params)


def test_options_of_the_reference():
    p = torch.randn(5, 3, requires_grad=True)
    opt = optarena.SOAP([p], max_precond_dim=4, precondition_1d=True)
    bias = torch.randn(3, requires_grad=True)
    opt.add_param_group({"params": [bias]})
    quadratic_grads([p, bias], 0)
    opt.step()
    assert sorted(k for k in opt.state[p] if k.startswith("Q")) == ["Q_1"]  # side 5 > 4: identity basis
    assert "Q_0" in opt.state[bias]  # precondition_1d
    with pytest.raises(ValueError, match="merge_dims=True is not supported yet"):
        optarena.SOAP([p], merge_dims=True)
    with pytest.raises(ValueError, match="channels_last'? is not supported yet"):
        optarena.SOAP([p], data_format="channels_last")
    with pytest.raises(ValueError, match="data_format"):
        optarena.SOAP([p], data_format="nchw")


def test_normalize_grads_gives_unit_rms_updates_and_no_bias_correction():
    torch.manual_seed(0)
    p = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    opt = optarena.SOAP([p], lr=0.1, weight_decay=0.0, normalize_grads=True, correct_bias=False)
    quadratic_grads([p], 1)
    opt.step()
    quadratic_grads([p], 2)
    before = p.detach().clone()
    opt.step()
    step = p.detach() - before
    torch.testing.assert_close(step.square().mean().sqrt(), torch.tensor(0.1, dtype=torch.float64))
