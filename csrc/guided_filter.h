// camfast::guided_filter (He, Sun, Tang 2013), fused: guide I [B, G, H, W] (G = 1 or 3),
// src p [B, C, H, W]. All means are box filters of radius r (box_filter.h; border Truncate
// or Reflect). Per pixel, with mu = mean(I), Sigma = mean(I I^T) - mu mu^T:
//   a_c = (Sigma + eps Id)^-1 (mean(I p_c) - mu mean(p_c)),  b_c = mean(p_c) - a_c^T mu
//   q_c = mean(a_c)^T I + mean(b_c)
// The 3x3 system is solved per pixel in closed form (adjugate / determinant, double) as the
// vertical box sums of a row complete: no per-pixel matrix is stored. The CPU kernel streams
// each (image, row stripe) through rings of 2r+2 rows (the horizontal box sums of the
// K = G(G+3)/2 + (G+1) C products, then of the (G+1) C coefficients, in the accumulator
// type): no image-sized buffer, O(1) per pixel whatever the radius.
//
// adjoint=true (Truncate only) computes q = N * GF(I, p / N), with N the per-pixel window
// count: the guided filter's matrix is W_ij = (1/N_i) sum_k (1/N_k) K_k(i,j) with K_k
// symmetric, so W^T g = N * W (g / N): the gradient with respect to src.
// coeffs_out=true writes mean(a_c) (G values) then mean(b_c) per channel c into out, shape
// [B, (G+1) C, H, W] (used by the subsampled variant, which upsamples them).
#pragma once

#include "box_filter.h"
#include "common.h"

namespace camfast {

struct GfProblem {
  int64_t B, G, C, H, W, r;
  double eps;
  BoxBorder border;
  bool adjoint;
  bool coeffs_out;
};

void guided_filter_cpu(DType dtype, const GfProblem& p, const void* guide, View4 sg, const void* src, View4 ss,
                       void* out, View4 so);

}  // namespace camfast
