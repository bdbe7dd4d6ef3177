"""`load_state_dict` checks a checkpoint against the parameters before anything changes: a state of
the wrong shape, dtype or count is a ValueError naming the parameter (never a crash in a kernel)."""
from __future__ import annotations

import copy
import re

import pytest
import torch

import optarena
from specs import SPECS
from test_generic import make_params, train


def test_the_issues_segfault_is_a_value_error():
    for name, key in (("adamw", "exp_avg"), ("sgd", "momentum_buffer")):
        kw = {"momentum": 0.9} if name == "sgd" else {}
        a = torch.nn.Parameter(torch.randn(2, 2))
        o1 = optarena.create(name, [a], fused=True, **kw)
        a.grad = torch.randn(2, 2)
        o1.step()
        b = torch.nn.Parameter(torch.randn(1000, 1000))
        o2 = optarena.create(name, [b], fused=True, **kw)
        with pytest.raises(ValueError, match=rf"'{key}'.*expected shape \(1000, 1000\).*found shape \(2, 2\)"):
            o2.load_state_dict(o1.state_dict())
        b.grad = torch.randn(1000, 1000)
        o2.step()  # untouched by the failed load: a fresh state
        assert o2.state[b]["step"] == 1 and o2.state[b][key].shape == (1000, 1000)


def other_shapes(name):
    """The spec's parameters with every dimension grown by one."""
    return [torch.randn([d + 1 for d in p.shape]).requires_grad_() for p in make_params(name)]


def with_state(name):
    """The spec's configuration, with momentum for SGD (which keeps no state without it)."""
    return {**SPECS[name].kwargs, **({"momentum": 0.9} if name == "sgd" else {})}


@pytest.mark.parametrize("name", SPECS)
def test_state_of_other_shapes_is_refused_and_nothing_changes(name):
    params = make_params(name)
    opt = optarena.create(name, params, **with_state(name))
    train(opt, params, 2)
    saved = copy.deepcopy(opt.state_dict())
    others = other_shapes(name)
    target = optarena.create(name, others, **{**with_state(name), "lr": 0.001})
    with pytest.raises(ValueError, match=r"parameter at group 0, index \d+: expected shape .*, found shape"):
        target.load_state_dict(saved)
    assert len(target.state) == 0 and target.param_groups[0]["lr"] == 0.001  # nothing was loaded
    train(target, others, 1)
    assert all(torch.isfinite(p).all() for p in others)


@pytest.mark.parametrize("name", SPECS)
def test_the_message_names_the_parameter(name):
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.ReLU(),
                              torch.nn.Linear(8, 3))  # fmt: skip
    wide = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 9), torch.nn.ReLU(),
                               torch.nn.Linear(9, 3))  # fmt: skip
    kw = {k: v for k, v in with_state(name).items() if k != "min_8bit_size"}
    opt = optarena.create_optimizer(net, name, **kw)
    net(torch.randn(5, 4)).pow(2).sum().backward()
    opt.step()
    target = optarena.create_optimizer(wide, name, **kw)
    with pytest.raises(ValueError) as err:
        target.load_state_dict(opt.state_dict())
    message = str(err.value)
    assert re.search(r"'2\.(weight|bias)'", message) or re.search(r"'4\.weight'", message), message
    assert "expected shape" in message and "found shape" in message


def saved_adamw(**kw):
    params = [torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)]
    opt = optarena.create("adamw", params, **kw)
    train(opt, params, 2)
    return params, opt, copy.deepcopy(opt.state_dict())


def fresh_adamw(params, **kw):
    return optarena.create("adamw", [p.detach().clone().to(kw.pop("dtype", p.dtype)).requires_grad_() for p in params], **kw)


