"""Triton kernels of the depth-wise cross-correlation; snlt_fast/ops/xcorr.py holds the
contract (the exact order of every product and sum) and the reference these match bit for bit.

One launch covers every pair of a call, whatever their shapes. Each pair is one record
of int64 fields (data pointers, sizes, strides, its first program) in a small device
table, and each program scans the records' first-program fields to find its pair. Sizes
and strides are runtime values read from the table, so a new shape never recompiles;
only the dtype and the block sizes (a few powers of two) are compile-time constants.

Two kinds of work ("jobs"):
  tap job          out[plane, position] = +0, then one product per tap in row-major order.
                   The forward reads search[y + i, x + j]; grad-search ("transposed") reads
                   grad_out[y - i, x - j] where that exists. A program covers BLOCK_C planes
                   (batch x channel) by BLOCK_P output positions, flattened row-major so
                   that loads run along W.
  grad-kernel job  one lane per kernel element (kernel batch, channel, i, j) keeps one running
                   sum over the batch (for a shared kernel) and then the output positions in
                   row-major order: sequential by contract, so the parallelism is across lanes.
The backward launch runs both: its first programs are grad-kernel jobs, the rest
grad-search tap jobs. Every launch passes enable_fp_fusion=False: a fused multiply-add would
round once where the contract rounds twice.
"""

from collections import OrderedDict

import torch
import triton
import triton.language as tl

from snlt_fast import _backends
from snlt_fast.kernels._launch import interpreted_off_cpu, launch_context
from snlt_fast.ops.xcorr import _output_like, accumulator_dtype

# Fields of a tap-job record.
TAP_INPUT = tl.constexpr(0)  # data pointers: the tensor read per tap, the kernel, the output
TAP_KERNEL = tl.constexpr(1)
TAP_OUTPUT = tl.constexpr(2)
TAP_CHANNELS = tl.constexpr(3)
TAP_PLANES = tl.constexpr(4)  # output batch * channels
TAP_OUT_WIDTH = tl.constexpr(5)
TAP_POSITIONS = tl.constexpr(6)  # output height * width
TAP_IN_HEIGHT = tl.constexpr(7)
TAP_IN_WIDTH = tl.constexpr(8)
TAP_KERNEL_HEIGHT = tl.constexpr(9)
TAP_KERNEL_WIDTH = tl.constexpr(10)
TAP_IN_STRIDES = tl.constexpr(11)  # 4 strides: batch, channel, row, column
TAP_KERNEL_STRIDES = tl.constexpr(15)  # 4 strides; batch stride 0 for a kernel shared by the batch
TAP_FIRST_PROGRAM = tl.constexpr(19)
TAP_RECORD = tl.constexpr(20)

# Fields of a grad-kernel-job record.
GK_SEARCH = tl.constexpr(0)  # data pointers: search, grad_out, grad_kernel
GK_GRAD = tl.constexpr(1)
GK_OUTPUT = tl.constexpr(2)
GK_CHANNELS = tl.constexpr(3)
GK_LANES = tl.constexpr(4)  # kernel batch * channels * kernel height * kernel width
GK_KERNEL_HEIGHT = tl.constexpr(5)
GK_KERNEL_WIDTH = tl.constexpr(6)
GK_OUT_HEIGHT = tl.constexpr(7)
GK_OUT_WIDTH = tl.constexpr(8)
GK_BATCH_STEPS = tl.constexpr(9)  # the search batch for a shared kernel, else 1
GK_SEARCH_STRIDES = tl.constexpr(10)  # 4 strides each
GK_GRAD_STRIDES = tl.constexpr(14)
GK_FIRST_PROGRAM = tl.constexpr(18)
GK_RECORD = tl.constexpr(19)

_TRITON_DTYPES = {
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.float32: tl.float32,
    torch.float64: tl.float64,
}

# On a GPU: 512 elements (4 warps x 32 threads x 4) per tap-job program, which gives a
# batch-1 head at 256 channels a few hundred programs, enough for 132 SMs; 128 lanes
# (one per thread) per grad-kernel program.
_GPU_WARPS = 4
_GPU_TAP_ELEMENTS = 512
_GPU_MAX_BLOCK_P = 128
_GPU_MIN_BLOCK_P = 16
_GPU_BLOCK_L = 128
# The interpreter runs programs one after another and each block operation as one numpy
# call, so there it pays to give one program as much of the work as possible.
_INTERPRETED_ELEMENTS = 1 << 16


