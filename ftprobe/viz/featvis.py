"""Feature visualisation by activation maximisation, with Lucid's defaults (PAPER.md, "Visualisation").

For each channel ``c`` of a layer, an image (:class:`~ftprobe.viz.param.FourierImage`: Fourier space, 1/f scaling,
colour decorrelation, sigmoid) is optimised with Adam (lr 0.05) to maximise the spatial mean of ``c``'s activation;
at every step the image goes through Lucid's ``standard_transforms`` and then the model's own preprocessing
(:func:`ftprobe.data.normalize`: ``imagenet``, ``caffe`` BGR ...), so the picture is in the colours the model sees.
Several channels are optimised together as one batch (image ``i`` maximises channel ``channels[i]``).

The layer output is taken by a forward hook that keeps the autograd graph (no ``inference_mode`` here) and stops the
forward right after the layer (a private exception raised from the hook), so the rest of the network never runs.
The hook is removed, and the models' ``training`` flags restored, even when the run fails. Gradients flow to the
image only (``backward(inputs=...)``): the model's parameters get no ``.grad``.

All random choices (initial spectrum, transforms) come from one ``torch.Generator`` seeded with ``seed``, so two runs
with one seed give the same image (bitwise on the CPU), and every model of a comparison starts from the same image
and sees the same transforms.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ftprobe.core.capture import evaluating
from ftprobe.core.errors import FtprobeError
from ftprobe.core.layers import ResolvedLayer
from ftprobe.data.transforms import Preset, get_preset, normalize

from ._relu import RedirectedReLU
from .layer import LayerGrab, channel_count, device_of, layer_scores, resolve_layer, select_channels
from .param import FourierImage
from .transforms import Transform, standard_transforms

__all__ = ["ChannelVisualizer", "FeatureVis", "channel_count", "layer_scores", "resolve_layer", "visualize",
           "visualize_channels"]


@dataclass(frozen=True)
class FeatureVis:
    """The images that maximise some channels of one layer of one model.

    Attributes:
        model: the model's label.
        layer: the canonical layer name (``inception4d``); ``spec`` is what was asked for (``mixed4d``).
        channels: the channel of each image.
        images: ``(K, 3, S, S)`` float32 RGB in ``[0, 1]`` on the CPU.
        activation: ``(K,)`` each channel's spatial-mean activation on its final image (no transforms).
        objective: ``(steps, K)`` the objective at each step (on the transformed image).
        settings: the method's parameters (steps, size, seed, lr, preprocessing, transforms ...).
    """

    model: str
    layer: str
    spec: str
    channels: tuple[int, ...]
    images: Tensor
    activation: Tensor
    objective: Tensor
    settings: dict[str, Any] = field(default_factory=dict)

    def to_pil(self) -> list[Any]:
        """One ``PIL.Image`` (RGB, 8 bit) per channel."""
        from PIL import Image

        arr = (self.images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return [Image.fromarray(a) for a in arr]


class ChannelVisualizer:
    """Optimise one image per channel of one layer, step by step; use it as a context manager.

    Args:
        model: the network (left on its device; its ``training`` flags are restored on exit).
        layer: a :class:`~ftprobe.core.layers.ResolvedLayer` (see :func:`resolve_layer`).
        channels: ``K`` channel indices; image ``i`` maximises ``channels[i]``.
        size: image side ``S`` in pixels (before the transforms).
        seed: seeds the initial spectrum and every random transform.
        lr: Adam learning rate (Lucid: 0.05).
        preprocess: the model's input normalisation (preset name or :class:`ftprobe.data.Preset`).
        transforms: per-step transforms (default: :func:`~ftprobe.viz.transforms.standard_transforms`); ``[]``: none.
        decorrelate: colour decorrelation of the parameterisation (Lucid: True).
        input_size: resize the transformed image to this fixed side before the model (for models that need one
            input size); ``None`` (Lucid): the model sees the transformed size.
        relu_redirect: Lucid's redirected ReLU gradient (its default), so channels that the start image leaves at
            zero still get a gradient (see :mod:`ftprobe.viz._relu`).

    Example:
        >>> from ftprobe.testing import TinyNet
        >>> net = TinyNet()
        >>> with ChannelVisualizer(net, resolve_layer(net, "mixed4a", 32), [1, 5], size=32) as vis:
        ...     objective = [vis.step() for _ in range(4)]
        ...     images, act = vis.images(), vis.activation()
        >>> tuple(images.shape), tuple(act.shape)
        ((2, 3, 32, 32), (2,))
    """

    def __init__(self, model: nn.Module, layer: ResolvedLayer, channels: Sequence[int], *, size: int = 224,
                 seed: int = 0, lr: float = 0.05, preprocess: str | Preset = "imagenet",
                 transforms: Transform | Sequence[Transform] | None = None, decorrelate: bool = True,
                 input_size: int | None = None, relu_redirect: bool = True) -> None:
        self.model, self.layer = model, layer
        self.relu_redirect = relu_redirect
        self.preset = get_preset(preprocess)
        count = channel_count(layer)
        chans = [int(c) for c in channels]
        bad = [c for c in chans if not 0 <= c < count]
        if not chans or bad:
            raise FtprobeError(f"layer {layer.name!r} has {count} channels (0…{count - 1}); "
                               f"{'no channel was given' if not chans else f'channel(s) {bad} out of range'}.")
        if size < 1:
            raise FtprobeError(f"size must be a positive number of pixels, got {size}")
        device = device_of(model)
        self.channels = torch.tensor(chans, device=device)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.param = FourierImage(len(chans), size, decorrelate=decorrelate, generator=self.generator).to(device)
        self.optimizer = torch.optim.Adam(self.param.parameters(), lr=lr)
        if transforms is None:
            transforms = standard_transforms()
        self.transform: Transform = transforms if callable(transforms) else _compose(transforms)
        self.input_size = input_size
        self._stack: ExitStack | None = None
        self._grab: LayerGrab | None = None

    def __enter__(self) -> ChannelVisualizer:
        stack = ExitStack()
        try:
            stack.enter_context(evaluating(self.model))
            self._grab = LayerGrab(self.model, self.layer.name).attach(stack)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack, self._grab = self._stack, None, None
        if stack is not None:
            stack.close()

    def _objective(self, rgb01: Tensor) -> Tensor:
        if self._grab is None:
            raise RuntimeError("use ChannelVisualizer inside a `with` block")
        if self.input_size is not None and rgb01.shape[-2:] != (self.input_size, self.input_size):
            rgb01 = F.interpolate(rgb01, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return select_channels(self._grab(normalize(rgb01, self.preset)), self.layer.layout, self.channels)

    def step(self) -> Tensor:
        """One Adam step on the transformed images; returns the objective before the step: ``(K,)``."""
        with torch.enable_grad():
            self.optimizer.zero_grad(set_to_none=True)
            with RedirectedReLU() if self.relu_redirect else nullcontext():
                obj = self._objective(self.transform(self.param(), self.generator))
            (-obj.sum()).backward(inputs=list(self.param.parameters()))
            self.optimizer.step()
        return obj.detach()

    def images(self) -> Tensor:
        """The current images: ``(K, 3, S, S)`` RGB in ``[0, 1]`` (detached)."""
        with torch.no_grad():
            return self.param().detach()

    def activation(self) -> Tensor:
        """Each channel's spatial-mean activation on its current image, without transforms: ``(K,)``."""
        with torch.no_grad():
            return self._objective(self.param()).detach()


