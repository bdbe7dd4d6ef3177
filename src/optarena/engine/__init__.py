"""The engine: hyperparameter specs, rules, state storage, gradient transforms, kernels, the optimizer."""
from .hyper import Hyper
from .optimizer import NONFINITE_POLICIES, NonFiniteGradientError, Optimizer
from .rule import Rule
from .storage import StateStorage
from .transforms import (
    CoordinateClip,
    GlobalNormClip,
    GradientNoise,
    GradientTransform,
    SplitGradients,
    UpdateClip,
)

__all__ = [
    "Hyper",
    "NONFINITE_POLICIES",
    "NonFiniteGradientError",
    "Optimizer",
    "Rule",
    "StateStorage",
    "GlobalNormClip",
    "GradientTransform",
    "CoordinateClip",
    "GradientNoise",
    "SplitGradients",
    "UpdateClip",
]
