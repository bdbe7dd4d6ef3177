"""Method cards: what the library knows about each registered method, in one place.

A card is to a method what timm's `OptimInfo` is to an optimizer: its name and class, the paper
and the reference code it follows, its capabilities (read off the rule, never restated), where
the arena starts searching its hyperparameters and why, and the fixed settings the arena runs it
with. The engine keeps the math; the arena reads cards only. Adding a method is: a rule file, a
card here, a spec row in `tests/specs.py`, a golden test.

Search axes are grids, not boxes: `Axis(center, factor)` is the value `center * factor**k` for
every integer k (`scale="one_minus"`: `1 - (1 - center) / factor**k`, for momenta), bounded only
where the hyperparameter's own valid range ends. A tuner that finds its best value at the end of
what it tried can always take one more step (see `arena/tuning.py`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

_ELEMENT = re.compile(r"^(\w+)\[(\d+)\]$")


@dataclass(frozen=True)
class Axis:
    """One tunable hyperparameter as a grid indexed by integers, index 0 at `center`.

    `scale="log"`: `value(k) = center * factor**k`; `"one_minus"`: `1 - (1 - center) / factor**k`
    (a momentum: k + 1 halves the distance to 1 when factor is 2). `low`/`high`: the valid range
    (inclusive); grid points outside it do not exist. `sweep`: the half-width, in strides, of the
    first round (lr: 1, three points); 0 for the axes coordinate descent refines later. `stride`:
    the first search along this axis moves `stride` grid points at a time (lr: 2, i.e. x4), then
    single points around the best (coarse to fine). `source` says where `center` comes from."""

    center: float
    factor: float = 2.0
    scale: str = "log"
    low: float | None = None
    high: float | None = None
    sweep: int = 0
    stride: int = 1
    source: str = ""

    def __post_init__(self) -> None:
        if self.scale not in ("log", "one_minus"):
            raise ValueError(f"Axis scale must be 'log' or 'one_minus', got {self.scale!r}")
        if not (math.isfinite(self.factor) and self.factor > 1):
            raise ValueError(f"Axis factor must be a finite number in (1, inf), got {self.factor}")
        if self.scale == "log" and not (math.isfinite(self.center) and self.center > 0):
            raise ValueError(f"a log Axis needs a centre in (0, inf), got {self.center}")
        if self.scale == "one_minus" and not 0 <= self.center < 1:
            raise ValueError(f"a one_minus Axis needs a centre in [0, 1), got {self.center}")
        if not self.valid(0):
            raise ValueError(f"Axis centre {self.center} lies outside [{self.low}, {self.high}]")
        if not (isinstance(self.sweep, int) and self.sweep >= 0):
            raise ValueError(f"Axis sweep must be an integer in [0, inf), got {self.sweep!r}")
        if not (isinstance(self.stride, int) and self.stride >= 1):
            raise ValueError(f"Axis stride must be an integer in [1, inf), got {self.stride!r}")

    def value(self, k: int) -> float:
        if self.scale == "log":
            return self.center * self.factor**k
        return 1.0 - (1.0 - self.center) / self.factor**k

    def valid(self, k: int) -> bool:
        v = self.value(k)
        return (self.low is None or v >= self.low * (1 - 1e-12)) and (self.high is None or v <= self.high * (1 + 1e-12))

    def grid(self) -> str:
        """The grid in words, for reports."""
        step = f"x{self.factor:g}" if self.scale == "log" else f"1 - (1 - v)/{self.factor:g}"
        text = f"{step} steps from {self.center:g}"
        if self.sweep:
            text += f"; first {2 * self.sweep + 1} points {self.stride} step(s) apart"
        return text + (f", searched {self.stride} steps at a time before single steps" if self.stride > 1 else "")


@dataclass(frozen=True)
class Card:
    """A registered method: identity, sources, capabilities, and how the arena runs and tunes it.

    `search` is ordered by priority (the tuner refines earlier axes first; lr comes first and is
    the only axis swept in the first round). Keys are constructor arguments (`"lr"`), one element of
    a tuple argument (`"betas[0]"`) or an entry of a dict argument of `create_optimizer`
    (`"aux_kwargs.lr"`: the AdamW part of a Muon split). `fixed`: constructor kwargs the arena
    always adds. `needs_create_graph`: the training loop must call `backward(create_graph=True)`.

    A method that is not a `torch.optim` optimizer (a convex solver, a trainer without
    backpropagation) has `cls=None` and a `trainer(task, values, *, steps, seed)` that trains the
    workload's `task` in its own way and leaves the trained network in `task.model`; `workloads`
    names the workloads it applies to (None: all). Its `search` may be empty (nothing to tune)."""

    name: str
    cls: type | None
    paper: str
    reference: str
    search: dict[str, Axis]
    fixed: dict[str, Any] = field(default_factory=dict)
    needs_create_graph: bool = False
    trainer: Callable[..., None] | None = None
    workloads: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if (self.cls is None) == (self.trainer is None):
            raise ValueError(f"card {self.name!r}: give exactly one of cls (an optimizer) and trainer")
        if not self.search and self.trainer is not None:
            return
        swept = [k for k, a in self.search.items() if a.sweep]
        if not self.search or list(self.search)[0] != "lr" or swept not in ([], ["lr"]):
            raise ValueError(f"card {self.name!r}: search must start with 'lr', the only axis with a sweep")

    def applies_to(self, workload: str) -> bool:
        return self.workloads is None or workload in self.workloads

    @property
    def rule(self) -> Any:
        return getattr(self.cls, "rule", None)

    @property
    def matrix_only(self) -> bool:
        return bool(getattr(self.rule, "matrix_only", False))

    @property
    def fused(self) -> str:
        """What `fused=True` runs: a kernel of the rule's own (torch's fused or a C kernel, for the
        tensors it takes), else torch.compile of the rule, else the eager rule."""
        if self.trainer is not None:
            return "not an optimizer"
        if getattr(self.rule, "fused_kernel", None) is not None:
            return "own kernel"
        return "compiled rule" if getattr(self.rule, "compilable", True) else "eager rule"

    def defaults(self) -> dict[str, Any]:
        """The documented defaults of the constructor (plus the aux AdamW's for matrix rules)."""
        from .factory import AUX_DEFAULTS

        defaults: dict[str, Any] = {k: spec.default for k, spec in self.rule.hyper.items()} if self.rule else {}
        if self.matrix_only:
            defaults["aux_kwargs"] = dict(AUX_DEFAULTS)
        return defaults

    def kwargs(self, values: Mapping[str, float]) -> dict[str, Any]:
        """`create_optimizer` kwargs (or a trainer's values) for searched `values`, plus `fixed`."""
        return {**self.fixed, **axis_kwargs(values, self.defaults())}

    def describe(self) -> dict[str, Any]:
        """The card as JSON for results and reports."""
        return {
            "name": self.name,
            "class": self.cls.__name__ if self.cls is not None else f"trainer {self.trainer.__module__}."
                                                                   f"{self.trainer.__qualname__}",
            "paper": self.paper,
            "reference": self.reference,
            "capabilities": {"matrix_only": self.matrix_only, "needs_create_graph": self.needs_create_graph,
                             "fused": self.fused,
                             "state_precisions": ["param dtype", "fp32", "bf16", "8bit"] if self.cls else []},
            "search": {k: {"center": a.center, "grid": a.grid(), "source": a.source} for k, a in self.search.items()},
            "fixed": dict(self.fixed),
            "workloads": list(self.workloads) if self.workloads is not None else None,
        }  # fmt: skip


def axis_kwargs(values: Mapping[str, float], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor kwargs from axis values: `"betas[0]"` replaces one element of the default tuple
    `defaults["betas"]`; `"aux_kwargs.lr"` becomes `{"aux_kwargs": {"lr": ...}}`."""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if (match := _ELEMENT.match(key)) is not None:
            name, index = match.group(1), int(match.group(2))
            current = list(kwargs.get(name, defaults.get(name, ())))
            if index >= len(current):
                raise ValueError(f"{key}: {name} has {len(current)} elements")
            current[index] = value
            kwargs[name] = tuple(current)
        elif "." in key:
            outer, inner = key.split(".", 1)
            kwargs.setdefault(outer, {})[inner] = value
        else:
            kwargs[key] = value
    return kwargs


# --------------------------------------------------------------------- the built-in methods' axes

_SHORT = "short cosine budgets (the arena's) favour about 2x the long-run default lr"


def _lr(center: float, source: str) -> Axis:
    return Axis(center, 2.0, sweep=1, stride=2, source=source)


def _decay(center: float, source: str) -> Axis:
    return Axis(center, 4.0, source=source)


def _beta(center: float, source: str) -> Axis:
    return Axis(center, 2.0, scale="one_minus", low=0.0, high=0.999, source=source)


ADAMW_DECAY = _decay(0.1, "decoupled weight decay 0.1, the pretraining standard (Wen et al. 2025)")
ADAM_BETA1 = _beta(0.9, "Adam's default beta1 (Kingma & Ba 2015)")
SGD_SPACE = {
    "lr": _lr(0.1, "SGD with momentum 0.9: lr 0.1, the ResNet recipe (He et al. 2016), also the AdamP paper's SGD/SGDP baseline"),
    "weight_decay": _decay(1e-4, "coupled L2 1e-4, the same recipe"),
    "momentum": _beta(0.9, "heavy-ball momentum 0.9, the same recipe"),
}


def _adam_like(lr: float, lr_source: str, decay: Axis = ADAMW_DECAY, beta1: Axis = ADAM_BETA1) -> dict[str, Axis]:
    return {"lr": _lr(lr, lr_source), "weight_decay": decay, "betas[0]": beta1}


def _muon_space(source: str) -> dict[str, Axis]:
    return {
        "lr": _lr(0.02, source),
        "weight_decay": _decay(0.01, "the references default to 0; Moonlight (Liu et al. 2025) decays; 0.01 centres a x4 grid"),
        "momentum": _beta(0.95, "the reference's momentum 0.95"),
        "aux_kwargs.lr": Axis(2e-3, 2.0, source="the AdamW part: AdamW's centre"),
    }


LION_LR = _lr(7e-4, "Chen et al. 2023: lr 3-10x smaller than AdamW's; centre AdamW's / 3, the low end, as the "
                    "arena's runs are short and small (its quick suite found Lion's best near AdamW's)")
LION_DECAY = _decay(0.3, "Chen et al. 2023: decoupled decay 3-10x larger than AdamW's (centre: AdamW's x 3)")
ADAM_LR_SOURCE = f"torch.optim.AdamW's lr 1e-3; {_SHORT}"
PROJECTION_FIXED = {"rank": 8, "update_proj_gap": 50}
"""GaLore/Fira in the arena: rank 8 (the workloads' hidden matrices are 64-256 wide), a basis refresh every 50 steps."""


def builtin_trainers() -> list[Card]:
    """The built-in methods that are not optimizers (none yet: the convex method of issue 13 is next)."""
    return []


def builtin_cards() -> list[Card]:
    """One card per built-in method (imports the rules lazily: `optarena/__init__` registers them)."""
    from . import rules as r

    return [
        Card("adamw", r.AdamW, "Loshchilov & Hutter, Decoupled Weight Decay Regularization (2019)", "torch.optim.AdamW",
             _adam_like(2e-3, ADAM_LR_SOURCE)),
        Card("sgd", r.SGD, "Polyak heavy ball / Nesterov; Sutskever et al. (2013)", "torch.optim.SGD", SGD_SPACE),
        Card("lion", r.Lion, "Chen et al., Symbolic Discovery of Optimization Algorithms (2023)",
             "google/automl lion/lion_pytorch.py", {"lr": LION_LR, "weight_decay": LION_DECAY, "betas[0]": ADAM_BETA1}),
        Card("adan", r.Adan, "Xie et al., Adan: Adaptive Nesterov Momentum (2022)", "sail-sg/Adan adan.py",
             _adam_like(4e-3, "Adan's README: lr several times AdamW's (e.g. 1.5e-2 for ViT-B); centre 2x AdamW's",
                        _decay(0.02, "Adan's README: weight decay 0.02"),
                        _beta(0.98, "the code's betas[0] 0.98 (1 - the paper's beta1 0.02)"))),
        Card("diffgrad", r.DiffGrad, "Dubey et al., diffGrad (2019)", "shivram1987/diffGrad diffGrad_v2.py",
             _adam_like(2e-3, ADAM_LR_SOURCE, _decay(1e-4, "coupled L2 (added to the gradient): 1e-4, as SGD's"))),
        Card("adamp", r.AdamP, "Heo et al., AdamP (2021)", "clovaai/AdamP adamp/adamp.py",
             _adam_like(2e-3, f"AdamP's default lr 1e-3; {_SHORT}")),
        Card("sgdp", r.SGDP, "Heo et al., AdamP (2021)", "clovaai/AdamP adamp/sgdp.py", SGD_SPACE),
        Card("conda", r.Conda, "Wang et al., Conda: Column-Normalized Adam (2025)", "jie040109/Conda conda_torch/conda.py",
             _adam_like(2e-3, f"Conda's default lr 1e-3 (Adam's); {_SHORT}"), fixed={"update_proj_gap": 10}),
        Card("galore_adamw", r.GaLoreAdamW, "Zhao et al., GaLore (2024)", "jiaweizzhao/GaLore galore_torch/adamw.py",
             _adam_like(4e-3, "GaLore's README: lr 1e-2 with scale 0.25; centre 4e-3 with scale 0.25 here"), fixed={**PROJECTION_FIXED, "scale": 0.25}),
        Card("fira_adamw", r.FiraAdamW, "Chen et al., Fira (2024)", "xichen-fy/Fira optimizer_torch/fira_adamw.py",
             _adam_like(4e-3, "Fira's README: GaLore's lr 1e-2 and alpha 0.25; centre 4e-3 with alpha 0.25 here"),
             fixed={**PROJECTION_FIXED, "alpha": 0.25}),
        Card("soap", r.SOAP, "Vyas et al., SOAP (2024)", "nikhilvyas/SOAP soap.py",
             _adam_like(3e-3, "SOAP's default lr 3e-3", _decay(0.01, "SOAP's default weight decay 0.01"),
                        _beta(0.95, "SOAP's default betas (0.95, 0.95)"))),
        Card("muon", r.Muon, "Jordan et al., Muon (2024)", "KellerJordan/Muon muon.py",
             _muon_space("Muon's default lr 0.02")),
        Card("normuon", r.NorMuon, "Li et al., NorMuon (2025)", "zichongli5/NorMuon normuon.py",
             _muon_space("NorMuon's default lr 0.02")),
        Card("adamw8bit", r.AdamW8bit, "Dettmers et al., 8-bit Optimizers via Block-wise Quantization (2022)",
             "bitsandbytes AdamW8bit", _adam_like(2e-3, ADAM_LR_SOURCE)),
        Card("lion8bit", r.Lion8bit, "Dettmers et al. (2022) with Lion's rule", "bitsandbytes Lion8bit",
             {"lr": LION_LR, "weight_decay": LION_DECAY, "betas[0]": ADAM_BETA1}),
    ]  # fmt: skip
