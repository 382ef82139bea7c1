# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Debug rendering for people: the frame with the best label, and the heatmap and box of one query."""
from __future__ import annotations

from typing import Optional

import numpy as np


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
