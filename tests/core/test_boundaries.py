"""The core is metric-agnostic: importing it never imports a concrete metric (DESIGN.md invariant 1)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import ftprobe

CORE = pathlib.Path(ftprobe.__file__).parent / "core"


def test_core_sources_never_import_metrics():
    offenders = []
    for path in CORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and (
                node.module.startswith("ftprobe.metrics") or (node.level and node.module.startswith("metrics"))
            ):
                offenders.append(path.name)
            if isinstance(node, ast.Import) and any(a.name.startswith("ftprobe.metrics") for a in node.names):
                offenders.append(path.name)
    assert offenders == []


def test_importing_core_loads_no_metric_module():
    code = ("import sys, ftprobe.core.engine, ftprobe.core.registry, ftprobe.core.results, ftprobe.api;"
            "print(sorted(m for m in sys.modules if m.startswith('ftprobe.metrics.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_cli_help_does_not_import_torch():
    code = "import sys, ftprobe.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
