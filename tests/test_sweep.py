"""The sweep: property-based tests (hypothesis) over every registered optimizer.

Each test draws an optimizer from the registry and a situation: parameter shapes (0-d, empty,
1-D, 2-D, 4-D), dtypes, memory layouts (transposed, sliced views, channels-last, gradients with
other strides than their parameter), missing and sparse gradients, valid and invalid
hyperparameters, engine options (`nonfinite`, `state_precision`, `fused`, transforms), non-finite
gradients under each policy, and mismatched or damaged `state_dict`s. The contract:

* it works, or it raises ValueError / TypeError whose message names the argument (or the problem:
  a matrix-only method given a vector points to `create_optimizer`), never another exception;
* `NonFiniteGradientError` only for an inf/NaN gradient under `nonfinite="raise"`, and then nothing
  changed (parameters, state, transform state); under `"skip"` nothing changed either and the step
  is counted;
* after steps with finite gradients every parameter is the same tensor object, with its dtype,
  shape and strides, and finite values;
* a refused `load_state_dict` changes nothing and the optimizer keeps working; a `state_dict` of
  the same optimizer resumes bit-identically.

Examples are bounded and derandomized (CI is reproducible; about a minute on 2 cores); the data of
each example comes from a seeded `torch.Generator` drawn by hypothesis, so a failure's printed
draws reproduce it. `OPTARENA_SWEEP_SCALE=20` multiplies the examples for a deeper sweep by hand.
The bugs the sweep found are kept at the end as their minimal reproductions.
"""
from __future__ import annotations

import copy
import io
import math
import os
import re
from typing import NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optarena
from optarena import CoordinateClip, GlobalNormClip, GradientNoise, NonFiniteGradientError, UpdateClip
from optarena.engine import hyper as H
from specs import SPECS

NAMES = optarena.available()
MATRIX_ONLY = {name for name in NAMES if optarena.get(name).rule.matrix_only}
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
PRECISIONS = ("default", None, "fp32", "bf16", "8bit")  # "default": the argument is not passed
POLICIES = ("raise", "skip", "propagate")
SHAPES = ((), (0, 3), (0,), (1,), (5,), (1, 1), (4, 3), (3, 1), (3, 2, 3, 3), (2, 0, 3, 3))
MATRIX_SHAPES = tuple(s for s in SHAPES if len(s) >= 2)
GRAD_SCALE = 0.1  # moderate gradients: float16 keeps them (and their squares) in range


SCALE = float(os.environ.get("OPTARENA_SWEEP_SCALE", "1"))
"""Multiplies every test's number of examples: `OPTARENA_SWEEP_SCALE=20` for a deeper sweep by hand."""


