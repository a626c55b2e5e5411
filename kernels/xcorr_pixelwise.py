"""Triton kernels of the pixel-wise cross-correlation; snlt_fast/ops/xcorr_pixelwise.py holds
the contract (the exact order of every product and sum) and the reference these match bit for bit.

Two kinds of work ("jobs"):
  correlation job      out[b, n, p] = +0, then input[b, r, p] * weight[b, r, n] added for r
                       ascending. The forward is one (input the search, r its channels, n the
                       kernel's taps); grad search another (input grad_out, r the taps, n the
                       channels, the kernel read with those two axes swapped). A program covers
                       BLOCK_N outputs by BLOCK_P positions of one sample; positions are walked
                       as (y, x), so the search and grad_out may have any strides.
  grad-kernel job      one lane per kernel element (kernel batch, channel, tap) keeps one running
                       sum over the batch (for a shared kernel) and then the positions in
                       row-major order: sequential by contract, so the parallelism is across lanes.
The backward is one launch: its first programs are grad-kernel jobs, the rest grad search.
Every launch passes enable_fp_fusion=False (through _launch_options): a fused multiply-add
would round once where the contract rounds twice.
"""

import torch
import triton
import triton.language as tl

from snlt_fast import _backends
from snlt_fast.kernels._launch import interpreted_off_cpu, launch_context
from snlt_fast.kernels.xcorr import _ceil_div, _launch_options, _narrow, _next_power_of_2, _widen
from snlt_fast.ops.xcorr_pixelwise import _output_like

# On a GPU: 16 x 32 elements per correlation program (4 per thread of 4 warps), 32 programs
# for a batch-1 NanoTrack head; 16 x 16 lanes per grad-kernel program.
_GPU_BLOCK_N = 16
_GPU_BLOCK_P = 32
_GPU_BLOCK_LANES = 16
# The interpreter runs programs one after another and each block operation as one numpy
# call, so there it pays to give one program as much of the work as possible.
_INTERPRETED_ELEMENTS = 1 << 16


# --------------------------------------------------------------------------- device code


