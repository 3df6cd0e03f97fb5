// camfast::upsample_aggregate: Zoom-CAM's fusion of L per-layer maps into one map.
//
//   N_l = (M_l - min_hw M_l) / (max_hw M_l - min_hw M_l + eps)   (minmax; 0 if max == min)
//   U_l = bilinear upsampling of N_l to (H, W), align_corners=False (torch's source index
//         src = max((dst + 0.5) * in / out - 0.5, 0), i1 = i0 + (i0 < in - 1))
//   out = max_l U_l | sum_l U_l / L | sum_l weight_l U_l
//
// Shapes: maps M_l [B, h_l, w_l] with arbitrary element strides; out and dout [B, H, W]
// contiguous; the gradients dM_l [B, h_l, w_l] with their own strides.
// Backward: dout goes to the first layer attaining the max (max), or to every layer times
// 1/L (mean) or weight_l (sum); then through the transpose of the bilinear weights; then
// through the normalisation (dL/dmin and dL/dmax shared evenly among tied pixels, as
// autograd does for amin/amax; zero for a constant map).
#pragma once

#include "common.h"

namespace camfast {

// UaReduce (Max, Mean, Sum), UaNormalize (MinMax, None), kUaEps (the min-max epsilon) and
// kUaMaxLayers: camfast/ops/codes.json.

// One layer: its map [B, h, w] (element strides sb, sh, sw) and, for the backward, the
// gradient to write (strides gsb, gsh, gsw). weight: its coefficient with reduce=Sum.
struct UaLayer {
  const void* data;
  int64_t h, w;
  int64_t sb, sh, sw;
  double weight;
  void* grad;
  int64_t gsb, gsh, gsw;
};

struct UaProblem {
  int64_t B, H, W, L;
  UaReduce reduce;
  UaNormalize normalize;
};

// Workspace sizes, in elements of the accumulator type (float; double for Float64):
//   forward : 2 * B * L                       (per-(b, layer) min and max)
//   backward: 4 * B * L                       (min, max and their tie counts)
//             + B * sum_l h_l * w_l on CUDA   (dL/dN_l, scatter-added with atomics)
void upsample_aggregate_forward_cpu(DType dtype, const UaProblem& p, const UaLayer* layers, void* out,
                                    void* workspace);

void upsample_aggregate_backward_cpu(DType dtype, const UaProblem& p, const UaLayer* layers,
                                     const void* grad_out, void* workspace);

// CUDA (csrc/cuda/upsample_aggregate_cuda.cu; defined in CUDA builds only, and called only through
// bind::run, which never instantiates a CUDA call in a build without CUDA).
void upsample_aggregate_forward_cuda(DType dtype, const UaProblem& p, const UaLayer* layers, void* out,
                                     void* workspace, int device, void* stream);

void upsample_aggregate_backward_cuda(DType dtype, const UaProblem& p, const UaLayer* layers,
                                      const void* grad_out, void* workspace, int device, void* stream);

}  // namespace camfast
