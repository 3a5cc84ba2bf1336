"""User-supplied data: torch Datasets, DataLoaders and iterables of batches."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from ftprobe.core.errors import DataError
from ftprobe.data import ShuffledLoaderWarning, open_data


def _tensors(n: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 4, 4, generator=g), torch.arange(n) % 3


class PairDataset(Dataset):  # type: ignore[type-arg]
    """Returns ``(image_tensor, label)``; ``classes`` and ``samples`` like torchvision's ImageFolder."""

    def __init__(self, n: int = 10) -> None:
        self.x, self.y = _tensors(n)
        self.classes = ["a", "b", "c"]
        self.samples = [(f"/fake/{i}.png", int(self.y[i])) for i in range(n)]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def test_dataset_is_wrapped_with_positions_as_indices() -> None:
    ds = PairDataset()
    src = open_data(ds, batch_size=4)
    assert src.kind == "dataset" and src.has_labels and src.classes == ("a", "b", "c") and src.num_samples == 10
    batches = list(src.batches())
    assert [len(b) for b in batches] == [4, 4, 2]
    torch.testing.assert_close(torch.cat([b.x for b in batches]), ds.x)  # tensors used as supplied
    assert torch.cat([b.labels for b in batches]).tolist() == ds.y.tolist()
    assert torch.cat([b.index for b in batches]).tolist() == list(range(10))
    assert src.path_of(7) == "/fake/7.png"


def test_dataset_with_limit_keeps_original_positions() -> None:
    ds = PairDataset(20)
    src = open_data(ds, limit=5, seed=3, batch_size=8)
    (b,) = list(src.batches())
    idx = b.index.tolist()
    assert len(idx) == 5 and idx == sorted(idx)
    torch.testing.assert_close(b.x, ds.x[idx])
    assert idx == torch.cat([c.index for c in open_data(ds, limit=5, seed=3).batches()]).tolist()


