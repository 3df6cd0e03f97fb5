"""camfast's ops: each a ``torch.library`` custom op (``camfast::<name>``) with a native,
a Triton and a pure-PyTorch reference backend.

Backend selection: ``use_backend(name)`` (context manager), the ``CAMFAST_BACKEND``
environment variable, else the best available for the tensors' device.
"""

from camfast.ops._backend import BACKENDS, available_backends, requested_backend, use_backend
from camfast.ops.box_filter import box_filter
from camfast.ops.grad_weighted_map import grad_weighted_map
from camfast.ops.guided_filter import guided_filter
from camfast.ops.neighbour_stencil import neighbour_stencil
from camfast.ops.thresholded_avg_pool2d import thresholded_avg_pool2d
from camfast.ops.upsample_aggregate import upsample_aggregate

__all__ = ["BACKENDS", "available_backends", "box_filter", "guided_filter", "grad_weighted_map", "neighbour_stencil",
           "requested_backend", "thresholded_avg_pool2d",
           "upsample_aggregate", "use_backend"]