def _compose(transforms: Sequence[Transform]) -> Transform:
    from .transforms import Compose

    return Compose(transforms)


def visualize_channels(
    model: nn.Module | str | os.PathLike[str], layer: str, channels: Sequence[int], *, steps: int = 512,
    size: int = 224, seed: int = 0, lr: float = 0.05, preprocess: str | Preset = "imagenet",
    transforms: Transform | Sequence[Transform] | None = None, decorrelate: bool = True,
    input_size: int | None = None, relu_redirect: bool = True, arch: str | None = None, trust: bool = False,
    device: str | None = None, label: str | None = None, progress: Callable[[int], None] | None = None,
) -> FeatureVis:
    """Render the images that maximise ``channels`` of ``layer`` in ``model`` (Lucid's method, see module doc).

    Args:
        model: an ``nn.Module``, a spec (``torchvision:googlenet``) or a checkpoint path (``arch``/``trust`` as in
            :func:`ftprobe.compare`).
        layer: a layer name, alias (``mixed4d``) or ``name:k``.
        channels: the channels to render, optimised together as one batch.
        steps: optimisation steps (default 512; the study used 2048).
        size: image side in pixels (default 224; 64–128 for a quick look on a CPU).
        device: where to run a model loaded from a spec or file (default CPU); a module is used where it is.
        progress: called with 1 after every step.
        seed, lr, preprocess, transforms, decorrelate, input_size, relu_redirect: see :class:`ChannelVisualizer`.

    Returns:
        A :class:`FeatureVis` (images ``(K, 3, size, size)``, their activations, the objective trace).
    """
    from ftprobe.core.loading import load_model

    if steps < 0:
        raise FtprobeError(f"steps must be >= 0, got {steps}")
    lm = load_model(model, arch=arch, trust=trust, map_location=device or "cpu", label=label)
    resolved = resolve_layer(lm.module, layer, input_size or size, label=lm.label)
    trace = []
    with ChannelVisualizer(lm.module, resolved, channels, size=size, seed=seed, lr=lr, preprocess=preprocess,
                           transforms=transforms, decorrelate=decorrelate, input_size=input_size,
                           relu_redirect=relu_redirect) as vis:
        for _ in range(steps):
            trace.append(vis.step())
            if progress is not None:
                progress(1)
        images, act = vis.images(), vis.activation()
    settings = {"method": "lucid fft_image + to_valid_rgb (decorrelate, sigmoid), standard_transforms, adam",
                "steps": steps, "size": size, "seed": seed, "lr": lr, "preprocess": vis.preset.name,
                "decorrelate": decorrelate, "transforms": repr(vis.transform), "input_size": input_size,
                "relu_redirect": relu_redirect}
    objective = torch.stack(trace).cpu() if trace else torch.zeros(0, len(vis.channels))
    return FeatureVis(lm.label, resolved.name, resolved.spec, tuple(int(c) for c in vis.channels), images.cpu(),
                      act.cpu(), objective, settings)


def visualize(models: Sequence[Any], layer: str, channels: Sequence[int], *, labels: Sequence[str] | None = None,
              arch: str | Sequence[str | None] | None = None, **kwargs: Any) -> list[FeatureVis]:
    """:func:`visualize_channels` for each model, with the same seed (same start image, same transforms).

    Args:
        models: modules, specs or paths (base first).
        labels: one label per model (default: each model's own).
        arch: one architecture for all state dicts, or one per model.
        **kwargs: passed to :func:`visualize_channels`.
    """
    archs = list(arch) if isinstance(arch, (list, tuple)) else [arch] * len(models)
    if len(archs) != len(models):
        raise FtprobeError(f"--arch was given {len(archs)} times for {len(models)} models; give one, or one each")
    return [visualize_channels(m, layer, channels, arch=a, label=labels[i] if labels else None, **kwargs)
            for i, (m, a) in enumerate(zip(models, archs))]
