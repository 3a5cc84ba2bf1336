"""The study's findings, each computed from the numbers of a comparison and stated as "holds" or "does not hold here".

Used by ``ftprobe demo`` and ``examples/paper_study.py``. Nothing here changes a number: a finding that the data do
not support is reported as not holding, and one that cannot be measured (too few layers, NaNs) says so; either way
:attr:`Finding.reason` says why in one line, read from the same numbers (it is empty for a finding that holds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ftprobe.core.results import Result

__all__ = ["Finding", "double_finding", "figure_lines", "findings_html", "study_findings"]

KEPT, RENEWED, SHARE = 50.0, 20.0, 0.05  # overlap spread: ≥ 5 % of channels keep ≥ 50 %, ≥ 5 % keep ≤ 20 %


@dataclass
class Finding:
    """One finding of the study, checked on this run's numbers.

    Attributes:
        key: short id (``cka_depth``, ``weight_depth``, ``concentration``, ``overlap_spread``, ``double_ft``).
        claim: the study's statement.
        holds: True, False, or None when it could not be measured.
        test: the rule applied to decide ``holds``.
        detail: the numbers behind the verdict, in words.
        stats: the same numbers as data.
        reason: when the finding does not hold (or could not be measured), one line saying why, read from the
            same numbers (which layer, which share, which score stood in the way); empty when it holds.
    """

    key: str
    claim: str
    holds: bool | None
    test: str
    detail: str
    stats: dict[str, Any] = field(default_factory=dict)
    reason: str = ""

    @property
    def verdict(self) -> str:
        return {True: "holds", False: "does not hold here", None: "could not be measured"}[self.holds]

    def line(self) -> str:
        why = f" Why: {self.reason}" if self.reason and self.holds is not True else ""
        return f"[{self.verdict}] {self.claim} {self.detail}{why}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict}


def _spearman(values: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    finite = [(i, v) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if len(finite) < 3 or len({v for _, v in finite}) == 1:
        return math.nan  # undefined: too few layers, or no variation at all
    rho = spearmanr([i for i, _ in finite], [v for _, v in finite]).statistic
    return float(rho)


def _per_layer(result: Result, metric: str, key: str, layers: Sequence[str], **who: Any) -> list[float]:
    out = []
    for layer in layers:
        try:
            out.append(float(result.get(metric, layer, key, **who)))
        except (KeyError, TypeError, ValueError):
            out.append(math.nan)
    return out


def _fmt(values: Sequence[float], layers: Sequence[str], digits: int = 2) -> str:
    return f"{values[0]:.{digits}f} at {layers[0]} → {values[-1]:.{digits}f} at {layers[-1]}"


def _depth_finding(key: str, claim: str, values: list[float], layers: Sequence[str], sign: int, what: str,
                   digits: int = 2) -> Finding:
    rho = _spearman(values)
    test = f"Spearman correlation of {what} with depth {'<' if sign < 0 else '>'} 0"
    if math.isnan(rho):
        why = f"({what}: fewer than 3 finite values, or all equal)"
        return Finding(key, claim, None, test, why, {"values": values},
                       reason=f"{what} has fewer than 3 finite values over the layers, or no variation at all.")
    holds = rho * sign > 0
    detail = f"({what} {_fmt(values, layers, digits)}; Spearman ρ = {rho:+.2f} over {len(layers)} layers)"
    return Finding(key, claim, holds, test, detail, {"values": values, "spearman": rho, "layers": list(layers)},
                   reason="" if holds else _depth_reason(values, layers, sign, what, digits))


def _depth_reason(values: Sequence[float], layers: Sequence[str], sign: int, what: str, digits: int) -> str:
    """Where the trend breaks: the layer whose value is the most extreme the wrong way, and in which half it sits."""
    finite = [(v, name) for v, name in zip(values, layers) if math.isfinite(v)]
    lower = set(layers[: len(layers) // 2])
    v, name = (max if sign > 0 else min)(finite)  # the largest change (or the lowest CKA)
    half = "lower" if name in lower else "upper"
    if sign > 0:
        return (f"the largest {what} is at {name} ({v:.{digits}f}), in the {half} half of the layers: fine-tuning "
                f"moved those filters more than the deeper ones.")
    return (f"the lowest {what} is at {name} ({v:.{digits}f}), in the {half} half of the layers: the features "
            f"there moved further from the pretrained ones than the deeper ones did.")


def study_findings(result: Result, *, base: str, tuned: str, layers: Sequence[str], k: int | str) -> list[Finding]:
    """The four findings measured by the comparison of ``base`` (pretrained) with ``tuned`` (Mode A), in depth order.

    Args:
        result: a comparison holding the pair ``(base, tuned)`` and the per-model values of both.
        base, tuned: model labels.
        layers: canonical layer names, shallow to deep.
        k: the top-k size to read (``overlap@k``, ``entropy_mean@k``).
    """
    pair = (base, tuned)
    cka = _per_layer(result, "cka", "cka", layers, pair=pair)
    rel = _per_layer(result, "weight_l2", "relative", layers, pair=pair)
    found = [
        _depth_finding("cka_depth", "CKA between the pretrained and the fine-tuned model falls with depth.",
                       cka, layers, -1, "CKA"),
        _depth_finding("weight_depth", "The relative weight change grows with depth.", rel, layers, +1,
                       "relative L2 change ‖ΔW‖/‖W‖", digits=3),
        _concentration(result, base, tuned, layers, k),
        _overlap_spread(result, pair, layers, k),
    ]
    return found


def _concentration(result: Result, base: str, tuned: str, layers: Sequence[str], k: int | str) -> Finding:
    claim = "After fine-tuning, the higher layers concentrate classes (lower entropy of top-k class histograms)."
    ent_t = _per_layer(result, "class_concentration", f"entropy_mean@{k}", layers, model=tuned)
    ent_b = _per_layer(result, "class_concentration", f"entropy_mean@{k}", layers, model=base)
    rho = _spearman(ent_t)
    upper = layers[len(layers) // 2:]
    top_t = [v for v, name in zip(ent_t, layers) if name in upper and math.isfinite(v)]
    top_b = [v for v, name in zip(ent_b, layers) if name in upper and math.isfinite(v)]
    test = ("Spearman correlation of the fine-tuned model's mean entropy with depth < 0, and its mean entropy over "
            "the upper half of the layers below the pretrained model's")
    if math.isnan(rho) or not top_t or not top_b:
        return Finding("concentration", claim, None, test, "(entropies not available)", {"tuned": ent_t},
                       reason=f"no class-concentration entropies at top-{k} for both models on these layers.")
    mt, mb = sum(top_t) / len(top_t), sum(top_b) / len(top_b)
    holds = rho < 0 and mt < mb
    detail = (f"(fine-tuned entropy {_fmt(ent_t, layers)}, Spearman ρ = {rho:+.2f}; upper layers: fine-tuned "
              f"{mt:.2f} vs pretrained {mb:.2f}, top-{k})")
    reasons = []
    if rho >= 0:
        reasons.append(f"the fine-tuned model's entropy does not fall with depth (ρ = {rho:+.2f})")
    if mt >= mb:
        reasons.append(f"its upper layers ({mt:.2f}) are no more concentrated than the pretrained model's ({mb:.2f})")
    return Finding("concentration", claim, holds, test, detail,
                   {"tuned": ent_t, "base": ent_b, "spearman": rho, "upper_tuned": mt, "upper_base": mb},
                   reason="; ".join(reasons) + "." if reasons else "")


def _overlap_spread(result: Result, pair: tuple[str, str], layers: Sequence[str], k: int | str) -> Finding:
    claim = "Some channels keep their top images while others get new ones (overlap spread)."
    test = (f"at least {SHARE:.0%} of the channels alive in the pretrained model keep ≥ {KEPT:g} % of their top-{k} "
            f"images and at least {SHARE:.0%} keep ≤ {RENEWED:g} %")
    pooled: list[float] = []
    for layer in layers:
        try:
            ov = result.get("topk_overlap", layer, f"overlap@{k}", pair=pair)
            ent = result.get("class_concentration", layer, f"entropy@{k}", model=pair[0])
        except KeyError:
            continue
        pooled += [float(o) for o, e in zip(ov, ent) if e is not None and o is not None and math.isfinite(e)]
    if not pooled:
        return Finding("overlap_spread", claim, None, test, "(no per-channel overlaps)", {},
                       reason=f"no per-channel top-{k} overlaps for channels alive in the pretrained model.")
    kept = sum(o >= KEPT for o in pooled) / len(pooled)
    renewed = sum(o <= RENEWED for o in pooled) / len(pooled)
    holds = kept >= SHARE and renewed >= SHARE
    detail = (f"({kept:.0%} of {len(pooled)} channels keep ≥ {KEPT:g} % of their top-{k} images, {renewed:.0%} keep "
              f"≤ {RENEWED:g} %)")
    reasons = []
    if renewed < SHARE:
        reasons.append(f"only {renewed:.0%} of the channels got new top images (fewer than {SHARE:.0%}): fine-tuning "
                       "changed the channels too little to renew any")
    if kept < SHARE:
        reasons.append(f"only {kept:.0%} of the channels kept their top images (fewer than {SHARE:.0%}): fine-tuning "
                       "renewed nearly every channel")
    return Finding("overlap_spread", claim, holds, test, detail,
                   {"kept_share": kept, "renewed_share": renewed, "channels": len(pooled)},
                   reason="; ".join(reasons) + "." if reasons else "")


def double_finding(single: Sequence[float], double: Sequence[float], measure: str, task: str,
                   medium: str = "the medium task") -> Finding:
    """Double fine-tuning (source → medium → small) against single (source → small): does it score higher?

    ``medium`` names the intermediate task in the reason line of a finding that does not hold.
    """
    claim = f"A double fine-tuning beats a single one on the small task ({task})."
    test = f"mean {measure} of the double fine-tuning > mean {measure} of the single one"
    if not single or not double:
        return Finding("double_ft", claim, None, test, "(not run)", {}, reason="the small task was not trained.")
    ms, md = sum(single) / len(single), sum(double) / len(double)
    runs = f" over {len(single)} seeds" if len(single) > 1 else ""
    spread = ""
    if len(single) > 1:
        spread = (f"; seed ranges {min(single):.1f}–{max(single):.1f} and {min(double):.1f}–{max(double):.1f}")
    detail = f"({measure}{runs}: single {ms:.1f}, double {md:.1f}{spread})"
    reason = "" if md > ms else (
        f"starting from the model fine-tuned on {medium} scored {ms - md:.1f} {measure} points lower than starting "
        f"from the pretrained one: the features that stage specialised serve the small task worse than the "
        f"pretrained ones.")
    return Finding("double_ft", claim, md > ms, test, detail,
                   {"single": list(single), "double": list(double), "measure": measure}, reason=reason)


def figure_lines(result: Result, pairs: Sequence[tuple[str, str]], layers: Sequence[str], k: int | str) -> list[str]:
    """One sentence per figure: what the CKA, weight-change and overlap curves of the plotted pairs show."""
    lines = []
    for metric, key, what, digits in (("cka", "cka", "CKA", 2), ("weight_l2", "relative", "relative weight change", 3),
                                      ("topk_overlap", f"overlap_mean@{k}", f"mean top-{k} overlap (%)", 0)):
        parts = []
        for pair in pairs:
            vals = _per_layer(result, metric, key, layers, pair=pair)
            if all(math.isnan(v) for v in vals):
                continue
            parts.append(f"{pair[0]}→{pair[1]} {_fmt(vals, layers, digits)}")
        if parts:
            lines.append(f"{what}: " + "; ".join(parts) + ".")
    return lines


def findings_html(findings: Sequence[Finding], accuracy: dict[str, dict[str, float]] | None = None) -> str:
    """An HTML fragment (everything escaped): a table of the findings, and one of the accuracies when given."""
    from html import escape

    rows = "".join(
        f"<tr><td>{escape(f.claim)}</td><td><b>{escape(f.verdict)}</b></td><td>{escape(f.detail.strip('()'))}</td>"
        f"<td>{escape(f.test)}</td><td>{escape(f.reason if f.holds is not True else '')}</td></tr>" for f in findings
    )
    out = ("<table><thead><tr><th>finding</th><th>verdict</th><th>numbers</th><th>rule</th><th>why not</th></tr>"
           "</thead>"
           f"<tbody>{rows}</tbody></table>")
    if accuracy:
        keys = sorted({k for acc in accuracy.values() for k in acc if k not in ("n", "loss")})
        head = "".join(f"<th>{escape(k)}</th>" for k in keys)
        body = "".join(
            f"<tr><td>{escape(name)}</td>" + "".join(
                f"<td>{acc[k]:.1f}</td>" if k in acc else "<td></td>" for k in keys) + "</tr>"
            for name, acc in accuracy.items()
        )
        out += f"<table><thead><tr><th>model (test set)</th>{head}</tr></thead><tbody>{body}</tbody></table>"
    return out
