from __future__ import annotations

import importlib.metadata
import sys
import textwrap

import pytest

from ftprobe.core.errors import PluginError
from ftprobe.core.metric import Metric
from ftprobe.core.registry import GROUP, discover, get_metric, list_metrics, register_metric, unregister_metric

BUILTINS = {"cka", "weight_l2", "topk_overlap", "class_concentration"}


@pytest.fixture
def fake_dist(tmp_path):
    def make(name: str, entry_points_txt: str) -> importlib.metadata.Distribution:
        info = tmp_path / f"{name.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(entry_points_txt)
        return importlib.metadata.PathDistribution(info)

    return make


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    (tmp_path / "fake_plugin.py").write_text(textwrap.dedent("""
        from ftprobe.core.metric import Metric

        class Good(Metric):
            name = "good"
            def update(self, step): pass
            def compute(self): return {}

        class Misnamed(Good):
            name = "other"

        class NotAMetric:
            name = "bad"

        raise_on_import = False
    """))
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('missing dependency xyz')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for mod in ("fake_plugin", "broken_plugin"):
        sys.modules.pop(mod, None)


def _eps(*dists):
    return [ep for d in dists for ep in d.entry_points.select(group=GROUP)]


def test_builtins_are_found_through_entry_points_only():
    assert BUILTINS <= set(list_metrics())
    specs = discover()
    assert {specs[n].provider for n in BUILTINS} == {"ftprobe"}


def test_third_party_metric_is_discovered_with_provider(fake_dist, plugin_module):
    d = fake_dist("ftprobe-good", "[ftprobe.metrics]\ngood = fake_plugin:Good\n")
    specs = discover(_eps(d))
    assert specs["good"].provider == "ftprobe-good" and specs["good"].version == "1.0"
    assert specs["good"].load().name == "good"


def test_conflicting_names_name_both_providers(fake_dist, plugin_module):
    a = fake_dist("ftprobe-a", "[ftprobe.metrics]\ngood = fake_plugin:Good\n")
    b = fake_dist("ftprobe-b", "[ftprobe.metrics]\ngood = fake_plugin:Misnamed\n")
    with pytest.raises(PluginError, match="provided by both ftprobe-a .* and ftprobe-b"):
        discover(_eps(a, b))


def test_same_distribution_listed_twice_is_deduplicated(fake_dist, plugin_module):
    a = fake_dist("ftprobe-a", "[ftprobe.metrics]\ngood = fake_plugin:Good\n")
    assert list(discover(_eps(a) + _eps(a))) == ["good"]


def test_misnamed_plugin_is_a_plugin_error(fake_dist, plugin_module):
    d = fake_dist("ftprobe-x", "[ftprobe.metrics]\ngood = fake_plugin:Misnamed\n")
    with pytest.raises(PluginError, match="declares name='other' but distribution 'ftprobe-x' registers it as 'good'"):
        discover(_eps(d))["good"].load()


def test_non_metric_is_a_plugin_error(fake_dist, plugin_module):
    d = fake_dist("ftprobe-x", "[ftprobe.metrics]\nbad = fake_plugin:NotAMetric\n")
    with pytest.raises(PluginError, match="not a subclass of ftprobe.Metric"):
        discover(_eps(d))["bad"].load()


def test_broken_import_names_the_distribution_and_does_not_stop_discovery(fake_dist, plugin_module):
    d = fake_dist("ftprobe-broken", "[ftprobe.metrics]\nbroken = broken_plugin:X\ngood = fake_plugin:Good\n")
    specs = discover(_eps(d))  # discovery itself imports nothing
    assert specs["good"].load().name == "good"
    with pytest.raises(PluginError, match="ftprobe-broken.*missing dependency xyz.*--disable-metric broken"):
        specs["broken"].load()


def test_disable_and_builtins_only(fake_dist, plugin_module, monkeypatch):
    d = fake_dist("ftprobe-good", "[ftprobe.metrics]\ngood = fake_plugin:Good\n")
    eps = _eps(d) + list(importlib.metadata.entry_points(group=GROUP))
    assert "good" not in discover(eps, disabled={"good"})
    assert "good" not in discover(eps, builtins_only=True)
    monkeypatch.setenv("FTPROBE_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert set(discover(eps)) == BUILTINS


def test_list_metrics_globs():
    assert list_metrics("topk_*") == ["topk_overlap"]
    assert "cka" not in list_metrics("*", exclude=["c*"])


def test_register_metric_locally():
    class Local(Metric):
        name = "local_thing"

        def update(self, step):
            pass

        def compute(self):
            return {}

    register_metric(Local)
    try:
        assert get_metric("local_thing") is Local
        assert "local_thing" in list_metrics()
    finally:
        unregister_metric("local_thing")
    assert "local_thing" not in list_metrics()


def test_unknown_metric_suggests():
    with pytest.raises(PluginError, match="Did you mean: cka"):
        get_metric("ckaa")


def test_a_broken_plugin_is_skipped_unless_asked_for(monkeypatch, tmp_path):
    import ftprobe
    from ftprobe.core import registry
    from ftprobe.testing import TinyNet

    (tmp_path / "broken_mod.py").write_text("raise ImportError('needs a package that is not installed')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = registry.MetricSpec("broken", "ftprobe-broken", "1.0", "broken_mod:X",
                                 lambda: registry._load_checked(
                                     importlib.metadata.EntryPoint("broken", "broken_mod:X", GROUP), "ftprobe-broken"))
    real = registry.metric_specs

    monkeypatch.setattr(registry, "metric_specs", lambda disabled=(): {**real(disabled), "broken": broken})
    monkeypatch.setattr("ftprobe.core.plan.metric_specs", registry.metric_specs)  # where select_metrics looks it up
    notes: list[str] = []
    base = TinyNet()
    r = ftprobe.compare(base, base, layers="mixed3a", notice=notes.append)  # default selection: skipped, noted
    assert {v.metric for v in r.values} == {"weight_l2"}
    assert any(s["metric"] == "broken" and "ftprobe-broken" in s["reason"] for s in r.skipped_metrics)
    with pytest.raises(PluginError, match="ftprobe-broken"):
        ftprobe.compare(base, base, layers="mixed3a", metrics="broken,weight_l2")
