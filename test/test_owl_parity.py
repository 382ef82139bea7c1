# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The detector against transformers: random-weight OWL-ViT and OWLv2 models built here (no hub), through every backend.

Reference: transformers' own OwlViTForObjectDetection / Owlv2ForObjectDetection forward passes on the same
preprocessed pixels, post-processed by its image processors (`post_process_object_detection`,
`post_process_image_guided_detection`). Ours: the exported image and text graphs on each backend (torch, onnxruntime,
TensorRT through its test double, a real Triton server), decoded by `detection.decode_detections`.

Tolerances: ONNX Runtime and TensorRT-double results differ from PyTorch fp32 by float32 rounding of the same graph
(different kernels and summation orders on any x86 CPU: ~1e-6 relative on these small models), so logits are
compared to 1e-3 and boxes to 1e-4 of the image; sets of kept detections are compared at a score threshold placed
in the middle of the widest gap between the reference's scores, wider than that tolerance, so that no detection sits
on the boundary.
"""
from __future__ import annotations

import numpy as np
import pytest

from robovision_ros.backends.registry import create_backend
from robovision_ros.detection import decode_detections, query_logits
from robovision_ros.detection_queries import DetectionQueries, DetectionQuerySpec, ImageQueryEmbeddings
from robovision_ros.detector import DetectorEncoder
from robovision_ros.model_dir import load_tokenizer, read_model_info, tokenize
from robovision_ros.preprocessing import ImagePreprocessor
from robovision_ros.vocabulary import VocabularyEmbeddings
from test_tensorrt_backend import trt  # noqa: F401 - the TensorRT test double, as a fixture
from test_triton import serve_venv  # noqa: F401 - the Triton server's venv, as a fixture

CORPUS = ['a photo of a red cup', 'a photo of a blue bottle', 'a green ball', 'a yellow box on a table',
          'a white plate']
TEXTS = ('red cup', 'blue bottle', 'green ball')
FRAME_HW = (48, 80)  # not square: the squash and the pad map back differently
LOGIT_ATOL = 1e-3
BOX_ATOL = 1e-4


@pytest.fixture(scope='module', params=['owlvit', 'owlv2'])
def owl_dir(request, tmp_path_factory):
    from robovision_ros.synthetic.tiny_models import make_tiny_owl

    # A logit scale of 8 and no shift spread the random model's scores (cosines of random embeddings are small), so
    # that the kept sets are compared at a threshold with room on both sides.
    return make_tiny_owl(tmp_path_factory.mktemp(request.param), CORPUS, kind=request.param, image_size=64,
                         patch_size=8, vision_width=64, text_width=32, prior=0.5, logit_scale=8.0)


def _hf_model(model_dir):
    from transformers import Owlv2ForObjectDetection, OwlViTForObjectDetection

    info = read_model_info(str(model_dir))
    model_class = Owlv2ForObjectDetection if info.family == 'owlv2' else OwlViTForObjectDetection
    return info, model_class.from_pretrained(str(model_dir)).eval()


def _hf_processor(family):
    from transformers.models.owlv2.image_processing_pil_owlv2 import Owlv2ImageProcessorPil
    from transformers.models.owlvit.image_processing_pil_owlvit import OwlViTImageProcessorPil

    return Owlv2ImageProcessorPil() if family == 'owlv2' else OwlViTImageProcessorPil()


def _frames(count=2):
    rng = np.random.default_rng(5)
    frames = []
    for _ in range(count):
        frame = np.empty((*FRAME_HW, 3), np.uint8)
        frame[:] = rng.integers(40, 200, 3)
        for _ in range(3):
            y, x = rng.integers(0, FRAME_HW[0] - 12), rng.integers(0, FRAME_HW[1] - 12)
            frame[y:y + 12, x:x + 16] = rng.integers(0, 256, 3)
        frames.append(frame)
    return frames


def _gap_threshold(scores: np.ndarray, low: float = 0.5, high: float = 0.9) -> float:
    """Return the middle of the widest gap between sorted scores within the [low, high] quantiles."""
    ordered = np.sort(scores.ravel())
    lo, hi = int(len(ordered) * low), int(len(ordered) * high)
    gaps = np.diff(ordered[lo:hi + 1])
    best = int(np.argmax(gaps))
    assert gaps[best] > 2 * LOGIT_ATOL, 'no clear gap between the reference scores'
    return float((ordered[lo + best] + ordered[lo + best + 1]) / 2)


def _reference(model_dir, frames):
    """Run transformers' forward pass on the frames with the text queries (the reference)."""
    import torch

    info, model = _hf_model(model_dir)
    preprocessor = ImagePreprocessor(read_preprocess(info))
    tokenizer = load_tokenizer(info)
    ids, mask = tokenize(tokenizer, list(TEXTS), min(tokenizer.model_max_length, 16), 'pt')
    pixels = torch.from_numpy(preprocessor(frames))
    with torch.inference_mode():
        out = model(input_ids=ids.repeat(len(frames), 1), pixel_values=pixels,
                    attention_mask=mask.repeat(len(frames), 1))
    return info, preprocessor, out


