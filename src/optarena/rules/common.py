"""Hyperparameter specs shared by several methods (one home for each range)."""
from ..engine.hyper import Hyper, betas, non_negative


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
