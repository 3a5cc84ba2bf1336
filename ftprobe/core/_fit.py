"""Fitting a state dict to the architecture a spec names, without loading anything until the plan is sure.

:func:`fit_state_dict` strips wrapper prefixes, handles auxiliary heads and recognises a replaced classification
head, planning on ``meta``-device models (no memory, no initialisation); :func:`materialize` then turns the final plan
into the real model and loads the weights, so the architecture's own initialisation never runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ftprobe.core._archs import AUX_BUILDERS, ArchSpec, build
from ftprobe.core.errors import CheckpointError

__all__ = ["AUX_MODULES", "WRAPPER_PREFIXES", "Fit", "fit_state_dict", "materialize", "strip_prefixes"]

#: Wrapper prefixes stripped from every key: DistributedDataParallel / DataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Auxiliary classifier modules (torchvision/timm googlenet and inception_v3); ftprobe never compares them.
AUX_MODULES = ("aux1", "aux2", "AuxLogits")


def strip_prefixes(state_dict: Mapping[str, Tensor], notes: list[str]) -> dict[str, Tensor]:
    """Remove DDP (``module.``) and torch.compile (``_orig_mod.``) prefixes shared by every key, with a note."""
    sd = dict(state_dict)
    stripped: list[str] = []
    while sd:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in sd)), None)
        if prefix is None:
            break
        sd = {k[len(prefix) :]: v for k, v in sd.items()}
        stripped.append(prefix)
    if stripped:
        notes.append(f"Stripped the key prefix {''.join(stripped)!r} (DistributedDataParallel / torch.compile).")
    return sd


@dataclass
class Fit:
    """How a state dict goes into an architecture.

    Attributes:
        state_dict: Keys as the model names them (prefixes stripped, auxiliary heads dropped).
        kwargs: Builder arguments to use (``num_classes`` / ``aux_logits`` added when found).
        head: None, or ``{"module", "modules", "num_classes", "base_num_classes"}`` for a replaced head.
        notes: What the user should know.
    """

    state_dict: dict[str, Tensor]
    kwargs: dict[str, Any]
    head: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)


def _plan(spec: ArchSpec, kwargs: Mapping[str, Any]) -> nn.Module:
    """The architecture built on the meta device (no memory, no init cost), or on CPU if the builder needs data."""
    meta_kwargs = dict(kwargs)
    if spec.source == "torchvision" and spec.name in AUX_BUILDERS:
        meta_kwargs.setdefault("init_weights", False)  # initialising meta tensors is wasted work
    try:
        with torch.device("meta"):
            return build(spec, meta_kwargs, download=False)
    except CheckpointError:
        raise
    except Exception:  # some builders call .item() / .tolist() while building; plan on a real model instead
        return build(spec, kwargs, download=False)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _on_meta(model: nn.Module) -> bool:
    return any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers()))


def _fully_in_state_dict(model: nn.Module) -> bool:
    """True when loading a state dict sets every tensor (no non-persistent buffers, no bare tensor attributes)."""
    persistent = set(model.state_dict())
    if any(name not in persistent for name, _ in model.named_buffers()):
        return False
    return not any(isinstance(v, Tensor) for m in model.modules() for v in vars(m).values())


def materialize(spec: ArchSpec, fit: Fit, device: str | torch.device) -> nn.Module:
    """Build the planned model on ``device`` and load ``fit.state_dict`` into it (strict).

    A meta-device plan is turned into empty tensors and filled by the state dict, so the architecture's own
    initialisation never runs, unless the model holds tensors a state dict does not set (then it is built again).
    """
    model = fit.model
    if model is None or (_on_meta(model) and not _fully_in_state_dict(model)):
        model = build(spec, fit.kwargs, download=False)
    elif _on_meta(model):
        model = model.to_empty(device=device)
    model.load_state_dict(fit.state_dict, strict=True)
    return model.to(device)


def _aux_names(keys: Iterable[str]) -> list[str]:
    keys = list(keys)
    return [a for a in AUX_MODULES if any(k.startswith(a + ".") for k in keys)]


def _compare(sd: Mapping[str, Tensor], shapes: Mapping[str, tuple[int, ...]]) -> tuple[list, list, list]:
    missing = [k for k in shapes if k not in sd]
    unexpected = [k for k in sd if k not in shapes]
    mismatched = [(k, tuple(sd[k].shape), shapes[k]) for k in shapes if k in sd and tuple(sd[k].shape) != shapes[k]]
    return missing, unexpected, mismatched


def _head_pair(mismatched: list) -> tuple[int, int] | None:
    """(model classes, checkpoint classes) when every mismatch differs in one dim by the same pair of sizes."""
    pairs = set()
    for _, ckpt, model in mismatched:
        diff = [d for d in range(len(ckpt)) if len(ckpt) == len(model) and ckpt[d] != model[d]]
        if len(diff) != 1:
            return None
        pairs.add((model[diff[0]], ckpt[diff[0]]))
    return pairs.pop() if len(pairs) == 1 else None


def _mismatch_error(spec: ArchSpec, missing: list, unexpected: list, mismatched: list) -> CheckpointError:
    def listing(title: str, items: list[str]) -> str:
        more = f", ... ({len(items) - 10} more)" if len(items) > 10 else ""
        return f"\n  {title} ({len(items)}): {', '.join(items[:10])}{more}"

    msg = f"The checkpoint does not fit the architecture {spec}."
    if missing:
        msg += listing("keys the model has but the checkpoint lacks", missing)
    if unexpected:
        msg += listing("keys in the checkpoint the model does not have", unexpected)
    if mismatched:
        shapes = [f"{k}: checkpoint {c} vs model {m}" for k, c, m in mismatched]
        msg += listing("shape mismatches", shapes)
    msg += (
        "\nThe --arch is probably wrong (another architecture or variant): pass the one the checkpoint was trained "
        "with, e.g. --arch torchvision:NAME or --arch timm:NAME (arch= in Python)."
    )
    return CheckpointError(msg)


def _weights_config(spec: ArchSpec, kwargs: dict[str, Any], notes: list[str]) -> None:
    """Give a bare architecture the configuration its pretrained weights imply (no download)."""
    if spec.weights is None:
        if spec.source == "torchvision" and spec.name in AUX_BUILDERS and "transform_input" not in kwargs:
            notes.append(
                f"Built {spec} with transform_input=False. torchvision's ImageNet weights for {spec.name} use "
                f"transform_input=True: if this model was fine-tuned from them, pass --arch {spec}:IMAGENET1K_V1 "
                "(nothing is downloaded; it only sets the same configuration)."
            )
        return
    if spec.source == "timm":
        notes.append(f"{spec}: the state dict replaces the pretrained weights; nothing was downloaded.")
        return
    import torchvision.models as tvm

    enum_member = tvm.get_model_weights(spec.name)[spec.weights]
    if "categories" in enum_member.meta:
        kwargs.setdefault("num_classes", len(enum_member.meta["categories"]))
    set_here = []
    if spec.name in AUX_BUILDERS and "transform_input" not in kwargs:
        kwargs["transform_input"] = True
        set_here.append("transform_input=True")
    if spec.name == "googlenet" and "aux_logits" not in kwargs:  # as torchvision's builder: pretrained, no aux heads
        kwargs["aux_logits"] = False
        set_here.append("aux_logits=False")
    notes.append(
        f"Built torchvision:{spec.name} configured as for {spec.weights}"
        + (f" ({', '.join(set_here)})" if set_here else "")
        + "; the state dict replaces the weights, nothing was downloaded."
    )


def _strip_wrapper_attribute(
    sd: dict[str, Tensor], shapes: Mapping[str, tuple[int, ...]], notes: list[str]
) -> dict[str, Tensor]:
    """The keys under the attribute that holds the model (``model.`` of a LightningModule), when the model has none of
    the keys as they are: stripped when every key shares it, or kept alone when the wrapper saved more (a loss
    module's class weights ...) and that attribute alone holds every tensor of the model."""
    if any(k in shapes for k in sd) or all("." not in k for k in sd):
        return sd
    groups: dict[str, dict[str, Tensor]] = {}
    for key, value in sd.items():
        head, dot, rest = key.partition(".")
        if dot:
            groups.setdefault(head, {})[rest] = value
    needed = {k for k in shapes if not k.endswith("num_batches_tracked") and k.split(".")[0] not in AUX_MODULES}
    fits = {h: len(needed & set(sub)) for h, sub in groups.items() if not any(k.startswith(h + ".") for k in shapes)}
    if not fits or max(fits.values()) == 0:
        return sd
    head = max(fits, key=fits.__getitem__)
    prefix, sub = head + ".", groups[head]
    others = [k for k in sd if not k.startswith(prefix)]
    if not others:
        notes.append(f"Stripped the key prefix {prefix!r} that every key shares (a wrapper such as a LightningModule).")
        return sub
    if not needed <= set(sub):
        return sd
    more = f" and {len(others) - 5} more" if len(others) > 5 else ""
    notes.append(
        f"Kept the keys under {prefix!r}, which hold the whole model (a wrapper such as a LightningModule); dropped "
        f"the wrapper's other entries: {', '.join(others[:5])}{more}."
    )
    return sub


def fit_state_dict(spec: ArchSpec, state_dict: Mapping[str, Tensor], kwargs: Mapping[str, Any] | None = None) -> Fit:
    """Plan how ``state_dict`` loads into ``spec`` (no weights are copied; the model is planned on ``meta``).

    Args:
        spec: A resolved spec. Its weights, if any, only set the configuration they imply.
        state_dict: Parameter and buffer tensors, possibly with wrapper prefixes.
        kwargs: Builder arguments (from ``save_model`` metadata).

    Returns:
        The plan; :func:`materialize` turns it into the loaded model.

    Raises:
        CheckpointError: Keys or shapes differ beyond a replaced head and auxiliary heads.
    """
    notes: list[str] = []
    kw = dict(kwargs or {})
    sd = strip_prefixes(state_dict, notes)
    _weights_config(spec, kw, notes)
    plan = _plan(spec, kw)
    shapes = _shapes(plan)
    sd = _strip_wrapper_attribute(sd, shapes, notes)

    model_aux, sd_aux = _aux_names(shapes), _aux_names(sd)
    if model_aux and not sd_aux:
        kw["aux_logits"] = False
        plan = _plan(spec, kw)
        shapes = _shapes(plan)
        notes.append(f"The checkpoint has no auxiliary heads: built {spec} with aux_logits=False.")
    dropped = [a for a in sd_aux if a not in _aux_names(shapes)]
    if dropped:
        sd = {k: v for k, v in sd.items() if not k.startswith(tuple(a + "." for a in dropped))}
        notes.append(f"Dropped the checkpoint's auxiliary heads ({', '.join(dropped)}): the architecture has none.")
    for key in shapes:  # old checkpoints lack BatchNorm counters; load_state_dict tolerates that only sometimes
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = torch.tensor(0, dtype=torch.long)

    missing, unexpected, mismatched = _compare(sd, shapes)
    if not (missing or unexpected or mismatched):
        return Fit(sd, kw, None, notes, plan)
    pair = _head_pair(mismatched) if not (missing or unexpected) else None
    if pair is not None:
        base, n = pair
        plan = _plan(spec, {**kw, "num_classes": n})
        if _compare(sd, _shapes(plan)) == ([], [], []):
            modules = list(dict.fromkeys(k.rpartition(".")[0] for k, _, _ in mismatched))
            main = next((m for m in modules if m.split(".")[0] not in AUX_MODULES), modules[0])
            head = {"module": main, "modules": modules, "num_classes": n, "base_num_classes": base}
            notes.append(f"Replaced classification head {main!r}: {n} classes (the architecture has {base}).")
            return Fit(sd, {**kw, "num_classes": n}, head, notes, plan)
    raise _mismatch_error(spec, missing, unexpected, mismatched)
