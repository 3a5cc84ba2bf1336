"""The demo's transfer variants, trained on the generated world and cached in the user cache directory.

Pretraining on the photo domain stands in for ImageNet; the style task (paintings, style labels) stands in for RASTA
(the medium art dataset); the object task (paintings, multi-label objects) for Paintings / IconArt (the small ones).
The learning rates are larger than the study's (0.01 / 0.001) because the demo trains for hundreds of steps, not
tens of thousands; their ratios are the study's: Mode A head = 10 × backbone, Mode B ten times lower than Mode A.

Pretraining jitters each photo's contrast, colour and grain (:class:`PhotoJitter`), as ImageNet training augments its
photos: the lower blocks then learn filters that do not depend on one palette or one noise level, so fine-tuning on
paintings changes them less than the upper blocks, which specialise to the new task. Without it (same epochs and
learning rates), Mode A changed ``conv2d0`` most and the relative weight change fell with depth (Spearman ρ = −0.72).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ftprobe.data import normalize
from ftprobe.demo.model import LAYERS, DemoNet, backbone_parameters, head_parameters
from ftprobe.demo.train import TensorBatches, evaluate, fit, sgd
from ftprobe.demo.world import OBJECTS, STYLES, WORLD_VERSION, World

__all__ = ["MODELS", "PhotoJitter", "Settings", "QUICK", "cache_dir", "load_or_train", "train_variants", "SPLITS"]

#: Models the demo compares, in the order given to ``ftprobe.compare`` (labels in the results).
MODELS: tuple[str, ...] = ("pretrained", "mode_a1", "mode_a2", "mode_b", "scratch_init", "scratch")
#: First index of each split of the world (multiples of 30 keep every split class-balanced).
SPLITS: dict[str, int] = {"train": 0, "val": 3_000_000, "test": 6_000_000, "small_train": 9_000_000,
                          "small_val": 12_000_000, "small_test": 15_000_000, "eval": 18_000_000}
_TRAINING_VERSION = 2  # bump when the training recipe changes, so old caches are not reused


@dataclass(frozen=True)
class Settings:
    """Everything that decides the demo's models and numbers (hashed into the cache key, except ``n_eval``, ``k``,
    ``layers``).

    Sizes are image counts; ``*_epochs`` passes over the training images.
    """

    size: int = 32
    width: int = 8
    world_seed: int = 0
    seed: int = 0
    batch_size: int = 64
    n_photos: int = 3000
    pretrain_epochs: int = 8
    lr_pretrain: float = 0.1
    pretrain_jitter: float = 0.8  # strength of the photometric augmentation while pretraining (0: none)
    n_medium: int = 2010
    medium_epochs: int = 10
    lr_head: float = 0.08
    backbone_ratio: float = 0.1  # Mode A: backbone LR = head LR × 0.1 (the study's 0.001 vs 0.01)
    mode_b_ratio: float = 0.1  # Mode B: both LRs ten times lower than Mode A
    n_small: int = 300
    small_epochs: int = 10
    small_seeds: int = 2
    lr_small: float = 0.05  # double fine-tuning's target stage: one LR for all layers, as the study
    n_val: int = 300
    n_test: int = 600
    n_eval: int = 1020  # images the comparison streams (not part of the cache key)
    k: int = 100  # top-k size of the top-k metrics (not part of the cache key)
    layers: tuple[str, ...] = LAYERS  # layers compared, shallow to deep (not part of the cache key)

    def cache_key(self) -> str:
        d = dataclasses.asdict(self)
        for field in ("n_eval", "k", "layers"):
            d.pop(field)
        d.update(world=WORLD_VERSION, training=_TRAINING_VERSION, torch=torch.__version__.split("+")[0])
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


#: ``--quick``: small settings for CI (under a minute on 2 cores, every variant still learns the styles well above
#: chance), and five of the nine layers (the report draws one image grid per pair and layer).
QUICK = Settings(n_photos=1800, pretrain_epochs=6, n_medium=900, medium_epochs=10, n_small=60, small_epochs=6,
                 small_seeds=1, n_val=60, n_test=150, n_eval=210, k=20,
                 layers=("conv2d0", "conv2d2", "mixed3b", "mixed4b", "mixed5b"))


def cache_dir(settings: Settings) -> Path:
    """``$XDG_CACHE_HOME/ftprobe/demo/<settings-hash>/`` (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "ftprobe" / "demo" / settings.cache_key()


def _range(split: str, n: int) -> range:
    return range(SPLITS[split], SPLITS[split] + n)


class PhotoJitter:
    """Seeded photometric augmentation of a batch of ``[0, 1]`` images, then ``normalize``.

    Per image: contrast scaled by ``1 ± strength``, a colour shift of up to ``± strength / 4`` per channel, and pixel
    grain of a random level up to ``0.3 · strength`` (standard deviation); the result is clamped to ``[0, 1]``.
    The ``n``-th call draws from the ``n``-th state of one generator seeded with ``seed``.
    """

    def __init__(self, strength: float, seed: int) -> None:
        self.strength = float(strength)
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, a, g = len(x), self.strength, self.gen
        contrast = 1 + a * (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1)
        shift = a * 0.5 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)
        grain = a * 0.3 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return normalize(((x - mean) * contrast + mean + shift + grain).clamp(0, 1))


