"""Friendly layer names per architecture: plain data, keyed by the model's class (``module.QualName``).

``ALIASES[cls][alias] = canonical module path``. A name that really exists in a model always wins over an alias, so
``mixed4d`` means the module ``mixed4d`` on torch-lucent's InceptionV1 and ``inception4d`` on torchvision's GoogLeNet.

``NATURAL_LAYERS[cls]`` is the layer list used when the user names none (the study's 12 blocks for GoogLeNet).
"""

from __future__ import annotations

__all__ = ["ALIASES", "LAYOUTS", "NATURAL_LAYERS", "arch_key"]

# Lucid / Lucent InceptionV1 names (Gonthier et al. analyse these 12 post-ReLU block outputs) → torchvision GoogLeNet.
_LUCID_TO_TORCHVISION_GOOGLENET = {
    "conv2d0": "conv1",
    "conv2d1": "conv2",
    "conv2d2": "conv3",
    "mixed3a": "inception3a",
    "mixed3b": "inception3b",
    "mixed4a": "inception4a",
    "mixed4b": "inception4b",
    "mixed4c": "inception4c",
    "mixed4d": "inception4d",
    "mixed4e": "inception4e",
    "mixed5a": "inception5a",
    "mixed5b": "inception5b",
}

ALIASES: dict[str, dict[str, str]] = {
    "torchvision.models.googlenet.GoogLeNet": _LUCID_TO_TORCHVISION_GOOGLENET,
}

NATURAL_LAYERS: dict[str, list[str]] = {
    "torchvision.models.googlenet.GoogLeNet": list(_LUCID_TO_TORCHVISION_GOOGLENET.values()),
    "torchvision.models.resnet.ResNet": ["conv1", "layer1", "layer2", "layer3", "layer4"],
    "torchvision.models.inception.Inception3": [
        "Conv2d_1a_3x3", "Conv2d_2b_3x3", "Conv2d_4a_3x3", "Mixed_5b", "Mixed_5c", "Mixed_5d",
        "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
    ],
}

# Layers whose outputs are channels-last (N, H, W, C): the views move the channel axis first.
# Patterns use the layer-glob rule (``*`` within one path component, ``**`` across them) and are tried in order; the
# first match wins, ``"auto"`` keeps the default rule. Whatever the table says, a convolution, batch norm or pooling
# module is channels-first and an ``nn.Linear`` channels-last (see :func:`ftprobe.core.layers.module_layout`), so the
# patch-embedding convolution inside a channels-last stage keeps its (N, C, H, W) reading.
_NHWC_STAGES = {
    "layers.*.blocks.*.attn.**": "auto",  # window attention: (windows, heads, tokens, tokens), not per image
    "patch_embed": "nhwc", "patch_embed.**": "nhwc", "layers": "nhwc", "layers.**": "nhwc", "norm": "nhwc",
}
_HF_CONVNEXT_BLOCK = {"**.layers.*.layernorm": "nhwc", "**.layers.*.act": "nhwc", "**.layers.*.grn": "nhwc"}
LAYOUTS: dict[str, dict[str, str]] = {
    # torchvision swin_t/s/b and swin_v2_t/s/b: features.0 = Conv2d, Permute to NHWC, LayerNorm; `permute` goes back.
    "torchvision.models.swin_transformer.SwinTransformer": {"features": "nhwc", "features.**": "nhwc", "norm": "nhwc"},
    # torchvision maxvit_t: between partition and departition, window/grid attention works on (N, P, T, C).
    "torchvision.models.maxvit.MaxVit": {
        "blocks.*.layers.*.layers.*.departition_op": "auto", "blocks.*.layers.*.layers.*_attention.**": "nhwc",
    },
    # timm Swin / SwinV2 (output_fmt "NHWC"): patch embedding, stages and final norm are channels-last.
    "timm.models.swin_transformer.SwinTransformer": _NHWC_STAGES,
    "timm.models.swin_transformer_v2.SwinTransformerV2": _NHWC_STAGES,
    # timm SwinV2-CR: stages return (N, C, H, W), but their patch merging and blocks work channels-last.
    "timm.models.swin_transformer_v2_cr.SwinTransformerV2Cr": {
        "patch_embed.norm": "nhwc", "stages.*.downsample": "nhwc", "stages.*.downsample.**": "nhwc",
        "stages.*.blocks.**": "nhwc",
    },
    # timm MambaOut: the stem's activation sits between its two convolutions (channels-first); the rest is NHWC.
    "timm.models.mambaout.MambaOut": {
        "stem.act": "auto", "stem": "nhwc", "stem.**": "nhwc", "stages": "nhwc", "stages.**": "nhwc",
    },
    "timm.models.sequencer.Sequencer2d": {
        "stem": "nhwc", "stem.**": "nhwc", "stages": "nhwc", "stages.**": "nhwc", "norm": "nhwc",
    },
    # transformers ConvNeXt (V2): inside each block, between the permutes around the depthwise convolution, the
    # layer norm, activation (and V2's GRN) work channels-last; the block and stage outputs are channels-first.
    **{f"transformers.models.{mod}.{cls}": _HF_CONVNEXT_BLOCK for mod, cls in (
        ("convnext.modeling_convnext", "ConvNextForImageClassification"),
        ("convnext.modeling_convnext", "ConvNextModel"),
        ("convnextv2.modeling_convnextv2", "ConvNextV2ForImageClassification"),
        ("convnextv2.modeling_convnextv2", "ConvNextV2Model"),
    )},
}


def arch_key(model: object) -> str:
    """The key of a model's class in these tables, e.g. ``torchvision.models.googlenet.GoogLeNet``."""
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"
