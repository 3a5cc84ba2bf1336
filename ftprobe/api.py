"""``ftprobe.compare``: the Python API behind ``ftprobe compare`` (module ``ftprobe.api``). CLI and API run it."""

from __future__ import annotations

import dataclasses
import datetime
import itertools
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .core.checkpoint import Checkpointer, fingerprint
from .core.distributed import DistInfo, gather_list, init_from_env, merge_metrics, reduce_stats
from .core.engine import Engine, ModelEntry
from .core.entries import load_models
from .core.errors import FtprobeError
from .core.intervals import Resampling
from .core.metric import RunContext
from .core.options import Callbacks, DataOptions, ModelOptions, RunOptions, quiet
from .core.plan import MetricsArg, select_metrics
from .core.results import Result

__all__ = ["Callbacks", "DataOptions", "ModelOptions", "RunOptions", "compare", "make_pairs", "resolve_device",
           "run_comparison", "select_metrics"]

def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"`` takes a GPU when there is one."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise FtprobeError(f"--device {device!r} is not a device torch knows; use auto, cpu, cuda or cuda:N") from exc
    if dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise FtprobeError(f"--device {device!r}: ftprobe runs on cpu or cuda (auto picks)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FtprobeError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return dev


def make_pairs(n_models: int, pairs: str) -> list[tuple[int, int]]:
    """``"first"``: each tuned model against the base; ``"all"``: every pair of models."""
    if n_models < 2:
        raise FtprobeError("compare needs a base model and at least one tuned model")
    if pairs == "first":
        return [(0, i) for i in range(1, n_models)]
    if pairs == "all":
        return list(itertools.combinations(range(n_models), 2))
    raise FtprobeError(f"--pairs must be 'first' or 'all', not {pairs!r}")


def _as_list(layers: str | Sequence[str] | None) -> list[str]:
    return [] if layers is None else [layers] if isinstance(layers, str) else [str(x) for x in layers]


def _layer_map(layers: Any, tuned_layers: Any) -> dict[str, list[str]]:
    """``layers`` / ``tuned_layers`` as ``{"base": [...], "tuned": [...], label: [...]}`` (empty lists left out)."""
    out = ({str(k): _as_list(v) for k, v in layers.items()} if isinstance(layers, Mapping)
           else {"base": _as_list(layers)})
    if tuned_layers is not None:
        if "tuned" in out:
            raise FtprobeError("the tuned models' layers were given twice (tuned_layers= and layers={'tuned': ...}); "
                               "give them once")
        out["tuned"] = _as_list(tuned_layers)
    return {k: v for k, v in out.items() if v}


def _layers_per_model(
    layer_map: Mapping[str, list[str]], labels: Sequence[str]
) -> tuple[list[str], dict[int, list[str]]]:
    """The base's layer specs and, per tuned model index, its own (from ``"tuned"`` or its label)."""
    unknown = [k for k in layer_map if k not in ("base", "tuned", *labels)]
    if unknown:
        raise FtprobeError(f"layers were given for {unknown[0]!r}, which is no model here; use 'base', 'tuned' or a "
                           f"model label ({', '.join(labels)})")
    own = {i: layer_map.get(label, layer_map.get("tuned")) for i, label in enumerate(labels[1:], start=1)}
    return layer_map.get(labels[0], layer_map.get("base", [])), {i: v for i, v in own.items() if v}


def compare(
    base: Any,
    *tuned: Any,
    layers: str | Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
    tuned_layers: str | Sequence[str] | None = None,
    data: Any = None,
    metrics: MetricsArg = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    pairs: str = "first",
    arch: str | Sequence[str | None] | None = None,
    trust: bool = False,
    ema: bool | Sequence[bool | None] | None = None,
    labels: Sequence[str] | None = None,
    batch_size: int = 32,
    limit: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    preprocess: str = "imagenet",
    size: int | None = None,
    input_size: int | None = None,
    workers: int = 0,
    disabled: Collection[str] = (),
    notice: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int | None], None] | None = None,
    on_prepared: Callable[[list[dict[str, Any]]], None] | None = None,
    status: Callable[[str], None] | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    amp: str | None = None,
    intervals: bool = False,
    interval_groups: int = 20,
    level: float = 0.95,
    random_init: bool = False,
    seed_pairs: Sequence[Sequence[str]] = (),
    argv: Sequence[str] | None = None,
) -> Result:
    """Compare a base model with one or more fine-tuned versions, layer by layer, in one pass over ``data``.

    Args:
        base, *tuned: ``nn.Module`` objects, specs (``"torchvision:googlenet"``, ``"timm:resnet18"``) or checkpoint
            paths. A single list/tuple after ``base`` is accepted too.
        layers: names, globs (``"inception4*"``) or aliases (``"mixed4d"``); ``None``: the natural blocks. A mapping
            gives each model its own list: keys ``"base"``, ``"tuned"`` (every tuned model) or a model's label.
        tuned_layers: the tuned models' layers when they differ from the base's (another architecture, e.g.
            ``layers=["layer4"], tuned_layers=["blocks.11"]``). Lists of equal length pair layer i with layer i; any
            lengths give ``cka``'s cross-layer matrix (base layers × tuned layers). Without it, a tuned model of
            another architecture takes its own natural layers when ``layers`` is None, else it is an error.
        data: an image folder, a CSV, a ``DataLoader``, a ``Dataset`` or any iterable of ``(images, labels)``.
        metrics: ``None`` (every installed metric whose needs are met), ``"cka,weight*"``, a list, or a mapping
            name → options.
        options: per metric (name or glob) → options, e.g. ``{"topk_*": {"k": 100}}``.
        pairs: ``"first"`` (each tuned model against the base) or ``"all"``.
        arch: the architecture of state-dict checkpoints, for all models or one per model.
        trust: allow loading pickled whole modules (runs code from the file).
        ema: True: the EMA weights of checkpoints that hold two sets (timm's ``state_dict_ema``, torchvision's
            ``model_ema``), for every checkpoint file or folder (an error for one without an EMA set); or one value
            per model. None: training weights, with a note where an EMA set exists.
        checkpoint: a file for the pass's state: saved every ``checkpoint_every`` batches and on Ctrl-C, removed
            when the run completes; ``resume=True`` continues from it (the job must be the same).
        amp: ``"bf16"`` or ``"fp16"``: forwards under autocast (for GPUs); metric statistics stay float64.
        intervals: give every headline value an interval over images (a delete-one-group jackknife over
            ``interval_groups`` groups of images at ``level``; see :mod:`ftprobe.core.intervals`). It keeps every
            metric state once per group: the notice before the pass says what that costs.
        random_init: add a control model: the base's architecture with freshly initialised weights (seeded by
            ``seed``), compared with the base as the pair ``base → random_init``: what CKA gives for a network that
            learnt nothing.
        seed_pairs: pairs of labels of two fine-tunes of one recipe (another seed), e.g. ``[("mode_a1",
            "mode_a2")]``: each is compared with the other too, and the result marks the pair as the seed-to-seed
            noise floor.
        labels: one name per model, in order (the base first); by default a file's name without its suffix, or the
            shortest trailing part of its path that tells it apart from another model file of that name.
        on_prepared: called with the layer records (name, shape, layout) once layers are resolved and probed,
            before any data is streamed; it may raise an ``FtprobeError`` to stop the run early.
        status: called with a short text ("loading tuned.pt…") before each slow step that has no progress bar.

    Under ``torchrun`` (``WORLD_SIZE > 1``) each rank streams a disjoint shard, metric states are merged with
    collectives through their declared reductions, and every rank returns the merged result.

    The same run over option objects (what the CLI builds) is :func:`run_comparison`.

    Returns:
        A :class:`ftprobe.Result` (data only: ``to_dict()``, ``to_json()``, ``records()``).
    """
    given = locals()
    pick = {cls: {f.name: given[f.name] for f in dataclasses.fields(cls)}
            for cls in (ModelOptions, DataOptions, RunOptions, Callbacks)}
    pick[Callbacks].update(notice=notice or quiet, status=status or quiet)
    return run_comparison(base, *tuned, layers=layers, tuned_layers=tuned_layers, data=data, metrics=metrics,
                          options=options, disabled=disabled, models=ModelOptions(**pick[ModelOptions]),
                          data_options=DataOptions(**pick[DataOptions]), run=RunOptions(**pick[RunOptions]),
                          callbacks=Callbacks(**pick[Callbacks]))


