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

__all__ = ["Checkpointer", "RunPosition", "fingerprint"]

FORMAT = 1


def fingerprint(payload: Any) -> str:
    """A stable hash of a JSON-able description of the job."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass
class RunPosition:
    """How far a pass has got on one rank: batches done, samples seen, the largest global sample index fed.

    A checkpoint saves it, a resumed run starts from it (the source skips the indices up to ``last_index``) and the
    distributed merge adds the ranks' counts (:meth:`merged`).
    """

    batches: int = 0
    samples: int = 0
    last_index: int = -1

    def advance(self, samples: int) -> None:
        self.batches += 1
        self.samples += samples

    def seen(self, index: torch.Tensor | None) -> None:
        """Note the indices of the batches fed since the last call (one device sync, so once per save)."""
        if index is not None and len(index):
            self.last_index = max(self.last_index, int(index.max()))

    def to_dict(self) -> dict[str, int]:
        return {"samples": self.samples, "batches": self.batches, "last_index": self.last_index}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunPosition:
        return cls(int(d.get("batches", 0)), int(d.get("samples", 0)), int(d.get("last_index", -1)))

    @classmethod
    def merged(cls, positions: list[RunPosition]) -> RunPosition:
        """All ranks together: their batches and samples added (the last index stays per rank: the first's)."""
        return cls(sum(p.batches for p in positions), sum(p.samples for p in positions), positions[0].last_index)


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

    def save(self, position: RunPosition, states: list[dict[str, Any]]) -> Path:
        f = self.file
        f.parent.mkdir(parents=True, exist_ok=True)
        tmp = f.with_name(f.name + ".tmp")
        torch.save({"format": FORMAT, "fingerprint": self.fingerprint, "position": position.to_dict(),
                    "states": states}, tmp)
        os.replace(tmp, f)  # atomic: a crash while writing leaves the previous checkpoint intact
        return f

    def load(self) -> tuple[RunPosition, list[dict[str, Any]]]:
        """The saved position and metric states of the same job."""
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
        return RunPosition.from_dict(ckpt["position"]), ckpt["states"]
