# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Localisation: known answers through the real preprocessing geometry."""
from __future__ import annotations

import numpy as np
import pytest

from robovision_ros.localization import localize, similarity_heatmap
from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig
from robovision_ros.synthetic.tiny_models import clip_preprocessor_config


def test_heatmap_peak_and_roi_map_to_source_pixels():
    # 8x8 grid of 8-px patches over a 64x64 model input taken from a 480x640 image (scale 64/480, crop x=10).
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(clip_preprocessor_config(64)))
    geometry = preprocessor.geometry((480, 640))
    rng = np.random.default_rng(0)
    query = rng.standard_normal(16)
    tokens = rng.standard_normal((64, 16)) * 0.1
    for gy, gx in ((2, 5), (2, 6), (3, 5), (3, 6)):  # the object covers grid rows 2-3, columns 5-6
        tokens[gy * 8 + gx] = query + rng.standard_normal(16) * 0.05
    tokens[3 * 8 + 6] = query  # exact match: the peak
    heatmap = similarity_heatmap(tokens, query, (8, 8))
    result = localize(heatmap, 8, geometry)
    assert result.peak_score == pytest.approx(1.0, abs=1e-6)
    # The resize makes 480x640 into 64x85: y scales by 480/64 = 7.5, x by 640/85; the crop starts at x = 10.
    sx = 640 / 85
    # peak patch (row 3, col 6) has its centre at model pixel (y 28, x 52)
    assert result.peak_xy == (int((52 + 10) * sx), int(28 * 7.5))
    x, y, w, h = result.roi_xywh
    assert (x, y) == (int((40 + 10) * sx), int(16 * 7.5))
    assert (x + w, y + h) == (int((56 + 10) * sx), int(32 * 7.5))


def test_roi_is_clamped_to_the_image():
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(clip_preprocessor_config(64)))
    geometry = preprocessor.geometry((64, 64))
    heatmap = np.zeros((8, 8))
    heatmap[7, 7] = 1.0
    result = localize(heatmap, 8, geometry)
    x, y, w, h = result.roi_xywh
    assert (x, y, w, h) == (56, 56, 8, 8) and result.peak_xy == (60, 60)


def test_heatmaps_for_many_queries_equal_one_at_a_time():
    from robovision_ros.localization import similarity_heatmaps

    rng = np.random.default_rng(3)
    tokens, queries = rng.standard_normal((12, 8)), rng.standard_normal((3, 8))
    maps = similarity_heatmaps(tokens, queries, (3, 4))
    assert maps.shape == (3, 3, 4)
    for q in range(3):
        # float64 cosines of length-8 vectors through a [12, 8] x [8, 3] and a [12, 8] x [8, 1] product (possibly two
        # BLAS kernels, different summation orders): within 2 * gamma_8 = 16 * 2^-53 (2e-15) absolute on any CPU.
        # An absolute term is needed: a relative one alone fails on a cosine near zero.
        np.testing.assert_allclose(maps[q], similarity_heatmap(tokens, queries[q], (3, 4)), rtol=1e-12, atol=1e-13)
        expected = tokens @ queries[q] / (np.linalg.norm(tokens, axis=1) * np.linalg.norm(queries[q]))
        np.testing.assert_allclose(maps[q].ravel(), expected, rtol=1e-9, atol=1e-12)
