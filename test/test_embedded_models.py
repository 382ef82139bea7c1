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
    siglip = read_model_info('embedded:tiny_siglip')
    assert (clip.model_type, vit.model_type, siglip.family) == ('clip', 'vit', 'siglip')
    for name in ('config.json', 'model.safetensors', 'preprocessor_config.json', 'vocab.json', 'merges.txt'):
        assert (clip.path / name).is_file(), name
        assert (siglip.path / name).is_file(), name


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


@pytest.fixture(scope='module')
def siglip_quality():
    return evaluate_clip('embedded:tiny_siglip', 'onnxruntime', scenes=120)


def test_tiny_siglip_quality_with_sigmoid_scores(siglip_quality):
    """
    The tiny SigLIP on the same held-out scenes, presence at probability 0.5 (its own threshold).

    Bounds a few points under what the shipped model measured on 200 scenes (docs: top-1 0.865, presence precision
    0.657 / recall 0.848, localisation 0.813): it is weaker than the tiny CLIP, trained on half the images per step.
    """
    assert siglip_quality['zero_shot_top1'] >= 0.80, siglip_quality
    assert siglip_quality['presence_precision'] >= 0.55 and siglip_quality['presence_recall'] >= 0.75, siglip_quality
    assert siglip_quality['localization_hit'] >= 0.70, siglip_quality
    assert siglip_quality['rb_swap_colour_kept'] <= 0.20, siglip_quality