def read_preprocess(info):
    from robovision_ros.model_dir import family_of

    return family_of(info).preprocess_config(info)


def _queries(backend, info, texts=TEXTS) -> DetectionQueries:
    """Our text queries through `backend`'s text graph (one template: the text itself, as the reference feeds it)."""
    tokenizer = load_tokenizer(info)
    embeddings = backend.encode_text(*tokenize(tokenizer, list(texts), backend.text_length))
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    empty = ImageQueryEmbeddings((), (), np.zeros((0, embeddings.shape[1]), np.float32))
    return DetectionQueries(VocabularyEmbeddings(tuple(texts), ('{}',), embeddings, 1), empty, 1)


def _check_backend(backend, model_dir, frames):
    """Our decode through `backend` against transformers' forward and post_process_object_detection."""
    import torch

    info, preprocessor, reference = _reference(model_dir, frames)
    processor = _hf_processor(info.family)
    queries = _queries(backend, info)
    outputs = backend.encode_image(preprocessor(frames))
    scores = torch.sigmoid(reference.logits.max(-1).values).numpy()
    threshold = _gap_threshold(scores)
    expected = processor.post_process_object_detection(reference, threshold=threshold,
                                                       target_sizes=[FRAME_HW] * len(frames))
    for index, frame in enumerate(frames):
        predictions = outputs.image(index)
        np.testing.assert_allclose(query_logits(predictions, queries.embeddings), reference.logits[index].numpy(),
                                   atol=LOGIT_ATOL, rtol=0)
        np.testing.assert_allclose(predictions.boxes, reference.pred_boxes[index].numpy(), atol=BOX_ATOL, rtol=0)
        ours = decode_detections(predictions, queries.embeddings, queries.labels, preprocessor.geometry(FRAME_HW),
                                 preprocessor.config.input_hw, threshold, nms_iou=1.0, max_detections=10_000)
        want = expected[index]
        assert len(ours.detections) == len(want['scores']) > 0
        # transformers keeps patch order and does not clamp; ours is best first and clamped to the image.
        order = np.argsort(-want['scores'].numpy(), kind='stable')
        want_boxes = want['boxes'].numpy()[order]
        want_boxes = np.clip(want_boxes, 0, [FRAME_HW[1], FRAME_HW[0], FRAME_HW[1], FRAME_HW[0]])
        np.testing.assert_allclose([d.score for d in ours.detections], want['scores'].numpy()[order], atol=LOGIT_ATOL)
        assert [d.query_index for d in ours.detections] == want['labels'].numpy()[order].tolist()
        assert [d.label for d in ours.detections] == [TEXTS[i] for i in want['labels'].numpy()[order]]
        np.testing.assert_allclose([d.box_xyxy for d in ours.detections], want_boxes,
                                   atol=BOX_ATOL * max(FRAME_HW) * 2)


