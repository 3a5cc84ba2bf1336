"""Feature visualisation: what a channel responds to, before and after fine-tuning (PAPER.md, "Visualisation").

- :func:`visualize_channels` / :func:`visualize`: Lucid's activation maximisation (Fourier parameterisation with
  colour decorrelation, ``standard_transforms``, Adam lr 0.05) for chosen channels of one layer, in each model's own
  preprocessing; returns :class:`FeatureVis` (tensors, ``to_pil()``).
- :func:`pick_most_changed` (per-filter ``r_c``) and :func:`pick_overlap_extremes` (a ``results.json``): the channels
  the study rendered.
- :func:`feature_grid` / :func:`save_feature_grid`: the grid (a row per model, a column per channel), and
  :func:`visualization_section` for the HTML report.
"""

from __future__ import annotations

from .featvis import (
    ChannelVisualizer,
    FeatureVis,
    channel_count,
    layer_scores,
    resolve_layer,
    visualize,
    visualize_channels,
)
from .grid import feature_grid, make_grid, save_feature_grid, visualization_section
from .param import FourierImage, color_correlation, rfft2d_freqs, to_valid_rgb
from .pick import Pick, filter_change, pick_most_changed, pick_overlap_extremes
from .transforms import Compose, Jitter, Pad, RandomRotate, RandomScale, standard_transforms

__all__ = [
    "ChannelVisualizer",
    "Compose",
    "FeatureVis",
    "FourierImage",
    "Jitter",
    "Pad",
    "Pick",
    "RandomRotate",
    "RandomScale",
    "channel_count",
    "color_correlation",
    "feature_grid",
    "filter_change",
    "layer_scores",
    "make_grid",
    "pick_most_changed",
    "pick_overlap_extremes",
    "resolve_layer",
    "rfft2d_freqs",
    "save_feature_grid",
    "standard_transforms",
    "to_valid_rgb",
    "visualization_section",
    "visualize",
    "visualize_channels",
]
