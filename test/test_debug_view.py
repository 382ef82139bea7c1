# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The debug overlay: what it draws, and a cost bounded whatever the frame's size (issue 22 item 13)."""
from __future__ import annotations

import tracemalloc

import numpy as np

from robovision_ros.debug_view import MAX_DEBUG_SIDE, render_debug_image

HEATMAP = np.linspace(-0.2, 0.4, 49, dtype=np.float32).reshape(7, 7)


def test_small_frames_keep_their_size_and_the_overlay_stays_in_the_crop():
    grey = np.full((48, 64, 3), 128, np.uint8)
    out = render_debug_image(grey, 'red cup 0.91', HEATMAP, roi_xywh=(30, 30, 10, 8), crop_box=(8, 0, 56, 48),
                             query='red cup 0.31')
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert (out[:26] == 0).mean() > 0.6  # the title bar (white text on black)
    assert (out[27:, :8] == 128).all() and (out[27:, 56:] == 128).all()  # outside the crop: the frame as it was
    assert (out[27:, 8:56] != 128).any(axis=2).mean() > 0.9  # inside: the heatmap blended in
    assert (out[38, 30:41] == 255).all()  # the box's bottom edge (y + h = 38), white
    assert (grey == 128).all()  # the frame itself is not drawn on


def test_a_6000x6000_frame_costs_a_bounded_overlay():
    """
    A grey 6000x6000 frame (a 35 KB PNG on the wire) is rendered at 1280x1280 in uint8.

    Before, the overlay was blended at full size in float64: 2.4 GB for this frame. tracemalloc sees every numpy
    allocation, OpenCV's outputs included: the peak stays a few overlay copies (5 MiB each), not the frame's size.
    """
    frame = np.full((6000, 6000, 3), 90, np.uint8)[..., ::-1]  # a channel-reversed view, as bgr8 decodes to
    tracemalloc.start()
    try:
        out = render_debug_image(frame, 'grey', HEATMAP, roi_xywh=(3000, 3000, 600, 600),
                                 crop_box=(0, 0, 6000, 6000), query='q')
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert out.shape == (MAX_DEBUG_SIDE, MAX_DEBUG_SIDE, 3) and out.dtype == np.uint8
    assert peak < 6 * MAX_DEBUG_SIDE ** 2 * 3, peak  # the frame is 108 MB; the old float64 blend 1.7 GB more
    scale = MAX_DEBUG_SIDE / 6000
    corner = round(3000 * scale), round(3600 * scale)
    assert (out[corner[1], corner[0]:corner[1]] == 255).all()  # the box, scaled with the frame
    assert (out[27:] != 90).any(axis=2).mean() > 0.9  # the heatmap covers the crop, which is the whole frame


def test_wide_frames_are_bounded_on_their_longest_side():
    out = render_debug_image(np.zeros((100, 4000, 3), np.uint8), 'wide')
    assert out.shape == (32, MAX_DEBUG_SIDE, 3)