def run_comparison(
    base: Any,
    *tuned: Any,
    layers: str | Sequence[str] | Mapping[str, str | Sequence[str]] | None = None,
    tuned_layers: str | Sequence[str] | None = None,
    data: Any = None,
    metrics: MetricsArg = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    disabled: Collection[str] = (),
    models: ModelOptions | None = None,
    data_options: DataOptions | None = None,
    run: RunOptions | None = None,
    callbacks: Callbacks | None = None,
) -> Result:
    """:func:`compare` over option objects: load the models, open the data, select the metrics, plan, run the pass,
    assemble the result."""
    models, data_options = models or ModelOptions(), data_options or DataOptions()
    run, cb = run or RunOptions(), callbacks or Callbacks()
    started_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    if len(tuned) == 1 and isinstance(tuned[0], (list, tuple)):
        tuned = tuple(tuned[0])
    sources = [base, *tuned]
    pair_idx = make_pairs(len(sources), run.pairs)
    layer_map = _layer_map(layers, tuned_layers)
    if run.amp not in (None, "bf16", "fp16"):
        raise FtprobeError(f"--amp must be bf16 or fp16, not {run.amp!r}")
    dist_info, dev = init_from_env(resolve_device(run.device))
    entries, restore = load_models(sources, models, cb)
    controls = _add_controls(entries, pair_idx, run, data_options.seed, cb)
    try:
        src, size = _open_data(data, data_options, entries[0].module, dev)
        requests, skipped = select_metrics(metrics, options, has_data=src is not None,
                                           has_labels=bool(src and src.has_labels), disabled=disabled,
                                           notice=cb.notice)
        base_layers, per_model = _layers_per_model(layer_map, [e.label for e in entries])
        resampling = Resampling(run.interval_groups, run.level, data_options.seed) if run.intervals else None
        engine = Engine(entries, pair_idx, base_layers, requests, tuned_layers=per_model, device=dev,
                        input_size=run.input_size or (src.image_size() or size if src is not None else None),
                        notice=cb.notice, resampling=resampling)
        cb.status("resolving and probing layers…")
        engine.prepare(_run_context(src))
        if cb.on_prepared is not None:
            cb.on_prepared(engine.layer_records())
        data_info = src.describe() if src is not None else None
        for note in (data_info or {}).get("notes", []):
            cb.notice(note)
        stats = _run_pass(engine, src, _checkpointer(engine, run, pair_idx, data_info, data_options, dist_info),
                          run, cb, dist_info)
        skipped_files = gather_list(list(src.skipped) if src is not None else [], dist_info)
        if data_info is not None:
            known = list(data_info.get("notes", []))
            data_info.update(src.pass_counts(data_info, skipped_files, stats["samples"], stats["interrupted"]))
            for note in data_info.get("notes", []):
                if note not in known:  # learnt only by streaming (a stream shorter than --limit)
                    cb.notice(note)
        result = engine.result(
            stats, data=data_info, skipped_metrics=skipped + engine.skipped, controls=controls,
            run={"batch_size": data_options.batch_size, "limit": data_options.limit, "seed": data_options.seed,
                 "pairs": run.pairs, "started_at": started_at, "argv": list(run.argv) if run.argv is not None else None,
                 "versions": _versions()},
        )
        if src is not None and result.data is not None:
            result.data["index_paths"] = _index_paths(result, src)
        return result
    finally:
        for module, dev0 in restore:
            module.to(dev0)


