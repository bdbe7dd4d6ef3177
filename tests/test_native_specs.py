"""The C kernels' specs (`engine/native.py`'s `Kernel`s): the C signatures agree with them, the
rules' scalars hold every name they take, and `run_step` refuses arguments that do not fit. No C
compiler needed: the C sources are parsed, not built."""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest
import torch

from optarena.engine import native
from optarena.rules.adamp import AdamPRule, SGDPRule
from optarena.rules.diffgrad import DiffGradRule
from optarena.rules.lion import LionRule

RULES = {"optarena_adamp_step": AdamPRule, "optarena_sgdp_step": SGDPRule,
         "optarena_diffgrad_step": DiffGradRule, "optarena_lion_step": LionRule}  # fmt: skip
IDS = [k.symbol for k in native.KERNELS]


def c_signature(kernel: native.Kernel) -> tuple[str, list[tuple[str, str]]]:
    """The return type and the (type, name) parameters of `kernel.symbol` in its C source."""
    source = (Path(native.__file__).parent / f"{kernel.library}.c").read_text()
    found = re.findall(rf"^(\w+)\s+{kernel.symbol}\s*\(([^)]*)\)\s*{{", source, flags=re.M)
    assert len(found) == 1, f"{kernel.symbol}: {len(found)} definitions in {kernel.library}.c"
    restype, params = found[0]
    parsed = []
    for param in params.split(","):
        *words, name = param.replace("*", " * ").split()
        parsed.append((" ".join(w for w in words if w not in ("const", "restrict")), name))
    return restype, parsed


@pytest.mark.parametrize("kernel", native.KERNELS, ids=IDS)
def test_c_signature_matches_the_spec(kernel):
    restype, params = c_signature(kernel)
    assert restype == ("int" if kernel.declines else "void")
    types = [t for t, _ in params]
    pointers, rest = types[: kernel.tensors], params[kernel.tensors :]
    assert all(t.endswith("*") for t in pointers), params
    assert [t for t, _ in rest[: kernel.sizes]] == ["int64_t"] * kernel.sizes, params
    rest = rest[kernel.sizes :]
    # the scalars: the same names in the same order (not only the same count)
    assert tuple(n for t, n in rest[: len(kernel.scalars)] if t == "double") == kernel.scalars, params
    assert [t for t, _ in rest[len(kernel.scalars) :]] == ["int"] * (kernel.flags + 1), params  # [flags,] threads
    assert len(params) == len(kernel.argtypes)


@pytest.mark.parametrize("kernel", native.KERNELS, ids=IDS)
def test_the_rule_gives_every_scalar_the_kernel_takes(kernel):
    rule = RULES[kernel.symbol]
    group = {name: hyper.default for name, hyper in rule.hyper.items()}
    group["weight_decay"] = 0.01  # every switch on
    s = rule.scalars(group, 3)
    values = kernel.values(s)
    assert values == [float(s[name]) for name in kernel.scalars]


def test_signatures_are_built_from_the_specs():
    for kernel in native.KERNELS:
        argtypes, restype = native.SIGNATURES[kernel.library][kernel.symbol]
        assert argtypes == kernel.argtypes
        assert argtypes.count(ctypes.c_double) == len(kernel.scalars)
        assert restype is (ctypes.c_int if kernel.declines else None)


def lion_scalars() -> dict:
    return LionRule.scalars({"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1}, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_a_missing_scalar_name_is_refused(dtype):
    """Refused before anything else: also for tensors the kernel would decline (float64)."""
    p, g, m = (torch.zeros(4, dtype=dtype) for _ in range(3))
    s = lion_scalars()
    s["minus_lr"] = s.pop("neg_lr")  # a rule renaming one of its scalars
    with pytest.raises(ValueError) as err:
        native.run_step(native.LION, p, g, (m,), (4,), s)
    message = str(err.value)
    assert "optarena_lion_step" in message and "lion.c" in message
    assert str(list(native.LION.scalars)) in message  # expected
    assert str(list(s)) in message  # given
    assert "without ['neg_lr']" in message
    assert torch.equal(p, torch.zeros(4, dtype=dtype))


def test_extra_names_are_left_out():
    """A rule's scalars may hold more than the kernel takes (its switches become flags)."""
    s = lion_scalars() | {"nesterov": True}
    assert native.LION.values(s) == native.LION.values(lion_scalars())


def test_wrong_tensor_size_or_flag_counts_are_refused():
    p, g, m = (torch.zeros(4, dtype=torch.float64) for _ in range(3))
    s = lion_scalars()
    with pytest.raises(ValueError, match="optarena_lion_step takes 3 tensors, 1 sizes and 0 flags; given 4, 1 and 0"):
        native.run_step(native.LION, p, g, (m, m), (4,), s)
    with pytest.raises(ValueError, match="given 3, 2 and 0"):
        native.run_step(native.LION, p, g, (m,), (4, 1), s)
    with pytest.raises(ValueError, match="given 3, 1 and 1"):
        native.run_step(native.LION, p, g, (m,), (4,), s, 0)
