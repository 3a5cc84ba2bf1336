"""Tools for testing ftprobe and metric plugins: tiny seeded models and data."""

from .models import ReuseNet, TinyNet, make_image_folder, perturbed_copy

__all__ = ["ReuseNet", "TinyNet", "make_image_folder", "perturbed_copy"]
