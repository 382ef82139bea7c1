# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The open-vocabulary detection engine: frames and queries in, detections out. No ROS needed.

`DetectorEncoder` ties together a detector model directory and its family (OWL-ViT, OWLv2), its preprocessing, one
backend, the text-query cache (`vocabulary.TextEmbeddingCache`) and the example-image cache
(`detection_queries.ImageQueryCache`); `detect` runs the image graph once per frame batch and decodes each frame
against a query snapshot (`detection.decode_detections`). The node, the demo, the evaluation and the benchmark all
call it.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from robovision_ros.backends.accuracy_gate import DEFAULT_INT8_MIN_COSINE
from robovision_ros.backends.registry import create_backend
from robovision_ros.detection import DEFAULT_MAX_DETECTIONS, DEFAULT_NMS_IOU, DEFAULT_SCORE_THRESHOLD, \
    DetectionResult, DetectorImageOutputs, decode_detections
from robovision_ros.detection_queries import DetectionQueries, DetectionQuerySpec, ImageQueryCache, \
    validate_image_queries
from robovision_ros.features import EncodeTiming
from robovision_ros.model_dir import ModelInfo, ModelLoadError, family_of, load_tokenizer, read_model_info, tokenize
from robovision_ros.preprocessing import ImagePreprocessor, PreprocessGeometry
from robovision_ros.vocabulary import TextEmbeddingCache


class DetectorEncoder:
    """One loaded detector on one backend, with its preprocessing, tokenizer and query caches."""

    def __init__(self, model_id: str, backend: str = 'auto', device: str = 'cpu', precision: str = 'fp32',
                 cache_dir: Optional[Path] = None, force_rebuild: bool = False,
                 int8_min_cosine: Optional[float] = DEFAULT_INT8_MIN_COSINE,
                 options: Optional[Mapping[str, Any]] = None) -> None:
        """Load `model_id` (an OWL-ViT or OWLv2 directory) on one backend; arguments as `PerceptionEncoder`'s."""
        self.info: ModelInfo = read_model_info(model_id)
        self.family = family_of(self.info)
        if not self.family.detector:
            raise ModelLoadError(f'{model_id} is a {self.info.family} model, not an open-vocabulary detector '
                                 '(OWL-ViT, OWLv2): run it with clip_perception or feature_extractor')
        self.preprocessor = ImagePreprocessor(self.family.preprocess_config(self.info))
        self.input_hw = self.preprocessor.config.input_hw
        self.backend = create_backend(self.info, backend, device, precision, cache_dir, force_rebuild,
                                      int8_min_cosine, options)
        self.tokenizer = load_tokenizer(self.info)
        self.texts = TextEmbeddingCache(model_id, self.encode_texts)
        self.images = ImageQueryCache(self.embed_examples)
        # Frames (frame worker) and example images (vocabulary worker) share the image engine; some engines (a
        # TensorRT execution context, captured CUDA graphs) must not run two calls at once.
        self._image_lock = threading.Lock()
        self.image_runs = 0  # image-engine calls (frames and example images), for tests and diagnostics
        self._device_preprocessing = device == 'cuda' and self.backend.capabilities.device_tensors

    # --- queries (vocabulary worker thread) -----------------------------------------------------------------
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> unnormalised query embeddings [T, D] (fixed-length padding, as exported)."""
        return self.backend.encode_text(*tokenize(self.tokenizer, texts, self.backend.text_length))

    def embed_examples(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """
        Embed example images as queries: one embedding each [K, D] (image-guided detection).

        Each image is encoded like a frame; its family picks the patch that stands for the object (OWL-ViT: the box
        covering the example that is least like the average patch; OWLv2: the most object-like patch) and that
        patch's class embedding is the query.
        """
        outputs = self._run_image(self.prepare(images))
        return np.stack([outputs.class_embeddings[i][self.family.query_patch(outputs.image(i))]
                         for i in range(len(images))]).astype(np.float32)

    def build_queries(self, spec: DetectionQuerySpec, version: int,
                      cancelled: Callable[[], bool] = lambda: False) -> DetectionQueries:
        """Embed a query set: texts through the text cache, example images through the image-query cache."""
        texts = self.texts.build(spec.texts, spec.templates, version, allow_empty=True, cancelled=cancelled)
        images = self.images.build(validate_image_queries(spec.images), self.info.global_dim)
        if texts.embeddings.shape[1] == 0:  # no text queries: the width the image queries have
            texts = type(texts)(texts.labels, texts.templates, np.zeros((0, self.info.global_dim), np.float32),
                                version)
        return DetectionQueries(texts, images, version)

    # --- frames (frame worker thread) -----------------------------------------------------------------------
    def prepare(self, images: Sequence[np.ndarray]) -> Any:
        """RGB uint8 images -> the backend's input (normalised on the GPU for backends that take device tensors)."""
        if self._device_preprocessing:
            import torch

            return self.preprocessor.torch_preprocess(images, 'cuda', torch.float32)
        return self.preprocessor(images)

    def _run_image(self, pixels: Any) -> DetectorImageOutputs:
        with self._image_lock:
            self.image_runs += 1
            return self.backend.encode_image(pixels)

    def encode_images(self, images: Sequence[np.ndarray]) -> tuple[DetectorImageOutputs, list[PreprocessGeometry],
                                                                   EncodeTiming]:
        """RGB uint8 frames (one batch; sizes may differ) -> patch predictions, each frame's geometry, timings."""
        start = time.perf_counter()
        pixels = self.prepare(images)
        prepared = time.perf_counter()
        outputs = self._run_image(pixels)
        done = time.perf_counter()
        geometries = [self.preprocessor.geometry(image.shape[:2]) for image in images]
        return outputs, geometries, EncodeTiming((prepared - start) * 1e3, (done - prepared) * 1e3)

    def decode(self, outputs: DetectorImageOutputs, index: int, geometry: PreprocessGeometry,
               queries: DetectionQueries, threshold: float = DEFAULT_SCORE_THRESHOLD,
               nms_iou: float = DEFAULT_NMS_IOU, max_detections: int = DEFAULT_MAX_DETECTIONS) -> DetectionResult:
        """Decode frame `index` of an encoded batch against `queries` (`detection.decode_detections`)."""
        return decode_detections(outputs.image(index), queries.embeddings, queries.labels, geometry, self.input_hw,
                                 threshold, nms_iou, max_detections, queries.version)

    def detect(self, images: Sequence[np.ndarray], queries: DetectionQueries,
               threshold: float = DEFAULT_SCORE_THRESHOLD, nms_iou: float = DEFAULT_NMS_IOU,
               max_detections: int = DEFAULT_MAX_DETECTIONS) -> tuple[list[DetectionResult], EncodeTiming]:
        """RGB uint8 frames -> their detections against `queries`, and the stage timings."""
        outputs, geometries, timing = self.encode_images(images)
        return [self.decode(outputs, i, geometry, queries, threshold, nms_iou, max_detections)
                for i, geometry in enumerate(geometries)], timing

    def warm_up(self, iterations: int = 2, batch_sizes: Sequence[int] = (1,)) -> dict[int, float]:
        """Run each batch size a few times before the first frame; its image time per frame (ms), as the encoder's."""
        height, width = self.input_hw
        dummy = np.zeros((height, width, 3), np.uint8)
        per_frame = {}
        for batch in batch_sizes:
            times = [self.encode_images([dummy] * batch)[2].inference_ms / batch for _ in range(iterations)]
            per_frame[batch] = min(times[1:] or times)  # the first run of a shape pays its one-off costs
        return per_frame

    def close(self) -> None:
        self.backend.close()
