// camfast::box_filter: the mean over the (2r+1)^2 window around every pixel.
//
//   out[b,c,y,x] = (1 / N(y,x)) * sum_{|i-y| <= r, |j-x| <= r} x[b,c,i,j]
//
// Border Truncate (the op's only border): the window is cut at the image border and N is the
// true pixel count, N(y,x) = nh(y) * nw(x), nh(y) = min(y+r, H-1) - max(y-r, 0) + 1. A radius
// larger than the image is allowed: the windows simply truncate (r >= H-1 and r >= W-1 gives
// the image mean everywhere). Border Reflect (used by guided_filter's border="reflect",
// kornia's convention): the image is mirrored without repeating the edge (torch's "reflect"
// padding, needs r < H and r < W) and N = (2r+1)^2.
//
// Backward (Truncate): the windows are symmetric (y is in x's window iff x is in y's), so the
// adjoint is the unnormalised box sum of grad / N with the same truncated windows:
//   dx[i,j] = sum_{|y-i| <= r, |x-j| <= r} dout[y,x] / N(y,x).
// O(1) per pixel whatever r: a horizontal running sum per row, then a vertical running sum
// per column, both carried in double.
#pragma once

#include "common.h"

namespace camfast {

// BoxBorder (Truncate, Reflect): camfast/ops/codes.json.

struct BoxProblem {
  int64_t B, C, H, W, r;
};

// x, out [B, C, H, W] with any element strides. backward=true computes the adjoint
// (x is then dout and out is dx).
void box_filter_cpu(DType dtype, const BoxProblem& p, bool backward, const void* x, View4 sx, void* out,
                    View4 so);

// CUDA (csrc/cuda/box_filter_cuda.cu; defined in CUDA builds only, and called only through
// bind::run, which never instantiates a CUDA call in a build without CUDA).
void box_filter_cuda(DType dtype, const BoxProblem& p, bool backward, const void* x, View4 sx, void* out,
                     View4 so, void* workspace, int device, void* stream);

}  // namespace camfast
