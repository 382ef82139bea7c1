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
from robovision_ros.clip_scoring import ClipFrameResult, ZeroShotScoring, cosine_similarities, l2_normalize, score, \
    score_batch
from robovision_ros.features import ClassificationResult, EncodeTiming, ImageFeatures
from robovision_ros.model_dir import ClassificationHead, ModelInfo, ModelLoadError, family_of, load_tokenizer, \
    read_classification_head, read_model_info, tokenize
from robovision_ros.preprocessing import CROP, FULL_FRAME, INPUT_MODES, ImagePreprocessor
from robovision_ros.vocabulary import TextEmbeddingCache, VocabularyEmbeddings

LOG = logging.getLogger(__name__)


class PerceptionEncoder:
    """One loaded model on one backend, with its preprocessing, tokenizer and vocabulary cache."""

    def __init__(self, model_id: str, backend: str = 'auto', device: str = 'cpu', precision: str = 'fp32',
                 cache_dir: Optional[Path] = None, force_rebuild: bool = False,
                 int8_min_cosine: Optional[float] = DEFAULT_INT8_MIN_COSINE,
                 options: Optional[Mapping[str, Any]] = None, input_mode: str = CROP) -> None:
        """
        Load `model_id` on one backend, with its preprocessing, tokenizer and vocabulary cache.

        `int8_min_cosine`: the accuracy gate of int8 engines (see `create_backend`); None skips it. `options`: the
        values of the backend's own parameters (e.g. triton_url for backend triton). `input_mode`: what the model
        sees of a frame (preprocessing.INPUT_MODES); full_frame needs a family whose vision tower runs other input
        sizes and a backend without a fixed input size (its capabilities say).
        """
        if input_mode not in INPUT_MODES:
            raise ValueError(f"input_mode '{input_mode}' not supported; supported: {', '.join(INPUT_MODES)}")
        self.info: ModelInfo = read_model_info(model_id)
        self.family = family_of(self.info)
        if self.family.detector:
            raise ModelLoadError(f'{model_id} is an open-vocabulary detector ({self.info.family}), not an image '
                                 'encoder: run it with open_vocab_detector')
        if input_mode == FULL_FRAME and not self.family.flexible_input:
            raise ModelLoadError(f'input_mode full_frame: {self.family.name} models run their native input size only')
        self.preprocessor = ImagePreprocessor(self.family.preprocess_config(self.info),
                                              full_frame_patch=self.info.patch_size if input_mode == FULL_FRAME
                                              else None)
        self.backend = create_backend(self.info, backend, device, precision, cache_dir, force_rebuild,
                                      int8_min_cosine, options)
        problem = self.backend.capabilities.input_size_problem('input_mode full_frame') \
            if input_mode == FULL_FRAME else None
        if problem is not None:
            self.backend.close()
            raise BackendUnavailableError(problem)
        self.tokenizer = load_tokenizer(self.info) if self.info.has_text else None
        self.vocabulary = TextEmbeddingCache(f'{model_id}', self.encode_texts) if self.info.has_text else None
        # A ViT fine-tuned with a head: its logits are a Linear on the global embedding, applied here for every
        # backend (the exported graph stays patch_tokens + global_embedding).
        self.head: Optional[ClassificationHead] = read_classification_head(self.info)
        self._device_preprocessing = device == 'cuda' and self.backend.capabilities.device_tensors

    @property
    def logit_scale(self) -> float:
        return self.backend.logit_scale

    @property
    def scoring(self) -> ZeroShotScoring:
        """How this model's cosines become scores: its family's kind with the loaded scale and bias."""
        return ZeroShotScoring(self.family.scoring, self.backend.logit_scale, self.backend.logit_bias)

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
        """
        RGB uint8 images (one batch; sizes may differ) -> features per image, and the stage timings.

        Frames whose model inputs have the same size run as one batch: all of them in crop mode, frames of the same
        shape in full_frame mode (whose input follows each frame's aspect).
        """
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(self.preprocessor.input_hw(image.shape[:2], scale), []).append(i)
        features: list[Optional[ImageFeatures]] = [None] * len(images)
        preprocess_ms = inference_ms = 0.0
        for indices in groups.values():
            start = time.perf_counter()
            pixels = self.prepare([images[i] for i in indices], scale)
            prepared = time.perf_counter()
            encoding = self.backend.encode_image(pixels)
            done = time.perf_counter()
            preprocess_ms += (prepared - start) * 1e3
            inference_ms += (done - prepared) * 1e3
            patches, pooled = encoding.patch_tokens, encoding.global_embedding
            logits = self.head.logits(pooled) if self.head is not None else None
            if normalize:
                patches, pooled = l2_normalize(patches), l2_normalize(pooled)
            for row, i in enumerate(indices):
                features[i] = ImageFeatures(patches[row], pooled[row], encoding.grid_hw,
                                            self.preprocessor.geometry(images[i].shape[:2], scale), scale, normalize,
                                            None if logits is None else logits[row])
        return features, EncodeTiming(preprocess_ms, inference_ms)  # type: ignore[return-value]

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
        """Label scores [B, L]: softmax over labels (CLIP, summing to 1) or a sigmoid per label (SigLIP)."""
        return self.scoring.label_scores(cosine_similarities(global_embeddings, vocabulary))

    def score(self, features: ImageFeatures, labels: VocabularyEmbeddings,
              queries: Optional[VocabularyEmbeddings] = None, threshold: Optional[float] = None,
              localize: bool = False, heatmaps: bool = False) -> ClipFrameResult:
        """
        One encoded frame -> its zero-shot scores with this model's scoring and patch size (`clip_scoring`).

        `threshold` None: the default of the family's scoring (a cosine for CLIP, a probability for SigLIP).
        """
        scoring = self.scoring
        return score(features, labels, queries, threshold=threshold, logit_scale=scoring.logit_scale,
                     patch_size=self.info.patch_size, localize=localize, heatmaps=heatmaps, scoring=scoring.kind,
                     logit_bias=scoring.logit_bias)

    def score_batch(self, features: Sequence[ImageFeatures], labels: VocabularyEmbeddings,
                    queries: Optional[VocabularyEmbeddings] = None, threshold: Optional[float] = None,
                    localize: bool = False, heatmaps: bool = False) -> list[ClipFrameResult]:
        """Score the encoded frames of one batch, one result per frame (`clip_scoring.score_batch`)."""
        scoring = self.scoring
        return score_batch(features, labels, queries, threshold=threshold, logit_scale=scoring.logit_scale,
                           patch_size=self.info.patch_size, localize=localize, heatmaps=heatmaps,
                           scoring=scoring.kind, logit_bias=scoring.logit_bias)

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
