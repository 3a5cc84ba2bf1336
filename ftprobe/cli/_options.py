"""Options shared by commands, declared once with one default each, and their parsing (``-o METRIC.KEY=VALUE``)."""

from __future__ import annotations

import json
import os
from typing import Any

import click

__all__ = ["arch_option", "arch_value", "batch_size_option", "device_option", "ema_option", "limit_option",
           "parse_metric_options", "preprocess_option", "seed_option", "size_option", "trust_option",
           "workers_count", "workers_option"]

device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (a GPU when there is one), cpu, cuda, cuda:1.")
batch_size_option = click.option("--batch-size", "-b", type=click.IntRange(min=1), default=32, show_default=True)
limit_option = click.option("--limit", type=click.IntRange(min=1), help="Use a seeded random subset of N images.")
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed of --limit.")
workers_option = click.option(
    "--workers", default="auto", show_default=True,
    help="DataLoader worker processes: a number, or auto (4 when streaming to a GPU, else 0).")
trust_option = click.option("--trust-checkpoint", is_flag=True,
                            help="Allow pickled whole modules (runs code from the file).")
ema_option = click.option("--ema", is_flag=True,
                          help="Use the EMA weights of checkpoints that hold two sets (timm's state_dict_ema, "
                               "torchvision's model_ema); without it, the training weights.")
preprocess_option = click.option("--preprocess", type=click.Choice(["imagenet", "caffe", "none"]), default="imagenet",
                                 show_default=True,
                                 help="Input normalisation: torchvision's, Keras/Lucid 'caffe' (BGR), or none.")
size_option = click.option("--size", type=click.IntRange(min=8),
                           help="Shorter side resized to SIZE, then centre crop SIZE×SIZE (default: the base model's "
                                "configured image size, e.g. a Hugging Face config's image_size, else 224).")


def arch_option(multiple: bool = True) -> Any:
    """``--arch``: once for all models or once per model (``multiple``), or once for the one model a command takes."""
    if not multiple:
        return click.option("--arch", metavar="SPEC",
                            help="Architecture of a state-dict checkpoint (torchvision:NAME, timm:NAME).")
    return click.option("--arch", multiple=True, metavar="SPEC",
                        help="Architecture of state dicts: torchvision:NAME or timm:NAME (once for all, or once per "
                             "model).")


def arch_value(arch: tuple[str, ...]) -> Any:
    """Repeated ``--arch`` as :func:`ftprobe.compare` takes it: None, one for all, or one per model."""
    return None if not arch else (arch[0] if len(arch) == 1 else list(arch))


def workers_count(value: str, device: str) -> int:
    """``--workers``: a number, or ``auto`` (4 when streaming to a GPU, else 0)."""
    if value == "auto":
        import torch

        gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        return min(4, os.cpu_count() or 1) if gpu else 0
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or auto", param_hint="--workers") from None
    if n < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--workers")
    return n


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "yes", "on"):
            return True
        if low in ("false", "no", "off"):
            return False
        return text


def parse_metric_options(items: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``("cka.estimator=minibatch", "topk_*.k=[100,1000]")`` → ``{"cka": {...}, "topk_*": {...}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        target, eq, value = item.partition("=")
        metric, dot, key = target.rpartition(".")
        if not eq or not dot or not metric or not key:
            raise click.BadParameter(f"{item!r} is not METRIC.KEY=VALUE (e.g. cka.estimator=minibatch)",
                                     param_hint="-o/--option")
        out.setdefault(metric, {})[key] = _value(value)
    return out
