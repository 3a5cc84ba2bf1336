"""Metric discovery through the ``ftprobe.metrics`` entry-point group, built-ins included.

ftprobe's own metrics are declared in its ``pyproject.toml`` exactly as a third-party package declares its own; this
module has no other way to find them. Nothing is imported until a metric is used, so ``ftprobe --help`` stays fast.

Safety valves (as pytest's ``-p no:NAME`` and ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``):
``FTPROBE_DISABLE_PLUGIN_AUTOLOAD=1`` loads only the metrics ftprobe itself provides, and ``disabled=`` names metrics
to leave out. Metrics registered in a script with :func:`register_metric` are listed with the provider ``local``.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points

from .errors import PluginError
from .metric import Metric

__all__ = [
    "GROUP",
    "MetricSpec",
    "discover",
    "get_metric",
    "list_metrics",
    "metric_specs",
    "register_metric",
    "unregister_metric",
]

GROUP = "ftprobe.metrics"
OWN_DIST = "ftprobe"
AUTOLOAD_ENV = "FTPROBE_DISABLE_PLUGIN_AUTOLOAD"

_LOCAL: dict[str, type[Metric]] = {}
_CACHE: dict[tuple, dict[str, MetricSpec]] = {}


@dataclass(frozen=True)
class MetricSpec:
    """A discovered metric: its name, who provides it, and how to load its class."""

    name: str
    provider: str
    version: str
    target: str
    loader: Callable[[], type[Metric]] = field(repr=False, compare=False)

    def load(self) -> type[Metric]:
        return self.loader()


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", ""
    return dist.metadata["Name"] or dist.name, dist.version or ""


def _load_checked(ep: EntryPoint, provider: str) -> type[Metric]:
    try:
        obj = ep.load()
    except Exception as exc:  # a plugin that fails to import must be reported with its distribution
        raise PluginError(
            f"metric {ep.name!r} from distribution {provider!r} failed to import ({ep.value}): "
            f"{type(exc).__name__}: {exc}. Reinstall or upgrade {provider}, or leave it out with "
            f"--disable-metric {ep.name}."
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, Metric)):
        raise PluginError(
            f"{ep.value} (entry point {ep.name!r} of distribution {provider!r}) is not a subclass of ftprobe.Metric"
        )
    declared = getattr(obj, "name", None)
    if declared != ep.name:
        raise PluginError(
            f"{ep.value} declares name={declared!r} but distribution {provider!r} registers it as {ep.name!r}; "
            "make them equal"
        )
    return obj


def _local_loader(cls: type[Metric]) -> Callable[[], type[Metric]]:
    return lambda: cls


def discover(
    eps: Iterable[EntryPoint] | None = None,
    *,
    disabled: Collection[str] = (),
    builtins_only: bool | None = None,
) -> dict[str, MetricSpec]:
    """Every metric available, by name. ``eps`` injects entry points (tests); by default the installed ones.

    Raises:
        PluginError: two distributions provide the same name (both are named in the message).
    """
    if builtins_only is None:
        builtins_only = os.environ.get(AUTOLOAD_ENV, "") not in ("", "0")
    specs: dict[str, MetricSpec] = {}
    for ep in entry_points(group=GROUP) if eps is None else eps:
        provider, version = _dist_of(ep)
        if ep.name in disabled or (builtins_only and provider != OWN_DIST):
            continue
        if ep.name in specs:
            if specs[ep.name].target == ep.value and specs[ep.name].provider == provider:
                continue  # the same distribution seen twice (lib and lib64 on some systems)
            raise PluginError(
                f"metric {ep.name!r} is provided by both {specs[ep.name].provider} ({specs[ep.name].target}) and "
                f"{provider} ({ep.value}); uninstall one of them or disable the name with --disable-metric"
            )
        specs[ep.name] = MetricSpec(ep.name, provider, version, ep.value, _bind(ep, provider))
    for name, cls in _LOCAL.items():
        if name in disabled:
            continue
        if name in specs:
            raise PluginError(
                f"metric {name!r} registered in this process collides with the one provided by {specs[name].provider}"
            )
        specs[name] = MetricSpec(name, "local", "", f"{cls.__module__}:{cls.__qualname__}", _local_loader(cls))
    return specs


def _bind(ep: EntryPoint, provider: str) -> Callable[[], type[Metric]]:
    cache: list[type[Metric]] = []

    def load() -> type[Metric]:
        if not cache:
            cache.append(_load_checked(ep, provider))
        return cache[0]

    return load


def metric_specs(disabled: Collection[str] = ()) -> dict[str, MetricSpec]:
    """Cached :func:`discover` of the installed entry points (the cache is keyed by the options and env)."""
    key = (tuple(sorted(disabled)), os.environ.get(AUTOLOAD_ENV, ""), tuple(sorted(_LOCAL)))
    if key not in _CACHE:
        _CACHE[key] = discover(disabled=disabled)
    return _CACHE[key]


def list_metrics(
    pattern: str | Sequence[str] = "*", *, exclude: Sequence[str] = (), disabled: Collection[str] = ()
) -> list[str]:
    """Names of the available metrics matching shell-style patterns, e.g. ``list_metrics("topk_*")``."""
    names = sorted(metric_specs(disabled))
    patterns = [pattern] if isinstance(pattern, str) else list(pattern)
    chosen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    return [n for n in chosen if not any(fnmatch.fnmatchcase(n, p) for p in exclude)]


def get_metric(name: str, *, disabled: Collection[str] = ()) -> type[Metric]:
    """The metric class registered under ``name``."""
    specs = metric_specs(disabled)
    if name not in specs:
        import difflib

        close = difflib.get_close_matches(name, list(specs), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise PluginError(f"Unknown metric {name!r}.{hint} Run `ftprobe metrics` to list the installed metrics.")
    return specs[name].load()


def register_metric(cls: type[Metric]) -> type[Metric]:
    """Register a metric class in this process, without packaging (scripts, notebooks). Usable as a decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise PluginError(f"{cls!r} is not a subclass of ftprobe.Metric")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise PluginError(f"{cls.__qualname__} needs a class attribute `name` (the name users type)")
    if name in _LOCAL and _LOCAL[name] is not cls:
        raise PluginError(f"a metric named {name!r} is already registered in this process ({_LOCAL[name]!r})")
    _LOCAL[name] = cls
    _CACHE.clear()
    return cls


def unregister_metric(name: str) -> None:
    """Forget a metric registered with :func:`register_metric`."""
    _LOCAL.pop(name, None)
    _CACHE.clear()
