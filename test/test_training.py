# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Training is seeded and reproducible (a short run twice gives identical weights)."""
from __future__ import annotations

import numpy as np


def test_clip_training_is_reproducible(tmp_path):
    from safetensors.numpy import load_file

    from robovision_ros.synthetic.training import train_clip

    runs = [train_clip(tmp_path / str(i), steps=12, seed=5, scenes=64, batch=16, log=lambda _: None)
            for i in range(2)]
    first, second = (load_file(str(run / 'model.safetensors')) for run in runs)
    assert first.keys() == second.keys()
    for name in first:  # exact: the same seeded run twice on the same machine (one code path)
        np.testing.assert_array_equal(first[name], second[name])
    assert (runs[0] / 'vocab.json').read_text() == (runs[1] / 'vocab.json').read_text()


def test_siglip_training_is_reproducible(tmp_path):
    from safetensors.numpy import load_file

    from robovision_ros.model_dir import read_model_info
    from robovision_ros.synthetic.training import train_siglip

    runs = [train_siglip(tmp_path / str(i), steps=8, seed=5, scenes=48, batch=8, log=lambda _: None) for i in range(2)]
    first, second = (load_file(str(run / 'model.safetensors')) for run in runs)
    assert first.keys() == second.keys() and 'logit_bias' in first
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])
    assert read_model_info(str(runs[0])).family == 'siglip'
