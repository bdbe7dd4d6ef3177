"""GaLore and Fira: refresh cadence, rank clamping, state size, Fira's residual and limiter, and
`create_optimizer`'s routing of the projection kwargs to hidden matrices only."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import optarena
from optarena.arena.train import build_optimizer, state_bytes_per_param


def set_grads(params, step):
    """Deterministic, step-dependent gradients (so each refresh sees a new SVD)."""
    gen = torch.Generator().manual_seed(200 + step)
    for p in params:
        p.grad = p.detach() * 0.5 + torch.randn(p.shape, generator=gen, dtype=p.dtype)


def matrices(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(7, 5, generator=g).to(dtype).requires_grad_(),
            torch.randn(5, 7, generator=g).to(dtype).requires_grad_()]  # fmt: skip


@pytest.mark.parametrize("name", ["galore_adamw", "fira_adamw"])
@pytest.mark.parametrize("gap", [1, 3])
def test_basis_is_the_svd_of_the_gradient_at_refresh_steps_only(name, gap):
    params = matrices()
    opt = optarena.create(name, [{"params": params, "rank": 3, "update_proj_gap": gap}], lr=0.01)
    previous = None
    for t in range(1, 9):
        set_grads(params, t)
        grads = [p.grad.clone() for p in params]
        opt.step()
        bases = [opt.state[p]["projection"].clone() for p in params]
        if (t - 1) % gap == 0:  # steps 1, 1 + gap, ...: from this step's raw gradient
            U, _, Vh = torch.linalg.svd(grads[0], full_matrices=False)
            assert torch.equal(bases[0], Vh[:3])  # tall: the right factor, (rank, cols)
            U, _, Vh = torch.linalg.svd(grads[1], full_matrices=False)
            assert torch.equal(bases[1], U[:, :3])  # wide: the left factor, (rows, rank)
        else:
            assert all(torch.equal(b, c) for b, c in zip(bases, previous)), t
        previous = bases
    tall, wide = (opt.state[p] for p in params)
    assert tall["exp_avg"].shape == tall["exp_avg_sq"].shape == (7, 3)
    assert wide["exp_avg"].shape == wide["exp_avg_sq"].shape == (3, 7)


def galore_reference(p0, grads, lr, betas, eps, wd, rank, gap, scale, fira=False):
    """An independent float64 re-statement of the references' loop (moments carried across
    refreshes in projected coordinates; Fira's residual with alpha = scale and its limiter)."""
    p, (b1, b2) = p0.clone(), betas
    m = v = basis = prev = None
    right = p.shape[0] >= p.shape[1]
    for t, g in enumerate(grads, start=1):
        if (t - 1) % gap == 0:
            U, _, Vh = torch.linalg.svd(g, full_matrices=False)
            basis = Vh[:rank] if right else U[:, :rank]
        r = g @ basis.T if right else basis.T @ g
        m = (1 - b1) * r if m is None else b1 * m + (1 - b1) * r
        v = (1 - b2) * r * r if v is None else b2 * v + (1 - b2) * r * r
        n = m / (v.sqrt() + eps)
        u = (n @ basis if right else basis @ n) * scale
        if fira:
            sub = (r @ basis if right else basis @ r) * scale
            if right:
                phi = (n.norm(dim=1) / (r.norm(dim=1) + 1e-8))[:, None]
            else:
                phi = n.norm(dim=0) / (r.norm(dim=0) + 1e-8)
            s = (g - sub) * phi
            if prev is None:
                prev = s.norm()
            else:
                lim = max(s.norm() / (prev + 1e-8), 1.01) / 1.01
                prev = s.norm() / lim
                s = s / lim
            u = u + s
        p = p - lr * (1 - b2**t) ** 0.5 / (1 - b1**t) * u
        p = p - lr * wd * p
    return p


@pytest.mark.parametrize("name", ["galore_adamw", "fira_adamw"])
def test_matches_an_independent_float64_restatement(name):
    lr, betas, eps, wd, rank, gap, scale = 0.02, (0.9, 0.99), 1e-6, 0.1, 2, 3, 0.5
    params = matrices(torch.float64)
    init = [p.detach().clone() for p in params]
    key = "scale" if name == "galore_adamw" else "alpha"
    opt = optarena.create(name, [{"params": params, "rank": rank, "update_proj_gap": gap, key: scale}],
                          lr=lr, betas=betas, eps=eps, weight_decay=wd)  # fmt: skip
    grads = [[], []]
    for t in range(1, 9):  # refreshes at steps 1, 4, 7
        set_grads(params, t)
        for i, p in enumerate(params):
            grads[i].append(p.grad.clone())
        opt.step()
    for p, p0, gs in zip(params, init, grads):
        expected = galore_reference(p0, gs, lr, betas, eps, wd, rank, gap, scale, fira=name == "fira_adamw")
        torch.testing.assert_close(p.detach(), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["galore_adamw", "fira_adamw"])
