from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torchvision

import ftprobe
from ftprobe.core.errors import FtprobeError
from ftprobe.testing import TinyNet, make_image_folder, perturbed_copy

KW = dict(metrics="cka,topk_overlap,class_concentration,weight_l2", options={"topk_*": {"k": 4}},
          layers=["mixed3a", "mixed5b"], size=16, batch_size=4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("resume"), classes=3, per_class=8, size=20)


def _same(a: ftprobe.Result, b: ftprobe.Result) -> None:
    assert len(a.values) == len(b.values)
    for va, vb in zip(a.values, b.values):
        assert (va.metric, va.layer, va.subject) == (vb.metric, vb.layer, vb.subject)
        for k, x in va.scalars.items():
            y = vb.scalars[k]
            assert (x != x and y != y) or x == pytest.approx(y, abs=1e-10), (va.metric, va.layer, k)
        for k in va.arrays:
            if "index" in k:
                assert va.arrays[k] == vb.arrays[k], (va.metric, va.layer, k)
        assert set(va.intervals) == set(vb.intervals), (va.metric, va.layer)
        for k, ia in va.intervals.items():
            ib = vb.intervals[k]
            for f in ("lo", "hi", "se"):
                assert ia[f] == pytest.approx(ib[f], abs=1e-10, nan_ok=True), (va.metric, va.layer, k, f)
            assert [r is None for r in ia["replicates"]] == [r is None for r in ib["replicates"]]
            assert [r for r in ia["replicates"] if r is not None] == pytest.approx(
                [r for r in ib["replicates"] if r is not None], abs=1e-10)
    assert a.resampling == b.resampling


class _StopAfter:
    def __init__(self, n: int) -> None:
        self.n, self.seen = n, 0

    def __call__(self, k: int) -> None:
        self.seen += 1
        if self.seen == self.n:
            raise KeyboardInterrupt


def test_interrupted_then_resumed_equals_uninterrupted(folder, tmp_path):
    base = TinyNet()
    tuned = perturbed_copy(base, 0.3)
    full = ftprobe.compare(base, tuned, data=folder, **KW)
    ckpt = tmp_path / "ck.pt"
    part = ftprobe.compare(base, tuned, data=folder, checkpoint=ckpt, progress=_StopAfter(3), **KW)
    assert part.run["interrupted"] and part.run["samples"] == 12 and ckpt.exists()
    assert any("--resume" in w for w in part.warnings)
    resumed = ftprobe.compare(base, tuned, data=folder, checkpoint=ckpt, resume=True, **KW)
    assert not resumed.run["interrupted"] and resumed.run["samples"] == 24
    _same(full, resumed)
    assert not ckpt.exists()  # a completed run removes its checkpoint


def test_interrupted_then_resumed_run_has_the_same_intervals(folder, tmp_path):
    base = TinyNet()
    tuned = perturbed_copy(base, 0.3)
    kw = {**KW, "intervals": True, "interval_groups": 5}
    full = ftprobe.compare(base, tuned, data=folder, **kw)
    assert any(v.intervals for v in full.values)
    ckpt = tmp_path / "ck.pt"
    ftprobe.compare(base, tuned, data=folder, checkpoint=ckpt, progress=_StopAfter(3), **kw)
    with pytest.raises(FtprobeError, match="different job"):  # the groups are part of the job
        ftprobe.compare(base, tuned, data=folder, checkpoint=ckpt, resume=True, **{**kw, "interval_groups": 6})
    resumed = ftprobe.compare(base, tuned, data=folder, checkpoint=ckpt, resume=True, **kw)
    _same(full, resumed)


def test_resume_of_a_stream_skips_done_batches(tmp_path):
    base = TinyNet()
    tuned = perturbed_copy(base, 0.3)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in range(5)]
    kw = dict(metrics="cka", layers=["mixed4d"])
    full = ftprobe.compare(base, tuned, data=batches, **kw)
    ckpt = tmp_path / "s.pt"
    ftprobe.compare(base, tuned, data=batches, checkpoint=ckpt, checkpoint_every=1, progress=_StopAfter(2), **kw)
    resumed = ftprobe.compare(base, tuned, data=batches, checkpoint=ckpt, resume=True, **kw)
    _same(full, resumed)


