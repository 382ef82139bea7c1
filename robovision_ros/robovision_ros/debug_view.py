# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Debug rendering for people: the frame with the best label, and the heatmap and box of one query."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

# The debug image is rendered at most this long on its longest side (720p and smaller frames keep their size), so
# its cost does not follow the camera's: a 6000x6000 frame costs a 1280x1280 overlay, all in uint8.
MAX_DEBUG_SIDE = 1280
# Box colours (RGB) of the detection view, one per query index (cycled).
DETECTION_COLOURS = ((255, 64, 64), (64, 160, 255), (64, 220, 64), (255, 210, 0), (220, 64, 255), (0, 230, 230),
                     (255, 140, 0), (255, 255, 255))


def _bounded_copy(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """
    Return an RGB uint8 copy of `rgb` at most `max_side` long on each side, and its scale (output / input).

    A large frame is first subsampled by striding (a view: nothing of the frame's size is allocated), to between
    once and twice the target, then area-averaged down to it.
    """
    import cv2

    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return np.ascontiguousarray(rgb, dtype=np.uint8).copy(), 1.0
    stride = max(1, math.floor(1 / scale))
    subsampled = np.ascontiguousarray(rgb[::stride, ::stride], dtype=np.uint8)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(subsampled, size, interpolation=cv2.INTER_AREA), size[0] / width


def render_debug_image(rgb: np.ndarray, title: str, heatmap: Optional[np.ndarray] = None,
                       roi_xywh: Optional[tuple[int, int, int, int]] = None,
                       crop_box: Optional[tuple[int, int, int, int]] = None, query: str = '',
                       max_side: int = MAX_DEBUG_SIDE) -> np.ndarray:
    """
    Render an RGB uint8 frame as an RGB uint8 overlay, at most `max_side` pixels on its longest side.

    `heatmap` ([grid_h, grid_w], cosine) is drawn over `crop_box` (x0, y0, x1, y1: the part of the frame the model
    saw), `roi_xywh` as a box labelled `query`; both are in the frame's pixels and scaled with it. Blending is in
    uint8, so the cost is a few copies of the bounded overlay, whatever the frame's size.
    """
    import cv2

    out, scale = _bounded_copy(rgb, max_side)
    if heatmap is not None:
        x0, y0, x1, y1 = (round(v * scale) for v in (crop_box or (0, 0, rgb.shape[1], rgb.shape[0])))
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(max(x1, x0 + 1), out.shape[1]), min(max(y1, y0 + 1), out.shape[0])
        span = float(heatmap.max() - heatmap.min()) or 1.0
        normalised = ((heatmap - heatmap.min()) / span * 255).astype(np.uint8)
        resized = cv2.resize(normalised, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
        colour = np.ascontiguousarray(cv2.applyColorMap(resized, cv2.COLORMAP_JET)[..., ::-1])
        out[y0:y1, x0:x1] = cv2.addWeighted(out[y0:y1, x0:x1], 0.55, colour, 0.45, 0.0)
    if roi_xywh is not None:
        x, y, w, h = (round(v * scale) for v in roi_xywh)
        cv2.rectangle(out, (x, y), (x + w, y + h), (255, 255, 255), 2)
        if query:
            cv2.putText(out, query, (x, max(y - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                        cv2.LINE_AA)
    cv2.rectangle(out, (0, 0), (out.shape[1], 26), (0, 0, 0), -1)
    cv2.putText(out, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def render_detections(rgb: np.ndarray, title: str, boxes: Sequence[tuple[float, ...]], captions: Sequence[str],
                      query_indices: Sequence[int]) -> np.ndarray:
    """
    Render an RGB uint8 frame with one box per detection (x0, y0, x1, y1 in its pixels) and its caption.

    Boxes are coloured by query index, so the instances of one query share a colour. The view is at most
    MAX_DEBUG_SIDE on its longer side (a larger frame is drawn scaled down, its boxes with it).
    """
    import cv2

    out, scale = _bounded_copy(rgb, MAX_DEBUG_SIDE)
    boxes = [tuple(v * scale for v in box) for box in boxes]
    thickness = max(1, round(min(out.shape[:2]) / 240))
    for (x0, y0, x1, y1), caption, query in zip(boxes, captions, query_indices):
        colour = DETECTION_COLOURS[query % len(DETECTION_COLOURS)]
        top_left, bottom_right = (int(round(x0)), int(round(y0))), (int(round(x1)) - 1, int(round(y1)) - 1)
        cv2.rectangle(out, top_left, bottom_right, colour, thickness)
        (width, height), _ = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        text_y = top_left[1] - 4 if top_left[1] - height - 6 >= 26 else top_left[1] + height + 4
        cv2.rectangle(out, (top_left[0], text_y - height - 2), (top_left[0] + width + 2, text_y + 3), (0, 0, 0), -1)
        cv2.putText(out, caption, (top_left[0] + 1, text_y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    cv2.rectangle(out, (0, 0), (out.shape[1], 26), (0, 0, 0), -1)
    cv2.putText(out, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return out
