"""The generated art world: deterministic, reproducible per index, class-balanced, exportable and readable."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ftprobe.core.errors import FtprobeError
from ftprobe.data import open_data
from ftprobe.demo.world import OBJECTS, STYLES, World, export_world


@pytest.fixture(scope="module")
def world():
    return World(size=32, seed=0)


@pytest.mark.parametrize("domain", ["photos", "paintings"])
def test_same_seed_gives_identical_tensors(domain):
    a, b = World(32, seed=3), World(32, seed=3)
    if domain == "photos":
        (xa, ya), (xb, yb) = a.photos(range(30)), b.photos(range(30))
    else:
        pa, pb = a.paintings(range(30)), b.paintings(range(30))
        (xa, ya), (xb, yb) = (pa.images, pa.objects), (pb.images, pb.objects)
    assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_another_seed_gives_another_world():
    assert not torch.equal(World(32, seed=0).photos(range(6))[0], World(32, seed=1).photos(range(6))[0])


@pytest.mark.parametrize("indices", [[7], [3, 41, 29, 0], [44, 2, 16, 5, 23, 38, 11]], ids=["one", "four", "seven"])
def test_any_subset_renders_the_same_images(world, indices):
    full = world.paintings(range(45))
    part = world.paintings(indices)
    assert torch.equal(part.images, full.images[indices])
    assert torch.equal(part.style, full.style[indices]) and torch.equal(part.objects, full.objects[indices])
    x_full, _ = world.photos(range(45))
    assert torch.equal(world.photos(indices)[0], x_full[indices])


def test_classes_are_balanced(world):
    _, y = world.photos(range(60))
    assert torch.bincount(y, minlength=len(OBJECTS)).tolist() == [10] * len(OBJECTS)
    p = world.paintings(range(1000, 1060))
    assert torch.bincount(p.style, minlength=len(STYLES)).tolist() == [12] * len(STYLES)
    first = torch.tensor([(i // len(STYLES)) % len(OBJECTS) for i in range(1000, 1060)])
    assert bool(p.objects[torch.arange(60), first].eq(1).all())  # the first object is always labelled
    assert 1 <= int(p.objects.sum(1).min()) and int(p.objects.sum(1).max()) <= 2
    assert 10 <= int((p.objects.sum(1) == 2).sum()) <= 50  # about half of the scenes hold a second object


def test_images_are_8_bit_rgb_in_unit_range(world):
    x = world.paintings(range(10)).images
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal((x * 255).round(), x * 255)


def test_domains_differ(world):
    """Paintings are not photos: the styles change the images' statistics (here: local contrast)."""
    photos, _ = world.photos(range(60))
    paintings = world.paintings(range(60)).images

    def local_contrast(x):
        return float((x[..., 1:] - x[..., :-1]).abs().mean())

    assert local_contrast(paintings) > 1.5 * local_contrast(photos)


def test_bad_size_is_a_user_error():
    with pytest.raises(FtprobeError, match="between 16 and 128"):
        World(size=8)


def test_export_decodes_and_loads_with_the_right_classes(world, tmp_path):
    written = export_world(world, tmp_path, photos=range(12), styles={"test": range(10)}, objects=range(100, 106))
    # PNGs decode to exactly the rendered tensors
    x, y = world.photos(range(12))
    png = tmp_path / "photos" / OBJECTS[int(y[4])] / "p0000004.png"
    arr = np.asarray(Image.open(png).convert("RGB"))
    assert torch.equal(torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255, x[4])
    # a class folder per style, read by ftprobe's data layer with the style of each painting
    src = open_data(written["styles/test"], preprocess="none", size=32, batch_size=4)
    assert set(src.classes) == set(STYLES) and src.num_samples == 10
    styles = world.paintings(range(10)).style
    for batch in src.batches():
        for i, label in zip(batch.index.tolist(), batch.labels.tolist()):
            name = src.classes[label]
            path = str(src.path_of(i))
            assert f"/{name}/" in path
            assert STYLES.index(name) == int(styles[int(path[-11:-4])])
    # the multi-label object task as a CSV with one 0/1 column per object
    csv_src = open_data(written["objects"], preprocess="none", size=32)
    assert csv_src.multilabel and tuple(csv_src.classes) == OBJECTS
    labels = torch.cat([b.labels for b in csv_src.batches()])
    assert torch.equal(labels, world.paintings(range(100, 106)).objects)
