# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Detection decoding without a model: NMS, box mapping to source pixels, query logits, decode, mAP, image queries."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from robovision_ros.detection import PatchPredictions, box_iou, boxes_to_source, class_aware_nms, \
    decode_detections, nms, query_logits, sigmoid
from robovision_ros.detection_queries import ImageQueryError, check_image_query_paths, query_set_problem, \
    read_example_image, validate_image_queries
from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig
from robovision_ros.synthetic.detection_evaluation import FrameDetections, average_precision, instance_recall, \
    mean_average_precision
from robovision_ros.synthetic.tiny_models import clip_preprocessor_config, owl_preprocessor_config
from robovision_ros.vocabulary import VocabularyError


def _brute_force_nms(boxes, scores, threshold):
    """Take the best remaining box and drop every remaining box overlapping it too much, until none remain."""
    remaining = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        remaining = [i for i in remaining if box_iou(boxes[best:best + 1], boxes[i:i + 1])[0, 0] <= threshold]
    return keep


@pytest.mark.parametrize('seed', range(5))
def test_nms_keeps_what_greedy_suppression_keeps(seed):
    rng = np.random.default_rng(seed)
    corners = rng.uniform(0, 50, (40, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 30, (40, 2))], axis=1)
    scores = rng.uniform(0, 1, 40)
    for threshold in (0.0, 0.3, 0.5, 0.9):
        assert nms(boxes, scores, threshold).tolist() == _brute_force_nms(boxes, scores, threshold)
    assert nms(boxes, scores, 1.0).tolist() == np.argsort(-scores, kind='stable').tolist()  # 1 = off


def test_class_aware_nms_suppresses_within_a_query_only():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    classes = np.array([0, 0, 1, 0])
    # Box 1 overlaps box 0 of its own query (IoU 0.68) and goes; box 2 overlaps box 0 exactly but is another query.
    assert class_aware_nms(boxes, scores, classes, 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]  # class-agnostic would drop it
    assert class_aware_nms(boxes[:0], scores[:0], classes[:0], 0.5).tolist() == []


def test_box_iou_of_known_boxes():
    a = np.array([[0, 0, 10, 10]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10], [2, 2, 2, 8]], float)
    np.testing.assert_allclose(box_iou(a, b)[0], [50 / 150, 0.0, 1.0, 0.0])


GEOMETRIES = {
    'crop (CLIP: shortest edge, centre crop)': clip_preprocessor_config(64),
    'squash (OWL-ViT)': owl_preprocessor_config('owlvit', 64),
    'pad (OWLv2)': owl_preprocessor_config('owlv2', 64),
}


@pytest.mark.parametrize('name', GEOMETRIES)
@pytest.mark.parametrize('source_hw', [(240, 320), (480, 640), (720, 1280), (300, 200), (64, 64), (97, 131)])
def test_a_box_drawn_in_the_frame_maps_back_to_where_it_was_drawn(name, source_hw):
    """
    Draw a white rectangle, preprocess, find it in the model input, map its box back: it lands where it was drawn.

    The tolerance is what one model-input pixel spans in the frame (plus the resampling filter's blur at the edge).
    """
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(GEOMETRIES[name]))
    h, w = source_hw
    frame = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = int(w * 0.4), int(h * 0.35), int(w * 0.7), int(h * 0.8)
    frame[y0:y1, x0:x1] = 255
    model_input = preprocessor.resize_and_crop(frame)[..., 0]
    ys, xs = np.nonzero(model_input >= 128)
    found = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], float)
    geometry = preprocessor.geometry(source_hw)
    mapped = boxes_to_source(found, geometry)[0]
    pixel = max(1.0 / geometry.scale_x, 1.0 / geometry.scale_y)  # source pixels per model-input pixel
    np.testing.assert_allclose(mapped, [x0, y0, x1, y1], atol=1.01 * pixel)


