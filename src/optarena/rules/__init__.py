"""The methods: each module holds one rule and the optimizer class that runs it."""
from .adamp import SGDP, AdamP
from .adamw import AdamW
from .adan import Adan
from .diffgrad import DiffGrad
from .lion import Lion
from .sgd import SGD

__all__ = ["AdamW", "Adan", "Lion", "SGD", "DiffGrad", "AdamP", "SGDP"]
