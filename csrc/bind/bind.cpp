// The shared argument checks of camfast._C's entry points (csrc/bind/bind.h).
#include "bind/bind.h"

#ifdef CAMFAST_WITH_CUDA
#include "cuda/runtime_probe.h"
#endif

namespace camfast::bind {

bool cuda_built() {
#ifdef CAMFAST_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string cuda_problem() {
#ifdef CAMFAST_WITH_CUDA
  return cuda_runtime_problem();
#else
  return "this build has no CUDA kernels (rebuild with CAMFAST_CUDA=ON)";
#endif
}

bool cuda_usable() { return cuda_problem().empty(); }

void throw_unknown_code(const char* arg, int value, const char* const* names, int size) {
  std::string allowed;
  for (int i = 0; i < size; ++i) {
    if (i > 0) allowed += i + 1 == size ? " or " : ", ";
    allowed += std::to_string(i) + " (" + names[i] + ")";
  }
  throw std::invalid_argument(std::string("camfast._C: unknown ") + arg + " code " + std::to_string(value) + ": " +
                              arg + " must be " + allowed);
}

Target target(int device, int device_index, int dtype, uintptr_t stream) {
  const Device d = code<Device>(device);
  if (d == Device::CUDA) {
    require(cuda_built(), "camfast._C: " + cuda_problem());
    require(cuda_usable(), "camfast._C: no usable CUDA here, so no CUDA kernels can run: " + cuda_problem());
    require(device_index >= 0, "camfast._C: negative CUDA device index " + std::to_string(device_index));
  }
  return Target{d, device_index, code<DType>(dtype), reinterpret_cast<void*>(stream)};
}

void check_sizes(const int64_t* sizes, size_t n, const std::string& where) {
  const std::string in = where.empty() ? "" : " in " + where;
  for (size_t i = 0; i < n; ++i)
    require(sizes[i] > 0, "camfast._C: every size must be positive" + in + ", got size[" + std::to_string(i) +
                              "]=" + std::to_string(sizes[i]));
}

void check_strides(const int64_t* strides, size_t n, const std::string& name) {
  for (size_t i = 0; i < n; ++i) require(strides[i] >= 0, "camfast._C: negative stride in " + name);
}

View4 view(const Sizes4& strides, const std::string& name) {
  check_strides(strides, name);
  return View4{strides[0], strides[1], strides[2], strides[3]};
}

void* data(uintptr_t ptr, const std::string& name) {
  require(ptr != 0, "camfast._C: null data pointer for " + name);
  return reinterpret_cast<void*>(ptr);
}

}  // namespace camfast::bind
