# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""numpy <-> message helpers: exact round trips and clear rejections."""
from __future__ import annotations

import numpy as np
import pytest

from robovision_ros.message_conversions import MessageConversionError, fill_patch_features, \
    patch_features_to_numpy, zero_shot_scores
from robovision_msgs.msg import PatchFeatures, ZeroShotLabels


@pytest.mark.parametrize('dtype', [np.float32, np.float16])
def test_round_trip_is_exact(dtype):
    features = np.random.default_rng(0).standard_normal((6, 5)).astype(dtype)
    msg = fill_patch_features(PatchFeatures(), features, 2, 3, np.arange(4, dtype=np.float32))
    assert msg.dtype == np.dtype(dtype).name
    assert list(msg.shape) == [6, 5] and (msg.grid_h, msg.grid_w, msg.dim) == (2, 3, 5)
    tensor = patch_features_to_numpy(msg)
    np.testing.assert_array_equal(tensor.features, features)
    np.testing.assert_array_equal(tensor.global_embedding, np.arange(4, dtype=np.float32))
    # Row i is the patch at grid row i // grid_w, column i % grid_w.
    np.testing.assert_array_equal(tensor.grid[1, 0], features[3])


def test_accepts_grid_shaped_input_and_big_endian_arrays():
    features = np.arange(2 * 2 * 3, dtype='>f4').reshape(2, 2, 3)
    tensor = patch_features_to_numpy(fill_patch_features(PatchFeatures(), features, 2, 2))
    np.testing.assert_array_equal(tensor.grid, features.astype('<f4'))


def test_rejects_unsupported_dtype():
    with pytest.raises(MessageConversionError, match="'float64' not supported; supported: float32, float16"):
        fill_patch_features(PatchFeatures(), np.zeros((4, 2)), 2, 2)


def test_rejects_grid_mismatch():
    with pytest.raises(MessageConversionError, match='grid 3x3 needs 9'):
        fill_patch_features(PatchFeatures(), np.zeros((4, 2), np.float32), 3, 3)


def test_rejects_inconsistent_messages():
    msg = fill_patch_features(PatchFeatures(), np.zeros((4, 2), np.float32), 2, 2)
    msg.data = msg.data[:-1]
    with pytest.raises(MessageConversionError, match='31 bytes'):
        patch_features_to_numpy(msg)

    msg = fill_patch_features(PatchFeatures(), np.zeros((4, 2), np.float32), 2, 2)
    msg.shape = [2, 4]
    with pytest.raises(MessageConversionError, match='disagrees'):
        patch_features_to_numpy(msg)

    msg = fill_patch_features(PatchFeatures(), np.zeros((4, 2), np.float32), 2, 2)
    msg.dtype = 'bfloat16'
    with pytest.raises(MessageConversionError, match="'bfloat16' not supported"):
        patch_features_to_numpy(msg)


def test_zero_shot_scores_pairs_labels():
    msg = ZeroShotLabels(labels=['a', 'b'], scores=[0.25, 0.75])
    assert zero_shot_scores(msg) == {'a': 0.25, 'b': 0.75}
    msg.scores = [1.0]
    with pytest.raises(MessageConversionError, match='2 labels but 1 scores'):
        zero_shot_scores(msg)
