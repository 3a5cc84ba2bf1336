"""The models are cached in the user cache directory (XDG_CACHE_HOME honoured) and reused unless fresh."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ftprobe.demo import variants
from ftprobe.demo.variants import MODELS, QUICK, Settings, cache_dir, load_or_train
from ftprobe.demo.world import World

TINY = Settings(n_photos=60, pretrain_epochs=1, n_medium=30, medium_epochs=1, n_small=30, small_epochs=1,
                small_seeds=1, n_val=30, n_test=30, width=4, n_eval=30, k=5)


def test_cache_dir_honours_xdg_and_depends_on_training_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cache_dir(TINY)
    assert path.parent == tmp_path / "ftprobe" / "demo"
    assert cache_dir(dataclasses.replace(TINY, k=50, n_eval=90)) == path  # comparison settings are not trained
    assert cache_dir(dataclasses.replace(TINY, lr_head=0.1)) != path
    assert cache_dir(QUICK) != cache_dir(Settings())
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert str(cache_dir(TINY)).startswith(str(tmp_path / "home" / ".cache" / "ftprobe" / "demo"))


def test_second_run_loads_without_training_and_fresh_retrains(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    world = World(32)
    models, record, cached = load_or_train(TINY, world, log=lambda m: None)
    assert not cached and set(models) == set(MODELS) and (cache_dir(TINY) / "training.json").is_file()
    assert set(record["accuracy"]) >= {"pretrained (photos, objects)", "mode_a1 (paintings, styles)"}

    def no_training(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(variants, "train_variants", no_training)
    again, record2, cached2 = load_or_train(TINY, world, log=lambda m: None)
    assert cached2 and record2 == record
    for name in MODELS:
        a, b = models[name].state_dict(), again[name].state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(AssertionError, match="cache should have been used"):
        load_or_train(TINY, world, fresh=True, log=lambda m: None)


def test_damaged_cache_is_retrained(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = cache_dir(TINY)
    path.mkdir(parents=True)
    (path / "training.json").write_text("{not json")
    for name in MODELS:
        (path / f"{name}.pt").write_bytes(b"junk")
    calls = []
    real = variants.train_variants
    monkeypatch.setattr(variants, "train_variants", lambda *a, **k: calls.append(1) or real(*a, **k))
    _, _, cached = load_or_train(TINY, World(32), log=lambda m: None)
    assert not cached and calls == [1]
