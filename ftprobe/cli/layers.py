"""``ftprobe layers MODEL``: the discovery twin of ``--layers``."""

from __future__ import annotations

import click

from ._options import arch_option, ema_option, trust_option
from .app import App


@click.command(short_help="List a model's layers, output shapes and aliases.")
@click.argument("model")
@click.option("--filter", "pattern", metavar="GLOB", help="Only names (or aliases) matching, e.g. 'inception4*'.")
@click.option("--input-size", type=int, help="Image size of the probe forward (default: the model's, else 224).")
@arch_option(multiple=False)
@trust_option
@ema_option
@click.pass_obj
def layers(app: App, model: str, pattern: str | None, input_size: int | None, arch: str | None,
           trust_checkpoint: bool, ema: bool) -> None:
    """List the hookable layers of MODEL in execution order, with output shapes (one forward on a zero batch),
    aliases, and modules that run more than once per forward (listed as name:2, ...). MODEL is anything compare takes:
    a spec, a checkpoint file, or a model folder."""
    from rich.table import Table

    from ftprobe.core.layers import list_layers, natural_layers, probe
    from ftprobe.core.loading import load_model

    lm = load_model(model, arch=arch, trust=trust_checkpoint, ema=ema or None)
    for note in lm.notes:
        app.notice(f"{lm.label}: {note}")
    infos = list_layers(lm.module, pattern, input_size=input_size)
    natural = set(natural_layers(lm.module, probe(lm.module, input_size))) if not pattern else set()
    table = Table(title=f"layers of {lm.label} ({type(lm.module).__name__})", title_justify="left")
    for col in ("#", "name", "type", "output shape", "aliases", "note"):
        table.add_column(col, justify="right" if col == "#" else "left")
    for i, info in enumerate(infos):
        notes = []
        if info.calls > 1:
            notes.append(f"runs {info.calls}× per forward")
        if info.inplace:
            notes.append("modified in place later")
        if info.name in natural:
            notes.append("default")
        shape = "×".join(map(str, info.shape)) if info.shape is not None else "no tensor"
        table.add_row(str(i), info.name, info.type, shape, ", ".join(info.aliases), "; ".join(notes))
    app.print(table)
    if not infos:
        app.abort(f"no layer matches {pattern!r}")
