"""optarena: optimizers from the recent literature, faithful to their authors' code."""
from .engine import GlobalNormClip, GradientTransform, NonFiniteGradientError, Optimizer, Rule
from .engine.transforms import CoordinateClip, GradientNoise, SplitGradients, UpdateClip
from .factory import create_optimizer, param_groups
from .registry import available, create, get, register
from .rules import SGD, SGDP, AdamP, AdamW, Adan, Conda, DiffGrad, Lion
from .rules import SOAP
from .rules import Muon, NorMuon
from .rules import FiraAdamW, GaLoreAdamW
from .rules import AdamW8bit, Lion8bit

register("adamw", AdamW)
register("sgd", SGD)
register("lion", Lion)
register("adan", Adan)
register("diffgrad", DiffGrad)
register("adamp", AdamP)
register("sgdp", SGDP)
register("soap", SOAP)
register("conda", Conda)
register("muon", Muon)
register("normuon", NorMuon)
register("galore_adamw", GaLoreAdamW)
register("fira_adamw", FiraAdamW)
register("adamw8bit", AdamW8bit)
register("lion8bit", Lion8bit)

__version__ = "0.1.0"
__all__ = [
    "AdamW",
    "SGD",
    "Lion",
    "Adan",
    "DiffGrad",
    "AdamP",
    "SGDP",
    "SOAP",
    "Conda",
    "Muon",
    "NorMuon",
    "GaLoreAdamW",
    "FiraAdamW",
    "AdamW8bit",
    "Lion8bit",
    "Optimizer",
    "Rule",
    "GradientTransform",
    "GlobalNormClip",
    "CoordinateClip",
    "GradientNoise",
    "SplitGradients",
    "UpdateClip",
    "NonFiniteGradientError",
    "available",
    "create",
    "create_optimizer",
    "param_groups",
    "get",
    "register",
]
