"""create_optimizer with a matrix rule: hidden matrices to Muon/NorMuon, the rest to AdamW, one optimizer."""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import optarena
from test_factory import TinyTransformer


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(self.norm(self.conv(h)))
        return self.fc(h.mean(dim=(2, 3)))


def routing(opt):
    return {n: g for g in opt.param_groups for n in g["param_names"]}


@pytest.mark.parametrize("name", ["muon", "normuon"])
def test_transformer_routing(name):
    model = TinyTransformer()
    opt = optarena.create_optimizer(model, name, weight_decay=0.01)
    by_name = routing(opt)
    assert set(by_name) == {n for n, _ in model.named_parameters()}
    for n, p in model.named_parameters():
        group = by_name[n]
        hidden = p.ndim >= 2 and n not in ("embed.weight", "head.weight", "pos")
        assert ("rule" not in group) == hidden, n
        if hidden:
            assert group["lr"] == 0.02 and group["weight_decay"] == 0.01
        else:
            assert group["rule"] == "adamw" and group["lr"] == 3e-4 and group["betas"] == (0.9, 0.95)
            assert group["weight_decay"] == (0.0 if p.ndim < 2 or n == "pos" else 0.01), n
    assert by_name["blocks.0.self_attn.in_proj_weight"].get("rule") is None
    assert by_name["blocks.1.linear2.weight"].get("rule") is None


def test_cnn_routing_keeps_first_conv_and_head_on_adamw():
    model = SmallCNN()
    by_name = routing(optarena.create_optimizer(model, "muon"))
    assert by_name["conv.weight"].get("rule") is None  # a hidden 4-D kernel
    for n in ("stem.weight", "fc.weight", "conv.bias", "norm.weight", "norm.bias", "fc.bias"):
        assert by_name[n]["rule"] == "adamw", n


def test_routing_overrides():
    model = TinyTransformer()
    by_name = routing(optarena.create_optimizer(model, "muon", aux_patterns=["blocks.1.*"]))
    assert by_name["blocks.1.linear1.weight"]["rule"] == "adamw"
    assert by_name["blocks.0.linear1.weight"].get("rule") is None
    by_name = routing(optarena.create_optimizer(model, "muon", matrix=lambda n, p: n == "blocks.0.linear1.weight"))
    assert [n for n, g in by_name.items() if "rule" not in g] == ["blocks.0.linear1.weight"]
    by_name = routing(optarena.create_optimizer(model, "muon", aux_kwargs={"lr": 1e-3, "weight_decay": 0.2}))
    assert by_name["head.weight"]["lr"] == 1e-3 and by_name["head.weight"]["weight_decay"] == 0.2


def test_muon_alone_refuses_vectors():
    with pytest.raises(ValueError, match="create_optimizer"):
        optarena.create("muon", TinyTransformer().parameters())


@pytest.mark.parametrize("name", ["muon", "normuon"])
def test_split_trains_and_resumes(name):
    torch.manual_seed(0)
    model = TinyTransformer()
    opt = optarena.create_optimizer(model, name, ns_dtype="float32", aux_kwargs={"lr": 3e-3})
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 - step / 100)
    x = torch.randint(0, 50, (16, 8))
    y = torch.roll(x, 1, dims=1)

    def train(steps):
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x).reshape(-1, 50), y.reshape(-1))
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        return losses

    losses = train(30)
    assert losses[-1] < 0.75 * losses[0]
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    train(3)
    expected = [p.detach().clone() for p in model.parameters()]
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    sched.load_state_dict(ckpt["sched"])
    train(3)
    assert all(torch.equal(p, e) for p, e in zip(model.parameters(), expected))
