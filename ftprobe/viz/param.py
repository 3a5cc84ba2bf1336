"""Image parameterisation of feature visualisation: Fourier space with 1/f scaling and colour decorrelation.

This is Lucid's default ``param.image(size, fft=True, decorrelate=True)`` (Olah et al., *Feature Visualization*,
Distill 2017), as the study used it:

- ``fft_image``: the image is the inverse real FFT of a learnt complex spectrum ``(N, 3, H, W//2+1)``, each frequency
  scaled by ``1 / max(f, 1/max(H, W))`` (``decay_power`` 1), with an orthonormal inverse FFT (Lucid multiplies TF's
  ``irfft2d`` by ``sqrt(H·W)``, which is the same thing), divided by 4 (Lucid's constant); the spectrum starts as
  Gaussian noise of standard deviation 0.01.
- ``to_valid_rgb``: the three channels are mixed by Lucid's colour correlation matrix (the square root of ImageNet's
  colour covariance, normalised by its largest column norm), then squashed to ``(0, 1)`` by a sigmoid.

The result is an RGB image in ``[0, 1]``; the model's own preprocessing (:func:`ftprobe.data.normalize`) comes after.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["COLOR_CORRELATION_SVD_SQRT", "FourierImage", "color_correlation", "rfft2d_freqs", "to_valid_rgb"]

#: Lucid's ``color_correlation_svd_sqrt`` (rows: output R, G, B; columns: decorrelated components).
COLOR_CORRELATION_SVD_SQRT: tuple[tuple[float, float, float], ...] = (
    (0.26, 0.09, 0.02),
    (0.27, 0.00, -0.05),
    (0.27, -0.09, 0.03),
)


def color_correlation(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """Lucid's colour correlation matrix divided by its largest column norm: ``(3, 3)``, ``rgb = M @ components``."""
    m = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=torch.float64)
    m = m / torch.linalg.vector_norm(m, dim=0).max()
    return m.to(dtype=dtype, device=device)


def rfft2d_freqs(h: int, w: int) -> Tensor:
    """Frequency magnitude of each entry of a real 2-D spectrum: ``(h, w // 2 + 1)`` float64 (cycles per pixel)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def to_valid_rgb(x: Tensor, decorrelate: bool = True) -> Tensor:
    """Map unconstrained images to RGB in ``(0, 1)``: optional colour decorrelation, then a sigmoid.

    Args:
        x: ``(N, 3, H, W)`` unconstrained values (in the decorrelated colour basis when ``decorrelate``).
        decorrelate: mix the channels with :func:`color_correlation` first (Lucid's default).

    Returns:
        ``(N, 3, H, W)`` RGB in ``(0, 1)``.
    """
    if decorrelate:
        x = torch.einsum("nchw,dc->ndhw", x, color_correlation(x.dtype, x.device))
    return torch.sigmoid(x)


class FourierImage(nn.Module):
    """A batch of images parameterised by their Fourier spectrum (Lucid's ``fft_image`` + ``to_valid_rgb``).

    Args:
        batch: number of images ``N`` (one per channel visualised).
        size: ``S`` or ``(H, W)`` in pixels.
        sd: standard deviation of the initial spectrum (Lucid: 0.01).
        decay_power: exponent of the 1/f frequency scaling (Lucid: 1).
        decorrelate: colour decorrelation before the sigmoid (Lucid: True).
        generator: draws the initial spectrum (seeded runs are reproducible).

    Calling the module returns ``(N, 3, H, W)`` RGB images in ``(0, 1)``; the only parameter is ``spectrum``
    ``(N, 3, H, W//2+1, 2)`` (real and imaginary parts).

    Example:
        >>> img = FourierImage(2, 16, generator=torch.Generator().manual_seed(0))()
        >>> tuple(img.shape), bool(((img > 0) & (img < 1)).all())
        ((2, 3, 16, 16), True)
    """

    def __init__(
        self,
        batch: int,
        size: int | tuple[int, int],
        *,
        sd: float = 0.01,
        decay_power: float = 1.0,
        decorrelate: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        h, w = (size, size) if isinstance(size, int) else size
        if batch < 1 or h < 1 or w < 1:
            raise ValueError(f"FourierImage needs batch >= 1 and a positive size, got batch={batch}, size={size}")
        self.size = (int(h), int(w))
        self.decorrelate = decorrelate
        freqs = rfft2d_freqs(h, w)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", scale.to(torch.float32)[None, None, :, :, None], persistent=False)
        init = torch.randn(batch, 3, *freqs.shape, 2, generator=generator) * sd
        self.spectrum = nn.Parameter(init)

    def raw(self) -> Tensor:
        """The image before colour mixing and sigmoid: ``(N, 3, H, W)``."""
        spec = torch.view_as_complex((self.scale * self.spectrum).contiguous())
        return torch.fft.irfftn(spec, s=self.size, dim=(-2, -1), norm="ortho") / 4.0

    def forward(self) -> Tensor:
        """The images: ``(N, 3, H, W)`` RGB in ``(0, 1)``."""
        return to_valid_rgb(self.raw(), self.decorrelate)
