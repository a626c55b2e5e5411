// torch glue of the fused network: the program's checks, the slots' maps, the layers run
// by fused_net_cpu.cpp's kernels, and the dense convolution of the stem as torch's
// (oneDNN's).
#include "fused_net/fused_net_ops.h"

#include <ATen/Parallel.h>
#include <ATen/ops/conv2d.h>
#include <ATen/ops/empty.h>
#include <ATen/record_function.h>
#include <c10/util/Exception.h>

#include "fused_net/fused_net_kernels.h"

#include <atomic>

namespace snlt_fast::fused_net {
namespace {

struct Instruction {
  int64_t op, src, dst, weight, bias, size, stride, pad, act, extra;
};

Map map_of(const at::Tensor& tensor) {
  return {tensor.data_ptr<float>(), tensor.size(0), tensor.size(1), tensor.size(2), tensor.size(3)};
}

class Interpreter {
 public:
  Interpreter(const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& kernels, at::Tensor workspace)
      : weights_(weights), kernels_(kernels), workspace_(std::move(workspace)) {}

  // After a run: the floats the maps took, which a workspace of that size holds next time.
  int64_t used() const { return used_.load(); }

  void run(const Instruction& in, std::vector<at::Tensor>& slots) {
    // check_paths has checked every slot a row reads and writes.
    const at::Tensor& src = slots[in.src];
    const Activation act = activation(in.act);
    switch (in.op) {
      case kConv: {
        // weight [Cout, Cin, k, k] channels-last: oneDNN reads and writes the maps' own layout.
        const at::Tensor& weight = weight_of(in.weight, {-1, src.size(3), in.size, in.size}, at::MemoryFormat::ChannelsLast);
        const Window window = window_of(in);
        check_window(src, window);
        bias_of(in.bias, weight.size(0), true);  // checks it
        const at::Tensor& bias = weights_[in.bias];
        at::Tensor out = at::conv2d(src.permute({0, 3, 1, 2}), weight, bias, window.stride, window.pad)
                             .permute({0, 2, 3, 1})
                             .contiguous();
        if (act != kIdentity) bias_activation(map_of(out), nullptr, act, nullptr);
        slots[in.dst] = out;
        return;
      }
      case kPointwise: {
        const at::Tensor& weight = weight_of(in.weight, {src.size(3), -1});
        at::Tensor out = new_map({src.size(0), src.size(1), src.size(2), weight.size(1)});
        const float* residual = nullptr;
        if (in.extra >= 0) {
          TORCH_CHECK_VALUE(slots[in.extra].sizes().equals(out.sizes()),
                            "fused_net: the residual slot ", in.extra, " does not match the output ", out.sizes());
          residual = slots[in.extra].data_ptr<float>();
        }
        pointwise(map_of(src), weight.data_ptr<float>(), 0, bias_of(in.bias, weight.size(1), false), act, residual,
                  map_of(out));
        slots[in.dst] = out;
        return;
      }
      case kDepthwise: {
        const at::Tensor& weight = weight_of(in.weight, {in.size, in.size, src.size(3)});
        const Window window = window_of(in);
        at::Tensor out = new_map(src, window, src.size(3));
        depthwise(map_of(src), weight.data_ptr<float>(), 0, bias_of(in.bias, src.size(3), false), window, act,
                  map_of(out));
        slots[in.dst] = out;
        return;
      }
      case kExcite: {
        const int64_t channels = src.size(3);
        const at::Tensor& w1 = weight_of(in.weight, {channels, -1});
        const int64_t hidden = w1.size(1);
        const at::Tensor& w2 = weight_of(in.weight + 2, {hidden, channels});
        excite(map_of(src), w1.data_ptr<float>(), bias_of(in.weight + 1, hidden, true), hidden,
               w2.data_ptr<float>(), bias_of(in.weight + 3, channels, true), act, activation(in.extra));
        slots[in.dst] = src;
        return;
      }
      case kCorrPixelwise: {
        const at::Tensor& kernel = kernel_of(in.weight, src, 3);
        TORCH_CHECK_VALUE(kernel.size(1) == src.size(3), "fused_net: pixel-wise kernel ", kernel.sizes(),
                          " does not match the map ", src.sizes());
        at::Tensor out = new_map({src.size(0), src.size(1), src.size(2), kernel.size(2)});
        const int64_t batch_stride = kernel.size(0) == 1 ? 0 : kernel.stride(0);
        pointwise(map_of(src), kernel.data_ptr<float>(), batch_stride, nullptr, kIdentity, nullptr, map_of(out));
        slots[in.dst] = out;
        return;
      }
      case kCorrDepthwise: {
        const at::Tensor& kernel = kernel_of(in.weight, src, 4);
        TORCH_CHECK_VALUE(kernel.size(1) == kernel.size(2) && kernel.size(3) == src.size(3),
                          "fused_net: depth-wise kernel ", kernel.sizes(), " does not match the map ", src.sizes());
        const Window window{kernel.size(1), 1, in.pad};
        check_window(src, window);
        at::Tensor out = new_map(src, window, src.size(3));
        const int64_t batch_stride = kernel.size(0) == 1 ? 0 : kernel.stride(0);
        depthwise(map_of(src), kernel.data_ptr<float>(), batch_stride, nullptr, window, kIdentity, map_of(out));
        slots[in.dst] = out;
        return;
      }
      case kConcat: {
        TORCH_CHECK_VALUE(in.extra >= 0, "fused_net: a concatenation needs a second slot");
        const at::Tensor& other = slots[in.extra];
        TORCH_CHECK_VALUE(other.sizes().slice(0, 3).equals(src.sizes().slice(0, 3)), "fused_net: cannot concatenate ",
                          src.sizes(), " and ", other.sizes());
        at::Tensor out = new_map({src.size(0), src.size(1), src.size(2), src.size(3) + other.size(3)});
        concat_channels(map_of(src), map_of(other), map_of(out));
        slots[in.dst] = out;
        return;
      }
      case kExp:
        exp_inplace(map_of(src));
        slots[in.dst] = src;
        return;
      default:
        TORCH_CHECK_VALUE(false, "fused_net: unknown op ", in.op);
    }
  }

