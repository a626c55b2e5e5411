"""Pixel-wise cross-correlation (NanoTrack's heads): the reference (the specification),
the custom ops that dispatch to each backend, their fake kernels and their autograd.

Every search pixel's C-vector against every kernel pixel's: for search [B, C, H, W] and
kernel [B or 1, C, h, w], out[b, k, y, x] with k = i*w + j the kernel position (i, j).

Arithmetic contract, kept bit for bit by every backend (kernel[b,c,k] is kernel[b,c,i,j]):
  forward      out[b,k,y,x] starts at +0 and adds search[b,c,y,x] * kernel[b,c,k] over c ascending;
  grad search  grad_search[b,c,y,x] starts at +0 and adds grad_out[b,k,y,x] * kernel[b,c,k] over k
               ascending;
  grad kernel  grad_kernel[b,c,k] starts at +0 and adds grad_out[b,k,y,x] * search[b,c,y,x] over the
               positions (y, x) in row-major order; a kernel shared by the batch ([1, C, h, w]) keeps
               one running sum over the batch (outer) and then the positions.
Every product and every sum is rounded to the accumulator type (float64 for float64
inputs, float32 otherwise); no fused multiply-add; one rounding to the input dtype at
the end. Grad search is the forward of grad_out with the kernel's C and k axes swapped,
and the backends compute it with their forward kernels.
"""

import torch
from torch import Tensor

from snlt_fast import _backends
from snlt_fast.ops.xcorr import _check_batch_and_channels, _check_tensors, _setup_single, accumulator_dtype

# --------------------------------------------------------------------------- reference


def xcorr_pixelwise_reference(search: Tensor, kernel: Tensor) -> Tensor:
    """out[b, k, y, x] = sum over c of search[b, c, y, x] * kernel[b, c, k]."""
    acc = accumulator_dtype(search.dtype)
    s, k = search.to(acc), kernel.to(acc).flatten(2)
    out = s.new_zeros((s.shape[0], k.shape[2], s.shape[2], s.shape[3]))
    for c in range(s.shape[1]):
        out = out + s[:, c : c + 1] * k[:, c, :, None, None]
    return out.to(search.dtype)


def xcorr_pixelwise_backward_reference(grad_out, search, kernel, need_search=True, need_kernel=True):
    """(grad_search, grad_kernel), each None when not needed, in the contract's order."""
    acc = accumulator_dtype(search.dtype)
    g, s, k = grad_out.to(acc), search.to(acc), kernel.to(acc).flatten(2)
    grad_search = grad_kernel = None
    if need_search:
        grad_search = torch.zeros_like(s, memory_format=torch.contiguous_format)
        for n in range(k.shape[2]):
            grad_search = grad_search + g[:, n : n + 1] * k[:, :, n, None, None]
        grad_search = grad_search.to(search.dtype)
    if need_kernel:
        grad_kernel = torch.zeros_like(k, memory_format=torch.contiguous_format)
        shared = kernel.shape[0] != search.shape[0]
        # A kernel shared by the batch sums over the batch outermost, one sample at a time.
        batches = [slice(b, b + 1) for b in range(s.shape[0])] if shared else [slice(None)]
        for batch in batches:
            for y in range(s.shape[2]):
                for x in range(s.shape[3]):
                    grad_kernel = grad_kernel + s[batch, :, y, x, None] * g[batch, None, :, y, x]
        grad_kernel = grad_kernel.reshape(kernel.shape).to(search.dtype)
    return grad_search, grad_kernel


# --------------------------------------------------------------------------- backends


def _forward(backend, search, kernel):
    if backend == "reference":
        return xcorr_pixelwise_reference(search, kernel)
    if backend in ("cpu", "cuda"):
        return _backends.native_ops().xcorr_pixelwise_forward(search, kernel)
    return _backends.triton_kernels("xcorr_pixelwise").xcorr_pixelwise_forward(search, kernel)


