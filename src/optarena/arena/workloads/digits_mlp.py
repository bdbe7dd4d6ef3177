"""An MLP on scikit-learn's bundled handwritten digits: a small, real classification task.

Data: `sklearn.datasets.load_digits` (1797 8x8 images, 10 classes; shipped with scikit-learn,
never downloaded), split 80/20 stratified with a FIXED seed (0, independent of the run seed, so
every run validates on the same 360 images); features standardized with the training split's
mean and standard deviation (constant pixels left at scale 1). Model: MLP 64 -> 128 -> 128 -> 10
with ReLU (two hidden matrices, `fc1` and `fc2`; `head` is the output layer), initialized like
PyTorch's default Linear from the seed; cross-entropy, batch 64, data reshuffled every epoch from
the seed. Metric `val_accuracy` on the validation split (higher is better), plus `val_loss`.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from ._common import EpochSampler, evaluating, generators, on_meta, torch_default_init_
from .base import DatasetMissingError, Task, Workload

BATCH_SIZE = 64
HIDDEN = 128
VALIDATION_FRACTION = 0.2
SPLIT_SEED = 0


@functools.lru_cache(maxsize=None)
def load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val): the fixed split, standardized with training statistics."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as e:
        raise DatasetMissingError("the digits workload needs scikit-learn: pip install scikit-learn") from e
    data = load_digits()
    x_train, x_val, y_train, y_val = train_test_split(
        data.data, data.target, test_size=VALIDATION_FRACTION, stratify=data.target, random_state=SPLIT_SEED)
    x_train = torch.tensor(x_train, dtype=torch.float32)
    x_val = torch.tensor(x_val, dtype=torch.float32)
    mean, std = x_train.mean(0), x_train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((x_train - mean) / std, torch.tensor(y_train, dtype=torch.long),
            (x_val - mean) / std, torch.tensor(y_val, dtype=torch.long))  # fmt: skip


class MLP(nn.Module):
    def __init__(self, d_in: int = 64, hidden: int = HIDDEN, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, classes)

    def hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h1 = F.relu(self.fc1(x))
        return h1, F.relu(self.fc2(h1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x)[1])


class DigitsTask(Task):
    def __init__(self, seed: int):
        self.x_train, self.y_train, self.x_val, self.y_val = load()
        init, data = generators(seed)
        self.model = on_meta(MLP)
        torch_default_init_(self.model, init)
        self.sampler = EpochSampler(len(self.y_train), BATCH_SIZE, data)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.next()
        return self.x_train[idx], self.y_train[idx]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def evaluate(self) -> dict[str, float]:
        with evaluating(self.model):
            logits = self.model(self.x_val)
            return {"val_accuracy": float((logits.argmax(1) == self.y_val).float().mean()),
                    "val_loss": float(F.cross_entropy(logits, self.y_val))}  # fmt: skip

    def activations(self) -> list[torch.Tensor]:
        """The two hidden ReLU outputs on the validation split, each (360, 128)."""
        with evaluating(self.model):
            return list(self.model.hidden(self.x_val))


WORKLOAD = Workload(
    name="digits-mlp",
    description="MLP 64-128-128-10 on scikit-learn's digits (fixed stratified 80/20 split), batch 64",
    metric="val_accuracy",
    higher_is_better=True,
    steps={"quick": 200, "standard": 2000},
    build=DigitsTask,
)