def test_rank_above_the_smaller_side_is_clamped_as_the_references_slicing(name):
    params = matrices()
    opt = optarena.create(name, [{"params": params, "rank": 64}], lr=0.01)
    set_grads(params, 1)
    opt.step()
    tall, wide = (opt.state[p] for p in params)
    assert tall["projection"].shape == (5, 5) and tall["exp_avg"].shape == (7, 5)
    assert wide["projection"].shape == (5, 5) and wide["exp_avg"].shape == (5, 7)
    with pytest.raises(ValueError, match="rank"):
        optarena.create(name, [{"params": params, "rank": 0}])


def test_galore_state_bytes_follow_r_times_two_max_plus_min():
    """A projected m x n matrix (std side) holds m and v of r x max(m, n) and a basis of
    r x min(m, n): r (2 max + min) elements, against AdamW's 2 m n."""
    g = torch.Generator().manual_seed(1)
    tall, wide, bias = torch.randn(32, 16, generator=g), torch.randn(16, 48, generator=g), torch.randn(16, generator=g)
    params = [t.requires_grad_() for t in (tall, wide, bias)]
    r = 4
    for name, extra in [("galore_adamw", 0), ("fira_adamw", 1)]:  # Fira: one 0-d residual norm per matrix
        opt = optarena.create(name, [{"params": [bias]}, {"params": params[:2], "rank": r}])
        set_grads(params, 1)
        opt.step()
        per_tensor = {id(p): sum(t.numel() * t.element_size() for t in opt.state[p].values() if torch.is_tensor(t))
                      for p in params}  # fmt: skip
        assert per_tensor[id(tall)] == 4 * (r * (2 * 32 + 16) + extra)
        assert per_tensor[id(wide)] == 4 * (r * (2 * 48 + 16) + extra)
        assert per_tensor[id(bias)] == 4 * 2 * 16  # plain AdamW: m and v
        total = sum(per_tensor.values())
        assert state_bytes_per_param(opt) == total / (32 * 16 + 16 * 48 + 16)


def test_fira_limiter_on_a_crafted_case():
    """Rank 1 on a 3x2 matrix whose gradient has orthogonal columns of norms 3 and 1.5 (so
    P = +-[1, 0]), betas (0, 0) and eps 0 (so N = sign(R)), alpha 0.5, lr 0.1, no decay.
    Step 1: R = +-[1, 2, 2], phi = 1/|R| per row, G - alpha back(R) = [[.5, 1], [1, .5], [1, -1]],
    S = [[.5, 1], [.5, .25], [.5, -.5]], ||S||^2 = 2.0625: no limiter on the first step.
    Step 2: the second column tripled: S = [[.5, 3], [.5, .75], [.5, -1.5]], ||S||^2 = 12.5625,
    growth sqrt(12.5625 / 2.0625) > 1.01: S is scaled to norm 1.01 sqrt(2.0625).
    Step 3: the step-1 gradient again: the norm shrinks, S passes unchanged."""
    lr, alpha = 0.1, 0.5
    p0 = torch.tensor([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.2]], dtype=torch.float64)
    p = p0.clone().requires_grad_()
    opt = optarena.create("fira_adamw", [{"params": [p], "rank": 1, "update_proj_gap": 100, "alpha": alpha}],
                          lr=lr, betas=(0.0, 0.0), eps=0.0)  # fmt: skip
    g1 = torch.tensor([[1.0, 1.0], [2.0, 0.5], [2.0, -1.0]], dtype=torch.float64)
    g2 = torch.tensor([[1.0, 3.0], [2.0, 1.5], [2.0, -3.0]], dtype=torch.float64)
    low_rank = alpha * torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)  # alpha back(N)
    s1 = torch.tensor([[0.5, 1.0], [0.5, 0.25], [0.5, -0.5]], dtype=torch.float64)
    s2_raw = torch.tensor([[0.5, 3.0], [0.5, 0.75], [0.5, -1.5]], dtype=torch.float64)
    n1, n2 = math.sqrt(2.0625), math.sqrt(12.5625)
    limiter = (n2 / n1) / 1.01
    expected = [
        (g1, low_rank + s1, n1),
        (g2, low_rank + s2_raw / limiter, n2 / limiter),  # = 1.01 * n1
        (g1, low_rank + s1, n1),  # shrinking: limiter max(., 1.01) / 1.01 = 1
    ]
    before = p0.clone()
    for grad, update, norm in expected:
        p.grad = grad.clone()
        opt.step()
        torch.testing.assert_close(p.detach(), before - lr * update, rtol=1e-7, atol=1e-8)
        assert math.isclose(float(opt.state[p]["residual_norm"]), norm, rel_tol=1e-7)
        before = p.detach().clone()
    assert math.isclose(n2 / limiter, 1.01 * n1, rel_tol=1e-12)


