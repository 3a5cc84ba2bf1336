"""PEFT LoRA adapters given as a model: an adapter folder, or an unmerged ``PeftModel.state_dict()`` file.

An adapter holds no model of its own: it is applied to its base with peft's own code (``get_peft_model`` on a copy of
the base, then ``set_peft_model_state_dict`` with the adapter's weights, as ``PeftModel.from_pretrained`` does), and
merged with ``merge_and_unload()``. The merged model has the base's class and module names, its forward gives the
adapted model's activations, and its weights are ``W_base + scale·B·A`` in each adapted module (``scale =
lora_alpha / r``, or ``lora_alpha / sqrt(r)`` with rsLoRA) and the trained copies of ``modules_to_save``; so the
weight metrics measure exactly the adapter's delta.

Recognised as adapters:

- a folder with ``adapter_config.json`` (``PeftModel.save_pretrained(dir)``: ``adapter_model.safetensors`` or
  ``adapter_model.bin``);
- a ``torch.save`` or safetensors file whose keys hold ``lora_A`` / ``lora_B`` weights (``PeftModel.state_dict()``,
  or ``get_peft_model_state_dict(model)``), with ``adapter_config.json`` in the same folder: a state dict does not
  record ``lora_alpha`` or rsLoRA, so the scale comes from that config.

Before anything is applied, the adapter is checked against the base: the base the config names, the target modules,
every adapted module and weight shape, and (for a full ``PeftModel.state_dict()``) the frozen base weights the file
holds. A misfit is a :class:`CheckpointError` that names the module and asks for the base the adapter was trained on.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ftprobe.core.errors import CheckpointError

if TYPE_CHECKING:
    from ftprobe.core.loading import LoadedModel

__all__ = ["ADAPTER_CONFIG", "is_adapter_dir", "load_adapter", "sniff_adapter_file"]

ADAPTER_CONFIG = "adapter_config.json"
INSTALL_HINT = "peft is not installed; install it with `pip install peft` to compare LoRA adapters."
_PREFIX = "base_model.model."
#: ``name.lora_A.weight`` (saved format) or ``name.lora_A.ADAPTER.weight`` (``PeftModel.state_dict()``).
_LORA_KEY = re.compile(r"\.lora_(?:A|B|embedding_A|embedding_B)\.(?:([^.]+)\.)?weight\Z")


def is_adapter_dir(path: Path) -> bool:
    return path.is_dir() and (path / ADAPTER_CONFIG).is_file()


def sniff_adapter_file(path: Path, map_location: str | torch.device) -> dict[str, Tensor] | None:
    """The tensors of a file that is a LoRA state dict, else None (the file is then loaded as any checkpoint).

    Reads safetensors keys from the header, and a ``torch.save`` file weights-only and memory-mapped, so a file that
    is not an adapter costs little more than opening it.
    """
    from ftprobe.core._checkpoints import extract_state_dict, is_torchscript, looks_like_safetensors, read_safetensors

    if not path.is_file() or path.stat().st_size == 0 or is_torchscript(path):
        return None
    try:
        if path.suffix == ".safetensors" or looks_like_safetensors(path):
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as fh:
                if not any(_LORA_KEY.search(k) for k in fh.keys()):
                    return None
            return read_safetensors(path, map_location)[0]
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        sd = extract_state_dict(path, obj)[0] if isinstance(obj, Mapping) else None
    except Exception:  # not a weights-only zip checkpoint of tensors: not an adapter; the usual loader reports it
        return None
    return sd if sd and any(_LORA_KEY.search(k) for k in sd) else None


def _module_of(key: str) -> str:
    """``base_model.model.vit.layers.0.q_proj.lora_A.default.weight`` → ``vit.layers.0.q_proj``."""
    parts = key.removeprefix(_PREFIX).split(".")
    for i, part in enumerate(parts):
        if part.startswith("lora_") or part in ("modules_to_save", "original_module", "base_layer"):
            return ".".join(parts[:i])
    return ".".join(parts[:-1])


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:
        raise CheckpointError(INSTALL_HINT) from exc
    return peft


def _identities(base: LoadedModel) -> list[str]:
    """Names the base goes by: its source, spec or hub name, and the ``name_or_path`` transformers recorded."""
    names = [base.source] if base.source != "<module>" else []
    if base.source.startswith("hf:"):
        names.append(base.source[3:])
    config = getattr(base.module, "config", None)
    recorded = getattr(config, "_name_or_path", None) or getattr(base.module, "name_or_path", None)
    if isinstance(recorded, str) and recorded:
        names.append(recorded)
    return names


def _same(wanted: str, names: list[str]) -> bool:
    """Whether the base the adapter names is one of the base's names: equal, the same folder, or the hub id of a
    snapshot folder in the Hugging Face cache (``.../models--ORG--NAME/snapshots/HASH``)."""
    cached = "models--" + wanted.replace("/", "--")
    for name in names:
        if name == wanted or cached in Path(name).parts:
            return True
        a, b = Path(wanted).expanduser(), Path(name).expanduser()
        if a.exists() and b.exists() and a.resolve() == b.resolve():
            return True
    return False


class _Misfit:
    """Builds the 'does not fit this base' error, the same words for every cause."""

    def __init__(self, path: Path, base: LoadedModel, trained_on: str | None) -> None:
        self.path, self.base, self.trained_on = path, base, trained_on

    def __call__(self, reason: str) -> CheckpointError:
        hint = f" ({self.trained_on})" if self.trained_on else ""
        cls = type(self.base.module).__name__
        which = self.base.label if self.base.label == cls else f"{self.base.label}, {cls}"
        return CheckpointError(
            f"The adapter {self.path} does not fit this base ({which}): "
            f"{reason}. Pass the base it was trained on{hint} as the base model (the first model of `ftprobe "
            "compare`, base= in Python)."
        )


def _trained_on(config: Any) -> str | None:
    name = getattr(config, "base_model_name_or_path", None)
    if name:
        return str(name)
    mapping = getattr(config, "auto_mapping", None) or {}
    if isinstance(mapping, Mapping) and mapping.get("base_model_class"):
        parent = mapping.get("parent_library")
        return f"a {parent + '.' if parent else ''}{mapping['base_model_class']}"
    return None


def _resolve_base(path: Path, config: Any, map_location: str | torch.device) -> tuple[LoadedModel, str]:
    from ftprobe.core._hf import HF_PREFIX
    from ftprobe.core.loading import load_model

    name = getattr(config, "base_model_name_or_path", None)
    if not name:
        trained = _trained_on(config)
        raise CheckpointError(
            f"{path} is a PEFT LoRA adapter: it changes a base model and holds none itself, and its "
            f"adapter_config.json names no base{' (it was trained on ' + trained + ')' if trained else ''}. "
            "Pass the base it was trained on as the base model: `ftprobe compare BASE ADAPTER` "
            "(ftprobe.compare(base, adapter), or load_model(adapter, base=...) in Python)."
        )
    local = Path(name).expanduser()
    spec = str(local) if local.exists() else HF_PREFIX + name
    return load_model(spec, map_location=map_location), f"the base {name!r} named in {ADAPTER_CONFIG}"


def load_adapter(
    path: Path,
    sd: dict[str, Tensor] | None,
    base: LoadedModel | nn.Module | None,
    map_location: str | torch.device,
    label: str | None,
) -> LoadedModel:
    """Apply a LoRA adapter (a folder, or the state dict ``sd`` read from ``path``) to ``base`` and merge it.

    Args:
        path: the adapter folder, or the state-dict file.
        sd: the file's tensors (None for a folder).
        base: the model the adapter belongs to; None loads the base its config names.
    """
    from ftprobe.core._checkpoints import sha256
    from ftprobe.core._hf import folder_sha256
    from ftprobe.core.loading import LoadedModel, load_model

    config_dir = path if sd is None else path.parent
    if not (config_dir / ADAPTER_CONFIG).is_file():
        raise CheckpointError(
            f"{path} is an unmerged PEFT LoRA state dict, but a state dict does not record the adapter's scale "
            f"(lora_alpha, use_rslora), and there is no {ADAPTER_CONFIG} beside it. Save the adapter with "
            "peft_model.save_pretrained(DIR) and pass DIR, or write the config next to the file with "
            "peft_model.peft_config['default'].save_pretrained(FOLDER_OF_THE_FILE)."
        )
    peft = _peft()
    from peft.utils import get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

    try:
        config = peft.PeftConfig.from_pretrained(str(config_dir))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{config_dir / ADAPTER_CONFIG} cannot be read by peft {peft.__version__} ({type(exc).__name__}: {exc}); "
            "upgrade peft if the adapter was saved by a newer one."
        ) from exc
    kind = getattr(getattr(config, "peft_type", None), "value", str(getattr(config, "peft_type", "?")))
    if kind != "LORA":
        raise CheckpointError(
            f"{path} is a PEFT {kind} adapter; ftprobe compares LoRA adapters. Merge it into its base with peft "
            "(PeftModel.from_pretrained(base, DIR).merge_and_unload().save_pretrained(OUT)) and compare OUT."
        )
    notes: list[str] = []
    if base is None:
        base, how = _resolve_base(path, config, map_location)
        notes.append(f"applied to {how}.")
    elif isinstance(base, nn.Module):
        base = load_model(base)
    misfit = _Misfit(path, base, _trained_on(config))
    wanted = getattr(config, "base_model_name_or_path", None)
    names = _identities(base)
    if wanted and names and not _same(str(wanted), names):
        raise misfit(
            f"it was trained on {wanted!r} (base_model_name_or_path in {ADAPTER_CONFIG}), the base given is "
            f"{names[-1]!r}. If that is the same model under another name, set base_model_name_or_path in "
            f"{ADAPTER_CONFIG} to it"
        )
    if wanted and not names:
        notes.append(f"trained on {wanted!r}; the base given is a module object, so its name was not checked.")

    adapter_name = "default"
    if sd is not None:
        found = {m.group(1) for k in sd if (m := _LORA_KEY.search(k))}
        named = sorted(n for n in found if n)
        if len(named) > 1:
            raise CheckpointError(f"{path} holds several adapters ({', '.join(named)}); save one per file.")
        adapter_name = named[0] if named else "default"
        if not any(k.startswith(_PREFIX) for k in sd):  # saved from the inner model: put peft's prefix back
            sd = {(("base_model." + k) if k.startswith("model.") else _PREFIX + k): v for k, v in sd.items()}
    with warnings.catch_warnings():  # peft warns about what the fit checks below report as errors
        warnings.simplefilter("ignore")
        try:
            peft_model = peft.get_peft_model(copy.deepcopy(base.module), config, adapter_name=adapter_name)
        except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as exc:
            targets = sorted(config.target_modules) if isinstance(config.target_modules, (set, list)) \
                else config.target_modules
            if "not found in the base model" in str(exc) or "No modules were targeted" in str(exc):
                raise misfit(f"its target modules {targets} are not found in the base model") from exc
            raise misfit(f"peft cannot apply it: {str(exc).splitlines()[0][:300]} (target modules {targets})") from exc
        if sd is None:
            weights = load_peft_weights(str(path), device=str(torch.device(map_location)))
        elif named:  # a whole PeftModel.state_dict(): peft picks the adapter's entries out of it
            weights = get_peft_model_state_dict(peft_model, state_dict=sd, adapter_name=adapter_name)
            _check_frozen(sd, base.module, misfit, notes)
        else:
            weights = sd
        expected = get_peft_model_state_dict(peft_model, adapter_name=adapter_name)
        _check_fit(weights, expected, misfit)
        set_peft_model_state_dict(peft_model, weights, adapter_name=adapter_name)
        info = _describe(peft_model, config, adapter_name)
        merged = peft_model.merge_and_unload()
    if [n for n, _ in merged.named_modules()] != [n for n, _ in base.module.named_modules()]:
        raise RuntimeError(f"merging {path} changed the module names of the base")  # a bug: peft keeps the tree
    notes.insert(0, info)
    digest = folder_sha256(path) if sd is None else sha256(path)
    return LoadedModel(
        merged, label or path.stem, str(path.resolve()), "peft", arch=base.arch, arch_kwargs=dict(base.arch_kwargs),
        sha256=digest, head=base.head, notes=notes + [f"base: {n}" for n in base.notes],
        format="PEFT adapter folder" if sd is None else "PEFT LoRA state dict", weights="training",
    )


def _check_fit(weights: Mapping[str, Tensor], expected: Mapping[str, Tensor], misfit: _Misfit) -> None:
    extra = [k for k in weights if k not in expected]
    if extra:
        raise misfit(f"it adapts module {_module_of(extra[0])!r}, which the base does not have"
                     + (f" (and {len(extra) - 1} more weights)" if len(extra) > 1 else ""))
    missing = [k for k in expected if k not in weights]
    if missing:
        raise misfit(f"module {_module_of(missing[0])!r} of the base matches the adapter's target modules, but the "
                     "adapter holds no weights for it (it was trained on a model without that module)")
    for key, tensor in weights.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise misfit(f"module {_module_of(key)!r}: the adapter's {key.removeprefix(_PREFIX)} has shape "
                         f"{tuple(tensor.shape)}, this base needs {tuple(expected[key].shape)}")


def _check_frozen(sd: Mapping[str, Tensor], base: nn.Module, misfit: _Misfit, notes: list[str]) -> None:
    """A whole ``PeftModel.state_dict()`` holds the frozen base weights too: they must be the given base's."""
    params = dict(base.named_parameters(remove_duplicate=False))  # tied weights under each of their names
    buffers = dict(base.named_buffers(remove_duplicate=False))
    changed_buffers = []
    for key, tensor in sd.items():
        if "lora_" in key or ".modules_to_save." in key:
            continue
        name = key.removeprefix(_PREFIX).replace(".base_layer.", ".").replace(".original_module.", ".")
        ref = params.get(name)
        if ref is None:
            if name in buffers:
                b = buffers[name]
                if b.shape != tensor.shape or not torch.equal(tensor.to(b.device, b.dtype), b):
                    changed_buffers.append(name)
                continue
            raise misfit(f"the file holds base weights for {name!r}, which the base does not have")
        if ref.shape != tensor.shape:
            raise misfit(f"the file's frozen {name!r} has shape {tuple(tensor.shape)}, the base's {tuple(ref.shape)}")
        if not torch.allclose(tensor.to(ref.device, ref.dtype), ref.detach(), rtol=1e-4, atol=1e-6):
            raise misfit(f"the file's frozen copy of {name!r} differs from the base's weights (other base weights)")
    if changed_buffers:
        notes.append(
            f"the file's buffers differ from the base's ({', '.join(changed_buffers[:4])}"
            f"{' ...' if len(changed_buffers) > 4 else ''}: batch-norm statistics updated while training); the "
            "adapter is applied to the base's, as PeftModel.save_pretrained would keep it."
        )


