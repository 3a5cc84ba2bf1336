"""The study end to end on the generated world: train (or load) the variants, compare them with every metric on the
pairs the study plotted, check the study's findings on the numbers, and write the report.

One ``ftprobe.compare`` call with all six models and ``pairs="all"`` measures every pair in one pass over the
images (each model runs once per batch). It gives 15 pairs; the demo keeps the five the study plotted
(:data:`PLOTTED`, see :func:`keep_pairs`), so the report shows the study's figures and not every combination.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftprobe.core.results import Result
from ftprobe.demo.findings import Finding, double_finding, figure_lines, findings_html, study_findings
from ftprobe.demo.variants import MODELS, QUICK, SPLITS, Settings, load_or_train
from ftprobe.demo.world import World, export_world

__all__ = ["PLOTTED", "DemoOutcome", "default_threads", "finite_json", "keep_pairs", "run_demo", "write_outputs"]

#: The pairs the study plotted (base, tuned).
PLOTTED: tuple[tuple[str, str], ...] = (
    ("pretrained", "mode_a1"),  # what fine-tuning changed
    ("mode_a1", "mode_a2"),  # run-to-run variation
    ("mode_a1", "mode_b"),  # the learning-rate regime
    ("scratch_init", "scratch"),  # training from scratch against its own initialisation
    ("pretrained", "scratch"),  # pretrained against from scratch
)


@dataclass
class DemoOutcome:
    """What :func:`run_demo` produced."""

    result: Result
    findings: list[Finding]
    summary: list[str]
    report: Path
    from_cache: bool
    wall_s: float  # the whole run, report included
    user_cpu_s: float


def default_threads() -> int:
    """Half the usable cores, at most 4 and at least 1.

    The demo's convolutions are tiny, so extra threads mostly wait on each other; on a 2-core machine shared with
    other jobs, 2 threads made training several times slower than 1 (the spinning threads compete with the jobs).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores // 2))


def write_outputs(result: Result, out_dir: Path, summary_lines: Sequence[str],
                  extra_sections: Any = None) -> Path:
    """Write the report through ``ftprobe.report.write_report`` when that package exists, else ``results.json``.

    ``summary.txt`` (the summary lines) is always written beside it. Returns the report's (or the JSON's) path.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.txt").write_text("\n".join(summary_lines) + "\n")
    if importlib.util.find_spec("ftprobe.report") is not None:
        from ftprobe.report import write_report  # type: ignore[import-not-found]

        return Path(write_report(result, out_dir, summary_lines=list(summary_lines), extra_sections=extra_sections))
    return result.save(out_dir / "results.json")


def _export_eval(world: World, settings: Settings, out_dir: Path) -> Path:
    data = out_dir / "data"
    if (data / "styles" / "eval").exists():
        shutil.rmtree(data / "styles" / "eval")  # a previous run may have used other settings
    idx = range(SPLITS["eval"], SPLITS["eval"] + settings.n_eval)
    return export_world(world, data, photos=[], styles={"eval": idx}, objects=[])["styles/eval"]


def keep_pairs(result: Result, pairs: Sequence[tuple[str, str]]) -> Result:
    """The result restricted to ``pairs`` (in that order): other pairs' values are dropped, per-model values kept.

    Raises:
        KeyError: a pair that the result does not hold.
    """
    missing = [p for p in pairs if tuple(p) not in {tuple(q) for q in result.pairs}]
    if missing:
        raise KeyError(f"the result holds no pair {missing}")
    wanted = {tuple(p) for p in pairs}
    values = [v for v in result.values if v.scope != "pair" or (v.base, v.tuned) in wanted]
    return dataclasses.replace(result, pairs=[tuple(p) for p in pairs], values=values, run=dict(result.run))


def finite_json(obj: Any) -> Any:
    """JSON has no NaN: non-finite floats become None (as ``Result`` does for arrays)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    return obj


