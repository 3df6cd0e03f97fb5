// camfast::thresholded_avg_pool2d: thresholded average pooling (TAP, Bae et al. ECCV 2020).
//
//   tau_k = theta * max_hw f_k;  keep = f_k > tau_k;  N_k = max(count(keep), 1)
//   pooled_k = sum_hw(f_k * keep) / N_k        (NaN when max_hw f_k is not finite)
//   backward: dx = dy_k * [x > tau_k] / N_k
//
// Shapes: x [B, C, H, W] with arbitrary element strides; pooled [B, C] contiguous in x's
// dtype; tau and count [B, C] contiguous in the accumulator type (float; double for
// Float64); dy [B, C] contiguous; dx [B, C, H, W] with its own strides.
#pragma once

#include "common.h"

namespace camfast {

struct TapProblem {
  int64_t B, C, H, W;
  View4 x;
  double theta;
};

void thresholded_avg_pool2d_forward_cpu(DType dtype, const TapProblem& p, const void* x, void* pooled,
                                        void* tau, void* count);

void thresholded_avg_pool2d_backward_cpu(DType dtype, const TapProblem& p, const void* x, const void* tau,
                                         const void* count, const void* grad_out, void* grad_x, View4 dx);

// CUDA (csrc/cuda/thresholded_avg_pool2d_cuda.cu; defined in CUDA builds only, and called only through
// bind::run, which never instantiates a CUDA call in a build without CUDA).
void thresholded_avg_pool2d_forward_cuda(DType dtype, const TapProblem& p, const void* x, void* pooled,
                                         void* tau, void* count, int device, void* stream);

void thresholded_avg_pool2d_backward_cuda(DType dtype, const TapProblem& p, const void* x, const void* tau,
                                          const void* count, const void* grad_out, void* grad_x, View4 dx,
                                          int device, void* stream);

}  // namespace camfast
