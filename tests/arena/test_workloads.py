"""The arena's workloads: registry, seeding, losses, evaluation, and that training helps."""
from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch

import optarena
from optarena.arena.workloads import WORKLOADS, DatasetMissingError, Task, get_workload
from optarena.arena.workloads import charlm, fmnist_cnn, noisy_quadratic, zipf_memory
from optarena.arena.workloads._common import EpochSampler
from optarena.factory import hidden_matrices

NAMES = ["rosenbrock", "noisy-quadratic", "digits-mlp", "fmnist-cnn", "charlm", "zipf-memory"]
SEEDED_INIT = set(NAMES) - {"rosenbrock"}
HIDDEN = {  # what Muon-style routing must find in each model
    "rosenbrock": set(),
    "noisy-quadratic": {"w"},
    "digits-mlp": {"fc1.weight", "fc2.weight"},
    "fmnist-cnn": {"conv2.weight", "fc.weight"},
    "charlm": {f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc", "mlp.proj")},
    "zipf-memory": {"W"},
}
# (AdamW lr, steps) for the "training improves the metric" check: short, but clearly past noise.
SHORT_RUN = {
    "rosenbrock": (0.05, 50),
    "noisy-quadratic": (0.1, 30),
    "digits-mlp": (3e-3, 30),
    "fmnist-cnn": (3e-3, 30),
    "charlm": (1e-3, 20),
    "zipf-memory": (0.1, 30),
}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, seed: int = 0) -> Task:
    try:
        return get_workload(name).build(seed)
    except DatasetMissingError as e:  # only Fashion-MNIST can be missing
        pytest.skip(str(e))


def batches_equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return len(a) == len(b) and all(batches_equal(x, y) for x, y in zip(a, b))


def params(task: Task) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in task.model.named_parameters()}


def train(task: Task, lr: float, steps: int) -> None:
    opt = optarena.create_optimizer(task.model, "adamw", lr=lr)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        task.loss(task.next_batch()).backward()
        opt.step()


