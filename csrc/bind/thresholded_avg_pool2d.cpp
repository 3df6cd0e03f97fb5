// camfast._C entry points of camfast::thresholded_avg_pool2d (csrc/thresholded_avg_pool2d.h),
// launched by camfast/ops/native/thresholded_avg_pool2d.py. x [B, C, H, W] strided; pooled,
// tau, count, grad_out [B, C] contiguous; grad_x [B, C, H, W] strided.
#include "bind/bind.h"
#include "thresholded_avg_pool2d.h"

namespace camfast::bind {
namespace {

TapProblem problem(const Sizes4& s, const Sizes4& sx, double theta) {
  check_sizes(s);
  require(theta >= 0.0 && theta <= 1.0, "camfast._C: theta must be in [0, 1], got " + std::to_string(theta));
  return TapProblem{s[0], s[1], s[2], s[3], view(sx, "x"), theta};
}

void forward(int device, int device_index, int dtype, Sizes4 sizes, uintptr_t x, Sizes4 sx, double theta,
             uintptr_t pooled, uintptr_t tau, uintptr_t count, uintptr_t stream) {
  const Target t = target(device, device_index, dtype, stream);
  const TapProblem p = problem(sizes, sx, theta);
  const void* X = data(x, "x");
  void* P = data(pooled, "pooled");
  void* T = data(tau, "tau");
  void* N = data(count, "count");
  run(t, [&] { thresholded_avg_pool2d_forward_cpu(t.dtype, p, X, P, T, N); },
      [&](auto dev, auto s) { thresholded_avg_pool2d_forward_cuda(t.dtype, p, X, P, T, N, dev, s); });
}

void backward(int device, int device_index, int dtype, Sizes4 sizes, uintptr_t x, Sizes4 sx, uintptr_t tau,
              uintptr_t count, uintptr_t grad_out, uintptr_t grad_x, Sizes4 sdx, uintptr_t stream) {
  const Target t = target(device, device_index, dtype, stream);
  const TapProblem p = problem(sizes, sx, 0.0);
  const View4 vdx = view(sdx, "grad_x");
  const void* X = data(x, "x");
  const void* T = data(tau, "tau");
  const void* N = data(count, "count");
  const void* GO = data(grad_out, "grad_out");
  void* DX = data(grad_x, "grad_x");
  run(t, [&] { thresholded_avg_pool2d_backward_cpu(t.dtype, p, X, T, N, GO, DX, vdx); },
      [&](auto dev, auto s) { thresholded_avg_pool2d_backward_cuda(t.dtype, p, X, T, N, GO, DX, vdx, dev, s); });
}

}  // namespace

void register_thresholded_avg_pool2d(py::module_& m) {
  m.def("thresholded_avg_pool2d_forward", &forward, py::arg("device"), py::arg("device_index"), py::arg("dtype"),
        py::arg("sizes"), py::arg("x"), py::arg("x_strides"), py::arg("theta"), py::arg("pooled"), py::arg("tau"),
        py::arg("count"), py::arg("stream"));
  m.def("thresholded_avg_pool2d_backward", &backward, py::arg("device"), py::arg("device_index"), py::arg("dtype"),
        py::arg("sizes"), py::arg("x"), py::arg("x_strides"), py::arg("tau"), py::arg("count"), py::arg("grad_out"),
        py::arg("grad_x"), py::arg("grad_x_strides"), py::arg("stream"));
}

}  // namespace camfast::bind
