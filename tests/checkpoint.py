"""A run saved mid-way and resumed as a user does it: `torch.save`, then `torch.load(weights_only=True)`
into fresh parameters and a freshly built optimizer."""
from __future__ import annotations

import io

import torch


def save(params, opt) -> io.BytesIO:
    """The parameters' values and the optimizer's `state_dict`, serialized now."""
    buffer = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buffer)
    return buffer


def restore(buffer: io.BytesIO, build) -> tuple:
    """`(optimizer, params)`: fresh parameters from the checkpoint and `build(params)` with the saved
    state loaded. A checkpoint can be restored any number of times."""
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)
    params = [p.clone().requires_grad_() for p in ckpt["params"]]
    opt = build(params)
    opt.load_state_dict(ckpt["opt"])
    return opt, params
