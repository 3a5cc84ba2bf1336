from __future__ import annotations

import pytest
import torch

from ftprobe.core.errors import FtprobeError
from ftprobe.core.metric import Metric, Need, resolve_reduce


class Counter(Metric):
    """Counts samples and keeps the largest value, per layer lazily."""

    name = "counter"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.add_state("n", torch.zeros((), dtype=torch.int64), reduce="sum")
        self.add_state("top", torch.full((), -torch.inf), reduce="max")
        self.add_state("seen", [], reduce="cat")
        self.add_state("per_layer", {}, reduce="sum")

    def update(self, step):
        x = step
        self.n = self.n + x.shape[0]
        self.top = torch.maximum(self.top, x.max())
        self.seen = [*self.seen, x]
        key = f"l{x.shape[1]}"
        self.per_layer = {**self.per_layer, key: self.per_layer.get(key, 0) + x.sum()}

    def compute(self):
        return {"n": self.n, "top": self.top, "seen": sum(t.shape[0] for t in self.seen),
                "layers": sorted(self.per_layer)}


def test_reset_and_options_recorded():
    m = Counter(scale=2.0)
    m.update(torch.ones(3, 2))
    assert m.compute()["n"] == 3
    m.reset()
    assert m.n == 0 and m.seen == [] and m.per_layer == {}
    assert m.options() == {"scale": 2.0}
    assert Counter.describe().startswith("Counts samples")
    assert Need.ACTIVATIONS in m.needs and m.views() == frozenset({"gap"})


def test_merge_equals_sequential_including_lazy_dicts_and_chunk_lists():
    batches = [torch.randn(4, 2), torch.randn(5, 3), torch.randn(2, 2)]
    seq = Counter()
    for b in batches:
        seq.update(b)
    a, b = Counter(), Counter()
    a.update(batches[0])
    b.update(batches[1])
    b.update(batches[2])
    fresh = Counter()
    fresh.merge_state(a)  # an empty default merged with a filled state keeps it
    fresh.merge_state(b)
    assert fresh.compute() == seq.compute()
    torch.testing.assert_close(fresh.per_layer["l2"], seq.per_layer["l2"])


def test_unknown_reduction_and_missing_super_init():
    with pytest.raises(ValueError, match="unknown reduction"):
        resolve_reduce("median")

    class Bad(Metric):
        name = "bad"

        def __init__(self):
            self.add_state("x", torch.zeros(()))

        def update(self, step):
            pass

        def compute(self):
            return {}

    with pytest.raises(RuntimeError, match="super"):
        Bad()


def test_state_dict_round_trip(tmp_path):
    m = Counter()
    m.update(torch.randn(3, 2))
    torch.save(m.state_dict(), tmp_path / "s.pt")
    m2 = Counter()
    m2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    assert m2.compute() == m.compute()
    with pytest.raises(ValueError, match="lacks"):
        m2.load_state_dict({})


def test_errors_are_ftprobe_errors():
    from ftprobe.core import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), FtprobeError)
