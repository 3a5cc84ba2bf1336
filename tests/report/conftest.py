"""Shared fixtures of the report tests: one small real comparison (three TinyNets, hostile names) and a report of it.

Chromium drives the browser checks; when its binary is missing those tests FAIL with the install command (a report
nobody has opened in a browser is not tested).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import ftprobe
from ftprobe.report import write_report
from ftprobe.testing import TinyNet, make_image_folder, perturbed_copy

# Class folders whose names would run code if a report pasted them into HTML unescaped (a folder name cannot
# hold "/", so "</script>" itself cannot be a class) and one that matplotlib would read as mathtext.
HOSTILE_CLASSES = ("<script>alert(1)", "<img src=x onerror=alert(2)>", "cls $x^2$")
MODEL_LABELS = ("base", "<i>tuned</i>", "run2")
LAYERS = ("conv2d0", "mixed4d", "mixed5b")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
INSTALL_HINT = ("Chromium is not installed, and the report tests open report.html in headless Chromium. Install it "
                "with: apt-get update && apt-get install -y chromium")


@pytest.fixture(scope="session")
def hostile_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_image_folder(tmp_path_factory.mktemp("report_imgs"), classes=3, per_class=5, size=32, seed=3)
    for i, name in enumerate(HOSTILE_CLASSES):
        (root / f"class_{i}").rename(root / name)
    return root


@pytest.fixture(scope="session")
def report_result(hostile_images: Path) -> ftprobe.Result:
    """base against a perturbed copy and a more perturbed one (two pairs), every metric, k = 3 and 5, cross CKA."""
    base = TinyNet(num_classes=3, seed=0)
    tuned, run2 = perturbed_copy(base, noise=0.3, seed=1), perturbed_copy(base, noise=0.6, seed=2)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is several times faster on a shared 2-core machine
    try:
        return ftprobe.compare(
            base, tuned, run2, labels=list(MODEL_LABELS), layers=list(LAYERS), data=hostile_images, pairs="first",
            options={"topk_overlap": {"k": [3, 5]}, "class_concentration": {"k": [3, 5]}, "cka": {"cross": True}},
            size=32, batch_size=5, device="cpu",
        )
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def report_dir(report_result: ftprobe.Result, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    write_report(report_result, out, summary_lines=["Fine-tuning changed <b>mixed5b</b> most."])
    return out


# -- running the CLI in-process ------------------------------------------------------------------------------------
class CliRun:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.exit_code, self.output, self.stderr = code, out, err


@pytest.fixture
def run_ftprobe(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``ftprobe ARGS`` in-process; only SystemExit is caught (bugs propagate)."""
    from ftprobe.cli import main

    def run(*args: str) -> CliRun:
        code = 0
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliRun(code, captured.out, captured.err)

    return run


# -- headless Chromium ---------------------------------------------------------------------------------------------
def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(INSTALL_HINT, pytrace=False)


_CHECKER = """<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><pre id="out">pending</pre>
<iframe id="f" src="{src}" style="width:1280px;height:900px"></iframe>
<script>
var errors = [];
window.addEventListener("error", function (e) {{ errors.push(String(e.message)); }});
document.getElementById("f").addEventListener("load", function () {{
  var out = document.getElementById("out"), d = this.contentDocument, w = this.contentWindow;
  var imgs = Array.from(d.images);
  var found = JSON.stringify({{
    images: imgs.length,
    broken: imgs.filter(function (i) {{ return !(i.complete && i.naturalWidth > 0); }})
                .map(function (i) {{ return i.alt; }}),
    widths: imgs.map(function (i) {{ return i.naturalWidth; }}),
    scripts: d.scripts.length,
    text: d.body.innerText,
    title: d.title,
    errors: errors
  }});
  out.textContent = "FTPROBE-CHECK " + btoa(unescape(encodeURIComponent(found))) + " END";
}});
</script></body></html>"""


def chromium_check(html: Path, workdir: Path) -> dict[str, Any]:
    """Open ``html`` in headless Chromium (inside an iframe of a checker page) and report what loaded.

    Returns ``{"images", "broken", "widths", "scripts", "text", "title", "errors", "console"}``; ``console`` holds
    every console line of the browser (script errors, blocked loads, CSP violations), which should be none.
    """
    checker = workdir / "checker.html"
    checker.write_text(_CHECKER.format(src=html.resolve().as_uri()))
    cmd = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'profile'}",
           "--allow-file-access-from-files",
           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom", checker.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r"FTPROBE-CHECK ([A-Za-z0-9+/=]+) END", proc.stdout)
    assert m, f"Chromium did not run the checker (exit {proc.returncode}): {proc.stderr[-2000:]}"
    found = json.loads(base64.b64decode(m.group(1)).decode("utf-8"))
    found["console"] = [line for line in proc.stderr.splitlines() if "CONSOLE" in line]
    return found


def chromium_screenshot(html: Path, png: Path, workdir: Path, size: str = "1280,3000") -> Path:
    cmd = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={workdir / 'profile-shot'}", "--hide-scrollbars",
           f"--window-size={size}", f"--screenshot={png}", html.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return png


@pytest.fixture
def chromium() -> SimpleNamespace:
    """The browser helpers (test files do not import conftest): ``check(html, workdir)``, ``screenshot(...)``.

    Each finds the binary when called, so a missing Chromium makes the test itself FAIL with the install command.
    """
    return SimpleNamespace(check=chromium_check, screenshot=chromium_screenshot)


@pytest.fixture(scope="session")
def names() -> SimpleNamespace:
    """The hostile class names, the model labels and the layers of :func:`report_result`."""
    return SimpleNamespace(classes=HOSTILE_CLASSES, models=MODEL_LABELS, layers=LAYERS)
