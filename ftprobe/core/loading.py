"""Load the models to compare: module objects, model specs, checkpoint files and folders; save state dicts ftprobe
reloads.

Sources :func:`load_model` accepts:

- an ``nn.Module`` (used as is, not copied or moved; a TorchScript module cannot be hooked and is refused);
- a spec ``torchvision:NAME[:WEIGHTS]`` or ``timm:NAME[:pretrained]`` (unless a file of that name exists); without
  weights the model is randomly initialised, and a note says so;
- a file, through :data:`FILE_FORMATS`: ``.safetensors`` (or any file in that format), a TorchScript archive (its
  weights loaded into ``arch``), or a ``torch.save`` file read with ``weights_only=True`` (plus the plain-data classes
  training scripts store, such as their ``argparse.Namespace``): a state dict, bare or under ``state_dict`` / ``model``
  / ``module``, as ftprobe, timm's train script, torchvision's reference scripts and Lightning write them; ``ema=True``
  picks the EMA set. A pickled whole ``nn.Module`` runs code when unpickled, so it loads only with ``trust=True``
  (``--trust-checkpoint``);
- a folder (also spelt ``local-dir:PATH``): transformers and PEFT folders (``ftprobe.core._hf`` / ``_peft``), then
  :data:`FOLDER_FORMATS`: a timm hub folder, or weights with or without a shard index.

A state dict needs an architecture: ``arch="torchvision:NAME"`` / ``"timm:NAME"`` (``--arch``) or the metadata
:func:`save_model` wrote (or a timm hub folder's ``config.json``). A replaced classification head and missing or extra
auxiliary heads are handled and reported in :attr:`LoadedModel.head` / :attr:`LoadedModel.notes`; any other mismatch
is a :class:`CheckpointError`.
"""

from __future__ import annotations

import difflib
import json
import os
import warnings
from collections.abc import Callable, Mapping
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
    read_json,
    read_safetensors,
    read_sharded,
    sha256,
    sha256_files,
    torch_load,
)
from ftprobe.core._fit import fit_state_dict, materialize, strip_prefixes
from ftprobe.core.errors import CheckpointError, FtprobeError

__all__ = [
    "FILE_FORMATS",
    "FOLDER_FORMATS",
    "LoadRequest",
    "LoadedModel",
    "ModelFormat",
    "build_arch",
    "is_checkpoint_source",
    "load_model",
    "load_path",
    "parse_spec",
    "save_model",
]

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
        format: What wrote it, as far as ftprobe can tell (``"timm train script"``, ``"Lightning"``,
            ``"timm hub folder"``, ``"sharded safetensors folder"`` ...), or None.
        weights: Which weights the module holds: ``"training"`` or ``"ema"`` (a checkpoint's exponential moving
            average, ``ema=True``), ``"random"`` (a spec without weights), ``"pretrained"`` (a spec's weights), or None
            (a module object, a whole pickled or TorchScript model).
        entry: The checkpoint entry the state dict came from (``"state_dict"``, ``"state_dict_ema"`` ...), or None.
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
    format: str | None = None
    weights: str | None = None
    entry: str | None = None

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
            "format": self.format,
            "weights": self.weights,
            "entry": self.entry,
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
    ema: bool | None = None,
) -> LoadedModel:
    """Load a model from a module object, a spec, a file or a folder. Everything is checked here, before any data is
    read.

    Args:
        source: An ``nn.Module``, a spec string, a file or folder path (``local-dir:PATH`` as timm spells a folder).
        arch: Architecture spec of a state dict (overrides the one saved in the file, with a note).
        trust: Allow unpickling a whole pickled model (runs code from the file).
        map_location: Device for tensors read from files and for built models.
        label: Overrides the automatic label.
        base: The base model a PEFT adapter source is applied to (None: the base its config names).
        ema: True: a checkpoint's EMA weights (timm's ``state_dict_ema``, torchvision's ``model_ema``); an error
            when it has none. None (default): the training weights, with a note when an EMA set exists too.
            False: the training weights.

    Returns:
        The model and its provenance.

    Raises:
        CheckpointError: Missing or unreadable file, untrusted pickle, no or wrong architecture, unknown spec, no EMA
            set with ``ema=True``, a folder in no known format.
    """
    if isinstance(source, torch.jit.ScriptModule):
        raise CheckpointError(
            f"{type(source).__name__} is a TorchScript module. {SCRIPT_HELP} Pass the nn.Module it was scripted from, "
            "or its state_dict saved with torch.save and loaded with arch=."
        )
    if isinstance(source, nn.Module):
        _refuse_ema(ema, "a module object")
        return LoadedModel(source, label or type(source).__name__, "<module>", "module")
    if not isinstance(source, (str, os.PathLike)):
        raise FtprobeError(f"Cannot load a model from {type(source).__name__}: pass an nn.Module, a spec or a path.")
    text = os.fspath(source)
    folder = _local_dir(text) if isinstance(source, str) else None
    if folder is not None:
        if not Path(folder).expanduser().is_dir():
            raise CheckpointError(f"{text}: {Path(folder).expanduser().absolute()} is not a folder (local-dir: names "
                                  "a model folder, as in timm.create_model('local-dir:PATH')).")
        text = folder
    found = _load_hf_or_peft(text, base, map_location, label)
    if found is not None:
        _refuse_ema(ema, text)
        if arch is not None:
            why = "its config.json names its class" if found.kind == "transformers" else "it takes its base's"
            found.notes.append(f"arch {arch!r} is ignored: {why}.")
        return found
    spec = split_spec(text) if folder is None and isinstance(source, str) and not os.path.exists(text) else None
    if spec is not None:
        _refuse_ema(ema, f"the spec {text}")
        return _load_spec(str(spec), arch, map_location, label)
    return load_path(LoadRequest(Path(text).expanduser(), arch, trust, map_location, label, ema))


