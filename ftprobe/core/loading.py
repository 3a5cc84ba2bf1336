"""Load the models to compare: module objects, model specs, and checkpoint files; save state dicts ftprobe reloads.

Sources :func:`load_model` accepts:

- an ``nn.Module`` (used as is, not copied or moved);
- a spec ``torchvision:NAME[:WEIGHTS]`` or ``timm:NAME[:pretrained]`` (unless a file of that name exists);
- a file: ``.safetensors`` (or any file in that format), a TorchScript archive, or a ``torch.save`` file read with
  ``weights_only=True``: a state dict (bare, or under ``state_dict`` / ``model`` / ``module``, possibly written by
  :func:`save_model` with its architecture). A pickled whole ``nn.Module`` runs code when unpickled, so it loads
  only with ``trust=True`` (``--trust-checkpoint``).

A state dict needs an architecture: ``arch="torchvision:NAME"`` / ``"timm:NAME"`` (``--arch``) or the metadata
:func:`save_model` wrote. A replaced classification head and missing or extra auxiliary heads are handled and
reported in :attr:`LoadedModel.head` / :attr:`LoadedModel.notes`; any other mismatch is a :class:`CheckpointError`.
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ftprobe.core._archs import SOURCES, SPEC_HELP, build, resolve_spec, split_spec
from ftprobe.core._checkpoints import (
    extract_state_dict,
    is_torchscript,
    looks_like_safetensors,
    not_checkpoint,
    read_safetensors,
    sha256,
    torch_load,
)
from ftprobe.core._fit import fit_state_dict, materialize, strip_prefixes
from ftprobe.core.errors import CheckpointError, FtprobeError

__all__ = ["LoadedModel", "build_arch", "load_model", "parse_spec", "save_model"]

Kind = Literal["module", "spec", "state_dict", "safetensors", "torchscript", "pickle", "transformers", "peft"]
FORMAT_VERSION = 1


@dataclass(eq=False)
class LoadedModel:
    """A model ready to compare, with where it came from.

    Attributes:
        module: The model, on ``map_location`` (module objects are left where they are).
        label: Short name: file stem, spec name, class name, or the ``label`` argument.
        source: The spec, the absolute file path, or ``"<module>"``.
        kind: ``"module" | "spec" | "state_dict" | "safetensors" | "torchscript" | "pickle"``.
        arch: The architecture spec used, or None.
        arch_kwargs: Builder arguments used with ``arch`` (``num_classes``, ``aux_logits`` ...).
        sha256: Hex digest of the file, or None.
        head: None, or ``{"module": "fc", "modules": [...], "num_classes": 10, "base_num_classes": 1000}`` when
            the checkpoint's classification head differs in size from the architecture's.
        notes: Things the user should know (auxiliary heads dropped, prefixes stripped ...).
    """

    module: nn.Module
    label: str
    source: str
    kind: Kind
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None
    head: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """JSON-able summary of everything but the module (plus its class name and parameter count)."""
        return {
            "label": self.label,
            "source": self.source,
            "kind": self.kind,
            "arch": self.arch,
            "arch_kwargs": dict(self.arch_kwargs),
            "sha256": self.sha256,
            "head": None if self.head is None else dict(self.head),
            "notes": list(self.notes),
            "module_class": type(self.module).__name__,
            "num_parameters": sum(p.numel() for p in self.module.parameters()),
        }


def parse_spec(text: str) -> tuple[str, str, str | None] | None:
    """Split a model spec, or return None for a non-spec string (an existing file is never a spec).

    Args:
        text: ``"torchvision:NAME[:WEIGHTS]"`` or ``"timm:NAME[:pretrained]"``.

    Returns:
        ``(source, name, weights)`` with source ``"torchvision"`` or ``"timm"`` and weights None when absent.

    Raises:
        CheckpointError: A known prefix followed by a malformed rest (``"torchvision:"``).
    """
    if os.path.exists(text):
        return None
    spec = split_spec(text)
    return None if spec is None else (spec.source, spec.name, spec.weights)


def build_arch(spec: str, **kwargs: Any) -> nn.Module:
    """Build the model a spec names, downloading its weights if the spec names weights.

    Args:
        spec: ``"torchvision:NAME[:WEIGHTS]"`` or ``"timm:NAME[:pretrained]"``.
        **kwargs: Builder arguments (``num_classes=10`` ...).

    Raises:
        CheckpointError: Unknown model or weights (with close matches), bad arguments, weights unavailable.
    """
    return build(resolve_spec(spec), kwargs)


def load_model(
    source: nn.Module | str | os.PathLike[str],
    *,
    arch: str | None = None,
    trust: bool = False,
    map_location: str | torch.device = "cpu",
    label: str | None = None,
    base: LoadedModel | nn.Module | None = None,
) -> LoadedModel:
    """Load a model from a module object, a spec or a file. Everything is checked here, before any data is read.

    Args:
        source: An ``nn.Module``, a spec string, or a file path.
        arch: Architecture spec of a state dict (overrides the one saved in the file, with a note).
        trust: Allow unpickling a whole pickled model (runs code from the file).
        map_location: Device for tensors read from files and for built models.
        label: Overrides the automatic label.
        base: The base model a PEFT adapter source is applied to (None: the base its config names).

    Returns:
        The model and its provenance.

    Raises:
        CheckpointError: Missing or unreadable file, untrusted pickle, no or wrong architecture, unknown spec.
    """
    if isinstance(source, nn.Module):
        return LoadedModel(source, label or type(source).__name__, "<module>", "module")
    if not isinstance(source, (str, os.PathLike)):
        raise FtprobeError(f"Cannot load a model from {type(source).__name__}: pass an nn.Module, a spec or a path.")
    text = os.fspath(source)
    found = _load_hf_or_peft(text, base, map_location, label)
    if found is not None:
        return found
    spec = split_spec(text) if isinstance(source, str) and not os.path.exists(text) else None
    if spec is not None:
        return _load_spec(str(spec), arch, map_location, label)
    return _load_file(Path(text).expanduser(), arch, trust, map_location, label)


def _load_hf_or_peft(
    text: str, base: LoadedModel | nn.Module | None, map_location: str | torch.device, label: str | None
) -> LoadedModel | None:
    """``hf:NAME``, a transformers folder, a PEFT adapter folder or LoRA state-dict file; None for anything else."""
    from ftprobe.core import _hf, _peft

    path = Path(text).expanduser()
    if text.startswith(_hf.HF_PREFIX) and not path.exists():
        return _hf.load_hub(text, map_location, label)
    if _peft.is_adapter_dir(path):
        return _peft.load_adapter(path, None, base, map_location, label)
    if _hf.is_transformers_dir(path):
        return _hf.load_transformers(path, map_location, label)
    if path.is_dir() and not (path / "config.json").exists() and _hf.checkpoint_dirs(path):
        raise CheckpointError(_hf.trainer_output_help(path))
    sd = _peft.sniff_adapter_file(path, map_location) if path.is_file() else None
    return None if sd is None else _peft.load_adapter(path, sd, base, map_location, label)


def _load_spec(text: str, arch: str | None, map_location: str | torch.device, label: str | None) -> LoadedModel:
    spec = resolve_spec(text)
    notes = []
    if arch is not None and (split_spec(arch) or spec).name != spec.name:
        notes.append(f"arch {arch!r} is ignored: {text} names its own architecture.")
    module = build(spec, {}).to(map_location)
    short = spec.name.replace(":", "/").rsplit("/", 1)[-1]  # "hf-hub:timm/resnet18.a1_in1k" -> "resnet18.a1_in1k"
    auto = short if spec.weights is None else f"{short}-{spec.weights}"
    return LoadedModel(module, label or auto, str(spec), "spec", arch=str(spec), notes=notes)


def _load_file(
    path: Path, arch: str | None, trust: bool, map_location: str | torch.device, label: str | None
) -> LoadedModel:
    if not path.exists():
        raise CheckpointError(f"Checkpoint file not found: {path.absolute()}.{_spec_typo_hint(str(path))}")
    if path.is_dir():
        raise CheckpointError(f"{path.absolute()} is a directory; pass a checkpoint file or a spec. {SPEC_HELP}")
    if path.stat().st_size == 0:
        raise not_checkpoint(path, "the file is empty")
    common = {"label": label or path.stem, "source": str(path.resolve()), "sha256": sha256(path)}
    if path.suffix == ".safetensors" or looks_like_safetensors(path):
        sd, meta = read_safetensors(path, map_location)
        return _from_state_dict(sd, meta, [], arch, map_location, kind="safetensors", **common)
    if is_torchscript(path):
        with warnings.catch_warnings():  # torch.jit is deprecated; it still loads existing archives
            warnings.simplefilter("ignore", FutureWarning)
            try:
                module = torch.jit.load(str(path), map_location=map_location)
            except Exception as exc:
                raise not_checkpoint(path, f"unreadable TorchScript archive: {exc}") from exc
        return LoadedModel(module, kind="torchscript", **common)
    obj, unsafe = torch_load(path, trust, map_location)
    if isinstance(obj, nn.Module):
        return LoadedModel(obj.to(map_location), kind="pickle", **common)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or a model.")
    for key in ("model", "module"):
        if isinstance(obj.get(key), nn.Module):  # only reachable with trust
            notes = [f"Model read from the checkpoint's {key!r} entry."]
            return LoadedModel(obj[key].to(map_location), kind="pickle", notes=notes, **common)
    sd, meta, notes = extract_state_dict(path, obj)
    if unsafe:
        notes.append(f"Unpickled with trust (the file holds Python objects besides tensors: {', '.join(unsafe[:5])}).")
    return _from_state_dict(sd, meta, notes, arch, map_location, kind="state_dict", **common)


def _spec_typo_hint(text: str) -> str:
    prefix, sep, _ = text.partition(":")
    if sep and difflib.get_close_matches(prefix.lower(), SOURCES, n=1, cutoff=0.6):
        return f" If you meant a model spec, check the prefix. {SPEC_HELP}"
    return ""


def _from_state_dict(
    sd: dict[str, Tensor],
    meta: Mapping[str, Any] | None,
    notes: list[str],
    arch: str | None,
    map_location: str | torch.device,
    **common: Any,
) -> LoadedModel:
    source = common["source"]
    kwargs: dict[str, Any] = {}
    if meta is not None and int(meta.get("format", 1)) > FORMAT_VERSION:
        raise CheckpointError(f"{source} was saved by a newer ftprobe (format {meta['format']}); upgrade ftprobe.")
    saved = meta.get("arch") if meta else None
    if arch is None and saved is None:
        raise CheckpointError(
            f"{source} is a state dict and says nothing about its architecture. Pass --arch torchvision:NAME or "
            "--arch timm:NAME (arch= in Python), e.g. --arch torchvision:googlenet; or save it with ftprobe.save(...,"
            " arch=...), which records it."
        )
    if arch is None or (saved is not None and resolve_spec(arch) == resolve_spec(saved)):
        kwargs = dict(meta.get("arch_kwargs") or {}) if meta else {}
    elif saved is not None:
        notes.append(f"arch {arch!r} overrides the architecture saved in the file ({saved!r}).")
    spec = resolve_spec(arch or saved)
    fit = fit_state_dict(spec, sd, kwargs)
    module = materialize(spec, fit, map_location)
    return LoadedModel(module, arch=str(spec), arch_kwargs=fit.kwargs, head=fit.head, notes=notes + fit.notes, **common)


def _jsonable(value: Any, name: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise FtprobeError(f"save_model: arch argument {name}={value!r} must be plain JSON data ({exc}).") from exc


def save_model(
    model: nn.Module | Mapping[str, Tensor], path: str | os.PathLike[str], arch: str, **arch_kwargs: Any
) -> Path:
    """Save a model's state dict with its architecture, so :func:`load_model` needs no ``--arch``.

    ``.safetensors`` paths get a safetensors file (the architecture in its metadata); other paths get
    ``torch.save({"state_dict": sd, "ftprobe": {"arch", "arch_kwargs", "format"}})``, loadable with
    ``weights_only=True``. The state dict is checked against the architecture first (on the meta device).

    Args:
        model: The model, or its state dict (DDP / torch.compile prefixes are stripped).
        path: Where to write; parent folders are created.
        arch: ``"torchvision:NAME"`` or ``"timm:NAME"`` the weights belong to.
        **arch_kwargs: Builder arguments to rebuild it with (JSON data, e.g. ``num_classes=10``).

    Returns:
        The path written.

    Raises:
        CheckpointError: Unknown architecture, or a state dict that does not fit it.
    """
    spec = resolve_spec(arch)
    kwargs = {k: _jsonable(v, k) for k, v in arch_kwargs.items()}
    raw = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    sd = {k: v.detach().cpu() for k, v in strip_prefixes(raw, []).items()}
    fit_state_dict(spec, sd, kwargs)
    meta = {"arch": str(spec), "arch_kwargs": kwargs, "format": FORMAT_VERSION}
    out = Path(path).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        seen: set[int] = set()
        flat = {}
        for k, v in sd.items():  # safetensors refuses shared storage (tied weights): store copies
            ptr = v.untyped_storage().data_ptr()
            flat[k] = v.clone().contiguous() if ptr in seen and v.numel() else v.contiguous()
            seen.add(ptr)
        save_file(flat, str(out), metadata={"ftprobe": json.dumps(meta)})
    else:
        torch.save({"state_dict": sd, "ftprobe": meta}, out)
    return out
