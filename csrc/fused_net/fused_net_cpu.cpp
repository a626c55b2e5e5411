// CPU kernels of the fused network (fused_net_kernels.h): torch's threads take rows of
// output pixels; within a pixel, the channels are walked eight at a time in vector
// registers (channels-last puts them side by side), the taps of a window accumulated in
// the register, and the bias and activation applied before the one store.
//
// The vector code is compiled for x86-64-v3 (AVX2) and baseline x86-64, picked at load
// time. This is the "fast" precision's network: its sums run in another order than
// PyTorch's convolutions, with fused multiply-adds, so results agree with them to float
// rounding, not bit for bit.
#include "fused_net/fused_net_kernels.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#pragma GCC diagnostic ignored "-Wpsabi"
// The fast network may fuse multiply-adds (the build turns them off for the exact kernels).
#pragma GCC optimize("fp-contract=fast")

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define FUSED_NET_VECTORIZED __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FUSED_NET_VECTORIZED
#endif
#define FUSED_NET_INLINE inline __attribute__((always_inline))

namespace snlt_fast::fused_net {
namespace {

constexpr int64_t kLanes = 8;
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

FUSED_NET_INLINE Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof(Vec));
  return v;
}
FUSED_NET_INLINE void store(float* p, Vec v) { std::memcpy(p, &v, sizeof(Vec)); }
FUSED_NET_INLINE Vec splat(float value) { return Vec{value, value, value, value, value, value, value, value}; }

// The activations as PyTorch defines them: relu6 = min(max(x, 0), 6),
// hardswish = x * relu6(x + 3) / 6, hardsigmoid = relu6(x + 3) / 6.
template <typename T>
FUSED_NET_INLINE T clamp(T x, T low, T high) {
  x = x < low ? low : x;
  return x > high ? high : x;
}
template <typename T>
FUSED_NET_INLINE T activate(T x, Activation act, T zero, T three, T six) {
  switch (act) {
    case kReLU:
      return x < zero ? zero : x;
    case kReLU6:
      return clamp(x, zero, six);
    case kHardswish:
      return x * clamp(x + three, zero, six) / six;
    case kHardsigmoid:
      return clamp(x + three, zero, six) / six;
    default:
      return x;
  }
}
FUSED_NET_INLINE Vec activate(Vec x, Activation act) { return activate(x, act, splat(0), splat(3), splat(6)); }
FUSED_NET_INLINE float activate(float x, Activation act) {
  if (act == kSigmoid) return 1.0f / (1.0f + std::exp(-x));
  return activate(x, act, 0.0f, 3.0f, 6.0f);
}

// Work below this many multiply-adds a task stays on the calling thread: waking another
// costs more than it saves.
constexpr int64_t kTaskWork = 1 << 16;

// Output rows (sample, y) in parallel, each row costing `row_work` multiply-adds.
template <typename Run>
void parallel_rows(const Map& out, int64_t row_work, const Run& run) {
  const int64_t rows = out.batch * out.height;
  const int64_t grain = std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, row_work));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) run(row / out.height, row % out.height);
  });
}

// The taps [first, last) of a window that fall inside an extent.
struct Taps {
  int64_t first, last, origin;
};
FUSED_NET_INLINE Taps taps_at(int64_t out_index, const Window& window, int64_t extent) {
  const int64_t origin = out_index * window.stride - window.pad;
  return {std::max<int64_t>(0, -origin), std::min(window.size, extent - origin), origin};
}

// The pixels [first, last) of an output row whose K x K windows lie inside the map, eight
// channels at a time: the window's weights loaded once into registers for the whole run
// of pixels, the taps unrolled, each sum in one register.
template <int K>
FUSED_NET_INLINE void depthwise_interior(const float* line, const float* weight, const float* bias, int64_t stride,
                                         int64_t width, int64_t channels, Activation act, float* target, int64_t first,
                                         int64_t last) {
  for (int64_t c = 0; c + kLanes <= channels; c += kLanes) {
    Vec taps[K * K];
#pragma GCC unroll 25
    for (int t = 0; t < K * K; ++t) taps[t] = load(weight + t * channels + c);
    const Vec offset = bias ? load(bias + c) : splat(0);
    for (int64_t x = first; x < last; ++x) {
      const float* origin = line + x * stride * channels + c;
      Vec sum = offset;
#pragma GCC unroll 8
      for (int i = 0; i < K; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < K; ++j) sum += load(origin + (i * width + j) * channels) * taps[i * K + j];
      store(target + x * channels + c, activate(sum, act));
    }
  }
}

