# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The embedded models: shipped, small, loaded like any HF directory, and good enough on held-out scenes."""
from __future__ import annotations

import numpy as np
import pytest

from robovision_ros.synthetic.evaluation import evaluate_clip
from robovision_ros.model_dir import EMBEDDED_DIR, read_model_info


def test_embedded_models_are_hf_directories_under_15_mb():
    total = sum(p.stat().st_size for p in EMBEDDED_DIR.rglob('*') if p.is_file())
    assert total <= 15 * 1024 * 1024, total
    clip = read_model_info('embedded:tiny_clip')
    vit = read_model_info('embedded:tiny_vit')
    assert (clip.model_type, vit.model_type) == ('clip', 'vit')
    for name in ('config.json', 'model.safetensors', 'preprocessor_config.json', 'vocab.json', 'merges.txt'):
        assert (clip.path / name).is_file(), name


@pytest.fixture(scope='module')
def quality():
    return evaluate_clip('embedded:tiny_clip', 'onnxruntime', scenes=120)


def test_zero_shot_top1(quality):
    assert quality['zero_shot_top1'] >= 0.90, quality


def test_presence_precision_and_recall(quality):
    assert quality['presence_precision'] >= 0.90 and quality['presence_recall'] >= 0.90, quality


def test_localisation_peak_in_box(quality):
    assert quality['localization_hit'] >= 0.80, quality


def test_colour_words_read_the_right_channels(quality):
    """Swapping R and B must break red/blue answers: catches a BGR/RGB mix-up end to end."""
    assert quality['rb_swap_colour_kept'] <= 0.20, quality


def test_vit_features_separate_colours():
    """Nearest-centroid colour classification on the embedded ViT's CLS features of held-out scenes."""
    from robovision_ros.encoder import PerceptionEncoder
    from robovision_ros.synthetic.scenes import COLOURS, SceneGenerator

    encoder = PerceptionEncoder('embedded:tiny_vit', 'onnxruntime', 'cpu', 'fp32')
    generator = SceneGenerator(seed=9100, min_objects=1, max_objects=1)
    scenes = [generator.scene(i) for i in range(80)]
    features, _ = encoder.encode_images([s.image for s in scenes], normalize=True)
    embeddings = np.stack([f.global_embedding for f in features])
    colours = np.array([list(COLOURS).index(s.objects[0].colour) for s in scenes])
    train, test = slice(0, 50), slice(50, 80)
    centroids = np.stack([embeddings[train][colours[train] == c].mean(0) for c in range(len(COLOURS))])
    predicted = np.argmax(embeddings[test] @ centroids.T, axis=1)
    assert (predicted == colours[test]).mean() >= 0.9
