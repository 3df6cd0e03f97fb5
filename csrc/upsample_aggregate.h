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

// Codes shared with camfast/ops/_spec.py (UA_REDUCES, UA_NORMALIZES).
enum class UaReduce : int { Max = 0, Mean = 1, Sum = 2 };
enum class UaNormalize : int { MinMax = 0, None = 1 };

constexpr double kUaEps = 1e-7;   // camfast/ops/_spec.py: UA_EPS
constexpr int kUaMaxLayers = 64;  // camfast/ops/_spec.py: UA_MAX_LAYERS

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

#ifdef CAMFAST_WITH_CUDA
void upsample_aggregate_forward_cuda(DType dtype, const UaProblem& p, const UaLayer* layers, void* out,
                                     void* workspace, int device, void* stream);

void upsample_aggregate_backward_cuda(DType dtype, const UaProblem& p, const UaLayer* layers,
                                      const void* grad_out, void* workspace, int device, void* stream);
#endif

}  // namespace camfast