FUSED_NET_VECTORIZED
void depthwise_row(const ConstMap& in, const float* weight, const float* bias, const Window& window, Activation act,
                   const Map& out, int64_t sample, int64_t y) {
  const int64_t channels = in.channels, width = in.width, size = window.size;
  const float* source = in.data + sample * in.pixels() * channels;
  float* target = out.data + (sample * out.height + y) * out.width * channels;
  const Taps rows = taps_at(y, window, in.height);
  // Interior pixels: windows wholly inside, sizes 3 and 5 unrolled (channels in whole vectors).
  int64_t first = 0, last = 0;
  if ((size == 3 || size == 5) && channels % kLanes == 0 && rows.first == 0 && rows.last == size) {
    first = std::min(out.width, (window.pad + window.stride - 1) / window.stride);
    last = std::max(first, std::min(out.width, (width + window.pad - size) / window.stride + 1));
    const float* line = source + (rows.origin * width - window.pad) * channels;
    if (size == 3) depthwise_interior<3>(line, weight, bias, window.stride, width, channels, act, target, first, last);
    if (size == 5) depthwise_interior<5>(line, weight, bias, window.stride, width, channels, act, target, first, last);
  }
  for (int64_t x = 0; x < out.width; ++x) {
    if (x == first && last > first) x = last;
    if (x >= out.width) break;
    const Taps cols = taps_at(x, window, width);
    float* pixel = target + x * channels;
    int64_t c = 0;
    for (; c + kLanes <= channels; c += kLanes) {
      Vec sum = bias ? load(bias + c) : splat(0);
      for (int64_t i = rows.first; i < rows.last; ++i) {
        const float* line = source + ((rows.origin + i) * width + cols.origin) * channels + c;
        const float* taps = weight + i * size * channels + c;
        for (int64_t j = cols.first; j < cols.last; ++j) sum += load(line + j * channels) * load(taps + j * channels);
      }
      store(pixel + c, activate(sum, act));
    }
    for (; c < channels; ++c) {
      float sum = bias ? bias[c] : 0.0f;
      for (int64_t i = rows.first; i < rows.last; ++i)
        for (int64_t j = cols.first; j < cols.last; ++j)
          sum += source[((rows.origin + i) * width + cols.origin + j) * channels + c] * weight[(i * size + j) * channels + c];
      pixel[c] = activate(sum, act);
    }
  }
}

