// The CUDA runtime probe behind camfast._C.has_cuda() (csrc/cuda/runtime_probe.h).
#include <cuda_runtime.h>

#include <string>

#include "cuda/runtime_probe.h"

namespace camfast {
namespace {

std::string version(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

std::string probe() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err == cudaSuccess && count > 0) return "";
  std::string why = err == cudaSuccess ? std::string("no CUDA device is visible")
                                       : std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err);
  cudaGetLastError();  // clear it: the probe's error is not a later launch's
  int driver = 0;
  cudaDriverGetVersion(&driver);
  why += " (camfast._C links the CUDA " + version(CUDART_VERSION) + " runtime; " +
         (driver > 0 ? "the driver supports CUDA " + version(driver) : std::string("no CUDA driver is loaded")) +
         "; build camfast with the CUDA toolkit that matches torch.version.cuda)";
  return why;
}

}  // namespace

const std::string& cuda_runtime_problem() {
  static const std::string problem = probe();  // thread-safe, once per process
  return problem;
}

}  // namespace camfast
