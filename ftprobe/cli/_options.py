"""Option parsing shared by commands (``-o METRIC.KEY=VALUE``, shorthand flags)."""

from __future__ import annotations

import json
from typing import Any

import click

__all__ = ["parse_metric_options"]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "yes", "on"):
            return True
        if low in ("false", "no", "off"):
            return False
        return text


def parse_metric_options(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``("cka.estimator=minibatch", "topk_*.k=[100,1000]")`` → ``{"cka": {...}, "topk_*": {...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, eq, value = item.partition("=")
        metric, dot, key = target.rpartition(".")
        if not eq or not dot or not metric or not key:
            raise click.BadParameter(f"{item!r} is not METRIC.KEY=VALUE (e.g. cka.estimator=minibatch)",
                                     param_hint="-o/--option")
        out.setdefault(metric, {})[key] = _value(value)
    return out
