"""Checkpoint and resume of a long pass: metric states and the position, written atomically.

A checkpoint holds only tensors and plain containers, so it loads with ``torch.load(weights_only=True)``. Its
fingerprint (models, layers, metrics and options, data selection, batch size) must match the resumed run: resuming
a different job is refused rather than silently mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import FtprobeError

__all__ = ["Checkpointer", "fingerprint"]

FORMAT = 1


def fingerprint(payload: Any) -> str:
    """A stable hash of a JSON-able description of the job."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class Checkpointer:
    """Where and how often to save; ``rank`` gives every distributed rank its own file."""

    path: Path
    every: int = 0  # batches between saves; 0 = only on interruption
    fingerprint: str = ""
    rank: int = 0

    @property
    def file(self) -> Path:
        p = Path(self.path)
        return p if self.rank == 0 else p.with_name(f"{p.stem}.rank{self.rank}{p.suffix}")

    def save(self, position: dict[str, Any], states: list[dict[str, Any]]) -> Path:
        f = self.file
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f.name + ".tmp")
        torch.save({"format": FORMAT, "fingerprint": self.fingerprint, "position": position, "states": states}, tmp)
        os.replace(tmp, f)  # atomic: a crash while writing leaves the previous checkpoint intact
        return f

    def load(self) -> dict[str, Any]:
        f = self.file
        if not f.exists():
            raise FtprobeError(f"--resume: no checkpoint at {f}; run without --resume to start afresh")
        try:
            ckpt = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise FtprobeError(f"--resume: {f} is not a readable ftprobe checkpoint ({exc})") from exc
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise FtprobeError(f"--resume: {f} is not an ftprobe checkpoint of format {FORMAT}")
        if ckpt.get("fingerprint") != self.fingerprint:
            raise FtprobeError(
                f"--resume: {f} was written by a different job (models, layers, metrics, options or data differ); "
                "rerun with exactly the same arguments, or drop --resume to start afresh"
            )
        return ckpt