def _check_image_guided(backend, model_dir, frames):
    """Check an example image as the query: our embedding, logits and NMS against transformers' image-guided one."""
    import torch

    from robovision_ros.model_dir import family_of

    info, model = _hf_model(model_dir)
    preprocessor = ImagePreprocessor(read_preprocess(info))
    example = frames[1][10:40, 20:60]
    target_pixels = preprocessor([frames[0]])
    with torch.inference_mode():
        reference = model.image_guided_detection(pixel_values=torch.from_numpy(target_pixels),
                                                 query_pixel_values=torch.from_numpy(preprocessor([example])))
    family = family_of(info)
    example_outputs = backend.encode_image(preprocessor([example]))
    patch = family.query_patch(example_outputs.image(0))
    embedding = example_outputs.class_embeddings[0][patch][None]
    predictions = backend.encode_image(target_pixels).image(0)
    logits = query_logits(predictions, embedding)
    np.testing.assert_allclose(logits, reference.logits[0].numpy(), atol=LOGIT_ATOL, rtol=0)
    # transformers' image-guided post-processing: NMS at 0.3 on all boxes of the one query, then scores relative
    # to the best (alpha = (s - 0.1 max) / (0.9 max)); boxes kept where alpha > 0. That is our decode with the
    # threshold at 0.1 of the best score (strict) and the same NMS.
    processor = _hf_processor(info.family)
    expected = processor.post_process_image_guided_detection(reference, threshold=0.0, nms_threshold=0.3,
                                                             target_sizes=torch.tensor([FRAME_HW]))[0]
    scores = torch.sigmoid(reference.logits[0, :, 0]).numpy()
    ours = decode_detections(predictions, embedding, ['example'], preprocessor.geometry(FRAME_HW),
                             preprocessor.config.input_hw, threshold=0.1 * (scores.max() + 1e-6), nms_iou=0.3,
                             max_detections=10_000)
    order = np.argsort(-expected['scores'].numpy(), kind='stable')
    assert len(ours.detections) == len(order) > 0
    best = max(d.score for d in ours.detections)
    alphas = [(d.score - 0.1 * best) / (0.9 * best) for d in ours.detections]
    np.testing.assert_allclose(np.clip(alphas, 0, 1), expected['scores'].numpy()[order], atol=1e-3)
    want_boxes = np.clip(expected['boxes'].numpy()[order], 0, [FRAME_HW[1], FRAME_HW[0], FRAME_HW[1], FRAME_HW[0]])
    np.testing.assert_allclose([d.box_xyxy for d in ours.detections], want_boxes, atol=BOX_ATOL * max(FRAME_HW) * 2)
    return patch


def test_the_family_picks_the_example_patch_as_transformers_does(owl_dir):
    import torch

    info, model = _hf_model(owl_dir)
    preprocessor = ImagePreprocessor(read_preprocess(info))
    backend = create_backend(info, 'torch', 'cpu', 'fp32')
    from robovision_ros.model_dir import family_of

    for example in (_frames()[1][10:40, 20:60], _frames()[0]):
        pixels = preprocessor([example])
        with torch.inference_mode():
            feature_map = model.image_embedder(pixel_values=torch.from_numpy(pixels))[0]
            features = feature_map.reshape(1, -1, feature_map.shape[-1])
            _, indices, _ = model.embed_image_query(features, feature_map)
        assert family_of(info).query_patch(backend.encode_image(pixels).image(0)) == int(indices.ravel()[0])


@pytest.mark.parametrize('backend_name', ['torch', 'onnxruntime'])
def test_text_queries_match_transformers(owl_dir, model_cache, backend_name):
    backend = create_backend(read_model_info(str(owl_dir)), backend_name, 'cpu', 'fp32', model_cache)
    _check_backend(backend, owl_dir, _frames())


@pytest.mark.parametrize('backend_name', ['torch', 'onnxruntime'])
def test_image_queries_match_transformers(owl_dir, model_cache, backend_name):
    backend = create_backend(read_model_info(str(owl_dir)), backend_name, 'cpu', 'fp32', model_cache)
    _check_image_guided(backend, owl_dir, _frames())


