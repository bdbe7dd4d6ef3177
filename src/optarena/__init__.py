"""optarena: optimizers from the recent literature, faithful to their authors' code."""
from .engine import GlobalNormClip, GradientTransform, NonFiniteGradientError, Optimizer, Rule
from .engine.transforms import CoordinateClip, GradientNoise, SplitGradients, UpdateClip
from .factory import create_optimizer, param_groups
from .cards import Axis, Card, builtin_cards, builtin_trainers
from .registry import available, card, create, get, methods, register, register_trainer
from .rules import SGD, SGDP, AdamP, AdamW, Adan, Conda, DiffGrad, Lion
from .rules import SOAP
from .rules import Muon, NorMuon
from .rules import FiraAdamW, GaLoreAdamW
from .rules import AdamW8bit, Lion8bit

for _card in builtin_cards():
    register(_card.name, _card.cls, card=_card)
for _card in builtin_trainers():
    register_trainer(_card)

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
    "card",
    "methods",
    "register_trainer",
    "Card",
    "Axis",
    "create",
    "create_optimizer",
    "param_groups",
    "get",
    "register",
]
