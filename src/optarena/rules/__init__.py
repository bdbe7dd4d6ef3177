"""The methods: each module holds one rule and the optimizer class that runs it."""
from .adamp import SGDP, AdamP
from .adamw import AdamW
from .adan import Adan
from .conda import Conda
from .diffgrad import DiffGrad
from .galore import FiraAdamW, GaLoreAdamW
from .eightbit import AdamW8bit, Lion8bit
from .lion import Lion
from .muon import Muon, NorMuon
from .sgd import SGD
from .soap import SOAP

__all__ = ["AdamW", "Adan", "Lion", "SGD", "DiffGrad", "AdamP", "SGDP", "Conda", "SOAP", "Muon", "NorMuon", "AdamW8bit", "Lion8bit",
           "GaLoreAdamW", "FiraAdamW"]