 private:
  static Activation activation(int64_t code) {
    TORCH_CHECK_VALUE(code >= kIdentity && code <= kSigmoid, "fused_net: unknown activation ", code);
    return static_cast<Activation>(code);
  }

  static Window window_of(const Instruction& in) {
    TORCH_CHECK_VALUE(in.size >= 1 && in.stride >= 1 && in.pad >= 0, "fused_net: window size ", in.size, " stride ",
                      in.stride, " padding ", in.pad);
    return {in.size, in.stride, in.pad};
  }

  static void check_window(const at::Tensor& src, const Window& window) {
    TORCH_CHECK_VALUE(window.out_extent(src.size(1)) >= 1 && window.out_extent(src.size(2)) >= 1,
                      "fused_net: a ", window.size, "x", window.size, " window does not fit the map ", src.sizes());
  }

  at::Tensor new_map(const at::Tensor& src, const Window& window, int64_t channels) {
    check_window(src, window);
    return new_map({src.size(0), window.out_extent(src.size(1)), window.out_extent(src.size(2)), channels});
  }

  // A map carved from the workspace, in 64-byte steps, while it has room; else a new tensor.
  // Paths running side by side take their maps through the one atomic counter.
  at::Tensor new_map(std::vector<int64_t> sizes) {
    int64_t count = 1;
    for (int64_t size : sizes) count *= size;
    const int64_t taken = (count + kAlignment - 1) / kAlignment * kAlignment;
    const int64_t start = used_.fetch_add(taken);
    if (start + taken <= workspace_.numel()) return workspace_.narrow(0, start, count).view(sizes);
    return at::empty(sizes, workspace_.options());
  }

  // weights[index], float32 and contiguous (in `layout`) with the given sizes (-1: any).
  const at::Tensor& weight_of(int64_t index, std::vector<int64_t> sizes,
                              at::MemoryFormat layout = at::MemoryFormat::Contiguous) const {
    TORCH_CHECK_VALUE(index >= 0 && index < static_cast<int64_t>(weights_.size()), "fused_net: no weight ", index);
    const at::Tensor& weight = weights_[index];
    TORCH_CHECK_VALUE(weight.dim() == static_cast<int64_t>(sizes.size()) && weight.is_contiguous(layout) &&
                          weight.scalar_type() == at::kFloat && weight.device().is_cpu(),
                      "fused_net: weight ", index, " must be a contiguous float32 CPU tensor of ", sizes.size(),
                      " dimensions, got ", weight.sizes());
    for (size_t d = 0; d < sizes.size(); ++d)
      TORCH_CHECK_VALUE(sizes[d] < 0 || weight.size(d) == sizes[d], "fused_net: weight ", index, " is ",
                        weight.sizes(), " where the map needs ", sizes);
    return weight;
  }

  const float* bias_of(int64_t index, int64_t channels, bool required) const {
    if (index < 0) {
      TORCH_CHECK_VALUE(!required, "fused_net: this layer needs a bias");
      return nullptr;
    }
    return weight_of(index, {channels}).data_ptr<float>();
  }

  const at::Tensor& kernel_of(int64_t index, const at::Tensor& src, int64_t dims) const {
    TORCH_CHECK_VALUE(index >= 0 && index < static_cast<int64_t>(kernels_.size()), "fused_net: no kernel ", index);
    const at::Tensor& kernel = kernels_[index];
    TORCH_CHECK_VALUE(kernel.dim() == dims && kernel.is_contiguous() && kernel.scalar_type() == at::kFloat &&
                          kernel.device().is_cpu() && (kernel.size(0) == 1 || kernel.size(0) == src.size(0)),
                      "fused_net: kernel ", index, " must be a contiguous float32 CPU tensor [B or 1, ...] of ", dims,
                      " dimensions for ", src.size(0), " samples, got ", kernel.sizes());
    return kernel;
  }

