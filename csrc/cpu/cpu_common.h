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

}  // namespace cpu_detail
}  // namespace camfast
