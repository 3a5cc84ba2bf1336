"""The plugin as users meet it: found through the ``ftprobe.metrics`` entry points with its distribution and version,
hidden by FTPROBE_DISABLE_PLUGIN_AUTOLOAD=1, removed by --disable-metric, and run by ``ftprobe compare``."""

from __future__ import annotations

import importlib.metadata
import json

import ftprobe
import pytest
from ftprobe.core.errors import PluginError
from ftprobe.core.registry import metric_specs
from ftprobe.testing.cli import invoke

NAMES = ("svcca", "pwcca", "procrustes", "mutual_knn")
VERSION = importlib.metadata.version("ftprobe-similarity")


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    return invoke(capsys, *args)  # ftprobe's own in-process runner: only SystemExit is caught


def _rows(table: str) -> dict[str, list[str]]:
    """Rows of the `ftprobe metrics` table: name → its cells."""
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) > 3 and cells[0]:
            rows[cells[0]] = cells
    return rows


def test_entry_points_name_the_distribution_and_version() -> None:
    import ftprobe_similarity

    specs = metric_specs()
    for name in NAMES:
        assert (specs[name].provider, specs[name].version) == ("ftprobe-similarity", VERSION)
        assert specs[name].load().name == name
    assert VERSION == ftprobe_similarity.__version__


def test_ftprobe_metrics_lists_the_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "metrics")
    rows = _rows(out)
    assert code == 0
    for name in NAMES:
        assert rows[name][1:4] == ["ftprobe-similarity", VERSION, "activations"], rows[name]
    assert rows["cka"][1] == "ftprobe"


def test_autoload_switch_hides_the_plugin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTPROBE_DISABLE_PLUGIN_AUTOLOAD", "1")
    code, out, _ = _cli(capsys, "metrics")
    rows = _rows(out)
    assert code == 0 and "cka" in rows and not set(NAMES) & set(rows)
    assert not set(NAMES) & set(ftprobe.list_metrics())


def test_disable_metric_removes_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "metrics", "--disable-metric", "svcca")
    rows = _rows(out)
    assert code == 0 and "svcca" not in rows and "pwcca" in rows
    from ftprobe.testing import TinyNet

    with pytest.raises(PluginError, match="Unknown metric 'svcca'"):  # what `compare --disable-metric svcca` passes
        ftprobe.compare(TinyNet(), TinyNet(), metrics="svcca", disabled=["svcca"], layers="mixed4a")


@pytest.mark.slow  # about 5 s alone, mostly torchvision's first import
def test_compare_runs_the_plugin_metrics(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import torch
    import torchvision
    from ftprobe.testing import make_image_folder, perturbed_copy

    torch.manual_seed(0)
    base = torchvision.models.resnet18(weights=None)
    torch.save(base.state_dict(), tmp_path / "base.pt")
    torch.save(perturbed_copy(base, 0.3).state_dict(), tmp_path / "tuned.pt")
    images = make_image_folder(tmp_path / "images", classes=3, per_class=8, size=40)
    code, out, err = _cli(capsys, "compare", str(tmp_path / "base.pt"), str(tmp_path / "tuned.pt"), "--arch",
                          "torchvision:resnet18", "--data", str(images), "--size", "32", "--layers", "layer3",
                          "--metrics", ",".join(NAMES), "-o", "mutual_knn.k=5", "--json", "-")
    assert code == 0, err
    res = json.loads(out)
    got = {(v["metric"], v["layer"]): v["scalars"] for v in res["values"]}
    assert set(got) == {(name, "layer3") for name in NAMES}
    assert 0 < got[("svcca", "layer3")]["svcca"] < 1 and 0 < got[("procrustes", "layer3")]["procrustes"] < 2
    assert got[("mutual_knn", "layer3")]["n"] == 24
    assert {res["metrics"][n]["provider"] for n in NAMES} == {"ftprobe-similarity"}


def test_shared_moments_give_the_same_values_as_separate_runs() -> None:
    from ftprobe.testing import TinyImages, tiny_pair

    base, tuned = tiny_pair()
    kw = dict(data=TinyImages(n=40, size=16), layers=["mixed4a", "mixed5b"], batch_size=8, size=16,
              preprocess="none", device="cpu")
    together = ftprobe.compare(base, tuned, metrics="svcca,pwcca,procrustes", **kw)  # one state, updated once
    for name in ("svcca", "pwcca", "procrustes"):
        alone = ftprobe.compare(base, tuned, metrics=name, **kw)
        for layer in ("mixed4a", "mixed5b"):
            assert together.get(name, layer, name) == alone.get(name, layer, name)
