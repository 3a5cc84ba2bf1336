"""The report's headline: the few things that changed most, in sentences, each with its layer and its number.

Everything here is read from what the metrics declare about themselves (:func:`~ftprobe.report._access.declared`:
the direction ``higher_is_more_similar``, the headline keys, the value names and units), never from a metric's
name, so a plugin metric that declares the same things gets its sentence too. A metric with no direction says
nothing about more or less change, so it has no headline sentence (its range is in the summary).

How the few are chosen: each metric with a direction gives one candidate per pair (per model when it has no pair
values), from the first key of each of its headline globs (the smallest k): the most changed layer, by the
direction, against the least changed one. A candidate's score is that spread relative to the larger of the two
magnitudes (0: the same at every layer, 1: one of them is zero), so scores of metrics on different scales compare.
The headline speaks of the first pair (the comparison asked for: the base against the first tuned model), one
sentence per metric, taken in turn from each kind of evidence (what the metrics read: activations, weights), most
changed first; when that gives fewer than :data:`MIN_SENTENCES`, the other pairs' best candidates fill it up.
Control pairs (a random-init model, seed pairs) are yardsticks, not changes: they get no headline sentence.

When the run made intervals (results.json version 2), a sentence gives the interval of its number, and the two
values it sets side by side are compared with :func:`ftprobe.core.intervals.difference` (paired over the same
groups of images): the most against the least changed layer ("within noise" when the difference's interval covers
zero), and the first fine-tune against another from the same base at that layer.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from ftprobe.core.results import Result, Value

from ._access import MetricValues, control_pairs, interval, layer_label, layer_order, report_metrics

__all__ = ["MAX_SENTENCES", "MIN_SENTENCES", "Change", "changes", "findings_html", "headline_sentences",
           "number", "stored_findings"]

MIN_SENTENCES, MAX_SENTENCES = 3, 5


def number(x: float, unit: str = "") -> str:
    """A value in a sentence: 3 significant digits; a percentage (unit ``%``) or a ratio (unit ``relative``) with
    ``%``."""
    if not math.isfinite(x):
        return str(x)
    if unit == "relative":
        x, unit = 100 * x, "%"
    text = f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return f"{text} %" if unit == "%" else text


@dataclass(frozen=True)
class Change:
    """One candidate of the headline: a metric's key for one subject, its most and least changed layers."""

    metric: str
    key: str
    subject: tuple[str, str] | str  # (base, tuned) or a model label
    name: str  # the key's declared name (``CKA``, ``mean top-3 overlap``)
    unit: str
    higher_is_more_similar: bool
    most: tuple[str, float]  # (layer, value) where the models differ most, by the direction
    least: tuple[str, float]  # (layer, value) where they differ least
    most_value: Value
    least_value: Value
    layers: int  # how many layers have a finite value

    @property
    def score(self) -> float:
        a, b = self.most[1], self.least[1]
        scale = max(abs(a), abs(b))
        return abs(a - b) / scale if scale > 0 else 0.0

    def who(self) -> str:
        if isinstance(self.subject, tuple):
            return f"between {self.subject[0]} and {self.subject[1]}"
        return f"of {self.subject}"

    def sentence(self, result: Result) -> str:
        """``CKA between base and tuned falls to 0.41 at conv5 (from 0.98 at conv1).``"""
        (l_most, v_most), (l_least, v_least) = self.most, self.least
        name = self.name[:1].upper() + self.name[1:]
        at_most, at_least = layer_label(result, l_most), layer_label(result, l_least)
        most, least = number(v_most, self.unit), number(v_least, self.unit)
        who = self.who()
        iv = interval(self.most_value, self.key)
        if iv:
            most += f" [{number(iv[0], self.unit)}, {number(iv[1], self.unit)}]"
        if self.layers == 1 or l_most == l_least:
            return f"{name} {who} is {most} at {at_most}."
        if self.higher_is_more_similar:
            order = _layer_rank(result)
            if order.get(l_least, 0) < order.get(l_most, 0):
                text = f"{name} {who} falls to {most} at {at_most} (from {least} at {at_least})."
            else:
                text = f"{name} {who} is lowest at {at_most} ({most}; {least} at {at_least})."
        else:
            text = f"The {self.name} {who} is largest at {at_most} ({most}; smallest: {least} at {at_least})."
        return text + self.noise(result)

    def difference(self, result: Result, other: Value | None = None) -> dict[str, Any] | None:
        """The most changed layer's value minus ``other`` (default: the least changed layer's value), with the
        interval of the difference (paired over the same groups of images), or None without intervals."""
        other = self.least_value if other is None else other
        if not (self.most_value.intervals and other.intervals):
            return None
        try:
            from ftprobe.core.intervals import difference
        except ImportError:  # an ftprobe without intervals
            return None
        level = float((result.resampling or {}).get("level", 0.95))
        return difference(self.most_value, other, self.key, level)

    def noise(self, result: Result) -> str:
        """`` The difference ... is within noise`` when its interval covers 0, else nothing."""
        d = self.difference(result)
        if not d or not d.get("within_noise") or not math.isfinite(d.get("lo", math.nan)):
            return ""
        unit = "%" if self.unit in ("%", "relative") else ""
        scale = 100.0 if self.unit == "relative" else 1.0
        return (f" The difference between the two layers, {number(scale * d['estimate'], unit)} "
                f"[{number(scale * d['lo'], unit)}, {number(scale * d['hi'], unit)}], is within noise.")


