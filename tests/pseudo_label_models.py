"""Small seeded classifiers for the ``camfast pseudo-label`` tests, loadable by
``camfast.models.load_model`` as ``pseudo_label_models:<name>`` (tests/ on the path)."""

from __future__ import annotations

import torch

from camfast.models import ModelSpec, Normalize
from models import seeded, vgg_like

CLASS_NAMES = ["cat", "dog", "car", "tree", "sky"]


def tiny() -> ModelSpec:
    """A VGG-shaped CNN, 5 classes, fixed weights (seed 0), no input size (the CLI uses 224
    unless --size is given)."""
    return ModelSpec(seeded(vgg_like), Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)), None, list(CLASS_NAMES),
                     "tiny-vgg")


def tiny_module() -> torch.nn.Module:
    """The same network as a bare module (ImageNet preprocessing, no class names)."""
    return seeded(vgg_like)