def test_boxes_outside_the_frame_are_clamped_to_it():
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(owl_preprocessor_config('owlv2', 64)))
    geometry = preprocessor.geometry((240, 320))  # the frame fills rows 0 .. 48 of the 64x64 input
    mapped = boxes_to_source(np.array([[-5.0, 40.0, 70.0, 64.0]]), geometry)[0]
    np.testing.assert_allclose(mapped, [0.0, 200.0, 320.0, 240.0])


def test_pad_to_square_equals_padding_then_resizing():
    """The pad mode's cropped resize equals resizing the black-padded square (HF's order), within PIL's rounding."""
    from PIL import Image

    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(owl_preprocessor_config('owlv2', 96)))
    rng = np.random.default_rng(0)
    for h, w in ((240, 320), (320, 200), (50, 70), (96, 96), (33, 500)):
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        square = np.zeros((max(h, w), max(h, w), 3), np.uint8)
        square[:h, :w] = frame
        reference = np.asarray(Image.fromarray(square).resize((96, 96), resample=2)).astype(int)
        ours = preprocessor.resize_and_crop(frame).astype(int)
        assert ours.shape == (96, 96, 3)
        assert np.abs(ours - reference).max() <= 1, (h, w)


def test_pad_to_square_is_refused_without_a_square_size():
    from robovision_ros.preprocessing import PreprocessConfigError

    config = owl_preprocessor_config('owlv2', 64)
    with pytest.raises(PreprocessConfigError, match='do_pad needs a square size'):
        PreprocessConfig.from_dict({**config, 'size': {'height': 64, 'width': 96}})


def _predictions(class_embeddings, boxes, shift=None, scale=None):
    n = len(class_embeddings)
    return PatchPredictions(np.asarray(class_embeddings, np.float32),
                            np.zeros(n, np.float32) if shift is None else np.asarray(shift, np.float32),
                            np.ones(n, np.float32) if scale is None else np.asarray(scale, np.float32),
                            np.asarray(boxes, np.float32), None, (1, n))


def test_query_logits_are_the_class_heads():
    rng = np.random.default_rng(1)
    embeddings, queries = rng.normal(size=(6, 8)), rng.normal(size=(3, 8))
    shift, scale = rng.normal(size=6), rng.uniform(0.5, 2.0, 6)
    predictions = _predictions(embeddings, np.full((6, 4), 0.5), shift, scale)
    unit = embeddings / (np.linalg.norm(embeddings, axis=1, keepdims=True) + 1e-6)
    queries_unit = queries / (np.linalg.norm(queries, axis=1, keepdims=True) + 1e-6)
    expected = (unit @ queries_unit.T + shift[:, None]) * scale[:, None]
    # float32 against float64 of the same formula: cosines of 8-d vectors, relative error ~1e-7.
    np.testing.assert_allclose(query_logits(predictions, queries), expected, rtol=1e-5, atol=1e-6)


