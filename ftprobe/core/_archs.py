"""Architecture specs and building them.

A spec is ``torchvision:NAME[:WEIGHTS]`` (``torchvision.models.get_model``) or ``timm:NAME[:pretrained]``
(``timm.create_model``; timm is optional). Unknown names and weights get close-match suggestions.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ftprobe.core.errors import CheckpointError

__all__ = ["AUX_BUILDERS", "SOURCES", "SPEC_HELP", "ArchSpec", "build", "resolve_spec", "split_spec"]

SOURCES = ("torchvision", "timm")
SPEC_HELP = "Write torchvision:NAME[:WEIGHTS] (e.g. torchvision:googlenet) or timm:NAME[:pretrained]."
TIMM_MISSING = "timm is not installed; install it with `pip install 'ftprobe[timm]'` to use timm:NAME specs."
#: torchvision builders with auxiliary heads and ``init_weights`` / ``transform_input`` arguments.
AUX_BUILDERS = ("googlenet", "inception_v3")


@dataclass(frozen=True)
class ArchSpec:
    """A parsed model spec.

    Attributes:
        source: ``"torchvision"`` or ``"timm"``.
        name: The builder name (``"resnet18"``) or a timm name with tag / hub prefix.
        weights: A torchvision weights member name (``"IMAGENET1K_V1"``, ``"DEFAULT"``), ``"pretrained"`` for timm,
            or None for random initialisation.
    """

    source: str
    name: str
    weights: str | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.name}" + (f":{self.weights}" if self.weights else "")


def split_spec(text: str) -> ArchSpec | None:
    """Parse the syntax of a spec; no check that the model exists.

    Args:
        text: ``"torchvision:NAME[:WEIGHTS]"`` or ``"timm:NAME[:pretrained]"`` (the prefix is case-insensitive).

    Returns:
        The spec, or None when ``text`` does not start with a known source prefix.

    Raises:
        CheckpointError: The prefix is known but the rest is malformed.
    """
    prefix, sep, rest = text.partition(":")
    source = prefix.strip().lower()
    if not sep or source not in SOURCES:
        return None
    rest = rest.strip()
    if source == "torchvision":
        name, _, weights = rest.partition(":")
        if ":" in weights:
            raise CheckpointError(f"Malformed spec {text!r}: too many ':' parts. {SPEC_HELP}")
    else:
        head, sep2, last = rest.rpartition(":")
        name, weights = (head, "pretrained") if sep2 and last.lower() == "pretrained" else (rest, "")
        if ":" in name and not name.lower().startswith(("hf-hub:", "hf_hub:")):
            raise CheckpointError(f"Malformed spec {text!r}: timm specs take only ':pretrained' after the name.")
    if not name:
        raise CheckpointError(f"Spec {text!r} names no model. {SPEC_HELP}")
    return ArchSpec(source, name, weights or None)


def _did_you_mean(name: str, choices: list[str]) -> str:
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=5, cutoff=0.6)
    return f" Did you mean: {', '.join(lowered[c] for c in close)}?" if close else ""


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as exc:
        raise CheckpointError(TIMM_MISSING) from exc
    return timm


def resolve_spec(text: str) -> ArchSpec:
    """Parse a spec and check that its model (and weights name) exist, with close-match suggestions.

    Raises:
        CheckpointError: Not a spec, unknown model or weights name, or timm missing for a timm spec.
    """
    spec = split_spec(text)
    if spec is None:
        raise CheckpointError(f"{text!r} is not an architecture spec. {SPEC_HELP}")
    if spec.source == "torchvision":
        import torchvision.models as tvm

        names = tvm.list_models()
        if spec.name not in names:
            raise CheckpointError(
                f"Unknown torchvision model {spec.name!r}.{_did_you_mean(spec.name, names)} "
                "List them with `python -c 'import torchvision; print(torchvision.models.list_models())'`."
            )
        if spec.weights is not None:
            enum_cls = tvm.get_model_weights(spec.name)
            member = spec.weights.removeprefix(enum_cls.__name__ + ".")
            members = list(enum_cls.__members__)
            if member not in members:
                raise CheckpointError(
                    f"Unknown weights {spec.weights!r} for torchvision:{spec.name}."
                    f"{_did_you_mean(member, members)} Available: {', '.join(members)}."
                )
            spec = ArchSpec(spec.source, spec.name, member)
        return spec
    timm = _import_timm()
    if not spec.name.lower().startswith(("hf-hub:", "hf_hub:")) and not timm.is_model(spec.name):
        raise CheckpointError(
            f"Unknown timm model {spec.name!r}.{_did_you_mean(spec.name.split('.')[0], timm.list_models())} "
            "List them with `python -c 'import timm; print(timm.list_models())'`."
        )
    return spec


def build(spec: ArchSpec, kwargs: Mapping[str, Any], *, download: bool = True) -> nn.Module:
    """Build the model a resolved spec names.

    Args:
        spec: A spec checked by :func:`resolve_spec`.
        kwargs: Extra builder arguments (``num_classes``, ``aux_logits`` ...).
        download: Fetch the spec's weights. False builds the bare architecture (for a state dict to fill).

    Returns:
        The model, on the current default device, in the training mode its builder leaves.

    Raises:
        CheckpointError: The builder rejects the arguments, or the weights cannot be fetched.
    """
    kw = dict(kwargs)
    weights = spec.weights if download else None
    try:
        if spec.source == "torchvision":
            import torchvision.models as tvm

            if spec.name in AUX_BUILDERS and weights is None:
                kw.setdefault("init_weights", True)
            return tvm.get_model(spec.name, weights=weights, **kw)
        timm = _import_timm()
        return timm.create_model(spec.name, pretrained=weights is not None, **kw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"Cannot build {spec} with arguments {kw}: {exc}") from exc
    except OSError as exc:
        if weights is None:
            raise
        raise CheckpointError(
            f"Cannot fetch the weights of {spec} ({type(exc).__name__}: {exc}). They are downloaded on first use: "
            "connect to the network once, copy them into the torch hub / Hugging Face cache, or load a local "
            "checkpoint with --arch instead."
        ) from exc