  static constexpr int64_t kAlignment = 16;
  const std::vector<at::Tensor>& weights_;
  const std::vector<at::Tensor>& kernels_;
  at::Tensor workspace_;
  std::atomic<int64_t> used_{0};
};

// The slots a row reads.
std::vector<int64_t> reads_of(const Instruction& in) {
  const bool second_input = (in.op == kPointwise || in.op == kConcat) && in.extra >= 0;
  return second_input ? std::vector<int64_t>{in.src, in.extra} : std::vector<int64_t>{in.src};
}

// Rows [paths[p], paths[p + 1]) form path p, run side by side with the others after the rows
// before paths[0]. Checked before anything runs: a path reads only slots written before the
// first path or by itself, and writes only slots no other part writes, so that the paths
// share nothing they write.
void check_paths(const std::vector<Instruction>& rows, const std::vector<int64_t>& paths, int64_t slot_count) {
  const int64_t row_count = static_cast<int64_t>(rows.size());
  for (size_t p = 0; p < paths.size(); ++p)
    TORCH_CHECK_VALUE(paths[p] >= 0 && paths[p] < row_count && (p == 0 || paths[p] > paths[p - 1]),
                      "fused_net: path starts must be increasing row indices below ", row_count, ", got ", paths[p]);
  std::vector<int64_t> writer(slot_count, -1);  // 0: before the paths; p + 1: path p
  writer[0] = 0;
  size_t path = 0;
  for (int64_t row = 0; row < row_count; ++row) {
    while (path < paths.size() && paths[path] <= row) ++path;
    const int64_t part = static_cast<int64_t>(path);
    const Instruction& in = rows[row];
    for (int64_t slot : reads_of(in)) {
      const bool readable = slot >= 0 && slot < slot_count && (writer[slot] == 0 || (part > 0 && writer[slot] == part));
      TORCH_CHECK_VALUE(readable, "fused_net: row ", row, " reads slot ", slot,
                        " before any instruction wrote it, or from another path");
    }
    TORCH_CHECK_VALUE(in.dst >= 0 && in.dst < slot_count && (writer[in.dst] == -1 || writer[in.dst] == part),
                      "fused_net: row ", row, " writes slot ", in.dst, ", which another part of the program writes");
    writer[in.dst] = part;
  }
}

}  // namespace

std::vector<at::Tensor> run_program(const at::Tensor& input, const std::vector<at::Tensor>& weights,
                                    const std::vector<int64_t>& program, const std::vector<at::Tensor>& kernels,
                                    const std::vector<int64_t>& outputs, const at::Tensor& workspace,
                                    const std::vector<int64_t>& paths) {
  RECORD_FUNCTION("snlt_fast::fused_net", std::vector<c10::IValue>());
  TORCH_CHECK_VALUE(input.dim() == 4 && input.scalar_type() == at::kFloat && input.device().is_cpu() &&
                        input.is_contiguous() && input.size(0) >= 1,
                    "fused_net: input must be a contiguous float32 CPU tensor [B, H, W, C], got ", input.sizes(), " ",
                    input.scalar_type(), " on ", input.device());
  TORCH_CHECK_VALUE(workspace.dim() == 1 && workspace.scalar_type() == at::kFloat && workspace.device().is_cpu() &&
                        workspace.is_contiguous(),
                    "fused_net: workspace must be a contiguous 1-D float32 CPU tensor, got ", workspace.sizes(), " ",
                    workspace.scalar_type());
  TORCH_CHECK_VALUE(program.size() % kProgramColumns == 0, "fused_net: a program has ", kProgramColumns,
                    " integers a row, got ", program.size());
  std::vector<Instruction> rows;
  int64_t slot_count = 1;
  for (size_t row = 0; row < program.size(); row += kProgramColumns) {
    const int64_t* f = program.data() + row;
    rows.push_back({f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9]});
    slot_count = std::max(slot_count, rows.back().dst + 1);
  }
  check_paths(rows, paths, slot_count);
  std::vector<at::Tensor> slots(slot_count);
  slots[0] = input;
  Interpreter interpreter(weights, kernels, workspace);
  const int64_t row_count = static_cast<int64_t>(rows.size());
  const int64_t first_path = paths.empty() ? row_count : paths[0];
  for (int64_t row = 0; row < first_path; ++row) interpreter.run(rows[row], slots);
  // One path a task: each runs its layers on one thread (their own products and maps are
  // small), with no barrier between the layers.
  const int64_t path_count = static_cast<int64_t>(paths.size());
  at::parallel_for(0, path_count, 1, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t stop = p + 1 < path_count ? paths[p + 1] : row_count;
      for (int64_t row = paths[p]; row < stop; ++row) interpreter.run(rows[row], slots);
    }
  });
  std::vector<at::Tensor> results;
  for (int64_t slot : outputs) {
    TORCH_CHECK_VALUE(slot >= 0 && slot < slot_count && slots[slot].defined(), "fused_net: output slot ", slot,
                      " was never written");
    // The workspace is the next call's: outputs are the caller's own, laid out [B, C, H, W].
    results.push_back(slots[slot].permute({0, 3, 1, 2}).contiguous());
  }
  slots.clear();
  if (interpreter.used() > workspace.numel()) {
    at::Tensor grown = workspace;
    grown.resize_({interpreter.used()});
  }
  return results;
}

}  // namespace snlt_fast::fused_net
