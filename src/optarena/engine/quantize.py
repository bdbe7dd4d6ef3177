"""Block-wise dynamic 8-bit quantization (Dettmers et al., "8-bit Optimizers via Block-wise
Quantization", 2022), with bitsandbytes' code maps and block layout.

The dynamic code map spends its 8 bits as sign (signed maps only), a decimal exponent written as
the position of the first set bit, and a linear fraction in the remaining bits: level `i` of
`levels = 7` covers magnitudes `10**(i - 6) * [0.1, 1]` with `2**i` (signed) or `2**(i + 1)`
(unsigned) evenly spaced codes, the midpoints of a linspace over [0.1, 1]. With 0 and 1 that is
exactly 256 sorted codes; tiny magnitudes get fine codes, large ones coarse codes, which suits
optimizer moments that span many orders of magnitude.

A tensor is flattened and cut into blocks of `block` values (the last one zero-padded); each
block is divided by its absolute maximum (its scale) and every value stored as the index of
the nearest code. Decoding multiplies the code by the block's scale.
"""
from __future__ import annotations

import functools
import sys

import torch

BLOCK = 256
LEVELS = 7
_HIGH_HALF = 1 if sys.byteorder == "little" else 0


@functools.lru_cache(maxsize=None)
def _dynamic_map(signed: bool) -> tuple[float, ...]:
    values = [0.0, 1.0]
    for i in range(LEVELS):
        items = 2**i if signed else 2 ** (i + 1)
        edges = torch.linspace(0.1, 1.0, items + 1, dtype=torch.float32)
        means = (edges[:-1] + edges[1:]) / 2.0
        scale = 10.0 ** (i - (LEVELS - 1))
        values += (scale * means).tolist()  # float32 products, as the reference rounds them
        if signed:
            values += (-scale * means).tolist()
    assert len(values) == 256
    return tuple(sorted(values))


def dynamic_map(signed: bool = True, device: torch.device | str | None = None) -> torch.Tensor:
    """The 256 sorted float32 codes: signed for first moments, unsigned (>= 0) for second moments."""
    return torch.tensor(_dynamic_map(bool(signed)), dtype=torch.float32, device=device)


def midpoints(code: torch.Tensor) -> torch.Tensor:
    """The 255 decision boundaries of nearest rounding to `code` (sorted)."""
    return (code[:-1] + code[1:]) / 2


_TABLES: dict[tuple[bool, torch.device], tuple[torch.Tensor, torch.Tensor]] = {}