def _user_cpu() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def run_demo(
    out_dir: str | Path = "ftprobe-demo",
    *,
    quick: bool = False,
    fresh: bool = False,
    settings: Settings | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = print,
    notice: Callable[[str], None] | None = None,
) -> DemoOutcome:
    """Run the demo: models (cached), one comparison, the findings, and the report in ``out_dir``.

    Args:
        out_dir: output folder (``results.json``, report, ``summary.txt``, the evaluation images under ``data/``).
        quick: tiny settings (:data:`~ftprobe.demo.variants.QUICK`), for CI.
        fresh: retrain even when the cache holds models for these settings.
        settings: explicit settings (overrides ``quick``).
        threads: torch threads while the demo runs (default :func:`default_threads`); restored afterwards.
        log: progress lines.
        notice: ``ftprobe.compare``'s notices.
    """
    wall0, cpu0 = time.perf_counter(), _user_cpu()
    s = settings or (QUICK if quick else Settings())
    out = Path(out_dir)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads())
    try:
        world = World(s.size, s.world_seed)
        models, record, from_cache = load_or_train(s, world, fresh=fresh, log=log)
        eval_dir = _export_eval(world, s, out)
        log(f"comparing {len(MODELS)} models on {s.n_eval} paintings (style labels), {len(s.layers)} layers")
        import ftprobe

        result = ftprobe.compare(
            *[models[m] for m in MODELS], labels=list(MODELS), layers=list(s.layers), data=str(eval_dir),
            pairs="all", options={"*": {"k": s.k}}, preprocess="imagenet", size=s.size, batch_size=128,
            seed=s.seed, device="cpu", notice=notice,
        )
        result = keep_pairs(result, PLOTTED)
        layer_names = [entry["name"] for entry in result.layers]
        findings = study_findings(result, base="pretrained", tuned="mode_a1", layers=layer_names, k=s.k)
        small = record["small_task"]
        findings.append(double_finding(small["single"], small["double"], small["measure"],
                                       "objects in paintings, multi-label", medium="the painting styles"))
        summary = _summary(result, record, findings, layer_names, s, from_cache)
        wall, cpu = time.perf_counter() - wall0, _user_cpu() - cpu0
        result.run["demo"] = finite_json({
            "settings": dataclasses.asdict(s), "quick": s == QUICK, "models": list(MODELS),
            "plotted_pairs": [list(p) for p in PLOTTED], "findings": [f.to_dict() for f in findings],
            "accuracy": record["accuracy"], "small_task": small, "history": record["history"],
            "from_cache": from_cache, "threads": torch.get_num_threads(),
            "seconds": {"wall_before_report": wall, "user_cpu_before_report": cpu,
                        "training_wall": None if from_cache else record.get("train_seconds")},
        })
        table = dict(record["accuracy"])
        for route in ("single", "double"):
            for i, value in enumerate(small[route]):
                table[f"{route} fine-tuning, small task (objects), seed {i}"] = {"mAP": value}
        section = ("The study's findings in this world", findings_html(findings, table), [])
        report = write_outputs(result, out, summary, extra_sections=[section])
    finally:
        torch.set_num_threads(previous)
    wall, cpu = time.perf_counter() - wall0, _user_cpu() - cpu0
    return DemoOutcome(result, findings, summary, report, from_cache, wall, cpu)


def _summary(result: Result, record: dict[str, Any], findings: list[Finding], layers: list[str], s: Settings,
             from_cache: bool) -> list[str]:
    lines = ["The study in a small generated world: a CNN pretrained on photo-like scenes (objects) is fine-tuned "
             "on paintings in five styles (style labels), in the study's variants, and compared layer by layer on "
             f"{s.n_eval} held-out paintings."]
    lines.append("Accuracy (top-1 %): " + "; ".join(
        f"{name} {acc['top1']:.1f}" for name, acc in record["accuracy"].items()) + ".")
    lines += figure_lines(result, PLOTTED, layers, s.k)
    lines.append("The study's findings, checked on these numbers:")
    lines += [f.line() for f in findings]
    held = sum(f.holds is True for f in findings)
    lines.append(f"{held} of {len(findings)} findings hold in this small world"
                 + (" (models from the cache)." if from_cache else "."))
    return lines
