# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
CLIP scoring (`clip_scoring.score`) and its message mapping. No DDS.

Known answers on hand-built features, and the same numbers as the hand assembly it replaced on the embedded model.
"""
from __future__ import annotations

import numpy as np
import pytest

from robovision_ros.clip_scoring import ClipFrameResult, score, score_batch
from robovision_ros.features import ImageFeatures
from robovision_ros.localization import localize, similarity_heatmap, similarity_heatmaps
from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig, PreprocessGeometry
from robovision_ros.synthetic.tiny_models import clip_preprocessor_config
from robovision_ros.vocabulary import VocabularyEmbeddings

TEMPLATES = ('a photo of a {}.',)


def _geometry(source_hw: tuple[int, int] = (480, 640)) -> PreprocessGeometry:
    """64x64 model input of 8-px patches: 480x640 resizes to 64x85 (y / 7.5, x / (640 / 85)), crop x = 10."""
    return ImagePreprocessor(PreprocessConfig.from_dict(clip_preprocessor_config(64))).geometry(source_hw)


def _features(global_embedding, patch_tokens=None, grid_hw=(8, 8)) -> ImageFeatures:
    global_embedding = np.asarray(global_embedding, np.float32)
    if patch_tokens is None:
        patch_tokens = np.ones((grid_hw[0] * grid_hw[1], len(global_embedding)), np.float32)
    return ImageFeatures(np.asarray(patch_tokens, np.float32), global_embedding, grid_hw, _geometry(), 1.0, False)


def _vocabulary(labels, rows, version: int = 1) -> VocabularyEmbeddings:
    rows = np.asarray(rows, np.float32)
    rows = rows / (np.linalg.norm(rows, axis=1, keepdims=True) + 1e-12)
    return VocabularyEmbeddings(tuple(labels), TEMPLATES, rows, version)


EYE = np.eye(4, dtype=np.float32)
LABELS = _vocabulary(['cup', 'ball', 'box'], EYE[:3], version=3)


def test_scores_are_the_softmax_of_scaled_cosines_and_best_is_their_argmax():
    result = score(_features([2.0, 1.0, 0.0, 0.0]), LABELS, None, logit_scale=10.0, patch_size=8)
    cosines = np.array([2.0, 1.0, 0.0]) / np.sqrt(5.0)
    expected = np.exp(10.0 * cosines) / np.exp(10.0 * cosines).sum()
    np.testing.assert_allclose(result.scores, expected, rtol=1e-5)
    assert result.scores.sum() == pytest.approx(1.0, abs=1e-6)
    assert (result.best_index, result.best_label) == (0, 'cup')
    assert result.best_score == float(result.scores[0]) == pytest.approx(expected[0], rel=1e-5)
    assert (result.labels, result.templates, result.labels_version) == (('cup', 'ball', 'box'), TEMPLATES, 3)
    # a flipped image embedding flips the winner
    assert score(_features([0.0, 0.0, 1.0, 0.0]), LABELS, None, logit_scale=10.0, patch_size=8).best_label == 'box'


def test_presence_threshold_is_inclusive_and_recorded():
    queries = _vocabulary(['cup', 'ball'], EYE[:2], version=5)
    features = _features([3.0, 4.0, 0.0, 0.0])  # cosine 0.6 to cup, 0.8 to ball
    probe = score(features, LABELS, queries, threshold=0.0, logit_scale=1.0, patch_size=8)
    np.testing.assert_allclose(probe.similarities, [0.6, 0.8], rtol=1e-6)
    ball = float(probe.similarities[1])
    at = score(features, LABELS, queries, threshold=ball, logit_scale=1.0, patch_size=8)
    above = score(features, LABELS, queries, threshold=float(np.nextafter(ball, 2.0)), logit_scale=1.0,
                  patch_size=8)
    # exact: the threshold is score's own similarity (and the next float up), compared on one path
    assert at.present_mask.tolist() == [False, True] and above.present_mask.tolist() == [False, False]
    assert [(p.query, p.present, p.threshold) for p in at.presence] == [('cup', False, ball), ('ball', True, ball)]
    assert at.presence[1].similarity == ball and at.presence[1].location is None
    assert (at.queries, at.queries_version, at.top_query) == (('cup', 'ball'), 5, 1)


def _object_scene() -> tuple[ImageFeatures, VocabularyEmbeddings]:
    """
    Make a scene whose object covers grid rows 2-3, columns 5-6 of the 8x8 grid.

    Its exact match (the peak) is row 3, col 6.
    """
    rng = np.random.default_rng(0)
    query = rng.standard_normal(16)
    tokens = rng.standard_normal((64, 16)) * 0.1
    for gy, gx in ((2, 5), (2, 6), (3, 5), (3, 6)):
        tokens[gy * 8 + gx] = query + rng.standard_normal(16) * 0.05
    tokens[3 * 8 + 6] = query
    return _features(query, tokens), _vocabulary(['red cup', 'other'], [query, rng.standard_normal(16)])


# The known answer of test_localization: peak at model pixel (y 28, x 52), box over model pixels y 16-32, x 40-56.
SX, SY = 640 / 85, 7.5
PEAK_XY = (int((52 + 10) * SX), int(28 * SY))
ROI_XYWH = (int((40 + 10) * SX), int(16 * SY), int((56 + 10) * SX) - int((40 + 10) * SX), int(32 * SY) - int(16 * SY))


def test_heatmap_peak_becomes_an_roi_in_source_pixels():
    features, queries = _object_scene()
    result = score(features, queries, queries, logit_scale=1.0, patch_size=8, localize=True)
    assert result.heatmaps.shape == (2, 8, 8)
    assert np.unravel_index(int(np.argmax(result.heatmaps[0])), (8, 8)) == (3, 6)
    location = result.locations[0]
    assert location.peak_score == pytest.approx(1.0, abs=1e-5)
    assert location.peak_xy == PEAK_XY and location.roi_xywh == ROI_XYWH
    assert result.presence[0].location is location and result.locate(0) is location
    assert len(result.locations) == 2


def test_without_localize_there_are_no_heatmaps_or_rois_unless_asked():
    features, queries = _object_scene()
    plain = score(features, queries, queries, logit_scale=1.0, patch_size=8, localize=False)
    assert plain.heatmaps is None and plain.locations is None
    assert all(p.location is None for p in plain.presence)
    with pytest.raises(ValueError, match='without heatmaps'):
        plain.locate(0)
    maps = score(features, queries, queries, logit_scale=1.0, patch_size=8, heatmaps=True)
    assert maps.heatmaps.shape == (2, 8, 8) and maps.locations is None
    assert maps.locate(0).peak_xy == PEAK_XY and maps.locate(0).roi_xywh == ROI_XYWH
    # Exact: the same cosine_similarities call on the same embeddings twice; the flags only add heatmaps.
    np.testing.assert_array_equal(maps.similarities, plain.similarities)


@pytest.mark.parametrize('queries', [None, _vocabulary([], np.zeros((0, 4)), version=7)])
def test_no_queries_give_empty_presence(queries):
    result = score(_features([1.0, 0.0, 0.0, 0.0]), LABELS, queries, logit_scale=1.0, patch_size=8,
                   localize=True, heatmaps=True)
    assert result.presence == () and result.queries == () and result.top_query is None
    assert result.similarities.shape == (0,) and result.present_mask.shape == (0,)
    assert result.heatmaps is None and result.locations == ()
    assert result.queries_version == (None if queries is None else 7)
    assert result.best_label == 'cup'


def test_batch_is_one_result_per_frame_and_read_only():
    frames = [_features([1.0, 0.0, 0.0, 0.0]), _features([0.0, 1.0, 0.2, 0.0]), _features([0.0, 0.1, 1.0, 0.0])]
    queries = _vocabulary(['cup', 'box'], [EYE[0], EYE[2]])
    results = score_batch(frames, LABELS, queries, threshold=0.5, logit_scale=20.0, patch_size=8)
    assert [r.best_label for r in results] == ['cup', 'ball', 'box']
    assert [r.present_mask.tolist() for r in results] == [[True, False], [False, False], [False, True]]
    for frame, result in zip(frames, results):
        single = score(frame, LABELS, queries, threshold=0.5, logit_scale=20.0, patch_size=8)
        # A [3, 4] and a [1, 4] product may take different BLAS kernels, which sum in different orders; a float32
        # dot product of D = 4 unit-bounded terms is off by at most gamma_4 = 4 * 2^-24 (2.4e-7) in any order, on any
        # CPU, and the softmax at logit scale 20 turns that into at most 1e-5 relative: hence these tolerances.
        np.testing.assert_allclose(result.scores, single.scores, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(result.similarities, single.similarities, rtol=1e-6, atol=5e-7)
        assert not result.scores.flags.writeable and not result.similarities.flags.writeable
    assert score_batch([], LABELS, queries, logit_scale=1.0, patch_size=8) == []


# --- the same numbers as the hand assembly it replaced, on the embedded model -------------------------------------

def _hand_assembly(features, labels, queries, threshold, logit_scale, patch_size):
    """Compute what clip_perception._process computed before score existed (batched, per-frame heatmaps)."""
    embeddings = np.stack([f.global_embedding for f in features])
    unit = embeddings / (np.linalg.norm(embeddings, axis=-1, keepdims=True) + 1e-12)
    logits = logit_scale * (unit @ labels.embeddings.T)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs = probs / probs.sum(axis=1, keepdims=True)
    presence = unit @ queries.embeddings.T
    frames = []
    for i, feature in enumerate(features):
        heatmaps = similarity_heatmaps(feature.patch_tokens, queries.embeddings, feature.grid_hw)
        present = [float(presence[i, q]) >= threshold for q in range(len(queries.labels))]
        locations = [localize(heatmaps[q], patch_size, feature.geometry) for q in range(len(queries.labels))]
        frames.append((probs[i], int(np.argmax(probs[i])), presence[i], present, heatmaps, locations))
    return frames


@pytest.fixture(scope='module')
def embedded_clip():
    from robovision_ros.encoder import PerceptionEncoder

    encoder = PerceptionEncoder('embedded:tiny_clip', 'onnxruntime', 'cpu', 'fp32')
    yield encoder
    encoder.close()


def test_score_equals_the_previous_hand_assembly_on_the_embedded_model(embedded_clip):
    from robovision_ros.synthetic.scenes import LABELS as SCENE_LABELS, SceneGenerator

    encoder = embedded_clip
    generator = SceneGenerator(9002, 240, 320, 1, 3)
    images = [generator.scene(i).image for i in range(4)]
    labels = encoder.build_vocabulary(SCENE_LABELS, TEMPLATES, 1)
    queries = encoder.build_vocabulary(['red cup', 'blue bottle', 'green ball', 'yellow box'], TEMPLATES, 1)
    features, _ = encoder.encode_images(images)
    reference = _hand_assembly(features, labels, queries, 0.25, encoder.logit_scale, encoder.info.patch_size)
    threshold = float(reference[0][2][0])  # one similarity exactly on the threshold: the boundary case
    for thr in (0.25, threshold):
        reference = _hand_assembly(features, labels, queries, thr, encoder.logit_scale, encoder.info.patch_size)
        results = encoder.score_batch(features, labels, queries, thr, localize=True)
        # Exact on any CPU: the hand assembly is the same numpy expressions as clip_scoring on the same [4, D] arrays
        # (so the same BLAS kernel and summation order) and the same similarity_heatmaps call; only the code that
        # assembles them differs. That is what this test pins, including the threshold boundary below.
        for result, (probs, best, similarities, present, heatmaps, locations) in zip(results, reference):
            np.testing.assert_array_equal(result.scores, probs)
            assert result.best_index == best and result.best_score == float(probs[best])
            np.testing.assert_array_equal(result.similarities, similarities)
            assert result.present_mask.tolist() == present
            np.testing.assert_array_equal(result.heatmaps, heatmaps)
            assert [(loc.peak_xy, loc.peak_score, loc.roi_xywh) for loc in result.locations] == \
                [(loc.peak_xy, loc.peak_score, loc.roi_xywh) for loc in locations]
    assert results[0].present_mask[0]  # the boundary similarity counts as present


def test_single_frame_score_equals_the_evaluation_assembly(embedded_clip):
    """
    Check that score gives the answers of evaluation.py, which scored one image at a time with a heatmap per label.

    Two code paths in float32: the assembly normalises a 1-D embedding (np.linalg.norm of a vector is a BLAS dot) and
    computes each heatmap alone (a matrix-vector product), score normalises rows (a pairwise sum) and computes all
    heatmaps in one matrix product. They differ only in the order of the sums, by at most gamma_D = D * 2^-24 of
    the product of the norms for a dot product of length D (Higham), in any order, on any CPU (AVX2, AVX-512 and AMX
    machines differ here by up to 7e-8). With unit vectors: cosines within 2 * gamma_D, hence `cosine_tolerance`;
    softmax probabilities within 2 * logit_scale * cosine_tolerance relative. Decisions (presence, the heatmap peak)
    are compared where the reference is farther than that from the boundary.
    """
    from robovision_ros.synthetic.scenes import LABELS as SCENE_LABELS, SceneGenerator

    encoder = embedded_clip
    vocabulary = encoder.build_vocabulary(SCENE_LABELS, TEMPLATES, 1)
    generator = SceneGenerator(9002, 240, 320, 1, 3)
    for i in range(3):
        scene = generator.scene(i)
        (feature,), _ = encoder.encode_images([scene.image])
        result = encoder.score(feature, vocabulary, vocabulary, 0.25, heatmaps=True)
        unit = feature.global_embedding / (np.linalg.norm(feature.global_embedding) + 1e-12)
        similarity = unit[None, :] @ vocabulary.embeddings.T
        logits = encoder.logit_scale * similarity
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = probs / probs.sum(axis=1, keepdims=True)
        cosine_tolerance = 2 * max(feature.global_embedding.size, feature.patch_tokens.shape[1]) * 2.0 ** -24
        np.testing.assert_allclose(result.similarities, similarity[0], rtol=0, atol=cosine_tolerance)
        np.testing.assert_allclose(result.scores, probs[0], rtol=2 * encoder.logit_scale * cosine_tolerance, atol=1e-9)
        clear = np.abs(similarity[0] - 0.25) > cosine_tolerance
        assert clear.any()
        np.testing.assert_array_equal(result.present_mask[clear], (similarity[0] >= 0.25)[clear])
        for obj in scene.objects:
            q = SCENE_LABELS.index(obj.label)
            heatmap = similarity_heatmap(feature.patch_tokens, vocabulary.embeddings[q], feature.grid_hw)
            np.testing.assert_allclose(result.heatmaps[q], heatmap, rtol=0, atol=cosine_tolerance)
            runner_up, peak = np.sort(heatmap.ravel())[-2:]
            if peak - runner_up > 2 * cosine_tolerance:  # else either patch may win, on either path
                assert result.locate(q).peak_xy == localize(heatmap, encoder.info.patch_size,
                                                            feature.geometry).peak_xy


# --- message mapping ----------------------------------------------------------------------------------------------

def _header():
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=12, nanosec=345), frame_id='camera')


def test_messages_carry_scores_presence_and_locations():
    from robovision_ros.message_conversions import zero_shot_messages
    from robovision_ros.features import EncodeTiming

    features, queries = _object_scene()
    result: ClipFrameResult = score(features, queries, queries, threshold=0.5, logit_scale=5.0, patch_size=8,
                                    localize=True)
    header = _header()
    labels_msg, presence_msg = zero_shot_messages(result, header, 'embedded:tiny_clip', EncodeTiming(1.5, 2.5), 7.0)
    assert labels_msg.header == header and presence_msg.header == header
    assert labels_msg.model_id == presence_msg.model_id == 'embedded:tiny_clip'
    assert list(labels_msg.labels) == ['red cup', 'other']
    # Exact: the message holds a copy of the float32 scores.
    np.testing.assert_array_equal(np.asarray(labels_msg.scores, np.float32), result.scores.astype(np.float32))
    assert labels_msg.best_label == result.best_label == 'red cup'
    assert labels_msg.best_score == pytest.approx(result.best_score)
    assert list(labels_msg.prompt_templates) == list(TEMPLATES) and labels_msg.vocabulary_version == 1
    assert (labels_msg.preprocess_ms, labels_msg.inference_ms) == (1.5, 2.5)
    assert labels_msg.total_ms == presence_msg.total_ms == 7.0
    assert presence_msg.vocabulary_version == 1 and len(presence_msg.results) == 2
    first = presence_msg.results[0]
    assert (first.query, first.present, first.has_location) == ('red cup', True, True)
    assert first.similarity == pytest.approx(float(result.similarities[0]))
    assert first.threshold == pytest.approx(0.5)
    assert (first.roi.x_offset, first.roi.y_offset, first.roi.width, first.roi.height) == ROI_XYWH
    assert (first.peak_x, first.peak_y) == PEAK_XY and first.peak_score == pytest.approx(1.0, abs=1e-5)
    assert presence_msg.results[1].query == 'other'


def test_messages_without_locations_or_queries():
    from robovision_ros.message_conversions import zero_shot_messages

    features, queries = _object_scene()
    plain = score(features, queries, queries, threshold=2.0, logit_scale=1.0, patch_size=8, heatmaps=True)
    _, presence_msg = zero_shot_messages(plain, _header(), 'm')
    assert [r.has_location for r in presence_msg.results] == [False, False]
    assert [r.present for r in presence_msg.results] == [False, False]
    assert presence_msg.results[0].roi.width == 0 and presence_msg.total_ms == 0.0
    empty = score(features, queries, None, logit_scale=1.0, patch_size=8, localize=True)
    labels_msg, presence_msg = zero_shot_messages(empty, _header(), 'm')
    assert list(presence_msg.results) == [] and presence_msg.vocabulary_version == 0
    assert labels_msg.best_label == 'red cup'
