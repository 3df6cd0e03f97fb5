"""EigenCAM (Muhammad & Yeasin, IJCNN 2020) and EigenGradCAM (METHODS.md "More per-layer
weightings"): a layer's map is the projection of its activations (or of gradient times
activation) on their first principal component, batched over the images on their device.

:func:`eigen_projection` is also what :mod:`camfast.compat`'s ``eigen_smooth`` applies to any
method's per-channel terms (pytorch-grad-cam's ``get_2d_projection``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from camfast.methods.detection import is_detections
from camfast.methods.engine import WeightingRule, assemble_cam, check_input, detach_output, layer_activations, \
    result_size, target_classes
from camfast.methods.gradcam import check_layer_choice, single_layer_cam
from camfast.methods.layers import default_layer, resolve_layers
from camfast.methods.registry import register
from camfast.methods.targets import ClassSets
from camfast.methods.zoomcam import zoom_terms


def eigen_projection(terms: Tensor) -> Tensor:
    """The first-principal-component projection of each image's ``(B, C, h, w)`` terms.

    Per image: NaN -> 0; ``X = terms`` as ``(hw, C)``, centred over ``hw`` (each channel's
    mean subtracted); ``M = X v1`` with ``v1`` the first right singular vector of ``X`` (the
    whole batch in one SVD call, no Python loop). The sign is the SVD's, as in
    pytorch-grad-cam (no sign correction). ``(B, C, h, w) -> (B, h, w)``, float32 (float64
    for float64 terms).

    A singular vector's sign is whatever the LAPACK routine returns, and it is not stable:
    torch's (MKL) and numpy's (OpenBLAS, which pytorch-grad-cam uses) returned opposite signs
    for about 40% of the ReLU-like matrices we tried, and numpy's own sign flipped between two
    float32 inputs 3e-7 apart (relative; one of them computed by torch, the other by numpy).
    So on the CPU, and when no gradient is needed, the centring, SVD and projection run in
    numpy with pytorch-grad-cam's operations (its ``get_2d_projection``, over the stacked
    batch; ``full_matrices=False`` gives the same vectors): for the same input bits, the same
    map. On other devices, and when ``terms`` needs a gradient (``create_graph=True``),
    ``torch.linalg.svd`` runs batched on ``terms``' device: the same maps up to each image's
    sign.
    """
    B, C, h, w = terms.shape
    t = terms if terms.dtype == torch.float64 else terms.float()
    if t.device.type == "cpu" and not t.requires_grad:
        import numpy as np

        a = t.detach().numpy().reshape(B, C, h * w)  # a view; np.where below copies
        a = np.where(np.isnan(a), np.zeros((), a.dtype), a)
        X = a.transpose(0, 2, 1)  # (B, hw, C), as pytorch-grad-cam's per-image transpose
        X = X - X.mean(axis=1, keepdims=True)
        vh = np.linalg.svd(X, full_matrices=False)[2]
        return torch.from_numpy(np.ascontiguousarray((X @ vh[:, 0, :, None])[..., 0].reshape(B, h, w)))
    t = torch.where(torch.isnan(t), torch.zeros_like(t), t)
    X = t.reshape(B, C, h * w).transpose(1, 2)  # (B, hw, C)
    X = X - X.mean(dim=1, keepdim=True)
    v1 = torch.linalg.svd(X, full_matrices=False).Vh[:, 0]  # (B, C)
    return (X @ v1[:, :, None]).reshape(B, h, w)


@register("eigen-cam", display="EigenCAM", kind="forward-only", compat="EigenCAM",
          summary="projection of the activations on their first principal component, no gradient "
                  "(Muhammad & Yeasin 2020)")
def eigen_cam(model, x, target=None, layer=None, output_size=None, *, return_layers=False, reshape_transform=None,
              output_fn=None):
    """EigenCAM: ``M = ReLU(X v1)`` with ``X`` the layer's activations as ``(hw, C)``, centred,
    and ``v1`` their first right singular vector (:func:`eigen_projection`).

    One forward in ``torch.no_grad`` and no backward; the map does not depend on the class, so
    ``target`` only sets the classes reported (and, for several classes per image, how many
    copies of the map). ``layer`` defaults to the deepest of ``camfast.find_layers(model)``; a
    list of layers gives their maps fused by max. Other arguments and the result as for
    :func:`camfast.grad_cam`.

    Example:
        >>> cams = camfast.eigen_cam(model.eval(), images)  # (B, H, W)
    """
    x = check_input(x)
    size = result_size(x, output_size)
    check_layer_choice(layer)
    chosen = resolve_layers(model, default_layer(model) if layer is None else layer, "layer")
    acts, logits = layer_activations(model, x, chosen, reshape_transform, output_fn, detections=True)
    maps = [eigen_projection(a).clamp_min(0) for a in acts]
    names = [name for name, _ in chosen]
    if is_detections(logits):  # a detector: one map per image (it depends on no box or class)
        return assemble_cam(names, maps, detach_output(logits), None, size, "max", return_layers)
    idx = target_classes(logits, target, model)
    if isinstance(idx, ClassSets):  # the same map for every class of an image
        maps = [m.expand(idx.rounds.shape[0], *m.shape) for m in maps]
    return assemble_cam(names, maps, logits, idx, size, "max", return_layers)


def eigengradcam_weights(activation: Tensor, gradient: Tensor) -> Tensor:
    """EigenGradCAM's map ``M = ReLU(X v1)``: :func:`eigen_projection` of ``G * A``.
    ``(B, C, h, w) -> (B, h, w)``."""
    return eigen_projection(zoom_terms(activation, gradient)).clamp_min(0)


RULE = WeightingRule(eigengradcam_weights, channel_terms=zoom_terms)


@register("eigen-grad-cam", display="EigenGradCAM", kind="gradient", rule=RULE, compat="EigenGradCAM",
          summary="projection of gradient x activation on its first principal component, one layer")
def eigen_grad_cam(model, x, target=None, layer=None, output_size=None, *, return_layers=False,
                   reshape_transform=None, output_fn=None, create_graph=False):
    """EigenGradCAM: EigenCAM's projection of ``G * A`` (:func:`eigengradcam_weights`) on one
    layer, or on a list of layers fused by max. Arguments and result as for :func:`camfast.grad_cam`."""
    return single_layer_cam(model, x, target, layer, RULE, output_size, return_layers, reshape_transform, output_fn,
                            create_graph)