def rounding_table(signed: bool, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """`_rounding_table`, built once per (map, device) and kept in a plain dict: a compiled step
    (torch.compile ignores `lru_cache`) then reads the built tables instead of tracing their
    construction, provided they were built before (`StateStorage` builds the CPU ones)."""
    key = (bool(signed), torch.device(device))
    if key not in _TABLES:
        _TABLES[key] = _rounding_table(*key)
    return _TABLES[key]


def _rounding_table(signed: bool, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest rounding as two lookups keyed by a float32's top 16 bits (sign, exponent, 7 bits
    of mantissa). Such a key spans a relative width of 2**-7, narrower than any gap between
    adjacent codes, so its range holds at most one midpoint: the code is `low[key]`, plus one
    when the value lies above `midpoint[key]` (+inf where the range holds none). Exactly
    `torch.bucketize(value, midpoints(code))`, in a fraction of its time."""
    code = dynamic_map(signed)
    mids = midpoints(code)
    keys = torch.arange(65536, dtype=torch.int32)
    ends = torch.stack([(keys << 16).view(torch.float32), ((keys << 16) | 0xFFFF).view(torch.float32)])
    ends = torch.nan_to_num(ends, nan=0.0, posinf=0.0, neginf=0.0)  # keys of inf/NaN never occur in finite state
    low_end, high_end = ends.amin(0), ends.amax(0)
    low, high = torch.bucketize(low_end, mids), torch.bucketize(high_end, mids)
    if int((high - low).max()) > 1:
        raise AssertionError("a rounding-table key spans two midpoints")
    above = torch.where(high > low, mids[low.clamp(max=mids.numel() - 1)], torch.full_like(low_end, float("inf")))
    return low.to(torch.uint8).to(device), above.to(device)


def _nearest(scaled: torch.Tensor, signed: bool) -> torch.Tensor:
    low, above = rounding_table(signed, scaled.device)
    # the float's top 16 bits: the high half of each float32, read as uint16
    key = scaled.view(torch.uint16).view(*scaled.shape, 2)[..., _HIGH_HALF].to(torch.int32).reshape(-1)
    out = low.index_select(0, key).view(scaled.shape)
    return out.add_(scaled > above.index_select(0, key).view(scaled.shape))


def blocks(numel: int, block: int = BLOCK) -> int:
    return -(-numel // block)


def _split(flat: torch.Tensor, block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole blocks as a (n, block) view, and the partial last block (possibly empty)."""
    whole = flat.numel() // block * block
    return flat[:whole].view(-1, block), flat[whole:]


@functools.lru_cache(maxsize=None)
def _packed_table(signed: bool) -> torch.Tensor:
    """The rounding table as one int32 per key for the C codec: `low << 16 | threshold`, where a
    value of that key lies above the key's midpoint exactly when its low 16 bits (flipped for
    negative floats, which order the other way) exceed `threshold` (0xFFFF: no midpoint)."""
    low, above = rounding_table(signed)
    keys = torch.arange(65536, dtype=torch.int32)
    has = torch.isfinite(above)
    mid_bits = torch.where(has, above, torch.zeros_like(above)).view(torch.int32)
    if not bool(((mid_bits >> 16) & 0xFFFF).eq(keys).logical_or(~has).all()):
        raise AssertionError("a midpoint outside its key's range")
    flip = torch.where(keys >= 0x8000, 0xFFFF, 0)
    threshold = torch.where(has, (mid_bits & 0xFFFF) ^ flip, torch.full_like(keys, 0xFFFF))
    return ((low.to(torch.int32) << 16) | threshold).to(torch.int32).contiguous()


def _native(tensor: torch.Tensor, block: int, native: bool | None):
    """The C codec when it applies (CPU, bitsandbytes' block size) and is not turned off."""
    if native is False or block != BLOCK or tensor.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    from . import native as library

    return library.load()


def quantize_blockwise(x: torch.Tensor, code: torch.Tensor, block: int = BLOCK, native: bool | None = None,
                       out: tuple[torch.Tensor, torch.Tensor] | None = None,
                       signed: bool | None = None) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """`(codes, absmax)`: uint8 codes of `x` flattened (`numel` of them) and the float32 absmax of
    each block of `block` values (the last block partial). `code` must be one of the two dynamic
    maps (its sign picks the rounding table). A block of zeros gets absmax 0 and code 0's value.
    On CPU the C codec (`native.py`) computes the same codes; `native=False` forces torch ops.
    `out=(codes, absmax)`: contiguous tensors to write into (nothing else is then allocated for them).
    `signed`: which map `code` is, when the caller knows (reading it from `code` syncs with the device)."""
    signed = bool(code[0] < 0) if signed is None else signed
    flat = x.detach().reshape(-1).float()
    lib = _native(flat, block, native)
    if out is not None and out[0].is_contiguous() and out[1].is_contiguous():
        codes, absmax = out[0].view(-1), out[1]
    else:
        codes = torch.empty(flat.numel(), dtype=torch.uint8, device=x.device)
        absmax = torch.empty(blocks(flat.numel(), block), dtype=torch.float32, device=x.device)
    if lib is not None:
        flat = flat.contiguous()
        lib.optarena_encode(flat.data_ptr(), codes.data_ptr(), absmax.data_ptr(), _packed_table(signed).data_ptr(),
                            flat.numel(), torch.get_num_threads())  # fmt: skip
        return codes, absmax
    grid, tail = _split(flat, block)
    for part, scale, dest in ((grid, absmax[: grid.shape[0]], codes[: grid.numel()]),
                              (tail.view(1, -1), absmax[grid.shape[0]:], codes[grid.numel():])):  # fmt: skip
        if part.numel() == 0:
            continue
        torch.amax(part.abs(), dim=1, out=scale)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale)).unsqueeze(1)
        dest.copy_(_nearest(part / safe, signed).view(-1))
    return codes, absmax


def dequantize_blockwise(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, numel: int | None = None,
                         block: int = BLOCK, native: bool | None = None,
                         out: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """The float32 values of flat `codes` (the first `numel` of them; whole blocks or not), written
    into `out` (flat, contiguous float32) when given and the C codec runs."""
    flat = codes.reshape(-1)
    if numel is not None:
        flat = flat[:numel]
    lib = _native(flat, block, native)
    if lib is not None:
        flat, absmax, code = flat.contiguous(), absmax.contiguous().float(), code.contiguous().float()
        if out is None or out.numel() != flat.numel() or not out.is_contiguous() or out.dtype != torch.float32:
            out = torch.empty(flat.numel(), dtype=torch.float32)
        lib.optarena_decode(flat.data_ptr(), absmax.data_ptr(), code.data_ptr(), out.data_ptr(), flat.numel(),
                            torch.get_num_threads())  # fmt: skip
        return out
    values = code.to(codes.device).index_select(0, flat.to(torch.int32))
    grid, tail = _split(values, block)
    grid.mul_(absmax[: grid.shape[0]].unsqueeze(1))
    if tail.numel():
        tail.mul_(absmax[grid.shape[0]])
    return values
