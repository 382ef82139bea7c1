# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
docs/detection.md is what robovision_evaluate_detector renders from the results it recorded, and they still hold.

The recorded test-split numbers are measured again here on the shipped model (the same scenes, the same code path);
ONNX Runtime's float32 results differ between CPUs only by rounding, which can move a detection across the mAP
threshold or swap two near-equal scores, so the re-measured numbers must agree within 0.02.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from robovision_ros.model_dir import EMBEDDED_DIR
from robovision_ros.synthetic.detection_evaluation import evaluate_detector, render_doc

DOCS = Path(__file__).resolve().parents[1] / 'docs'


@pytest.fixture(scope='module')
def recorded():
    return json.loads((DOCS / 'detection_results.json').read_text())


def test_the_doc_is_rendered_from_its_recorded_results(recorded):
    assert render_doc(recorded) == (DOCS / 'detection.md').read_text()


def test_the_record_is_of_the_shipped_model(recorded):
    directory = EMBEDDED_DIR / 'tiny_owl'
    assert recorded['model']['bytes'] == sum(f.stat().st_size for f in directory.iterdir() if f.is_file())
    assert recorded['model']['training'] == json.loads((directory / 'training.json').read_text())
    assert recorded['test']['split'] == 'test' and recorded['validation']['split'] == 'validation'


def test_the_recorded_test_numbers_are_measured_again(recorded):
    test = recorded['test']
    again = evaluate_detector(test['model'], test['backend'], 'test', test['scenes_per_set'])
    for kind in ('seen', 'held_out'):
        assert again[kind]['scenes'] == test[kind]['scenes'] and again[kind]['objects'] == test[kind]['objects']
        for metric in ('map_50', 'map_50_95'):
            assert again[kind][metric] == pytest.approx(test[kind][metric], abs=0.02), (kind, metric)
            assert again[kind]['image_queries'][metric] == pytest.approx(test[kind]['image_queries'][metric],
                                                                         abs=0.02), (kind, metric)
    for group in ('all', 'seen', 'held_out'):
        assert again['duplicates'][group]['scenes'] == test['duplicates'][group]['scenes']
        assert again['duplicates'][group]['instance_recall'] == pytest.approx(
            test['duplicates'][group]['instance_recall'], abs=0.02)


def test_the_embedded_detector_is_small_and_finds_what_it_was_trained_on(recorded):
    """Floors a retrained model must keep (the recorded numbers are well above them)."""
    assert recorded['model']['bytes'] <= 4 * 1024 * 1024
    test = recorded['test']
    assert test['seen']['map_50'] >= 0.85 and test['duplicates']['seen']['instance_recall'] >= 0.85
