// CPU helpers shared by camfast's kernels.
#pragma once

#ifdef _OPENMP
#include <omp.h>
#endif

#include "common.h"

namespace camfast {
namespace cpu_detail {

inline int num_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

template <typename T> using Acc = typename acc_type<T>::type;

// Pixel stride of a view whose (h, w) axes collapse into one run, or -1.
inline int64_t flat_pixel_stride(const View4& v, int64_t H, int64_t W) {
  if (H * W <= 1) return 1;
  if (W == 1) return v.sh;
  if (H == 1) return v.sw;
  return v.sh == v.sw * W ? v.sw : -1;
}

}  // namespace cpu_detail
}  // namespace camfast
