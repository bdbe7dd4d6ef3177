"""Hyperparameter specs shared by several methods (one home for each range)."""
from ..engine.hyper import Hyper, betas, non_negative
from ..engine.search import Tunable, linear_range, log_range


def lr(default: float) -> Hyper:
    return Hyper(default, non_negative, "learning rate")


def weight_decay(default: float) -> Hyper:
    return Hyper(default, non_negative, "weight decay coefficient")


def eps(default: float) -> Hyper:
    return Hyper(default, non_negative, "term added to the denominator for numerical stability")


def decay_rates(*default: float) -> Hyper:
    return Hyper(tuple(default), betas(len(default)), "decay rates of the moving averages")


def moment_scalars(group: dict) -> dict[str, float]:
    """The Adam-moment scalars several rules share: beta1, beta2, their complements, eps."""
    b1, b2 = group["betas"]
    return {"beta1": b1, "beta2": b2, "one_minus_beta1": 1 - b1, "one_minus_beta2": 1 - b2, "eps": group["eps"]}


# Search ranges shared by several methods (workload-agnostic; see engine.search).
ADAM_LR = log_range(1e-4, 1e-2)
SGD_LR = log_range(1e-3, 1.0)
DECOUPLED_DECAY = log_range(1e-3, 1.0)
"""Decay applied as p -= lr * wd * p: the per-step shrink is lr * wd."""
COUPLED_DECAY = log_range(1e-6, 1e-3)
"""L2 added to the gradient (g += wd * p)."""
BETA1 = linear_range(0.8, 0.95)
MOMENTUM = linear_range(0.5, 0.99)


def adam_like_space(decay: Tunable = DECOUPLED_DECAY, lr_range: Tunable = ADAM_LR) -> dict[str, Tunable]:
    return {"lr": lr_range, "weight_decay": decay, "betas[0]": BETA1}