def _backward(backend, grad, search, kernel, need_search, need_kernel):
    if backend == "reference":
        grad_search, grad_kernel = xcorr_pixelwise_backward_reference(grad, search, kernel, need_search, need_kernel)
        return ([grad_search] if need_search else []), ([grad_kernel] if need_kernel else [])
    if backend in ("cpu", "cuda"):
        grad_search, grad_kernel = _backends.native_ops().xcorr_pixelwise_backward(
            grad, search, kernel, need_search, need_kernel
        )
        return list(grad_search), list(grad_kernel)
    return _backends.triton_kernels("xcorr_pixelwise").xcorr_pixelwise_backward(
        grad, search, kernel, need_search, need_kernel
    )


# --------------------------------------------------------------------------- custom ops


def _output_like(search, kernel):
    return search.new_empty((search.shape[0], kernel.shape[2] * kernel.shape[3], search.shape[2], search.shape[3]))


@torch.library.custom_op("snlt_fast::xcorr_pixelwise", mutates_args=())
def _pixelwise_op(search: Tensor, kernel: Tensor, backend: str) -> Tensor:
    return _forward(backend, search, kernel)


@_pixelwise_op.register_fake
def _(search, kernel, backend):
    return _output_like(search, kernel)


# Each gradient comes back as a list: one tensor when asked for, none otherwise.
@torch.library.custom_op("snlt_fast::xcorr_pixelwise_backward", mutates_args=())
def _pixelwise_backward_op(
    grad: Tensor, search: Tensor, kernel: Tensor, backend: str, need_search: bool, need_kernel: bool
) -> tuple[list[Tensor], list[Tensor]]:
    return _backward(backend, grad, search, kernel, need_search, need_kernel)


@_pixelwise_backward_op.register_fake
def _(grad, search, kernel, backend, need_search, need_kernel):
    grad_search = [torch.empty_like(search, memory_format=torch.contiguous_format)] if need_search else []
    grad_kernel = [torch.empty_like(kernel, memory_format=torch.contiguous_format)] if need_kernel else []
    return grad_search, grad_kernel


def _backward_autograd(ctx, grad):
    search, kernel = ctx.saved_tensors
    need_search, need_kernel = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    grad_search, grad_kernel = _pixelwise_backward_op(grad, search, kernel, ctx.backend, need_search, need_kernel)
    return (grad_search[0] if need_search else None), (grad_kernel[0] if need_kernel else None), None


_pixelwise_op.register_autograd(_backward_autograd, setup_context=_setup_single)


# --------------------------------------------------------------------------- public API


def _check(search, kernel):
    _check_tensors(search, kernel)
    if search.dim() != 4:
        raise ValueError(f"search must be [B, C, H, W], got shape {tuple(search.shape)}")
    if kernel.dim() != 4:
        raise ValueError(f"kernel must be [B, C, h, w] or [1, C, h, w], got shape {tuple(kernel.shape)}")
    _check_batch_and_channels(search, kernel)


def xcorr_pixelwise(search: Tensor, kernel: Tensor, *, backend: str | None = None) -> Tensor:
    """Pixel-wise cross-correlation of `search` [B, C, H, W] with `kernel`.

    kernel is [B, C, h, w], or [1, C, h, w] (one template for the whole batch). Returns
    [B, h*w, H, W] in the inputs' dtype: out[b, i*w + j, y, x] = sum over c of
    search[b, c, y, x] * kernel[b, c, i, j]. Agrees with NanoTrack's matmul formulation
    (`xcorr_pixelwise_matmul`) to 1e-5 relative, and is bit for bit equal across backends
    (see the module docstring).
    """
    _check(search, kernel)
    backend = _backends.resolve_backend(backend, search.device)
    if _backends.calls_native_directly(backend, (search, kernel)):
        return _backends.native_ops().xcorr_pixelwise_forward(search, kernel)
    return _pixelwise_op(search, kernel, backend)


def xcorr_pixelwise_matmul(search: Tensor, kernel: Tensor) -> Tensor:
    """NanoTrack's formulation (one batched matmul): the baseline users have today."""
    batch, _, height, width = search.shape
    out = kernel.flatten(2).transpose(1, 2) @ search.flatten(2)
    return out.view(batch, -1, height, width)
