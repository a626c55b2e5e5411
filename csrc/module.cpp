// snlt_fast._C: loading it runs the TORCH_LIBRARY registrations of every op in csrc/
// (reached through torch.ops.snlt_fast_C, with fake kernels and autograd in Python), and
// it binds the post-processing ops directly for eager calls (see postprocess_ops.h).
#include <torch/csrc/utils/pybind.h>

#include "postprocess/postprocess_ops.h"

PYBIND11_MODULE(_C, module) {
  namespace pp = snlt_fast::postprocess;
  using pybind11::arg;
  // The GIL is released while the kernels run, as the dispatcher's entry does.
  const auto release_gil = pybind11::call_guard<pybind11::gil_scoped_release>();
  module.def("postprocess_aggregate", &pp::dynamic_aggregate, arg("cls_vis"), arg("cls_nl"), arg("loc_vis"),
             arg("loc_nl"), arg("anchors"), arg("alpha"), release_gil);
  module.def("postprocess_track", &pp::track_postprocess, arg("cls_vis"), arg("cls_nl"), arg("loc_vis"),
             arg("loc_nl"), arg("anchors"), arg("window"), arg("target_size"), arg("alpha"), arg("penalty_k"),
             arg("window_influence"), arg("lr"), arg("lr_from_pscore"), release_gil);
}
