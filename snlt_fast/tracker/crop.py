"""SiamRPN++ crops as tensor ops on the frame's device.

pysot cuts a square of side `original_size` (an integer) centred on the target
out of the frame padded with the channel mean, then resizes it with OpenCV's
bilinear `cv2.resize`. Here the same samples are read straight from the frame
with one `grid_sample` call for all targets: the sample positions are OpenCV's
(pixel centres aligned, clamped to the cut square), and the padding comes from
sampling `frame - fill` with zero padding and adding `fill` back. The result is
rounded to whole grey levels as OpenCV's uint8 output is; it agrees with pysot's
crop within one grey level, and exactly on most pixels (OpenCV interpolates in
11-bit fixed point and truncates on the way, so values near a half grey level
can round apart).
"""

import numpy as np
import torch
import torch.nn.functional as F


def frame_to_tensor(frame, device):
    """An HxWx3 uint8 BGR frame (numpy array or tensor) as a uint8 tensor on `device`."""
    if isinstance(frame, np.ndarray):
        frame = np.ascontiguousarray(frame)  # torch cannot view negative strides
    tensor = torch.as_tensor(frame)
    if tensor.dim() != 3 or tensor.shape[2] != 3:
        raise ValueError(f"frame must be an HxWx3 BGR image, got shape {tuple(tensor.shape)}")
    if tensor.dtype != torch.uint8:
        raise TypeError(f"frame must be uint8, got {tensor.dtype}")
    if tensor.shape[0] < 2 or tensor.shape[1] < 2:
        raise ValueError(f"frame must be at least 2x2 pixels, got {tuple(tensor.shape[:2])}")
    return tensor.to(device, non_blocking=True)


def channel_fill(frame):
    """pysot's padding colour: the per-channel mean of the frame, truncated to uint8 as numpy stores it."""
    return frame.reshape(-1, 3).to(torch.float64).mean(dim=0).floor().to(torch.float32)


def crop_and_resize(frame, centers, original_sizes, out_size, fill):
    """Crops of `frame` around each target, resized to out_size x out_size.

    frame           [H, W, 3] uint8 tensor (BGR)
    centers         [B, 2] float64 (cx, cy) in frame pixels
    original_sizes  [B] float64, the integer side of each square cut from the frame
    fill            [3] float32, the colour of the area outside the frame
    returns         [B, 3, out_size, out_size] float32 with whole-number values
    """
    height, width = frame.shape[0], frame.shape[1]
    sizes = original_sizes.to(torch.float64)
    # pysot: the cut square's first pixel is floor(centre - (size + 1) / 2 + 0.5).
    origins = torch.floor(centers - ((sizes + 1) / 2)[:, None] + 0.5)
    # OpenCV's bilinear sample positions in the cut square, clamped to its pixels.
    steps = torch.arange(out_size, dtype=torch.float64, device=frame.device)
    positions = (steps[None, :] + 0.5) * (sizes / out_size)[:, None] - 0.5
    positions = torch.minimum(positions.clamp(min=0), (sizes - 1)[:, None])
    xs = origins[:, 0:1] + positions
    ys = origins[:, 1:2] + positions
    # align_corners=True: -1 and 1 are the centres of the first and last pixels.
    grid_x = (xs * (2 / (width - 1)) - 1).to(torch.float32)
    grid_y = (ys * (2 / (height - 1)) - 1).to(torch.float32)
    count = centers.shape[0]
    grid = torch.stack(
        (grid_x[:, None, :].expand(count, out_size, out_size), grid_y[:, :, None].expand(count, out_size, out_size)),
        dim=-1,
    )
    shifted = (frame.permute(2, 0, 1) - fill[:, None, None])[None]
    samples = F.grid_sample(
        shifted, grid.reshape(1, count * out_size, out_size, 2), mode="bilinear", padding_mode="zeros", align_corners=True
    )
    crops = samples.reshape(3, count, out_size, out_size).permute(1, 0, 2, 3)
    # OpenCV rounds halves up.
    return torch.floor(crops + (fill[None, :, None, None] + 0.5))
