"""Engine behaviour shared by all methods: bad input, non-finite gradients, transforms, registry."""
from __future__ import annotations

import inspect

import pytest
import torch

import optarena
from optarena.engine.transforms import GlobalNormClip, GradientTransform, global_norm
from specs import SPECS

BAD = [(name, kwargs, arg) for name, spec in SPECS.items() for kwargs, arg in spec.bad]


@pytest.mark.parametrize("name,kwargs,arg", BAD, ids=[f"{n}-{a}-{i}" for i, (n, _, a) in enumerate(BAD)])
def test_bad_hyperparameters_name_the_argument(name, kwargs, arg):
    with pytest.raises(ValueError) as err:
        optarena.create(name, [torch.zeros(3, requires_grad=True)], **kwargs)
    assert arg in str(err.value)


def test_range_is_in_the_message():
    with pytest.raises(ValueError, match=r"lr must be in \[0, inf\), got -1"):
        optarena.AdamW([torch.zeros(2, requires_grad=True)], lr=-1)
    with pytest.raises(ValueError, match=r"betas\[1\] must be in \[0, 1\), got 1.0"):
        optarena.Lion([torch.zeros(2, requires_grad=True)], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="accepted: betas, eps, lr, weight_decay"):
        optarena.AdamW([torch.zeros(2, requires_grad=True)], amsgrad=True)