// Output channels [o, o + Vecs * 8) of `Rows` consecutive pixels of a point-wise layer:
// the sums in registers over the input channels (each input value broadcast once per
// row, each weight vector loaded once per tile), then the activation and the residual.
template <int Rows, int Vecs>
FUSED_NET_INLINE void pointwise_tile(const float* in, int64_t inputs, const float* weight, int64_t outputs,
                                     const float* bias, Activation act, const float* residual, float* out, int64_t o) {
  Vec sums[Rows][Vecs];
  for (int v = 0; v < Vecs; ++v)
    for (int r = 0; r < Rows; ++r) sums[r][v] = bias ? load(bias + o + v * kLanes) : splat(0);
  for (int64_t k = 0; k < inputs; ++k) {
    Vec w[Vecs];
    for (int v = 0; v < Vecs; ++v) w[v] = load(weight + k * outputs + o + v * kLanes);
    for (int r = 0; r < Rows; ++r) {
      // A scalar times a vector: GCC broadcasts it with one instruction (splat's initializer
      // list takes eight inserts here).
      const float value = in[r * inputs + k];
      for (int v = 0; v < Vecs; ++v) sums[r][v] += value * w[v];
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int v = 0; v < Vecs; ++v) {
      const int64_t at = r * outputs + o + v * kLanes;
      const Vec value = activate(sums[r][v], act);
      store(out + at, residual ? value + load(residual + at) : value);
    }
}

// Output channels [o, o + Vecs * 8) of pixels [first, last): four pixels at a time (eight
// vectors of sums, the two weight vectors and a broadcast value stay in AVX2's sixteen
// registers; six pixels measured no faster), then one at a time. The tiles share the
// weights' columns, kept in L1.
constexpr int64_t kTileRows = 4;
template <int Vecs>
FUSED_NET_INLINE void pointwise_columns(const float* in, int64_t inputs, const float* weight, int64_t outputs,
                                        const float* bias, Activation act, const float* residual, float* out,
                                        int64_t o, int64_t first, int64_t last) {
  int64_t p = first;
  for (; p <= last - kTileRows; p += kTileRows)
    pointwise_tile<kTileRows, Vecs>(in + p * inputs, inputs, weight, outputs, bias, act,
                                    residual ? residual + p * outputs : nullptr, out + p * outputs, o);
  for (; p < last; ++p)
    pointwise_tile<1, Vecs>(in + p * inputs, inputs, weight, outputs, bias, act,
                            residual ? residual + p * outputs : nullptr, out + p * outputs, o);
}

// Pixels [first, last) of one sample, every output channel, in chunks of pixels whose
// inputs stay in L1 while the output channels are walked: two vectors at a time, then
// one, then the channels left over (NanoTrack's 2- and 4-channel outputs) one by one.
constexpr int64_t kChunkRows = 8 * kTileRows;
FUSED_NET_VECTORIZED
void pointwise_run(const float* in, int64_t inputs, const float* weight, int64_t outputs, const float* bias,
                   Activation act, const float* residual, float* out, int64_t first, int64_t last) {
  for (int64_t begin = first; begin < last; begin += kChunkRows) {
    const int64_t end = std::min(last, begin + kChunkRows);
    int64_t o = 0;
    for (; o + 2 * kLanes <= outputs; o += 2 * kLanes)
      pointwise_columns<2>(in, inputs, weight, outputs, bias, act, residual, out, o, begin, end);
    if (o + kLanes <= outputs) {
      pointwise_columns<1>(in, inputs, weight, outputs, bias, act, residual, out, o, begin, end);
      o += kLanes;
    }
    for (; o < outputs; ++o)
      for (int64_t p = begin; p < end; ++p) {
        float sum = bias ? bias[o] : 0.0f;
        for (int64_t k = 0; k < inputs; ++k) sum += in[p * inputs + k] * weight[k * outputs + o];
        const float value = activate(sum, act);
        out[p * outputs + o] = residual ? value + residual[p * outputs + o] : value;
      }
  }
}

FUSED_NET_VECTORIZED
void bias_activation_rows(float* data, int64_t rows, int64_t channels, const float* bias, Activation act,
                          const float* residual) {
  for (int64_t row = 0; row < rows; ++row) {
    float* values = data + row * channels;
    const float* skip = residual ? residual + row * channels : nullptr;
    int64_t c = 0;
    for (; c + kLanes <= channels; c += kLanes) {
      Vec value = activate(load(values + c) + (bias ? load(bias + c) : splat(0)), act);
      store(values + c, skip ? value + load(skip + c) : value);
    }
    for (; c < channels; ++c) {
      const float value = activate(values[c] + (bias ? bias[c] : 0.0f), act);
      values[c] = skip ? value + skip[c] : value;
    }
  }
}

FUSED_NET_VECTORIZED
void channel_means(const float* data, int64_t pixels, int64_t channels, float* means) {
  std::fill(means, means + channels, 0.0f);
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t c = 0; c < channels; ++c) means[c] += data[p * channels + c];
  for (int64_t c = 0; c < channels; ++c) means[c] /= static_cast<float>(pixels);
}

FUSED_NET_VECTORIZED
void scale_channels(float* data, int64_t pixels, int64_t channels, const float* scale, Activation post) {
  for (int64_t p = 0; p < pixels; ++p) {
    float* values = data + p * channels;
    int64_t c = 0;
    for (; c + kLanes <= channels; c += kLanes) store(values + c, activate(load(values + c) * load(scale + c), post));
    for (; c < channels; ++c) values[c] = activate(values[c] * scale[c], post);
  }
}

