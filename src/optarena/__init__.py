"""optarena: optimizers from the recent literature, faithful to their authors' code."""
from .engine import GlobalNormClip, GradientTransform, NonFiniteGradientError, Optimizer, Rule
from .registry import available, create, get, register
from .rules import SGD, AdamW, Adan, Lion

register("adamw", AdamW)
register("sgd", SGD)
register("lion", Lion)
register("adan", Adan)

__version__ = "0.1.0"
__all__ = [
    "AdamW",
    "SGD",
    "Lion",
    "Adan",
    "Optimizer",
    "Rule",
    "GradientTransform",
    "GlobalNormClip",
    "NonFiniteGradientError",
    "available",
    "create",
    "get",
    "register",
]
