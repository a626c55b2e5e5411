"""The tensor crop against pysot's OpenCV crop on real frames.

`pysot_subwindow` below is written from pysot's `SiameseTracker.get_subwindow`:
a square of side `original_size` whose first pixel is floor(centre - (size+1)/2 + 0.5),
cut from the frame padded with the channel mean (stored into uint8, so truncated),
then `cv2.resize` (bilinear) to `out_size` unless the sizes already agree.
"""

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED_DATA
from snlt_fast.tracker.crop import channel_fill, crop_and_resize, frame_to_tensor

BIKER_FRAMES = ("0001.jpg", "0050.jpg", "0142.jpg")


def pysot_subwindow(image, center, out_size, original_size, channel_average):
    height, width = image.shape[:2]
    half = (original_size + 1) / 2
    x_min = int(np.floor(center[0] - half + 0.5))
    y_min = int(np.floor(center[1] - half + 0.5))
    x_max, y_max = x_min + original_size - 1, y_min + original_size - 1
    left, top = max(0, -x_min), max(0, -y_min)
    right, bottom = max(0, x_max - width + 1), max(0, y_max - height + 1)
    padded = np.empty((height + top + bottom, width + left + right, 3), np.uint8)
    padded[...] = channel_average  # numpy truncates the float mean into uint8
    padded[top : top + height, left : left + width] = image
    patch = padded[y_min + top : y_max + top + 1, x_min + left : x_max + left + 1]
    if out_size != original_size:
        patch = cv2.resize(patch, (out_size, out_size))
    return patch.transpose(2, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def biker_frames():
    folder = SHARED_DATA / "otb" / "sequences" / "Biker" / "img"
    if not folder.is_dir():
        pytest.skip(f"real data not found at {folder}")
    return [cv2.imread(str(folder / name)) for name in BIKER_FRAMES]


def _tensor_crop(image, centers, sizes, out_size):
    frame = frame_to_tensor(image, "cpu")
    return crop_and_resize(
        frame,
        torch.tensor(centers, dtype=torch.float64),
        torch.tensor(sizes, dtype=torch.float64),
        out_size,
        channel_fill(frame),
    )


@settings(max_examples=60)
@given(
    frame_index=st.integers(0, len(BIKER_FRAMES) - 1),
    cx=st.floats(-80, 720),
    cy=st.floats(-80, 440),
    original_size=st.integers(9, 1100),
    out_size=st.sampled_from([127, 255, 287, 831, None]),
)
def test_crop_matches_pysot_within_one_grey_level(biker_frames, frame_index, cx, cy, original_size, out_size):
    image = biker_frames[frame_index]
    out_size = out_size or original_size
    expected = pysot_subwindow(image, (cx, cy), out_size, original_size, image.mean(axis=(0, 1)))
    got = _tensor_crop(image, [[cx, cy]], [original_size], out_size)[0].numpy()
    difference = np.abs(got - expected)
    assert difference.max() <= 1, f"crop differs by {difference.max()} grey levels"
    # OpenCV interpolates in fixed point, so only values near a half grey level may round apart.
    assert (difference == 0).mean() > 0.8
    if out_size == original_size:
        np.testing.assert_array_equal(got, expected)


def test_crop_on_tracking_sizes_is_mostly_exact(biker_frames):
    """The crops a tracker makes on Biker (template 127, search 255, a 2x downscale, an upscale)."""
    image = biker_frames[0]
    average = image.mean(axis=(0, 1))
    cases = [((300.5, 150.0), 70, 127), ((300.5, 150.0), 141, 255), ((10.0, 350.0), 510, 255), ((600, 20), 60, 287)]
    for center, original_size, out_size in cases:
        expected = pysot_subwindow(image, center, out_size, original_size, average)
        got = _tensor_crop(image, [center], [original_size], out_size)[0].numpy()
        assert np.abs(got - expected).max() <= 1
        assert (got == expected).mean() > 0.85


def test_batched_crops_equal_single_crops(biker_frames):
    image = biker_frames[1]
    centers = [[100.0, 80.0], [630.0, 350.0], [-20.0, 200.5]]
    sizes = [200, 90, 313]
    batched = _tensor_crop(image, centers, sizes, 255)
    for index in range(3):
        single = _tensor_crop(image, [centers[index]], [sizes[index]], 255)
        assert torch.equal(batched[index : index + 1], single)


def test_non_contiguous_frame_gives_the_same_crop(biker_frames):
    image = biker_frames[2]
    flipped_twice = np.ascontiguousarray(image[:, ::-1])[:, ::-1]
    assert not flipped_twice.flags["C_CONTIGUOUS"]
    assert torch.equal(
        _tensor_crop(flipped_twice, [[320.0, 180.0]], [400], 255), _tensor_crop(image, [[320.0, 180.0]], [400], 255)
    )


def test_fill_is_truncated_channel_mean():
    frame = torch.tensor([[[0, 10, 255], [1, 11, 254]]], dtype=torch.uint8).expand(2, 2, 3)
    assert channel_fill(frame).tolist() == [0.0, 10.0, 254.0]


@pytest.mark.parametrize(
    "frame, error",
    [
        (np.zeros((4, 4), np.uint8), ValueError),
        (np.zeros((4, 4, 4), np.uint8), ValueError),
        (np.zeros((4, 4, 3), np.float32), TypeError),
        (np.zeros((1, 4, 3), np.uint8), ValueError),
    ],
)
def test_bad_frames_are_clear_errors(frame, error):
    with pytest.raises(error, match="frame"):
        frame_to_tensor(frame, "cpu")