@pytest.mark.parametrize(
    "kwargs,arg",
    [({"nonfinite": "ignore"}, "nonfinite"), ({"fused": 1}, "fused"), ({"state_precision": "fp8"}, "state_precision"),
     ({"transforms": [lambda g: g]}, "transforms")],
)  # fmt: skip
def test_bad_engine_options(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        optarena.SGD([torch.zeros(2, requires_grad=True)], **kwargs)


def test_unknown_name_lists_available():
    with pytest.raises(ValueError) as err:
        optarena.create("adamx", [torch.zeros(2, requires_grad=True)])
    for name in optarena.available():
        assert name in str(err.value)


def test_registry_and_create():
    assert {"adamw", "sgd", "lion", "adan"} <= set(optarena.available())
    assert type(optarena.create("ADAMW", [torch.zeros(2, requires_grad=True)])) is optarena.AdamW
    with pytest.raises(ValueError, match="already registered"):
        optarena.register("adamw", optarena.SGD)


def test_signature_shows_reference_argument_names():
    sig = inspect.signature(optarena.Adan)
    assert sig.parameters["betas"].default == (0.98, 0.92, 0.99)
    assert sig.parameters["max_grad_norm"].default == 0.0
    assert sig.parameters["no_prox"].default is False


@pytest.mark.parametrize("name", SPECS)
def test_sparse_gradient_raises_type_error(name):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = optarena.create(name, emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(TypeError, match="sparse"):
        opt.step()


def test_integer_params_are_rejected():
    with pytest.raises(TypeError, match="floating-point"):
        optarena.SGD([torch.zeros(3, dtype=torch.long)])


def _two_params(matrix_only=False):
    """Two vectors (rows of a matrix for a matrix-only method), the second with a NaN gradient."""
    shape = (lambda n: (1, n)) if matrix_only else (lambda n: (n,))
    a = torch.randn(shape(4), requires_grad=True)
    b = torch.randn(shape(3), requires_grad=True)
    a.grad = torch.ones(shape(4))
    b.grad = torch.tensor([1.0, float("nan"), 2.0]).reshape(shape(3))
    return a, b


@pytest.mark.parametrize("name", SPECS)
def test_nonfinite_raise_changes_nothing(name):
    a, b = _two_params(SPECS[name].matrix_only)
    before = (a.detach().clone(), b.detach().clone())
    opt = optarena.create(name, [a, b])
    assert opt.nonfinite == "raise"  # the documented default
    with pytest.raises(optarena.NonFiniteGradientError):
        opt.step()
    assert torch.equal(a, before[0]) and torch.equal(b, before[1])
    assert len(opt.state[a]) == 0


@pytest.mark.parametrize("name", SPECS)
def test_nonfinite_skip_counts_and_is_saved(name):
    a, b = _two_params(SPECS[name].matrix_only)
    before = a.detach().clone()
    opt = optarena.create(name, [a, b], nonfinite="skip")
    opt.step()
    opt.step()
    assert torch.equal(a, before) and opt.skipped_steps == 2
    b.grad = torch.ones_like(b)
    opt.step()
    assert opt.state[a]["step"] == 1
    if SPECS[name].extra.get("first_step_moves", True):  # SOAP's first step only builds its preconditioner
        assert not torch.equal(a, before)
    sd = opt.state_dict()
    assert sd["engine"]["skipped_steps"] == 2
    fresh = optarena.create(name, [a, b], nonfinite="skip")
    fresh.load_state_dict(sd)
    assert fresh.skipped_steps == 2


def test_nonfinite_propagate_does_not_check():
    a, b = _two_params()
    optarena.SGD([a, b], lr=0.1, nonfinite="propagate").step()
    assert torch.isnan(b[1]) and torch.isfinite(a).all()


def test_inf_is_caught_even_when_sums_would_cancel():
    a = torch.zeros(2, requires_grad=True)
    a.grad = torch.tensor([float("inf"), float("-inf")])
    with pytest.raises(optarena.NonFiniteGradientError):
        optarena.SGD([a]).step()


def test_large_finite_gradients_are_not_flagged():
    a = torch.zeros(4, requires_grad=True)
    a.grad = torch.full((4,), 3e38)  # the float32 sum overflows; the float64 check must not
    optarena.SGD([a], lr=1e-40).step()


def test_global_norm_clip_exact_values():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
    grads = [torch.tensor([3.0, 0.0]), torch.tensor([4.0])]  # global norm 5
    out = GlobalNormClip(max_norm=1.0, eps=0.0).update(grads, [a, b], {})
    torch.testing.assert_close(torch.cat(out), torch.tensor([0.6, 0.0, 0.8]))
    small = [torch.tensor([0.3]), torch.tensor([0.4])]
    assert GlobalNormClip(max_norm=1.0).update(small, [a, b], {})[0].item() == pytest.approx(0.3)
    assert global_norm([torch.ones(4), torch.ones(5)]).item() == pytest.approx(3.0)


class Recorder(GradientTransform):
    """Counts calls in its state and doubles the gradients."""

    def init(self):
        return {"calls": 0}

    def update(self, grads, params, state):
        state["calls"] += 1
        return [2 * g for g in grads]


def test_user_transforms_run_in_order_and_keep_state():
    p = torch.zeros(3, requires_grad=True)
    opt = optarena.SGD([p], lr=1.0, transforms=[Recorder(), GlobalNormClip(max_norm=1.0, eps=0.0)])
    p.grad = torch.tensor([1.0, 0.0, 0.0])
    opt.step()
    # doubled to norm 2, then clipped to norm 1: order matters (the reverse would give -2)
    torch.testing.assert_close(p.detach(), torch.tensor([-1.0, 0.0, 0.0]))
    assert torch.equal(p.grad, torch.tensor([1.0, 0.0, 0.0]))  # Recorder returned new tensors
    sd = opt.state_dict()
    assert sd["engine"]["transforms"][0] == {"calls": 1}
    other = optarena.SGD([p], lr=1.0, transforms=[Recorder(), GlobalNormClip(max_norm=1.0)])
    other.load_state_dict(sd)
    assert other._transform_states[0] == {"calls": 1}
    with pytest.raises(ValueError, match="transform"):
        optarena.SGD([p]).load_state_dict(sd)


def _adan_oracle(p0, grads, lr, betas, eps, wd, no_prox, max_grad_norm):
    """Adan written out in float64 from its reference's equations (ALGORITHMS.md)."""
    b1, b2, b3 = betas
    p = [x.double().clone() for x in p0]
    m = [torch.zeros_like(x) for x in p]
    v = [torch.zeros_like(x) for x in p]
    n = [torch.zeros_like(x) for x in p]
    prev = None
    for t, gs in enumerate(grads, start=1):
        gs = [g.double() for g in gs]
        if max_grad_norm > 0:
            norm = torch.sqrt(sum((g**2).sum() for g in gs))
            gs = [g * min(1.0, max_grad_norm / (norm.item() + eps)) for g in gs]
        prev = prev or gs
        for i, g in enumerate(gs):
            d = g - prev[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * d
            n[i] = b3 * n[i] + (1 - b3) * (g + b2 * d) ** 2
            denom = torch.sqrt(n[i]) / (1 - b3**t) ** 0.5 + eps
            step = lr / (1 - b1**t) * m[i] / denom + lr * b2 / (1 - b2**t) * v[i] / denom
            p[i] = p[i] * (1 - lr * wd) - step if no_prox else (p[i] - step) / (1 + lr * wd)
        prev = gs
    return p


@pytest.mark.parametrize("no_prox,max_grad_norm", [(True, 0.0), (False, 0.7), (True, 0.7)])
def test_adan_variants_follow_the_reference_equations(no_prox, max_grad_norm):
    gen = torch.Generator().manual_seed(3)
    p0 = [torch.randn(5, 4, generator=gen), torch.randn(7, generator=gen)]
    grads = [[torch.randn(5, 4, generator=gen), torch.randn(7, generator=gen)] for _ in range(12)]
    kw = dict(lr=0.05, betas=(0.9, 0.8, 0.95), eps=1e-8, wd=0.1, no_prox=no_prox, max_grad_norm=max_grad_norm)
    expected = _adan_oracle(p0, grads, **kw)
    params = [x.clone().requires_grad_() for x in p0]
    opt = optarena.Adan(params, lr=0.05, betas=(0.9, 0.8, 0.95), eps=1e-8, weight_decay=0.1, no_prox=no_prox,
                        max_grad_norm=max_grad_norm)  # fmt: skip
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
    for got, want, init in zip(params, expected, p0):
        assert (got.double() - want).norm() <= 1e-5 * (want - init.double()).norm()
    if max_grad_norm:
        assert grads[-1][0].norm() > 0.7 and params[0].grad.norm() < grads[-1][0].norm()  # p.grad clipped in place


def test_a_set_of_parameters_is_refused():
    with pytest.raises(TypeError, match="ordered collection"):
        optarena.SGD({torch.zeros(2, requires_grad=True)})
