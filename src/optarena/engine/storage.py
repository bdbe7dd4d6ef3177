"""State storage: the one place where optimizer state is allocated, read and written back.

Rules never see how state is stored. At a parameter's first step the engine hands each initial
state tensor to `encode`, which returns the entries to keep in the optimizer's state; on every
step `read` gives the working tensors (which the rule updates in place) and `write` persists
them. A storage that keeps state in the working precision returns the stored tensors themselves
from `read`, so `write` costs nothing; a compressed storage decodes on read and re-encodes on
write.

Precisions:
* `None`: each parameter's dtype (as torch.optim); `"fp32"`; `"bf16"` (rounded to nearest on write).
* `"8bit"`: block-wise dynamic quantization with bitsandbytes' layout (`engine.quantize`): a state
  `name` is kept as `name` (uint8 codes, the working tensor's shape) plus `name.absmax` (one
  float32 scale per block of 256 values over the flattened tensor), both in `state_dict`. Rules
  declare which states are non-negative (`Rule.nonnegative_state`: the unsigned code map, for
  second moments) and which must stay exact (`Rule.exact_state`: projection bases, Shampoo
  factors). Tensors under `min_8bit_size` elements (4096, as bitsandbytes) stay in float32, so
  does exact state, whatever the parameter's dtype (float64 parameters included: 8-bit state is
  decoded to and updated in float32). With `fused=True` the 8-bit path runs eagerly. On CPU the
  codec runs in C (`engine/native.py`, bit-exact with the torch ops of `engine/quantize.py`, which
  run where no C compiler is found), decoding into a reused buffer.
"""
from __future__ import annotations

from typing import Any

import torch

from .quantize import blocks, dequantize_blockwise, dynamic_map, quantize_blockwise, rounding_table

PRECISIONS = (None, "fp32", "bf16", "8bit")
MIN_8BIT_SIZE = 4096
SCALE_SUFFIX = ".absmax"


HALF = (torch.float16, torch.bfloat16)


def working_dtype(stored: torch.dtype, param: torch.dtype) -> torch.dtype:
    """The dtype a rule computes in: the wider of the stored and the parameter dtype, and float32
    for half precision ("opmath", as torch's kernels): a bf16/fp16 update is computed in float32
    and rounded once when it is written back, so eps and small second moments do not underflow."""
    dtype = torch.promote_types(stored, param)
    return torch.float32 if dtype in HALF else dtype


def _named(names: tuple[str, ...], key: str) -> bool:
    return any(key == n or key.startswith(n + "_") for n in names)


