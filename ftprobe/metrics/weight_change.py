"""Weight change per convolution and linear layer (parameter space), the study's L2 measure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ftprobe.core.errors import MetricNeedsError
from ftprobe.core.metric import Metric, Need, Scope, WeightStep
from ftprobe.functional.weight_change import most_changed_filters, weight_change_stats

_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
    "linear": (nn.Linear,),
}
_FIELDS = ("l2", "base_norm", "cosine", "replaced", "filter_r", "filter_offsets", "names")


def _first_nonempty(mine: Any, theirs: Any) -> Any:
    """Weight statistics do not depend on data: two shards hold the same values, so keep whichever is filled."""
    return mine if mine["l2"].numel() else theirs


def _encode(names: list[str]) -> Tensor:
    return torch.tensor(list("\n".join(names).encode()), dtype=torch.uint8)


def _decode(t: Tensor) -> list[str]:
    text = bytes(t.tolist()).decode()
    return text.split("\n") if text else []


class WeightChange(Metric):
    """L2 norm of the weight change per conv/linear layer, raw and relative, and per-filter relative change.

    For each convolution and linear module inside a selected layer (the layer itself if it is one): the raw
    Frobenius norm ``‖W_tuned − W_base‖_F`` (biases ignored), the relative change ``‖ΔW‖_F / ‖W_base‖_F``, the
    per-filter ``r_c = mean|ΔW_c| / mean|W_base,c|`` and the ``top_filters`` most-changed filters (Gonthier et al.
    2020). A module whose weight shape differs (a replaced classification head) is reported as replaced, not
    measured. The layer row sums over its modules: ``l2 = sqrt(Σ ‖ΔW_i‖²)``, ``relative = l2 / sqrt(Σ ‖W_i‖²)``.

    Options:
        modules: which module kinds to measure, ``"conv,linear"`` (default) or ``"conv"`` (the study's set).
        top_filters: how many most-changed filters to keep per module (default 3, as the study).
        cosine: also record the cosine similarity of each kernel pair.
    """

    name = "weight_l2"
    needs = Need.WEIGHTS
    scope = Scope.PAIR
    higher_is_more_similar = False
    identity = {"l2": 0.0, "module_l2": 0.0}  # identical weights: no change in any module
    title = "Weight change (parameter space)"
    description = "L2 norm of the weight change per conv/linear layer, raw and relative, and per filter"
    units = {"l2": "", "relative": "relative", "module_l2": "", "module_relative": "relative"}
    headline = ("relative",)
    value_names = {"relative": "relative weight change", "l2": "weight change ‖ΔW‖_F"}
    option_help = {
        "modules": "module kinds to measure: 'conv,linear' (default) or 'conv' (the study's set)",
        "top_filters": "how many most-changed filters to keep per module (default 3)",
        "cosine": "also record the cosine similarity of each kernel pair",
    }
    figure_files = ("weight_change.png",)

    @classmethod
    def figures(cls, values: Any) -> Any:
        """Raw and relative change of every measured module, in layer order, a line per pair."""
        from .figures import weight_change

        return weight_change(values.result, values.out, values.metric)

    def __init__(self, modules: str = "conv,linear", top_filters: int = 3, cosine: bool = False) -> None:
        super().__init__()
        kinds = [k.strip() for k in str(modules).split(",") if k.strip()]
        unknown = [k for k in kinds if k not in _KINDS]
        if unknown or not kinds:
            raise MetricNeedsError(f"weight_l2: unknown module kind(s) {unknown or modules!r}; use conv, linear")
        self.modules = ",".join(kinds)
        if isinstance(top_filters, bool) or not isinstance(top_filters, int) or top_filters < 0:
            raise MetricNeedsError(f"weight_l2: top_filters must be a whole number ≥ 0, not {top_filters!r}")
        self.top_filters = top_filters
        self.cosine = bool(cosine)
        self._types = tuple(t for k in kinds for t in _KINDS[k])
        empty = {
            "l2": torch.zeros(0, dtype=torch.float64),
            "base_norm": torch.zeros(0, dtype=torch.float64),
            "cosine": torch.zeros(0, dtype=torch.float64),
            "replaced": torch.zeros(0, dtype=torch.bool),
            "filter_r": torch.zeros(0, dtype=torch.float64),
            "filter_offsets": torch.zeros(1, dtype=torch.int64),
            "names": torch.zeros(0, dtype=torch.uint8),
        }
        self.add_state("stats", empty, reduce=_first_nonempty)

    def update(self, step: WeightStep) -> None:
        tuned = dict(step.tuned.named_modules())
        names, l2, norm, cos, replaced, filt, offsets = [], [], [], [], [], [], [0]
        for sub, mod in step.base.named_modules():
            if not isinstance(mod, self._types) or getattr(mod, "weight", None) is None:
                continue
            other = tuned.get(sub)
            names.append(f"{step.layer}.{sub}" if sub else step.layer)
            wb = mod.weight
            wt = getattr(other, "weight", None)
            if wt is None or wt.shape != wb.shape:
                replaced.append(True)
                l2.append(torch.tensor(float("nan"), dtype=torch.float64))
                norm.append(torch.linalg.vector_norm(wb.detach().double()))
                cos.append(torch.tensor(float("nan"), dtype=torch.float64))
                offsets.append(offsets[-1])
                continue
            replaced.append(False)
            d_l2, b_norm, cosine, r = weight_change_stats(wb, wt)
            l2.append(d_l2)
            norm.append(b_norm)
            cos.append(cosine if self.cosine else torch.tensor(float("nan"), dtype=torch.float64))
            filt.append(r)
            offsets.append(offsets[-1] + r.numel())
        if not names:
            return
        dev = self.stats["l2"].device
        self.stats = {
            "l2": torch.stack(l2).to(dev),
            "base_norm": torch.stack(norm).to(dev),
            "cosine": torch.stack(cos).to(dev),
            "replaced": torch.tensor(replaced, device=dev),
            "filter_r": torch.cat(filt).to(dev) if filt else torch.zeros(0, dtype=torch.float64, device=dev),
            "filter_offsets": torch.tensor(offsets, device=dev),
            "names": _encode(names).to(dev),
        }

    def compute(self) -> Mapping[str, Any]:
        s = self.stats
        names = _decode(s["names"].cpu())
        if not names:
            return {"modules_measured": 0, "note": f"no {self.modules} module inside this layer"}
        ok = ~s["replaced"]
        l2 = torch.sqrt((s["l2"][ok] ** 2).sum())
        base = torch.sqrt((s["base_norm"][ok] ** 2).sum())
        off = s["filter_offsets"].tolist()
        filters: list[Any] = []
        for i, rep in enumerate(s["replaced"].tolist()):
            filters.append([] if rep else s["filter_r"][off[i] : off[i + 1]])
        if not ok.any():  # every module was replaced: nothing comparable, say so rather than report 0
            l2 = torch.tensor(float("nan"), dtype=torch.float64)
        out: dict[str, Any] = {
            "l2": l2,
            "relative": l2 / base,
            "modules_measured": int(ok.sum()),
            "modules": names,
            "module_l2": s["l2"],
            "module_relative": s["l2"] / s["base_norm"],
            "filter_relative": [f.tolist() if isinstance(f, Tensor) else f for f in filters],
            "most_changed_filters": [
                most_changed_filters(f, self.top_filters).tolist() if isinstance(f, Tensor) else [] for f in filters
            ],
        }
        if self.cosine:
            out["module_cosine"] = s["cosine"]
        replaced = [n for n, r in zip(names, s["replaced"].tolist()) if r]
        if replaced:
            out["replaced"] = replaced
            out["modules_replaced"] = len(replaced)
        return out
