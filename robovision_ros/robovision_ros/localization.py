# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Text-query localisation: query-to-patch similarity heatmap, its peak, and a region in image pixels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robovision_ros.preprocessing import PreprocessGeometry


@dataclass(frozen=True)
class Localization:
    heatmap: np.ndarray  # [grid_h, grid_w] cosine similarity of each patch to the query
    peak_xy: tuple[int, int]  # source-image pixel at the centre of the best patch
    peak_score: float
    roi_xywh: tuple[int, int, int, int]  # source-image pixels: x_offset, y_offset, width, height


def similarity_heatmaps(patch_tokens: np.ndarray, queries: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """
    Return the cosine similarity of each query [Q, D] to each patch token [N, D] as [Q, grid_h, grid_w] maps.

    One matrix product for all queries; patch norms are computed once.
    """
    patch_norms = np.linalg.norm(patch_tokens, axis=1)[:, None]
    query_norms = np.linalg.norm(queries, axis=1)[None, :] + 1e-12
    similarity = patch_tokens @ queries.T / (patch_norms * query_norms + 1e-12)
    return similarity.T.reshape(len(queries), *grid_hw)


def similarity_heatmap(patch_tokens: np.ndarray, query: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    """Cosine similarity of `query` [D] to each patch token [N, D], as a [grid_h, grid_w] map."""
    return similarity_heatmaps(patch_tokens, query[None, :], grid_hw)[0]


def localize(heatmap: np.ndarray, patch_size: int, geometry: PreprocessGeometry,
             relative_threshold: float = 0.5) -> Localization:
    """
    Return the peak of `heatmap` and the bounding box around it, mapped back to source-image pixels.

    The box holds the 4-connected patches around the peak that score at least
    median + relative_threshold * (peak - median).
    """
    grid_h, grid_w = heatmap.shape
    py, px = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    peak = float(heatmap[py, px])
    cut = float(np.median(heatmap)) + relative_threshold * (peak - float(np.median(heatmap)))
    keep = np.zeros_like(heatmap, dtype=bool)
    stack = [(py, px)]
    while stack:
        y, x = stack.pop()
        if 0 <= y < grid_h and 0 <= x < grid_w and not keep[y, x] and heatmap[y, x] >= cut:
            keep[y, x] = True
            stack.extend(((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)))
    ys, xs = np.nonzero(keep)
    top, left = geometry.to_source(ys.min() * patch_size, xs.min() * patch_size)
    bottom, right = geometry.to_source((ys.max() + 1) * patch_size, (xs.max() + 1) * patch_size)
    cy, cx = geometry.to_source((py + 0.5) * patch_size, (px + 0.5) * patch_size)
    height, width = geometry.source_hw
    cx_i, cy_i = min(int(cx), width - 1), min(int(cy), height - 1)
    return Localization(heatmap, (cx_i, cy_i), peak,
                        (int(left), int(top), max(int(right) - int(left), 1), max(int(bottom) - int(top), 1)))