class StateStorage:
    """Keeps each state tensor in one form (`None`: the parameter's own dtype, as torch.optim does).

    The working dtype is the wider of the stored and the parameter dtype, and float32 for half
    precision (`working_dtype`): bf16 state is updated in fp32 and rounded once on write; 8-bit
    state is decoded to float32 and re-quantized.
    """

    def __init__(self, precision: str | None = None, min_8bit_size: int = MIN_8BIT_SIZE):
        if precision not in PRECISIONS:
            raise ValueError(f"state_precision must be one of {PRECISIONS}, got {precision!r}")
        if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, int) or min_8bit_size < 0:
            raise ValueError(f"min_8bit_size must be an integer in [0, inf), got {min_8bit_size!r}")
        self.precision = precision
        self.min_8bit_size = min_8bit_size
        self.dtype = {None: None, "fp32": torch.float32, "bf16": torch.bfloat16, "8bit": torch.float32}[precision]
        self._maps: dict[tuple[bool, torch.device], torch.Tensor] = {}
        self._buffers: dict[tuple[int, torch.device], torch.Tensor] = {}
        if precision == "8bit":  # built now, so that a compiled first step reads them instead of tracing their making
            for signed in (True, False):
                self._map(signed, torch.device("cpu"))
                rounding_table(signed)

    # -- what is quantized ------------------------------------------------------------------------
    def quantizes(self, key: str, value: torch.Tensor, rule: Any) -> bool:
        return (
            self.precision == "8bit"
            and value.is_floating_point()
            and value.numel() >= max(1, self.min_8bit_size)
            and not _named(getattr(rule, "exact_state", ()), key)
        )

    def _scratch(self, slot: int, numel: int, device: torch.device) -> torch.Tensor:
        """A reused float32 buffer for the decoded state (one per state slot, grown to the largest
        tensor): the working copy lives only from `read` to `write` of one tensor, and reusing its
        memory spares the page faults of a fresh large allocation every step."""
        buffer = self._buffers.get((slot, device))
        if buffer is None or buffer.numel() < numel:
            buffer = torch.empty(numel, dtype=torch.float32, device=device)
            self._buffers[(slot, device)] = buffer
        return buffer[:numel]

    @staticmethod
    def signed(key: str, rule: Any) -> bool:
        """Whether state `key` takes the signed code map (not a second moment)."""
        return not _named(getattr(rule, "nonnegative_state", ()), key)

    def code(self, key: str, rule: Any, device: torch.device) -> torch.Tensor:
        return self._map(self.signed(key, rule), device)

    def _map(self, signed: bool, device: torch.device) -> torch.Tensor:
        if (signed, device) not in self._maps:
            self._maps[(signed, device)] = dynamic_map(signed, device)
        return self._maps[(signed, device)]

    # -- the three operations ---------------------------------------------------------------------
    def encode(self, key: str, value: torch.Tensor, param: torch.Tensor, rule: Any = None) -> dict[str, torch.Tensor]:
        """The state entries holding a freshly initialized state tensor `key`."""
        if not value.is_floating_point():
            return {key: value}
        if self.quantizes(key, value, rule):
            codes, absmax = quantize_blockwise(value, self.code(key, rule, value.device), signed=self.signed(key, rule))
            return {key: codes.view(value.shape), key + SCALE_SUFFIX: absmax}
        dtype = self.dtype or param.dtype
        return {key: value.to(dtype=dtype, memory_format=torch.preserve_format)}

    def read(self, stored: dict[str, torch.Tensor], param: torch.Tensor, rule: Any = None) -> dict[str, torch.Tensor]:
        """The working tensors, by the rule's state names, that the rule updates in place."""
        work = {}
        for key, value in stored.items():
            if key.endswith(SCALE_SUFFIX):
                continue
            scale = stored.get(key + SCALE_SUFFIX)
            if scale is not None:
                buffer = self._scratch(len(work), value.numel(), value.device)
                work[key] = dequantize_blockwise(value, scale, self.code(key, rule, value.device), out=buffer).view(value.shape)
            elif not value.is_floating_point():
                work[key] = value
            else:
                # 8-bit storage works in float32 (its codes decode to float32): so does the state
                # it keeps exact, whatever the parameter's dtype, or the two would meet in one product.
                dtype = working_dtype(value.dtype, torch.float32 if self.precision == "8bit" else param.dtype)
                work[key] = value if value.dtype == dtype else value.to(dtype)
        return work

    def write(self, stored: dict[str, torch.Tensor], work: dict[str, torch.Tensor], rule: Any = None) -> None:
        """Persist the updated working tensors (re-quantizing 8-bit state)."""
        for key, value in work.items():
            target = stored[key]
            scale = stored.get(key + SCALE_SUFFIX)
            if scale is not None:
                codes, absmax = quantize_blockwise(
                    value, self.code(key, rule, value.device), out=(target, scale), signed=self.signed(key, rule)
                )
                if not (target.is_contiguous() and scale.is_contiguous()):  # not written in place
                    target.copy_(codes.view(target.shape))
                    scale.copy_(absmax)
            elif value is not target:
                target.copy_(value)

    def kernel_ready(self, stored: dict[str, torch.Tensor], param: torch.Tensor) -> bool:
        """Whether a rule's fused kernel may update the stored tensors directly: no 8-bit codes and
        every float state at least as wide as the parameter (the kernels compute half precision in
        float32 themselves, as `read` does; they check dtypes and layouts on their own)."""
        return all(
            not v.is_floating_point() or torch.promote_types(v.dtype, param.dtype) == v.dtype
            for k, v in stored.items()
        ) and not any(k.endswith(SCALE_SUFFIX) for k in stored)

    def layout(self, key: str, value: torch.Tensor, param: torch.Tensor, rule: Any = None) -> dict[str, tuple]:
        """`(shape, dtype)` of each entry `encode` makes for a state tensor shaped like `value` (which
        may live on the meta device): what `load_state_dict` checks a checkpoint against."""
        if not value.is_floating_point():
            return {key: (tuple(value.shape), value.dtype)}
        if self.quantizes(key, value, rule):
            scales = (blocks(value.numel()),)
            return {key: (tuple(value.shape), torch.uint8), key + SCALE_SUFFIX: (scales, torch.float32)}
        return {key: (tuple(value.shape), self.dtype or param.dtype)}

    def __repr__(self) -> str:
        return f"StateStorage({self.precision!r})"
