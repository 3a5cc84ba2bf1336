"""Two runs into one output: the second is refused at once (naming the first), a finished result is never lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftprobe.cli._lock import LOCK_NAME, OutputBusy, output_lock
from ftprobe.core.results import Result, Value

HOLD = """
import sys, time
from ftprobe.cli._lock import output_lock
with output_lock(sys.argv[1], command="holder"):
    print("locked", flush=True)
    time.sleep(60)
"""


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while not (path.exists() and path.read_text().strip()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, f"{path} never appeared"
        time.sleep(0.005)


@pytest.mark.slow
def test_a_second_compare_into_the_same_out_is_refused_and_the_first_result_kept(run_cli, tiny_runs, cli_images,
                                                                               tmp_path):
    out = tmp_path / "out"
    common = ["compare", str(tiny_runs / "base.pt"), str(tiny_runs / "run1" / "model.pt"), "--trust-checkpoint",
              "--data", str(cli_images), "--size", "32", "-m", "cka,weight_l2", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "ftprobe", *common, "--seed", "1"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(out / LOCK_NAME, first)  # the first run holds --out from its start to its last file
        second = run_cli(*common, "--seed", "2")
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert "written to" in stderr
    assert second.code == 1 and "written" not in second.err
    assert f"pid {first.pid}" in second.err and "another --out" in second.err and "Traceback" not in second.err
    res = json.loads((out / "results.json").read_text())
    assert res["run"]["seed"] == 1  # the finished result is the first run's, whole
    assert not (out / LOCK_NAME).exists()  # released: the next run may write here
    third = run_cli(*common, "--json", str(out / "again.json"), "-q")
    assert third.code == 0, third.err


def test_a_lock_dies_with_its_process(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputBusy, match=rf"pid {holder.pid} \(holder\).*another --out"):
            with output_lock(tmp_path):
                pass
        os.kill(holder.pid, signal.SIGKILL)  # no clean-up runs: the lock file stays behind, the OS lock does not
        holder.wait(timeout=30)
    finally:
        if holder.poll() is None:
            holder.kill()
    with output_lock(tmp_path, command="next") as lock:
        assert lock.read_text().split() == [str(os.getpid()), "next"]
    assert not (tmp_path / LOCK_NAME).exists()


def test_json_file_lock_names_the_json_option(tmp_path):
    target = tmp_path / "r.json"
    with output_lock(target, "--json"):
        with pytest.raises(OutputBusy, match="another --json"):
            with output_lock(target, "--json"):
                pass
        with output_lock(tmp_path / "other.json", "--json"):  # another file in the same folder is free
            pass


WRITER = """
import sys
from ftprobe.core.results import Result, Value
r = Result(values=[Value("m", "l", "model", model=sys.argv[2], scalars={"x": float(i)}) for i in range(200)])
for _ in range(int(sys.argv[3])):
    r.save(sys.argv[1])
"""


def test_concurrent_saves_to_one_file_never_leave_a_partial_or_lost_file(tmp_path):
    path = tmp_path / "results.json"
    Result(values=[Value("m", "l", "model", model="seed")]).save(path)
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "25"], stderr=subprocess.PIPE,
                                text=True) for name in ("a", "b")]
    seen = set()
    while any(w.poll() is None for w in writers):
        seen.add(Result.load(path).values[0].model)  # always a whole file: json parses
        time.sleep(0.002)
    errors = [w.communicate()[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    final = Result.load(path)
    assert final.values[0].model in {"a", "b"} and len(final.values) == 200
    assert seen <= {"seed", "a", "b"}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temporary file left behind


def test_report_is_refused_while_a_run_writes_its_folder(run_cli, tmp_path):
    res = Result(models=[{"label": "a", "source": "<module>", "kind": "module"}], pairs=[],
                 run={"versions": {"ftprobe": "0", "torch": "0"}})
    src = res.save(tmp_path / "in" / "results.json")
    with output_lock(tmp_path / "out", command="ftprobe compare"):
        r = run_cli("report", src, "--out", tmp_path / "out")
    assert r.code == 1 and f"pid {os.getpid()} (ftprobe compare)" in r.err and "another --out" in r.err
    assert not (tmp_path / "out" / "report.html").exists()
    assert run_cli("report", src, "--out", tmp_path / "out").code == 0
