"""Numbers and values as the report prints them: significant digits without trailing zeros or
needless exponents, "—" for anything missing."""
from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

from ..io import finite_or_none
from ..resultsfile import Speedup

MISSING = "—"
NOISE_MARK = "≈"
UNDER_TUNED = "may be under-tuned"


def _compact_exp(s: str) -> str:
    """'1.23e-05' -> '1.23e-5', '4e+06' -> '4e6'."""
    m = re.fullmatch(r"(-?[\d.]+)e([+-])0*(\d+)", s)
    if not m:
        return s
    mant, sign, exp = m.groups()
    return f"{mant}e{'-' if sign == '-' else ''}{exp}"


def fmt_num(x: Any, sig: int = 4) -> str:
    """A number with `sig` significant digits, without trailing zeros or needless exponents."""
    if x is None or isinstance(x, bool):
        return MISSING if x is None else str(x)
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    if v == 0:
        return "0"
    if abs(v) >= 10**sig:
        return f"{v:.0f}"
    return _compact_exp(f"{v:.{sig}g}")


def fmt_value(v: Any, sig: int = 3) -> str:
    """A hyperparameter value: numbers with `sig` digits, sequences in parentheses."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return str(v)
    if isinstance(v, int):
        return str(v) if abs(v) < 10**6 else fmt_num(v, sig)
    if isinstance(v, float):
        return fmt_num(v, sig)
    if isinstance(v, (list, tuple)):
        return "(" + ", ".join(fmt_value(u, sig) for u in v) + ")"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={fmt_value(u, sig)}" for k, u in v.items()) + "}"
    return str(v)


def fmt_params(params: dict[str, Any]) -> str:
    """`k=v, ...` or "—" for no parameters."""
    return ", ".join(f"{k}={fmt_value(v)}" for k, v in params.items()) if params else MISSING


def fmt_steps(x: Any) -> str:
    """A step count: an integer where it is one."""
    v = finite_or_none(x)
    if v is None:
        return MISSING
    return str(int(round(v))) if abs(v - round(v)) < 1e-9 else fmt_num(v, 4)


def fmt_date(created: str | None) -> str:
    """An ISO timestamp as 'YYYY-MM-DD HH:MM UTC'."""
    if not created:
        return MISSING
    try:
        d = datetime.fromisoformat(created.replace("Z", "+00:00"))
    except ValueError:
        return created
    offset = d.utcoffset()
    if offset is None:
        return d.strftime("%Y-%m-%d %H:%M")
    return d.strftime("%Y-%m-%d %H:%M") + (" UTC" if not offset else d.strftime(" UTC%z"))


def fmt_speedup(s: Speedup) -> str:
    """'1.5x', '>max' (beyond what AdamW's fit reaches) or 'n/a'."""
    if s.value is not None:
        return f"{fmt_num(s.value, 3)}x"
    return ">max" if s.beyond else "n/a"
