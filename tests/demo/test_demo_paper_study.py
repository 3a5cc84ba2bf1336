"""``examples/paper_study.py --smoke``: the study's protocol end to end on the demo world (slow)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "paper_study.py"


def _load():
    spec = importlib.util.spec_from_file_location("paper_study_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_run_trains_saves_compares_and_reports(tmp_path):
    threads = torch.get_num_threads()
    try:
        _load().run(["--smoke", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    ckpts = {p.stem for p in (tmp_path / "checkpoints").glob("*.pt")}
    assert ckpts == {"pretrained", "mode_a1", "mode_a2", "mode_b", "end_scratch_init", "end_scratch",
                     "scratch_init", "scratch", "single_objects", "double_objects"}
    doc = json.loads((tmp_path / "results.json").read_text())
    assert {"cka", "weight_l2", "topk_overlap", "class_concentration"} <= set(doc["metrics"])
    assert ("end_scratch_init", "end_scratch") in {tuple(p) for p in doc["pairs"]}
    study = doc["run"]["paper_study"]
    assert study["smoke"] is True and [g["dataset"] for g in study["double_grid"]] == ["objects"]
    assert all(0 <= g[r] <= 100 for g in study["double_grid"] for r in ("single", "double"))
    assert {"top1", "top3", "top5"} <= set(study["accuracy"]["mode_a1 (medium test)"])
    assert [f["key"] for f in study["findings"]][-1] == "double_ft"
    assert "cka" in doc["run"]["other_data"]["note"]  # CKA ran on the test split, the top-k analyses on train
    assert doc["data"]["root"].endswith("medium_train.csv")


def test_protocol_pieces_without_training(tmp_path):
    """Split sizes, the CSV a comparison reads back, and the study's layer groups on torchvision's GoogLeNet."""
    import torchvision

    from ftprobe.data import open_data
    from ftprobe.demo.protocol import ImageTable, study_layers

    table = ImageTable(tuple(f"/x/{i}.png" for i in range(50)), torch.arange(50) % 3, ("a", "b", "c"))
    train, val, test = table.split([0.8, 0.1, 0.1], seed=0)
    assert (len(train), len(val), len(test)) == (40, 5, 5)
    assert not set(train.paths) & set(val.paths) and not set(val.paths) & set(test.paths)
    assert table.split([0.8, 0.1, 0.1], seed=0)[1].paths == val.paths
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(tmp_path / f"{i}.png")
    small = ImageTable(tuple(str(tmp_path / f"{i}.png") for i in range(3)), torch.tensor([2, 0, 1]), ("a", "b", "c"))
    src = open_data(str(small.write_csv(tmp_path / "split.csv")), preprocess="none", size=8)
    assert tuple(src.classes) == ("a", "b", "c")
    assert torch.cat([b.labels for b in src.batches()]).tolist() == [2, 0, 1]
    layers = study_layers(torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=False))
    assert layers["conv2d0"] == "conv1" and layers["mixed4d"] == "inception4d" and len(layers) == 12
