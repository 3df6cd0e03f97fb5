// camfast._C entry point of camfast::guided_filter (csrc/guided_filter.h; CPU kernels only),
// launched by camfast/ops/native/guided_filter.py. guide [B, G, H, W], src [B, C, H, W] and
// out (C or (G+1)*C channels with coeffs_out) strided; sizes (B, G, C, H, W).
#include "bind/bind.h"
#include "guided_filter.h"

namespace camfast::bind {
namespace {

void guided(int device, int dtype, Sizes5 sizes, int64_t radius, double eps, int border, bool adjoint,
            bool coeffs_out, uintptr_t guide, Sizes4 sg, uintptr_t src, Sizes4 ss, uintptr_t out, Sizes4 so) {
  const Target t = target(device, 0, dtype, 0);
  check_sizes(sizes);
  const BoxBorder b = code<BoxBorder>(border);
  require(sizes[1] == 1 || sizes[1] == 3, "camfast._C: the guide must have 1 or 3 channels");
  require(radius >= 0, "camfast._C: radius must be non-negative");
  require(eps > 0, "camfast._C: eps must be positive");
  require(b == BoxBorder::Truncate || (radius < sizes[3] && radius < sizes[4]),
          "camfast._C: reflect border needs radius < H and radius < W");
  require(!(adjoint && b != BoxBorder::Truncate), "camfast._C: the adjoint is defined for the truncate border only");
  const GfProblem p{sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], radius, eps, b, adjoint, coeffs_out};
  const View4 vg = view(sg, "guide");
  const View4 vs = view(ss, "src");
  const View4 vo = view(so, "out");
  const void* I = data(guide, "guide");
  const void* S = data(src, "src");
  void* O = data(out, "out");
  run_cpu(t, "guided_filter", [&] { guided_filter_cpu(t.dtype, p, I, vg, S, vs, O, vo); });
}

}  // namespace

void register_guided_filter(py::module_& m) {
  m.def("guided_filter", &guided, py::arg("device"), py::arg("dtype"), py::arg("sizes"), py::arg("radius"),
        py::arg("eps"), py::arg("border"), py::arg("adjoint"), py::arg("coeffs_out"), py::arg("guide"),
        py::arg("guide_strides"), py::arg("src"), py::arg("src_strides"), py::arg("out"), py::arg("out_strides"));
}

}  // namespace camfast::bind