def _batches(x: torch.Tensor, y: torch.Tensor, s: Settings, seed: int, train: bool) -> TensorBatches:
    return TensorBatches(x, y, s.batch_size if train else 256, seed=seed, shuffle=train, transform=normalize)


def train_variants(
    settings: Settings, world: World, log: Callable[[str], None] = print
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """Pretrain, fine-tune in the study's variants, and run the double fine-tuning experiment.

    Returns:
        ``(models, record)``: the models of :data:`MODELS`, and a JSON-able record of the accuracies (percent),
        training curves and seconds spent.
    """
    s = settings
    t0 = time.perf_counter()
    record: dict[str, Any] = {"accuracy": {}, "history": {}, "small_task": {}}
    xs, ys = world.photos(_range("train", s.n_photos))
    xv, yv = world.photos(_range("val", s.n_val))
    log(f"pretraining on {s.n_photos} photos ({s.pretrain_epochs} epochs, photometric jitter {s.pretrain_jitter:g})")
    pre = DemoNet(len(OBJECTS), s.width, seed=s.seed)
    photos = _batches(xs, ys, s, s.seed, True)
    if s.pretrain_jitter > 0:
        photos.transform = PhotoJitter(s.pretrain_jitter, seed=s.seed + 7)
    hist = fit(pre, sgd([(pre.parameters(), s.lr_pretrain)]), photos,
               epochs=s.pretrain_epochs, val=_batches(xv, yv, s, 0, False), name="pretrained")
    record["history"]["pretrained"] = hist.to_dict()
    record["accuracy"]["pretrained (photos, objects)"] = evaluate(pre, _batches(xv, yv, s, 0, False))
    del xs, ys

    med = world.paintings(_range("train", s.n_medium))
    val = world.paintings(_range("val", s.n_val))
    test = world.paintings(_range("test", s.n_test))
    val_b, test_b = _batches(val.images, val.style, s, 0, False), _batches(test.images, test.style, s, 0, False)
    lr_a, lr_b = (s.lr_head, s.lr_head * s.backbone_ratio), (s.lr_head * s.mode_b_ratio,
                                                             s.lr_head * s.backbone_ratio * s.mode_b_ratio)
    models: dict[str, nn.Module] = {"pretrained": pre}
    plan = [("mode_a1", lr_a, 1), ("mode_a2", lr_a, 2), ("mode_b", lr_b, 1), ("scratch", None, 3)]
    for name, lrs, seed in plan:
        if lrs is None:
            model = DemoNet(len(STYLES), s.width, seed=s.seed + 100 + seed)
            models["scratch_init"] = copy.deepcopy(model)
            opt, what = sgd([(model.parameters(), s.lr_head)]), f"from scratch (LR {s.lr_head:g})"
        else:
            model = copy.deepcopy(pre).new_head(len(STYLES), seed=s.seed + seed)
            opt = sgd([(head_parameters(model), lrs[0]), (backbone_parameters(model), lrs[1])])
            what = f"head LR {lrs[0]:g}, backbone LR {lrs[1]:g}, seed {seed}"
        log(f"fine-tuning {name} on {s.n_medium} paintings, style labels ({what})")
        hist = fit(model, opt, _batches(med.images, med.style, s, s.seed + seed, True), epochs=s.medium_epochs,
                   val=val_b, name=name)
        record["history"][name] = hist.to_dict()
        record["accuracy"][f"{name} (paintings, styles)"] = evaluate(model, test_b)
        models[name] = model
    del med
    record["small_task"] = _double_fine_tuning(s, world, pre, models["mode_a1"], log)
    record["train_seconds"] = time.perf_counter() - t0
    return {name: models[name] for name in MODELS}, record


def _double_fine_tuning(s: Settings, world: World, pre: nn.Module, medium: nn.Module,
                        log: Callable[[str], None]) -> dict[str, Any]:
    """Photos → small object task (single) against photos → styles (Mode A run 1) → small object task (double)."""
    tr = world.paintings(_range("small_train", s.n_small))
    val = world.paintings(_range("small_val", s.n_val))
    test = world.paintings(_range("small_test", s.n_test))
    val_b = _batches(val.images, val.objects, s, 0, False)
    test_b = _batches(test.images, test.objects, s, 0, False)
    log(f"double fine-tuning: {s.n_small} paintings with object labels (multi-label), {s.small_seeds} seed(s) each")
    out: dict[str, Any] = {"measure": "mAP", "n_train": s.n_small, "n_test": s.n_test, "single": [], "double": []}
    for route, start in (("single", pre), ("double", medium)):
        for seed in range(s.small_seeds):
            model = copy.deepcopy(start).new_head(len(OBJECTS), seed=s.seed + 50 + seed)
            fit(model, sgd([(model.parameters(), s.lr_small)]), _batches(tr.images, tr.objects, s, 50 + seed, True),
                epochs=s.small_epochs, val=val_b, name=f"{route}{seed}")
            out[route].append(evaluate(model, test_b)["mAP"])
    return out


def _save(models: dict[str, nn.Module], record: dict[str, Any], settings: Settings, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        tmp = path / f"{name}.pt.tmp"
        torch.save(model.state_dict(), tmp)
        tmp.replace(path / f"{name}.pt")
    meta = {"settings": dataclasses.asdict(settings), "record": record,
            "classes": {name: int(m.fc.out_features) for name, m in models.items()}}  # type: ignore[union-attr]
    tmp = path / "training.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(path / "training.json")  # written last: its presence means the cache is complete


def _load(settings: Settings, path: Path) -> tuple[dict[str, nn.Module], dict[str, Any]] | None:
    meta_path = path / "training.json"
    if not meta_path.is_file() or not all((path / f"{n}.pt").is_file() for n in MODELS):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        models: dict[str, nn.Module] = {}
        for name in MODELS:
            model = DemoNet(meta["classes"][name], settings.width, seed=None)
            model.load_state_dict(torch.load(path / f"{name}.pt", map_location="cpu", weights_only=True))
            models[name] = model.eval()
    except (OSError, ValueError, KeyError, RuntimeError):
        return None  # a damaged cache is retrained, not an error
    return models, meta["record"]


def load_or_train(
    settings: Settings, world: World, *, fresh: bool = False, log: Callable[[str], None] = print
) -> tuple[dict[str, nn.Module], dict[str, Any], bool]:
    """The cached models and record when the cache holds these settings (unless ``fresh``), else train and cache.

    Returns:
        ``(models, record, from_cache)``.
    """
    path = cache_dir(settings)
    if not fresh:
        cached = _load(settings, path)
        if cached is not None:
            log(f"using the models cached in {path} (--fresh retrains)")
            return cached[0], cached[1], True
    models, record = train_variants(settings, world, log)
    _save(models, record, settings, path)
    log(f"models cached in {path}")
    return models, record, False