def _add_controls(entries: list[ModelEntry], pairs: list[tuple[int, int]], run: RunOptions, seed: int,
                  cb: Callbacks) -> dict[str, Any]:
    """Add the control model and pairs the run asked for (in place); the result's ``controls`` record."""
    controls: dict[str, Any] = {}
    labels = [e.label for e in entries]
    if run.random_init:
        names = itertools.chain(["random_init"], (f"random_init_{i}" for i in itertools.count(2)))
        label = next(c for c in names if c not in labels)
        entries.append(random_init_entry(entries[0], label, seed))
        pairs.append((0, len(entries) - 1))
        controls["random_init"] = label
        cb.notice(f"control: {label}, {entries[0].label}'s architecture with fresh random weights (seed {seed}), "
                  f"compared as {entries[0].label} → {label}")
    if run.seed_pairs:
        where = {e.label: i for i, e in enumerate(entries)}
        controls["seed_pairs"] = []
        for pair in run.seed_pairs:
            if isinstance(pair, str):
                pair = pair.split(",")
            if len(pair) != 2:
                raise FtprobeError(f"a seed pair names two models (A,B), not {pair!r}")
            a, b = (str(x).strip() for x in pair)
            for x in (a, b):
                if x not in where:
                    raise FtprobeError(f"seed pair {a},{b}: no model is labelled {x!r}; the models are "
                                       f"{', '.join(where)} (name them with --label, once per model, or "
                                       "labels=[...] in Python)")
            if a == b or where[a] == 0 or where[b] == 0:
                raise FtprobeError(f"a seed pair names two fine-tuned models of one recipe (not the base, not twice "
                                   f"the same), got {a},{b}")
            if (where[a], where[b]) not in pairs:
                pairs.append((where[a], where[b]))
            controls["seed_pairs"].append([a, b])
    return controls


_CONTROL_SEED = 0x5EED1A17