@triton.jit
def _correlation_job(
    pid, source, weight, out, reduced, outputs, height, width,
    source_batch_stride, source_r_stride, source_row_stride, source_column_stride,
    weight_batch_stride, weight_r_stride, weight_n_stride,
    DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    positions = height * width
    n_blocks = tl.cdiv(outputs, BLOCK_N)
    p_blocks = tl.cdiv(positions, BLOCK_P)
    # int64 offsets throughout: a large batch overflows int32 element offsets.
    b = (pid // (n_blocks * p_blocks)).to(tl.int64)
    n = (pid // p_blocks % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    p = (pid % p_blocks) * BLOCK_P + tl.arange(0, BLOCK_P).to(tl.int64)
    n_ok = n < outputs
    p_ok = p < positions
    source_at = source + b * source_batch_stride
    source_at += (p // width) * source_row_stride + (p % width) * source_column_stride
    weight_at = weight + b * weight_batch_stride + n * weight_n_stride

    acc = tl.zeros([BLOCK_N, BLOCK_P], ACC)
    for r in range(reduced):
        value = _widen(tl.load(source_at + r * source_r_stride, mask=p_ok, other=0.0), ACC)
        w = _widen(tl.load(weight_at + r * weight_r_stride, mask=n_ok, other=0.0), ACC)
        acc = acc + w[:, None] * value[None, :]
    out_at = out + (b * outputs + n)[:, None] * positions + p[None, :]
    tl.store(out_at, _narrow(acc, DTYPE), mask=n_ok[:, None] & p_ok[None, :])


@triton.jit
def _kernel_gradient_job(
    pid, search, grad, out, channels, taps, height, width, batch_steps,
    search_batch_stride, search_channel_stride, search_row_stride, search_column_stride,
    grad_batch_stride, grad_tap_stride, grad_row_stride, grad_column_stride,
    DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    c_blocks = tl.cdiv(channels, BLOCK_C)
    k_blocks = tl.cdiv(taps, BLOCK_K)
    # The kernel sample: 0 for a shared kernel, whose batch is walked by `step` below instead.
    kernel_b = (pid // (c_blocks * k_blocks)).to(tl.int64)
    c = (pid // k_blocks % c_blocks) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    k = (pid % k_blocks) * BLOCK_K + tl.arange(0, BLOCK_K).to(tl.int64)
    c_ok = c < channels
    k_ok = k < taps
    search_at = search + kernel_b * search_batch_stride + c * search_channel_stride
    grad_at = grad + kernel_b * grad_batch_stride + k * grad_tap_stride

    acc = tl.zeros([BLOCK_C, BLOCK_K], ACC)
    for step in range(batch_steps):
        for y in range(height):
            search_row = search_at + (step * search_batch_stride + y * search_row_stride)
            grad_row = grad_at + (step * grad_batch_stride + y * grad_row_stride)
            for x in range(width):
                value = _widen(tl.load(search_row + x * search_column_stride, mask=c_ok, other=0.0), ACC)
                gradient = _widen(tl.load(grad_row + x * grad_column_stride, mask=k_ok, other=0.0), ACC)
                acc = acc + value[:, None] * gradient[None, :]
    out_at = out + (kernel_b * channels + c)[:, None] * taps + k[None, :]
    tl.store(out_at, _narrow(acc, DTYPE), mask=c_ok[:, None] & k_ok[None, :])


@triton.jit
def _forward_kernel(
    source, weight, out, reduced, outputs, height, width, s0, s1, s2, s3, w0, w1, w2,
    DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    _correlation_job(
        tl.program_id(0), source, weight, out, reduced, outputs, height, width, s0, s1, s2, s3, w0, w1, w2,
        DTYPE, ACC, BLOCK_N, BLOCK_P,
    )  # fmt: skip


@triton.jit
def _backward_kernel(
    kernel_programs,
    search, grad, grad_kernel, channels, taps, height, width, batch_steps, s0, s1, s2, s3, g0, g1, g2, g3,
    kernel, grad_search, k0, k1, k2,
    DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Programs [0, kernel_programs) compute grad kernel, the rest grad search (the forward of
    grad_out with the kernel read as [kernel batch, taps, channels]). The long sequential
    grad-kernel sums go first so that they start first."""
    pid = tl.program_id(0)
    if pid < kernel_programs:
        _kernel_gradient_job(
            pid, search, grad, grad_kernel, channels, taps, height, width, batch_steps,
            s0, s1, s2, s3, g0, g1, g2, g3, DTYPE, ACC, BLOCK_C, BLOCK_K,
        )  # fmt: skip
    else:
        _correlation_job(
            pid - kernel_programs, grad, kernel, grad_search, taps, channels, height, width,
            g0, g1, g2, g3, k0, k1, k2, DTYPE, ACC, BLOCK_N, BLOCK_P,
        )  # fmt: skip


# --------------------------------------------------------------------------- host code


def _correlation_blocks(outputs, positions):
    """(BLOCK_N, BLOCK_P) of a correlation job."""
    if _backends.triton_interpreted():
        block_p = min(_next_power_of_2(positions), _INTERPRETED_ELEMENTS)
        return min(_next_power_of_2(outputs), _INTERPRETED_ELEMENTS // block_p), block_p
    return _GPU_BLOCK_N, _GPU_BLOCK_P


def _kernel_gradient_blocks(channels, taps):
    """(BLOCK_C, BLOCK_K) of a grad-kernel job."""
    if _backends.triton_interpreted():
        block_k = min(_next_power_of_2(taps), _INTERPRETED_ELEMENTS)
        return min(_next_power_of_2(channels), _INTERPRETED_ELEMENTS // block_k), block_k
    return _GPU_BLOCK_LANES, _GPU_BLOCK_LANES


def _taps_major(kernel):
    """The kernel as [kernel batch, channels, taps] (a view where the strides allow), with batch
    stride 0 when one kernel serves the whole batch."""
    flat = kernel.flatten(2)
    strides = flat.stride()
    return flat, (0 if kernel.shape[0] == 1 else strides[0], *strides[1:])


def xcorr_pixelwise_forward(search, kernel):
    """The pixel-wise cross-correlation of search [B, C, H, W] and kernel [B or 1, C, h, w]."""
    device = search.device
    if interpreted_off_cpu(device):
        return xcorr_pixelwise_forward(search.cpu(), kernel.cpu()).to(device)
    out = _output_like(search, kernel)
    if out.numel() == 0:
        return out
    batch, channels, height, width = search.shape
    taps = out.shape[1]
    weight, weight_strides = _taps_major(kernel)
    block_n, block_p = _correlation_blocks(taps, height * width)
    programs = batch * _ceil_div(taps, block_n) * _ceil_div(height * width, block_p)
    with launch_context(device):
        _forward_kernel[(programs,)](
            search, weight, out, channels, taps, height, width, *search.stride(), *weight_strides,
            BLOCK_N=block_n, BLOCK_P=block_p, **_launch_options(search.dtype),
        )  # fmt: skip
    return out


def xcorr_pixelwise_backward(grad, search, kernel, need_search, need_kernel):
    """(grad_search, grad_kernel), each a list holding the gradient when needed and empty
    otherwise, in one launch."""
    device = search.device
    if interpreted_off_cpu(device):
        on_cpu = (grad.cpu(), search.cpu(), kernel.cpu())
        grad_search, grad_kernel = xcorr_pixelwise_backward(*on_cpu, need_search, need_kernel)
        return [g.to(device) for g in grad_search], [g.to(device) for g in grad_kernel]
    batch, channels, height, width = search.shape
    taps = grad.shape[1]
    grad_search = [torch.empty(search.shape, dtype=search.dtype, device=device)] if need_search else []
    grad_kernel = [torch.empty(kernel.shape, dtype=kernel.dtype, device=device)] if need_kernel else []
    # A part with nothing to compute gets no programs (its output stands in for the pointers).
    search_out = grad_search[0] if need_search else search
    kernel_out = grad_kernel[0] if need_kernel else kernel
    block_c, block_k = _kernel_gradient_blocks(channels, taps)
    kernel_programs = 0
    if need_kernel and kernel_out.numel() > 0:
        kernel_programs = kernel_out.shape[0] * _ceil_div(channels, block_c) * _ceil_div(taps, block_k)
    block_n, block_p = _correlation_blocks(channels, height * width)
    search_programs = 0
    if need_search and search_out.numel() > 0:
        search_programs = batch * _ceil_div(channels, block_n) * _ceil_div(height * width, block_p)
    if kernel_programs + search_programs == 0:
        return grad_search, grad_kernel
    # Grad search reads the kernel as [kernel batch, taps, channels]: its last two strides swapped.
    weight, (k0, k1, k2) = _taps_major(kernel)
    batch_steps = batch if kernel.shape[0] == 1 else 1
    with launch_context(device):
        _backward_kernel[(kernel_programs + search_programs,)](
            kernel_programs,
            search, grad, kernel_out, channels, taps, height, width, batch_steps, *search.stride(), *grad.stride(),
            weight, search_out, k0, k2, k1,
            BLOCK_C=block_c, BLOCK_K=block_k, BLOCK_N=block_n, BLOCK_P=block_p, **_launch_options(search.dtype),
        )  # fmt: skip
    return grad_search, grad_kernel
