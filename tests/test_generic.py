"""The torch.optim contract, checked for every registered optimizer from the spec table."""
from __future__ import annotations

import copy

import pytest
import torch

import optarena
import checkpoint
from specs import SPECS

CASES = [(name, i, cfg) for name, spec in SPECS.items() for i, cfg in enumerate(spec.configs())]
IDS = [f"{name}-{i}" for name, i, _ in CASES]


def test_spec_table_covers_registry():
    assert sorted(SPECS) == optarena.available()


def make_params(name, dtype=torch.float32, seed=0):
    """Matrix, vector, 4-D kernel and 0-d scalar: the shapes optimizers meet. A matrix-only method
    (Muon) gets a wide matrix and a tall one in place of the vector and the scalar (not 1-row ones:
    inductor turns a product with a size-1 dim into a sum, which rounds differently from eager's
    matmul, and Muon's bf16 Newton-Schulz would show it in test_fused_path_agrees_with_eager)."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(6, 5), (2, 5), (3, 2, 3, 3), (3, 2)] if SPECS[name].matrix_only else [(6, 5), (5,), (3, 2, 3, 3), ()]
    return [torch.randn(s, generator=g).to(dtype).requires_grad_() for s in shapes]


def loss_of(params):
    total = 0.0
    for i, p in enumerate(params):
        q = p.float()
        total = total + ((q - 0.3 * (i + 1)) ** 2).sum() + 0.1 * torch.sin(3 * q).sum()
    return total


def train(opt, params, steps, closure_mode=False):
    for _ in range(steps):
        opt.zero_grad()
        if closure_mode:

            def closure():
                opt.zero_grad()
                loss = loss_of(params)
                loss.backward()
                return loss

            opt.step(closure)
        else:
            loss_of(params).backward()
            opt.step()


def snapshot(params):
    return [p.detach().clone() for p in params]


def assert_identical(a, b):
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and torch.equal(x, y)


@pytest.mark.parametrize("name,i,cfg", CASES, ids=IDS)
def test_step_lowers_loss_and_keeps_dtype(name, i, cfg):
    params = make_params(name)
    opt = optarena.create(name, params, **cfg)
    before = loss_of(params).item()
    train(opt, params, 20)
    assert loss_of(params).item() < before
    assert all(p.dtype == torch.float32 and p.is_leaf for p in params)


@pytest.mark.parametrize("fused", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "fused"])
@pytest.mark.parametrize("name,i,cfg", CASES, ids=IDS)
def test_resume_is_bit_identical(name, i, cfg, fused):
    params = make_params(name)
    opt = optarena.create(name, params, fused=fused, **cfg)
    train(opt, params, 3)
    saved = checkpoint.save(params, opt)
    train(opt, params, 4)
    expected = snapshot(params)

    opt2, resumed = checkpoint.restore(saved, lambda ps: optarena.create(name, ps, fused=fused, **cfg))
    train(opt2, resumed, 4)
    assert_identical(resumed, expected)
    for p, q in zip(params, resumed):
        s1, s2 = opt.state[p], opt2.state[q]
        assert s1.keys() == s2.keys()
        for key in s1:
            if isinstance(s1[key], torch.Tensor):
                assert torch.equal(s1[key], s2[key]), key
            else:
                assert s1[key] == s2[key], key


def trained_two_steps(name):
    """(params, optimizer, a deep copy of its state_dict) after two steps at the spec's settings."""
    params = make_params(name)
    opt = optarena.create(name, params, **SPECS[name].kwargs)
    train(opt, params, 2)
    return params, opt, copy.deepcopy(opt.state_dict())