def is_checkpoint_source(source: object) -> bool:
    """True for a path or ``local-dir:`` folder (what ``ema`` applies to), False for modules and specs."""
    if isinstance(source, os.PathLike):
        return True
    if not isinstance(source, str):
        return False
    from ftprobe.core._hf import HF_PREFIX

    if os.path.exists(source) or _local_dir(source) is not None:
        return True
    return split_spec(source) is None and not source.startswith(HF_PREFIX)


def _local_dir(text: str) -> str | None:
    """The folder of timm's ``local-dir:PATH`` spelling (also ``timm:local-dir:PATH``), or None."""
    for prefix in ("local-dir:", "timm:local-dir:"):
        if text.lower().startswith(prefix) and not os.path.exists(text):
            return text[len(prefix) :]
    return None


def _refuse_ema(ema: bool | None, what: str) -> None:
    if ema:
        raise CheckpointError(
            f"--ema (ema=True) selects the EMA weights inside a checkpoint, but {what} has no EMA set. Drop --ema "
            "(it applies to every checkpoint given; in Python, ema=[False, True] chooses per model)."
        )


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
    if spec.weights is None:
        more = ":IMAGENET1K_V1" if spec.source == "torchvision" else ":pretrained"
        notes.append(
            f"{spec} names no weights: this model has random weights (its builder's initialisation). For pretrained "
            f"ones write {spec}{more}; for your own, pass the checkpoint file (with --arch {spec})."
        )
    return LoadedModel(module, label or auto, str(spec), "spec", arch=str(spec), notes=notes, format="spec",
                       weights="random" if spec.weights is None else "pretrained")


# --- files and folders: one ordered list of formats per kind of path -------------------------------------------------


@dataclass(frozen=True)
class LoadRequest:
    """What the user asked for, handed to a format's loader.

    Attributes:
        path: The file or folder.
        arch: ``--arch`` (None when not given).
        trust: ``--trust-checkpoint``.
        map_location: Device for the tensors and the built model.
        label: The label the user chose, or None.
        ema: ``--ema`` (see :func:`load_model`).
    """

    path: Path
    arch: str | None = None
    trust: bool = False
    map_location: str | torch.device = "cpu"
    label: str | None = None
    ema: bool | None = None

    def provenance(self, files: list[Path] | None = None) -> dict[str, Any]:
        """``label``, ``source`` and ``sha256`` for the :class:`LoadedModel`: of the file, or for a folder one digest
        of the ``files`` it was loaded from."""
        source = str(self.path.resolve())
        if self.path.is_dir():
            digest = sha256_files(self.path, files) if files else None
            return {"label": self.label or self.path.resolve().name, "source": source, "sha256": digest}
        return {"label": self.label or _stem(self.path), "source": source, "sha256": sha256(self.path)}


