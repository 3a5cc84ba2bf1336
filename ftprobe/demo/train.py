"""Training and evaluation for the demo and for ``examples/paper_study.py``: the study's optimiser (SGD, momentum
0.9, one learning rate per parameter group), keep-the-best-on-validation-loss, and its accuracy measures (top-1/3/5
for multi-class tasks, mAP for multi-label ones).

Data is any re-iterable of ``(images, targets)`` batches: a :class:`TensorBatches` over in-memory tensors (the demo)
or a ``DataLoader`` (the paper study). Targets are ``(N,)`` class indices or ``(N, K)`` multi-hot rows.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FitResult",
    "TensorBatches",
    "average_precision",
    "evaluate",
    "fit",
    "freeze",
    "replace_head",
    "sgd",
    "topk_accuracy",
]

Batches = Iterable[tuple[Tensor, Tensor]]


class TensorBatches:
    """Re-iterable batches over in-memory tensors, reshuffled each pass from a seeded generator.

    Args:
        x: ``(N, 3, S, S)`` images.
        y: ``(N,)`` class indices or ``(N, K)`` multi-hot targets.
        batch_size: samples per batch (the last one may be short).
        seed: seeds the shuffling; pass ``n`` of the ``n``-th pass is ``permutation(seed, n)``.
        shuffle: False for evaluation (index order).
        transform: applied to each image batch (e.g. ``ftprobe.data.normalize``).
    """

    def __init__(self, x: Tensor, y: Tensor, batch_size: int = 64, seed: int = 0, shuffle: bool = True,
                 transform: Callable[[Tensor], Tensor] | None = None) -> None:
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} targets")
        self.x, self.y, self.batch_size, self.seed, self.shuffle = x, y, int(batch_size), int(seed), shuffle
        self.transform = transform
        self._passes = 0

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self._passes)
            order = torch.randperm(len(self.x), generator=g)
        else:
            order = torch.arange(len(self.x))
        self._passes += 1
        for start in range(0, len(order), self.batch_size):
            idx = order[start: start + self.batch_size]
            xb = self.x[idx]
            yield (self.transform(xb) if self.transform else xb), self.y[idx]


def sgd(groups: Sequence[tuple[Iterable[nn.Parameter], float]], momentum: float = 0.9,
        weight_decay: float = 0.0) -> torch.optim.SGD:
    """The study's optimiser: SGD with momentum and one learning rate per group ``(params, lr)``.

    Parameters that do not require gradients (frozen) are left out; an empty group is dropped.
    """
    param_groups = []
    for params, lr in groups:
        trainable = [p for p in params if p.requires_grad]
        if trainable:
            param_groups.append({"params": trainable, "lr": float(lr)})
    return torch.optim.SGD(param_groups, lr=param_groups[0]["lr"], momentum=momentum, weight_decay=weight_decay)


def freeze(model: nn.Module, names: Iterable[str]) -> list[nn.Module]:
    """Freeze the named submodules: no gradients, and their BatchNorm statistics stay fixed during training."""
    frozen = []
    for name in names:
        mod = model.get_submodule(name)
        for p in mod.parameters():
            p.requires_grad_(False)
        frozen.append(mod)
    return frozen


def replace_head(model: nn.Module, num_classes: int, seed: int) -> nn.Module:
    """Give ``model`` a new, seeded classification head of ``num_classes`` outputs (in place; returns the model).

    Handles the demo's ``DemoNet``, timm models (``reset_classifier``) and models whose head is a ``Linear`` named
    ``fc`` (torchvision GoogLeNet, ResNet ...) or the last ``Linear`` of ``classifier``.
    """
    if hasattr(model, "new_head"):
        return model.new_head(num_classes, seed)  # type: ignore[operator, no-any-return]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if hasattr(model, "reset_classifier"):
            model.reset_classifier(num_classes)  # type: ignore[operator]
        elif isinstance(getattr(model, "fc", None), nn.Linear):
            model.fc = nn.Linear(model.fc.in_features, num_classes)  # type: ignore[union-attr]
        else:
            parent = model.classifier if isinstance(getattr(model, "classifier", None), nn.Sequential) else model
            names = [n for n, m in parent.named_children() if isinstance(m, nn.Linear)]
            if not names:
                raise TypeError(f"cannot find the classification head of {type(model).__name__}")
            last = getattr(parent, names[-1])
            setattr(parent, names[-1], nn.Linear(last.in_features, num_classes))
    finally:
        torch.random.set_rng_state(state)
    return model


def _loss(logits: Tensor, y: Tensor) -> Tensor:
    if y.dim() == 2:  # multi-hot targets: one sigmoid per class (the study's multi-label sets)
        return F.binary_cross_entropy_with_logits(logits, y.float())
    return F.cross_entropy(logits, y)


def _logits(out: object) -> Tensor:
    return out if isinstance(out, Tensor) else out[0]  # type: ignore[index]  # GoogLeNet/Inception aux outputs


def topk_accuracy(logits: Tensor, y: Tensor, ks: Sequence[int] = (1, 3, 5)) -> dict[str, float]:
    """Top-k accuracy in percent for ``logits`` ``(N, C)`` and class indices ``y`` ``(N,)`` (k capped at C)."""
    out = {}
    for k in ks:
        kk = min(k, logits.shape[1])
        hit = (logits.topk(kk, dim=1).indices == y.view(-1, 1)).any(dim=1)
        out[f"top{k}"] = 100.0 * float(hit.float().mean())
    return out


def average_precision(scores: Tensor, targets: Tensor) -> dict[str, float]:
    """Mean average precision (percent) over classes with at least one positive; ``scores``/``targets`` ``(N, K)``.

    Per class, AP is the mean of the precision at the rank of each positive (ranking by score, ties by index).
    """
    aps = []
    for c in range(targets.shape[1]):
        t = targets[:, c].bool()
        if not t.any():
            continue
        order = torch.argsort(scores[:, c].double(), descending=True, stable=True)
        hits = t[order].double()
        precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
        aps.append(float((precision * hits).sum() / hits.sum()))
    return {"mAP": 100.0 * sum(aps) / len(aps) if aps else float("nan")}


@torch.no_grad()
def evaluate(model: nn.Module, data: Batches, device: str | torch.device = "cpu") -> dict[str, float]:
    """Loss and accuracy of ``model`` on ``data`` (top-1/3/5 for class indices, mAP for multi-hot targets)."""
    was_training = model.training
    model.eval()
    logits, targets = [], []
    try:
        for x, y in data:
            logits.append(_logits(model(x.to(device))).float().cpu())
            targets.append(y)
    finally:
        model.train(was_training)
    z, y = torch.cat(logits), torch.cat(targets)
    out = {"loss": float(_loss(z, y)), "n": float(len(y))}
    out.update(average_precision(z, y) if y.dim() == 2 else topk_accuracy(z, y))
    return out


@dataclass
class FitResult:
    """What :func:`fit` did: per-epoch training loss, validation measures, and the epoch kept."""

    train_loss: list[float] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1

    def to_dict(self) -> dict[str, object]:
        return {"train_loss": self.train_loss, "val": self.val, "best_epoch": self.best_epoch}


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Batches,
    *,
    epochs: int,
    val: Batches | None = None,
    frozen: Sequence[nn.Module] = (),
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    name: str = "model",
) -> FitResult:
    """Train ``model`` for ``epochs`` passes; with ``val``, keep the weights of the epoch of lowest validation loss.

    Args:
        model: trained in place (left in eval mode).
        optimizer: e.g. from :func:`sgd`.
        train: re-iterable ``(images (N, 3, S, S), targets)`` batches; cross-entropy for class indices,
            binary cross-entropy for multi-hot targets.
        epochs: passes over ``train``.
        val: validation batches (optional).
        frozen: submodules kept in eval mode (frozen BatchNorm statistics), see :func:`freeze`.
        device: where to train.
        log: called with one line per epoch.
        name: used in the log lines.
    """
    result = FitResult()
    best: tuple[float, dict[str, Tensor]] | None = None
    model.to(device)
    for epoch in range(epochs):
        model.train()
        for mod in frozen:
            mod.eval()
        total, count = 0.0, 0
        for x, y in train:
            x, y = x.to(device), y.to(device)
            loss = _loss(_logits(model(x)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        result.train_loss.append(total / max(count, 1))
        line = f"{name}: epoch {epoch + 1}/{epochs} train loss {result.train_loss[-1]:.3f}"
        if val is not None:
            measures = evaluate(model, val, device)
            result.val.append(measures)
            line += f", val loss {measures['loss']:.3f}"
            if best is None or measures["loss"] < best[0]:
                best = (measures["loss"], copy.deepcopy(model.state_dict()))
                result.best_epoch = epoch
        else:
            result.best_epoch = epoch
        if log is not None:
            log(line)
    if best is not None:
        model.load_state_dict(best[1])
    model.eval()
    return result
