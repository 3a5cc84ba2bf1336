"""Errors a user can cause. Each message says what went wrong and how to fix it.

Anything that is not an :class:`FtprobeError` is a bug in ftprobe (or in a plugin) and shows a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CheckpointError",
    "DataError",
    "FtprobeError",
    "LayerNotFound",
    "MetricNeedsError",
    "ModelMismatch",
    "PluginError",
]


class FtprobeError(Exception):
    """Base class for mistakes a user can make; the CLI prints the message without a traceback."""


class PluginError(FtprobeError):
    """A metric plugin is broken: it names the entry point and the distribution that provides it."""


class LayerNotFound(FtprobeError):
    """A requested layer name (or glob, or alias) matches nothing in a model."""

    def __init__(self, name: str, suggestions: Sequence[str] = (), model: str | None = None) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        where = f" in model {model!r}" if model else ""
        msg = f"Unknown layer {name!r}{where}."
        if self.suggestions:
            msg += " Did you mean: " + ", ".join(self.suggestions) + "?"
        msg += " Run `ftprobe layers MODEL` to list the layers you can name."
        super().__init__(msg)


class CheckpointError(FtprobeError):
    """A model file or spec cannot be loaded as asked."""


class ModelMismatch(FtprobeError):
    """The models being compared do not have matching layers or shapes."""


class DataError(FtprobeError):
    """The data source is missing, empty, unreadable or lacks what a metric needs."""


class MetricNeedsError(FtprobeError):
    """A metric the user asked for cannot run with what was given (no data, no labels, bad option)."""
