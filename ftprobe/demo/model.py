"""The demo's small CNN: nine post-ReLU blocks named after the study's Lucid InceptionV1 layers.

The blocks are plain ``Conv3x3 → BatchNorm → ReLU`` stacks (not Inception modules); only their names and their
place in the depth order follow the study, so every name ``ftprobe compare --layers`` accepts for the study
(``conv2d0`` … ``mixed5b``, a subset) resolves on this model without aliases.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["LAYERS", "LOWER_LAYERS", "DemoNet", "head_parameters", "backbone_parameters"]

#: Block names in depth order, with (width multiplier, stride) of each block.
_PLAN: tuple[tuple[str, int, int], ...] = (
    ("conv2d0", 1, 1),
    ("conv2d1", 2, 2),
    ("conv2d2", 2, 1),
    ("mixed3a", 3, 2),
    ("mixed3b", 3, 1),
    ("mixed4a", 4, 2),
    ("mixed4b", 4, 1),
    ("mixed5a", 6, 1),
    ("mixed5b", 6, 1),
)
#: The analysed layers (post-ReLU block outputs), shallow to deep.
LAYERS: tuple[str, ...] = tuple(name for name, _, _ in _PLAN)
#: The study's "lower part" (conv2d0 … mixed3b), kept when only "the end" is trained from scratch.
LOWER_LAYERS: tuple[str, ...] = LAYERS[: LAYERS.index("mixed3b") + 1]


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class DemoNet(nn.Module):
    """A small CNN for 32–48 px images: blocks ``conv2d0`` … ``mixed5b``, global average pooling, a head ``fc``.

    Args:
        num_classes: outputs of the head ``fc``.
        width: channels of ``conv2d0``; deeper blocks have 2×, 3×, 4×, 6× that.
        seed: seeds the initialisation (None: use the global generator as it is).

    Shapes:
        input ``(N, 3, S, S)`` normalised images; output logits ``(N, num_classes)``; block ``mixed5b`` gives
        ``(N, 6·width, S/8, S/8)``.
    """

    def __init__(self, num_classes: int, width: int = 8, seed: int | None = 0) -> None:
        super().__init__()
        self.num_classes, self.width = int(num_classes), int(width)
        gen_state = torch.random.get_rng_state()
        if seed is not None:
            torch.manual_seed(seed)
        cin = 3
        for name, mult, stride in _PLAN:
            setattr(self, name, _block(cin, mult * width, stride))
            cin = mult * width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        if seed is not None:
            torch.random.set_rng_state(gen_state)  # seeding the model must not change the caller's random stream

    @property
    def features_dim(self) -> int:
        """Channels of the last block (the head's input)."""
        return self.fc.in_features

    def forward(self, x: Tensor) -> Tensor:
        for name in LAYERS:
            x = getattr(self, name)(x)
        return self.fc(self.pool(x).flatten(1))

    def new_head(self, num_classes: int, seed: int) -> DemoNet:
        """Replace ``fc`` by a freshly initialised head of ``num_classes`` outputs (seeded); returns ``self``."""
        g = torch.Generator().manual_seed(seed)
        fc = nn.Linear(self.features_dim, num_classes)
        bound = 1.0 / self.features_dim**0.5
        with torch.no_grad():
            fc.weight.uniform_(-bound, bound, generator=g)
            fc.bias.uniform_(-bound, bound, generator=g)
        self.fc = fc
        self.num_classes = int(num_classes)
        return self

    def reinit(self, layers: Sequence[str], seed: int) -> DemoNet:
        """Re-initialise the named blocks from a seeded draw (the study's "end from scratch"); returns ``self``."""
        fresh = DemoNet(self.num_classes, self.width, seed=seed)
        for name in layers:
            getattr(self, name).load_state_dict(getattr(fresh, name).state_dict())
        return self


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classification head's parameters (``fc``)."""
    return list(model.fc.parameters())  # type: ignore[union-attr]


def backbone_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter except the head's."""
    head = {id(p) for p in head_parameters(model)}
    return [p for p in model.parameters() if id(p) not in head]
