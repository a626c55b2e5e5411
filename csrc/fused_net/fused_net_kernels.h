// The fused network's CPU kernels on raw pointers (no torch types). Every feature map is
// channels-last and contiguous, [batch, height, width, channels], and every kernel applies
// its layer's bias and activation in the same pass as the layer, so that a MobileNet block
// reads and writes each map once. The dense convolutions (the stem) go to torch's oneDNN
// convolution (fused_net_ops.cpp), with bias_activation after them.
#pragma once

#include <cstdint>

namespace snlt_fast::fused_net {

enum Activation : int64_t { kIdentity = 0, kReLU = 1, kReLU6 = 2, kHardswish = 3, kHardsigmoid = 4, kSigmoid = 5 };

struct Map {
  float* data;
  int64_t batch, height, width, channels;
  int64_t pixels() const { return height * width; }
};

struct ConstMap {
  const float* data;
  int64_t batch, height, width, channels;
  ConstMap(const Map& map) : data(map.data), batch(map.batch), height(map.height), width(map.width), channels(map.channels) {}
  int64_t pixels() const { return height * width; }
};

// A k x k window over the input: stride, zero padding on every side.
struct Window {
  int64_t size, stride, pad;
  int64_t out_extent(int64_t extent) const { return (extent + 2 * pad - size) / stride + 1; }
};

// out[b, y, x, c] = act(bias[c] + sum over (i, j) of in[b, y*s + i - p, x*s + j - p, c] * weight[b, i, j, c]);
// weight is [k, k, C] for every sample (weight_batch_stride 0) or one per sample (a
// depth-wise correlation); bias may be null.
void depthwise(const ConstMap& in, const float* weight, int64_t weight_batch_stride, const float* bias,
               const Window& window, Activation act, const Map& out);

// out[b, p, o] = act(bias[o] + sum over k of in[b, p, k] * weight[b, k, o]) (+ residual[b, p, o]
// when not null): a point-wise convolution (weight [C_in, C_out] for every sample,
// weight_batch_stride 0) or a pixel-wise correlation (one [C, h*w] kernel per sample);
// bias may be null. At NanoTrack's sizes it is 10-25% faster than torch's BLAS product with
// a bias-and-activation pass after it: no packing, no output scaling pass, one store.
void pointwise(const ConstMap& in, const float* weight, int64_t weight_batch_stride, const float* bias,
               Activation act, const float* residual, const Map& out);

// In place over rows of `channels`: x = act(x + bias) (+ residual, same shape, when not null).
void bias_activation(const Map& x, const float* bias, Activation act, const float* residual);

// Squeeze-excite and channel attention in place: per sample, m = mean of x over the pixels,
// g = gate(relu(m w1 + b1) w2 + b2) with w1 [C, hidden], w2 [hidden, C] (the layers'
// weights transposed), then x = post(x * g[c]).
void excite(const Map& x, const float* w1, const float* b1, int64_t hidden, const float* w2, const float* b2,
            Activation gate, Activation post);

// out = [a | b] along channels.
void concat_channels(const ConstMap& a, const ConstMap& b, const Map& out);

void exp_inplace(const Map& x);

}  // namespace snlt_fast::fused_net
