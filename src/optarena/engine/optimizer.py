"""The `torch.optim.Optimizer` that runs a recipe: gradient transforms, then a rule, on state kept by a storage."""
from __future__ import annotations

import inspect
from typing import Any, ClassVar, Iterable, Sequence

import torch

from .checkpoint import check_loadable
from .hyper import Hyper, resolve
from .kernels import StepScalars, apply_eager, apply_fused, apply_traced
from .rule import Rule
from .storage import MIN_8BIT_SIZE, StateStorage
from .transforms import GradientTransform, SplitGradients

NONFINITE_POLICIES = ("raise", "skip", "propagate")
# Keys torch or its schedulers put into param groups besides hyperparameters (and the group's rule).
GROUP_METADATA = ("params", "name", "param_names", "initial_lr", "rule")


NONFINITE_MESSAGE = "a gradient holds inf or NaN; nothing was changed (pass nonfinite='skip' to skip such steps)"


class NonFiniteGradientError(FloatingPointError):
    """Raised by `step` under `nonfinite="raise"` when a gradient holds inf or NaN."""


def all_finite(grads: Sequence[torch.Tensor]) -> bool:
    """Whether every gradient is finite, for about one read of each.

    Each gradient is summed in its own precision (an inf or NaN makes the sum non-finite); only a
    gradient whose sum overflowed is then checked element by element, so huge finite gradients
    raise no false alarm.
    """
    if not grads:
        return True
    device = grads[0].device  # parameters may live on several devices: gather the sums on one
    sums = torch.stack([g.sum(dtype=torch.float32 if g.dtype != torch.float64 else None).to(device) for g in grads])
    if bool(torch.isfinite(sums).all()):
        return True
    suspects = (~torch.isfinite(sums)).nonzero().flatten().tolist()
    return all(bool(torch.isfinite(grads[i]).all()) for i in suspects)


