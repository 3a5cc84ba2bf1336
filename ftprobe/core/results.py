"""Results are data: frozen records plus provenance, JSON in and out. Rendering lives elsewhere and only reads them.

A :class:`Value` is one metric's output for one layer and one subject (a pair of models, or one model). Scalars are
table rows; arrays (per-channel vectors, top-k indices, matrices) stay beside them for figures and later analysis.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["READABLE_VERSIONS", "SCHEMA_VERSION", "Result", "Value", "split_values"]

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # version 1: before intervals, resampling and controls


@dataclass(frozen=True)
class Value:
    """One metric's values at one layer (``"*"``: not tied to a layer) for a pair or a model."""

    metric: str
    layer: str
    scope: str  # "pair" | "model"
    base: str | None = None  # pair scope: the two model labels
    tuned: str | None = None
    model: str | None = None  # model scope: the model label
    scalars: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, Any] = field(default_factory=dict)
    #: scalar key -> its interval over resampled images: ``lo``, ``hi``, ``se`` (standard error), ``bias`` (the
    #: jackknife's estimate of the estimator's bias), ``replicates`` (the value with each group left out) and a
    #: ``note`` when it is undefined; see :attr:`Result.resampling` for the method and level.
    intervals: dict[str, dict[str, Any]] = field(default_factory=dict)

    def interval(self, key: str) -> tuple[float, float] | None:
        """``(lo, hi)`` of a scalar's interval, or None when the run made none for it."""
        iv = self.intervals.get(key)
        return None if iv is None else (float(iv["lo"]), float(iv["hi"]))

    @property
    def subject(self) -> str:
        return f"{self.base} → {self.tuned}" if self.scope == "pair" else str(self.model)

    def __repr__(self) -> str:  # arrays by size only: a per-channel vector would fill the screen
        arrays = ", ".join(f"{k!r}: " + (_size(a) if isinstance(a, str) else f"<{_size(a)}>")
                           for k, a in self.arrays.items())
        return (f"Value(metric={self.metric!r}, layer={self.layer!r}, {self.scope}={self.subject!r}, "
                f"scalars={self.scalars!r}, arrays={{{arrays}}})")


def _size(a: Any) -> str:
    if isinstance(a, str):
        return repr(a) if len(a) <= 80 else f"str of {len(a)}"
    shape = getattr(a, "shape", None)
    if shape is not None:
        return f"{type(a).__name__} {tuple(shape)}"
    if isinstance(a, (list, tuple)):
        return f"list of {len(a)}"
    if isinstance(a, Mapping):
        return f"dict of {len(a)}"
    return type(a).__name__


def _to_jsonable(v: Any) -> Any:
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported: reading results needs no torch
    if torch is not None and isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        return v.item() if v.dim() == 0 else v.tolist()
    if hasattr(v, "tolist"):  # numpy
        return v.tolist()
    if isinstance(v, Mapping):
        return {str(k): _to_jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_to_jsonable(x) for x in v]
    return v


def split_values(values: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, Any]]:
    """Split a metric's ``compute()`` output into scalars (numbers, 0-d tensors) and arrays (everything else)."""
    scalars: dict[str, float] = {}
    arrays: dict[str, Any] = {}
    for key, v in values.items():
        v = _to_jsonable(v)
        if isinstance(v, bool):
            scalars[key] = float(v)
        elif isinstance(v, (int, float)):
            scalars[key] = float(v)
        else:
            arrays[key] = v
    return scalars, arrays


def _json_float(x: float) -> Any:
    # JSON has no NaN/Inf: write them as strings so files stay standard; read back by from_dict.
    return x if math.isfinite(x) else str(x)


