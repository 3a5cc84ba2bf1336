"""``ftprobe top-images BASE TUNED --layer L --channels 3,17 --data PATH --out grid.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._options import (
    arch_option,
    arch_value,
    batch_size_option,
    device_option,
    ema_option,
    limit_option,
    preprocess_option,
    seed_option,
    size_option,
    trust_option,
    workers_count,
    workers_option,
)
from .app import App


def _channels(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    try:
        chans = [int(c) for c in value.replace(" ", "").split(",") if c]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of channel numbers, e.g. 3,17") from None
    if not chans or any(c < 0 for c in chans):
        raise click.BadParameter(f"{value!r}: give channel numbers ≥ 0, e.g. --channels 3,17")
    return chans


def _k(ctx: click.Context, param: click.Parameter, value: str) -> Any:
    if value == "all":
        return "all"
    try:
        k = int(value)
    except ValueError:
        k = 0
    if k < 1:
        raise click.BadParameter(f"{value!r}: give a positive number of images, or 'all'")
    return k


@click.command("top-images", short_help="Draw channels' top-k images for a base and a tuned model side by side.")
@click.argument("base")
@click.argument("tuned")
@click.option("--layer", "-l", required=True, metavar="NAME", help="One layer name or alias, e.g. mixed4d.")
@click.option("--channels", "-c", required=True, callback=_channels, metavar="C1,C2",
              help="Comma-separated channel numbers, one grid row each.")
@click.option("--data", "-d", required=True, metavar="PATH", help="Image folder or CSV of path,label.")
@click.option("--out", "out_path", default="top-images.png", show_default=True, metavar="FILE.png")
@click.option("--k", "k", default="100", show_default=True, callback=_k,
              help="Top-k set size (images in both models' sets get a frame); 'all' for every positive image.")
@click.option("--show", type=click.IntRange(min=1), default=8, show_default=True, help="Images drawn per model.")
@click.option("--score", type=click.Choice(["mean", "max"]), default="mean", show_default=True,
              help="Channel score: spatial mean (the study's) or max.")
@arch_option()
@trust_option
@ema_option
@batch_size_option
@limit_option
@seed_option
@device_option
@preprocess_option
@size_option
@workers_option
@click.option("--json", "json_path", metavar="PATH", help="Also save the run's results.json here.")
@click.pass_obj
def top_images(app: App, base: str, tuned: str, layer: str, channels: list[int], data: str, out_path: str, k: Any,
               show: int, score: str, arch: tuple[str, ...], trust_checkpoint: bool, ema: bool, batch_size: int,
               limit: int | None, seed: int, device: str, preprocess: str, size: int | None, workers: str,
               json_path: str | None) -> None:
    """Run a top-k comparison of BASE and TUNED on one layer over --data, then draw, for each of --channels, its
    top images in both models side by side (shared images framed, class labels under them)."""
    from ftprobe.api import compare
    from ftprobe.core.errors import FtprobeError
    from ftprobe.report import draw_topk_grid

    if not out_path.lower().endswith(".png"):
        raise click.BadParameter(f"{out_path!r}: the grid is a PNG; give a file name ending in .png",
                                 param_hint="--out")
    def check_layer(records: list[dict[str, Any]]) -> None:
        """Right after the probe, before any image is streamed: one layer, and channels it has."""
        from ftprobe.core.views import num_channels

        if len(records) != 1:
            names = ", ".join(r["name"] for r in records)
            raise FtprobeError(f"--layer {layer!r} matches {len(records)} layers ({names}); name exactly one")
        [rec] = records
        n = num_channels(rec.get("shape") or (), rec.get("layout", "auto"))
        bad = [c for c in channels if c >= n]
        if bad:
            raise FtprobeError(f"--channels: layer {rec['name']!r} has {n} channels; pick channels in 0..{n - 1} "
                               f"(got {bad})")  # the wording of the grid's own check

    with app.feedback(f"loading {base}…") as feedback:
        result = compare(
            base, tuned, layers=[layer], data=data, metrics="topk_overlap",
            options={"topk_overlap": {"k": k, "score": score}},
            arch=arch_value(arch), trust=trust_checkpoint, ema=ema or None, batch_size=batch_size, limit=limit,
            seed=seed, device=device, preprocess=preprocess, size=size, workers=workers_count(workers, device),
            notice=app.notice, on_prepared=check_layer, **feedback.callbacks,
        )
    name = result.layers[0]["name"]
    if json_path:
        result.save(json_path)
    with app.status("drawing the grid…"):
        path = draw_topk_grid(result, name, channels, Path(out_path), show=show if k == "all" else min(show, k))
    overlap = next((v.arrays.get(f"overlap@{k}") for v in result.select("topk_overlap", name) if v.scope == "pair"),
                   None)
    for c in channels:
        if overlap is not None and c < len(overlap):
            app.info(f"channel {c}: top-{k} overlap {overlap[c]:.0f}%")
    for w in result.warnings:
        app.warn(w)
    app.info(f"grid written to {path}")