def _layer_rank(result: Result) -> dict[str, int]:
    return {n: i for i, n in enumerate(layer_order(result))}


def _first_keys(values: MetricValues) -> list[str]:
    """The first present key of each headline glob (the smallest k of ``overlap_mean@*``)."""
    keys = values.headline_keys()
    firsts: list[str] = []
    for pat in values.declared["headline"]:
        found = [k for k in keys if fnmatch.fnmatchcase(k, pat) and k not in firsts]
        if found:
            firsts.append(found[0])
    return firsts


def changes(result: Result) -> list[Change]:
    """Every headline candidate of the result: per metric with a direction, per first key of its headline globs,
    per subject (its pairs; its models when it has no pair values), in the result's order."""
    out: list[Change] = []
    for metric in report_metrics(result):
        values = MetricValues(result, metric, Path())
        direction = values.direction
        if direction is None:
            continue
        subjects: dict[Any, dict[str, Value]] = dict(values.pairs()) or dict(values.models())
        for key in _first_keys(values):
            for subject, by_layer in subjects.items():
                pts = [(n, float(v.scalars[key]), v) for n, v in by_layer.items()
                       if n != "*" and key in v.scalars and math.isfinite(v.scalars[key])]
                if not pts:
                    continue
                pick_most, pick_least = (min, max) if direction else (max, min)
                most = pick_most(pts, key=lambda p: p[1])
                least = pick_least(pts, key=lambda p: p[1])
                out.append(Change(metric, key, subject, values.value_name(key), values.unit(key), bool(direction),
                                  (most[0], most[1]), (least[0], least[1]), most[2], least[2], len(pts)))
    return out


def _pick(result: Result, candidates: Sequence[Change], first: Any) -> list[Change]:
    """Up to :data:`MAX_SENTENCES` of the first subject's candidates: taken in turn from each kind of evidence
    (what the metric reads: activations, weights ...; the kind whose best candidate changed most first), the most
    changed first within a kind; then, below :data:`MIN_SENTENCES`, the other subjects' best (one per metric key
    while there is room)."""
    ranked = sorted(candidates, key=lambda c: -c.score)
    kinds: dict[str, list[Change]] = {}
    for c in ranked:
        if c.subject == first:
            kinds.setdefault(str((result.metrics.get(c.metric) or {}).get("needs", "")), []).append(c)
    chosen: list[Change] = []
    queues = list(kinds.values())
    while queues and len(chosen) < MAX_SENTENCES:
        for q in queues:
            if q and len(chosen) < MAX_SENTENCES:
                chosen.append(q.pop(0))
        queues = [q for q in queues if q]
    seen = {(c.metric, c.key) for c in chosen}
    for c in ranked:  # too few for the first subject: the other subjects fill up
        if len(chosen) >= MIN_SENTENCES:
            break
        if (c.metric, c.key) not in seen:
            chosen.append(c)
            seen.add((c.metric, c.key))
    for c in ranked:
        if len(chosen) >= MIN_SENTENCES:
            break
        if c not in chosen:
            chosen.append(c)
    return chosen


