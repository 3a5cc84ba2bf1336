"""The models of a comparison: loaded from what the user gave (modules, specs, checkpoints), a module given twice
copied, and each labelled (given labels checked, automatic ones told apart)."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .engine import ModelEntry
from .errors import FtprobeError
from .options import Callbacks, ModelOptions

__all__ = ["load_models"]


def load_models(sources: list[Any], opts: ModelOptions,
                 cb: Callbacks) -> tuple[list[ModelEntry], list[tuple[nn.Module, torch.device]]]:
    """Every model loaded and labelled, and the user's own modules with the device to move them back to."""
    from .loading import is_checkpoint_source, load_model

    n = len(sources)
    archs = list(opts.arch) if isinstance(opts.arch, (list, tuple)) else [opts.arch] * n
    if len(archs) != n:
        raise FtprobeError(f"--arch was given {len(archs)} times for {n} models; give one, or one each")
    ema = opts.ema
    emas = list(ema) if isinstance(ema, (list, tuple)) else [ema if is_checkpoint_source(s) else None for s in sources]
    if len(emas) != n:
        raise FtprobeError(f"ema was given {len(emas)} values for {n} models; give one, or one each")
    labels = _check_labels(opts.labels, n)
    loaded: list[tuple[Any, nn.Module]] = []
    seen_modules: set[int] = set()
    restore: list[tuple[nn.Module, torch.device]] = []
    for i, (src, a) in enumerate(zip(sources, archs)):
        cb.status(f"loading {src if not isinstance(src, nn.Module) else type(src).__name__}…")
        lm = load_model(src, arch=a, trust=opts.trust, label=(labels[i] if labels else None), ema=emas[i],
                        base=loaded[0][0] if loaded else None)  # the base a PEFT adapter is applied to
        module = lm.module
        if isinstance(src, nn.Module):
            first = next(module.parameters(), None)
            if id(module) in seen_modules:
                module = copy.deepcopy(module)  # hooks on one object would fire for both models
                cb.notice(f"model {i} is the same object as an earlier one; comparing a copy")
            elif first is not None:
                restore.append((module, first.device))
            seen_modules.add(id(module))
        loaded.append((lm, module))
    default = ["base"] + (["tuned"] if n == 2 else [f"tuned{i}" for i in range(1, n)])
    names = _unique_labels(_path_labels([
        default[i] if (labels is None and isinstance(src, nn.Module)) else lm.label
        for i, ((lm, _), src) in enumerate(zip(loaded, sources))
    ], sources, [labels is None] * n))
    entries = [ModelEntry(name, m, lm.describe()) for name, (lm, m) in zip(names, loaded)]
    for e, (lm, _) in zip(entries, loaded):
        for note in lm.notes:
            cb.notice(f"{e.label}: {note}")
    return entries, restore


def _check_labels(labels: Sequence[str] | None, n: int) -> list[str] | None:
    if labels is None:
        return None
    labels = [str(lab) for lab in labels]
    if len(labels) != n or not all(labels):
        raise FtprobeError(f"{len(labels)} labels were given for {n} models; give one non-empty label "
                           "per model, in order, the base first (CLI: --label NAME once per model)")
    if len(set(labels)) != len(labels):
        twice = sorted({lab for lab in labels if labels.count(lab) > 1})
        raise FtprobeError(f"the label {twice[0]!r} is given to more than one model; give each model its own")
    return labels


def _path_labels(labels: list[str], sources: Sequence[Any], automatic: Sequence[bool]) -> list[str]:
    """Automatic labels of model files that collide (``run1/model.pt``, ``run2/model.pt`` → both ``model``) become the
    shortest trailing part of their paths that tells them apart (``run1/model``, ``run2/model``)."""
    paths: dict[int, tuple[str, ...]] = {}
    for i, (src, auto) in enumerate(zip(sources, automatic)):
        if auto and isinstance(src, (str, os.PathLike)) and os.path.exists(os.path.expanduser(os.fspath(src))):
            p = Path(os.fspath(src)).expanduser().resolve()
            paths[i] = (*p.parent.parts, p.stem if p.is_file() else p.name)
    out = list(labels)
    for lab in set(labels):
        group = [i for i in paths if labels[i] == lab]
        if len(group) < 2:
            continue
        longest = max(len(paths[i]) for i in group)
        for k in range(2, longest + 1):
            tails = ["/".join(paths[i][-k:]) for i in group]
            if len(set(tails)) == len(tails):
                for i, t in zip(group, tails):
                    out[i] = t
                break
    return out


def _unique_labels(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        if lab in seen:
            seen[lab] += 1
            out.append(f"{lab}#{seen[lab]}")
        else:
            seen[lab] = 1
            out.append(lab)
    return out