def sweep(max_examples: int):
    """Bounded, reproducible hypothesis settings (no deadline: the first compile or native build is slow)."""
    return settings(
        max_examples=max(1, round(max_examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# -- parameters and gradients -----------------------------------------------------------------------
class P(NamedTuple):
    """How one parameter is made: shape, dtype, memory layout, its gradients' layout, whether it gets any."""

    shape: tuple
    dtype: torch.dtype
    layout: str = "contiguous"
    grad_layout: str = "like"
    has_grad: bool = True


def layouts_for(ndim: int) -> list[str]:
    return ["contiguous"] + ["sliced"] * (ndim >= 1) + ["transposed"] * (ndim >= 2) + ["channels_last"] * (ndim == 4)


def grad_layouts_for(ndim: int) -> list[str]:
    return ["like", "contiguous"] + ["transposed"] * (ndim >= 2)


def reverse_strides(t: torch.Tensor) -> torch.Tensor:
    """The same values with the dimensions' memory order reversed (column-major for a matrix)."""
    order = tuple(reversed(range(t.dim())))
    return t.permute(order).contiguous().permute(order)


def in_layout(values: torch.Tensor, layout: str) -> torch.Tensor:
    if layout == "contiguous":
        return values.clone()
    if layout == "transposed":
        return reverse_strides(values)
    if layout == "sliced":  # every other element of the last dimension of a wider tensor: not dense
        wide = torch.zeros(*values.shape[:-1], 2 * values.shape[-1], dtype=values.dtype)
        wide[..., ::2] = values
        return wide[..., ::2]
    if layout == "channels_last":
        return values.contiguous(memory_format=torch.channels_last)
    raise AssertionError(layout)


def make_param(spec: P, gen: torch.Generator) -> torch.Tensor:
    values = torch.randn(spec.shape, generator=gen).to(spec.dtype)
    p = in_layout(values, spec.layout).requires_grad_()
    assert p.is_leaf and p.shape == spec.shape
    return p


def make_grad(p: torch.Tensor, spec: P, gen: torch.Generator, scale: float = GRAD_SCALE) -> torch.Tensor:
    values = (torch.randn(spec.shape, generator=gen) * scale).to(spec.dtype)
    if spec.grad_layout == "like":
        return torch.empty_like(p).copy_(values)  # the parameter's strides where it is dense
    return in_layout(values, spec.grad_layout)


def set_grads(params, specs, gen, scale: float = GRAD_SCALE) -> None:
    for p, s in zip(params, specs):
        p.grad = make_grad(p, s, gen, scale) if s.has_grad else None


@st.composite
def param_specs(draw, shapes=SHAPES, dtypes=DTYPES, min_size=1, max_size=3, layouts=True):
    """1-3 parameters; a quarter of them without gradients."""
    n = draw(st.integers(min_size, max_size))
    out = []
    for _ in range(n):
        shape = draw(st.sampled_from(shapes))
        ndim = len(shape)
        out.append(
            P(
                shape,
                draw(st.sampled_from(dtypes)),
                draw(st.sampled_from(layouts_for(ndim))) if layouts else "contiguous",
                draw(st.sampled_from(grad_layouts_for(ndim))) if layouts else "like",
                draw(st.sampled_from((True, True, True, False))),
            )
        )
    return out


# -- configurations --------------------------------------------------------------------------------
TRANSFORMS = {
    "none": lambda: [],
    "global-norm-clip": lambda: [GlobalNormClip(max_norm=1.0)],
    "coordinate-clip": lambda: [CoordinateClip(threshold=0.05)],
    "noise": lambda: [GradientNoise(eta=0.01, seed=3)],
    "update-clip": lambda: [UpdateClip(max_norm=0.5)],
}


def hyper_of(name) -> dict:
    cls = optarena.get(name)
    return {**cls.rule.hyper, **cls.optimizer_wide}


@st.composite
def valid_kwargs(draw, name, precision=PRECISIONS, policies=POLICIES, transforms=tuple(TRANSFORMS)):
    """A configuration near the spec's (one of its configs, lr scaled, decay and betas redrawn) with
    drawn engine options."""
    hyper = hyper_of(name)
    cfg = dict(draw(st.sampled_from(SPECS[name].configs())))
    lr = cfg.get("lr", hyper["lr"].default) * draw(st.sampled_from((1.0, 1.0, 0.5, 2.0, 0.0)))
    cfg["lr"] = torch.tensor(lr) if draw(st.integers(0, 9)) == 9 else lr  # a 0-d tensor lr is a number
    if "weight_decay" in hyper and draw(st.booleans()):
        cfg["weight_decay"] = draw(st.sampled_from((0.0, 0.01, 0.1)))
    if "betas" in hyper and draw(st.booleans()):
        n = len(hyper["betas"].default)
        cfg["betas"] = tuple(draw(st.lists(st.floats(0.0, 0.999), min_size=n, max_size=n)))
    p = draw(st.sampled_from(precision))
    if p != "default":
        cfg["state_precision"] = p
        if p == "8bit":
            cfg["min_8bit_size"] = draw(st.sampled_from((0, 8, 4096)))
    cfg["nonfinite"] = draw(st.sampled_from(policies))
    cfg["transforms"] = TRANSFORMS[draw(st.sampled_from(transforms))]()
    return cfg


def groups_for(name, params, specs, aux: bool):
    """One group; for a matrix-only method with `aux`, its vectors and scalars in a group of AdamW's rule."""
    if name in MATRIX_ONLY and aux:
        matrices = [p for p, s in zip(params, specs) if len(s.shape) >= 2]
        rest = [p for p, s in zip(params, specs) if len(s.shape) < 2]
        groups = [{"params": matrices}] if matrices else []
        if rest:
            groups.append({"params": rest, "rule": "adamw", "lr": 3e-4})
        return groups
    return params


def refusal(name, specs, aux) -> str | None:
    """The text the ValueError of a configuration that must be refused names, else None."""
    if name in MATRIX_ONLY and not aux and any(len(s.shape) < 2 for s in specs):
        return "create_optimizer"
    return None


# -- assertions ------------------------------------------------------------------------------------
def params_of(opt):
    return [p for g in opt.param_groups for p in g["params"]]


def snapshot_state(opt) -> dict:
    """A deep copy of the per-parameter state (non-empty entries), keyed by parameter id."""
    return {id(p): copy.deepcopy(dict(st)) for p, st in opt.state.items() if st}


def assert_same_state(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for pid in before:
        a, b = before[pid], after[pid]
        assert a.keys() == b.keys(), (a.keys(), b.keys())
        for key in a:
            if torch.is_tensor(a[key]):
                assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
                assert torch.equal(a[key], b[key]) or (
                    a[key].is_floating_point() and torch.equal(a[key].isnan(), b[key].isnan())
                    and torch.equal(a[key].nan_to_num(), b[key].nan_to_num())
                ), key
            else:
                assert a[key] == b[key], key


def assert_same_values(before: list, params: list) -> None:
    for b, p in zip(before, params):
        assert p.dtype == b.dtype and p.shape == b.shape
        assert torch.equal(p.detach(), b) or torch.equal(p.detach().nan_to_num(), b.nan_to_num())


def assert_sound(opt, params, meta, finite=True) -> None:
    """Same tensor objects, dtype, shape, strides, leaves; finite values where asked."""
    held = params_of(opt)  # in the groups' order (a matrix-only method's AdamW group comes last)
    assert len(held) == len(params) and {id(p) for p in held} == {id(p) for p in params}
    for p, (dtype, shape, stride) in zip(params, meta):
        assert p.dtype == dtype, (p.dtype, dtype)
        assert tuple(p.shape) == shape and p.stride() == stride, (p.shape, p.stride(), shape, stride)
        assert p.is_leaf and p.requires_grad
        if finite:
            assert torch.isfinite(p).all(), p


def assert_state_typed(opt, params) -> None:
    """Float state is kept in the storage's dtype (the parameter's for state_precision None)."""
    precision = opt.storage.precision
    for p in params:
        for key, v in opt.state.get(p, {}).items():
            if not torch.is_tensor(v) or not v.is_floating_point():
                continue
            want = {None: p.dtype, "fp32": torch.float32, "bf16": torch.bfloat16, "8bit": torch.float32}[precision]
            assert v.dtype == want, (key, v.dtype, want)
            assert torch.isfinite(v).all(), key


def layout_meta(params):
    return [(p.dtype, tuple(p.shape), p.stride()) for p in params]


# -- valid configurations --------------------------------------------------------------------------
@pytest.mark.slow
@sweep(max_examples=1200)
@given(data=st.data())
def test_valid_configurations_keep_parameters_sound(data):
    """Any shapes, dtypes and layouts, missing gradients, any engine options: a few steps keep
    every parameter the same finite tensor with its dtype, shape and strides; parameters without a
    gradient are untouched and get no state. A matrix-only method refuses vectors and scalars (a
    ValueError pointing to create_optimizer) unless they are in a group of another rule."""
    name = data.draw(st.sampled_from(NAMES), label="name")
    specs = data.draw(param_specs(), label="params")
    aux = name in MATRIX_ONLY and data.draw(st.booleans(), label="aux_group")
    kwargs = data.draw(valid_kwargs(name), label="kwargs")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    params = [make_param(s, gen) for s in specs]
    meta = layout_meta(params)
    groups = groups_for(name, params, specs, aux)

    expected = refusal(name, specs, aux)
    if expected:
        with pytest.raises(ValueError, match=expected):
            optarena.create(name, groups, **kwargs)
        return
    opt = optarena.create(name, groups, **kwargs)
    untouched = [(p, p.detach().clone()) for p, s in zip(params, specs) if not s.has_grad]
    for _ in range(3):
        set_grads(params, specs, gen)
        opt.step()
        assert_sound(opt, params, meta)
    for p, before in untouched:
        assert torch.equal(p.detach(), before) and not opt.state.get(p)
    assert_state_typed(opt, params)
    assert opt.skipped_steps == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@sweep(max_examples=3)
@given(data=st.data())
def test_fused_path_keeps_parameters_sound(name, data):
    """The same on the fused path (C kernels, torch's fused kernels, torch.compile), a few examples
    per method: float32, small shapes (each new rule x ndim x layout class compiles), every layout."""
    shapes = ((4, 3), (3, 2, 3, 3)) if name in MATRIX_ONLY else ((5,), (4, 3), (3, 2, 3, 3))
    specs = data.draw(param_specs(shapes=shapes, dtypes=(torch.float32,), max_size=2), label="params")
    kwargs = data.draw(valid_kwargs(name, precision=("default", None, "fp32"), transforms=("none",)), label="kwargs")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    params = [make_param(s, gen) for s in specs]
    meta = layout_meta(params)
    opt = optarena.create(name, params, fused=True, **kwargs)
    for _ in range(3):
        set_grads(params, specs, gen)
        opt.step()
        assert_sound(opt, params, meta)
    assert_state_typed(opt, params)


# -- bad parameters and gradients ------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_sparse_gradients_are_a_type_error_and_change_nothing(name):
    """A sparse gradient (any of three parameters, before or after the first step, under each
    non-finite policy) is a TypeError naming it that changes nothing; dense gradients then step."""
    for policy in POLICIES:
        for sparse_at in range(3):
            for warm in (False, True):
                gen = torch.Generator().manual_seed(sparse_at)
                specs = [P((4, 3), torch.float32)] * 3
                params = [make_param(s, gen) for s in specs]
                opt = optarena.create(name, params, nonfinite=policy, **SPECS[name].kwargs)
                if warm:
                    set_grads(params, specs, gen)
                    opt.step()
                set_grads(params, specs, gen)
                params[sparse_at].grad = params[sparse_at].grad.to_sparse()
                before, state = [p.detach().clone() for p in params], snapshot_state(opt)
                with pytest.raises(TypeError, match="sparse"):
                    opt.step()
                assert_same_values(before, params)
                assert_same_state(state, snapshot_state(opt))
                set_grads(params, specs, gen)
                opt.step()  # still usable with dense gradients
                assert all(torch.isfinite(p).all() for p in params)


BAD_PARAMS = {
    "integer": (lambda: [torch.zeros(3, dtype=torch.int64)], TypeError, "floating-point"),
    "bool": (lambda: [torch.zeros(3, dtype=torch.bool)], TypeError, "floating-point"),
    "complex": (lambda: [torch.zeros(3, dtype=torch.complex64, requires_grad=True)], TypeError, "floating-point"),
    "group-set": (lambda: [{"params": {torch.zeros(3, 3, requires_grad=True)}}], TypeError, "ordered"),
    "empty": (lambda: [], ValueError, "empty"),
    "non-leaf": (lambda: [torch.zeros(3, 3, requires_grad=True) * 2], ValueError, "leaf"),
    "in-two-groups": (lambda: (lambda t: [{"params": [t]}, {"params": [t]}])(torch.zeros(3, 3, requires_grad=True)),
                      ValueError, "more than one"),
    "group-not-dict": (lambda: [{"params": [torch.zeros(3, 3, requires_grad=True)]}, "lr"], TypeError, "dict"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_parameters_are_refused_with_a_value_or_type_error(case):
    make, error, words = BAD_PARAMS[case]
    for name in NAMES:
        with pytest.raises(error, match=words):
            optarena.create(name, make(), **SPECS[name].kwargs)


# -- invalid hyperparameters -----------------------------------------------------------------------
UNIVERSALLY_BAD = (float("nan"), float("inf"), "bogus", object(), 1j, [])  # refused by every check


def bad_values(name, arg):
    """`[(value, the text the message must hold)]`: values the check of `arg` must refuse."""
    spec = hyper_of(name)[arg]
    check = spec.check
    qual = getattr(check, "__qualname__", "")
    out = [(v, arg) for v in UNIVERSALLY_BAD]
    if check in (H.non_negative, H.positive, H.unit_interval, H.fraction):
        out += [(-0.5, arg), (float("-inf"), arg), (True, arg), ("0.1", arg),
                (torch.tensor(0.1, requires_grad=True), arg), (torch.tensor([0.1, 0.2]), arg)]  # fmt: skip
    if check is H.unit_interval:
        out += [(1.0, arg), (1.5, arg)]
    if check is H.fraction:
        out += [(1.5, arg)]
    if check is H.positive:
        out += [(0.0, arg)]
    if qual.startswith("betas."):
        n = len(spec.default)
        for i in range(n):
            for v in (-0.1, 1.0, 2.0, float("nan"), "0.9", None):
                out.append((tuple(0.9 if j != i else v for j in range(n)), f"{arg}[{i}]"))
        out += [((0.9,) * (n - 1), arg), ((0.9,) * (n + 1), arg), ("0.9", arg), (0.9, arg), (None, arg)]
    if qual.startswith("integer."):
        out += [(2.5, arg), (True, arg), ("3", arg), (-(10**6), arg)]
    if check is H.boolean:
        out += [(1, arg), (0, arg), ("yes", arg), (None, arg)]
    if qual.startswith("one_of."):
        out += [(None, arg), ("", arg), (0, arg)]
    if arg == "shampoo_beta":  # negative means "use betas[1]", so -inf is a (harmless) negative
        out = [(v, t) for v, t in out if not (isinstance(v, float) and v == float("-inf"))]
    return out


ENGINE_BAD = {
    "nonfinite": ("ignore", None, True, "RAISE", 0),
    "fused": ("yes", 1, None, 0.0),
    "state_precision": ("fp16", "int8", 8, "FP32", "8-bit", torch.float32),
    "min_8bit_size": (-1, 2.5, True, "4096", None),
    "transforms": ([object()], ["clip"], [GlobalNormClip], [None]),
}
ENGINE_OPTIONS = set(ENGINE_BAD)


@st.composite
def invalid_argument(draw, name):
    """`(kwargs, where, the text the error must name)`: one invalid argument (the rest the spec's)."""
    kind = draw(st.sampled_from(("spec", "drawn", "drawn", "unknown", "engine")))
    base = dict(SPECS[name].kwargs)
    if kind == "spec":
        bad = [(kw, arg) for kw, arg in SPECS[name].bad if arg != "create_optimizer"]
        kw, arg = draw(st.sampled_from(bad))
        places = ("create",) if set(kw) & ENGINE_OPTIONS else ("create", "group", "add_param_group")
        return {**base, **kw}, draw(st.sampled_from(places)), arg
    if kind == "drawn":
        arg = draw(st.sampled_from(sorted(hyper_of(name))))
        value, text = draw(st.sampled_from(bad_values(name, arg)))
        wide = arg in optarena.get(name).optimizer_wide  # a whole-optimizer argument: not a group key
        where = "create" if wide else draw(st.sampled_from(("create", "group", "add_param_group")))
        return {**base, arg: value}, where, text
    if kind == "unknown":
        known = set(hyper_of(name)) | set(ENGINE_BAD) | {"params", "name", "param_names", "initial_lr", "rule"}
        arg = draw(st.from_regex(r"\A[a-z][a-z0-9_]{2,12}\Z").filter(lambda s: s not in known))
        return {**base, arg: 1}, draw(st.sampled_from(("create", "group", "add_param_group"))), arg
    arg = draw(st.sampled_from(sorted(ENGINE_BAD)))
    return {**base, arg: draw(st.sampled_from(ENGINE_BAD[arg]))}, "create", arg


@sweep(max_examples=600)
@given(data=st.data())
def test_invalid_arguments_raise_an_error_naming_them(data):
    """An invalid hyperparameter or engine option, given to the constructor, in a param group or to
    add_param_group, is a ValueError/TypeError naming it; a refused add_param_group leaves the
    optimizer as it was, and it still steps."""
    name = data.draw(st.sampled_from(NAMES), label="name")
    kwargs, where, text = data.draw(invalid_argument(name), label="invalid")
    gen = torch.Generator().manual_seed(0)
    specs = [P((4, 3), torch.float32), P((3, 2, 3, 3), torch.float32)]
    params = [make_param(s, gen) for s in specs]
    if where == "create":
        with pytest.raises((ValueError, TypeError)) as err:
            optarena.create(name, params, **kwargs)
        assert text in str(err.value), (text, str(err.value))
        return
    engine = {k: v for k, v in kwargs.items() if k in ENGINE_OPTIONS}
    group = {k: v for k, v in kwargs.items() if k not in ENGINE_OPTIONS}
    if where == "group":
        with pytest.raises((ValueError, TypeError)) as err:
            optarena.create(name, [{"params": params, **group}], **engine)
        assert text in str(err.value), (text, str(err.value))
        return
    opt = optarena.create(name, params[:1], **{**SPECS[name].kwargs, **engine})
    set_grads(params, specs, gen)
    opt.step()
    before = copy.deepcopy(opt.param_groups)
    with pytest.raises((ValueError, TypeError)) as err:
        opt.add_param_group({"params": params[1:], **group})
    assert text in str(err.value), (text, str(err.value))
    assert len(opt.param_groups) == 1 and opt.param_groups[0].keys() == before[0].keys()
    assert all(opt.param_groups[0][k] == before[0][k] for k in before[0] if k != "params")
    opt.add_param_group({"params": params[1:]})  # the parameter was not taken by the refused group
    set_grads(params, specs, gen)
    opt.step()
    assert all(torch.isfinite(p).all() for p in params)


@pytest.mark.parametrize(
    "transforms", [5, GlobalNormClip(1.0), "clip", (None,)], ids=["int", "one-transform", "str", "tuple-of-none"]
)
def test_transforms_that_are_not_a_list_name_the_argument(transforms):
    with pytest.raises((ValueError, TypeError), match="transforms"):
        optarena.create("adamw", [torch.zeros(3, requires_grad=True)], transforms=transforms)


def test_unknown_optimizer_name_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="no_such_optimizer"):
        optarena.create("no_such_optimizer", [torch.zeros(3, requires_grad=True)])
    assert optarena.create("AdamW", [torch.zeros(3, requires_grad=True)]).__class__ is optarena.AdamW


# -- non-finite gradients --------------------------------------------------------------------------
def shapes_for(name):
    return MATRIX_SHAPES if name in MATRIX_ONLY else SHAPES


@pytest.mark.slow
@sweep(max_examples=600)
@given(data=st.data())
def test_nonfinite_gradients_follow_the_policy(data):
    """inf/NaN in one gradient: "raise" raises NonFiniteGradientError and "skip" counts the step,
    both leaving parameters, state and transform state as they were (the optimizer then steps on);
    "propagate" steps (values may turn non-finite; dtypes, shapes and strides stay). A huge but
    finite gradient is never taken for a non-finite one."""
    name = data.draw(st.sampled_from(NAMES), label="name")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    specs = data.draw(param_specs(shapes=shapes_for(name), dtypes=(dtype,)), label="params")
    filled = [i for i, s in enumerate(specs) if s.has_grad and math.prod(s.shape) > 0]
    if not filled:  # the bad value needs a non-empty gradient
        specs.append(P((5, 2) if name in MATRIX_ONLY else (5,), dtype))
        filled = [len(specs) - 1]
    at = data.draw(st.sampled_from(filled), label="bad_param")
    value = data.draw(st.sampled_from(("nan", "inf", "-inf", "huge")), label="value")
    policy = data.draw(st.sampled_from(POLICIES), label="policy")
    kwargs = data.draw(valid_kwargs(name, policies=(policy,)), label="kwargs")
    warm = data.draw(st.integers(0, 2), label="warm_steps")
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**16), label="seed"))
    params = [make_param(s, gen) for s in specs]
    meta = layout_meta(params)
    opt = optarena.create(name, params, **kwargs)
    for _ in range(warm):
        set_grads(params, specs, gen)
        opt.step()

    set_grads(params, specs, gen)
    g = params[at].grad
    flat_index = data.draw(st.integers(0, g.numel() - 1), label="index")
    index = torch.unravel_index(torch.tensor(flat_index), g.shape)
    if value == "huge":  # every element near the dtype's largest value: the sum overflows, no element does
        g.fill_(torch.finfo(dtype).max / 2)
    else:
        g[index] = float(value)
    before, state = [p.detach().clone() for p in params], snapshot_state(opt)
    engine = copy.deepcopy(opt.state_dict()["engine"])
    skipped = opt.skipped_steps

    if value == "huge" or policy == "propagate":
        opt.step()
        assert_sound(opt, params, meta, finite=False)
        assert opt.skipped_steps == skipped
        return
    if policy == "raise":
        with pytest.raises(NonFiniteGradientError):
            opt.step()
        assert opt.skipped_steps == skipped
    else:
        opt.step()
        assert opt.skipped_steps == skipped + 1
    assert_same_values(before, params)
    assert_same_state(state, snapshot_state(opt))
    after = opt.state_dict()["engine"]
    assert after["skipped_steps"] == opt.skipped_steps
    assert repr(after["transforms"]) == repr(engine["transforms"])  # counters and generator states
    set_grads(params, specs, gen)
    opt.step()  # finite gradients again: the optimizer steps on
    assert_sound(opt, params, meta)


# -- state_dict mismatches -------------------------------------------------------------------------
MISMATCHES = (
    "shape", "fewer", "more", "groups", "dtype", "precision", "state-shape", "state-dtype",
    "state-not-tensor", "key-removed", "key-added", "step", "unknown-id",
)  # fmt: skip
PER_PARAMETER = ("shape", "dtype", "state-shape", "state-dtype", "state-not-tensor", "key-removed", "key-added", "step")


def base_shapes(name):
    return [(6, 5), (2, 5), (3, 2, 3, 3)] if name in MATRIX_ONLY else [(6, 5), (5,), (3, 2, 3, 3), ()]


def trained(name, shapes, dtype, kwargs, steps, seed=0, groups=1, named=False):
    """`(params, specs, optimizer)` after `steps` steps; `groups=2` splits off the first parameter,
    `named` gives the groups `param_names` (w0, w1, ...)."""
    gen = torch.Generator().manual_seed(seed)
    specs = [P(s, dtype) for s in shapes]
    params = [make_param(s, gen) for s in specs]
    cut = [0, 1, len(params)] if groups == 2 else [0, len(params)]
    param_groups = [{"params": params[a:b]} for a, b in zip(cut, cut[1:])]
    if named:
        for group, (a, b) in zip(param_groups, zip(cut, cut[1:])):
            group["param_names"] = [f"w{i}" for i in range(a, b)]
    opt = optarena.create(name, param_groups, **kwargs)
    for _ in range(steps):
        set_grads(params, specs, gen)
        opt.step()
    return params, specs, opt


def with_state(name, kwargs):
    """SGD keeps no state without momentum."""
    return {**kwargs, "momentum": 0.9} if name == "sgd" else dict(kwargs)


def grown(shape):
    return tuple(d + 1 for d in shape) if shape else (1,)


@pytest.mark.slow
@sweep(max_examples=500)
@given(data=st.data())
def test_mismatched_state_dicts_are_refused_and_change_nothing(data):
    """A state_dict of other parameters (shapes, count, groups, dtype), of another state_precision,
    or damaged (a state tensor of the wrong shape or dtype, a key removed or added, a bad step, an
    unknown parameter id) is a ValueError; the optimizer is unchanged and still steps."""
    name = data.draw(st.sampled_from(NAMES), label="name")
    kind = data.draw(st.sampled_from(MISMATCHES), label="mismatch")
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    precision = data.draw(st.sampled_from(PRECISIONS), label="state_precision")
    kwargs = with_state(name, SPECS[name].kwargs)
    if precision != "default":
        kwargs["state_precision"] = precision
    if precision == "8bit" or name.endswith("8bit"):  # quantize these small tensors too (or keep them fp32)
        kwargs["min_8bit_size"] = data.draw(st.sampled_from((0, 4096)), label="min_8bit_size")
    shapes = base_shapes(name)
    named = data.draw(st.booleans(), label="param_names")
    _, _, source = trained(name, shapes, dtype, kwargs, steps=2, named=named)
    sd = copy.deepcopy(source.state_dict())

    target_shapes, target_dtype, target_kwargs, groups = list(shapes), dtype, dict(kwargs), 1
    may_load = False  # whether loading is allowed to succeed (a state the engine recreates)
    if kind == "shape":
        i = data.draw(st.integers(0, len(shapes) - 1), label="which")
        target_shapes[i] = grown(shapes[i]) if name not in MATRIX_ONLY else (shapes[i][0] + 1, *shapes[i][1:])
    elif kind == "fewer":
        target_shapes.pop(data.draw(st.integers(0, len(shapes) - 1), label="which"))
    elif kind == "more":
        target_shapes.append((4, 4))
    elif kind == "groups":
        groups = 2
    elif kind == "dtype":
        target_dtype = data.draw(st.sampled_from([d for d in DTYPES if d != dtype]), label="target_dtype")
        # Float state is kept in the parameter's dtype only with state_precision None.
        effective = precision if precision != "default" else optarena.get(name)(
            [torch.zeros(2, 2, requires_grad=True)]).storage.precision  # fmt: skip
        may_load = effective is not None
    elif kind == "precision":
        effective = source.storage.precision
        target_kwargs["state_precision"] = data.draw(
            st.sampled_from([p for p in PRECISIONS[1:] if p != effective]), label="target_precision")
    else:
        pid = data.draw(st.sampled_from(sorted(sd["state"])), label="param_id")
        st_ = sd["state"][pid]
        tensors = sorted(k for k, v in st_.items() if torch.is_tensor(v))
        if kind in ("state-shape", "state-dtype", "state-not-tensor", "key-removed") and not tensors:
            return  # no tensor state for this parameter (nothing to damage)
        if kind == "state-shape":
            key = data.draw(st.sampled_from(tensors), label="key")
            st_[key] = torch.zeros(st_[key].numel() + 1, dtype=st_[key].dtype)
        elif kind == "state-dtype":
            key = data.draw(st.sampled_from(tensors), label="key")
            other = torch.float64 if st_[key].dtype != torch.float64 else torch.float32
            st_[key] = st_[key].to(other)
        elif kind == "state-not-tensor":
            key = data.draw(st.sampled_from(tensors), label="key")
            st_[key] = st_[key].tolist()
        elif kind == "key-removed":
            key = data.draw(st.sampled_from(sorted(st_)), label="key")
            del st_[key]
            needed = source.rule.needed_state(source.param_groups[0]) or ()
            # A state the engine recreates at the next step may be missing as a whole (its codes
            # gone: the next step encodes it afresh), never in part (8-bit codes without scales).
            may_load = key in needed
        elif kind == "key-added":
            key = data.draw(st.sampled_from(("bogus", "exp_avg", "momentum_buffer", "exp_avg.absmax")), label="key")
            if key in st_:
                return
            st_[key] = torch.zeros(1)
        elif kind == "step":
            st_["step"] = data.draw(st.sampled_from((-1, 2.5, "3", None, torch.tensor([1.0, 2.0]))), label="step")
        elif kind == "unknown-id":
            sd["state"][max(sd["state"]) + 100] = copy.deepcopy(st_)

    target_warm = data.draw(st.integers(0, 1), label="target_warm")
    params, specs, target = trained(name, target_shapes, target_dtype, target_kwargs, steps=target_warm, seed=1,
                                    groups=groups, named=named)  # fmt: skip
    lrs = [g["lr"] for g in target.param_groups]
    state, values, skipped = snapshot_state(target), [p.detach().clone() for p in params], target.skipped_steps
    meta = layout_meta(params)
    try:
        target.load_state_dict(sd)
    except ValueError as err:
        message = str(err)
        if kind in PER_PARAMETER:  # the message names the parameter: its name, else its place
            assert re.search(r"'w\d+'" if named else r"group \d+, index \d+", message), message
        if kind in ("shape", "state-shape", "state-dtype") or (kind == "dtype" and precision is None):
            assert "expected shape" in message and "found shape" in message, message
        if kind == "precision":
            assert "state_precision" in message, message
        assert_same_state(state, snapshot_state(target))
        assert [g["lr"] for g in target.param_groups] == lrs and target.skipped_steps == skipped
        assert_same_values(values, params)
    else:
        assert may_load, f"{kind}: a mismatched state_dict loaded without error"
    gen = torch.Generator().manual_seed(2)
    for _ in range(2):
        set_grads(params, specs, gen)
        target.step()  # usable afterwards
    assert_sound(target, params, meta)


def damages(state: dict):
    """`(label, damaged copy)` for each way to damage one parameter's saved state: each tensor
    removed, reshaped, recast, turned into a list; an unknown entry added; a bad step."""
    for key in sorted(state):
        value = state[key]
        if key == "step":
            for bad in (-1, 2.5, None):
                yield f"step={bad!r}", {**state, "step": bad}
            continue
        yield f"{key} removed", {k: v for k, v in state.items() if k != key}
        if torch.is_tensor(value):
            yield f"{key} reshaped", {**state, key: torch.zeros(value.numel() + 1, dtype=value.dtype)}
            other = torch.float64 if value.dtype != torch.float64 else torch.float32
            yield f"{key} as {other}", {**state, key: value.to(other)}
            yield f"{key} as a list", {**state, key: value.tolist()}
    yield "unknown entry", {**state, "bogus": torch.zeros(1)}


@pytest.mark.slow
@pytest.mark.parametrize("precision", [None, "fp32", "bf16", "8bit"], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_every_damaged_state_entry_is_refused(name, precision):
    """Exhaustively, for every parameter and every entry of its saved state: each damage is a
    ValueError that changes nothing (a removed state the engine recreates may load instead), and
    the optimizer steps on with finite values."""
    kwargs = {**with_state(name, SPECS[name].kwargs), "state_precision": precision, "min_8bit_size": 0}
    shapes = base_shapes(name)
    _, _, source = trained(name, shapes, torch.float32, kwargs, steps=2)
    sd = copy.deepcopy(source.state_dict())
    needed = source.rule.needed_state(source.param_groups[0]) or ()
    params, specs, target = trained(name, shapes, torch.float32, kwargs, steps=1, seed=1)
    meta, gen, problems = layout_meta(params), torch.Generator().manual_seed(2), []
    for pid, state in sd["state"].items():
        for label, damaged in damages(state):
            removed = label.endswith(" removed") and label.removesuffix(" removed") in needed  # recreated
            before, values = snapshot_state(target), [p.detach().clone() for p in params]
            try:
                target.load_state_dict({**sd, "state": {**sd["state"], pid: damaged}})
            except ValueError:
                try:
                    assert_same_state(before, snapshot_state(target))
                    assert_same_values(values, params)
                except AssertionError as err:
                    problems.append(f"param {pid}, {label}: refused but changed the optimizer ({err})")
            except Exception as err:  # noqa: BLE001 - the contract: ValueError only
                problems.append(f"param {pid}, {label}: {type(err).__name__}: {err}")
                continue
            else:
                if not removed:
                    problems.append(f"param {pid}, {label}: loaded without error")
            try:
                set_grads(params, specs, gen)
                target.step()
                assert_sound(target, params, meta)
            except Exception as err:  # noqa: BLE001
                problems.append(f"param {pid}, {label}: the next step failed: {type(err).__name__}: {err}")
                params, specs, target = trained(name, shapes, torch.float32, kwargs, steps=1, seed=1)
                meta = layout_meta(params)
    assert not problems, "\n".join(problems)


# -- round trips -----------------------------------------------------------------------------------
@pytest.mark.slow
@sweep(max_examples=400)
@given(data=st.data())
def test_state_dict_round_trip_resumes_bit_identically(data):
    """Saved (torch.save, loaded with weights_only=True) after a few steps, possibly a skipped one,
    and resumed into a fresh optimizer over fresh parameters: the next steps are bit-identical,
    and so is the state."""
    name = data.draw(st.sampled_from(NAMES), label="name")
    specs = data.draw(param_specs(shapes=shapes_for(name)), label="params")
    kwargs = data.draw(valid_kwargs(name, policies=("skip",)), label="kwargs")
    transforms = kwargs["transforms"]
    warm = data.draw(st.integers(1, 3), label="warm_steps")
    skip_at = data.draw(st.integers(-1, warm - 1), label="skip_at")  # -1: none skipped
    seed = data.draw(st.integers(0, 2**16), label="seed")
    gen = torch.Generator().manual_seed(seed)
    params = [make_param(s, gen) for s in specs]
    opt = optarena.create(name, params, **kwargs)
    for i in range(warm):
        set_grads(params, specs, gen)
        if i == skip_at:
            for p in params:
                if p.grad is not None and p.grad.numel():
                    p.grad[(0,) * p.grad.dim()] = float("nan")
                    break
        opt.step()
    buffer = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buffer)
    grads_state = gen.get_state()
    for _ in range(2):
        set_grads(params, specs, gen)
        opt.step()

    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    resumed = [in_layout(v, s.layout).requires_grad_() for v, s in zip(ckpt["params"], specs)]
    kwargs["transforms"] = [copy.deepcopy(t) for t in transforms]
    opt2 = optarena.create(name, resumed, **kwargs)
    opt2.load_state_dict(ckpt["opt"])
    gen.set_state(grads_state)
    for _ in range(2):
        set_grads(resumed, specs, gen)
        opt2.step()
    for a, b in zip(params, resumed):
        assert a.dtype == b.dtype and torch.equal(a.detach(), b.detach())
    assert opt2.skipped_steps == opt.skipped_steps
    for a, b in zip(params, resumed):
        sa, sb = opt.state.get(a, {}), opt2.state.get(b, {})
        assert sa.keys() == sb.keys()
        for key in sa:
            if torch.is_tensor(sa[key]):
                assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key
            else:
                assert sa[key] == sb[key], key


# -- regressions: what the sweep found, each as its minimal reproduction ---------------------------
@pytest.mark.parametrize(
    "name,kwargs",
    [("adamw", {"transforms": [GlobalNormClip(1.0)]}), ("adamw", {"transforms": [UpdateClip(1.0)]}),
     ("adan", {"max_grad_norm": 1.0})],
    ids=["GlobalNormClip", "UpdateClip", "adan-max_grad_norm"],
)  # fmt: skip
def test_global_norm_of_float64_gradients(name, kwargs):
    """Was a RuntimeError: `linalg.vector_norm(g, dtype=torch.float32)` refuses float64 input."""
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = optarena.create(name, [p], **kwargs)
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    assert p.dtype == torch.float64 and torch.isfinite(p).all() and (p != 0).all()


@pytest.mark.parametrize("name,kwargs", [("soap", {}), ("galore_adamw", {"rank": 2}), ("fira_adamw", {"rank": 2})])
def test_float64_params_with_quantized_state(name, kwargs):
    """Was a RuntimeError ("expected m1 and m2 to have the same dtype"): float32 decoded 8-bit
    moments met float64 projection bases / Shampoo factors."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(6, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    opt = optarena.create(name, [p], state_precision="8bit", min_8bit_size=0, **kwargs)
    for _ in range(3):
        p.grad = torch.randn(6, 5, dtype=torch.float64, generator=gen)
        opt.step()
    assert p.dtype == torch.float64 and torch.isfinite(p).all()


def test_8bit_codes_without_their_scales_are_refused():
    """Was accepted (SGD's buffer is "recreated" when missing), then the step raised RuntimeError
    ("result type Float can't be cast to the desired output type Byte")."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(64, 64, generator=gen, requires_grad=True)
    opt = optarena.create("sgd", [p], lr=0.1, momentum=0.9, state_precision="8bit")
    p.grad = torch.randn(64, 64, generator=gen)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())  # as torch's, the state_dict shares each parameter's state dict
    del sd["state"][0]["momentum_buffer.absmax"]
    with pytest.raises(ValueError, match="momentum_buffer.absmax"):
        opt.load_state_dict(sd)
    opt.step()


@pytest.mark.parametrize(
    "name,kwargs,value,policy",
    [("conda", {"update_proj_gap": 2}, "nan", "propagate"), ("galore_adamw", {"rank": 2}, "nan", "propagate"),
     ("fira_adamw", {"rank": 2}, "nan", "propagate"), ("soap", {}, "nan", "propagate"),
     ("soap", {}, "inf", "propagate"), ("soap", {}, "huge", "raise")],
    ids=["conda-nan", "galore-nan", "fira-nan", "soap-nan", "soap-inf", "soap-huge-finite"],
)  # fmt: skip
def test_svd_and_eigh_of_nonfinite_gradients(name, kwargs, value, policy):
    """Was torch.linalg.LinAlgError from the SVD (Conda, GaLore, Fira) or eigh (SOAP) of a gradient
    with inf/NaN under nonfinite="propagate", and for SOAP of a huge finite one (its outer product
    overflows float32) under every policy; a half-applied step was left behind."""
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(6, 5, generator=gen, requires_grad=True)
    opt = optarena.create(name, [p], nonfinite=policy, **kwargs)
    g = torch.randn(6, 5, generator=gen)
    if value == "huge":
        g.fill_(1.7e38)
    else:
        g[0, 0] = float(value)
    p.grad = g
    opt.step()
    assert p.dtype == torch.float32 and p.shape == (6, 5)