def _describe(peft_model: nn.Module, config: Any, adapter_name: str) -> str:
    from peft.tuners.lora import LoraLayer

    layers = [(n.removeprefix(_PREFIX), m) for n, m in peft_model.named_modules()
              if isinstance(m, LoraLayer) and adapter_name in getattr(m, "r", {})]
    scales = sorted({float(m.scaling[adapter_name]) for _, m in layers})
    ranks = sorted({int(m.r[adapter_name]) for _, m in layers})
    kinds = sorted({type(m).__name__ for _, m in layers})
    shown = ", ".join(n for n, _ in layers[:4]) + (f" and {len(layers) - 4} more" if len(layers) > 4 else "")
    saved = sorted(getattr(config, "modules_to_save", None) or [])
    text = (
        f"PEFT LoRA adapter: r={config.r}, lora_alpha={config.lora_alpha}, rslora={bool(config.use_rslora)}"
        f"{', DoRA' if getattr(config, 'use_dora', False) else ''}; scale {', '.join(f'{s:g}' for s in scales)}"
        f"{' (ranks ' + ', '.join(map(str, ranks)) + ')' if len(ranks) > 1 else ''} on {len(layers)} modules "
        f"({shown}; {', '.join(kinds)})"
    )
    if saved:
        text += f"; modules_to_save (trained in full): {', '.join(saved)}"
    return text + ("; merged into a copy of the base for comparison with peft's merge_and_unload(): weights are "
                   "base + scale·B·A")
