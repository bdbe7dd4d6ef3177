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

    @property
    def matrix_only(self) -> bool:
        """The method updates matrices only (`Rule.matrix_only`, Muon): generic tests give it
        matrices where they would use vectors or scalars."""
        import optarena

        return optarena.get(self.name).rule.matrix_only


COMMON_BAD = (
    ({"lr": -1.0}, "lr"),
    ({"lr": float("nan")}, "lr"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"no_such_argument": 1}, "no_such_argument"),
)
BETAS2_BAD = (({"betas": (0.9, 1.0)}, "betas[1]"), ({"betas": (-0.1, 0.9)}, "betas[0]"), ({"betas": (0.9,)}, "betas"))

# Muon, NorMuon. test_bad_hyperparameters passes a 1-D parameter: with valid arguments that is the error.
MUON_BAD = (
    ({"momentum": -0.1}, "momentum"),
    ({"momentum": 1.0}, "momentum"),
    ({"ns_steps": 0}, "ns_steps"),
    ({"ns_steps": 2.5}, "ns_steps"),
    ({"ns_dtype": "float16"}, "ns_dtype"),
    ({"ns_method": "fast"}, "ns_method"),
    ({"scale": "unit"}, "scale"),
    ({"nesterov": 1}, "nesterov"),
    ({}, "create_optimizer"),
)

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
        + (
            ({"momentum": -0.5}, "momentum"),
            ({"momentum": 1.5}, "momentum"),
            ({"momentum": 1.0}, "momentum"),
            ({"dampening": 1.5}, "dampening"),
            ({"dampening": -0.1}, "dampening"),
            ({"nesterov": True}, "nesterov"),
            ({"nesterov": 1}, "nesterov"),
        ),
    ),
    "lion": Spec(
        "lion",
        {"lr": 0.01, "weight_decay": 0.1},
        variants=({"betas": (0.95, 0.98)},),
        bad=COMMON_BAD + BETAS2_BAD,
    ),
    # bitsandbytes' 8-bit rules; min_8bit_size=0 quantizes even the generic tests' small tensors
    "adamw8bit": Spec(
        "adamw8bit",
        {"lr": 0.05, "weight_decay": 0.1, "min_8bit_size": 0},
        variants=({"betas": (0.8, 0.95), "eps": 1e-6}, {"state_precision": "fp32"}),
        bad=COMMON_BAD + BETAS2_BAD + (({"eps": -1e-8}, "eps"), ({"min_8bit_size": -1}, "min_8bit_size")),
    ),
    "lion8bit": Spec(
        "lion8bit",
        {"lr": 0.01, "weight_decay": 0.1, "min_8bit_size": 0},
        variants=({"betas": (0.95, 0.98)},),
        bad=COMMON_BAD + BETAS2_BAD + (({"state_precision": "int4"}, "state_precision"),),
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
            ({"dampening": 1.5}, "dampening"),
            ({"eps": -1e-8}, "eps"),
            ({"delta": -0.1}, "delta"),
            ({"wd_ratio": -0.1}, "wd_ratio"),
            ({"nesterov": "yes"}, "nesterov"),
        ),
    ),
    "conda": Spec(
        "conda",
        # update_proj_gap set: the (6, 5) matrix is projected (basis refreshed at steps 1, 3, 5, ...),
        # the 1-D, 4-D and 0-d params take the plain Adam update.
        {"lr": 0.05, "weight_decay": 0.1, "update_proj_gap": 2},
        variants=(
            {"update_proj_gap": None},  # no projection: plain Adam with decay after the update
            {"proj_type": "reverse_std", "scale": 0.5, "correct_bias": False, "betas": (0.8, 0.95)},
        ),
        bad=COMMON_BAD
        + BETAS2_BAD
        + (
            ({"eps": -1e-8}, "eps"),
            ({"update_proj_gap": 0}, "update_proj_gap"),
            ({"update_proj_gap": 2.5}, "update_proj_gap"),
            ({"scale": -1.0}, "scale"),
            ({"proj_type": "full"}, "proj_type"),
            ({"correct_bias": 1}, "correct_bias"),
        ),
    ),
    "galore_adamw": Spec(
        "galore_adamw",
        # rank set: the (6, 5) matrix is projected to rank 2 (right basis Vh[:2], refreshed from the
        # gradient at steps 1, 3, 5, ...); the 1-D, 4-D and 0-d params take the plain AdamW update.
        {"lr": 0.05, "weight_decay": 0.1, "rank": 2, "update_proj_gap": 2},
        variants=(
            {"rank": None},  # no projection: plain AdamW with decay after the update
            {"proj_type": "reverse_std", "scale": 0.5, "correct_bias": False, "betas": (0.8, 0.95)},
            {"rank": 8, "scale": 0.25},  # clamped to the smaller side (5): a full-rank basis
        ),
        bad=COMMON_BAD
        + BETAS2_BAD
        + (
            ({"eps": -1e-8}, "eps"),
            ({"rank": 0}, "rank"),
            ({"rank": 2.5}, "rank"),
            ({"update_proj_gap": 0}, "update_proj_gap"),
            ({"update_proj_gap": -5}, "update_proj_gap"),
            ({"update_proj_gap": None}, "update_proj_gap"),
            ({"scale": -1.0}, "scale"),
            ({"proj_type": "full"}, "proj_type"),
            ({"correct_bias": 1}, "correct_bias"),
        ),
    ),
    "fira_adamw": Spec(
        "fira_adamw",
        # As GaLore, plus the scaled residual and its norm-growth limiter (from step 2 on).
        {"lr": 0.05, "weight_decay": 0.1, "rank": 2, "update_proj_gap": 2},
        variants=(
            {"rank": None},
            {"proj_type": "reverse_std", "alpha": 0.5, "correct_bias": False, "betas": (0.8, 0.95)},
            {"rank": 8, "alpha": 0.25},
        ),
        bad=COMMON_BAD
        + BETAS2_BAD
        + (
            ({"eps": -1e-8}, "eps"),
            ({"rank": 0}, "rank"),
            ({"rank": -2}, "rank"),
            ({"update_proj_gap": 0}, "update_proj_gap"),
            ({"update_proj_gap": -5}, "update_proj_gap"),
            ({"alpha": -1.0}, "alpha"),
            ({"alpha": float("nan")}, "alpha"),
            ({"scale": 0.25}, "scale"),  # GaLore's name: Fira calls it alpha
            ({"proj_type": "full"}, "proj_type"),
        ),
    ),
    "soap": Spec(
        "soap",
        {"lr": 0.05, "weight_decay": 0.01, "precondition_frequency": 2},
        variants=(
            {"max_precond_dim": 4, "shampoo_beta": 0.9},  # (6, 5) unpreconditioned, 4-D modes preconditioned
            {"precondition_1d": True, "normalize_grads": True, "correct_bias": False},
        ),
        bad=COMMON_BAD
        + BETAS2_BAD
        + (
            ({"eps": -1e-8}, "eps"),
            ({"shampoo_beta": 1.0}, "shampoo_beta"),
            ({"precondition_frequency": 0}, "precondition_frequency"),
            ({"max_precond_dim": -1}, "max_precond_dim"),
            ({"merge_dims": True}, "merge_dims"),
            ({"data_format": "channels_last"}, "data_format"),
            ({"precondition_1d": 1}, "precondition_1d"),
        ),
        extra={"first_step_moves": False},  # the first step only builds the preconditioner
    ),
    "muon": Spec(
        "muon",
        {"lr": 0.05, "weight_decay": 0.1},
        variants=({"ns_dtype": "float32"}, {"nesterov": False, "ns_steps": 3}, {"scale": "moonlight"}, {"ns_method": "gram"}),
        bad=COMMON_BAD + MUON_BAD,
    ),
    "normuon": Spec(
        "normuon",
        {"lr": 0.05, "weight_decay": 0.1},
        variants=({"ns_dtype": "float32", "beta2": 0.9}, {"nesterov": False}, {"scale": "moonlight"},
                  {"ns_method": "gram", "ns_dtype": "float32"}),
        bad=COMMON_BAD + MUON_BAD + (({"beta2": 1.0}, "beta2"),),
    ),
}
