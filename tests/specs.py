"""One table of optimizer specs drives every generic test (like torch's OptimizerInfo).

Every registered optimizer needs an entry: `test_spec_table_covers_registry` fails otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Spec:
    name: str
    kwargs: dict  # a configuration that moves parameters visibly in a few steps
    variants: tuple[dict, ...] = ()  # further configurations every generic test also runs
    bad: tuple[tuple[dict, str], ...] = ()  # (kwargs, the argument name the error must mention)
    extra: dict = field(default_factory=dict)

    def configs(self) -> list[dict]:
        return [self.kwargs, *({**self.kwargs, **v} for v in self.variants)]


COMMON_BAD = (
    ({"lr": -1.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"no_such_argument": 1}, "no_such_argument"),
)
BETAS2_BAD = (({"betas": (0.9, 1.0)}, "betas[1]"), ({"betas": (-0.1, 0.9)}, "betas[0]"), ({"betas": (0.9,)}, "betas"))

SPECS = {
    "adamw": Spec(
        "adamw",
        {"lr": 0.05, "weight_decay": 0.1},
        variants=({"betas": (0.8, 0.95), "eps": 1e-6},),
        bad=COMMON_BAD + BETAS2_BAD + (({"eps": -1e-8}, "eps"),),
    ),
    "sgd": Spec(
        "sgd",
        {"lr": 0.05},
        variants=(
            {"momentum": 0.9, "weight_decay": 0.01},
            {"momentum": 0.9, "nesterov": True},
            {"momentum": 0.9, "dampening": 0.3},
        ),
        bad=COMMON_BAD
        + (({"momentum": -0.5}, "momentum"), ({"nesterov": True}, "nesterov"), ({"nesterov": 1}, "nesterov")),
    ),
    "lion": Spec(
        "lion",
        {"lr": 0.01, "weight_decay": 0.1},
        variants=({"betas": (0.95, 0.98)},),
        bad=COMMON_BAD + BETAS2_BAD,
    ),
    "adan": Spec(
        "adan",
        {"lr": 0.05, "weight_decay": 0.02},
        variants=({"no_prox": True}, {"max_grad_norm": 0.5}),
        bad=COMMON_BAD
        + (
            ({"betas": (0.9, 0.9)}, "betas"),
            ({"betas": (0.9, 0.9, 1.5)}, "betas[2]"),
            ({"eps": -1.0}, "eps"),
            ({"max_grad_norm": -1.0}, "max_grad_norm"),
            ({"no_prox": "yes"}, "no_prox"),
        ),
    ),
    "diffgrad": Spec(
        "diffgrad",
        {"lr": 0.05, "weight_decay": 0.01},
        variants=({"betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.0},),
        bad=COMMON_BAD + BETAS2_BAD + (({"eps": -1e-8}, "eps"),),
    ),
    "adamp": Spec(
        "adamp",
        {"lr": 0.05, "weight_decay": 0.1},
        variants=({"nesterov": True}, {"betas": (0.8, 0.95), "delta": 3.0, "wd_ratio": 0.5}),
        bad=COMMON_BAD
        + BETAS2_BAD
        + (
            ({"eps": -1e-8}, "eps"),
            ({"delta": -0.1}, "delta"),
            ({"wd_ratio": -0.1}, "wd_ratio"),
            ({"nesterov": 1}, "nesterov"),
        ),
    ),
    "sgdp": Spec(
        "sgdp",
        {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01},
        variants=({"nesterov": True}, {"momentum": 0.0, "delta": 3.0}, {"dampening": 0.3, "wd_ratio": 0.5}),
        bad=COMMON_BAD
        + (
            ({"momentum": -0.5}, "momentum"),
            ({"momentum": 1.0}, "momentum"),
            ({"dampening": -0.1}, "dampening"),
            ({"eps": -1e-8}, "eps"),
            ({"delta": -0.1}, "delta"),
            ({"wd_ratio": -0.1}, "wd_ratio"),
            ({"nesterov": "yes"}, "nesterov"),
        ),
    ),
}
