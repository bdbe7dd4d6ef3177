"""8-bit block-wise state: bitsandbytes' code maps and layout, nearest rounding, any rule, resume.

bitsandbytes (0.50, CPU backend) is a test-only dependency: its code maps must equal ours
exactly, its block-wise quantizer must give our codes except where its 65,536-entry lookup
table rounds differently (a value within one table step of a midpoint, or tiny values, which
it maps to +-2e-5 of the block's absmax instead of 0), and its AdamW8bit step from the same
quantized state must match ours up to where it applies the weight decay.
"""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import torch

import optarena
from optarena.engine.quantize import BLOCK, blocks, dequantize_blockwise, dynamic_map, midpoints, quantize_blockwise

GOLDEN = Path(__file__).parent / "golden"
bnb = pytest.importorskip("bitsandbytes")
F = pytest.importorskip("bitsandbytes.functional")
LUT_STEP = 2.0 / 65536  # bitsandbytes' CPU table spans [-1, 1] in 65,536 steps


def recorded(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())["state_after"]


@pytest.mark.parametrize("signed", [True, False])
def test_code_maps_equal_bitsandbytes_and_the_recorded_maps(signed):
    mine = dynamic_map(signed)
    assert mine.dtype == torch.float32 and mine.shape == (256,)
    assert torch.equal(mine, F.create_dynamic_map(signed=signed))
    assert torch.equal(mine, torch.tensor(recorded("adamw8bit__state.json")["qmap1" if signed else "qmap2"]))
    assert bool((mine[1:] > mine[:-1]).all()) and mine[-1] == 1.0 and (mine == 0).sum() == 1
    assert (mine.min() == (-mine[-2] if signed else 0.0))


@pytest.mark.parametrize("case", ["adamw8bit__state.json", "lion8bit__state.json"])
def test_decoding_recorded_codes_gives_the_recorded_moments_exactly(case):
    state = recorded(case)
    assert state["blocksize"] == BLOCK
    for param in state["params"]:
        for which, signed in (("1", True), ("2", False)):
            if f"state{which}_codes" not in param:
                continue
            codes = torch.tensor(param[f"state{which}_codes"], dtype=torch.uint8)
            absmax = torch.tensor(param[f"absmax{which}"], dtype=torch.float32)
            assert absmax.numel() == blocks(codes.numel())  # last block partial
            padded = torch.zeros(absmax.numel() * BLOCK, dtype=torch.uint8)
            padded[: codes.numel()] = codes
            got = dequantize_blockwise(padded, absmax, dynamic_map(signed), codes.numel())
            assert torch.equal(got, torch.tensor(param[f"state{which}"], dtype=torch.float32)), (param["name"], which)


@pytest.mark.parametrize("signed", [True, False])
def test_quantizer_agrees_with_bitsandbytes_up_to_its_lookup_table(signed):
    gen = torch.Generator().manual_seed(0)
    code = dynamic_map(signed)
    mids = midpoints(code)
    differing = total = 0
    for exponent in range(-8, 3):
        x = torch.randn(50_000 + 77, generator=gen) * 10.0**exponent  # a partial last block
        x[:256] = 0.0  # an all-zero block
        if not signed:
            x = x.abs()
        codes, absmax = quantize_blockwise(x, code)
        ref_codes, ref_state = F.quantize_blockwise(x, code=code, blocksize=BLOCK)
        assert torch.equal(absmax, ref_state.absmax)
        mine = codes[: x.numel()]
        # decoding: ours equals bitsandbytes' on the same codes, exactly
        padded = torch.zeros(absmax.numel() * BLOCK, dtype=torch.uint8)
        padded[: x.numel()] = ref_codes
        ours = dequantize_blockwise(padded, absmax, code, x.numel())
        theirs = F.dequantize_blockwise(ref_codes, absmax=absmax, code=code, blocksize=BLOCK)
        assert torch.equal(ours, theirs)
        # nearest rounding: our code's value is the closest code to every scaled value
        scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax)).repeat_interleave(BLOCK)[: x.numel()]
        scaled = x / scale
        best = (scaled[:, None] - code[None, :]).abs().min(dim=1).values
        ours_distance = (scaled - code[mine.long()]).abs()
        assert bool((ours_distance <= best + 1e-7).all())  # equal but for float32 rounding at a midpoint
        assert (ours_distance > best).float().mean() < 1e-3
        # differences with bitsandbytes only where its table cannot resolve the midpoint, or tiny values
        diff = mine != ref_codes
        near_mid = (scaled[:, None] - mids[None, :]).abs().min(dim=1).values <= LUT_STEP
        tiny = scaled.abs() < 1.5 * LUT_STEP
        assert not bool((diff & ~(near_mid | tiny)).any())
        differing += int(diff.sum())
        total += x.numel()
    assert differing / total < 0.01, f"{differing} of {total} codes differ"