def test_decode_keeps_each_instance_of_each_query_in_source_pixels():
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(owl_preprocessor_config('owlvit', 64)))
    geometry = preprocessor.geometry((240, 320))  # x: 5 source px per input px, y: 3.75
    queries = np.eye(3, 4, dtype=np.float32)
    # Patches 0 and 1: two instances of query 0 far apart; 2: query 1; 3: query 1 again, overlapping 2 (suppressed);
    # 4: query 2, below the threshold; 5: background (all logits negative).
    embeddings = [[1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
    shift = [2.0, 1.0, 3.0, 2.5, -2.0, -5.0]
    boxes = [[0.25, 0.25, 0.1, 0.1], [0.75, 0.75, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2],
             [0.1, 0.9, 0.1, 0.1], [0.5, 0.5, 1.0, 1.0]]
    result = decode_detections(_predictions(embeddings, boxes, shift), queries, ['cup', 'ball', 'box'], geometry,
                               (64, 64), threshold=0.3, nms_iou=0.5, max_detections=10, version=7)
    assert [(d.label, d.query_index) for d in result.detections] == [('ball', 1), ('cup', 0), ('cup', 0)]
    assert result.version == 7 and result.queries == ('cup', 'ball', 'box') and result.candidates == 4
    # float32 inputs (cosine 1 / (1 + 1e-6), boxes of 0.1-steps): relative errors ~1e-6 at most.
    np.testing.assert_allclose([d.score for d in result.detections], sigmoid(np.array([4.0, 3.0, 2.0])), rtol=1e-5)
    np.testing.assert_allclose(result.detections[1].box_xyxy, [0.2 * 320, 0.2 * 240, 0.3 * 320, 0.3 * 240],
                               rtol=1e-5)
    np.testing.assert_allclose(result.detections[2].box_xyxy, [0.65 * 320, 0.65 * 240, 0.85 * 320, 0.85 * 240],
                               rtol=1e-5)
    capped = decode_detections(_predictions(embeddings, boxes, shift), queries, ['cup', 'ball', 'box'], geometry,
                               (64, 64), threshold=0.3, nms_iou=0.5, max_detections=2)
    assert [d.score for d in capped.detections] == [d.score for d in result.detections[:2]]
    # The same computation gives the same score, so a threshold equal to the last score tests the comparison.
    strict = decode_detections(_predictions(embeddings, boxes, shift), queries, ['cup', 'ball', 'box'], geometry,
                               (64, 64), threshold=result.detections[2].score, nms_iou=0.5, max_detections=10)
    assert [d.label for d in strict.detections] == ['ball', 'cup']  # the threshold is strict, as transformers'
    empty = decode_detections(_predictions(embeddings, boxes, shift), np.zeros((0, 4), np.float32), [], geometry,
                              (64, 64), threshold=0.0, nms_iou=0.5, max_detections=10)
    assert empty.detections == () and empty.queries == ()


def _frame(truth, labels, boxes, scores, found):
    return FrameDetections(np.array(truth, float).reshape(-1, 4), np.array(labels),
                           np.array(boxes, float).reshape(-1, 4), np.array(scores, float), np.array(found))


def test_average_precision_of_known_rankings():
    box, other = [0, 0, 10, 10], [50, 50, 60, 60]
    perfect = [_frame([box], [3], [box], [0.9], [3]), _frame([other], [3], [other], [0.8], [3])]
    assert average_precision(perfect, 3, 0.5) == 1.0
    assert average_precision(perfect, 4, 0.5) is None  # no ground truth of that label
    # A false positive ranked first: precision 0 at rank 1, 1/2 and 2/3 at the hits: interpolated 2/3 everywhere.
    ranked = [_frame([box, other], [3, 3], [[100, 100, 110, 110], box, other], [0.9, 0.8, 0.7], [3, 3, 3])]
    assert average_precision(ranked, 3, 0.5) == pytest.approx(2 / 3)
    # One of two found: recall stops at 0.5, so 51 of the 101 recall points have precision 1.
    half = [_frame([box, other], [3, 3], [box], [0.9], [3])]
    assert average_precision(half, 3, 0.5) == pytest.approx(51 / 101)
    # A duplicate of a matched box is a false positive; a box of the wrong label is no hit.
    duplicate = [_frame([box], [3], [box, box], [0.9, 0.8], [3, 3]), _frame([box], [3], [box], [0.9], [4])]
    assert average_precision(duplicate, 3, 0.5) == pytest.approx(51 / 101)
    shifted = [_frame([box], [3], [[3, 0, 13, 10]], [0.9], [3])]  # IoU 7/13 = 0.54
    assert average_precision(shifted, 3, 0.5) == 1.0 and average_precision(shifted, 3, 0.55) == 0.0
    assert mean_average_precision(shifted, [3], (0.5, 0.55)) == pytest.approx(0.5)


def test_instance_recall_counts_each_instance_once():
    a, b = [0, 0, 10, 10], [30, 0, 40, 10]
    frames = [_frame([a, b], [2, 2], [a, [1, 0, 11, 10]], [0.9, 0.8], [2, 2]),  # both near a: one instance found
              _frame([a, b], [2, 2], [b, a], [0.9, 0.2], [2, 2])]  # both, the second under the threshold
    recall, complete = instance_recall(frames, [2, 2], threshold=0.5)
    assert (recall, complete) == (0.5, 0.0)
    recall, complete = instance_recall(frames, [2, 2], threshold=0.1)
    assert (recall, complete) == (0.75, 0.5)


# --- image queries -------------------------------------------------------------------------------------------

def _write_png(path, hw=(20, 30)):
    import cv2

    cv2.imwrite(str(path), np.full((*hw, 3), 120, np.uint8))
    return str(path)


def test_example_images_are_read_bounded_and_labelled_by_file_name(tmp_path):
    good = _write_png(tmp_path / 'red mug.png')
    assert read_example_image(good).shape == (20, 30, 3)
    assert validate_image_queries([good]) == (good,)
    corrupt = tmp_path / 'broken.png'
    corrupt.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(100))
    with pytest.raises(ImageQueryError, match=r"image query '.*broken.png' is not a usable image"):
        read_example_image(str(corrupt))
    with pytest.raises(ImageQueryError, match='no such file'):
        read_example_image(str(tmp_path / 'missing.png'))
    with pytest.raises(ImageQueryError, match='not a regular file'):
        read_example_image(str(tmp_path))
    tiny = _write_png(tmp_path / 'tiny.png', (2, 30))
    with pytest.raises(ImageQueryError, match='at least 4x4'):
        read_example_image(tiny)


def test_an_example_image_over_the_pixel_bound_is_refused_before_decoding(tmp_path):
    import cv2

    path = tmp_path / 'photo.png'
    cv2.imwrite(str(path), np.zeros((2049, 2048, 3), np.uint8))
    with pytest.raises(ImageQueryError, match='photo.png'):
        read_example_image(str(path))


def test_image_query_lists_are_bounded(tmp_path):
    paths = [_write_png(tmp_path / f'q{i}.png') for i in range(9)]
    with pytest.raises(ImageQueryError, match='9 example images, at most 8'):
        check_image_query_paths(paths)
    (tmp_path / 'a').mkdir()
    with pytest.raises(VocabularyError, match='unique'):
        check_image_query_paths([paths[0], _write_png(tmp_path / 'a' / 'q0.png')])
    with pytest.raises(VocabularyError, match='names no file'):
        check_image_query_paths([' '])
    assert query_set_problem(['cup'], [paths[0]]) is None
    assert 'named like a text query' in query_set_problem(['q0'], [paths[0]])
    assert 'at most 256' in query_set_problem([f't{i}' for i in range(250)], paths[:7])


@pytest.mark.parametrize('threshold,iou', itertools.product((0.0, 0.5), (0.3, 1.0)))
def test_decode_agrees_with_a_direct_computation_on_random_predictions(threshold, iou):
    """Every kept detection is its patch's best query above the threshold; nothing above it is lost but to NMS."""
    rng = np.random.default_rng(2)
    n, q = 30, 4
    boxes = np.column_stack([rng.uniform(0.1, 0.9, (n, 2)), rng.uniform(0.05, 0.3, (n, 2))])
    predictions = _predictions(rng.normal(size=(n, 8)), boxes, rng.normal(size=n), rng.uniform(0.5, 3, n))
    queries = rng.normal(size=(q, 8)).astype(np.float32)
    geometry = ImagePreprocessor(PreprocessConfig.from_dict(owl_preprocessor_config('owlvit', 64))).geometry((64, 64))
    result = decode_detections(predictions, queries, [f'q{i}' for i in range(q)], geometry, (64, 64), threshold,
                               iou, 1000)
    logits = query_logits(predictions, queries)
    above = np.flatnonzero(sigmoid(logits.max(1)) > threshold)
    assert result.candidates == len(above)
    if iou >= 1.0:
        assert len(result.detections) == len(above)
    scores = [d.score for d in result.detections]
    assert scores == sorted(scores, reverse=True)
    for detection in result.detections:
        assert detection.label == f'q{detection.query_index}'
