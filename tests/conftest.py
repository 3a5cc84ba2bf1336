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

from ftprobe.testing import TinyNet, make_image_folder, perturbed_copy
from ftprobe.testing.cli import invoke

# Tests use tiny tensors, where thread start-up costs more than it saves (and CI shares its 2 cores).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts on one intra-op thread, and a test that changes the count (``ftprobe demo`` picks its own)
    does not leak it into the next."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_cli(capsys):
    """Run ``ftprobe ARGS`` in-process: ``(exit code, stdout, stderr)``; anything but a SystemExit propagates, so a
    traceback fails the test instead of passing as an error exit."""
    return lambda *args: invoke(capsys, *args)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_pair():
    base = TinyNet(seed=0)
    return base, perturbed_copy(base, noise=0.2, seed=1)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"), classes=3, per_class=6, size=32, seed=0)


CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
INSTALL_HINT = ("Chromium is not installed, and the report tests open report.html in headless Chromium. Install it "
                "with: apt-get update && apt-get install -y chromium")


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
    shown: imgs.map(function (i) {{ return i.clientWidth; }}),
    alts: imgs.map(function (i) {{ return i.alt; }}),
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

    Returns ``{"images", "broken", "widths", "shown", "alts", "scripts", "text", "title", "errors", "console"}``
    (``widths``: each image's own pixel width, ``shown``: its width on the page in CSS pixels, border excluded);
    ``console`` holds every console line of the browser (script errors, blocked loads, CSP violations), which should
    be none.
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
