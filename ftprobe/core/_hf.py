"""Hugging Face transformers models: folders written by ``save_pretrained`` / ``Trainer``, and hub names ``hf:NAME``.

A folder is a transformers model when its ``config.json`` has a ``model_type`` (timm's hub folders write
``architecture`` instead). The class comes from the config's ``architectures``; the weights are read by the library's
own ``from_pretrained(dir, local_files_only=True)``, so sharded folders (``model-0000i-of-0000n.safetensors`` and
their index), ``pytorch_model.bin`` and the key renames transformers applies at load time all work as they do in
transformers. Files the model does not need (``training_args.bin``, ``optimizer.pt``, ``scheduler.pt``,
``rng_state.pth``, ``trainer_state.json``) are left alone.

Nothing here imports transformers until a transformers model is actually loaded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ftprobe.core._checkpoints import read_json
from ftprobe.core.errors import CheckpointError

if TYPE_CHECKING:
    from ftprobe.core.loading import LoadedModel

__all__ = [
    "HF_PREFIX", "checkpoint_dirs", "config_input", "folder_sha256", "is_transformers_dir", "is_transformers_model",
    "load_hub", "load_transformers", "natural_blocks", "trainer_output_help",
]

HF_PREFIX = "hf:"
INSTALL_HINT = "transformers is not installed; install it with `pip install transformers` to load this model."
#: Files of a folder that hold the model (hashed for provenance); everything else (optimizer, scheduler ...) is ignored.
_MODEL_FILES = re.compile(r"(config\.json|.*\.safetensors|pytorch_model.*\.bin|.*\.index\.json)\Z")
_CHECKPOINT_DIR = re.compile(r"checkpoint-(\d+)\Z")


def is_transformers_dir(path: Path) -> bool:
    """A folder whose ``config.json`` names a transformers ``model_type`` (not timm's ``architecture``)."""
    if not path.is_dir():
        return False
    config = read_json(path / "config.json")
    return config is not None and "model_type" in config and "architecture" not in config


def checkpoint_dirs(path: Path) -> list[Path]:
    """A Trainer output folder's ``checkpoint-N`` sub-folders, by step."""
    found = [(int(m.group(1)), p) for p in path.iterdir() if p.is_dir() and (m := _CHECKPOINT_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def trainer_output_help(path: Path) -> str:
    """The message for a Trainer ``output_dir``: the model is in its ``checkpoint-N`` folders, not in it."""
    found = checkpoint_dirs(path)
    return (
        f"{path.resolve()} is a Trainer output folder: it holds {', '.join(p.name for p in found[-4:])} but no "
        f"model of its own. Pass one of them, e.g. {found[-1]} (the last step), or the folder "
        "Trainer.save_model(DIR) wrote."
    )


def folder_sha256(path: Path) -> str:
    """One digest over the model files of a folder (names and contents), for provenance and resume checks."""
    from ftprobe.core._checkpoints import sha256

    digest = hashlib.sha256()
    for file in sorted(p for p in path.iterdir() if p.is_file() and _MODEL_FILES.match(p.name)):
        digest.update(f"{file.name}\0{sha256(file)}\n".encode())
    return digest.hexdigest()


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise CheckpointError(INSTALL_HINT) from exc
    return transformers


@contextmanager
def _quiet(transformers: Any) -> Iterator[None]:
    """No weight-loading progress bars on the user's terminal (restored afterwards)."""
    logging = transformers.utils.logging
    was_disabled = logging.is_progress_bar_enabled() is False
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if not was_disabled:
            logging.enable_progress_bar()


def _model_class(transformers: Any, config: Any, where: str) -> tuple[Any, str]:
    """The class ``config.architectures`` names, else the Auto class for image classification; and a note."""
    names = list(getattr(config, "architectures", None) or [])
    for name in names:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls, f"transformers {name} (model_type {config.model_type!r}, named in {where}'s config.json)"
    fallback = "AutoModelForImageClassification" if not names else "AutoModel"
    return getattr(transformers, fallback), (
        f"{where}'s config.json names no transformers class"
        f"{(' this version knows: ' + ', '.join(names)) if names else ''}"
        f"; loaded with {fallback} for model_type {config.model_type!r}"
    )


def load_transformers(path: Path, map_location: str | torch.device, label: str | None) -> LoadedModel:
    """Load a ``save_pretrained`` / ``Trainer.save_model`` / ``checkpoint-N`` / sharded folder, offline."""
    from ftprobe.core.loading import LoadedModel

    transformers = _transformers()
    where = str(path.resolve())
    try:
        config = transformers.AutoConfig.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{where}/config.json is not a config this transformers {transformers.__version__} can read "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}). Upgrade transformers if the model type is "
            "newer than it, or pass the folder save_pretrained wrote."
        ) from exc
    cls, note = _model_class(transformers, config, path.name)
    with _quiet(transformers):
        try:
            module = cls.from_pretrained(where, local_files_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            files = sorted(p.name for p in path.iterdir())
            raise CheckpointError(
                f"{where} has a transformers config.json but its weights cannot be loaded "
                f"({type(exc).__name__}: {str(exc).splitlines()[0][:300]}). The folder holds {', '.join(files[:12])}; "
                "it needs model.safetensors, pytorch_model.bin, or every shard its *.index.json lists. Pass the "
                "folder model.save_pretrained(DIR) or Trainer.save_model(DIR) wrote (or a Trainer checkpoint-N)."
            ) from exc
    module = module.to(map_location)
    notes = [f"{note}; loaded with {type(module).__name__}.from_pretrained(local_files_only=True)."]
    index = [p.name for p in path.glob("*.index.json")]
    if index:
        notes.append(f"sharded weights, read through {index[0]}.")
    ignored = sorted(p.name for p in path.iterdir() if p.is_file() and not _MODEL_FILES.match(p.name))
    if ignored:
        notes.append(f"not model weights, ignored: {', '.join(ignored[:8])}.")
    if (path / "trainer_state.json").is_file():
        fmt = "Trainer checkpoint folder"
    elif (path / "training_args.bin").is_file():
        fmt = "Trainer.save_model folder"
    else:
        fmt = "transformers save_pretrained folder" + (" (sharded)" if index else "")
    return LoadedModel(
        module, label or path.name, where, "transformers", arch=f"transformers:{type(module).__name__}",
        sha256=folder_sha256(path), notes=notes, format=fmt, weights="training",
    )


def load_hub(text: str, map_location: str | torch.device, label: str | None) -> LoadedModel:
    """``hf:NAME``: a model from the Hugging Face hub (or its local cache) through ``from_pretrained(NAME)``."""
    from ftprobe.core.loading import LoadedModel

    name = text[len(HF_PREFIX):].strip()
    if not name:
        raise CheckpointError(f"Spec {text!r} names no model. Write hf:ORG/NAME, e.g. hf:google/vit-base-patch16-224.")
    transformers = _transformers()
    try:
        config = transformers.AutoConfig.from_pretrained(name)
        cls, note = _model_class(transformers, config, name)
        with _quiet(transformers):
            module = cls.from_pretrained(name)
    except OSError as exc:
        from huggingface_hub import constants

        offline = constants.is_offline_mode()
        why = ("HF_HUB_OFFLINE is set, so nothing is downloaded" if offline
               else "it could not be downloaded (no connection to the hub, or no such model)")
        raise CheckpointError(
            f"{text}: {name!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}. "
            f"Fix: on a machine with network access, run `hf download {name}` (it fills that cache; copy the cache "
            f"here or point HF_HOME at it), or save the model with from_pretrained({name!r}).save_pretrained(DIR) "
            "and pass DIR" + ("; or unset HF_HUB_OFFLINE to let transformers download it" if offline else "")
            + ". Check the name on https://huggingface.co if it may be misspelled."
        ) from exc
    except (ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{text}: transformers {transformers.__version__} cannot build {name!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:300]}). Upgrade transformers if the model type is newer than it."
        ) from exc
    module = module.to(map_location)
    notes = [f"{note}; loaded with {type(module).__name__}.from_pretrained({name!r})."]
    return LoadedModel(
        module, label or name.rsplit("/", 1)[-1], f"{HF_PREFIX}{name}", "transformers",
        arch=f"transformers:{type(module).__name__}", notes=notes, format="Hugging Face hub", weights="pretrained",
    )


def is_transformers_model(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (told by its module: transformers stays unimported)."""
    return type(model).__module__.startswith("transformers.") and hasattr(model, "config")


def config_input(model: nn.Module) -> tuple[int, int] | None:
    """``(num_channels, image_size)`` from a transformers vision config, or None when it names no image size."""
    if not is_transformers_model(model):
        return None
    config = model.config
    config = getattr(config, "vision_config", None) or config
    size = getattr(config, "image_size", None)
    if isinstance(size, (list, tuple)) and size:
        size = size[-1]
    if not isinstance(size, int) or size <= 0:
        return None
    channels = getattr(config, "num_channels", 3)
    return (channels if isinstance(channels, int) and channels > 0 else 3), size


def natural_blocks(model: nn.Module, fired: Collection[str]) -> list[str]:
    """The encoder blocks of a transformers model: the children of its outermost ``nn.ModuleList`` whose blocks all
    run in the forward (``vit.layers.0`` …, ``convnext.encoder.stages.0`` …, ``resnet.encoder.stages.0`` …); [] for
    other models or when there is none."""
    if not is_transformers_model(model):
        return []
    lists = [(name.count("."), i, name, mod) for i, (name, mod) in enumerate(model.named_modules())
             if name and isinstance(mod, nn.ModuleList) and len(mod)]
    for _, _, name, mod in sorted(lists, key=lambda t: t[:2]):
        blocks = [f"{name}.{child}" for child, _ in mod.named_children()]
        if all(b in fired for b in blocks):
            return blocks
    return []
