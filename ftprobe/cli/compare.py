"""``ftprobe compare BASE TUNED [TUNED ...]``: the main job."""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from ._lock import output_lock
from ._options import (
    arch_option,
    arch_value,
    batch_size_option,
    device_option,
    ema_option,
    limit_option,
    parse_metric_options,
    preprocess_option,
    seed_option,
    size_option,
    trust_option,
    workers_count,
    workers_option,
)
from .app import App


def _shorthands(disabled: tuple[str, ...] = ()) -> dict[str, dict[str, str]]:
    """The shorthand flags, from the metrics' declarations (``OptionHelp(flag=...)``): the flag's parameter name
    (``cka_cross`` for ``--cka-cross``) → {metric: the option it sets}. A metric whose plugin fails to load has
    none (it cannot run either)."""
    from ftprobe.core.errors import PluginError
    from ftprobe.core.metric import OptionHelp
    from ftprobe.core.registry import metric_specs

    out: dict[str, dict[str, str]] = {}
    for name, spec in metric_specs(disabled).items():
        try:
            cls = spec.load()
        except PluginError:
            continue
        for option, doc in cls.option_help.items():
            if isinstance(doc, OptionHelp) and doc.flag:
                out.setdefault(doc.flag.replace("-", "_"), {})[name] = option
    return out


@click.command(short_help="Compare a base model with fine-tuned versions, layer by layer.")
@click.argument("base")
@click.argument("tuned", nargs=-1, required=True)
@click.option("--layers", "-l", multiple=True, metavar="NAME",
              help="Layer name, glob or alias (repeatable), e.g. mixed4d or 'inception4*'. Default: natural blocks. "
                   "base=NAME, tuned=NAME or LABEL=NAME give one model's layers.")
@click.option("--tuned-layers", multiple=True, metavar="NAME",
              help="The tuned models' layers when they differ from --layers (another architecture, e.g. a ViT's "
                   "blocks.11): lists of equal length pair layer i with layer i; CKA gives the base × tuned matrix.")
@click.option("--metrics", "-m", metavar="NAMES", help="Comma-separated metric names or globs (default: all).")
@click.option("--data", "-d", metavar="PATH", help="Image folder (class sub-folders = labels) or CSV of path,label.")
@click.option("--pairs", type=click.Choice(["first", "all"]), default="first", show_default=True,
              help="first: each tuned model against the base; all: every pair.")
@arch_option()
@trust_option
@ema_option
@click.option("--label", "label", multiple=True, metavar="NAME",
              help="Name of a model in tables and reports: once per model, in order (BASE first). Default: the file "
                   "name, or the shortest part of the path that tells two files of one name apart.")
@batch_size_option
@limit_option
@seed_option
@device_option
@preprocess_option
@size_option
@click.option("--input-size", type=int, help="Probe forward image size when no --data is given.")
@workers_option
@click.option("--amp", type=click.Choice(["bf16", "fp16"]),
              help="Forwards under autocast (GPU); statistics stay float64.")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Save metric states every N batches to DIR/checkpoint.pt (always saved on Ctrl-C).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from --out DIR/checkpoint.pt.")
@click.option("--intervals", is_flag=True,
              help="Give every headline value an interval over images (delete-one-group jackknife; keeps each metric "
                   "state once per group: the notice before the pass says the cost).")
@click.option("--interval-groups", type=click.IntRange(min=2), default=20, show_default=True, metavar="G",
              help="Groups of images for --intervals.")
@click.option("--level", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95,
              show_default=True, help="Interval level for --intervals.")
@click.option("--random-init", is_flag=True,
              help="Control: also compare BASE with its architecture freshly initialised (what CKA gives for a "
                   "network that learnt nothing).")
@click.option("--seed-pair", "seed_pairs", multiple=True, metavar="A,B",
              help="Two fine-tunes of one recipe (by label): compared with each other as the seed-to-seed noise "
                   "floor (repeatable).")
@click.option("--option", "-o", "raw_options", multiple=True, metavar="METRIC.KEY=VALUE",
              help="A metric option, e.g. -o cka.estimator=minibatch -o 'topk_*.k=[100,1000]'; `ftprobe metrics "
                   "--options` lists every installed metric's options with their help.")
@click.option("--k", "k", multiple=True, metavar="K", help="Top-k size(s) for top-k metrics (repeatable; 'all').")
@click.option("--score", type=click.Choice(["mean", "max"]), help="Channel score of top-k metrics.")
@click.option("--cka-cross", is_flag=True, default=None, help="Also compute the cross-layer CKA matrix.")
@click.option("--cka-features", type=click.Choice(["gap", "flatten"]), help="CKA features (default gap).")
@click.option("--cka-estimator", type=click.Choice(["exact", "minibatch"]), help="CKA estimator (default exact).")
@click.option("--disable-metric", "disabled", multiple=True, metavar="NAME", help="Leave a metric out.")
@click.option("--json", "json_path", metavar="PATH|-", help="Write the results as JSON to PATH ('-': stdout only).")
@click.option("--out", "out_dir", metavar="DIR", default="ftprobe-out", show_default=True,
              help="Folder for results.json, figures/ and report.html (and checkpoint.pt).")
