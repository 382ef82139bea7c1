# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The encoder engine: frames in, patch features, embeddings and zero-shot scores out. No ROS needed.

`PerceptionEncoder` ties together the model directory and its family (`model_dir`, `families`), its preprocessing
(`preprocessing`), one backend (`backends.registry`), the text vocabulary (`vocabulary`) and scoring
(`clip_scoring`). The ROS nodes are thin wrappers over it.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from robovision_ros.backends.accuracy_gate import DEFAULT_INT8_MIN_COSINE
from robovision_ros.backends.base import BackendUnavailableError
from robovision_ros.backends.registry import create_backend
from robovision_ros.clip_scoring import DEFAULT_PRESENCE_THRESHOLD, ClipFrameResult, cosine_similarities, \
    l2_normalize, score, score_batch, zero_shot_probabilities
from robovision_ros.features import ClassificationResult, EncodeTiming, ImageFeatures
from robovision_ros.model_dir import ClassificationHead, ModelInfo, family_of, load_tokenizer, \
    read_classification_head, read_model_info, tokenize
from robovision_ros.preprocessing import ImagePreprocessor
from robovision_ros.vocabulary import TextEmbeddingCache, VocabularyEmbeddings

LOG = logging.getLogger(__name__)


class PerceptionEncoder:
    """One loaded model on one backend, with its preprocessing, tokenizer and vocabulary cache."""

    def __init__(self, model_id: str, backend: str = 'auto', device: str = 'cpu', precision: str = 'fp32',
                 cache_dir: Optional[Path] = None, force_rebuild: bool = False,
                 int8_min_cosine: Optional[float] = DEFAULT_INT8_MIN_COSINE,
                 options: Optional[Mapping[str, Any]] = None) -> None:
        """
        Load `model_id` on one backend, with its preprocessing, tokenizer and vocabulary cache.

        `int8_min_cosine`: the accuracy gate of int8 engines (see `create_backend`); None skips it. `options`: the
        values of the backend's own parameters (e.g. triton_url for backend triton).
        """
        self.info: ModelInfo = read_model_info(model_id)
        self.family = family_of(self.info)
        self.preprocessor = ImagePreprocessor(self.family.preprocess_config(self.info))
        self.backend = create_backend(self.info, backend, device, precision, cache_dir, force_rebuild,
                                      int8_min_cosine, options)
        self.tokenizer = load_tokenizer(self.info) if self.info.has_text else None
        self.vocabulary = TextEmbeddingCache(f'{model_id}', self.encode_texts) if self.info.has_text else None
        # A ViT fine-tuned with a head: its logits are a Linear on the global embedding, applied here for every
        # backend (the exported graph stays patch_tokens + global_embedding).
        self.head: Optional[ClassificationHead] = read_classification_head(self.info)
        self._device_preprocessing = device == 'cuda' and self.backend.capabilities.device_tensors

    @property
    def logit_scale(self) -> float:
        return self.backend.logit_scale

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> unnormalised text embeddings [T, D] (fixed-length padding, as exported)."""
        if self.tokenizer is None:
            raise BackendUnavailableError(f'{self.info.model_id} is a {self.info.model_type} model: no text')
        return self.backend.encode_text(*tokenize(self.tokenizer, texts, self.backend.text_length))

    def build_vocabulary(self, labels: Sequence[str], templates: Sequence[str], version: int,
                         allow_empty: bool = False,
                         cancelled: Callable[[], bool] = lambda: False) -> VocabularyEmbeddings:
        """Label embeddings for `labels` x `templates` (see TextEmbeddingCache.build; `cancelled` ends it early)."""
        if self.vocabulary is None:
            raise BackendUnavailableError(f'{self.info.model_id} has no text encoder for a vocabulary')
        return self.vocabulary.build(labels, templates, version, allow_empty, cancelled)

    def encode_images(self, images: Sequence[np.ndarray], scale: float = 1.0,
                      normalize: bool = False) -> tuple[list[ImageFeatures], EncodeTiming]:
        """RGB uint8 images (one batch; sizes may differ) -> features per image, and the stage timings."""
        start = time.perf_counter()
        pixels = self.prepare(images, scale)
        prepared = time.perf_counter()
        encoding = self.backend.encode_image(pixels)
        done = time.perf_counter()
        patches, pooled = encoding.patch_tokens, encoding.global_embedding
        logits = self.head.logits(pooled) if self.head is not None else None
        if normalize:
            patches, pooled = l2_normalize(patches), l2_normalize(pooled)
        features = [ImageFeatures(patches[i], pooled[i], encoding.grid_hw,
                                  self.preprocessor.geometry(image.shape[:2], scale), scale, normalize,
                                  None if logits is None else logits[i])
                    for i, image in enumerate(images)]
        return features, EncodeTiming((prepared - start) * 1e3, (done - prepared) * 1e3)

    def prepare(self, images: Sequence[np.ndarray], scale: float = 1.0) -> Any:
        """
        Turn RGB uint8 images into the backend's input.

        Normalised on the GPU for backends that take device tensors on CUDA (a torch tensor there), else a
        float32 numpy batch.
        """
        if self._device_preprocessing:
            import torch

            return self.preprocessor.torch_preprocess(images, 'cuda', torch.float32, scale)
        return self.preprocessor(images, scale)

    def classify(self, features: ImageFeatures) -> ClassificationResult:
        """Softmax over the classification head's logits of one encoded image (models with a head only)."""
        if self.head is None or features.class_logits is None:
            raise BackendUnavailableError(f'{self.info.model_id} has no classification head')
        logits = features.class_logits.astype(np.float64)
        scores = np.exp(logits - logits.max())
        scores = (scores / scores.sum()).astype(np.float32)
        best = int(np.argmax(scores))
        return ClassificationResult(self.head.labels, scores, self.head.labels[best], float(scores[best]))

    def similarities(self, global_embeddings: np.ndarray, vocabulary: VocabularyEmbeddings) -> np.ndarray:
        """Cosine similarity [B, L] of image embeddings to the vocabulary's label embeddings."""
        return cosine_similarities(global_embeddings, vocabulary)

    def zero_shot(self, global_embeddings: np.ndarray, vocabulary: VocabularyEmbeddings) -> np.ndarray:
        """Softmax over labels of logit_scale * cosine similarity: [B, L] probabilities summing to 1."""
        return zero_shot_probabilities(global_embeddings, vocabulary, self.logit_scale)

    def score(self, features: ImageFeatures, labels: VocabularyEmbeddings,
              queries: Optional[VocabularyEmbeddings] = None, threshold: float = DEFAULT_PRESENCE_THRESHOLD,
              localize: bool = False, heatmaps: bool = False) -> ClipFrameResult:
        """One encoded frame -> its zero-shot scores with this model's logit scale and patch size (`clip_scoring`)."""
        return score(features, labels, queries, threshold=threshold, logit_scale=self.logit_scale,
                     patch_size=self.info.patch_size, localize=localize, heatmaps=heatmaps)

    def score_batch(self, features: Sequence[ImageFeatures], labels: VocabularyEmbeddings,
                    queries: Optional[VocabularyEmbeddings] = None, threshold: float = DEFAULT_PRESENCE_THRESHOLD,
                    localize: bool = False, heatmaps: bool = False) -> list[ClipFrameResult]:
        """Score the encoded frames of one batch, one result per frame (`clip_scoring.score_batch`)."""
        return score_batch(features, labels, queries, threshold=threshold, logit_scale=self.logit_scale,
                           patch_size=self.info.patch_size, localize=localize, heatmaps=heatmaps)

    def warm_up(self, iterations: int = 2, batch_sizes: Sequence[int] = (1,)) -> dict[int, float]:
        """
        Run each batch size the node will run a few times before the first frame.

        First runs of a shape pay one-off costs: OpenVINO's shape inference for a dynamic batch, a CUDA graph's
        capture (cuda_graphs), cuDNN/oneDNN kernel selection. A node that batches its cameras warms every batch
        size up to the number of cameras, so none of that lands on a frame.

        Returns the model's time per frame at each batch size (ms, the fastest run after the first; a measurement at
        configure, for the node's choice whether batching pays on this backend and machine).
        """
        size = self.info.image_size
        dummy = np.zeros((size, size, 3), np.uint8)
        per_frame = {}
        for batch in batch_sizes:
            times = [self.encode_images([dummy] * batch)[1].inference_ms / batch for _ in range(iterations)]
            per_frame[batch] = min(times[1:] or times)  # the first run of a shape pays its one-off costs
        return per_frame

    def close(self) -> None:
        self.backend.close()