# --------------------------------------------------------------------------- device code


@triton.jit
def _widen(value, ACC: tl.constexpr):
    """`value` in the accumulator type, exactly."""
    if value.dtype == tl.bfloat16:
        # A bfloat16 is the top half of a float32. Done by hand because the Triton
        # interpreter's own conversion mangles subnormals.
        return (value.to(tl.uint16, bitcast=True).to(tl.uint32) << 16).to(tl.float32, bitcast=True)
    return value.to(ACC)


@triton.jit
def _narrow(acc, DTYPE: tl.constexpr):
    """`acc` rounded once, to nearest even, to DTYPE (what torch's .to(dtype) does)."""
    if DTYPE == tl.bfloat16:
        # By hand because the Triton interpreter truncates float32 to bfloat16.
        bits = acc.to(tl.uint32, bitcast=True)
        rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        rounded = tl.where(acc != acc, 0x7FC0, rounded)  # NaN: torch's quiet NaN
        return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)
    return acc.to(DTYPE)


@triton.jit
def _find_record(table, num_pairs, pid, RECORD: tl.constexpr, FIRST_PROGRAM: tl.constexpr):
    """The record of the pair program `pid` works on, and the program's index within that pair."""
    pair = pid * 0
    # Records are in order of their first program: the pair is the last one starting at or before pid.
    for n in range(1, num_pairs):
        pair = tl.where(pid >= tl.load(table + n * RECORD + FIRST_PROGRAM), n, pair)
    record = table + pair * RECORD
    return record, pid - tl.load(record + FIRST_PROGRAM)


@triton.jit
def _pointer(record, FIELD: tl.constexpr, DTYPE: tl.constexpr):
    return tl.load(record + FIELD).to(tl.pointer_type(DTYPE))


@triton.jit
def _strides(record, FIELD: tl.constexpr):
    """The four strides (batch, channel, row, column) stored from FIELD on."""
    batch, channel = tl.load(record + FIELD), tl.load(record + FIELD + 1)
    return batch, channel, tl.load(record + FIELD + 2), tl.load(record + FIELD + 3)