def _big_params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(64, 80, generator=gen).requires_grad_(), torch.randn(80, generator=gen).requires_grad_(),
            torch.randn(16, 8, 3, 3, generator=gen).requires_grad_()]  # fmt: skip


def _grads(params, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=gen) for p in params]


def _step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()


def _decoded_state(opt, p) -> dict[str, torch.Tensor]:
    return opt.storage.read({k: v for k, v in opt.state[p].items() if k != "step"}, p, opt.rule)


@pytest.mark.parametrize("name", ["adamw8bit", "lion8bit"])
def test_a_step_from_quantized_state_equals_the_fp32_step_on_the_decoded_state(name):
    params = _big_params()
    opt = optarena.create(name, params, lr=0.01, weight_decay=0.1, min_8bit_size=1)
    for t in range(5):
        _step(opt, params, _grads(params, t))
    # the same optimizer in fp32, its state set to the decoded 8-bit state
    twins = [p.detach().clone().requires_grad_() for p in params]
    ref = optarena.create(name, twins, lr=0.01, weight_decay=0.1, state_precision="fp32")
    for p, q in zip(params, twins):
        ref.state[q] = {"step": opt.state[p]["step"], **{k: v.clone() for k, v in _decoded_state(opt, p).items()}}
    grads = _grads(params, 99)
    _step(opt, params, grads)
    _step(ref, twins, grads)
    for p, q in zip(params, twins):
        assert torch.equal(p, q)  # the update reads the decoded state: identical
        got, want = _decoded_state(opt, p), ref.state[q]
        for key, value in got.items():
            signed = key != "exp_avg_sq"
            code = dynamic_map(signed)
            absmax = opt.state[p][key + ".absmax"].repeat_interleave(BLOCK)[: value.numel()].view(value.shape)
            scaled = want[key] / torch.where(absmax > 0, absmax, torch.ones_like(absmax))
            hi = torch.bucketize(scaled, code).clamp(1, 255)
            one_code_step = (code[hi] - code[hi - 1]) * absmax
            assert bool(((value - want[key]).abs() <= one_code_step + 1e-12).all()), key


def test_adamw8bit_step_matches_bitsandbytes_from_the_same_quantized_state():
    params = _big_params(1)
    mine = optarena.create("adamw8bit", params, lr=0.01, weight_decay=0.1, min_8bit_size=1)
    twins = [p.detach().clone().requires_grad_() for p in params]
    theirs = bnb.optim.AdamW8bit(twins, lr=0.01, weight_decay=0.1, min_8bit_size=1)
    for t in range(3):
        _step(mine, params, _grads(params, t))
    _step(theirs, twins, _grads(params, 0))  # creates bitsandbytes' state; overwritten below
    for p, q in zip(params, twins):
        st = theirs.state[q]
        st["step"] = mine.state[p]["step"]
        for which, key in (("1", "exp_avg"), ("2", "exp_avg_sq")):
            st[f"state{which}"].copy_(mine.state[p][key])
            st[f"absmax{which}"].copy_(mine.state[p][key + ".absmax"])
        q.data.copy_(p.data)
    grads = _grads(params, 7)
    before = [p.detach().clone() for p in params]
    _step(mine, params, grads)
    _step(theirs, twins, grads)
    for p, q, b in zip(params, twins, before):
        update = p.detach() - b
        # bitsandbytes' CPU backend decays before the step: the two differ by lr*wd*(Adam step)
        assert torch.allclose(p, q, rtol=0, atol=float(0.01 * 0.1 * update.abs().max()) + 1e-6)
        assert (p - q).abs().max() < 0.01 * update.abs().max()


