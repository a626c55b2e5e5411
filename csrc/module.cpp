// snlt_fast._C: loading it runs the TORCH_LIBRARY registrations of every op in csrc/
// (reached through torch.ops.snlt_fast_C, with fake kernels and autograd in Python), and
// it binds the post-processing ops directly for eager calls (see postprocess_ops.h and
// postprocess_points/points_ops.h), and the fused network's interpreter (fused_net_ops.h).
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/utils/pybind.h>

#include "fused_net/fused_net_ops.h"
#include "postprocess/postprocess_ops.h"
#include "postprocess_points/points_ops.h"

PYBIND11_MODULE(_C, module) {
  namespace pp = snlt_fast::postprocess;
  using pybind11::arg;
  // As the dispatcher's entry does: the GIL released while the kernels run, and c10's
  // errors raised as their Python types (TORCH_CHECK_VALUE as ValueError, ...).
  module.def("postprocess_aggregate", torch::wrap_pybind_function_no_gil(&pp::dynamic_aggregate), arg("cls_vis"),
             arg("cls_nl"), arg("loc_vis"), arg("loc_nl"), arg("anchors"), arg("alpha"));
  module.def("postprocess_track", torch::wrap_pybind_function_no_gil(&pp::track_postprocess), arg("cls_vis"),
             arg("cls_nl"), arg("loc_vis"), arg("loc_nl"), arg("anchors"), arg("window"), arg("target_size"),
             arg("alpha"), arg("penalty_k"), arg("window_influence"), arg("lr"), arg("lr_from_pscore"));
  module.def("postprocess_track_points", torch::wrap_pybind_function_no_gil(&pp::track_postprocess_points),
             arg("cls_vis"), arg("cls_nl"), arg("loc_vis"), arg("loc_nl"), arg("points"), arg("window"),
             arg("target_size"), arg("alpha"), arg("penalty_k"), arg("window_influence"), arg("lr"), arg("center"),
             arg("lr_from_pscore"));
  module.def("fused_net_run", torch::wrap_pybind_function_no_gil(&snlt_fast::fused_net::run_program), arg("input"),
             arg("weights"), arg("program"), arg("kernels"), arg("outputs"), arg("workspace"),
             arg("paths") = std::vector<int64_t>{});
  module.attr("FUSED_NET_PROGRAM_COLUMNS") = snlt_fast::fused_net::kProgramColumns;
}