def _finite_or_null(x: Any) -> Any:
    """Arrays: non-finite numbers become ``null`` (JSON has no NaN/Inf; readers get ``None``)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, list):
        return [_finite_or_null(v) for v in x]
    if isinstance(x, dict):
        return {k: _finite_or_null(v) for k, v in x.items()}
    return x


def _from_json_float(x: Any) -> float:
    return float(x)


_INTERVAL_FLOATS = ("lo", "hi", "se", "bias")


@dataclass
class Result:
    """What a comparison produced, with everything needed to reproduce and re-render it."""

    models: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    layers: list[dict[str, Any]] = field(default_factory=list)
    data: dict[str, Any] | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    values: list[Value] = field(default_factory=list)
    skipped_metrics: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    #: How the intervals were made (None: none were): ``method``, ``groups``, ``level``, ``seed``, ``unit``.
    resampling: dict[str, Any] | None = None
    #: Which models and pairs are controls: ``random_init`` (a model's label), ``seed_pairs`` (two fine-tunes of one
    #: recipe, compared with each other for the seed-to-seed noise floor).
    controls: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    # -- display (a summary: every number is in records(), to_pandas() and the saved JSON) ---------------------------
    def __repr__(self) -> str:
        from ._summary import summary_text

        return summary_text(self)

    __str__ = __repr__

    def _repr_html_(self) -> str:
        from ._summary import summary_html

        return summary_html(self)

    # -- queries ------------------------------------------------------------------------------------------------
    def select(
        self, metric: str | None = None, layer: str | None = None, subject: str | None = None
    ) -> Iterator[Value]:
        """Values filtered by metric name, layer (canonical name) and subject (``"a → b"`` or a model label)."""
        for v in self.values:
            if metric is not None and v.metric != metric:
                continue
            if layer is not None and v.layer != layer:
                continue
            if subject is not None and v.subject != subject:
                continue
            yield v

    def get(self, metric: str, layer: str, key: str, *, pair: tuple[str, str] | None = None,
            model: str | None = None) -> Any:
        """One value (scalar or array) by metric, layer and key; the first pair/model unless one is named."""
        for v in self.select(metric, layer):
            if pair is not None and (v.base, v.tuned) != tuple(pair):
                continue
            if model is not None and v.model != model:
                continue
            if key in v.scalars:
                return v.scalars[key]
            if key in v.arrays:
                return v.arrays[key]
        raise KeyError(f"no value {key!r} for metric {metric!r} at layer {layer!r}")

    def notes(self, metric: str | None = None, scope: str | None = None) -> list[tuple[str, list[str]]]:
        """The cautions the values carry (a value's ``"note"``: too few samples, k larger than the data ...): each
        distinct note once, with the places it concerns (``"subject, layer"``), in the order of the values."""
        where: dict[str, list[str]] = {}
        for v in self.values:
            note = v.arrays.get("note")
            if (metric is not None and v.metric != metric) or (scope is not None and v.scope != scope):
                continue
            if isinstance(note, str) and note.strip():
                place = f"{v.subject}, {'all layers' if v.layer == '*' else v.layer}"
                places = where.setdefault(note, [])
                if place not in places:
                    places.append(place)
        return list(where.items())

    def records(self) -> list[dict[str, Any]]:
        """A tidy table: one row per scalar (metric, layer, scope, base, tuned, model, key, value)."""
        rows = []
        for v in self.values:
            for key, value in v.scalars.items():
                rows.append({"metric": v.metric, "layer": v.layer, "scope": v.scope, "base": v.base,
                             "tuned": v.tuned, "model": v.model, "key": key, "value": value})
        return rows

    def to_pandas(self) -> Any:
        """The tidy records as a ``pandas.DataFrame`` (pandas is optional)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("to_pandas() needs pandas: pip install pandas (or use records())") from exc
        return pd.DataFrame.from_records(self.records())

    # -- serialisation --------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["pairs"] = [list(p) for p in self.pairs]
        for v in d["values"]:
            v["scalars"] = {k: _json_float(x) for k, x in v["scalars"].items()}
            v["arrays"] = _finite_or_null(_to_jsonable(v["arrays"]))
            v["intervals"] = {k: {f: (_json_float(x) if isinstance(x, float) else _finite_or_null(_to_jsonable(x)))
                                  for f, x in iv.items()} for k, iv in v["intervals"].items()}
        return {"schema_version": d.pop("schema_version"), **d}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=_to_jsonable)

    def save(self, path: str | Path) -> Path:
        """Write ``to_json()`` atomically: a temporary file of this writer's own, renamed into place, so a reader or
        a concurrent writer never sees a partial file."""
        import os
        import uuid

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the usual permissions (umask applies)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(self.to_json())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Result:
        version = d.get("schema_version")
        if version not in READABLE_VERSIONS:
            from .errors import FtprobeError

            raise FtprobeError(
                f"results file has schema version {version!r}; this ftprobe reads versions "
                f"{', '.join(map(str, READABLE_VERSIONS))}"
            )
        values = [
            Value(**{**v, "scalars": {k: _from_json_float(x) for k, x in v["scalars"].items()},
                     "intervals": {k: {f: (_from_json_float(x) if f in _INTERVAL_FLOATS else x)
                                       for f, x in iv.items()} for k, iv in v.get("intervals", {}).items()}})
            for v in d.get("values", [])
        ]
        return cls(
            models=list(d.get("models", [])),
            pairs=[tuple(p) for p in d.get("pairs", [])],
            layers=list(d.get("layers", [])),
            data=d.get("data"),
            metrics=dict(d.get("metrics", {})),
            values=values,
            skipped_metrics=list(d.get("skipped_metrics", [])),
            warnings=list(d.get("warnings", [])),
            run=dict(d.get("run", {})),
            resampling=d.get("resampling"),
            controls=dict(d.get("controls") or {}),
            schema_version=SCHEMA_VERSION,  # read as the current version: a version 1 file has no intervals
        )

    @classmethod
    def load(cls, path: str | Path) -> Result:
        return cls.from_dict(json.loads(Path(path).read_text()))