@pytest.mark.parametrize("name", SPECS)
def test_loaded_state_is_not_shared_with_the_checkpoint(name):
    params, opt, sd = trained_two_steps(name)
    kept = copy.deepcopy(sd)
    opt.load_state_dict(sd)
    train(opt, params, 2)
    for pid, st in kept["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(sd["state"][pid][key], value), key


@pytest.mark.parametrize("name", SPECS)
def test_checkpoint_without_a_newer_hyperparameter_resumes_with_its_default(name):
    """A group saved before a hyperparameter existed (e.g. Muon's `ns_method`) gets its default."""
    params, opt, sd = trained_two_steps(name)
    newest = list(opt.rule.hyper)[-1]
    for group in sd["param_groups"]:
        del group[newest]
    fresh = optarena.create(name, params, **SPECS[name].kwargs)
    fresh.load_state_dict(sd)
    assert all(group[newest] == opt.rule.hyper[newest].default for group in fresh.param_groups)
    train(fresh, params, 1)
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize("name,i,cfg", CASES, ids=IDS)
def test_param_groups_use_their_own_hyperparameters(name, i, cfg):
    params = make_params(name)
    frozen, moving = params[:2], params[2:]
    opt = optarena.create(name, [{"params": frozen, "lr": 0.0}, {"params": moving}], **cfg)
    before = snapshot(params)
    train(opt, params, 3)
    assert_identical(frozen, before[:2])  # lr 0: no step, no decay
    assert not torch.equal(moving[0], before[2])
    assert opt.param_groups[1]["lr"] == cfg.get("lr", optarena.get(name).rule.hyper["lr"].default)


@pytest.mark.parametrize("name", SPECS)
def test_add_param_group_later(name):
    params = make_params(name)
    opt = optarena.create(name, params[:2], **SPECS[name].kwargs)
    train(opt, params, 2)
    before = params[2].detach().clone()
    opt.add_param_group({"params": params[2:], "lr": 0.01})
    train(opt, params, 2)
    assert not torch.equal(params[2], before)
    assert opt.param_groups[-1]["lr"] == 0.01
    with pytest.raises(ValueError, match="weight_dacay"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "weight_dacay": 0.1})
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "lr": -0.1})


@pytest.mark.parametrize("fused", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "fused"])
@pytest.mark.parametrize("name", SPECS)
def test_scheduler_drives_group_lr(name, fused):
    """A scheduler's lr change acts exactly like setting group['lr'] by hand (on the compiled path
    too, where scalars are tensors so that a new lr is neither baked in nor recompiled)."""
    cfg = SPECS[name].kwargs
    a, b = make_params(name), make_params(name)
    opt_a, opt_b = optarena.create(name, a, fused=fused, **cfg), optarena.create(name, b, fused=fused, **cfg)
    sched = torch.optim.lr_scheduler.StepLR(opt_a, step_size=2, gamma=0.5)
    for step in range(6):
        train(opt_a, a, 1)
        sched.step()
        train(opt_b, b, 1)
        for group in opt_b.param_groups:
            group["lr"] = cfg["lr"] * 0.5 ** ((step + 1) // 2)
    assert_identical(a, b)
    assert opt_a.param_groups[0]["lr"] == pytest.approx(cfg["lr"] / 8)
    constant = make_params(name)
    train(optarena.create(name, constant, fused=fused, **cfg), constant, 6)
    assert not torch.equal(constant[0], a[0])  # the schedule really changed the trajectory


@pytest.mark.parametrize("fused", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "fused"])
@pytest.mark.parametrize("name", SPECS)
def test_weight_decay_changed_mid_run_is_honoured(name, fused):
    """Changing one group's weight decay between steps changes that group's next steps, and only its."""
    cfg = {**SPECS[name].kwargs, "weight_decay": 0.0}
    a, b = make_params(name), make_params(name)

    def groups(ps):
        return [{"params": ps[:2]}, {"params": ps[2:]}]

    opt_a = optarena.create(name, groups(a), fused=fused, **cfg)
    opt_b = optarena.create(name, groups(b), fused=fused, **cfg)
    train(opt_a, a, 2)
    train(opt_b, b, 2)
    opt_b.param_groups[0]["weight_decay"] = 0.5
    train(opt_a, a, 2)
    train(opt_b, b, 2)
    assert not torch.equal(a[0], b[0])
    assert_identical(a[2:], b[2:])


