// The fused network's interpreter, as module.cpp binds it: one call runs a whole program of
// layers over channels-last float32 maps on the CPU, with no Python or dispatcher between
// the layers (snlt_fast.models.fused_net builds the programs).
//
// A program is rows of kProgramColumns integers:
//   op, src, dst, weight, bias, size, stride, pad, act, extra
// naming slots (slot 0 holds the input; each op writes dst), indices into `weights`
// (-1: no bias) and into `kernels` (per-target correlation kernels), and:
//   kConv            dense convolution, weight [Cout, Cin, k, k] channels-last, bias [Cout]
//   kPointwise       1x1 convolution, weight [Cin, Cout]; extra: a slot added after the
//                    activation (a residual), or -1
//   kDepthwise       weight [k, k, C], the bias optional
//   kExcite          in place on src: weights weight .. weight+3 are w1 [C, hidden], b1,
//                    w2 [hidden, C], b2; act is the gate, extra the activation after it
//   kCorrPixelwise   kernels[weight] [B or 1, C, taps] -> taps channels
//   kCorrDepthwise   kernels[weight] [B or 1, k, k, C], padding pad
//   kConcat          [src | extra] along channels
//   kExp             in place on src
// Activations are fused_net::Activation's codes.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace snlt_fast::fused_net {

enum Op : int64_t { kConv, kPointwise, kDepthwise, kExcite, kCorrPixelwise, kCorrDepthwise, kConcat, kExp };
constexpr int64_t kProgramColumns = 10;

// input [B, H, W, 3] float32; returns the maps of the slots in `outputs`, [B, C, H, W] each.
// The maps between live in `workspace` (1-D float32) while it has room, and a run that
// finds it too small grows it for the next: kept from call to call, the memory stays
// mapped (fresh pages for every map would cost the kernel more page faults a frame than
// the layers cost time).
// Rows from each index in `paths` to the next form independent paths (a head's towers),
// which torch's threads run side by side once the rows before the first have run.
std::vector<at::Tensor> run_program(const at::Tensor& input, const std::vector<at::Tensor>& weights,
                                    const std::vector<int64_t>& program, const std::vector<at::Tensor>& kernels,
                                    const std::vector<int64_t>& outputs, const at::Tensor& workspace,
                                    const std::vector<int64_t>& paths);

}  // namespace snlt_fast::fused_net