@dataclass(frozen=True)
class ModelFormat:
    """A way models are stored, for the dispatch in :func:`load_path`.

    Attributes:
        name: Short name, e.g. ``"timm hub folder"``.
        looks_for: What makes a path this format, in words (listed when a folder is in no known format).
        matches: Cheap test on the path (names and small files, never the weights).
        load: Loads it.
    """

    name: str
    looks_for: str
    matches: Callable[[Path], bool]
    load: Callable[[LoadRequest], LoadedModel]


def load_path(req: LoadRequest) -> LoadedModel:
    """Load a file or folder with the first of :data:`FOLDER_FORMATS` / :data:`FILE_FORMATS` that matches it.

    Raises:
        CheckpointError: A missing path, a folder in no known format, or the format's own errors.
    """
    path = req.path
    if not path.exists():
        raise CheckpointError(f"Checkpoint file not found: {path.absolute()}.{_spec_typo_hint(str(path))}")
    if path.is_dir():
        for fmt in FOLDER_FORMATS:
            if fmt.matches(path):
                return fmt.load(req)
        raise CheckpointError(_unknown_folder(path))
    if path.stat().st_size == 0:
        raise not_checkpoint(path, "the file is empty")
    for fmt in FILE_FORMATS:
        if fmt.matches(path):
            return fmt.load(req)
    raise AssertionError("the torch.save format matches every file")  # pragma: no cover


#: What a folder may be besides the formats in :data:`FOLDER_FORMATS` (loaded before them, in ``load_model``).
OTHER_FOLDERS = (
    "a transformers model folder: config.json with a 'model_type' (save_pretrained, Trainer.save_model, a "
    "Trainer checkpoint-N folder); no --arch needed",
    "a PEFT adapter folder: adapter_config.json with adapter_model.safetensors (PeftModel.save_pretrained)",
)


def _unknown_folder(path: Path) -> str:
    looked = "".join(f"\n  - {line}" for line in OTHER_FOLDERS) + "".join(
        f"\n  - a {f.name}: {f.looks_for}" for f in FOLDER_FORMATS
    )
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(found[:12]) + (f", ... ({len(found) - 12} more)" if len(found) > 12 else "")
    return (
        f"{path.absolute()} is a folder in no model format ftprobe knows (it holds: {shown or 'nothing'}). "
        f"ftprobe looks for:{looked}\nPass such a folder, a checkpoint file, or a spec. {SPEC_HELP}"
    )


