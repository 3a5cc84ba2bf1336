"""``ftprobe visualize MODEL [MODEL ...] --layer L``: what a channel responds to, before and after fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ._options import arch_option, device_option, preprocess_option, trust_option
from .app import App


@click.command(short_help="Render images that maximise chosen channels of a layer, one row per model.")
@click.argument("models", nargs=-1, required=True)
@click.option("--layer", "-l", required=True, metavar="NAME", help="One layer name or alias, e.g. mixed4d.")
@click.option("--channels", metavar="LIST", help="Channels to render, e.g. 3,17.")
@click.option("--pick", type=click.Choice(["most-changed", "overlap-extremes"]),
              help="Choose the channels: the most-changed filters (r_c, needs two models) or the lowest, median and "
                   "highest top-k overlap (needs --results).")
@click.option("--results", "results_path", metavar="PATH", help="results.json of `ftprobe compare` (overlap-extremes).")
@click.option("--k", "k", metavar="K", help="Which overlap@K of the results file (default: the first it holds).")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="How many most-changed filters.")
@click.option("--steps", type=click.IntRange(min=0), default=512, show_default=True,
              help="Optimisation steps (the study used 2048).")
@click.option("--size", type=click.IntRange(min=8), default=224, show_default=True,
              help="Image side in pixels (64-128 for a quick look on a CPU).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the start image and the transforms.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="Adam learning rate.")
@preprocess_option
@click.option("--transforms", type=click.Choice(["standard", "none"]), default="standard", show_default=True,
              help="Lucid's random transforms at every step (pad 12, jitter 8, scale, rotation, jitter 4: pixel "
                   "sizes made for 128-224 px images), or none (sharper but less robust pictures, for small models "
                   "and images).")
@click.option("--input-size", type=int, help="Resize the transformed image to this side (models with a fixed size).")
@arch_option()
@trust_option
@device_option
@click.option("--out", "out_path", metavar="PNG", default="ftprobe-out/featvis.png", show_default=True,
              help="The grid image; its settings and activations go to the .json beside it.")
@click.pass_obj
def visualize(app: App, models: tuple[str, ...], layer: str, channels: str | None, pick: str | None,
              results_path: str | None, k: str | None, top: int, steps: int, size: int, seed: int, lr: float,
              preprocess: str, transforms: str, input_size: int | None, arch: tuple[str, ...],
              trust_checkpoint: bool, device: str, out_path: str) -> None:
    """Optimise one image per channel of --layer for each MODEL (Lucid's feature visualisation) and write a grid:
    one row per model, one column per channel, captioned layer:channel and the value that chose the channel.

    Models are given as in `compare`: checkpoint paths (with --arch for state dicts) or specs.
    """
    from ftprobe.api import resolve_device
    from ftprobe.core.errors import FtprobeError

    if (channels is None) == (pick is None):
        raise FtprobeError("give either --channels (e.g. --channels 3,17) or --pick most-changed|overlap-extremes.")
    if pick == "overlap-extremes" and results_path is None:
        raise FtprobeError("--pick overlap-extremes reads the overlaps from a results file: add --results "
                           "ftprobe-out/results.json (written by `ftprobe compare ... --data DIR`).")
    if pick == "most-changed" and len(models) < 2:
        raise FtprobeError("--pick most-changed compares two models: give the base and the fine-tuned one.")
    if len(arch) not in (0, 1, len(models)):
        raise FtprobeError(f"--arch was given {len(arch)} times for {len(models)} models; give one, or one each.")
    chosen = _parse_channels(channels) if channels is not None else None
    _run(app, models, layer, chosen, pick, results_path, k, top, steps, size, seed, lr, preprocess,
         None if transforms == "standard" else [], input_size,
         list(arch) if len(arch) > 1 else [arch[0] if arch else None] * len(models), trust_checkpoint,
         str(resolve_device(device)), Path(out_path))


def _parse_channels(text: str) -> list[int]:
    from ftprobe.core.errors import FtprobeError

    try:
        out = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as exc:
        raise FtprobeError(f"--channels takes comma-separated integers such as 3,17; got {text!r}.") from exc
    if not out:
        raise FtprobeError("--channels is empty; give channel numbers such as 3,17.")
    return out


def _run(app: App, models: tuple[str, ...], layer: str, chosen: list[int] | None, pick: str | None,
         results_path: str | None, k: str | None, top: int, steps: int, size: int, seed: int, lr: float,
         preprocess: str, transforms: list[Any] | None, input_size: int | None, archs: list[str | None], trust: bool,
         device: str, out_path: Path) -> None:
    from rich.table import Table

    from ftprobe.core.loading import load_model
    from ftprobe.viz import channel_count, pick_most_changed, pick_overlap_extremes, resolve_layer
    from ftprobe.viz.featvis import visualize_channels
    from ftprobe.viz.grid import save_feature_grid

    loaded = [load_model(m, arch=a, trust=trust, map_location=device) for m, a in zip(models, archs)]
    for lm in loaded:
        for note in lm.notes:
            app.notice(f"{lm.label}: {note}")
    resolved = resolve_layer(loaded[0].module, layer, input_size or size, label=loaded[0].label)
    chosen_by = None
    if pick == "most-changed":
        chosen_by = pick_most_changed(loaded[0].module, loaded[1].module, resolved.name, channel_count(resolved),
                                      n=top)
    elif pick == "overlap-extremes":
        kk: Any = None if k is None else (k if k == "all" else int(k))
        chosen_by = pick_overlap_extremes(results_path, [layer, resolved.name], k=kk,
                                          pair=(loaded[0].label, loaded[1].label) if len(loaded) > 1 else None)
    channels = list(chosen_by.channels) if chosen_by is not None else list(chosen or [])
    if chosen_by is not None:
        app.info(f"channels {', '.join(map(str, channels))} of {resolved.name}, chosen by {chosen_by.source}")
    vis = []
    with app.progress(steps * len(loaded), "optimising") as advance:
        for lm in loaded:
            vis.append(visualize_channels(lm.module, layer, channels, steps=steps, size=size, seed=seed, lr=lr,
                                          preprocess=preprocess, transforms=transforms, input_size=input_size,
                                          label=lm.label,
                                          progress=advance))
    table = Table(title=f"feature visualisation of {resolved.name}"
                        + (f" ({resolved.spec})" if resolved.via_alias else ""), title_justify="left")
    table.add_column("model")
    for i, c in enumerate(channels):
        head = f"ch {c}" + (f"\n{chosen_by.caption(i)}" if chosen_by is not None else "")
        table.add_column(head, justify="right")
    for v in vis:
        table.add_row(v.model, *(f"{a:.4g}" for a in v.activation.tolist()))
    app.print(table)
    app.info("cells: the channel's spatial-mean activation on its optimised image")
    path = save_feature_grid(vis, out_path, chosen_by)
    app.info(f"grid written to {path} (settings in {path.with_suffix('.json')})")