@pytest.mark.usefixtures('trt')
def test_tensorrt_through_its_test_double_matches_transformers(owl_dir, model_cache):
    import fake_tensorrt
    from robovision_ros.backends.tensorrt_backend import TensorRTBackend

    backend = TensorRTBackend(read_model_info(str(owl_dir)), 'cuda', 'fp32', model_cache)
    assert fake_tensorrt.CALLS['build'] == 2  # the image and the text engine, built apart
    _check_backend(backend, owl_dir, _frames())
    _check_image_guided(backend, owl_dir, _frames())


@pytest.mark.usefixtures('serve_venv')
def test_triton_matches_transformers(owl_dir, model_cache, tmp_path):
    from test_triton import TritonServer

    info = read_model_info(str(owl_dir))
    create_backend(info, 'onnxruntime', 'cpu', 'fp32', model_cache).close()  # export into the shared cache
    server = TritonServer(owl_dir, model_cache, tmp_path, '--pixels', 'fp32')
    server.start()
    try:
        backend = create_backend(info, 'triton', 'cpu', 'fp32', options={'triton_url': server.url})
        _check_backend(backend, owl_dir, _frames())
        _check_image_guided(backend, owl_dir, _frames())
        backend.close()
    finally:
        server.stop()


def test_the_engine_runs_text_and_image_graphs_apart(owl_dir, model_cache):
    """A text-query change runs the text graph only; an example image runs the image graph once, then is cached."""
    import cv2

    detector = DetectorEncoder(str(owl_dir), 'onnxruntime', 'cpu', 'fp32', model_cache)
    example = model_cache / f'{owl_dir.name}-mug.png'
    cv2.imwrite(str(example), _frames()[1][10:40, 20:60])
    first = detector.build_queries(DetectionQuerySpec(TEXTS, ('a photo of a {}.',), (str(example),)), 1)
    runs, encoded = detector.image_runs, detector.texts.texts_encoded
    assert first.labels == TEXTS + (example.stem,) and first.is_image == (False,) * 3 + (True,)
    second = detector.build_queries(DetectionQuerySpec(('green ball', 'white plate'), ('a photo of a {}.',),
                                                       (str(example),)), 2)
    assert detector.image_runs == runs  # the example's embedding came from the cache, no frame ran
    assert detector.texts.texts_encoded == encoded + 1  # 'white plate' only
    np.testing.assert_array_equal(second.images.embeddings, first.images.embeddings)
    (result,), _ = detector.detect([_frames()[0]], second, threshold=0.0)
    assert detector.image_runs == runs + 1 and result.queries == ('green ball', 'white plate', example.stem)


def test_int8_is_gated_on_every_detector_output(owl_dir, model_cache):
    from robovision_ros.backends.accuracy_gate import Int8AccuracyError
    from robovision_ros.families import family_named

    info = read_model_info(str(owl_dir))
    backend = create_backend(info, 'onnxruntime', 'cpu', 'int8', model_cache, int8_min_cosine=0.0)
    outputs = family_named(info.family).image_outputs
    assert [name for name, _ in backend.int8_accuracy.cosines] == list(outputs)
    assert all(-1.0 <= cosine <= 1.0 for _, cosine in backend.int8_accuracy.cosines)
    with pytest.raises(Int8AccuracyError, match=r'class_embeddings .* below int8_min_cosine 1\.0'):
        create_backend(info, 'onnxruntime', 'cpu', 'int8', model_cache, int8_min_cosine=1.0)


def test_encoder_families_and_detectors_refuse_each_other(owl_dir, tiny_clip_dir):
    from robovision_ros.encoder import PerceptionEncoder
    from robovision_ros.model_files import ModelLoadError

    with pytest.raises(ModelLoadError, match='open-vocabulary detector .* run it with open_vocab_detector'):
        PerceptionEncoder(str(owl_dir), 'torch')
    with pytest.raises(ModelLoadError, match='not an open-vocabulary detector'):
        DetectorEncoder(str(tiny_clip_dir), 'torch')
