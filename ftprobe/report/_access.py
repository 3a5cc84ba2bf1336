"""Read a :class:`~ftprobe.core.results.Result` into what figures, grids and tables need (no drawing here)."""

from __future__ import annotations

import fnmatch
import functools
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ftprobe.core.results import Result, Value

__all__ = ["MetricValues", "as_float_array", "control_pairs", "declared", "figure_globs", "fmt", "installed_metric",
           "interval", "k_keys", "layer_label", "layer_order", "model_values", "no_mathtext", "pair_label",
           "pair_values", "report_metrics", "resampling_line", "slug", "with_interval"]

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


# -- intervals and controls (results.json version 2) -------------------------------------------------------------

def interval(v: Value | None, key: str) -> tuple[float, float] | None:
    """``(lo, hi)`` of a value's interval for ``key`` when the run made a finite one, else None."""
    iv = None if v is None else v.intervals.get(key)
    if not iv:
        return None
    try:
        lo, hi = float(iv["lo"]), float(iv["hi"])
    except (KeyError, TypeError, ValueError):
        return None
    return (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else None


def with_interval(v: Value, key: str, number: Callable[[Any], str] | None = None) -> str:
    """A scalar as a table shows it, with its interval when there is one: ``0.93 [0.91, 0.95]``."""
    number = number or fmt
    text = number(v.scalars[key])
    iv = interval(v, key)
    return f"{text} [{number(iv[0])}, {number(iv[1])}]" if iv else text


def resampling_line(result: Result) -> str:
    """How the intervals were made, in words (empty when the run made none): ``95 % delete-one-group jackknife over
    20 groups of images``."""
    r = result.resampling
    if not r:
        return ""
    level = float(r.get("level", 0.95)) * 100
    groups, used = r.get("groups"), r.get("groups_used")
    unit = {"sample": "images", "batch": "batches of images"}.get(str(r.get("unit")), "images or batches")
    method = "delete-one-group jackknife" if r.get("method") == "jackknife" else str(r.get("method"))
    line = f"Intervals: {level:g} % {method} over {groups} groups of {unit}"
    if used is not None and used != groups:
        line += f" ({used} of them received data)"
    return line + "."


def control_pairs(result: Result) -> dict[tuple[str, str], str]:
    """The result's control pairs, each with what it stands for: the random-init model against the base (what an
    untrained network shares with it) and each seed pair (the seed-to-seed noise floor)."""
    out: dict[tuple[str, str], str] = {}
    controls = result.controls or {}
    rand = controls.get("random_init")
    if rand:
        for b, t in result.pairs:
            if rand in (b, t):
                out[(b, t)] = f"control: random init ({rand})"
    for pair in controls.get("seed_pairs") or []:
        a, b = (str(x) for x in pair)
        for p in ((a, b), (b, a)):
            if p in {tuple(q) for q in result.pairs}:
                out[p] = "control: seed-to-seed noise floor"
    return out


# -- what a metric declares about itself ---------------------------------------------------------------------------

_UNDECLARED: dict[str, Any] = {"higher_is_more_similar": None, "title": None, "description": "", "units": "",
                               "headline": [], "value_names": {}, "option_help": {}, "figure_files": []}


def installed_metric(name: str) -> Any:
    """The installed metric class of that name, or ``None`` (not installed here, or its plugin is broken: the
    report then draws from what the result stored)."""
    from ftprobe.core.errors import FtprobeError
    from ftprobe.core.registry import get_metric

    try:
        return get_metric(name)
    except FtprobeError:
        return None


def declared(result: Result, metric: str) -> dict[str, Any]:
    """A metric's declaration: the one stored in the result (``metrics[name]["declared"]``, what the run had),
    else the installed class's (results written before metrics declared themselves), else nothing declared."""
    stored = (result.metrics.get(metric) or {}).get("declared")
    if stored is None:
        cls = installed_metric(metric)
        stored = cls.declaration() if cls is not None else {}
    out = {**_UNDECLARED, **stored}
    out["title"] = out["title"] or metric
    return out


def report_metrics(result: Result) -> list[str]:
    """The metrics of the report, in the result's order: those that ran, then any other that has values."""
    names = list(result.metrics)
    names += [m for m in dict.fromkeys(v.metric for v in result.values) if m not in names]
    return names


def _default_figure_glob(metric: str) -> str:
    return f"{slug(metric)}_[0-9]*.png"


def figure_globs(result: Result) -> list[str]:
    """The PNG names (globs) the report's figures may have: what each metric of the result and each installed one
    declares its hook writes, else the default figures' names."""
    from ftprobe.core.errors import FtprobeError
    from ftprobe.core.registry import metric_specs

    try:
        installed = list(metric_specs())
    except FtprobeError:  # two plugins claim one name: a report renders without them (the run itself refuses)
        installed = []
    globs: list[str] = []
    for name in [*report_metrics(result), *installed]:
        files = declared(result, name)["figure_files"] or [_default_figure_glob(name)]
        globs.extend(g for g in files if g not in globs)
    return globs


def _match(pattern_map: Any, key: str, default: str) -> str:
    """The entry of ``{glob: text}`` whose glob matches ``key`` (``{}`` in the text: what the ``*`` matched)."""
    if isinstance(pattern_map, str):
        return pattern_map
    for pat, text in (pattern_map or {}).items():
        if fnmatch.fnmatchcase(key, pat):
            star = re.fullmatch(re.escape(pat).replace(r"\*", "(.*)"), key)
            return str(text).replace("{}", star.group(1) if star and star.groups() else "")
    return default


def _key_order(key: str) -> tuple[Any, ...]:
    head, _, tail = key.partition("@")
    return (head, (0, int(tail), "") if tail.isdigit() else (1, 0, tail))


@dataclass(frozen=True)
class MetricValues:
    """One metric's part of a result, as its :meth:`~ftprobe.core.metric.Metric.figures` hook and the report read
    it: its values, its declaration, and the folder its figures go to."""

    result: Result
    metric: str
    out: Path

    @functools.cached_property
    def declared(self) -> dict[str, Any]:
        return declared(self.result, self.metric)

    @property
    def title(self) -> str:
        return str(self.declared["title"])

    @property
    def direction(self) -> bool | None:
        """``higher_is_more_similar``: True (lowest = most changed), False (largest = most changed), or None."""
        return self.declared["higher_is_more_similar"]

    @property
    def stem(self) -> str:
        """The start of this metric's default figure names."""
        return slug(self.metric)

    @property
    def values(self) -> list[Value]:
        return [v for v in self.result.values if v.metric == self.metric]

    def pairs(self) -> dict[tuple[str, str], dict[str, Value]]:
        return pair_values(self.result, self.metric)

    def models(self) -> dict[str, dict[str, Value]]:
        return model_values(self.result, self.metric)

    def layers(self) -> list[str]:
        return layer_order(self.result)

    def label(self, layer: str) -> str:
        return layer_label(self.result, layer)

    def headline_keys(self) -> list[str]:
        """The value keys present in the result that the headline globs name, glob by glob, k ascending."""
        keys: list[str] = []
        present = [k for v in self.values if v.layer != "*" for k in (*v.scalars, *v.arrays)]
        for pat in self.declared["headline"]:
            found = sorted({k for k in present if fnmatch.fnmatchcase(k, pat)}, key=_key_order)
            keys.extend(k for k in found if k not in keys)
        return keys

    def unit(self, key: str) -> str:
        return _match(self.declared["units"], key, "")

    def value_name(self, key: str) -> str:
        return _match(self.declared["value_names"], key, key)

    def hook(self) -> Callable[[MetricValues], Any] | None:
        """The installed metric's ``figures`` classmethod, or ``None`` when the metric is not installed here."""
        cls = installed_metric(self.metric)
        return None if cls is None else cls.figures

    def save(self, fig: Any, name: str, title: str, caption: str = "") -> Any:
        """Write ``fig`` as ``NAME.png`` in the figure folder; the :class:`~ftprobe.report.Figure` record of it."""
        from .figures import Figure, save

        return Figure(save(fig, self.out / f"{slug(name, 80)}.png"), self.metric, title, caption)
