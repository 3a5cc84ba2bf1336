"""ftprobe: what did fine-tuning change inside my network?

The public API, loaded lazily so that ``import ftprobe`` (and ``ftprobe --help``) stays fast::

    import ftprobe
    result = ftprobe.compare("base.pt", "tuned.pt", arch="torchvision:googlenet", layers="mixed4d", data="images/")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0.dev0"

#: The version of the plugin API (the Metric contract, steps, views, reductions, registry, ftprobe.testing).
#: A change plugin authors must adapt to raises it and is marked **[plugin API]** in the changelog.
PLUGIN_API_VERSION = 1

_EXPORTS = {
    "compare": "ftprobe.api",
    "Result": "ftprobe.core.results",
    "Value": "ftprobe.core.results",
    "Metric": "ftprobe.core.metric",
    "Need": "ftprobe.core.metric",
    "Scope": "ftprobe.core.metric",
    "Activation": "ftprobe.core.metric",
    "PairStep": "ftprobe.core.metric",
    "ModelStep": "ftprobe.core.metric",
    "WeightStep": "ftprobe.core.metric",
    "RunContext": "ftprobe.core.metric",
    "OptionHelp": "ftprobe.core.metric",
    "FtprobeError": "ftprobe.core.errors",
    "PluginError": "ftprobe.core.errors",
    "MetricNeedsError": "ftprobe.core.errors",
    "list_metrics": "ftprobe.core.registry",
    "get_metric": "ftprobe.core.registry",
    "register_metric": "ftprobe.core.registry",
    "list_layers": "ftprobe.core.layers",
    "load_model": "ftprobe.core.loading",
    "save": "ftprobe.core.loading",
}

__all__ = ["PLUGIN_API_VERSION", "__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ftprobe' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    attr = "save_model" if name == "save" else name
    value = getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
