"""A character-level transformer language model on text that ships with Python.

Data: the standard library's `pydoc_data.topics` (the help topics of the Python docs, about
465k characters; always installed, never downloaded): the dict's values concatenated in sorted
key order. The vocabulary is the sorted set of characters of the whole text; the first 90% is
the training split and the last 10% (contiguous) the validation split. Training batches are 16
windows of 64 characters at random offsets drawn from the seeded generator.

Model: a small pre-LayerNorm causal transformer written here: token embedding plus a learned
positional embedding (`pos`, a bare parameter listed in `no_weight_decay()`), two blocks of
[LayerNorm, causal self-attention (fused qkv linear, `scaled_dot_product_attention`, output
projection), LayerNorm, 4x MLP with GELU], a final LayerNorm and an untied linear head, last in
module order; d_model 64, 4 heads, context 64. GPT-2 style init from the seed (N(0, 0.02),
residual projections scaled by 1/sqrt(2 * layers)). Hidden matrices (for Muon): the qkv,
attention-output and both MLP matrices of each block. Metric `val_loss` in nats per character
(lower is better) on a FIXED set of 32 validation windows at evenly spaced offsets.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import evaluating, generators, on_meta
from .base import Task, Workload

CONTEXT = 64
D_MODEL = 64
HEADS = 4
LAYERS = 2
BATCH_SIZE = 16
TRAIN_FRACTION = 0.9
VAL_WINDOWS = 32
INIT_STD = 0.02


@functools.lru_cache(maxsize=None)
def load() -> tuple[str, torch.Tensor, torch.Tensor]:
    """(vocabulary as a string of sorted characters, training ids, validation ids)."""
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics))
    vocab = "".join(sorted(set(text)))
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")  # code points, fast
    lookup = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    lookup[[ord(c) for c in vocab]] = np.arange(len(vocab))
    ids = torch.from_numpy(lookup[codes])
    cut = int(TRAIN_FRACTION * len(ids))
    return vocab, ids[:cut], ids[cut:]


def window_offsets(n: int, count: int = VAL_WINDOWS, length: int = CONTEXT + 1) -> torch.Tensor:
    """`count` evenly spaced start offsets of windows of `length` tokens in a sequence of `n`."""
    return torch.linspace(0, n - length, count).round().long()


def windows(ids: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, next-character targets), each (len(offsets), CONTEXT)."""
    chunk = ids[offsets[:, None] + torch.arange(CONTEXT + 1)]
    return chunk[:, :-1], chunk[:, 1:]


class SelfAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.mlp = MLP(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    def __init__(self, vocab: int, d: int = D_MODEL, heads: int = HEADS, layers: int = LAYERS, context: int = CONTEXT):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.empty(context, d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def no_weight_decay(self) -> set[str]:
        return {"pos"}

    def init_(self, generator: torch.Generator) -> None:
        """GPT-2 style: N(0, 0.02) matrices and embeddings, zero biases, unit LayerNorm gains,
        residual-stream projections N(0, 0.02 / sqrt(2 * layers))."""
        residual_std = INIT_STD / math.sqrt(2 * len(self.blocks))
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith(".bias"):
                    p.zero_()
                elif ".ln" in f".{name}":
                    p.fill_(1.0)
                elif name.endswith("proj.weight"):
                    p.normal_(0.0, residual_std, generator=generator)
                else:
                    p.normal_(0.0, INIT_STD, generator=generator)

    def residual_streams(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream after each block, each (batch, time, d)."""
        x = self.tok(idx) + self.pos[: idx.shape[1]]
        out = []
        for block in self.blocks:
            x = block(x)
            out.append(x)
        return out

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(self.residual_streams(idx)[-1]))


class CharLMTask(Task):
    def __init__(self, seed: int):
        self.vocab, self.train_ids, self.val_ids = load()
        init, self.generator = generators(seed)
        self.model = on_meta(lambda: CharTransformer(len(self.vocab)))
        self.model.init_(init)
        self.val_offsets = window_offsets(len(self.val_ids))
        self.x_val, self.y_val = windows(self.val_ids, self.val_offsets)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = torch.randint(0, len(self.train_ids) - CONTEXT, (BATCH_SIZE,), generator=self.generator)
        return windows(self.train_ids, offsets)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())

    def evaluate(self) -> dict[str, float]:
        with evaluating(self.model):
            return {"val_loss": float(self.loss((self.x_val, self.y_val)))}

    def activations(self) -> list[torch.Tensor]:
        """Each block's output (residual stream) on the validation windows, each (32 * 64, 64)."""
        with evaluating(self.model):
            return [x.flatten(0, 1) for x in self.model.residual_streams(self.x_val)]


WORKLOAD = Workload(
    name="charlm",
    description="2-layer d64 causal transformer, character LM on pydoc_data.topics (90/10 contiguous split)",
    metric="val_loss",
    higher_is_better=False,
    steps={"quick": 120, "standard": 3000},
    build=CharLMTask,
)