def random_init_entry(base: ModelEntry, label: str, seed: int) -> ModelEntry:
    """``base``'s architecture with fresh random weights: every module's own ``reset_parameters`` (seeded), and a
    normal(0, 0.02) draw for parameters no module resets (position embeddings, class tokens)."""
    import copy

    module = copy.deepcopy(base.module)
    reset: set[int] = set()
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(_CONTROL_SEED + seed)  # not the seed a script may have built its models under
        for sub in module.modules():
            if callable(getattr(sub, "reset_parameters", None)):
                sub.reset_parameters()
                reset.update(id(p) for p in sub.parameters(recurse=False))
            if callable(getattr(sub, "reset_running_stats", None)):
                sub.reset_running_stats()
        for p in module.parameters():
            if id(p) not in reset:
                nn.init.normal_(p, std=0.02)
    info = {**base.info, "label": label, "source": f"random re-initialisation of {base.label}", "kind": "module",
            "sha256": None, "format": None, "weights": None, "control": "random_init", "seed": seed,
            "notes": [f"a control: {base.label}'s architecture with fresh random weights"]}
    return ModelEntry(label, module, info)


def _open_data(data: Any, opts: DataOptions, base: nn.Module, dev: torch.device) -> tuple[Any, int]:
    """The data source (None without data) and the image size: given, else the base's configured one, else 224."""
    size = opts.size
    if size is None:  # the base's configured image size (a Hugging Face config's image_size), else 224
        from .core._hf import config_input

        size = (config_input(base) or (3, 224))[1]
    if data is None:
        return None, size
    from .data import open_data

    return open_data(data, preprocess=opts.preprocess, size=size, limit=opts.limit, seed=opts.seed,
                     batch_size=opts.batch_size, workers=opts.workers, pin_memory=dev.type == "cuda"), size


def _run_context(src: Any) -> RunContext:
    """What the metrics may know of the data before the pass."""
    if src is None:
        return RunContext()
    return RunContext(batch_size=src.batch_size, num_samples=src.num_samples, has_labels=bool(src.has_labels),
                      num_classes=src.num_classes, multilabel=bool(src.multilabel), classes=tuple(src.classes))


def _checkpointer(engine: Engine, run: RunOptions, pairs: list[tuple[int, int]], data_info: Any,
                  data_options: DataOptions, dist_info: DistInfo) -> Checkpointer | None:
    """Where the pass's state is saved, with the fingerprint of this job (None: no checkpoint)."""
    if run.checkpoint is None:
        if run.resume:
            raise FtprobeError("resume=True needs checkpoint=PATH (the CLI uses --out DIR/checkpoint.pt)")
        return None
    job = {"models": [{k: e.info.get(k) for k in ("source", "sha256", "arch")} for e in engine.models],
           "pairs": pairs, "layers": [r.name for r in engine.layers],
           **({"model_layers": [[r.name for r in res] for res in engine.model_layers]} if engine.tuned_specs else {}),
           "metrics": [(r.name, r.options) for r in engine.requests], "data": data_info,
           "batch_size": data_options.batch_size, "world": dist_info.world,
           **({"intervals": [run.interval_groups, data_options.seed]} if run.intervals else {})}
    return Checkpointer(Path(run.checkpoint), run.checkpoint_every, fingerprint(job), dist_info.rank)


def _run_pass(engine: Engine, src: Any, ckpt: Checkpointer | None, run: RunOptions, cb: Callbacks,
              dist_info: DistInfo) -> dict[str, Any]:
    """Shard, resume, stream, merge the ranks: the pass's statistics (the states stay in the engine's plan)."""
    if src is not None and dist_info.active:
        src.shard(dist_info.rank, dist_info.world)
    start = None
    if run.resume and ckpt is not None:
        start, states = ckpt.load()
        engine.load_states(states)
        if src is not None:
            src.resume_after(start.last_index, start.batches)
        cb.notice(f"resuming after {start.samples} samples ({start.batches} batches) from {ckpt.file}")
    streams = src is not None and engine.needs_data
    if cb.on_start is not None:
        cb.on_start(src.num_samples if streams else None)
    stats = engine.run(src.batches() if streams else iter(()), progress=cb.progress, checkpoint=ckpt, start=start,
                       amp=run.amp)
    merge_metrics(engine.owners(), dist_info)
    stats = reduce_stats(stats, dist_info)
    engine.warnings = gather_list(engine.warnings, dist_info)
    if ckpt is not None and not stats["interrupted"] and ckpt.file.exists():
        ckpt.file.unlink()  # the run completed: a stale checkpoint must not be resumed later
    if run.amp:
        stats["amp"] = run.amp
    return stats


def _index_paths(result: Result, src: Any) -> dict[str, str]:
    """Global sample index → file path for every index a result refers to (top-k images), for grids and reports."""
    wanted: set[int] = set()
    stack = [a for v in result.values for k, a in v.arrays.items() if "index" in k]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, int) and item >= 0:
            wanted.add(item)
    out = {}
    for i in sorted(wanted):
        path = src.path_of(i)
        if path is not None:
            out[str(i)] = str(path)
    return out


def _versions() -> dict[str, str]:
    import platform

    import torchvision

    from . import __version__

    return {"ftprobe": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


