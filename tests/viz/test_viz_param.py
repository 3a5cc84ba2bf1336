"""The Fourier parameterisation and the transforms: Lucid's definitions, pinned independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ftprobe.viz.param import FourierImage, color_correlation, rfft2d_freqs, to_valid_rgb
from ftprobe.viz.transforms import (
    STANDARD_ANGLES,
    STANDARD_SCALES,
    Jitter,
    Pad,
    RandomRotate,
    RandomScale,
    standard_transforms,
)


@pytest.mark.parametrize("h,w", [pytest.param(8, 8, id="even"), pytest.param(7, 9, id="odd"),
                                 pytest.param(6, 11, id="mixed")])
def test_freqs_match_numpy_lucid_rule(h, w):
    # Lucid: fy = fftfreq(h)[:, None]; fx = fftfreq(w)[: w // 2 + 1] (only |f| matters), sqrt(fx² + fy²).
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.abs(np.fft.fftfreq(w)[: w // 2 + 1])
    np.testing.assert_allclose(rfft2d_freqs(h, w).numpy(), np.sqrt(fx * fx + fy * fy), rtol=0, atol=1e-15)


def test_color_matrix_is_lucids_normalised_by_max_column_norm():
    m = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    expected = m / np.max(np.linalg.norm(m, axis=0))
    np.testing.assert_allclose(color_correlation(torch.float64).numpy(), expected, atol=1e-15)
    assert math.isclose(float(torch.linalg.vector_norm(color_correlation(torch.float64), dim=0).max()), 1.0)


def test_to_valid_rgb_is_matrix_then_sigmoid():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=torch.float64)
    m = color_correlation(torch.float64)
    manual = torch.sigmoid(torch.einsum("dc,nchw->ndhw", m, x))
    torch.testing.assert_close(to_valid_rgb(x), manual)
    torch.testing.assert_close(to_valid_rgb(x, decorrelate=False), torch.sigmoid(x))


def test_fourier_image_is_scaled_inverse_fft_over_four():
    img = FourierImage(1, (6, 8), generator=torch.Generator().manual_seed(3))
    sp = img.spectrum.detach().double()
    spec = torch.complex(sp[..., 0], sp[..., 1])
    freqs = rfft2d_freqs(6, 8)
    scale = 1.0 / torch.clamp(freqs, min=1 / 8)
    # TF-style unnormalised irfft (1/(h·w)) times sqrt(h·w), as Lucid writes it.
    manual = torch.fft.irfft2(spec * scale, s=(6, 8)) * math.sqrt(6 * 8) / 4.0
    torch.testing.assert_close(img.raw().detach().double(), manual, atol=1e-6, rtol=1e-5)
    out = img()
    assert out.shape == (1, 3, 6, 8) and bool(((out > 0) & (out < 1)).all())


def test_fourier_image_seeded_init_and_spectrum_sd():
    a = FourierImage(4, 32, generator=torch.Generator().manual_seed(1))
    b = FourierImage(4, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.spectrum, b.spectrum)
    assert abs(float(a.spectrum.detach().std()) - 0.01) < 0.001
    assert [n for n, _ in a.named_parameters()] == ["spectrum"]


def test_pad_and_jitter_sizes_and_values():
    x = torch.rand(2, 3, 10, 10)
    g = torch.Generator().manual_seed(0)
    p = Pad(12, 0.5)(x, g)
    assert p.shape == (2, 3, 34, 34) and bool((p[..., :12, :] == 0.5).all())
    j = Jitter(8)(p, g)
    assert j.shape == (2, 3, 26, 26)
    offsets = {Jitter(2)(torch.arange(25.0).view(1, 1, 5, 5), g)[0, 0, 0, 0].item() for _ in range(200)}
    assert offsets == {0.0, 1.0, 2.0, 5.0, 6.0, 7.0, 10.0, 11.0, 12.0}  # dy, dx each in 0..d, inclusive


def test_lucid_choice_lists():
    assert STANDARD_SCALES[0] == pytest.approx(0.9) and STANDARD_SCALES[-1] == pytest.approx(1.1)
    assert len(STANDARD_SCALES) == 11 and STANDARD_ANGLES.count(0) == 6 and len(STANDARD_ANGLES) == 26


def test_scale_uses_lucids_truncated_size():
    g = torch.Generator().manual_seed(0)
    sizes = {RandomScale()(torch.rand(1, 3, 50, 50), g).shape[-1] for _ in range(300)}
    assert sizes == {int(s * 50 + 1e-6) for s in STANDARD_SCALES}


def test_rotation_turns_the_image_about_its_centre():
    x = torch.zeros(1, 1, 21, 21)
    x[0, 0, 10, 15] = 1.0  # a dot 5 px right of the centre
    out = RandomRotate((90,))(x, torch.Generator())
    peak = divmod(int(out.flatten().argmax()), 21)
    assert peak in {(15, 10), (5, 10)}  # 5 px below or above the centre: a quarter turn
    assert RandomRotate((0,))(x, torch.Generator()) is x


def test_standard_transforms_are_seeded_and_differentiable():
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    a = standard_transforms()(x, torch.Generator().manual_seed(5))
    b = standard_transforms()(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    a.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