@pytest.mark.parametrize(
    "edit,pattern",
    [
        (lambda sd: sd["param_groups"].append(copy.deepcopy(sd["param_groups"][0])), "2 param groups, this optimizer has 1"),
        (lambda sd: sd["param_groups"][0]["params"].pop(), "group 0: state_dict has 1 parameters, this optimizer's group has 2"),
        (lambda sd: sd["state"].__setitem__(17, sd["state"][0]), "parameter id 17, which no param group lists"),
        (lambda sd: sd["state"][0].pop("exp_avg_sq"), "lacks 'exp_avg_sq'"),
        (lambda sd: sd["state"][0].__setitem__("momentum_buffer", torch.zeros(4, 3)), "'momentum_buffer' .* is not state of AdamW"),
        (lambda sd: sd["state"][1].__setitem__("exp_avg", torch.zeros(3, dtype=torch.float64)), "expected shape \\(3,\\) float32, found shape \\(3,\\) float64"),
        (lambda sd: sd["state"][1].__setitem__("exp_avg", [0.0, 0.0, 0.0]), "'exp_avg' .* must be a tensor"),
        (lambda sd: sd["state"][0].__setitem__("step", -1), "'step' .* integer in \\[0, inf\\)"),
        (lambda sd: sd["state"][0].__setitem__("step", 2.5), "'step' .* integer in \\[0, inf\\)"),
        (lambda sd: sd["state"].__setitem__(0, "not a dict"), "must be a dict"),
        (lambda sd: sd.pop("state"), "must hold 'param_groups' \\(a list\\) and 'state' \\(a dict\\)"),
    ],
    ids=["groups", "params", "unknown-id", "missing", "extra", "dtype", "not-tensor", "negative-step", "fractional-step",
         "state-not-dict", "no-state"],
)  # fmt: skip
def test_damaged_state_dicts_are_refused(edit, pattern):
    params, _, sd = saved_adamw()
    edit(sd)
    target = fresh_adamw(params)
    with pytest.raises(ValueError, match=pattern):
        target.load_state_dict(sd)
    assert len(target.state) == 0


def test_float_state_must_be_in_the_storage_dtype():
    params, _, sd = saved_adamw()
    with pytest.raises(ValueError, match=r"bfloat16, found shape \(4, 3\) float32.*state_precision=None"):
        fresh_adamw(params, dtype=torch.bfloat16).load_state_dict(sd)
    _, _, sd16 = saved_adamw(state_precision="bf16")
    target = fresh_adamw(params, state_precision="bf16")
    target.load_state_dict(sd16)  # bf16 state for float32 parameters: what that precision stores
    assert target.state[target.param_groups[0]["params"][0]]["exp_avg"].dtype == torch.bfloat16


def test_8bit_layouts_must_match():
    params = [torch.randn(64, 64, requires_grad=True)]
    opt = optarena.create("adamw8bit", params, min_8bit_size=0)
    train(opt, params, 1)
    sd = copy.deepcopy(opt.state_dict())
    target = optarena.create("adamw8bit", [params[0].detach().clone().requires_grad_()])  # 4096 elements: quantized too
    target.load_state_dict(sd)
    target = optarena.create("adamw8bit", [params[0].detach().clone().requires_grad_()], min_8bit_size=10**6)
    with pytest.raises(ValueError, match="8-bit codes where the other optimizer kept floats.*min_8bit_size"):
        target.load_state_dict(sd)
    sd["state"][0]["exp_avg.absmax"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"'exp_avg.absmax' .* expected shape \(16,\) float32, found shape \(3,\)"):
        optarena.create("adamw8bit", [params[0].detach().clone().requires_grad_()]).load_state_dict(sd)


def test_sgd_keeps_a_buffer_while_momentum_is_off():
    """A buffer made while momentum was on and kept after it was set to 0 is valid state."""
    p = torch.randn(3, requires_grad=True)
    opt = optarena.SGD([p], lr=0.1, momentum=0.9)
    train(opt, [p], 2)
    opt.param_groups[0]["momentum"] = 0.0
    train(opt, [p], 1)
    q = p.detach().clone().requires_grad_()
    other = optarena.SGD([q], lr=0.1)
    other.load_state_dict(opt.state_dict())
    assert torch.equal(other.state[q]["momentum_buffer"], opt.state[p]["momentum_buffer"])
    sd = opt.state_dict()
    sd["state"][0]["momentum_buffer"] = torch.zeros(4)
    with pytest.raises(ValueError, match=r"'momentum_buffer' .* expected shape \(3,\)"):
        optarena.SGD([q], lr=0.1).load_state_dict(sd)


def test_torch_optim_adamw_checkpoints_resume_here():
    """torch.optim.AdamW's state (the same names; its step a float tensor) loads, and the next step
    is torch's next step."""
    init = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    theirs = init.clone().requires_grad_()
    torch_opt = torch.optim.AdamW([theirs], lr=0.05, foreach=False)
    for i in range(3):
        theirs.grad = torch.randn(5, 4, generator=torch.Generator().manual_seed(i))
        torch_opt.step()
    ours = theirs.detach().clone().requires_grad_()
    opt = optarena.AdamW([ours], lr=0.05)
    opt.load_state_dict(torch_opt.state_dict())
    assert opt.state[ours]["step"] == 3
    theirs.grad = ours.grad = torch.randn(5, 4, generator=torch.Generator().manual_seed(9))
    torch_opt.step()
    opt.step()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
