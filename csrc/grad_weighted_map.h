// camfast::grad_weighted_map: per-layer CAM from an activation A and its gradient G.
//
//   zoom      : M = ReLU(sum_c G_c * A_c)                  (Zoom-CAM / HiResCAM)
//   gradcam   : M = ReLU(sum_c mean_hw(G_c) * A_c)         (Grad-CAM)
//   layercam  : M = ReLU(sum_c ReLU(G_c) * A_c)            (LayerCAM)
//   gradcampp : M = ReLU(sum_c w_c * A_c), w_c = sum_hw ReLU(G) a,
//               a = G^2 / (2 G^2 + sum_hw(A_c) G^3 + kGwmGradCamPPEps), 0 where G == 0 (Grad-CAM++)
//   xgradcam  : M = ReLU(sum_c w_c * A_c), w_c = sum_hw(G A) / (sum_hw(A_c) + kGwmXGradCamEps)
//
// Shapes: A, G [B, C, H, W] with arbitrary element strides; M, dM [B, H*W] contiguous.
// Backward: dA = dM' * f(G) (gradcam: dM' * w), dG = dM' * A * f'(G)
// (gradcam: sum_p dM'_p A_p / (H*W), the same for every pixel), where dM' = dM * [M > 0];
// gradcampp and xgradcam: camfast/ops/reference/grad_weighted_map.py gives the formulas.
#pragma once

#include "common.h"

namespace camfast {

struct GwmProblem {
  int64_t B, C, H, W;
  View4 a, g;
};

// workspace: at least kGwmWorkspace*B*C elements of the accumulator type (float, double for Float64).
void grad_weighted_map_forward_cpu(DType dtype, GwmMode mode, const GwmProblem& p,
                                   const void* a, const void* g, void* out, void* workspace);

void grad_weighted_map_backward_cpu(DType dtype, GwmMode mode, const GwmProblem& p,
                                    const void* a, const void* g, const void* out,
                                    const void* grad_out, void* grad_a, View4 da, void* grad_g,
                                    View4 dg, void* workspace);

// CUDA (csrc/cuda/grad_weighted_map_cuda.cu; defined in CUDA builds only, and called only through
// bind::run, which never instantiates a CUDA call in a build without CUDA).
void grad_weighted_map_forward_cuda(DType dtype, GwmMode mode, const GwmProblem& p,
                                    const void* a, const void* g, void* out, void* workspace,
                                    int device, void* stream);

void grad_weighted_map_backward_cuda(DType dtype, GwmMode mode, const GwmProblem& p,
                                     const void* a, const void* g, const void* out,
                                     const void* grad_out, void* grad_a, View4 da, void* grad_g,
                                     View4 dg, void* workspace, int device, void* stream);

}  // namespace camfast
