// CUDA helpers shared by camfast's kernels: device scalar types and their loads/stores
// (half and bfloat16 converted to float), launch checks and a device guard.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "common.h"

namespace camfast {
namespace cuda_detail {

template <typename T> struct DevType;
template <> struct DevType<float> { using type = float; };
template <> struct DevType<double> { using type = double; };
template <> struct DevType<half_t> { using type = __half; };
template <> struct DevType<bf16_t> { using type = __nv_bfloat16; };

template <typename T> struct AccT { using type = float; };
template <> struct AccT<double> { using type = double; };

__device__ __forceinline__ float ld(const float* p) { return __ldg(p); }
__device__ __forceinline__ double ld(const double* p) { return __ldg(p); }
__device__ __forceinline__ float ld(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float ld(const __nv_bfloat16* p) { return __bfloat162float(*p); }

template <typename T> __device__ __forceinline__ T st(float x);
template <> __device__ __forceinline__ float st<float>(float x) { return x; }
template <> __device__ __forceinline__ __half st<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 st<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename T, typename A> __device__ __forceinline__ T store(A x) { return st<T>(x); }
template <> __device__ __forceinline__ double store<double, double>(double x) { return x; }

// Throws "camfast CUDA <what>: <cudaGetErrorString>" unless err is cudaSuccess; clears the
// runtime's last-error state first, so a later check_launch does not report this error again.
inline void check_cuda(cudaError_t err, const std::string& what) {
  if (err == cudaSuccess) return;
  cudaGetLastError();
  throw std::runtime_error("camfast CUDA " + what + ": " + cudaGetErrorString(err));
}

inline void check_launch(const char* what) { check_cuda(cudaGetLastError(), what); }

// Makes `device` current for the scope of a launch and restores the previous device after.
// Every runtime error is reported with its reason (a CUDA runtime the driver cannot serve
// fails here first: "cudaGetDevice: CUDA driver version is insufficient ...").
struct DeviceGuard {
  int prev = -1;
  bool switched = false;
  explicit DeviceGuard(int device) {
    check_cuda(cudaGetDevice(&prev), "cudaGetDevice");
    if (prev != device) {
      check_cuda(cudaSetDevice(device), "cannot select device " + std::to_string(device));
      switched = true;
    }
  }
  ~DeviceGuard() {  // cannot throw: restoring is best effort, and its error is cleared
    if (switched && cudaSetDevice(prev) != cudaSuccess) cudaGetLastError();
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};

}  // namespace cuda_detail
}  // namespace camfast