@click.pass_obj
def compare(app: App, base: str, tuned: tuple[str, ...], layers: tuple[str, ...], tuned_layers: tuple[str, ...],
            metrics: str | None,
            data: str | None, pairs: str, arch: tuple[str, ...], trust_checkpoint: bool, ema: bool,
            label: tuple[str, ...],
            batch_size: int,
            limit: int | None, seed: int, device: str, preprocess: str, size: int | None, input_size: int | None,
            workers: str, amp: str | None, checkpoint_every: int, resume: bool, intervals: bool,
            interval_groups: int, level: float, random_init: bool, seed_pairs: tuple[str, ...],
            raw_options: tuple[str, ...],
            k: tuple[str, ...], score: str | None,
            cka_cross: bool | None, cka_features: str | None, cka_estimator: str | None,
            disabled: tuple[str, ...], json_path: str | None, out_dir: str) -> None:
    """Compare BASE with each TUNED model on the selected layers, in one pass over --data.

    Metrics whose needs are not met (no --data, no labels) are skipped with a notice unless named in --metrics.
    """
    from ftprobe.api import run_comparison
    from ftprobe.core.options import Callbacks, DataOptions, ModelOptions, RunOptions

    from .render import metric_tables, summary_lines

    options = parse_metric_options(raw_options)
    shorthand: dict[str, Any] = {
        "k": [_k(v) for v in k] if k else None,
        "score": score, "cka_cross": cka_cross, "cka_features": cka_features, "cka_estimator": cka_estimator,
    }
    given = {flag: value for flag, value in shorthand.items() if value is not None}
    declared = _shorthands(disabled) if given else {}
    for flag, value in given.items():
        if flag == "k" and len(value) == 1:
            value = value[0]
        for target, key in declared.get(flag, {}).items():
            options.setdefault(target, {})[key] = value
    targets = [Path(out_dir)] if not json_path else []
    targets += [Path(json_path).parent] if json_path not in (None, "-") else []
    for target in targets:
        if target.exists() and not target.is_dir():
            raise click.BadParameter(f"{str(target)!r} exists and is not a folder", param_hint="--out/--json")
    if label and len(label) != 1 + len(tuned):
        raise click.BadParameter(f"given {len(label)} times for {1 + len(tuned)} models; give one NAME per model, "
                                 "in order (BASE first)", param_hint="--label")
    quiet_json = json_path == "-"
    rank0 = os.environ.get("RANK", "0") == "0"
    if not rank0 or quiet_json:
        app.quiet = True
    with ExitStack() as stack:
        if rank0:  # torchrun: rank 0 writes, so only rank 0 holds the output
            for target, option in _outputs(out_dir, json_path, checkpoint_every, resume):
                stack.enter_context(output_lock(target, option, command=" ".join(_argv())))
        with app.feedback(f"loading {base}…") as feedback:
            result = run_comparison(
                base, *tuned, layers=_layers_arg(layers, tuned_layers), tuned_layers=list(tuned_layers) or None,
                data=data, metrics=metrics, options=options, disabled=disabled,
                models=ModelOptions(arch=arch_value(arch), trust=trust_checkpoint, ema=ema or None,
                                    labels=list(label) or None),
                data_options=DataOptions(batch_size=batch_size, limit=limit, seed=seed, preprocess=preprocess,
                                         size=size, workers=workers_count(workers, device)),
                run=RunOptions(device=device, pairs=pairs, input_size=input_size,
                               checkpoint=Path(out_dir) / "checkpoint.pt", checkpoint_every=checkpoint_every,
                               resume=resume, amp=amp, intervals=intervals, interval_groups=interval_groups,
                               level=level, random_init=random_init, seed_pairs=list(seed_pairs), argv=_argv()),
                callbacks=Callbacks(notice=app.notice, **feedback.callbacks),
            )
        if not rank0:  # torchrun: every rank holds the merged result; rank 0 writes it
            return
        if quiet_json:
            app.write_raw(result.to_json())
        else:
            for w in result.warnings:  # first: an interrupted run's warning speaks of "the values below"
                app.warn(w)
            for table in metric_tables(result):
                app.print(table)
            for line in summary_lines(result):
                app.info(line)
            if json_path:
                app.info(f"results written to {result.save(json_path)}")
            else:
                from ftprobe.report import write_report

                with app.status("rendering report…"):
                    html = write_report(result, out_dir)
                app.info(f"results, figures and report written to {Path(out_dir)} (open {html})")
    if result.run.get("interrupted"):
        raise SystemExit(130)


def _outputs(out_dir: str, json_path: str | None, checkpoint_every: int, resume: bool) -> list[tuple[str, str]]:
    """What this run writes, to lock: the --out folder (results, report, checkpoint) or the --json file."""
    if not json_path:
        return [(out_dir, "--out")]
    targets = [] if json_path == "-" else [(json_path, "--json")]
    if checkpoint_every or resume:
        targets.append((out_dir, "--out"))
    return targets


def _layers_arg(layers: tuple[str, ...], tuned_layers: tuple[str, ...]) -> Any:
    """``--layers`` as the API takes it: a list, or ``{"base": [...], "tuned": [...], LABEL: [...]}`` when items carry
    a ``base=`` / ``tuned=`` / ``LABEL=`` prefix (module paths never hold ``=``)."""
    if not any("=" in item for item in layers):
        return list(layers) or None
    out: dict[str, list[str]] = {}
    for item in layers:
        who, eq, name = item.rpartition("=")
        who = who if eq else "base"
        if not name or (eq and not who):
            raise click.BadParameter(f"{item!r} is not NAME or MODEL=NAME (base=layer4, tuned=blocks.11)",
                                     param_hint="--layers")
        out.setdefault(who, []).append(name)
    if tuned_layers and "tuned" in out:
        raise click.BadParameter("the tuned layers are given twice: use --tuned-layers or --layers tuned=NAME",
                                 param_hint="--tuned-layers")
    return out


def _argv() -> list[str]:
    from . import ARGV

    return ["ftprobe", *ARGV]


def _k(v: str) -> Any:
    if v == "all":
        return "all"
    try:
        k = int(v)
    except ValueError:
        raise click.BadParameter(f"{v!r} is not a whole number or 'all'", param_hint="--k") from None
    if k < 1:
        raise click.BadParameter("must be at least 1", param_hint="--k")
    return k