// out = act(bias + vector . matrix), matrix [inputs, outputs]: rows of the matrix added in
// turn, so that the outputs are the vector lanes.
FUSED_NET_VECTORIZED
void affine(const float* vector, const float* matrix, const float* bias, int64_t inputs, int64_t outputs,
            Activation act, float* out) {
  std::copy(bias, bias + outputs, out);
  for (int64_t k = 0; k < inputs; ++k)
    for (int64_t o = 0; o < outputs; ++o) out[o] += vector[k] * matrix[k * outputs + o];
  for (int64_t o = 0; o < outputs; ++o) out[o] = activate(out[o], act);
}

}  // namespace

void depthwise(const ConstMap& in, const float* weight, int64_t weight_batch_stride, const float* bias,
               const Window& window, Activation act, const Map& out) {
  const int64_t row_work = out.width * out.channels * window.size * window.size;
  parallel_rows(out, row_work, [&](int64_t sample, int64_t y) {
    depthwise_row(in, weight + sample * weight_batch_stride, bias, window, act, out, sample, y);
  });
}

void pointwise(const ConstMap& in, const float* weight, int64_t weight_batch_stride, const float* bias,
               Activation act, const float* residual, const Map& out) {
  const int64_t pixels = in.pixels(), inputs = in.channels, outputs = out.channels;
  // Tasks of whole tiles of one sample.
  const int64_t tiles = (pixels + kTileRows - 1) / kTileRows;
  const int64_t grain = std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, kTileRows * inputs * outputs));
  at::parallel_for(0, in.batch * tiles, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end;) {
      const int64_t sample = task / tiles, last_task = std::min(end, (sample + 1) * tiles);
      const int64_t offset = sample * pixels;
      pointwise_run(in.data + offset * inputs, inputs, weight + sample * weight_batch_stride, outputs, bias, act,
                    residual ? residual + offset * outputs : nullptr, out.data + offset * outputs,
                    (task - sample * tiles) * kTileRows, std::min(pixels, (last_task - sample * tiles) * kTileRows));
      task = last_task;
    }
  });
}

void bias_activation(const Map& x, const float* bias, Activation act, const float* residual) {
  const int64_t rows = x.batch * x.pixels(), channels = x.channels;
  const int64_t grain = std::max<int64_t>(1, kTaskWork / std::max<int64_t>(1, channels));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    bias_activation_rows(x.data + begin * channels, end - begin, channels, bias, act,
                         residual ? residual + begin * channels : nullptr);
  });
}

void excite(const Map& x, const float* w1, const float* b1, int64_t hidden, const float* w2, const float* b2,
            Activation gate, Activation post) {
  const int64_t channels = x.channels, pixels = x.pixels();
  std::vector<float> means(channels), inner(hidden), scale(channels);
  for (int64_t sample = 0; sample < x.batch; ++sample) {
    float* data = x.data + sample * pixels * channels;
    channel_means(data, pixels, channels, means.data());
    affine(means.data(), w1, b1, channels, hidden, kReLU, inner.data());
    affine(inner.data(), w2, b2, hidden, channels, gate, scale.data());
    scale_channels(data, pixels, channels, scale.data(), post);
  }
}

void concat_channels(const ConstMap& a, const ConstMap& b, const Map& out) {
  const int64_t pixels = a.batch * a.pixels();
  for (int64_t p = 0; p < pixels; ++p) {
    std::memcpy(out.data + p * out.channels, a.data + p * a.channels, a.channels * sizeof(float));
    std::memcpy(out.data + p * out.channels + a.channels, b.data + p * b.channels, b.channels * sizeof(float));
  }
}

void exp_inplace(const Map& x) {
  const int64_t count = x.batch * x.pixels() * x.channels;
  for (int64_t i = 0; i < count; ++i) x.data[i] = std::exp(x.data[i]);
}

}  // namespace snlt_fast::fused_net
