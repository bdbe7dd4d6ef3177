"""An update rule: one method's math for one parameter tensor, with nothing about storage or dispatch."""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch

from .hyper import Hyper

Scalars = Mapping[str, Any]
"""Per-step values a rule's `update` reads: floats (lr, bias corrections, ...) and bools (switches).
The engine passes floats as Python floats on the eager path and as 0-d tensors on the fused path,
so a scheduler changing `lr` never triggers a recompilation; bools select code paths. Hence an
`update` combines tensors and scalars with operators only (`m.mul_(b).add_(g * c)`), never through
the `alpha=`/`value=` arguments or `lerp_` weights, which take Python numbers only: `engine.ops`
has helpers that call torch's fused ops for floats and fall back to arithmetic for tensors."""


class Rule:
    """Subclasses declare `hyper` and implement `init`, `scalars` and `update` as static methods.

    * `init(p, g, group)` returns the initial state tensors (any dtype; storage converts them).
    * `scalars(group, step)` turns a param group's hyperparameters and the 1-based step of this
      parameter into the flat `Scalars` the update reads (computed in Python double precision).
    * `update(p, g, state, s)` updates `p` and the working `state` tensors in place. Written with
      ordinary torch ops, it is both the eager reference and what `torch.compile` fuses.

    `fused_kernel`, when set, is a fused implementation (torch's AdamW kernel; the C kernels of
    AdamP, SGDP, diffGrad and Lion) tried first on the fused path for state kept in the
    parameter's dtype: `fused_kernel(p, g, state, s)` (`s` with Python floats) returns False,
    having changed nothing, for tensors it does not take (the compiled `update` then runs). It
    must agree with `update`.

    `second_moment_grad` rules take a fifth argument, `update(p, g, state, s, g2)`, when a
    transform splits the gradient (`CoordinateClip(second_moment="unclipped")`): `g2` feeds the
    second-moment estimate, `g` everything else. Without a split they are called with four
    arguments, so they default `g2` to `g`. Other rules refuse such transforms at construction.
    """

    hyper: ClassVar[dict[str, Hyper]] = {}
    fused_kernel: ClassVar[Any] = None
    matrix_only: ClassVar[bool] = False
    """True for rules that only update matrices (Muon): groups of this rule refuse 1-D parameters."""
    compile_options: ClassVar[dict[str, Any]] = {}
    """Extra inductor options for this rule's compiled kernel (e.g. when to materialize intermediates)."""
    second_moment_grad: ClassVar[bool] = False
    max_chunk: ClassVar[int] = 8
    """The most equal-shaped tensors one compiled call updates (chunks are powers of two up to it,
    so a key compiles at most four graphs); 1 for rules whose graph does not gain from it."""
    compilable: ClassVar[bool] = True
    """False for rules torch.compile should not trace (eigh/qr each step: SOAP): the fused path runs them eagerly."""
    nonnegative_state: ClassVar[tuple[str, ...]] = ("exp_avg_sq",)
    """State names (or name prefixes before `_`) that are never negative: 8-bit storage gives them
    the unsigned code map (second moments)."""
    exact_state: ClassVar[tuple[str, ...]] = ()
    """State names (or prefixes) that 8-bit storage keeps in float32: bases, factors, not moments."""
    optional_state: ClassVar[tuple[str, ...]] = ()
    """State names, shaped like the parameter, that a rule may keep although `init` would not make
    them under the current settings (SGD's buffer, kept while momentum is 0): checkpoints may hold them."""
    projection_kwargs: ClassVar[tuple[str, ...]] = ()
    """Per-matrix projection settings (GaLore's `rank`, ...): `create_optimizer` sets them on the
    hidden matrices' groups only, so the other parameters take the rule's plain update."""

    @staticmethod
    def init(p: torch.Tensor, g: torch.Tensor, group: dict) -> dict[str, torch.Tensor]:
        return {}

    @staticmethod
    def check_group(group: dict) -> None:
        """Checks across a group's hyperparameters (each one alone is checked by its `Hyper`);
        raises ValueError naming them."""

    @staticmethod
    def needed_state(group: dict) -> tuple[str, ...] | None:
        """State names the current group settings need, for rules whose state depends on them
        (SGD's buffer exists only while momentum is non-zero): names missing from an existing
        state are created by `init` before the step. None (the default): never check."""
        return None

    @staticmethod
    def scalars(group: dict, step: int) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def update(p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor], s: Scalars) -> None:
        raise NotImplementedError
