"""A small CNN on real Fashion-MNIST: convolutions on a real image task, still cheap on a CPU.

Data: the gzipped IDX files of Debian's `dataset-fashion-mnist` package, read from
`/usr/share/datasets/fashion-mnist/` (or `$OPTARENA_FASHION_MNIST_DIR`), parsed here with gzip
and numpy; never downloaded (a missing file raises `DatasetMissingError` at build time saying how
to install it). Pixels are scaled to [0, 1] and normalized with the training set's mean and
standard deviation. Training streams the full 60,000-image training set (batch 64, reshuffled
every epoch from the seed); validation uses a fixed subset, the first 2,000 images of the test
set, so the ten evaluations of a run stay cheap.

Model: conv(1->8, 5x5, stride 2, pad 2)-ReLU - conv(8->16, 3x3, pad 1)-ReLU-maxpool2 - flatten -
linear(784->64)-ReLU - linear(64->10), initialized like PyTorch's default from the seed. (A
strided first convolution rather than 3x3 + max-pool at full resolution: on a CPU the 28x28
single-channel convolution and its pooling dominated; this cuts evaluation to about a third and a
training step to about two thirds.) Hidden matrices (for Muon): the second conv kernel and the 784->64 matrix (the first conv and the head
are excluded by the optimizer factory). Metric `val_accuracy` (higher is better), plus
`val_loss`.
"""
from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._common import EpochSampler, evaluating, generators, on_meta, torch_default_init_
from .base import DatasetMissingError, Task, Workload

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "OPTARENA_FASHION_MNIST_DIR"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
BATCH_SIZE = 64
VALIDATION_SIZE = 2000
EVAL_CHUNK = 500
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049  # 0x00000803 (uint8, 3 dims), 0x00000801 (uint8, 1 dim)


def data_dir() -> Path:
    return Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (images: 3 dims, labels: 1 dim) as a uint8 array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: IDX magic number {found:#010x}, expected {magic:#010x}")
    ndim = magic & 0xFF
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} bytes of data for shape {shape}")
    return data.reshape(shape)


@functools.lru_cache(maxsize=None)
def load(directory: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, float]:
    """(train images uint8 (60000, 1, 28, 28), train labels, normalized validation images,
    validation labels, training mean, training std) from the IDX files in `directory`."""
    paths = {k: Path(directory) / name for k, name in FILES.items()}
    missing = [p.name for p in paths.values() if not p.is_file()]
    if missing:
        raise DatasetMissingError(
            f"Fashion-MNIST not found in {directory}: install it with `apt-get install dataset-fashion-mnist` "
            f"(Debian/Ubuntu) or set {ENV_VAR} to a folder holding the four IDX .gz files "
            f"(missing: {', '.join(missing)})")  # fmt: skip
    train_images = torch.from_numpy(read_idx(paths["train_images"], IMAGE_MAGIC).copy()).unsqueeze(1)
    train_labels = torch.from_numpy(read_idx(paths["train_labels"], LABEL_MAGIC).astype(np.int64))
    test_images = read_idx(paths["test_images"], IMAGE_MAGIC)[:VALIDATION_SIZE]
    test_labels = read_idx(paths["test_labels"], LABEL_MAGIC)[:VALIDATION_SIZE]
    if len(train_images) != len(train_labels):
        raise ValueError(f"{directory}: {len(train_images)} training images but {len(train_labels)} labels")
    counts = torch.bincount(train_images.flatten(), minlength=256).numpy()  # exact, no float copy
    levels = np.arange(256) / 255
    mean = float((counts * levels).sum() / counts.sum())
    std = float(np.sqrt((counts * (levels - mean) ** 2).sum() / counts.sum()))
    val_images = (torch.from_numpy(test_images.astype(np.float32)).unsqueeze(1) / 255 - mean) / std
    return train_images, train_labels, val_images, torch.from_numpy(test_labels.astype(np.int64)), mean, std


class CNN(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 7 * 7, 64)
        self.head = nn.Linear(64, classes)

    def hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a1 = F.relu(self.conv1(x))
        a2 = F.max_pool2d(F.relu(self.conv2(a1)), 2)
        return a1, a2, F.relu(self.fc(a2.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(x)[2])


class FashionMNISTTask(Task):
    def __init__(self, seed: int):
        directory = str(data_dir())
        self.train_images, self.train_labels, self.x_val, self.y_val, self.mean, self.std = load(directory)
        init, data = generators(seed)
        self.model = on_meta(CNN)
        torch_default_init_(self.model, init)
        self.sampler = EpochSampler(len(self.train_labels), BATCH_SIZE, data)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.sampler.next()
        x = (self.train_images[idx].to(torch.float32) / 255 - self.mean) / self.std
        return x, self.train_labels[idx]

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y)

    def evaluate(self) -> dict[str, float]:
        with evaluating(self.model):
            logits = torch.cat([self.model(x) for x in self.x_val.split(EVAL_CHUNK)])  # cache-friendlier
            return {"val_accuracy": float((logits.argmax(1) == self.y_val).float().mean()),
                    "val_loss": float(F.cross_entropy(logits, self.y_val))}  # fmt: skip

    def activations(self) -> list[torch.Tensor]:
        """Each hidden layer's output on the validation subset, flattened per image:
        (2000, 8*14*14), (2000, 16*7*7), (2000, 64)."""
        with evaluating(self.model):
            chunks = [self.model.hidden(x) for x in self.x_val.split(EVAL_CHUNK)]
            return [torch.cat([c[i] for c in chunks]).flatten(1) for i in range(3)]


WORKLOAD = Workload(
    name="fmnist-cnn",
    description="2-conv CNN on Fashion-MNIST (60k training images, first 2000 test images to validate), batch 64",
    metric="val_accuracy",
    higher_is_better=True,
    steps={"quick": 120, "standard": 3000},
    build=FashionMNISTTask,
)
