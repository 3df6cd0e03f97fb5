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


def wide():
    """A 300-class model (more than a palette holds)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 300))
    return ModelSpec(net, Normalize((0.5,) * 3, (0.25,) * 3), None, None, "wide")