@triton.jit
def _tap_job(
    table,
    num_pairs,
    pid,
    DTYPE: tl.constexpr,
    ACC: tl.constexpr,
    TRANSPOSED: tl.constexpr,
    ONE_BY_ONE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    record, local_pid = _find_record(table, num_pairs, pid, TAP_RECORD, TAP_FIRST_PROGRAM)
    source = _pointer(record, TAP_INPUT, DTYPE)
    kernel = _pointer(record, TAP_KERNEL, DTYPE)
    output = _pointer(record, TAP_OUTPUT, DTYPE)
    channels = tl.load(record + TAP_CHANNELS)
    planes = tl.load(record + TAP_PLANES)
    out_width = tl.load(record + TAP_OUT_WIDTH)
    positions = tl.load(record + TAP_POSITIONS)
    in_batch_stride, in_channel_stride, in_row_stride, in_column_stride = _strides(record, TAP_IN_STRIDES)
    kernel_batch_stride, kernel_channel_stride, kernel_row_stride, kernel_column_stride = _strides(
        record, TAP_KERNEL_STRIDES
    )
    in_height = tl.load(record + TAP_IN_HEIGHT)
    in_width = tl.load(record + TAP_IN_WIDTH)
    if ONE_BY_ONE:
        # Every kernel of the launch is 1x1: a constant one-trip loop the compiler removes.
        kernel_height = 1
        kernel_width = 1
    else:
        kernel_height = tl.load(record + TAP_KERNEL_HEIGHT)
        kernel_width = tl.load(record + TAP_KERNEL_WIDTH)

    position_blocks = tl.cdiv(positions, BLOCK_P)
    plane = (local_pid // position_blocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    position = (local_pid % position_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    plane_ok = plane < planes
    mask = plane_ok[:, None] & (position < positions)[None, :]
    batch = plane // channels
    channel = plane % channels
    y = position // out_width
    x = position % out_width
    # int64 offsets throughout: strides come from the table as int64.
    source_at = source + (batch * in_batch_stride + channel * in_channel_stride)[:, None]
    source_at += (y * in_row_stride + x * in_column_stride)[None, :]
    kernel_at = kernel + batch * kernel_batch_stride + channel * kernel_channel_stride

    acc = tl.zeros([BLOCK_C, BLOCK_P], ACC)
    for i in range(kernel_height):
        for j in range(kernel_width):
            weight = tl.load(kernel_at + (i * kernel_row_stride + j * kernel_column_stride), mask=plane_ok, other=0.0)
            weight = _widen(weight, ACC)[:, None]
            tap_offset = i * in_row_stride + j * in_column_stride
            if TRANSPOSED:
                # grad_search[y, x] receives grad_out[y - i, x - j] * kernel[i, j] where that exists.
                tap_ok = (y >= i) & (y < in_height + i) & (x >= j) & (x < in_width + j)
                valid = mask & tap_ok[None, :]
                value = _widen(tl.load(source_at - tap_offset, mask=valid, other=0.0), ACC)
                acc = tl.where(valid, acc + value * weight, acc)
            else:
                value = _widen(tl.load(source_at + tap_offset, mask=mask, other=0.0), ACC)
                acc = acc + value * weight
    out_at = output + plane[:, None] * positions + position[None, :]
    tl.store(out_at, _narrow(acc, DTYPE), mask=mask)


@triton.jit
def _kernel_grad_job(table, num_pairs, pid, DTYPE: tl.constexpr, ACC: tl.constexpr, BLOCK_L: tl.constexpr):
    record, local_pid = _find_record(table, num_pairs, pid, GK_RECORD, GK_FIRST_PROGRAM)
    search = _pointer(record, GK_SEARCH, DTYPE)
    grad = _pointer(record, GK_GRAD, DTYPE)
    output = _pointer(record, GK_OUTPUT, DTYPE)
    channels = tl.load(record + GK_CHANNELS)
    lanes = tl.load(record + GK_LANES)
    kernel_height = tl.load(record + GK_KERNEL_HEIGHT)
    kernel_width = tl.load(record + GK_KERNEL_WIDTH)
    out_height = tl.load(record + GK_OUT_HEIGHT)
    out_width = tl.load(record + GK_OUT_WIDTH)
    batch_steps = tl.load(record + GK_BATCH_STEPS)
    search_batch_stride, search_channel_stride, search_row_stride, search_column_stride = _strides(
        record, GK_SEARCH_STRIDES
    )
    grad_batch_stride, grad_channel_stride, grad_row_stride, grad_column_stride = _strides(record, GK_GRAD_STRIDES)

    # A lane is one element of the contiguous grad_kernel [kernel batch, C, kh, kw].
    lane = local_pid * BLOCK_L + tl.arange(0, BLOCK_L)
    lane_ok = lane < lanes
    j = lane % kernel_width
    i = (lane // kernel_width) % kernel_height
    plane = lane // (kernel_width * kernel_height)
    channel = plane % channels
    # The kernel batch: 0 for a shared kernel, whose batch is walked by `step` below instead.
    batch = plane // channels
    search_at = search + (batch * search_batch_stride + channel * search_channel_stride)
    search_at += i * search_row_stride + j * search_column_stride
    grad_at = grad + (batch * grad_batch_stride + channel * grad_channel_stride)

    acc = tl.zeros([BLOCK_L], ACC)
    for step in range(batch_steps):
        for y in range(out_height):
            search_row = search_at + (step * search_batch_stride + y * search_row_stride)
            grad_row = grad_at + (step * grad_batch_stride + y * grad_row_stride)
            # Unrolled so that the loads of the next positions issue before this sum completes.
            for x in tl.range(out_width, loop_unroll_factor=4):
                value = _widen(tl.load(search_row + x * search_column_stride, mask=lane_ok, other=0.0), ACC)
                gradient = _widen(tl.load(grad_row + x * grad_column_stride, mask=lane_ok, other=0.0), ACC)
                acc = acc + gradient * value
    tl.store(output + lane, _narrow(acc, DTYPE), mask=lane_ok)


@triton.jit(do_not_specialize=["num_pairs"])
def _forward_kernel(
    table,
    num_pairs,
    DTYPE: tl.constexpr,
    ACC: tl.constexpr,
    ONE_BY_ONE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
):
    _tap_job(table, num_pairs, tl.program_id(0), DTYPE, ACC, False, ONE_BY_ONE, BLOCK_C, BLOCK_P)


@triton.jit(do_not_specialize=["grad_kernel_pairs", "grad_kernel_programs", "tap_offset", "tap_pairs"])
def _backward_kernel(
    table,
    grad_kernel_pairs,
    grad_kernel_programs,
    tap_offset,
    tap_pairs,
    DTYPE: tl.constexpr,
    ACC: tl.constexpr,
    ONE_BY_ONE: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_P: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    """Programs [0, grad_kernel_programs) compute grad-kernel, the rest grad-search (their
    records number programs from grad_kernel_programs on). The long sequential grad-kernel
    sums go first so that they start first; the short grad-search programs fill in around them."""
    pid = tl.program_id(0)
    if pid < grad_kernel_programs:
        _kernel_grad_job(table, grad_kernel_pairs, pid, DTYPE, ACC, BLOCK_L)
    else:
        _tap_job(table + tap_offset, tap_pairs, pid, DTYPE, ACC, True, ONE_BY_ONE, BLOCK_C, BLOCK_P)


# --------------------------------------------------------------------------- host code


def _next_power_of_2(n):
    return 1 << max(n - 1, 0).bit_length()


def _ceil_div(n, d):
    # Not triton.cdiv: a constexpr-function wrapper that costs microseconds per call on the host.
    return -(-n // d)


def _tap_blocks(outputs):
    """(BLOCK_C, BLOCK_P) for tap jobs writing `outputs`: one pair of sizes for the whole launch."""
    most_positions = max((o.shape[2] * o.shape[3] for o in outputs), default=1)
    if _backends.triton_interpreted():
        block_p = min(_next_power_of_2(most_positions), _INTERPRETED_ELEMENTS)
        most_planes = max((o.shape[0] * o.shape[1] for o in outputs), default=1)
        return min(_next_power_of_2(most_planes), _INTERPRETED_ELEMENTS // block_p), block_p
    block_p = min(max(_next_power_of_2(most_positions), _GPU_MIN_BLOCK_P), _GPU_MAX_BLOCK_P)
    return _GPU_TAP_ELEMENTS // block_p, block_p


def _grad_kernel_block(grad_kernels):
    if _backends.triton_interpreted():
        return min(_next_power_of_2(max((k.numel() for k in grad_kernels), default=1)), _INTERPRETED_ELEMENTS)
    return _GPU_BLOCK_L


def _tap_records(jobs, block_c, block_p, first_program=0):
    """Records of tap jobs (source, kernel, output), and the program after the last one."""
    records = []
    for source, kernel, output in jobs:
        batch, channels, out_height, out_width = output.shape
        kernel_batch, _, kernel_height, kernel_width = kernel.shape
        kernel_strides = kernel.stride()
        records += [
            source.data_ptr(), kernel.data_ptr(), output.data_ptr(),
            channels, batch * channels, out_width, out_height * out_width,
            *source.shape[2:], kernel_height, kernel_width, *source.stride(),
            # A kernel shared by the batch is read at batch 0 by every sample.
            0 if kernel_batch == 1 else kernel_strides[0], *kernel_strides[1:],
            first_program,
        ]  # fmt: skip
        first_program += _ceil_div(batch * channels, block_c) * _ceil_div(out_height * out_width, block_p)
    return records, first_program


def _grad_kernel_records(jobs, block_l):
    """Records of grad-kernel jobs (search, grad_out, grad_kernel), and the program after the last one."""
    records, first_program = [], 0
    for search, grad, grad_kernel in jobs:
        kernel_batch, channels, kernel_height, kernel_width = grad_kernel.shape
        # A shared kernel sums over the search batch; otherwise each lane has its own sample.
        batch_steps = search.shape[0] if kernel_batch == 1 else 1
        records += [
            search.data_ptr(), grad.data_ptr(), grad_kernel.data_ptr(),
            channels, grad_kernel.numel(), kernel_height, kernel_width,
            grad.shape[2], grad.shape[3], batch_steps,
            *search.stride(), *grad.stride(),
            first_program,
        ]  # fmt: skip
        first_program += _ceil_div(grad_kernel.numel(), block_l)
    return records, first_program


# Device tables by content. A table is a pure function of its key, so a hit is right even
# when a pointer in it has since been freed and reused; keyed by stream too, so that a table
# is only read on the stream that copied it there.
_TABLES = OrderedDict()
_TABLES_KEPT = 64
# Tables made while a CUDA graph is captured, with their pinned host copies: every replay
# copies the host table again and reads the device one, so both must outlive the graph.
_CAPTURED_TABLES = []


def _new_table(records, device):
    host = torch.tensor(records, dtype=torch.int64, pin_memory=device.type == "cuda")
    return host, host.to(device, non_blocking=True)


def _device_table(records, device):
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        _CAPTURED_TABLES.append(_new_table(records, device))
        return _CAPTURED_TABLES[-1][1]
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None
    key = (device, stream, tuple(records))
    table = _TABLES.get(key)
    if table is None:
        _, table = _new_table(records, device)
        _TABLES[key] = table
        if len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
    else:
        _TABLES.move_to_end(key)
    return table


def _launch_options(dtype):
    return {
        "DTYPE": _TRITON_DTYPES[dtype],
        "ACC": _TRITON_DTYPES[accumulator_dtype(dtype)],
        "num_warps": _GPU_WARPS,  # the interpreter ignores it
        "enable_fp_fusion": False,
    }


def _to_cpu(tensors):
    return [t.cpu() for t in tensors]


def xcorr_forward_many(searches, kernels):
    """Depth-wise cross-correlation of every (search, kernel) pair, in one launch."""
    device = searches[0].device
    if interpreted_off_cpu(device):
        return [out.to(device) for out in xcorr_forward_many(_to_cpu(searches), _to_cpu(kernels))]
    outputs = [_output_like(s, k) for s, k in zip(searches, kernels)]
    jobs = [(s, k, out) for s, k, out in zip(searches, kernels, outputs) if out.numel() > 0]
    if not jobs:
        return outputs
    block_c, block_p = _tap_blocks([out for _, _, out in jobs])
    records, programs = _tap_records(jobs, block_c, block_p)
    one_by_one = all(k.shape[2] == 1 and k.shape[3] == 1 for _, k, _ in jobs)
    with launch_context(device):
        _forward_kernel[(programs,)](
            _device_table(records, device), len(jobs),
            ONE_BY_ONE=one_by_one, BLOCK_C=block_c, BLOCK_P=block_p,
            **_launch_options(searches[0].dtype),
        )  # fmt: skip
    return outputs


def xcorr_backward_many(grads, searches, kernels, need_search, need_kernel):
    """(grad_searches, grad_kernels) of every pair, each an empty list when not needed, in one launch."""
    device = searches[0].device
    if interpreted_off_cpu(device):
        grad_searches, grad_kernels = xcorr_backward_many(
            _to_cpu(grads), _to_cpu(searches), _to_cpu(kernels), need_search, need_kernel
        )
        return [g.to(device) for g in grad_searches], [g.to(device) for g in grad_kernels]
    grad_searches = [torch.empty(s.shape, dtype=s.dtype, device=device) for s in searches] if need_search else []
    grad_kernels = [torch.empty(k.shape, dtype=k.dtype, device=device) for k in kernels] if need_kernel else []
    tap_jobs = [(g, k, out) for g, k, out in zip(grads, kernels, grad_searches) if out.numel() > 0]
    # A shared kernel with an empty search batch still gets its (zero) gradient from a job.
    grad_kernel_jobs = [(s, g, out) for s, g, out in zip(searches, grads, grad_kernels) if out.numel() > 0]
    if not tap_jobs and not grad_kernel_jobs:
        return grad_searches, grad_kernels

    block_c, block_p = _tap_blocks([out for _, _, out in tap_jobs])
    block_l = _grad_kernel_block([out for _, _, out in grad_kernel_jobs])
    grad_kernel_records, grad_kernel_programs = _grad_kernel_records(grad_kernel_jobs, block_l)
    tap_records, programs = _tap_records(tap_jobs, block_c, block_p, grad_kernel_programs)
    one_by_one = all(k.shape[2] == 1 and k.shape[3] == 1 for _, k, _ in tap_jobs)
    with launch_context(device):
        _backward_kernel[(programs,)](
            _device_table(grad_kernel_records + tap_records, device),
            len(grad_kernel_jobs), grad_kernel_programs, len(grad_kernel_records), len(tap_jobs),
            ONE_BY_ONE=one_by_one, BLOCK_C=block_c, BLOCK_P=block_p, BLOCK_L=block_l,
            **_launch_options(searches[0].dtype),
        )  # fmt: skip
    return grad_searches, grad_kernels