def finite_flag(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor: every gradient is finite. No host sync (for compiled steps)."""
    if not grads:
        return torch.ones((), dtype=torch.bool)
    device = grads[0].device
    return torch.stack([torch.isfinite(g).all().to(device) for g in grads]).all()


class Optimizer(torch.optim.Optimizer):
    """An optimizer assembled from parts; subclasses name their `rule` (and may add transforms).

    Engine options, shared by every method:

    * `transforms`: `GradientTransform`s applied, in order, to all gradients before the rule
      (e.g. `GlobalNormClip`, `CoordinateClip`, `GradientNoise`; see `engine/transforms.py`), and
      those that act on updates (`UpdateClip`), in order, to each step's parameter changes after it.
    * `nonfinite`: what `step` does when a gradient holds inf/NaN. `"raise"` (default) raises
      `NonFiniteGradientError` before anything is changed; `"skip"` leaves parameters and state
      untouched and counts the skipped step (`optimizer.skipped_steps`, saved in `state_dict`);
      `"propagate"` does not check (torch.optim's behaviour, saves one read of the gradients).
    * `fused`: `False` (default) runs the eager reference path; `True` runs one fused kernel per
      tensor (torch's own where it has one, else `torch.compile`d from the same rule).
    * `state_precision`: `None` keeps state in each parameter's dtype (as torch.optim does);
      `"fp32"` or `"bf16"` store it in that dtype; `"8bit"` quantizes it block-wise (bitsandbytes'
      dynamic code maps, blocks of 256; tensors under `min_8bit_size` elements, default 4096, stay
      in float32). See `engine/storage.py`.
    """

    rule: ClassVar[type[Rule]]
    optimizer_wide: ClassVar[dict[str, Hyper]] = {}
    """Hyperparameters of the whole optimizer, not of a group (e.g. Adan's `max_grad_norm`)."""

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
        *,
        transforms: Sequence[GradientTransform] = (),
        nonfinite: str = "raise",
        fused: bool = False,
        state_precision: str | None = None,
        min_8bit_size: int = MIN_8BIT_SIZE,
        **hyperparameters: Any,
    ):
        name = type(self).__name__
        if isinstance(params, (set, frozenset)):
            raise TypeError("params must be an ordered collection (a set's order changes between runs); use a list")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        if not isinstance(fused, bool):
            raise ValueError(f"fused must be True or False, got {fused!r}")
        if isinstance(transforms, (GradientTransform, str)) or not hasattr(transforms, "__iter__"):
            raise ValueError(f"transforms must be a list of GradientTransform instances, got {transforms!r}")
        transforms = list(transforms)
        for t in transforms:
            if not isinstance(t, GradientTransform):
                raise ValueError(f"transforms must be GradientTransform instances, got {t!r}")
        specs = {**self.rule.hyper, **self.optimizer_wide}
        given = resolve(specs, hyperparameters, name)
        wide = {k: given.pop(k, spec.default) for k, spec in self.optimizer_wide.items()}
        defaults = {k: spec.default for k, spec in self.rule.hyper.items()} | given
        self.nonfinite = nonfinite
        self.fused = fused
        self.storage = StateStorage(state_precision, min_8bit_size)
        self.transforms = transforms + self.builtin_transforms(**wide, **defaults)
        splitting = [t for t in self.transforms if t.splits_second_moment]
        if splitting and not self.rule.second_moment_grad:
            raise ValueError(
                f"{splitting[0]!r}: second_moment gives the rule's second-moment estimate its own gradient, "
                f"but {name} has no second moment that accepts one (AdamW, DiffGrad and AdamP do)"
            )
        if len(splitting) > 1:
            raise ValueError(f"at most one transform may set second_moment, got {splitting!r}")
        self.skipped_steps = 0
        self._transform_states = [t.init() for t in self.transforms]
        super().__init__(params, defaults)

    def builtin_transforms(self, **hyperparameters: Any) -> list[GradientTransform]:
        """Transforms the method itself prescribes, appended after the user's (none by default)."""
        return []

    # -- param groups -----------------------------------------------------------------------------
    def rule_of(self, group: dict[str, Any]) -> type[Rule]:
        """The rule that updates `group`: the optimizer's own, or the method named by `group["rule"]`
        (a registry name, e.g. `"adamw"` for the embeddings and gains beside Muon's matrices)."""
        name = group.get("rule")
        return self.rule if name is None else rule_named(name)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param group must be a dict, got {type(param_group).__name__}")
        rule = self.rule_of(param_group)
        hyper = {k: v for k, v in param_group.items() if k not in GROUP_METADATA}
        checked = resolve(rule.hyper, hyper, f"{type(self).__name__} param group ({rule.__name__})")
        params = param_group["params"]
        if isinstance(params, set):
            raise TypeError("params must be an ordered collection (a set's order changes between runs); use a list")
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        for p in params:
            if isinstance(p, torch.Tensor) and not p.is_floating_point():
                raise TypeError(f"{type(self).__name__} can only optimize floating-point tensors, got {p.dtype}")
            if isinstance(p, torch.Tensor) and rule.matrix_only and p.dim() < 2:
                raise ValueError(
                    f"{rule.__name__} updates matrices only, got a parameter of shape {tuple(p.shape)}: build the "
                    f"optimizer with optarena.create_optimizer(model, ...), which gives 1-D parameters, embeddings "
                    f"and the output head to AdamW, or put such parameters in a group with rule='adamw'"
                )
        group = {**param_group, **checked, "params": params}
        # torch fills missing keys from self.defaults: for a group of another rule, that rule's defaults.
        saved = self.defaults
        if rule is not self.rule:
            self.defaults = {k: spec.default for k, spec in rule.hyper.items()}
        try:
            super().add_param_group(group)
        finally:
            self.defaults = saved
        try:
            rule.check_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    # -- the step ---------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params, grads = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise TypeError(f"{type(self).__name__} does not support sparse gradients; use a dense gradient")
                params.append(p)
                grads.append(p.grad)
        compiling = torch.compiler.is_compiling()  # inside a user's torch.compile'd training step
        only_if = None
        if compiling and self.nonfinite == "raise":
            # No host sync in a graph: the updates land only where every gradient is finite, and the
            # graph raises (a RuntimeError with this message: graphs raise nothing else).
            only_if = finite_flag(grads)
            torch._assert_async(only_if, NONFINITE_MESSAGE)
        elif self.nonfinite != "propagate" and not all_finite(grads):  # skip: a graph break when compiled
            if self.nonfinite == "raise":
                raise NonFiniteGradientError(NONFINITE_MESSAGE)
            self.skipped_steps += 1
            return loss
        staged = list(zip(self.transforms, self._transform_states))
        after = [(t, st) for t, st in staged if t.acts_on == "updates"]
        before = [p.detach().clone() for p in params] if after else None
        second: dict[int, torch.Tensor] = {}
        for transform, tstate in staged:
            if transform.acts_on == "updates":
                continue
            grads = transform.update(grads, params, tstate)
            if isinstance(grads, SplitGradients):
                second = dict(zip(map(id, params), grads.second_moment))
                grads = grads.grads
        new_grad = dict(zip(map(id, params), grads))
        for group in self.param_groups:
            rule = self.rule_of(group)
            scalars: dict[int, StepScalars] = {}
            items = []
            for p in group["params"]:
                g = new_grad.get(id(p))
                if g is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    for key, value in rule.init(p, g, group).items():
                        state.update(self.storage.encode(key, value, p, rule))
                elif (needed := rule.needed_state(group)) and not all(k in state for k in needed):
                    fresh = rule.init(p, g, group)
                    for key in needed:
                        if key not in state:
                            state.update(self.storage.encode(key, fresh[key], p, rule))
                state["step"] += 1
                stored = {k: v for k, v in state.items() if k != "step"}
                step = state["step"]
                if compiling:  # a dict keyed by the step would specialize it: a recompilation every step
                    step_scalars = rule.scalars(group, step)
                elif (step_scalars := scalars.get(step)) is None:  # once per group and step, shared by its tensors
                    step_scalars = scalars[step] = StepScalars(rule.scalars(group, step))
                g2 = second.get(id(p)) if rule.second_moment_grad else None
                items.append((p, g, stored, step_scalars, g2))
            if compiling:
                apply_traced(rule, self.storage, items, only_if)
            elif self.fused:
                apply_fused(rule, self.storage, items)
            else:
                for item in items:
                    apply_eager(rule, self.storage, *item)
        if after:
            self._transform_updates(params, before, after)
        return loss

    @staticmethod
    def _transform_updates(params, before, after) -> None:
        """Run the `acts_on="updates"` transforms on this step's changes and apply what they return."""
        updates = [p.detach() - b for p, b in zip(params, before)]
        for transform, tstate in after:
            new = transform.update(updates, params, tstate)
            if new is not updates:
                for p, b, u in zip(params, before, new):
                    p.detach().copy_(b + u)
                updates = new

    # -- checkpoints ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        # A copy: transform states change as training goes on (counters, generator states).
        sd["engine"] = {
            "skipped_steps": self.skipped_steps,
            "transforms": _clone(self._transform_states),
            "state_precision": self.storage.precision,
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a `state_dict`, after checking it against this optimizer's parameters (group and
        parameter counts, each state's names, shapes and dtypes; `engine.checkpoint`): a mismatch
        raises ValueError naming the parameter, and nothing is changed."""
        state_dict = dict(state_dict)
        engine = state_dict.pop("engine", None)
        if engine is not None:
            saved = engine.get("state_precision", self.storage.precision)
            if saved != self.storage.precision:
                raise ValueError(
                    f"state_dict holds state stored with state_precision={saved!r}, this optimizer has "
                    f"state_precision={self.storage.precision!r}: create it with state_precision={saved!r} to resume"
                )
            if len(engine["transforms"]) != len(self.transforms):
                raise ValueError(
                    f"state_dict holds {len(engine['transforms'])} transform states, "
                    f"this optimizer has {len(self.transforms)} transforms"
                )
        loaded = check_loadable(self, state_dict)
        if engine is not None:
            self.skipped_steps = engine["skipped_steps"]
            self._transform_states = [_clone(s) for s in engine["transforms"]]
        super().load_state_dict(state_dict)
        # A checkpoint from before a hyperparameter existed resumes with that hyperparameter's default.
        for group in self.param_groups:
            for key, spec in self.rule_of(group).hyper.items():
                group.setdefault(key, spec.default)
        # torch casts loaded state to each parameter's dtype and may share the given buffers.
        # Here the storage decides dtypes, so the state is taken again: copied, moved to the
        # parameter's device, dtype kept (this is what keeps resumed runs bit-identical).
        for p, state in loaded.values():
            self.state[p] = _clone(state, p.device)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "rule" in cls.__dict__:
            cls.__signature__ = _signature(cls)


def rule_named(name: Any) -> type[Rule]:
    """The rule of the method registered as `name`; unknown names list the registered ones."""
    from ..registry import get  # the registry holds the optimizer classes, which import this module

    if not isinstance(name, str):
        raise ValueError(f"rule must be a registered optimizer name such as 'adamw', got {name!r}")
    rule = getattr(get(name), "rule", None)
    if rule is None:
        raise ValueError(f"rule {name!r} is not an optarena method (it has no update rule)")
    return rule


def _clone(obj, device=None):
    """A deep copy of nested state; tensors keep their dtype and move to `device` if given."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device=device or obj.device, copy=True)
    if isinstance(obj, dict):
        return {k: _clone(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone(v, device) for v in obj)
    return obj


def _signature(cls: type[Optimizer]) -> inspect.Signature:
    """`help(AdamW)` shows the real keyword arguments and their defaults."""
    P = inspect.Parameter
    base = inspect.signature(Optimizer.__init__)
    fixed = [p for n, p in base.parameters.items() if n not in ("self", "hyperparameters")]
    hyper = [P(n, P.KEYWORD_ONLY, default=h.default) for n, h in {**cls.rule.hyper, **cls.optimizer_wide}.items()]
    return base.replace(parameters=fixed[:1] + hyper + fixed[1:])