def warmup_cosine_run(task: Task, lr: float, steps: int) -> None:
    """AdamW with linear warm-up over 5% of the steps, then cosine decay to zero."""
    opt = optarena.create_optimizer(task.model, "adamw", lr=lr)
    warm = max(1, int(0.05 * steps))
    for step in range(1, steps + 1):
        scale = step / warm if step <= warm else 0.5 * (1 + math.cos(math.pi * (step - warm) / (steps - warm)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        opt.zero_grad(set_to_none=True)
        task.loss(task.next_batch()).backward()
        opt.step()


# --- registry -------------------------------------------------------------------------------


def test_registry_order_and_specs():
    assert list(WORKLOADS) == NAMES
    for name, w in WORKLOADS.items():
        assert w.name == name and get_workload(name) is w
        assert set(w.steps) == {"quick", "standard"} and 0 < w.steps["quick"] < w.steps["standard"]
        assert w.description
    assert get_workload("digits-mlp").higher_is_better and not get_workload("charlm").higher_is_better


def test_unknown_workload_lists_valid_names():
    with pytest.raises(ValueError) as info:
        get_workload("mnist-resnet")
    assert "mnist-resnet" in str(info.value)
    assert all(name in str(info.value) for name in NAMES)


# --- every workload -------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_init_and_batches(name):
    a, b = build(name, 3), build(name, 3)
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    for _ in range(3):
        assert batches_equal(a.next_batch(), b.next_batch())


@pytest.mark.parametrize("name", NAMES)
def test_different_seeds_differ(name):
    a, b = build(name, 0), build(name, 1)
    same_init = all(torch.equal(x, y) for x, y in zip(params(a).values(), params(b).values()))
    assert same_init == (name not in SEEDED_INIT)
    if name != "rosenbrock":  # the only workload without data
        assert not batches_equal(a.next_batch(), b.next_batch())


@pytest.mark.parametrize("name", NAMES)
def test_global_rng_untouched(name):
    state = torch.get_rng_state()
    task = build(name, 5)
    task.loss(task.next_batch()).backward()
    task.evaluate()
    task.activations()
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_scalar_with_grad(name):
    task = build(name)
    loss = task.loss(task.next_batch())
    assert loss.ndim == 0 and loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    for n, p in task.model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    assert any(p.grad.abs().sum() > 0 for p in task.model.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_evaluate_is_read_only_and_restores_train_mode(name):
    w = get_workload(name)
    task = build(name)
    before = params(task)
    task.model.train()
    metrics = task.evaluate()
    assert w.metric in metrics
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert task.model.training
    assert all(torch.equal(before[n], p) for n, p in task.model.named_parameters())
    assert task.evaluate() == metrics  # deterministic
    acts = task.activations()
    assert task.model.training
    assert all(a.ndim == 2 and a.shape[0] > 1 and torch.isfinite(a).all() and not a.requires_grad for a in acts)
    assert (len(acts) == 0) == (name in {"rosenbrock", "noisy-quadratic"})


@pytest.mark.parametrize("name", NAMES)
def test_hidden_matrices_for_matrix_optimizers(name):
    model = build(name).model
    routed = hidden_matrices(model)
    assert {n for n, p in model.named_parameters() if routed(n, p)} == HIDDEN[name]


@pytest.mark.parametrize("name", NAMES)
def test_short_adamw_run_improves_the_metric(name):
    w = get_workload(name)
    task = build(name)
    start = task.evaluate()[w.metric]
    train(task, *SHORT_RUN[name])
    end = task.evaluate()[w.metric]
    assert (end > start) if w.higher_is_better else (end < start), (start, end)


def test_epoch_sampler_sees_every_item_once_per_epoch():
    sampler = EpochSampler(10, 3, torch.Generator().manual_seed(0))
    stream = torch.cat([sampler.next() for _ in range(10)])
    epochs = stream.view(3, 10)
    assert all(sorted(e.tolist()) == list(range(10)) for e in epochs)
    assert not torch.equal(epochs[0], epochs[1])


# --- rosenbrock -----------------------------------------------------------------------------


def test_rosenbrock_start_and_minimum():
    task = build("rosenbrock", 123)
    assert task.next_batch() is None
    assert task.model.x.tolist() == [-2.0, 2.0]
    assert task.evaluate()["f"] == pytest.approx(409.0)
    with torch.no_grad():
        task.model.x.copy_(torch.tensor([1.0, 1.0]))
    assert task.evaluate()["f"] == 0.0 and task.loss(None).item() == 0.0


# --- noisy quadratic ------------------------------------------------------------------------


def test_noisy_quadratic_curvature_is_fixed():
    h = build("noisy-quadratic", 0).model.h
    assert torch.equal(h, build("noisy-quadratic", 1).model.h)
    assert h.shape == (32, 32)
    assert h.min().item() == pytest.approx(1e-3, rel=1e-5) and h.max().item() == pytest.approx(1.0, rel=1e-5)
    assert len(torch.unique(h)) == 32 * 32


def test_noisy_quadratic_expected_gradient_is_h_w():
    task = build("noisy-quadratic", 0)
    w, h = task.model.w, task.model.h
    n, total = 2000, torch.zeros_like(w)
    for _ in range(n):
        task.model.zero_grad()
        task.loss(task.next_batch()).backward()
        total += w.grad
    mean = total / n
    # gradient noise h * c has standard deviation sigma * sqrt(h) per coordinate
    tolerance = 5 * noisy_quadratic.SIGMA * h.sqrt() / math.sqrt(n)
    assert ((mean - h * w.detach()).abs() <= tolerance).all()
    assert task.evaluate()["loss"] == pytest.approx(0.5 * (h * w.detach() ** 2).sum().item(), rel=1e-6)


# --- digits ---------------------------------------------------------------------------------


def test_digits_split_is_fixed_and_stratified():
    a, b = build("digits-mlp", 0), build("digits-mlp", 1)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_val, b.y_val)
    assert len(a.y_val) == 360 and len(a.y_train) == 1437
    assert torch.bincount(a.y_val, minlength=10).min() >= 35
    assert a.x_train.mean(0).abs().max() < 1e-5  # standardized with training statistics


def test_digits_reaches_095_in_the_quick_budget():
    task = build("digits-mlp", 0)
    warmup_cosine_run(task, 3e-3, get_workload("digits-mlp").budget("quick"))
    assert task.evaluate()["val_accuracy"] >= 0.95


# --- fashion-mnist --------------------------------------------------------------------------


def test_fmnist_missing_dataset_names_the_apt_package(tmp_path, monkeypatch):
    monkeypatch.setenv(fmnist_cnn.ENV_VAR, str(tmp_path))
    with pytest.raises(DatasetMissingError) as info:
        get_workload("fmnist-cnn").build(0)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert str(tmp_path) in message and fmnist_cnn.ENV_VAR in message


def test_idx_parser_checks_magic(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write((2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes())
    assert np.array_equal(fmnist_cnn.read_idx(path, fmnist_cnn.IMAGE_MAGIC), images)
    with pytest.raises(ValueError, match="magic"):
        fmnist_cnn.read_idx(path, fmnist_cnn.LABEL_MAGIC)


def test_fmnist_data():
    task = build("fmnist-cnn", 0)
    assert task.train_images.shape == (60000, 1, 28, 28) and task.train_images.dtype == torch.uint8
    assert task.x_val.shape == (2000, 1, 28, 28) and task.y_val.shape == (2000,)
    assert set(task.y_val.tolist()) == set(range(10))
    assert abs(task.x_val.mean().item()) < 0.1 and abs(task.x_val.std().item() - 1) < 0.1
    x, y = task.next_batch()
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (64,)


# --- charlm ---------------------------------------------------------------------------------


def test_charlm_vocabulary_split_and_fixed_windows():
    from pydoc_data.topics import topics

    text = "".join(topics[k] for k in sorted(topics))
    vocab, train_ids, val_ids = charlm.load()
    assert vocab == "".join(sorted(set(text)))
    assert len(train_ids) + len(val_ids) == len(text) and len(train_ids) == int(0.9 * len(text))
    assert "".join(vocab[i] for i in val_ids[:200]) == text[len(train_ids):len(train_ids) + 200]
    a, b = build("charlm", 0), build("charlm", 1)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.y_val, b.y_val)
    assert a.x_val.shape == (32, 64) and torch.equal(a.x_val[:, 1:], a.y_val[:, :-1])
    assert a.val_offsets[0] == 0 and a.val_offsets[-1] + 65 == len(val_ids)
    x, y = a.next_batch()
    assert x.shape == (16, 64) and torch.equal(x[:, 1:], y[:, :-1]) and int(x.max()) < len(vocab)
    assert a.model.no_weight_decay() == {"pos"} and "pos" in dict(a.model.named_parameters())
    # untrained: about log(vocabulary size) nats per character
    assert a.evaluate()["val_loss"] == pytest.approx(math.log(len(vocab)), abs=0.1)


# --- zipf memory ----------------------------------------------------------------------------


def test_zipf_frequencies_and_embeddings():
    p = zipf_memory.frequencies()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-6) and (p[1:] < p[:-1]).all()
    assert p[0] / p[9] == pytest.approx(10.0, rel=1e-5)
    a, b = build("zipf-memory", 0), build("zipf-memory", 1)
    assert torch.equal(a.model.E, b.model.E) and torch.equal(a.model.U, b.model.U)
    assert torch.allclose(a.model.E.norm(dim=1), torch.ones(256)) and torch.allclose(a.model.U.norm(dim=1), torch.ones(256))
    assert [n for n, _ in a.model.named_parameters()] == ["W"]
    draws = torch.cat([a.next_batch() for _ in range(200)])
    assert (draws == 0).float().mean().item() == pytest.approx(p[0].item(), abs=0.01)


def test_zipf_error_metrics():
    task = build("zipf-memory", 0)
    with torch.no_grad():  # a perfect memory for the head: logits favour x itself for x < 10
        task.model.W.copy_(task.model.U[:10].T @ task.model.E[:10] * 50)
    m = task.evaluate()
    assert m["head_error"] == pytest.approx(1 - 10 / 25) and m["tail_error"] == 1.0
    assert m["error"] == pytest.approx(1 - zipf_memory.frequencies()[:10].sum().item(), abs=1e-6)
