"""``ftprobe demo``: the study end to end on a generated art world, or that world exported as PNG folders."""

from __future__ import annotations

from pathlib import Path

import click

from .app import App


@click.command(short_help="Run the study end to end on a generated art world (trains small CNNs on CPU).")
@click.option("--out", "out_dir", metavar="DIR", default="ftprobe-demo", show_default=True,
              help="Folder for results.json, the report and the evaluation images.")
@click.option("--quick", is_flag=True, help="Tiny settings (CI): well under a minute.")
@click.option("--fresh", is_flag=True, help="Retrain even if the models for these settings are cached.")
@click.option("--export-data", "export_dir", metavar="DIR",
              help="Only write the generated world as PNG folders into DIR (photos/, styles/, objects/), then stop.")
@click.option("--threads", type=click.IntRange(min=1), help="torch threads (default: half the cores, at most 4).")
@click.pass_obj
def demo(app: App, out_dir: str, quick: bool, fresh: bool, export_dir: str | None, threads: int | None) -> None:
    """Pretrain a small CNN on photo-like scenes, fine-tune it on paintings in the study's variants (Mode A twice,
    Mode B, from scratch), compare them layer by layer with every metric, and say which of the study's findings hold.

    Models are cached in ~/.cache/ftprobe/demo/ (XDG_CACHE_HOME is honoured), so a second run only compares.
    """
    if export_dir is not None:
        _export(app, Path(export_dir), quick)
        return
    from ftprobe.demo.study import run_demo

    outcome = run_demo(out_dir, quick=quick, fresh=fresh, threads=threads, log=app.info, notice=app.notice)
    for line in outcome.summary:
        app.write_raw(line)
    app.info(f"report written to {outcome.report}")
    app.info(f"{outcome.wall_s:.1f} s wall, {outcome.user_cpu_s:.1f} s user CPU"
             + (" (models from the cache)" if outcome.from_cache else ""))


def _export(app: App, root: Path, quick: bool) -> None:
    from ftprobe.demo.variants import QUICK, SPLITS, Settings
    from ftprobe.demo.world import World, export_world

    s = QUICK if quick else Settings()
    world = World(s.size, s.world_seed)
    n_styles, n_objects = (150, 60) if quick else (1020, 300)
    written = export_world(
        world, root, photos=range(120 if quick else 600),
        styles={"train": range(SPLITS["train"], SPLITS["train"] + n_styles),
                "test": range(SPLITS["test"], SPLITS["test"] + n_styles // 2)},
        objects=range(SPLITS["small_train"], SPLITS["small_train"] + n_objects),
    )
    for what, path in written.items():
        app.write_raw(f"{what}: {path}")
    app.info(f"try: ftprobe compare BASE TUNED --data {written['styles/test']} --size {s.size}")
