"""A linear associative memory with heavy-tailed (Zipf) item frequencies.

The setting of "Muon Outperforms Adam in Tail-End Associative Memory Learning": N = 256 items,
each with a fixed random input embedding E[x] and output embedding U[x] in d = 64 dimensions
(unit-norm rows, drawn once from a fixed generator, the same for every seed; buffers, not
parameters). The only trainable parameter is a bare d x d matrix `W` (a hidden matrix for
Muon), initialized N(0, 0.01^2) from the seed; logits(x) = (E[x] W^T) U^T, trained with
cross-entropy to recall x itself. Training batches (128) draw x from Zipf's law,
p_k proportional to 1 / (k + 1) for k = 0..N-1 (item k is the k-th most frequent). With N > d
the memory cannot store every item, so how an optimizer spends its capacity on rare items shows.

Metric `error` (lower is better): the frequency-weighted misclassification rate over all items.
Extras: `tail_error` (unweighted, the rarest half of the items), `head_error` (unweighted, the
10% most frequent), `val_loss` (frequency-weighted cross-entropy).
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ._common import evaluating, generators
from .base import Task, Workload

ITEMS = 256
DIM = 64
BATCH_SIZE = 128
ZIPF_EXPONENT = 1.0
INIT_STD = 0.01
EMBEDDING_SEED = 0
HEAD = ITEMS // 10  # the 25 most frequent items
TAIL = ITEMS // 2  # the 128 rarest items


@functools.lru_cache(maxsize=None)
def frequencies() -> torch.Tensor:
    """Zipf probabilities p_k = (k + 1)^-a / sum_j (j + 1)^-a, decreasing in k, summing to 1."""
    p = torch.arange(1, ITEMS + 1, dtype=torch.float64) ** -ZIPF_EXPONENT
    return (p / p.sum()).to(torch.float32)


@functools.lru_cache(maxsize=None)
def embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed input and output embeddings E, U (ITEMS x DIM, unit-norm rows)."""
    g = torch.Generator().manual_seed(EMBEDDING_SEED)
    e = F.normalize(torch.randn(ITEMS, DIM, generator=g), dim=1)
    u = F.normalize(torch.randn(ITEMS, DIM, generator=g), dim=1)
    return e, u


class AssociativeMemory(nn.Module):
    def __init__(self, w: torch.Tensor):
        super().__init__()
        e, u = embeddings()
        self.register_buffer("E", e.clone())
        self.register_buffer("U", u.clone())
        self.W = nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.E[x] @ self.W.T) @ self.U.T


class ZipfMemoryTask(Task):
    def __init__(self, seed: int):
        init, self.generator = generators(seed)
        self.model = AssociativeMemory(INIT_STD * torch.randn(DIM, DIM, generator=init))
        self.p = frequencies()
        self.items = torch.arange(ITEMS)

    def next_batch(self) -> torch.Tensor:
        return torch.multinomial(self.p, BATCH_SIZE, replacement=True, generator=self.generator)

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.model(batch), batch)

    def evaluate(self) -> dict[str, float]:
        with evaluating(self.model):
            logits = self.model(self.items)
            wrong = (logits.argmax(1) != self.items).float()
            losses = F.cross_entropy(logits, self.items, reduction="none")
            return {
                "error": float((self.p * wrong).sum()),
                "tail_error": float(wrong[-TAIL:].mean()),
                "head_error": float(wrong[:HEAD].mean()),
                "val_loss": float((self.p * losses).sum()),
            }

    def activations(self) -> list[torch.Tensor]:
        """E W^T on all items, (256, 64)."""
        with evaluating(self.model):
            return [self.model.E @ self.model.W.T]


WORKLOAD = Workload(
    name="zipf-memory",
    description="linear associative memory, 256 items in d=64, Zipf(1) item frequencies, batch 128",
    metric="error",
    higher_is_better=False,
    steps={"quick": 200, "standard": 3000},
    build=ZipfMemoryTask,
)