@pytest.mark.parametrize("name", optarena.available())
def test_every_optimizer_takes_8bit_state_and_resumes_exactly(name):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(96, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.Linear(64, 8))
    kwargs = dict(state_precision="8bit", min_8bit_size=256, **optarena.card(name).fixed)
    x = torch.randn(32, 96)

    def train(opt, steps):
        for _ in range(steps):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()

    opt = optarena.create_optimizer(model, name, **kwargs)
    train(opt, 3)
    quantized = [k for st in opt.state.values() for k, v in st.items() if torch.is_tensor(v) and v.dtype == torch.uint8]
    if name != "sgd":  # SGD without momentum keeps no state
        assert quantized, f"{name}: no state was quantized"
    for st in opt.state.values():
        for k in [k for k, v in st.items() if torch.is_tensor(v) and v.dtype == torch.uint8]:
            assert st[k + ".absmax"].dtype == torch.float32
            assert st[k + ".absmax"].numel() == blocks(st[k].numel())
        for k, v in st.items():  # small tensors, bases and factors stay float32
            if torch.is_tensor(v) and v.dtype != torch.uint8 and v.is_floating_point():
                assert v.dtype == torch.float32 and (v.numel() < 256 or not k.startswith(("exp_avg", "momentum")))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    train(opt, 3)
    after = [p.detach().clone() for p in model.parameters()]
    buffer.seek(0)
    saved = torch.load(buffer)
    model.load_state_dict(saved["model"])
    resumed = optarena.create_optimizer(model, name, **kwargs)
    resumed.load_state_dict(saved["opt"])
    train(resumed, 3)
    for p, q in zip(model.parameters(), after):
        assert torch.equal(p, q), name


def test_small_tensors_stay_fp32_and_bytes_per_param_meet_the_paper():
    big, small = torch.zeros(1024, 1024, requires_grad=True), torch.zeros(4095, requires_grad=True)
    edge = torch.zeros(4096, requires_grad=True)
    for name, per_element in (("adamw8bit", 2), ("lion8bit", 1)):
        opt = optarena.create(name, [big, small, edge], lr=1e-3)
        for p in (big, small, edge):
            p.grad = torch.ones_like(p)
        opt.step()
        assert all(v.dtype == torch.float32 for k, v in opt.state[small].items() if torch.is_tensor(v) and v.dim())
        assert any(v.dtype == torch.uint8 for v in opt.state[edge].values() if torch.is_tensor(v))
        state = opt.state[big]
        nbytes = sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
        assert nbytes / big.numel() == per_element * (1 + 4 / BLOCK)  # codes + one float32 scale per block
        assert nbytes / big.numel() <= {"adamw8bit": 2.05, "lion8bit": 1.03}[name]


def test_exact_states_stay_fp32():
    torch.manual_seed(0)
    w = torch.randn(128, 96, requires_grad=True)
    for name, kwargs, exact in (("soap", {}, ("GG_0", "Q_0")), ("conda", {"update_proj_gap": 2}, ("projection",))):
        opt = optarena.create(name, [w], state_precision="8bit", min_8bit_size=1, **kwargs)
        for _ in range(2):
            w.grad = torch.randn_like(w)
            opt.step()
        assert all(opt.state[w][k].dtype == torch.float32 for k in exact)
        assert opt.state[w]["exp_avg"].dtype == torch.uint8


