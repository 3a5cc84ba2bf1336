"""Reading checkpoint files safely: format sniffing, weights-only ``torch.load``, state dicts inside checkpoints.

Nothing here unpickles Python objects unless the caller passed ``trust``; the globals a pickle names are read with
``pickletools`` (through ``torch.serialization.get_unsafe_globals_in_checkpoint``), which executes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pathlib
import pickletools
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ftprobe.core.errors import CheckpointError

__all__ = [
    "EMA_KEYS",
    "PLAIN_DATA_CLASSES",
    "STATE_DICT_KEYS",
    "TRUST_HELP",
    "Extracted",
    "extract_state_dict",
    "is_torchscript",
    "looks_like_safetensors",
    "not_checkpoint",
    "read_json",
    "read_safetensors",
    "read_sharded",
    "sha256",
    "sha256_files",
    "torch_load",
]

#: Checkpoint entries that may hold the state dict, in the order they are tried.
STATE_DICT_KEYS = ("state_dict", "model", "module", "model_state_dict")
#: Entries holding exponential-moving-average weights: timm's train script (``CheckpointSaver``) and torchvision's
#: reference scripts (``references/classification/train.py``, an ``AveragedModel`` state dict).
EMA_KEYS = ("state_dict_ema", "model_ema")
#: Plain-data classes training scripts store beside the weights (the script's ``args``, paths), allowed under
#: ``weights_only`` for the one load that reads a checkpoint: unpickling them sets attributes and runs no code.
PLAIN_DATA_CLASSES: tuple[type, ...] = (
    argparse.Namespace,
    pathlib.PosixPath,
    pathlib.PurePosixPath,
    pathlib.WindowsPath,
    pathlib.PureWindowsPath,
)
TRUST_HELP = (
    "Unpickling runs arbitrary code, so ftprobe does not do it by default. If you trust this file, pass "
    "--trust-checkpoint (trust=True in Python). Better, save a state dict instead: "
    "torch.save(model.state_dict(), path) and load it with --arch torchvision:NAME or timm:NAME "
    "(or ftprobe.save(model, path, arch=...), which records the architecture)."
)


def read_json(path: Path) -> dict[str, Any] | None:
    """A folder's JSON file (``config.json``, an index) as a dict, or ``None`` when it is missing or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_files(folder: Path, files: list[Path]) -> str:
    """One hex SHA-256 for the files of a folder model: each file's name (relative) and digest, in name order."""
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.relative_to(folder).as_posix()):
        digest.update(f"{f.relative_to(folder).as_posix()}\0{sha256(f)}\n".encode())
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


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _pickle_globals(path: Path) -> list[str]:
    """Python globals the pickle names beyond the allowed plain-data classes (read with pickletools: nothing runs)."""
    try:
        names = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:
        return []
    allowed = {_qualname(c) for c in PLAIN_DATA_CLASSES}
    return [n for n in names if n not in allowed]