def test_resume_refuses_another_job(folder, tmp_path):
    base = TinyNet()
    ckpt = tmp_path / "ck.pt"
    ftprobe.compare(base, perturbed_copy(base), data=folder, checkpoint=ckpt, progress=_StopAfter(1), **KW)
    with pytest.raises(FtprobeError, match="different job"):
        ftprobe.compare(base, perturbed_copy(base), data=folder, checkpoint=ckpt, resume=True,
                        **{**KW, "batch_size": 8})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def resnet_job(tmp_path_factory, folder):
    d = tmp_path_factory.mktemp("dist")
    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=3)
    ftprobe.save(m, d / "base.pt", arch="torchvision:resnet18", num_classes=3)
    ftprobe.save(perturbed_copy(m, 0.2), d / "tuned.pt", arch="torchvision:resnet18", num_classes=3)
    args = [str(d / "base.pt"), str(d / "tuned.pt"), "--layers", "layer2", "--layers", "layer4", "--data",
            str(folder), "--size", "32", "--batch-size", "4", "--k", "3"]
    return d, args


def _cli(args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "ftprobe", "-q", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


@pytest.mark.slow
def test_two_gloo_ranks_equal_single_process(resnet_job):
    d, args = resnet_job
    single = _cli(["compare", *args, "--json", str(d / "single.json")])
    assert single.returncode == 0, single.stderr
    port = _free_port()
    dist = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(port), "-m", "ftprobe", "-q", "compare", *args, "--device", "cpu",
         "--json", str(d / "dist.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert dist.returncode == 0, dist.stderr[-3000:]
    a = ftprobe.Result.load(d / "single.json")
    b = ftprobe.Result.load(d / "dist.json")
    assert b.run["world_size"] == 2 and b.run["samples"] == a.run["samples"] == 24
    _same(a, b)
    cka = [v.scalars["cka"] for v in b.select("cka") if "cka" in v.scalars]
    assert cka and all(0 < c < 1 for c in cka)


@pytest.mark.slow
def test_two_gloo_ranks_give_the_intervals_of_one_process(resnet_job):
    d, args = resnet_job
    args = [*args, "--intervals", "--interval-groups", "6", "--metrics", "cka,topk_overlap"]
    single = _cli(["compare", *args, "--json", str(d / "single_iv.json")])
    assert single.returncode == 0, single.stderr
    dist = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(_free_port()), "-m", "ftprobe", "-q", "compare", *args, "--device", "cpu",
         "--json", str(d / "dist_iv.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert dist.returncode == 0, dist.stderr[-3000:]
    a = ftprobe.Result.load(d / "single_iv.json")
    b = ftprobe.Result.load(d / "dist_iv.json")
    assert b.run["world_size"] == 2 and a.resampling["groups"] == 6
    assert sum(1 for v in a.values if v.intervals) >= 4
    _same(a, b)


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(resnet_job, tmp_path):
    d, args = resnet_job
    full = _cli(["compare", *args, "--json", str(tmp_path / "full.json")])
    assert full.returncode == 0, full.stderr
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ftprobe", "-q", "compare", *args, "--out", str(out),
                             "--checkpoint-every", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # no chance to save anything more: only the periodic checkpoint survives
    proc.wait()
    assert (out / "checkpoint.pt").exists()
    resumed = _cli(["compare", *args, "--out", str(out), "--resume", "--checkpoint-every", "1"])
    assert resumed.returncode == 0, resumed.stderr
    _same(ftprobe.Result.load(tmp_path / "full.json"), ftprobe.Result.load(out / "results.json"))


@pytest.mark.slow
def test_ctrl_c_in_the_cli_saves_and_says_how_to_resume(resnet_job, tmp_path):
    d, args = resnet_job
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "ftprobe", "compare", *args, "--out", str(out),
                             "--checkpoint-every", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.fail("the run finished before it could be interrupted; make the job longer")
    assert proc.returncode == 130, err
    assert "--resume" in err and (out / "checkpoint.pt").exists() and (out / "results.json").exists()
