# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Debug rendering for people: the frame with the best label and one query's heatmap and box, or detections."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

# The detection view is drawn at most this large (longer side); larger frames are scaled down first.
MAX_DETECTION_VIEW_SIDE = 1280
# Box colours (RGB) of the detection view, one per query index (cycled).
DETECTION_COLOURS = ((255, 64, 64), (64, 160, 255), (64, 220, 64), (255, 210, 0), (220, 64, 255), (0, 230, 230),
                     (255, 140, 0), (255, 255, 255))


def render_debug_image(rgb: np.ndarray, title: str, heatmap: Optional[np.ndarray] = None,
                       roi_xywh: Optional[tuple[int, int, int, int]] = None,
                       crop_box: Optional[tuple[int, int, int, int]] = None, query: str = '') -> np.ndarray:
    """
    Render an RGB uint8 frame as an RGB uint8 overlay.

    `heatmap` ([grid_h, grid_w], cosine) is drawn over `crop_box` (x0, y0, x1, y1: the part of the frame the model
    saw), `roi_xywh` as a box labelled `query`.
    """
    import cv2

    out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    if heatmap is not None:
        x0, y0, x1, y1 = crop_box or (0, 0, out.shape[1], out.shape[0])
        span = float(heatmap.max() - heatmap.min()) or 1.0
        normalised = ((heatmap - heatmap.min()) / span * 255).astype(np.uint8)
        resized = cv2.resize(normalised, (x1 - x0, y1 - y0), interpolation=cv2.INTER_CUBIC)
        colour = cv2.applyColorMap(resized, cv2.COLORMAP_JET)[..., ::-1]
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = (0.55 * region + 0.45 * colour).astype(np.uint8)
    if roi_xywh is not None:
        x, y, w, h = roi_xywh
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

    Boxes are coloured by query index, so the instances of one query share a colour. A frame larger than
    MAX_DETECTION_VIEW_SIDE is drawn scaled down (area-averaged), its boxes with it.
    """
    import cv2

    scale = min(1.0, MAX_DETECTION_VIEW_SIDE / max(rgb.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        out = cv2.resize(np.ascontiguousarray(rgb, dtype=np.uint8), size, interpolation=cv2.INTER_AREA)
        boxes = [tuple(v * scale for v in box) for box in boxes]
    else:
        out = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
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
