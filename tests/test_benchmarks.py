"""The benchmark scripts run (on tiny settings) and print the ratios RESULTS.md quotes: a benchmark that rots is one
nobody can rerun."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"
RATIO = r"(\d+\.\d+)"


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_bench_overhead_prints_time_and_memory_ratios():
    out = _run("bench_overhead.py", "--images", "16", "--size", "64", "--batch-size", "8", "--repeats", "1",
               "--intervals", "4")
    assert re.search(rf"time   analysis / floor = {RATIO}", out), out
    assert re.search(rf"time   intervals \(4 groups\) / analysis = {RATIO}", out), out
    assert re.search(rf"memory intervals / analysis = {RATIO}", out), out
    m = re.search(rf"memory analysis / floor = {RATIO} .*added by the job (\d+) vs (\d+) MiB", out)
    assert m and float(m.group(1)) > 0, out


@pytest.mark.slow
def test_bench_peers_compares_with_torch_cka_on_the_same_job():
    out = _run("bench_peers.py", "--images", "128", "--repeats", "1")
    diff = re.search(r"max \|ftprobe − torch-cka\| over the 4×4 matrix \(same estimator\) = ([0-9.e+-]+)", out)
    assert diff and float(diff.group(1)) < 0.1, out
    for mode in ("floor", "ftprobe", "ftprobe-default", "torch-cka"):
        assert re.search(rf"^{mode}\s+time/floor = {RATIO}\s+peak memory/floor = {RATIO}", out, re.M), out


@pytest.mark.slow
def test_bench_scale_truncated_forward():
    out = _run("bench_scale.py", "--which", "truncated", "--truncated-images", "16", "--repeats", "1")
    assert re.search(rf"probing inception3a / full forward = {RATIO}", out), out


@pytest.mark.slow
def test_bench_featvis_strength_reports_every_channel_tried():
    out = _run("bench_featvis_strength.py", "--photos", "64", "--epochs", "1", "--size", "48", "--steps", "2",
               "--channels", "0,3")
    rows = re.findall(r"≥3×:\s+(\d+)/(\d+)", out)
    assert len(rows) == 4 and all(total == "2" for _, total in rows), out
    assert out.count("per channel:") == 4 and "raised above the start image" in out
