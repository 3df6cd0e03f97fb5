// The one switch from a dtype code to the scalar type of a kernel's template (float, double,
// half_t, bf16_t): an entry point writes
//   with_dtype(dtype, [&](auto t) { my_kernel<CAMFAST_T(t)>(...); });
// instead of its own four-case switch.
#pragma once

#include <stdexcept>

#include "common.h"

namespace camfast {

template <typename T> struct TypeTag { using type = T; };

// The scalar type carried by a TypeTag argument `t` of the callable.
#define CAMFAST_T(t) typename decltype(t)::type

template <typename F> void with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: return f(TypeTag<float>{});
    case DType::Float64: return f(TypeTag<double>{});
    case DType::Float16: return f(TypeTag<half_t>{});
    case DType::BFloat16: return f(TypeTag<bf16_t>{});
  }
  throw std::invalid_argument("camfast._C: unknown dtype code");
}

}  // namespace camfast
