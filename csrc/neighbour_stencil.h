// camfast::neighbour_stencil: out = a * x + w * (K x) + c, elementwise, with K the binomial
// 3x3 window cut at the image border:
//
//   (K x)[b,c,i,j] = sum_{|di|,|dj| <= 1, inside} k[di] k[dj] x[b,c,i+di,j+dj],  k = (1, 2, 1).
//
// The fused step of ROAD's noisy linear imputation (camfast/evaluation/faithfulness.py): its
// operator, residual and damped Jacobi sweep are this op with other coefficients. Computed in
// the accumulator type (float; double for double) and stored once. The backward needs no
// kernel of its own: K is symmetric, so dx = a g + K (w g) is this op again
// (camfast/ops/native/neighbour_stencil.py).
#pragma once

#include "common.h"

namespace camfast {

struct StencilProblem {
  int64_t B, C, H, W;
};

// x, a, w, c [B, C, H, W] with any element strides (zero included); out [B, C, H, W]
// contiguous. a or c may be null: that term is absent (skipped, not multiplied by zero, so
// an infinite x stays infinite rather than becoming NaN; the backward relies on it).
void neighbour_stencil_cpu(DType dtype, const StencilProblem& p, const void* x, View4 sx, const void* a, View4 sa,
                           const void* w, View4 sw, const void* c, View4 sc, void* out);

// CUDA (csrc/cuda/neighbour_stencil_cuda.cu; CUDA builds only, called only through bind::run).
void neighbour_stencil_cuda(DType dtype, const StencilProblem& p, const void* x, View4 sx, const void* a, View4 sa,
                            const void* w, View4 sw, const void* c, View4 sc, void* out, int device, void* stream);

}  // namespace camfast