def test_a_checkpoint_resumes_only_with_the_precision_it_was_stored_in():
    w = torch.ones(64, 80, requires_grad=True)
    opt = optarena.create("adamw", [w], state_precision="8bit", min_8bit_size=1)
    w.grad = torch.ones_like(w)
    opt.step()
    for other in (None, "fp32", "bf16"):
        with pytest.raises(ValueError, match=r"state_precision='8bit'.*create it with state_precision='8bit'"):
            optarena.create("adamw", [w], state_precision=other).load_state_dict(opt.state_dict())
    fp32 = optarena.create("adamw", [w], state_precision="fp32")
    fp32.step()
    with pytest.raises(ValueError, match="state_precision='fp32'"):
        optarena.create("adamw", [w], state_precision="8bit").load_state_dict(fp32.state_dict())


def test_bad_precision_names_the_argument():
    with pytest.raises(ValueError, match="state_precision must be one of"):
        optarena.create("adamw", [torch.zeros(2, requires_grad=True)], state_precision="4bit")
    with pytest.raises(ValueError, match=r"min_8bit_size must be an integer in \[0, inf\)"):
        optarena.create("adamw", [torch.zeros(2, requires_grad=True)], state_precision="8bit", min_8bit_size=2.5)


@pytest.mark.slow
@pytest.mark.parametrize("name,ref", [("adamw8bit", "adamw"), ("lion8bit", "lion")])
def test_8bit_state_trains_as_well_as_fp32(name, ref):
    """A real model (the arena's digits MLP, its matrices quantized) over three seeds."""
    from optarena.arena.train import train
    from optarena.arena.workloads import get_workload

    values = {"lr": 3e-3, "weight_decay": 0.01, "betas[0]": 0.9} if ref == "adamw" else \
        {"lr": 3e-4, "weight_decay": 0.1, "betas[0]": 0.9}  # fmt: skip
    work = get_workload("digits-mlp")
    got = [train(work, name, values, seed=s, steps=200)["metrics"]["val_loss"] for s in (1, 2, 3)]
    want = [train(work, ref, values, seed=s, steps=200)["metrics"]["val_loss"] for s in (1, 2, 3)]
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    spread = max(max(want) - min(want), 0.01)
    assert abs(mean(got) - mean(want)) <= spread, (got, want)
    assert all(math.isfinite(v) for v in got)




def test_the_c_codec_is_bit_exact_with_the_torch_codec():
    import shutil

    from optarena.engine import native

    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler: the torch codec runs (covered by every other test)")
    assert native.load() is not None, "a C compiler is present but the codec did not build"
    gen = torch.Generator().manual_seed(1)
    for signed in (True, False):
        code = dynamic_map(signed)
        for exponent in range(-10, 3):
            for n in (1, 255, 256, 257, 3 * 4096 + 17):
                x = torch.randn(n, generator=gen) * 10.0**exponent
                if not signed:
                    x = x.abs()
                if n > 600:
                    x[256:512] = 0.0  # an all-zero block
                    x[7] = -0.0
                fast, slow = quantize_blockwise(x, code), quantize_blockwise(x, code, native=False)
                assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1]), (signed, exponent, n)
                assert torch.equal(dequantize_blockwise(*fast, code), dequantize_blockwise(*fast, code, native=False))


def test_without_the_c_codec_the_torch_codec_runs(tmp_path):
    import os
    import subprocess
    import sys

    script = "\n".join([
        "import torch, optarena",
        "from optarena.engine import native",
        "assert native.load() is None",
        "w = torch.ones(64, 80, requires_grad=True)",
        "opt = optarena.create('adamw8bit', [w], min_8bit_size=1)",
        "w.grad = torch.ones_like(w)",
        "opt.step()",
        "assert opt.state[w]['exp_avg'].dtype == torch.uint8",
    ])
    env = {**os.environ, "OPTARENA_NATIVE": "0", "OPTARENA_CACHE": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not list(tmp_path.iterdir())  # nothing was built
