"""Gradient transforms usable with every optimizer: GradientNoise, CoordinateClip (and its Adam variant)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

import optarena
from optarena import CoordinateClip, GlobalNormClip, GradientNoise
import checkpoint
from specs import SPECS


def _zeros(*shapes, dtype=torch.float32):
    return [torch.zeros(s, dtype=dtype) for s in shapes]


# -- GradientNoise ------------------------------------------------------------------------------


def _chi2_bounds(n: int, z: float = 6.0) -> tuple[float, float]:
    """Bounds on a chi-square(n) variable: the normal approximation n +- z sqrt(2n).

    For n = 40000 the approximation is accurate to well under one standard deviation in the tails
    (skewness sqrt(8/n) = 0.014); z = 6 makes a false failure practically impossible (p ~ 2e-9),
    while a wrong variance by 10% (or the schedule off by one step) lies over 10 sd away.
    """
    return n - z * math.sqrt(2 * n), n + z * math.sqrt(2 * n)


@pytest.mark.parametrize("eta,gamma", [(0.01, 0.55), (0.3, 0.55), (1.0, 1.0)])
def test_noise_variance_follows_the_schedule(eta, gamma):
    transform = GradientNoise(eta=eta, gamma=gamma, seed=7)
    state = transform.init()
    shapes = [(100, 300), (10000,)]  # n = 40000 draws per step, over two parameters
    n = sum(math.prod(s) for s in shapes)
    lo, hi = _chi2_bounds(n)
    for t in range(6):
        noise = torch.cat([g.reshape(-1) for g in transform.update(_zeros(*shapes), [], state)]).double()
        variance = eta / (1 + t) ** gamma  # t counted from 0, as optax's add_noise
        assert transform.variance(t) == pytest.approx(variance)
        stat = (noise**2).sum().item() / variance  # the mean is known (0): chi-square with n degrees
        assert lo < stat < hi, (t, stat, lo, hi)
        assert abs(noise.mean().item()) < 6 * math.sqrt(variance / n)
    assert state["step"] == 6


def test_noise_first_step_variance_is_eta_not_the_second_steps():
    # Distinguishes "t from 0" (variance eta) from "t from 1" (eta / 2^gamma = 0.68 eta).
    transform = GradientNoise(eta=1.0, seed=0)
    noise = transform.update(_zeros((40000,)), [], transform.init())[0].double()
    lo, hi = _chi2_bounds(40000)
    assert lo < (noise**2).sum().item() < hi


def test_noise_is_seeded_dtype_kept_and_eta_zero_is_silent():
    a = GradientNoise(eta=0.1, seed=3)
    b = GradientNoise(eta=0.1, seed=3)
    ga, gb = a.update(_zeros((5,), (2, 3)), [], a.init()), b.update(_zeros((5,), (2, 3)), [], b.init())
    assert all(torch.equal(x, y) for x, y in zip(ga, gb))
    other = GradientNoise(eta=0.1, seed=4)
    assert not torch.equal(ga[0], other.update(_zeros((5,)), [], other.init())[0])
    half = a.update(_zeros((1000,), dtype=torch.bfloat16), [], a.init())[0]
    assert half.dtype == torch.bfloat16 and half.abs().sum() > 0
    silent = GradientNoise(eta=0.0, seed=1)
    assert torch.equal(silent.update(_zeros((4,)), [], silent.init())[0], torch.zeros(4))


def test_noise_seed_none_follows_torch_manual_seed():
    p = [torch.zeros(3, requires_grad=True)]
    torch.manual_seed(11)
    s1 = optarena.SGD(p, transforms=[GradientNoise(eta=0.1)]).state_dict()["engine"]["transforms"][0]["seed"]
    torch.manual_seed(11)
    s2 = optarena.SGD(p, transforms=[GradientNoise(eta=0.1)]).state_dict()["engine"]["transforms"][0]["seed"]
    assert s1 == s2


def _grads_of(params):
    """Deterministic gradients that depend on the parameters (a loss with a bit of curvature)."""
    for i, p in enumerate(params):
        p.grad = torch.sin(3 * p.detach() + i) + 0.1 * p.detach()


def _model(seed=0, matrix_only=False):
    """A matrix and a vector (a row matrix for a matrix-only method)."""
    gen = torch.Generator().manual_seed(seed)
    vector = (1, 7) if matrix_only else (7,)
    return [torch.randn(6, 5, generator=gen).requires_grad_(), torch.randn(vector, generator=gen).requires_grad_()]


def _run(opt, params, steps):
    for _ in range(steps):
        _grads_of(params)
        opt.step()


@pytest.mark.parametrize("name", SPECS)
def test_noise_and_clip_resume_bit_identically(name):
    def make(params, seed):
        groups = [{"params": [params[0]]}, {"params": [params[1]]}]  # the order spans param groups
        tf = [GradientNoise(eta=0.01, seed=seed), CoordinateClip(top_fraction=0.2)]
        return optarena.create(name, groups, transforms=tf, **SPECS[name].kwargs)

    params = _model(matrix_only=SPECS[name].matrix_only)
    opt = make(params, seed=5)
    _run(opt, params, 3)
    saved = checkpoint.save(params, opt)
    _run(opt, params, 3)

    fresh, resumed = checkpoint.restore(saved, lambda ps: make(ps, seed=99))  # the seed is overridden by the loaded state
    start = [p.detach().clone() for p in resumed]
    assert fresh.state_dict()["engine"]["transforms"][0]["step"] == 3
    _run(fresh, resumed, 3)
    for a, b in zip(params, resumed):
        assert torch.equal(a, b)

    # Without the transform state the noise stream restarts: the runs part.
    restarted = [p.clone().requires_grad_() for p in start]
    other = make(restarted, seed=5)
    _run(other, restarted, 3)
    assert not all(torch.equal(a, b) for a, b in zip(params, restarted))


def test_state_dict_is_a_snapshot_of_transform_state():
    params = _model()
    opt = optarena.SGD(params, lr=0.1, transforms=[GradientNoise(eta=0.01, seed=1)])
    _run(opt, params, 2)
    sd = opt.state_dict()
    saved = copy.deepcopy(sd["engine"])
    _run(opt, params, 2)
    assert sd["engine"]["transforms"][0]["step"] == saved["transforms"][0]["step"] == 2
    assert torch.equal(sd["engine"]["transforms"][0]["rng"]["cpu"], saved["transforms"][0]["rng"]["cpu"])


def test_skipped_steps_do_not_advance_the_noise_schedule():
    p = torch.zeros(3, requires_grad=True)
    opt = optarena.SGD([p], lr=0.1, nonfinite="skip", transforms=[GradientNoise(eta=0.01, seed=1)])
    p.grad = torch.tensor([1.0, float("nan"), 0.0])
    opt.step()
    assert opt.skipped_steps == 1 and opt._transform_states[0]["step"] == 0


# -- CoordinateClip -----------------------------------------------------------------------------


def _crafted():
    # |g| over all 10 coordinates: 1 8 3 0.5 | 6 2 | 7 4 0 5  (sorted: 8 7 6 5 4 3 2 1 0.5 0)
    return [torch.tensor([1.0, -8.0, 3.0, 0.5]), torch.tensor([-6.0, 2.0]), torch.tensor([[7.0, -4.0], [0.0, 5.0]])]


def test_coordinate_clip_fixed_threshold_exact_values():
    grads = [torch.tensor([0.25, -0.75, 0.5, -0.5, 3.0]), torch.tensor([[-0.375, 0.625]])]
    out = CoordinateClip(threshold=0.5).update(grads, [], {})
    assert out[0] is grads[0]  # rewritten in place
    assert torch.equal(out[0], torch.tensor([0.25, -0.5, 0.5, -0.5, 0.5]))
    assert torch.equal(out[1], torch.tensor([[-0.375, 0.5]]))


@pytest.mark.parametrize(
    "top_fraction,tau",
    [(0.3, 6.0), (0.25, 6.0), (0.21, 6.0), (0.2, 7.0), (0.1, 8.0), (0.05, 8.0), (0.5, 4.0), (1.0, 0.0)],
)  # k = ceil(top_fraction * 10): 3, 3, 3, 2, 1, 1, 5, 10
def test_coordinate_clip_top_fraction_over_all_parameters(top_fraction, tau):
    clip = CoordinateClip(top_fraction=top_fraction)
    assert clip.tau(_crafted()).item() == tau
    out = clip.update(_crafted(), [], {})
    want = [g.clamp(-tau, tau) for g in _crafted()]
    assert all(torch.equal(a, b) for a, b in zip(out, want))
    if tau == 6.0:
        assert torch.equal(out[0], torch.tensor([1.0, -6.0, 3.0, 0.5]))
        assert torch.equal(out[1], torch.tensor([-6.0, 2.0]))
        assert torch.equal(out[2], torch.tensor([[6.0, -4.0], [0.0, 5.0]]))


def test_coordinate_clip_rounding_and_ties():
    # 0.01 * 300 is 3.0000000000000004 in floating point; k is 3 (the decimal fraction), not 4.
    grads = [torch.arange(1.0, 151.0), -torch.arange(151.0, 301.0)]
    assert CoordinateClip(top_fraction=0.01).tau(grads).item() == 298.0
    # Ties at tau: at least k coordinates have |g| >= tau; tied ones are left as they are.
    tied = [torch.tensor([5.0, -5.0, 5.0, 1.0])]
    assert CoordinateClip(top_fraction=0.25).tau(tied).item() == 5.0
    assert torch.equal(CoordinateClip(top_fraction=0.25).update(tied, [], {})[0], torch.tensor([5.0, -5.0, 5.0, 1.0]))


def test_coordinate_clip_in_an_optimizer_rewrites_p_grad():
    params = [torch.zeros(shape, requires_grad=True) for shape in ((4,), (2,), (2, 2))]
    opt = optarena.SGD([{"params": params[:1]}, {"params": params[1:]}], lr=1.0,
                       transforms=[CoordinateClip(top_fraction=0.3)])  # fmt: skip
    for p, g in zip(params, _crafted()):
        p.grad = g
    opt.step()
    want = [-g.clamp(-6.0, 6.0) for g in _crafted()]
    assert all(torch.equal(p.detach(), w) for p, w in zip(params, want))
    assert torch.equal(params[0].grad, torch.tensor([1.0, -6.0, 3.0, 0.5]))


def _adamw_by_hand(p0, grads, tau, lr, b1, b2, eps, wd, split):
    p, m, v = p0.double().clone(), torch.zeros_like(p0, dtype=torch.float64), torch.zeros_like(p0, dtype=torch.float64)
    for t, g in enumerate(grads, start=1):
        g = g.double()
        c = g.clamp(-tau, tau)
        p = p * (1 - lr * wd)
        m = b1 * m + (1 - b1) * c
        v = b2 * v + (1 - b2) * (g if split else c) ** 2
        p = p - lr / (1 - b1**t) * m / ((v / (1 - b2**t)).sqrt() + eps)
    return p


@pytest.mark.parametrize("fused", [False, True])
def test_adam_variant_clipped_first_moment_unclipped_second(fused):
    p0 = torch.tensor([0.5, -1.0, 2.0, 0.0])
    grads = [torch.tensor([0.2, -3.0, 1.5, -0.7]), torch.tensor([-2.0, 0.4, 0.9, 4.0])]
    kw = dict(lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    results = {}
    for mode in ("unclipped", "clipped"):
        p = p0.clone().requires_grad_()
        opt = optarena.AdamW([p], fused=fused, transforms=[CoordinateClip(threshold=1.0, second_moment=mode)], **kw)
        for g in grads:
            p.grad = g.clone()
            opt.step()
        want = _adamw_by_hand(p0, grads, 1.0, 0.1, 0.9, 0.99, 1e-8, 0.1, split=mode == "unclipped")
        torch.testing.assert_close(p.detach().double(), want, rtol=1e-6, atol=1e-7)
        assert torch.equal(p.grad, grads[-1].clamp(-1.0, 1.0))  # p.grad holds the clipped gradient
        results[mode] = p.detach().clone()
    # One step by hand for the split: m = 0.1 * clip(g), v = 0.01 * g^2; the step is lr * clip(g) / |g|.
    assert not torch.equal(results["unclipped"], results["clipped"])
    p = p0.clone().requires_grad_()
    opt = optarena.AdamW([p], lr=0.1, eps=0.0, weight_decay=0.0,
                         transforms=[CoordinateClip(threshold=1.0, second_moment="unclipped")])  # fmt: skip
    p.grad = grads[0].clone()
    opt.step()
    g = grads[0]
    torch.testing.assert_close(p.detach(), p0 - 0.1 * g.clamp(-1, 1) / g.abs())
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], 0.001 * g**2)
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.1 * g.clamp(-1, 1))


def test_split_needs_a_rule_with_a_second_moment():
    p = [torch.zeros(2, requires_grad=True)]
    for name in ("lion", "sgd"):
        with pytest.raises(ValueError, match="second_moment"):
            optarena.create(name, p, transforms=[CoordinateClip(threshold=1.0, second_moment="unclipped")])
    optarena.create("lion", p, transforms=[CoordinateClip(threshold=1.0)])  # the default is fine everywhere
    two = [CoordinateClip(threshold=t, second_moment="unclipped") for t in (1.0, 2.0)]
    with pytest.raises(ValueError, match="second_moment"):
        optarena.AdamW(p, transforms=two)


# -- composition order ----------------------------------------------------------------------------


def test_composition_order_is_the_list_order():
    tau, eta, seed = 0.5, 0.25, 2
    g = torch.linspace(-2.0, 2.0, 101)
    ref = GradientNoise(eta=eta, seed=seed)
    noise = ref.update(_zeros((101,)), [], ref.init())[0]  # the noise both runs draw (same seed, same order)

    def run(transforms):
        p = torch.zeros(101, requires_grad=True)
        p.grad = g.clone()
        optarena.SGD([p], lr=1.0, transforms=transforms).step()
        return -p.detach()  # the gradient the rule used

    clip_then_noise = run([CoordinateClip(threshold=tau), GradientNoise(eta=eta, seed=seed)])
    noise_then_clip = run([GradientNoise(eta=eta, seed=seed), CoordinateClip(threshold=tau)])
    torch.testing.assert_close(clip_then_noise, g.clamp(-tau, tau) + noise)
    torch.testing.assert_close(noise_then_clip, (g + noise).clamp(-tau, tau))
    assert noise_then_clip.abs().max() <= tau < clip_then_noise.abs().max()


def test_global_norm_clip_composes():
    p = torch.zeros(2, requires_grad=True)
    p.grad = torch.tensor([3.0, -4.0])
    optarena.SGD([p], lr=1.0, transforms=[CoordinateClip(threshold=3.0), GlobalNormClip(max_norm=1.0, eps=0.0)]).step()
    torch.testing.assert_close(p.detach(), -torch.tensor([3.0, -3.0]) / math.sqrt(18.0))


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make,arg",
    [
        (lambda: GradientNoise(eta=-0.1), "eta"),
        (lambda: GradientNoise(eta=float("nan")), "eta"),
        (lambda: GradientNoise(eta=0.1, gamma=-1.0), "gamma"),
        (lambda: GradientNoise(eta=0.1, seed=-1), "seed"),
        (lambda: GradientNoise(eta=0.1, seed=1.5), "seed"),
        (lambda: CoordinateClip(top_fraction=0.0), "top_fraction"),
        (lambda: CoordinateClip(top_fraction=-0.1), "top_fraction"),
        (lambda: CoordinateClip(top_fraction=1.5), "top_fraction"),
        (lambda: CoordinateClip(top_fraction=float("nan")), "top_fraction"),
        (lambda: CoordinateClip(top_fraction="1%"), "top_fraction"),
        (lambda: CoordinateClip(threshold=0.0), "threshold"),
        (lambda: CoordinateClip(threshold=-1.0), "threshold"),
        (lambda: CoordinateClip(), "top_fraction and threshold"),
        (lambda: CoordinateClip(top_fraction=0.1, threshold=1.0), "top_fraction and threshold"),
        (lambda: CoordinateClip(threshold=1.0, second_moment="raw"), "second_moment"),
    ],
)
def test_bad_transform_arguments_name_the_argument(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_update_clip_bounds_the_step_exactly():
    a, b = torch.zeros(2, requires_grad=True), torch.zeros(1, requires_grad=True)
    opt = optarena.SGD([a, b], lr=1.0, transforms=[optarena.UpdateClip(max_norm=1.0, eps=0.0)])
    a.grad, b.grad = torch.tensor([3.0, 0.0]), torch.tensor([4.0])  # the SGD step has norm 5
    opt.step()
    torch.testing.assert_close(torch.cat([a.detach(), b.detach()]), torch.tensor([-0.6, 0.0, -0.8]))
    a.grad, b.grad = torch.tensor([0.3, 0.0]), torch.tensor([0.4])  # norm 0.5: untouched
    opt.step()
    torch.testing.assert_close(torch.cat([a.detach(), b.detach()]), torch.tensor([-0.9, 0.0, -1.2]))


@pytest.mark.parametrize("name", ["lion", "adamw", "adamp"])
def test_update_clip_applies_to_any_rule_after_it(name):
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(6, 5, generator=gen).requires_grad_(), torch.randn(5, generator=gen).requires_grad_()]
    free = [p.detach().clone().requires_grad_() for p in params]
    clipped = optarena.create(name, params, lr=0.1, transforms=[optarena.UpdateClip(max_norm=0.05, eps=0.0)])
    unclipped = optarena.create(name, free, lr=0.1)
    for ps, opt in ((params, clipped), (free, unclipped)):
        before = torch.cat([p.detach().reshape(-1).clone() for p in ps])
        for p in ps:
            p.grad = torch.ones_like(p)
        opt.step()
        change = torch.cat([p.detach().reshape(-1) for p in ps]) - before
        if opt is clipped:
            assert change.norm().item() == pytest.approx(0.05, rel=1e-5)
        else:
            assert change.norm().item() > 0.5  # the clip really changed something


def test_update_clip_rejects_bad_max_norm():
    with pytest.raises(ValueError, match="max_norm"):
        optarena.UpdateClip(max_norm=0.0)


@pytest.mark.parametrize("fused", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "fused"])
@pytest.mark.parametrize("name", ["adamw", "diffgrad", "adamp"])
def test_adam_family_first_moment_clipped_second_unclipped(name, fused):
    """One step from zero state: m = (1-b1)*clip(g), v = (1-b2)*g^2 for every rule that accepts the split."""
    g = torch.tensor([[3.0, -0.5, 0.2], [-2.0, 0.1, 1.5]])
    p = torch.zeros(2, 3, requires_grad=True)
    opt = optarena.create(name, [p], fused=fused, weight_decay=0.0,
                          transforms=[CoordinateClip(threshold=1.0, second_moment="unclipped")])  # fmt: skip
    p.grad = g.clone()
    opt.step()
    torch.testing.assert_close(opt.state[p]["exp_avg_sq"], 0.001 * g**2)
    torch.testing.assert_close(opt.state[p]["exp_avg"], 0.1 * g.clamp(-1, 1))
