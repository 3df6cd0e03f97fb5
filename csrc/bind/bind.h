// What every entry point of camfast._C shares (csrc/bind/<op>.cpp): the raw arguments
// checked (codes against the table generated from camfast/ops/codes.json, sizes, strides,
// pointers), the GIL released, and the CPU or the CUDA kernel run. Entry points take sizes,
// element strides and raw data pointers (integers from torch.Tensor.data_ptr()); a bad
// argument raises ValueError (std::invalid_argument, translated in module.cpp), a CUDA
// failure RuntimeError.
//
// An op's bind file converts its arguments with these helpers and launches with
//   run(target(device, device_index, dtype, stream),
//       [&] { my_op_cpu(...); },
//       [&](auto device, auto stream) { my_op_cuda(..., device, stream); });
// The CUDA callable must be generic (auto parameters): a build without CUDA never
// instantiates it, so it may name a *_cuda function that such a build does not define.
// This header is the only place that knows whether CUDA was built.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <string>
#include <utility>

#include "common.h"

namespace camfast::bind {

namespace py = pybind11;

using Sizes2 = std::array<int64_t, 2>;
using Sizes3 = std::array<int64_t, 3>;
using Sizes4 = std::array<int64_t, 4>;
using Sizes5 = std::array<int64_t, 5>;

// Whether this build has CUDA kernels, and (probed once) why they cannot run here: "" when
// they can. cuda_usable() = built and no problem.
bool cuda_built();
std::string cuda_problem();
bool cuda_usable();

// "camfast._C: unknown <arg> code <value>: <arg> must be 0 (<name>), 1 (<name>) or ..."
[[noreturn]] void throw_unknown_code(const char* arg, int value, const char* const* names, int size);

// A raw code as its enum; the range comes from the table (CodeTable<E>::kSize).
template <class E> E code(int value) {
  using Table = CodeTable<E>;
  if (value < 0 || value >= Table::kSize) throw_unknown_code(Table::kArg, value, Table::kNames, Table::kSize);
  return static_cast<E>(value);
}

// Where and on what a launch runs: the checked device, dtype and stream arguments.
struct Target {
  Device device;
  int index;
  DType dtype;
  void* stream;
};
Target target(int device, int device_index, int dtype, uintptr_t stream);

// Every size positive ("in <where>" names a sub-argument such as maps[2]).
void check_sizes(const int64_t* sizes, size_t n, const std::string& where);
template <size_t N> void check_sizes(const std::array<int64_t, N>& sizes, const std::string& where = "") {
  check_sizes(sizes.data(), N, where);
}

// Every stride non-negative.
void check_strides(const int64_t* strides, size_t n, const std::string& name);
template <size_t N> void check_strides(const std::array<int64_t, N>& strides, const std::string& name) {
  check_strides(strides.data(), N, name);
}

// Checked [B, C, H, W] element strides as a View4.
View4 view(const Sizes4& strides, const std::string& name);

// A non-null data pointer.
void* data(uintptr_t ptr, const std::string& name);

// Runs the kernel of t.device with the GIL released: cpu(), or cuda(device index, stream).
template <class Cpu, class Cuda> void run(const Target& t, Cpu&& cpu, Cuda&& cuda) {
  py::gil_scoped_release release;
  if (t.device == Device::CPU) {
    std::forward<Cpu>(cpu)();
    return;
  }
#ifdef CAMFAST_WITH_CUDA
  std::forward<Cuda>(cuda)(t.index, t.stream);
#else
  (void)cuda;  // unreachable: target() refuses Device::CUDA in a build without CUDA
#endif
}

// An op with CPU kernels only (`op` names it in the error for any other device).
template <class Cpu> void run_cpu(const Target& t, const char* op, Cpu&& cpu) {
  require(t.device == Device::CPU, std::string("camfast._C: ") + op + " has CPU kernels only");
  run(t, std::forward<Cpu>(cpu), [](auto, auto) {});
}

}  // namespace camfast::bind
