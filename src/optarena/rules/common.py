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