def test_fira_state_dict_round_trips_the_residual_norm():
    params = matrices()
    opt = optarena.create("fira_adamw", [{"params": params, "rank": 2, "update_proj_gap": 2}], lr=0.01)
    for t in range(1, 4):
        set_grads(params, t)
        opt.step()
    state = opt.state_dict()["state"][0]
    assert state["residual_norm"].dim() == 0 and state["residual_norm"] > 0
    clone = [p.detach().clone().requires_grad_() for p in params]
    opt2 = optarena.create("fira_adamw", [{"params": clone, "rank": 2, "update_proj_gap": 2}], lr=0.01)
    opt2.load_state_dict(opt.state_dict())
    for t in range(4, 7):
        set_grads(params, t)
        set_grads(clone, t)
        opt.step()
        opt2.step()
    assert all(torch.equal(a, b) for a, b in zip(params, clone))


class TinyLM(nn.Module):
    def __init__(self, vocab=40, dim=16, seq=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, seq, dim))
        self.block = nn.TransformerEncoderLayer(dim, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def no_weight_decay(self):
        return {"pos"}

    def forward(self, x):
        return self.head(self.norm(self.block(self.embed(x) + self.pos[:, : x.shape[1]])))


HIDDEN = {"block.self_attn.in_proj_weight", "block.self_attn.out_proj.weight", "block.linear1.weight", "block.linear2.weight"}


def ranks_by_name(opt):
    return {n: g["rank"] for g in opt.param_groups for n in g["param_names"]}


@pytest.mark.parametrize("name,key", [("galore_adamw", "scale"), ("fira_adamw", "alpha")])
def test_create_optimizer_projects_hidden_matrices_only(name, key):
    model = TinyLM()
    opt = optarena.create_optimizer(model, name, lr=1e-3, weight_decay=0.1, rank=4, update_proj_gap=10, **{key: 0.25})
    assert isinstance(opt, optarena.get(name)) and not any("rule" in g for g in opt.param_groups)
    ranks = ranks_by_name(opt)
    assert set(ranks) == {n for n, _ in model.named_parameters()}
    assert {n for n, r in ranks.items() if r is not None} == HIDDEN
    for g in opt.param_groups:
        projected = g["rank"] is not None
        assert g["update_proj_gap"] == (10 if projected else 200) and g[key] == (0.25 if projected else 1.0)
        assert g["lr"] == 1e-3 and (g["weight_decay"] == 0.1 or not projected)  # hidden matrices decay
    # embeddings, head, biases and gains: plain AdamW of the same optimizer (no projection state)
    x = torch.randint(0, 40, (2, 8))
    model(x).logsumexp(-1).mean().backward()
    opt.step()
    for n, p in model.named_parameters():
        assert ("projection" in opt.state[p]) == (n in HIDDEN), n
    assert opt.state[model.block.linear1.weight]["projection"].shape == (4, 16)  # (32, 16): right, rank 4


def test_create_optimizer_routing_follows_matrix_and_aux_patterns():
    model = TinyLM()
    only_ffn = optarena.create_optimizer(model, "galore_adamw", rank=4, matrix=lambda n, p: "linear" in n and p.ndim == 2)
    assert {n for n, r in ranks_by_name(only_ffn).items() if r is not None} == {"block.linear1.weight", "block.linear2.weight"}
    no_attn = optarena.create_optimizer(model, "fira_adamw", rank=4, aux_patterns=["block.self_attn.*"])
    assert {n for n, r in ranks_by_name(no_attn).items() if r is not None} == {"block.linear1.weight", "block.linear2.weight"}
    plain = optarena.create_optimizer(model, "galore_adamw")  # no rank: every group plain AdamW
    assert all(g["rank"] is None for g in plain.param_groups)


@pytest.mark.parametrize("name", ["galore_adamw", "fira_adamw"])
def test_arena_builds_the_projection_on_hidden_matrices(name):
    model = TinyLM()
    opt = build_optimizer(name, model, {"lr": 1e-3, "weight_decay": 0.01, "betas[0]": 0.9})
    card = optarena.card(name)
    assert {n for n, r in ranks_by_name(opt).items() if r is not None} == HIDDEN
    assert all(g["update_proj_gap"] == card.fixed["update_proj_gap"] for g in opt.param_groups if g["rank"])
    assert set(card.search) == {"lr", "weight_decay", "betas[0]"}


@pytest.mark.slow
@pytest.mark.parametrize("rank", [5, 3])
def test_fused_matches_eager_for_square_full_rank_and_low_rank(rank):
    """At full rank a square matrix's state is parameter-shaped, so the fused path compiles the
    SVD refresh; at rank 3 it runs eagerly."""
    runs = []
    for fused in (False, True):
        p = torch.randn(5, 5, generator=torch.Generator().manual_seed(2)).requires_grad_()
        opt = optarena.create("galore_adamw", [{"params": [p], "rank": rank, "update_proj_gap": 3}], lr=0.01, fused=fused)
        for t in range(1, 8):
            set_grads([p], t)
            opt.step()
        runs.append(p.detach().clone())
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-5, atol=1e-6)