def _top_level(path: Path) -> tuple[bool | None, str | None]:
    """Whether the pickled top-level object is a dict, and else the class it is built from (its first ``GLOBAL``),
    read with pickletools from the first bytes; ``(None, None)`` when unknown (the legacy format)."""
    try:
        with zipfile.ZipFile(path) as zf:
            name = next((n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return None, None
            with zf.open(name) as fh:
                head = fh.read(512)
        for op, arg, _ in pickletools.genops(io.BytesIO(head)):
            if op.name in ("PROTO", "FRAME"):
                continue
            if op.name == "GLOBAL":
                return False, str(arg).replace(" ", ".")
            return op.name == "EMPTY_DICT", None
    except Exception:
        return None, None
    return None, None


def _untrusted_message(path: Path, names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    top_dict, top_class = _top_level(path)
    if top_dict:
        what = (
            f"{path} is a checkpoint dict that holds pickled Python objects besides tensors and plain data "
            f"(of class {shown}). Loading them runs code from those classes, or from whatever the file says they are."
        )
    elif top_class is not None:
        others = [n for n in names if n != top_class]
        also = f"; it also names {', '.join(others[:5])}" if others else ""
        what = f"{path} holds pickled Python objects, not just tensors: a pickled {top_class}{also} (a whole " \
               "pickled nn.Module looks like this)."
    else:  # the legacy (non-zip) format, or an object not built from a class: only the names are read here
        what = f"{path} holds pickled Python objects, not just tensors (it names {shown})."
    return f"{what} {TRUST_HELP}"


def torch_load(path: Path, trust: bool, map_location: str | torch.device) -> tuple[Any, list[str]]:
    """``torch.load`` with ``weights_only=True`` (plus :data:`PLAIN_DATA_CLASSES`, for this load only); with trust,
    a full unpickling when the file names other Python globals.

    Returns:
        The loaded object and the unsafe globals the file names ([] when weights-only loading worked).
    """
    try:
        with torch.serialization.safe_globals(list(PLAIN_DATA_CLASSES)):
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
        raise CheckpointError(_untrusted_message(path, names))
    try:
        return torch.load(path, map_location=map_location, weights_only=False), names
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(
            f"Cannot unpickle {path}: {exc}. A pickled model needs the code that defined its classes to be "
            "importable (same package and module names as when it was saved). " + TRUST_HELP.split(". ", 1)[1]
        ) from exc


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


class Extracted(NamedTuple):
    """The weights found in a checkpoint dict (a tuple, so ``extract_state_dict(...)[0]`` is the state dict).

    Attributes:
        state_dict: The chosen set of tensors.
        meta: The ftprobe metadata :func:`ftprobe.save` wrote, or None.
        notes: What the user should know (the entry read, an EMA set left unused ...).
        entry: The checkpoint entry the weights came from (``"state_dict"``, ``"state_dict_ema"`` ...), None for a
            bare state dict.
        weights: ``"ema"`` when the exponential-moving-average set was chosen, else ``"training"``.
        ema_entry: The entry holding an EMA set, whether chosen or not (None when the file has none).
    """

    state_dict: dict[str, Tensor]
    meta: dict | None = None
    notes: list[str] = []  # noqa: RUF012 (NamedTuple fields are read-only; each result passes its own list)
    entry: str | None = None
    weights: str = "training"
    ema_entry: str | None = None


def _ema_state_dict(sd: Mapping[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
    """An EMA set as the model names it: torchvision's ``AveragedModel`` adds ``n_averaged`` and ``module.``."""
    out = dict(sd)
    if "n_averaged" in out and any(k.startswith("module.") for k in out):
        del out["n_averaged"]
        notes.append("Dropped the EMA counter 'n_averaged' (torch.optim.swa_utils.AveragedModel).")
    return out


def extract_state_dict(path: Path, obj: Mapping[str, Any], ema: bool | None = None) -> Extracted:
    """The state dict inside a loaded checkpoint dict, the ftprobe metadata if any, and notes.

    Args:
        path: The file (for messages).
        obj: What ``torch.load`` returned.
        ema: True: the EMA set (an error if there is none); False: the training set; None: the training set, with
            a note when the file also holds an EMA set.

    Raises:
        CheckpointError: No state dict in the dict, or ``ema=True`` and no EMA set.
    """
    meta = obj.get("ftprobe") if isinstance(obj.get("ftprobe"), Mapping) else None
    ema_entry = next((k for k in EMA_KEYS if _is_tensor_dict(obj.get(k))), None)
    if ema:
        if ema_entry is None:
            keys = ", ".join(repr(k) for k in list(obj)[:10]) if not _is_tensor_dict(obj) else "tensors only"
            raise CheckpointError(
                f"--ema (ema=True) asks for the EMA weights, but {path} holds no EMA set (ftprobe looks for "
                f"{' or '.join(map(repr, EMA_KEYS))}; the file has {keys}). Drop --ema to load its weights (--ema "
                "applies to every checkpoint given; in Python, ema=[False, True] chooses per model)."
            )
        notes: list[str] = [f"EMA weights read from the checkpoint's {ema_entry!r} entry (--ema)."]
        return Extracted(_ema_state_dict(obj[ema_entry], notes), meta, notes, ema_entry, "ema", ema_entry)
    if _is_tensor_dict(obj):
        return Extracted(dict(obj), None, [])
    for key in STATE_DICT_KEYS:
        if _is_tensor_dict(obj.get(key)):
            others = [str(k) for k in obj if k not in (key, "ftprobe")]
            notes = [] if meta is not None else [f"State dict read from the checkpoint's {key!r} entry."]
            if others and meta is None:
                notes[0] += f" Other entries ignored: {', '.join(others[:8])}."
            if ema_entry is not None and ema is None:
                notes.append(
                    f"The checkpoint also holds EMA weights ({ema_entry!r}); these are the training weights "
                    f"({key!r}). Pass --ema (ema=True in Python) to compare the EMA weights."
                )
            return Extracted(dict(obj[key]), meta, notes, key, "training", ema_entry)
    keys = ", ".join(repr(k) for k in list(obj)[:10])
    if ema_entry is not None:
        raise CheckpointError(
            f"{path} holds only EMA weights ({ema_entry!r}) and no training state dict: pass --ema (ema=True)."
        )
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


def read_sharded(index: Path, map_location: str | torch.device) -> tuple[dict[str, Tensor], list[Path]]:
    """The tensors of a sharded checkpoint from its index (``model.safetensors.index.json`` and its shards, or
    ``pytorch_model.bin.index.json``), and the files read (the index first).

    Raises:
        CheckpointError: An unreadable index, a missing shard, or shards that do not hold what the index lists.
    """
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = list(dict.fromkeys(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{index} is not a sharded-checkpoint index (no readable 'weight_map': {exc}).") from exc
    missing = [s for s in shards if not (index.parent / s).is_file()]
    if missing:
        raise CheckpointError(
            f"{index} lists shards that are not in {index.parent}: {', '.join(missing[:5])}. Copy every shard "
            "beside the index."
        )
    sd: dict[str, Tensor] = {}
    for shard in shards:
        path = index.parent / shard
        if path.suffix == ".safetensors" or looks_like_safetensors(path):
            part, _ = read_safetensors(path, map_location)
        else:
            part, _ = torch_load(path, False, map_location)
            if not _is_tensor_dict(part):
                raise CheckpointError(f"{path} (a shard listed in {index.name}) is not a dict of tensors.")
        sd.update(part)
    absent = [k for k in weight_map if k not in sd]
    if absent:
        raise CheckpointError(f"{index} lists tensors its shards lack: {', '.join(absent[:5])}.")
    return sd, [index] + [index.parent / s for s in shards]
