"""Depth-wise cross-correlation: the reference (the specification), the custom
ops that dispatch to each backend, their fake kernels and their autograd.

Arithmetic contract, kept bit for bit by every backend:
  forward      out[b,c,y,x] starts at +0 and adds search[b,c,y+i,x+j] * kernel[b,c,i,j]
               over the taps in row-major order (i outer, j inner);
  grad search  for each tap in row-major order, grad_search[..., i:i+Ho, j:j+Wo] += grad_out * kernel[..., i, j];
  grad kernel  for each (c, i, j): one running sum over the batch (outer, when the kernel is
               shared by the batch) and then the output positions in row-major order of
               grad_out[b,c,y,x] * search[b,c,y+i,x+j].
Every product and every sum is rounded to the accumulator type (float64 for float64
inputs, float32 otherwise); no fused multiply-add; one rounding to the input dtype at
the end. With padding=p the search is first zero-padded by p on all four sides
(F.pad), and the contract holds for that padded search: exact on every backend, since
the padding is data like any other; autograd takes grad search back through the pad.
"""

import torch
from torch import Tensor

from snlt_fast import _backends

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def accumulator_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# --------------------------------------------------------------------------- reference


def xcorr_reference(search: Tensor, kernel: Tensor) -> Tensor:
    """out[b,c,y,x] = sum over taps (i, j) of search[b,c,y+i,x+j] * kernel[b,c,i,j]."""
    acc = accumulator_dtype(search.dtype)
    s, k = search.to(acc), kernel.to(acc)
    kh, kw = k.shape[-2:]
    out_h, out_w = s.shape[-2] - kh + 1, s.shape[-1] - kw + 1
    out = s.new_zeros((s.shape[0], s.shape[1], out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            out = out + s[:, :, i : i + out_h, j : j + out_w] * k[:, :, i : i + 1, j : j + 1]
    return out.to(search.dtype)


def xcorr_backward_reference(grad_out, search, kernel, need_search=True, need_kernel=True):
    """(grad_search, grad_kernel), each None when not needed, in the contract's order."""
    acc = accumulator_dtype(search.dtype)
    g, s, k = grad_out.to(acc), search.to(acc), kernel.to(acc)
    kh, kw = k.shape[-2:]
    out_h, out_w = g.shape[-2:]
    grad_search = grad_kernel = None
    if need_search:
        grad_search = torch.zeros_like(s, memory_format=torch.contiguous_format)
        for i in range(kh):
            for j in range(kw):
                grad_search[:, :, i : i + out_h, j : j + out_w] += g * k[:, :, i : i + 1, j : j + 1]
        grad_search = grad_search.to(search.dtype)
    if need_kernel:
        grad_kernel = torch.zeros_like(k, memory_format=torch.contiguous_format)
        shared = k.shape[0] != s.shape[0]
        # A kernel shared by the batch sums over the batch outermost, one sample at a time.
        batches = [slice(b, b + 1) for b in range(s.shape[0])] if shared else [slice(None)]
        for batch in batches:
            for y in range(out_h):
                for x in range(out_w):
                    grad_kernel += g[batch, :, y : y + 1, x : x + 1] * s[batch, :, y : y + kh, x : x + kw]
        grad_kernel = grad_kernel.to(search.dtype)
    return grad_search, grad_kernel


# --------------------------------------------------------------------------- backends


def _forward_many(backend, searches, kernels):
    if backend == "reference":
        return [xcorr_reference(s, k) for s, k in zip(searches, kernels)]
    if backend in ("cpu", "cuda"):
        return list(_backends.native_ops().xcorr_forward_many(searches, kernels))
    return _backends.triton_kernels("xcorr").xcorr_forward_many(searches, kernels)


def _backward_many(backend, grads, searches, kernels, need_search, need_kernel):
    if backend == "reference":
        pairs = [xcorr_backward_reference(*t, need_search, need_kernel) for t in zip(grads, searches, kernels)]
        grad_searches = [p[0] for p in pairs] if need_search else []
        grad_kernels = [p[1] for p in pairs] if need_kernel else []
        return grad_searches, grad_kernels
    if backend in ("cpu", "cuda"):
        grad_searches, grad_kernels = _backends.native_ops().xcorr_backward_many(
            grads, searches, kernels, need_search, need_kernel
        )
        return list(grad_searches), list(grad_kernels)
    return _backends.triton_kernels("xcorr").xcorr_backward_many(grads, searches, kernels, need_search, need_kernel)


# --------------------------------------------------------------------------- custom ops


def _output_like(search, kernel):
    shape = (search.shape[0], search.shape[1], search.shape[2] - kernel.shape[2] + 1, search.shape[3] - kernel.shape[3] + 1)
    return search.new_empty(shape)


@torch.library.custom_op("snlt_fast::xcorr_depthwise_many", mutates_args=())
def _xcorr_many_op(searches: list[Tensor], kernels: list[Tensor], backend: str) -> list[Tensor]:
    return _forward_many(backend, searches, kernels)


@_xcorr_many_op.register_fake
def _(searches, kernels, backend):
    return [_output_like(s, k) for s, k in zip(searches, kernels)]


@torch.library.custom_op("snlt_fast::xcorr_depthwise_backward_many", mutates_args=())
def _xcorr_backward_many_op(
    grads: list[Tensor], searches: list[Tensor], kernels: list[Tensor], backend: str, need_search: bool, need_kernel: bool
) -> tuple[list[Tensor], list[Tensor]]:
    return _backward_many(backend, grads, searches, kernels, need_search, need_kernel)


@_xcorr_backward_many_op.register_fake
def _(grads, searches, kernels, backend, need_search, need_kernel):
    grad_searches = [torch.empty_like(s, memory_format=torch.contiguous_format) for s in searches] if need_search else []
    grad_kernels = [torch.empty_like(k, memory_format=torch.contiguous_format) for k in kernels] if need_kernel else []
    return grad_searches, grad_kernels


def _setup_many(ctx, inputs, output):
    searches, kernels, backend = inputs
    ctx.save_for_backward(*searches, *kernels)
    ctx.backend = backend


def _backward_many_autograd(ctx, grads):
    saved = ctx.saved_tensors
    count = len(saved) // 2
    searches, kernels = list(saved[:count]), list(saved[count:])
    need_search, need_kernel = any(ctx.needs_input_grad[0]), any(ctx.needs_input_grad[1])
    # An output that did not reach the loss has no gradient: it contributes zeros.
    grads = [torch.zeros_like(_output_like(s, k)) if g is None else g for g, s, k in zip(grads, searches, kernels)]
    grad_searches, grad_kernels = _xcorr_backward_many_op(grads, searches, kernels, ctx.backend, need_search, need_kernel)
    # One entry per input, None where an input needs none (a frozen branch's features
    # beside a trained one's): autograd wants the inputs' structure back.
    return _per_input(grad_searches, ctx.needs_input_grad[0]), _per_input(grad_kernels, ctx.needs_input_grad[1]), None


def _per_input(gradients, needed):
    if not gradients:
        return [None] * len(needed)
    return [gradient if need else None for gradient, need in zip(gradients, needed)]


_xcorr_many_op.register_autograd(_backward_many_autograd, setup_context=_setup_many)


@torch.library.custom_op("snlt_fast::xcorr_depthwise", mutates_args=())
def _xcorr_op(search: Tensor, kernel: Tensor, backend: str) -> Tensor:
    return _forward_many(backend, [search], [kernel])[0]


@_xcorr_op.register_fake
def _(search, kernel, backend):
    return _output_like(search, kernel)


def _setup_single(ctx, inputs, output):
    search, kernel, backend = inputs
    ctx.save_for_backward(search, kernel)
    ctx.backend = backend


def _backward_single_autograd(ctx, grad):
    search, kernel = ctx.saved_tensors
    need_search, need_kernel = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_searches, grad_kernels = _xcorr_backward_many_op([grad], [search], [kernel], ctx.backend, need_search, need_kernel)
    return (grad_searches[0] if need_search else None), (grad_kernels[0] if need_kernel else None), None


_xcorr_op.register_autograd(_backward_single_autograd, setup_context=_setup_single)


# --------------------------------------------------------------------------- public API


def _check_tensors(search, kernel, where=""):
    """Both tensors of one float dtype, on one device."""
    for name, value in (("search", search), ("kernel", kernel)):
        if not isinstance(value, Tensor):
            raise TypeError(f"{name}{where} must be a torch.Tensor, got {type(value).__name__}")
        if value.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name}{where} must be float16, bfloat16, float32 or float64, got {value.dtype}")
    if search.dtype != kernel.dtype:
        raise TypeError(f"search{where} and kernel{where} must share a dtype, got {search.dtype} and {kernel.dtype}")
    if search.device != kernel.device:
        raise ValueError(f"search{where} and kernel{where} must be on one device, got {search.device} and {kernel.device}")


def _check_batch_and_channels(search, kernel, where=""):
    """The kernel has the search's channels and its batch (or one for the whole batch)."""
    batch, channels = search.shape[:2]
    if kernel.shape[1] != channels:
        raise ValueError(
            f"kernel{where} has {kernel.shape[1]} channels but search{where} has {channels} "
            f"(kernel {tuple(kernel.shape)}, search {tuple(search.shape)})"
        )
    if kernel.shape[0] not in (1, batch):
        raise ValueError(
            f"kernel{where} batch must be 1 or the search batch {batch}, got {kernel.shape[0]} "
            f"(kernel {tuple(kernel.shape)}, search {tuple(search.shape)})"
        )


def _check_padding(padding):
    if not isinstance(padding, int) or isinstance(padding, bool):
        raise TypeError(f"padding must be an int, got {type(padding).__name__}")
    if padding < 0:
        raise ValueError(f"padding must be >= 0, got {padding}")


def _check_pair(search, kernel, where="", padding=0):
    """Validate one (search, kernel) pair; returns the kernel as [B or 1, C, kh, kw]."""
    _check_tensors(search, kernel, where)
    if search.dim() != 4:
        raise ValueError(f"search{where} must be [B, C, H, W], got shape {tuple(search.shape)}")
    if kernel.dim() == 2:
        kernel = kernel[:, :, None, None]
    if kernel.dim() != 4:
        raise ValueError(f"kernel{where} must be [B, C, kh, kw] or [B, C], got shape {tuple(kernel.shape)}")
    _check_batch_and_channels(search, kernel, where)
    height, width = search.shape[2] + 2 * padding, search.shape[3] + 2 * padding
    if kernel.shape[2] < 1 or kernel.shape[3] < 1 or kernel.shape[2] > height or kernel.shape[3] > width:
        padded = f" padded by {padding}" if padding else ""
        raise ValueError(
            f"kernel{where} spatial size {tuple(kernel.shape[2:])} must be at least 1x1 and fit inside "
            f"search{where}{padded} {(height, width)}"
        )
    return kernel


def _padded(search, padding):
    """The search with `padding` zeros on all four sides (autograd takes the gradient back through it)."""
    return torch.nn.functional.pad(search, (padding,) * 4) if padding else search


def xcorr_depthwise(search: Tensor, kernel: Tensor, *, padding: int = 0, backend: str | None = None) -> Tensor:
    """Depth-wise cross-correlation of `search` [B, C, H, W] with `kernel`.

    kernel is [B, C, kh, kw], [1, C, kh, kw] (one template for the whole batch), or
    [B, C] (a 1x1 kernel, e.g. a sentence embedding). `padding` zeros on all four sides
    of the search first (NanoTrack V3: a 4x4 kernel, padding 1 on a 16x16 search gives
    15x15). Returns [B, C, H+2*padding-kh+1, W+2*padding-kw+1] in the inputs' dtype.
    Equal to pysot's grouped-conv `xcorr_depthwise`, and bit for bit equal across
    backends (see the module docstring).
    """
    _check_padding(padding)
    kernel = _check_pair(search, kernel, padding=padding)
    search = _padded(search, padding)
    backend = _backends.resolve_backend(backend, search.device)
    if _backends.calls_native_directly(backend, (search, kernel)):
        return _backends.native_ops().xcorr_forward_many([search], [kernel])[0]
    return _xcorr_op(search, kernel, backend)


def xcorr_depthwise_many(searches, kernels, *, padding: int = 0, backend: str | None = None) -> list[Tensor]:
    """`xcorr_depthwise` of each (searches[n], kernels[n]) pair, in one kernel launch.

    Shapes may differ between pairs; all tensors share one device and dtype; `padding`
    applies to every search.
    """
    if not isinstance(searches, (list, tuple)) or not isinstance(kernels, (list, tuple)):
        raise TypeError(
            f"searches and kernels must be lists of tensors, got {type(searches).__name__} and {type(kernels).__name__}"
        )
    if len(searches) != len(kernels):
        raise ValueError(f"searches and kernels must have equal length, got {len(searches)} and {len(kernels)}")
    _check_padding(padding)
    if not searches:
        return []
    kernels = [_check_pair(s, k, f"[{n}]", padding) for n, (s, k) in enumerate(zip(searches, kernels))]
    first = searches[0]
    for n, search in enumerate(searches):
        if search.device != first.device or search.dtype != first.dtype:
            raise ValueError(
                f"all pairs must share one device and dtype: searches[0] is {first.dtype} on {first.device}, "
                f"searches[{n}] is {search.dtype} on {search.device}"
            )
    searches = [_padded(search, padding) for search in searches]
    backend = _backends.resolve_backend(backend, first.device)
    if _backends.calls_native_directly(backend, (*searches, *kernels)):
        return list(_backends.native_ops().xcorr_forward_many(list(searches), kernels))
    return _xcorr_many_op(list(searches), kernels, backend)


def xcorr_depthwise_conv2d(search: Tensor, kernel: Tensor) -> Tensor:
    """pysot's formulation (grouped F.conv2d, groups = B*C): the baseline users have today."""
    kernel = kernel.expand(search.shape[0], -1, -1, -1) if kernel.dim() == 4 else kernel[:, :, None, None]
    batch, channels = kernel.shape[:2]
    flat_search = search.reshape(1, batch * channels, search.shape[2], search.shape[3])
    flat_kernel = kernel.reshape(batch * channels, 1, kernel.shape[2], kernel.shape[3])
    out = torch.nn.functional.conv2d(flat_search, flat_kernel, groups=batch * channels)
    return out.reshape(batch, channels, out.shape[2], out.shape[3])