def headline_sentences(result: Result) -> list[str]:
    """The headline: up to :data:`MAX_SENTENCES` sentences on what changed most (none when no metric declares a
    direction)."""
    controls = set(control_pairs(result))
    cands = [c for c in changes(result) if c.subject not in controls]  # a control is a yardstick, not a change
    if not cands:
        return []
    first: Any = tuple(result.pairs[0]) if result.pairs else None
    if not any(c.subject == first for c in cands):
        first = cands[0].subject
    chosen = _pick(result, cands, first)
    lines = [c.sentence(result) for c in chosen]
    other = _two_tunes(result, chosen, controls)
    if other:
        lines.insert(1, other)
    return lines[:MAX_SENTENCES]


def _two_tunes(result: Result, chosen: Sequence[Change], controls: set[tuple[str, str]]) -> str:
    """The first sentence's layer and value against another tuned model from the same base (fine-tune 1 against
    fine-tune 2 at one layer), with the interval of their paired difference; empty without intervals."""
    for c in chosen:
        if not isinstance(c.subject, tuple):
            continue
        base, tuned = c.subject
        layer = c.most[0]
        by_pair = MetricValues(result, c.metric, Path()).pairs()
        for (b, t), by_layer in by_pair.items():
            v = by_layer.get(layer)
            if b != base or t == tuned or (b, t) in controls or v is None or c.key not in v.scalars:
                continue
            d = c.difference(result, v)
            if not d or not math.isfinite(d.get("lo", math.nan)):
                continue
            name = c.name[:1].upper() + c.name[1:]
            scale, unit = (100.0, "%") if c.unit == "relative" else (1.0, c.unit)
            return (f"At {layer_label(result, layer)}, {name} between {base} and {tuned} "
                    f"({number(c.most[1], c.unit)}) and between {base} and {t} ({number(v.scalars[c.key], c.unit)}) "
                    f"differ by {number(scale * d['estimate'], unit)} [{number(scale * d['lo'], unit)}, "
                    f"{number(scale * d['hi'], unit)}]" + (", within noise." if d["within_noise"] else "."))
        return ""
    return ""


# -- the findings a run stored (``ftprobe demo``: ``run["demo"]["findings"]``) -------------------------------------

def stored_findings(result: Result) -> list[dict[str, Any]]:
    """The findings a run stored in its record (``run[...]["findings"]``: claim, verdict, reason), in order."""
    out: list[dict[str, Any]] = []
    for part in result.run.values():
        if isinstance(part, dict) and isinstance(part.get("findings"), list):
            out += [f for f in part["findings"] if isinstance(f, dict) and f.get("claim")]
    return out


_VERDICT_CLASS = {True: "holds", False: "fails", None: "unknown"}


def findings_html(result: Result) -> str:
    """The stored findings, one line each: the verdict, the claim, and for one that does not hold, why."""
    found = stored_findings(result)
    if not found:
        return ""
    rows = []
    for f in found:
        holds = f.get("holds")
        verdict = str(f.get("verdict") or {True: "holds", False: "does not hold here"}.get(holds, "not measured"))
        why = str(f.get("reason") or "") if holds is not True else ""
        rows.append(f'<li><span class="verdict {_VERDICT_CLASS.get(holds, "unknown")}">{escape(verdict)}</span> '
                    f"{escape(str(f['claim']))}" + (f' <span class="why">— {escape(why)}</span>' if why else "")
                    + "</li>")
    held = sum(f.get("holds") is True for f in found)
    return (f'<p class="findings-head">The study\'s findings on these numbers: {held} of {len(found)} hold.</p>'
            f'<ul class="findings">{"".join(rows)}</ul>')
