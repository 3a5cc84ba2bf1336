"""Reading checkpoint files safely: format sniffing, weights-only ``torch.load``, state dicts inside checkpoints.

Nothing here unpickles Python objects unless the caller passed ``trust``; the globals a pickle names are read with
``pickletools`` (through ``torch.serialization.get_unsafe_globals_in_checkpoint``), which executes nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ftprobe.core.errors import CheckpointError

__all__ = [
    "STATE_DICT_KEYS",
    "TRUST_HELP",
    "extract_state_dict",
    "is_torchscript",
    "looks_like_safetensors",
    "not_checkpoint",
    "read_safetensors",
    "sha256",
    "torch_load",
]

#: Checkpoint entries that may hold the state dict, in the order they are tried.
STATE_DICT_KEYS = ("state_dict", "model", "module", "model_state_dict")
TRUST_HELP = (
    "Unpickling runs arbitrary code, so ftprobe does not do it by default. If you trust this file, pass "
    "--trust-checkpoint (trust=True in Python). Better, save a state dict instead: "
    "torch.save(model.state_dict(), path) and load it with --arch torchvision:NAME or timm:NAME "
    "(or ftprobe.save(model, path, arch=...), which records the architecture)."
)


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def not_checkpoint(path: Path, reason: str) -> CheckpointError:
    """The error for a file that is no checkpoint at all (empty, truncated, text ...)."""
    return CheckpointError(f"{path} is not a PyTorch checkpoint ({reason}).")


def looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with an 8-byte little-endian header length, then the JSON header."""
    with path.open("rb") as fh:
        head = fh.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip whose top folder holds ``code/`` or ``constants.pkl`` (torch.save's has not)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/")[1:2] in (["code"], ["constants.pkl"]) for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _pickle_globals(path: Path) -> list[str]:
    """Python globals the pickle names (read with pickletools: nothing is executed)."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:
        return []


def torch_load(path: Path, trust: bool, map_location: str | torch.device) -> tuple[Any, list[str]]:
    """``torch.load`` with ``weights_only=True``; with trust, a full unpickling when the file names Python globals.

    Returns:
        The loaded object and the unsafe globals the file names ([] when weights-only loading worked).
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True), []
    except Exception as exc:
        message = str(exc)
        found = re.findall(r"GLOBAL ([\w.]+)", message)
        if not found:
            detail = message.partition("WeightsUnpickler error:")[2].strip().split("\n")[0] or message.split("\n")[0]
            detail = detail.split(". ")[0][:200]
            with path.open("rb") as fh:
                zip_magic = fh.read(2) == b"PK"
            if zipfile.is_zipfile(path):
                kind = "a zip archive torch cannot read"
            else:
                kind = "a truncated or damaged zip archive" if zip_magic else "neither a zip archive nor a torch pickle"
            raise not_checkpoint(path, f"{kind}; {type(exc).__name__}: {detail}") from None
        names = _pickle_globals(path) or found
    if not trust:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise CheckpointError(
            f"{path} holds pickled Python objects, not just tensors (it names {shown}; a whole pickled nn.Module "
            "looks like this). " + TRUST_HELP
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=False), names
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"Cannot unpickle {path}: {exc}. A pickled model needs the code that defined its classes to be "
            "importable (same package and module names as when it was saved). " + TRUST_HELP.split(". ", 1)[1]
        ) from exc


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def extract_state_dict(path: Path, obj: Mapping[str, Any]) -> tuple[dict[str, Tensor], dict | None, list[str]]:
    """The state dict inside a loaded checkpoint dict, the ftprobe metadata if any, and notes."""
    meta = obj.get("ftprobe") if isinstance(obj.get("ftprobe"), Mapping) else None
    if _is_tensor_dict(obj):
        return dict(obj), None, []
    for key in STATE_DICT_KEYS:
        if _is_tensor_dict(obj.get(key)):
            others = [str(k) for k in obj if k not in (key, "ftprobe")]
            notes = [] if meta is not None else [f"State dict read from the checkpoint's {key!r} entry."]
            if others and meta is None:
                notes[0] += f" Other entries ignored: {', '.join(others[:8])}."
            return dict(obj[key]), meta, notes
    keys = ", ".join(repr(k) for k in list(obj)[:10])
    raise CheckpointError(
        f"{path} holds a dict (keys {keys}) but no state dict: expected a dict of tensors, or one under "
        f"{', '.join(map(repr, STATE_DICT_KEYS))}."
    )


def read_safetensors(path: Path, map_location: str | torch.device) -> tuple[dict[str, Tensor], dict | None]:
    """The tensors of a safetensors file and the ftprobe metadata :func:`save_model` wrote (None if absent)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as fh:
            raw = (fh.metadata() or {}).get("ftprobe")
        sd = load_file(str(path), device=str(torch.device(map_location)))
    except Exception as exc:
        raise not_checkpoint(path, f"unreadable safetensors file: {exc}") from exc
    try:
        meta = json.loads(raw) if raw else None
    except ValueError as exc:
        raise CheckpointError(f"{path}: the ftprobe metadata is not valid JSON ({exc}).") from exc
    return sd, meta
