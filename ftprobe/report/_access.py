"""Read a :class:`~ftprobe.core.results.Result` into what figures, grids and tables need (no drawing here)."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

from ftprobe.core.results import Result, Value

__all__ = ["as_float_array", "fmt", "k_keys", "layer_label", "layer_order", "model_values", "no_mathtext", "pair_label",
           "pair_values", "slug"]

F = TypeVar("F", bound=Callable[..., Any])


def no_mathtext(fn: F) -> F:
    """Run ``fn`` with matplotlib's mathtext off: names from the user's data (``$x$``) are drawn as typed."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context({"text.parse_math": False}):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def layer_order(result: Result) -> list[str]:
    """Canonical layer names in the order they were selected, then any other layer a value names (not ``"*"``)."""
    names = [rec["name"] for rec in result.layers if "model" not in rec]  # a tuned model's own layers: no values
    for v in result.values:
        if v.layer != "*" and v.layer not in names:
            names.append(v.layer)
    return names


def layer_label(result: Result, name: str) -> str:
    """The name the user typed when it was an alias (``mixed4d``), else the module name."""
    for rec in result.layers:
        if rec["name"] == name:
            return str(rec["spec"]) if rec.get("alias") else name
    return name


def pair_label(base: str | None, tuned: str | None) -> str:
    return f"{base} → {tuned}"


def pair_values(result: Result, metric: str) -> dict[tuple[str, str], dict[str, Value]]:
    """Pair-scoped values of one metric: ``{(base, tuned): {layer: Value}}`` in the result's pair order."""
    out: dict[tuple[str, str], dict[str, Value]] = {}
    for p in result.pairs:
        out[(p[0], p[1])] = {}
    for v in result.values:
        if v.metric == metric and v.scope == "pair":
            out.setdefault((str(v.base), str(v.tuned)), {})[v.layer] = v
    return {k: d for k, d in out.items() if d}


def model_values(result: Result, metric: str) -> dict[str, dict[str, Value]]:
    """Model-scoped values of one metric: ``{model: {layer: Value}}`` in model order."""
    out: dict[str, dict[str, Value]] = {str(m.get("label")): {} for m in result.models}
    for v in result.values:
        if v.metric == metric and v.scope == "model":
            out.setdefault(str(v.model), {})[v.layer] = v
    return {k: d for k, d in out.items() if d}


def k_keys(values: Iterator[Value] | list[Value], prefix: str) -> list[str]:
    """The k suffixes of array keys ``f"{prefix}@{k}"`` present in ``values``, numbers ascending, ``all`` last."""
    pat = re.compile(re.escape(prefix) + r"@(.+)$")
    ks: set[str] = set()
    for v in values:
        for key in v.arrays:
            m = pat.fullmatch(key)
            if m:
                ks.add(m.group(1))
    return sorted(ks, key=lambda k: (0, int(k), "") if k.isdigit() else (1, 0, k))


def as_float_array(x: Any) -> np.ndarray:
    """A (nested) list with ``None`` for non-finite numbers → float64 array with NaN."""
    if x is None:
        return np.zeros(0)
    arr = np.asarray(x, dtype=object)
    return np.where(arr == None, np.nan, arr).astype(np.float64)  # noqa: E711 - elementwise test for None


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe fragment of ``text`` (letters, digits, ``._-``)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    return s[:limit]


def fmt(x: Any) -> str:
    """A number for a table cell: integers plain, 5 decimals, scientific notation for tiny or huge values."""
    if isinstance(x, str):
        return x
    if x is None:
        return "—"
    x = float(x)
    if math.isnan(x) or math.isinf(x):
        return str(x)
    if x == int(x) and abs(x) < 1e9:
        return str(int(x))
    if abs(x) >= 1e4 or abs(x) < 1e-3:
        return f"{x:.4e}"
    return f"{x:.5f}"
