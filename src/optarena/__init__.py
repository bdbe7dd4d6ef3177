"""optarena: optimizers from the recent literature, faithful to their authors' code."""
from .engine import GlobalNormClip, GradientTransform, NonFiniteGradientError, Optimizer, Rule
from .engine.transforms import CoordinateClip, GradientNoise, SplitGradients, UpdateClip
from .factory import create_optimizer, param_groups
from .cards import Axis, Card, builtin_cards
from .registry import available, card, create, get, register
from .rules import SGD, SGDP, AdamP, AdamW, Adan, Conda, DiffGrad, Lion
from .rules import SOAP
from .rules import Muon, NorMuon
from .rules import FiraAdamW, GaLoreAdamW
from .rules import AdamW8bit, Lion8bit

for _card in builtin_cards():
    register(_card.name, _card.cls, card=_card)

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
    "Card",
    "Axis",
    "create",
    "create_optimizer",
    "param_groups",
    "get",
    "register",
]
