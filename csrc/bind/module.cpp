// camfast._C: the module. Each op registers its own entry points (csrc/bind/<op>.cpp, on the
// shared checks and device dispatch of csrc/bind/bind.h); this file adds what the module as
// a whole reports: its source fingerprint, the code table it was built with, CUDA and OpenMP.
#include <optional>

#include "bind/bind.h"

namespace camfast::bind {

// One line per op here and one in the PYBIND11_MODULE body below.
void register_box_filter(py::module_& m);
void register_grad_weighted_map(py::module_& m);
void register_guided_filter(py::module_& m);
void register_neighbour_stencil(py::module_& m);
void register_thresholded_avg_pool2d(py::module_& m);
void register_upsample_aggregate(py::module_& m);

namespace {

// The code table compiled in: {"enums": {name: [value names in code order]}, "constants":
// {name: value}}, the form camfast.ops.codes.table() gives for camfast/ops/codes.json.
py::dict codes() {
  py::dict enums;
  for_each_code_table([&](auto table) {
    using Table = decltype(table);
    py::list names;
    for (const char* name : Table::kNames) names.append(name);
    enums[Table::kName] = names;
  });
  py::dict constants;
  for_each_code_constant([&](const char* name, auto value) { constants[name] = value; });
  py::dict out;
  out["enums"] = enums;
  out["constants"] = constants;
  return out;
}

}  // namespace
}  // namespace camfast::bind

PYBIND11_MODULE(_C, m) {
  namespace bind = camfast::bind;
  namespace py = pybind11;
  m.doc() = "camfast compiled kernels (no libtorch): raw pointers, sizes and strides";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def("source_hash", []() { return std::string(CAMFAST_SOURCE_HASH); },
        "SHA-256 fingerprint of the sources this module was built from (csrc/ and camfast/ops/codes.json)");
  m.def("codes", &bind::codes, "The code table this module was built with (camfast/ops/codes.json)");
  m.def("built_with_cuda", &bind::cuda_built, "Whether this build has CUDA kernels");
  m.def("has_cuda", &bind::cuda_usable,
        "Whether the CUDA kernels can run here: built with them, and the CUDA runtime (probed once) "
        "sees at least one device");
  m.def("cuda_status", []() -> std::optional<std::string> {
          const std::string problem = bind::cuda_problem();
          return problem.empty() ? std::nullopt : std::optional<std::string>(problem);
        },
        "None when has_cuda(); otherwise why the CUDA kernels cannot run here");
  m.def(
      "cuda_archs",
      []() {
#ifdef CAMFAST_CUDA_ARCHS
        return std::string(CAMFAST_CUDA_ARCHS);
#else
        return std::string();
#endif
      },
      "CMAKE_CUDA_ARCHITECTURES the CUDA kernels were built for, comma-separated (empty without CUDA)");
  m.def("openmp", []() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
  bind::register_box_filter(m);
  bind::register_grad_weighted_map(m);
  bind::register_guided_filter(m);
  bind::register_neighbour_stencil(m);
  bind::register_thresholded_avg_pool2d(m);
  bind::register_upsample_aggregate(m);
}