@pytest.mark.parametrize("name", SPECS)
def test_closure_is_called_and_its_loss_returned(name):
    a, b = make_params(name), make_params(name)
    opt_a, opt_b = optarena.create(name, a, **SPECS[name].kwargs), optarena.create(name, b, **SPECS[name].kwargs)
    calls = []

    def closure():
        opt_a.zero_grad()
        loss = loss_of(a)
        loss.backward()
        calls.append(loss.item())
        return loss

    for _ in range(3):
        returned = opt_a.step(closure)
        assert returned.item() == calls[-1]
    train(opt_b, b, 3)
    assert len(calls) == 3
    assert_identical(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("name,i,cfg", CASES, ids=IDS)
def test_half_params_train_in_half_close_to_fp32(name, i, cfg, dtype):
    p16 = make_params(name, dtype)
    p32 = [p.detach().float().requires_grad_() for p in make_params(name, dtype)]
    opt16, opt32 = optarena.create(name, p16, **cfg), optarena.create(name, p32, **cfg)
    train(opt16, p16, 5)
    train(opt32, p32, 5)
    assert all(p.dtype == dtype for p in p16)
    if opt16.storage.precision is None:  # state in the parameter's dtype (8-bit state: tests/test_eightbit.py)
        assert all(v.dtype == dtype for st in opt16.state.values() for v in st.values() if torch.is_tensor(v))
    got = torch.cat([p.detach().float().reshape(-1) for p in p16])
    ref = torch.cat([p.detach().reshape(-1) for p in p32])
    init = torch.cat([p.detach().float().reshape(-1) for p in make_params(name, dtype)])
    assert torch.isfinite(got).all()
    # bf16 keeps 8 significant bits: a step of 0.01 on |p| ~ 1 lands on a grid of 0.0078, so
    # sign-based Lion drifts most (about 0.2 here); a wrong rule would be off by order 1.
    assert torch.linalg.vector_norm(got - ref) <= 0.3 * torch.linalg.vector_norm(ref - init)
    assert loss_of(p16).item() < loss_of(make_params(name, dtype)).item()


@pytest.mark.parametrize("name", SPECS)
def test_fp32_state_for_bf16_params(name):
    params = make_params(name, torch.bfloat16)
    opt = optarena.create(name, params, state_precision="fp32", **SPECS[name].kwargs)
    train(opt, params, 2)
    assert all(v.dtype == torch.float32 for st in opt.state.values() for v in st.values() if torch.is_tensor(v))
    assert all(p.dtype == torch.bfloat16 for p in params)


@pytest.mark.parametrize("name", SPECS)
def test_zero_dim_and_empty_tensors(name):
    shape = (1, 1) if SPECS[name].matrix_only else ()  # a matrix-only method (Muon) gets a 1x1 matrix
    scalar = torch.full(shape, 1.5, requires_grad=True)
    empty = torch.zeros(0, 3, requires_grad=True)
    opt = optarena.create(name, [scalar, empty], **SPECS[name].kwargs)
    for _ in range(3):
        opt.zero_grad()
        ((scalar - 0.2) ** 2).sum().add(empty.sum()).backward()
        opt.step()
    assert scalar.shape == shape and scalar.item() != 1.5 and torch.isfinite(scalar).all()
    assert empty.shape == (0, 3)


@pytest.mark.parametrize("name", SPECS)
def test_params_without_grad_are_skipped(name):
    params = make_params(name)
    unused = torch.randn((2, 2) if SPECS[name].matrix_only else (4,), requires_grad=True)
    opt = optarena.create(name, params + [unused], **SPECS[name].kwargs)
    before = unused.detach().clone()
    train(opt, params, 3)
    assert torch.equal(unused, before)
    assert len(opt.state[unused]) == 0


@pytest.mark.parametrize("fused", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "fused"])
@pytest.mark.parametrize("name", SPECS)
def test_non_contiguous_params_match_contiguous(name, fused):
    base = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    strided = base.clone().t().requires_grad_()  # shape (7, 5), transposed strides
    dense = base.clone().t().contiguous().requires_grad_()
    assert not strided.is_contiguous()
    results = []
    for p in (strided, dense):
        opt = optarena.create(name, [p], fused=fused, **SPECS[name].kwargs)
        train(opt, [p], 4)
        results.append(p.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name,i,cfg", CASES, ids=IDS)
def test_fused_path_agrees_with_eager(name, i, cfg):
    a, b = make_params(name), make_params(name)
    train(optarena.create(name, a, **cfg), a, 10)
    train(optarena.create(name, b, fused=True, **cfg), b, 10)
    init = torch.cat([p.detach().reshape(-1) for p in make_params(name)])
    got = torch.cat([p.detach().reshape(-1) for p in b])
    ref = torch.cat([p.detach().reshape(-1) for p in a])
    assert torch.linalg.vector_norm(got - ref) <= 1e-5 * torch.linalg.vector_norm(ref - init)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lion", "adan", "diffgrad"])
def test_chunked_compiled_calls_agree_with_eager_and_resume_exactly(name):
    """Eleven equal shapes run as compiled chunks of 8, 2 and 1: the same trajectory as eager, and a
    checkpoint taken between steps resumes bit-identically."""
    gen = torch.Generator().manual_seed(2)
    init = [torch.randn(7, 6, generator=gen) for _ in range(11)]

    def run(fused, steps, state=None, start=None):
        params = [t.clone().requires_grad_() for t in (start or init)]
        opt = optarena.create(name, params, fused=fused, **SPECS[name].kwargs)
        if state is not None:
            opt.load_state_dict(state)
        train(opt, params, steps)
        return params, opt

    eager, _ = run(False, 6)
    fused, _ = run(True, 6)
    for a, b in zip(eager, fused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    half, opt = run(True, 3)
    saved = copy.deepcopy(opt.state_dict())
    snapshot_ = snapshot(half)
    train(opt, half, 3)
    resumed, _ = run(True, 3, state=saved, start=snapshot_)
    assert_identical(resumed, half)