def test_dataset_of_pil_images_goes_through_the_preset(tmp_path: Path) -> None:
    class Pil(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> tuple[Image.Image, torch.Tensor]:
            return Image.new("L", (9, 7), 255), torch.tensor([1, 0, 1])

    src = open_data(Pil(), size=5, preprocess="caffe")
    assert src.multilabel and src.num_classes == 3
    (b,) = list(src.batches())
    assert b.x.shape == (2, 3, 5, 5) and b.labels.shape == (2, 3)
    torch.testing.assert_close(b.x[0, :, 0, 0], torch.tensor([255 - 103.939, 255 - 116.779, 255 - 123.68]))


def test_shuffled_loader_without_index_warns() -> None:
    x, y = _tensors()
    loader = DataLoader(TensorDataset(x, y), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    src = open_data(loader)
    with pytest.warns(ShuffledLoaderWarning, match="cannot be mapped back to files"):
        batches = list(src.batches())
    assert torch.cat([b.index for b in batches]).tolist() == list(range(10))  # running indices
    assert src.path_of(0) is None and src.describe()["shuffled"] is True


def test_sequential_loader_does_not_warn() -> None:
    x, y = _tensors()
    src = open_data(DataLoader(TensorDataset(x, y), batch_size=4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert sum(len(b) for b in src.batches()) == 10
    assert src.num_samples == 10 and src.batch_size == 4


def test_xy_index_batches_keep_their_index() -> None:
    x, y = _tensors(6)
    batches = [(x[:3], y[:3], torch.tensor([40, 41, 42])), (x[3:], y[3:], [7, 8, 9])]
    src = open_data(batches)
    assert src.kind == "iterable" and src.num_samples == 6
    got = list(src.batches())
    assert [b.index.tolist() for b in got] == [[40, 41, 42], [7, 8, 9]]
    assert all(b.index.dtype == torch.int64 for b in got)


def test_shuffled_loader_with_index_does_not_warn() -> None:
    x, y = _tensors()

    class WithIndex(Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 10

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
            return x[i], y[i], i

    loader = DataLoader(WithIndex(), batch_size=5, shuffle=True, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        batches = list(open_data(loader).batches())
    idx = torch.cat([b.index for b in batches])
    torch.testing.assert_close(torch.cat([b.x for b in batches]), x[idx])
    assert sorted(idx.tolist()) == list(range(10)) and idx.tolist() != list(range(10))


def test_dict_batches_and_running_indices() -> None:
    x, y = _tensors(7)
    stream = ({"images": x[i : i + 3], "labels": y[i : i + 3]} for i in range(0, 7, 3))
    src = open_data(stream)
    assert src.has_labels and src.num_samples is None  # peeks at the first batch; the generator is not lost
    got = list(src.batches())
    assert [len(b) for b in got] == [3, 3, 1]
    assert torch.cat([b.index for b in got]).tolist() == list(range(7))
    with pytest.raises(DataError, match="only once"):
        list(src.batches())


def test_limit_on_a_stream_keeps_the_first_samples() -> None:
    x, y = _tensors()
    src = open_data(DataLoader(TensorDataset(x, y), batch_size=4), limit=6)
    assert src.num_samples == 6 and src.describe()["limit_mode"] == "first"
    got = list(src.batches())
    assert [len(b) for b in got] == [4, 2] and torch.cat([b.labels for b in got]).tolist() == y[:6].tolist()


def test_multilabel_stream_and_iterable_dataset() -> None:
    class Stream(IterableDataset):  # type: ignore[type-arg]
        def __iter__(self):  # type: ignore[no-untyped-def]
            for i in range(5):
                yield torch.zeros(3, 2, 2), torch.tensor([i % 2, 1, 0, 0])

    src = open_data(Stream(), batch_size=2)
    assert src.kind == "iterable_dataset" and src.multilabel and src.num_classes == 4
    got = list(src.batches())
    assert [b.labels.shape for b in got] == [(2, 4), (2, 4), (1, 4)]
    json.dumps(src.describe())


@pytest.mark.parametrize(
    "bad, match",
    [
        ([(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(2))], "convert them to float"),
        ([(torch.zeros(2, 3, 4, 4), torch.zeros(3))], "one label per image"),
        ([(torch.zeros(2, 3, 4, 4), torch.zeros(2), torch.arange(5))], "one index per image"),
        ([{"labels": torch.zeros(2)}], "'image' key"),
        ([42], "cannot read a batch"),
    ],
    ids=["uint8", "label-count", "index-count", "dict-no-image", "not-a-batch"],
)
def test_malformed_batches_say_how_to_fix_them(bad: list[object], match: str) -> None:
    with pytest.raises(DataError, match=match):
        list(open_data(bad).batches())


@pytest.mark.parametrize("obj", [torch.zeros(2, 3, 4, 4), 3.5], ids=["tensor", "float"])
def test_unsupported_sources_are_data_errors(obj: object) -> None:
    with pytest.raises(DataError, match="Cannot read data from"):
        open_data(obj)  # type: ignore[arg-type]


def test_empty_iterable_is_a_data_error() -> None:
    src = open_data([])
    assert not src.has_labels
    with pytest.raises(DataError, match="yielded no samples"):
        list(src.batches())


def test_label_metadata_is_learnt_while_iterating_a_generator() -> None:
    x, y = _tensors(4)
    src = open_data(iter([(x, y)]))
    assert sum(len(b) for b in src.batches()) == 4
    assert src.has_labels and not src.multilabel  # known without re-reading the spent generator


def test_the_peeked_first_batch_is_not_kept_alive_for_the_whole_run() -> None:
    # The stream peeks at its first batch to learn the labels; the images of that batch must be freed once the run
    # has moved on (itertools.chain([first], rest) kept them until the stream ended: a batch of memory for nothing).
    import gc
    import weakref

    def batches():
        for _ in range(4):
            yield torch.rand(8, 3, 4, 4), torch.arange(8) % 3

    src = open_data(batches())
    assert src.has_labels  # forces the peek
    it = src.batches()
    first = next(it)
    ref = weakref.ref(first.x)
    del first
    next(it)
    gc.collect()
    assert ref() is None
    assert sum(len(b) for b in it) == 16