def _stem(path: Path) -> str:
    """The file name without its checkpoint suffixes (``model_best.pth.tar`` -> ``model_best``)."""
    name = path.name
    for suffix in (".tar", ".pth", ".pt", ".ckpt", ".bin", ".safetensors"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name if name != path.name else path.stem


def _load_safetensors_file(req: LoadRequest) -> LoadedModel:
    _refuse_ema(req.ema, f"the safetensors file {req.path}")
    sd, meta = read_safetensors(req.path, req.map_location)
    return _from_state_dict(sd, meta, [], req.arch, req.map_location, kind="safetensors", format="safetensors",
                            weights="training", **req.provenance())


#: Why a TorchScript module cannot be compared as it is.
SCRIPT_HELP = (
    "ftprobe reads layers with forward hooks, which TorchScript modules do not support, so it cannot compare one "
    "as it is."
)


def _load_torchscript(req: LoadRequest) -> LoadedModel:
    """A TorchScript archive's weights, loaded into ``--arch`` (its own module cannot be hooked)."""
    _refuse_ema(req.ema, f"the TorchScript archive {req.path}")
    if req.arch is None:
        raise CheckpointError(
            f"{req.path} is a TorchScript archive. {SCRIPT_HELP} Pass the architecture it was scripted or traced "
            "from, --arch torchvision:NAME or --arch timm:NAME (arch= in Python): ftprobe then loads the archive's "
            "weights into that architecture."
        )
    with warnings.catch_warnings():  # torch.jit is deprecated; it still loads existing archives
        warnings.simplefilter("ignore", FutureWarning)
        try:
            module = torch.jit.load(str(req.path), map_location=req.map_location)
        except Exception as exc:
            raise not_checkpoint(req.path, f"unreadable TorchScript archive: {exc}") from exc
    notes = [f"Weights read from the TorchScript archive into {req.arch} (TorchScript modules cannot be hooked)."]
    return _from_state_dict(dict(module.state_dict()), None, notes, req.arch, req.map_location, kind="torchscript",
                            format="TorchScript", weights="training", **req.provenance())


def _framework(obj: Mapping[str, Any]) -> str | None:
    """Which training code wrote a checkpoint dict, from the entries it is known to write."""
    if "pytorch-lightning_version" in obj:
        return "Lightning"
    if {"state_dict", "arch", "version"} <= set(obj):
        return "timm train script"
    if {"model", "optimizer", "lr_scheduler", "epoch"} <= set(obj):
        return "torchvision reference script"
    return None


def _arch_hint(obj: Mapping[str, Any], framework: str | None) -> str:
    """``--arch`` advice from the ``args.model`` a timm or torchvision training script stores."""
    name = getattr(obj.get("args"), "model", None)
    source = {"timm train script": "timm", "torchvision reference script": "torchvision"}.get(framework or "")
    if not isinstance(name, str) or source is None:
        return ""
    return f" The {framework}'s args name the model {name!r}: --arch {source}:{name} is probably right."


def _load_torch_save(req: LoadRequest) -> LoadedModel:
    path, common = req.path, req.provenance()
    obj, unsafe = torch_load(path, req.trust, req.map_location)
    if isinstance(obj, nn.Module):
        _refuse_ema(req.ema, f"the pickled model {path}")
        return LoadedModel(obj.to(req.map_location), kind="pickle", format="pickled module", **common)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict or a model.")
    for key in ("model", "module"):
        if isinstance(obj.get(key), nn.Module):  # only reachable with trust
            _refuse_ema(req.ema, f"the pickled model in {path}")
            notes = [f"Model read from the checkpoint's {key!r} entry."]
            return LoadedModel(obj[key].to(req.map_location), kind="pickle", notes=notes, format="pickled module",
                               entry=key, **common)
    found = extract_state_dict(path, obj, req.ema)
    notes = list(found.notes)
    if unsafe:
        notes.append(f"Unpickled with trust (the file holds Python objects besides tensors: {', '.join(unsafe[:5])}).")
    framework = _framework(obj)
    return _from_state_dict(found.state_dict, found.meta, notes, req.arch, req.map_location, kind="state_dict",
                            format=framework or "torch.save", weights=found.weights, entry=found.entry,
                            arch_hint=_arch_hint(obj, framework), **common)


#: Weight files of a folder, in the order they are preferred (safetensors first, as timm and transformers do).
FOLDER_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: Indexes of a sharded folder (``huggingface_hub.save_torch_state_dict``, transformers' sharded save).
FOLDER_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _folder_weights(req: LoadRequest) -> tuple[dict[str, Tensor], list[Path], str]:
    """A folder's state dict (shards with their index, or one weights file), the files read, and the kind."""
    path = req.path
    for name in FOLDER_INDEXES:
        if (path / name).is_file():
            sd, files = read_sharded(path / name, req.map_location)
            return sd, files, "safetensors" if name.startswith("model.safetensors") else "state_dict"
    for name in FOLDER_WEIGHTS:
        file = path / name
        if not file.is_file():
            continue
        if name.endswith(".safetensors"):
            return read_safetensors(file, req.map_location)[0], [file], "safetensors"
        obj, _ = torch_load(file, req.trust, req.map_location)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{file} holds a {type(obj).__name__}, not a state dict.")
        return extract_state_dict(file, obj).state_dict, [file], "state_dict"
    raise CheckpointError(
        f"{path} has no weights: expected {' or '.join(FOLDER_WEIGHTS)}, or shards with {' or '.join(FOLDER_INDEXES)}."
    )


def _is_timm_hub_folder(path: Path) -> bool:
    return "architecture" in (read_json(path / "config.json") or {})


def _load_timm_hub_folder(req: LoadRequest) -> LoadedModel:
    """A folder ``timm.models.save_for_hf`` (``push_to_hf_hub``'s local half) writes: ``config.json`` names the
    architecture, its class count and builder arguments, as ``timm.create_model('local-dir:PATH')`` reads them."""
    _refuse_ema(req.ema, f"the timm hub folder {req.path}")
    config = read_json(req.path / "config.json") or {}
    name = str(config["architecture"])
    kwargs = dict(config.get("model_args") or {})
    if "num_classes" in config:
        kwargs.setdefault("num_classes", config["num_classes"])
    sd, files, kind = _folder_weights(req)
    notes = [f"Architecture timm:{name} {kwargs} read from the folder's config.json (a timm hub folder)."]
    if isinstance(config.get("pretrained_cfg"), Mapping):  # its input size and normalisation, as timm applies them
        kwargs["pretrained_cfg_overlay"] = dict(config["pretrained_cfg"])
    meta = {"arch": f"timm:{name}", "arch_kwargs": kwargs}
    return _from_state_dict(sd, meta, notes, req.arch, req.map_location, kind=kind, format="timm hub folder",
                            weights="training", **req.provenance([req.path / "config.json", *files]))


def _is_weights_folder(path: Path) -> bool:
    return any((path / n).is_file() for n in FOLDER_INDEXES + FOLDER_WEIGHTS)


def _load_weights_folder(req: LoadRequest) -> LoadedModel:
    """Weights without a model config (``huggingface_hub.save_torch_state_dict``): the architecture is ``--arch``."""
    _refuse_ema(req.ema, f"the folder {req.path}")
    sd, files, kind = _folder_weights(req)
    sharded = files[0].name in FOLDER_INDEXES
    fmt = ("sharded safetensors folder" if kind == "safetensors" else "sharded torch folder") if sharded else \
        "weights folder"
    notes = [f"Read the {len(files) - 1} shards listed in {files[0].name}."] if sharded else []
    return _from_state_dict(sd, None, notes, req.arch, req.map_location, kind=kind, format=fmt, weights="training",
                            **req.provenance(files))


#: Folder formats, tried in order (after transformers and PEFT folders, which ``load_model`` recognises first); the
#: first whose ``matches`` is true loads the folder. A new format goes before the generic weights folder.
FOLDER_FORMATS: list[ModelFormat] = [
    ModelFormat(
        "timm hub folder",
        "config.json with an 'architecture' (timm.models.save_for_hf, push_to_hf_hub) beside model.safetensors or "
        "pytorch_model.bin; no --arch needed",
        _is_timm_hub_folder,
        _load_timm_hub_folder,
    ),
    ModelFormat(
        "weights folder",
        "model.safetensors or pytorch_model.bin, or shards with model.safetensors.index.json / "
        "pytorch_model.bin.index.json (huggingface_hub.save_torch_state_dict); needs --arch",
        _is_weights_folder,
        _load_weights_folder,
    ),
]

#: File formats, tried in order; torch.save comes last and matches every file.
FILE_FORMATS: list[ModelFormat] = [
    ModelFormat("safetensors", "a .safetensors file (or any file in that format)",
                lambda p: p.suffix == ".safetensors" or looks_like_safetensors(p), _load_safetensors_file),
    ModelFormat("TorchScript", "a torch.jit.save archive", is_torchscript, _load_torchscript),
    ModelFormat("torch.save", "a torch.save file, read with weights_only=True", lambda p: True, _load_torch_save),
]


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
    arch_hint: str = "",
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
            " arch=...), which records it." + arch_hint
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
