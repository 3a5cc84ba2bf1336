"""report.html stays light however often its top-image grids show the same images: each image is embedded once, as
a thumbnail of the size the page shows it, JPEG for photographs and PNG for flat graphics."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ftprobe.report import write_report


@pytest.fixture(scope="module")
def photo_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 noisy 128 px photos (as hard to compress as photographs get) through three layers, k = 20: the top-image
    grids show every image many times."""
    import torch

    import ftprobe
    from ftprobe.testing import TinyNet, make_image_folder, perturbed_copy

    root = make_image_folder(tmp_path_factory.mktemp("photos"), classes=3, per_class=10, size=128, seed=5)
    base = TinyNet(num_classes=3, seed=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = ftprobe.compare(base, perturbed_copy(base, noise=0.3, seed=1), data=root,
                              layers=["conv2d0", "mixed4d", "mixed5b"], size=32, batch_size=10, device="cpu",
                              metrics=["topk_overlap", "class_concentration", "weight_l2"],
                              options={"topk_overlap": {"k": 20}, "class_concentration": {"k": 20}})
    finally:
        torch.set_num_threads(threads)
    out = tmp_path_factory.mktemp("photo_report")
    write_report(res, out)
    return out


def _thumbs(page: str) -> dict[str, bytes]:
    return {m.group(1): base64.b64decode(m.group(3)) for m in
            re.finditer(r"\.(t\d+)\{background-image:url\(data:image/(jpeg|png);base64,([A-Za-z0-9+/=]+)\)", page)}


@pytest.mark.slow
def test_report_of_thirty_photos_stays_small(photo_report: Path) -> None:
    page = (photo_report / "report.html").read_text(encoding="utf-8")
    size = len(page.encode())
    assert size < 600_000, f"report.html is {size / 1e6:.2f} MB"
    thumbs = _thumbs(page)
    assert 0 < len(thumbs) <= 30, "each top image is embedded once, however often the grids show it"
    for key, data in thumbs.items():
        with Image.open(io.BytesIO(data)) as img:
            assert max(img.size) <= 96, (key, img.size)
            assert img.format == "JPEG", "noisy photos are JPEG"
    cells = re.findall(r'class="th (t\d+)', page)
    assert len(cells) > 3 * len(thumbs) and set(cells) == set(thumbs)  # shown often, defined once


def test_flat_images_stay_png(tmp_path: Path) -> None:
    from ftprobe.report.grids import encode_thumb

    flat = np.zeros((96, 96, 3), np.uint8)
    flat[:, 48:] = (200, 30, 30)
    mime, data = encode_thumb(flat)
    with Image.open(io.BytesIO(data)) as img:
        assert mime == "image/png" and img.format == "PNG"
        assert np.array_equal(np.asarray(img.convert("RGB")), flat), "flat graphics are kept exactly"
    noisy = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    assert encode_thumb(noisy)[0] == "image/jpeg"


