"""The model-aware factory on a real small transformer."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from optarena import create_optimizer, param_groups


class TinyTransformer(nn.Module):
    def __init__(self, vocab=50, dim=16, heads=2, layers=2, seq=8):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(1, seq, dim))
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(dim, heads, dim_feedforward=32, dropout=0.0, batch_first=True)
            for _ in range(layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def no_weight_decay(self):
        return {"pos"}

    def forward(self, x):
        h = self.embed(x) + self.pos[:, : x.shape[1]]
        for block in self.blocks:
            h = block(h)
        return self.head(self.norm(h))


def where(groups):
    return {n: g for g in groups for n in g["param_names"]}


def test_no_decay_on_biases_gains_and_listed_names():
    model = TinyTransformer()
    by_name = where(param_groups(model, lr=1e-3, weight_decay=0.1))
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        expected = 0.0 if p.ndim <= 1 or name == "pos" else 0.1
        assert by_name[name]["weight_decay"] == expected, name
    assert by_name["embed.weight"]["weight_decay"] == 0.1
    assert by_name["blocks.0.self_attn.in_proj_weight"]["weight_decay"] == 0.1
    assert by_name["blocks.1.norm1.weight"]["weight_decay"] == 0.0
    assert by_name["head.bias"]["weight_decay"] == 0.0


def test_overrides_by_pattern_and_predicate():
    model = TinyTransformer()
    by_name = where(param_groups(model, lr=1e-3, weight_decay=0.1, no_decay=["embed.*", "head.*"]))
    assert by_name["embed.weight"]["weight_decay"] == 0.0 and by_name["head.weight"]["weight_decay"] == 0.0
    everything = where(param_groups(model, lr=1e-3, weight_decay=0.1, decay=lambda n, p: True))
    assert all(g["weight_decay"] == 0.1 for g in everything.values())


def test_layer_decay_scales_lr_by_depth():
    model = TinyTransformer(layers=2)
    by_name = where(param_groups(model, lr=1.0, weight_decay=0.0, layer_decay=0.5))
    assert by_name["head.weight"]["lr"] == 1.0 and by_name["norm.weight"]["lr"] == 1.0
    assert by_name["blocks.1.linear1.weight"]["lr"] == 0.5
    assert by_name["blocks.0.linear1.weight"]["lr"] == 0.25
    assert by_name["embed.weight"]["lr"] == 0.125 and by_name["pos"]["lr"] == 0.125
    with pytest.raises(ValueError, match="layer_decay"):
        param_groups(model, lr=1.0, weight_decay=0.0, layer_decay=1.5)


def test_frozen_parameters_are_left_out():
    model = TinyTransformer()
    model.embed.weight.requires_grad_(False)
    assert "embed.weight" not in where(param_groups(model, lr=1e-3, weight_decay=0.1))


@pytest.mark.parametrize("name", ["adamw", "lion"])
def test_created_optimizer_trains_the_transformer(name):
    torch.manual_seed(0)
    model = TinyTransformer()
    opt = create_optimizer(model, name, lr=3e-3, weight_decay=0.01)
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0, 0.01}
    x = torch.randint(0, 50, (16, 8))
    y = torch.roll(x, 1, dims=1)  # a learnable mapping: predict the previous token
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x).reshape(-1, 50), y.reshape(-1))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_defaults_come_from_the_method():
    opt = create_optimizer(TinyTransformer(), "lion")
    assert {g["lr"] for g in opt.param_groups} == {1e-4}
    assert {g["weight_decay"] for g in opt.param_groups} == {0.0}
