# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Zero-shot scoring of encoded frames: image features + text vocabularies -> one typed result per frame.

The last stage after `PerceptionEncoder.encode_images` and `build_vocabulary`, as nanoowl's `decode` follows
`encode_image` and `encode_text` (here `score`: "decode" means image bytes in this package): zero-shot label
probabilities, presence of each text query, and (on request) query heatmaps and their localisation in source-image
pixels. The node, the demo, the evaluation and the benchmark all score frames here; none assembles scores by hand.
No ROS needed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from robovision_ros.features import ImageFeatures
from robovision_ros.localization import Localization, localize as localize_heatmap, similarity_heatmaps
from robovision_ros.preprocessing import PreprocessGeometry
from robovision_ros.vocabulary import VocabularyEmbeddings

# How a family turns cosine similarities into zero-shot scores (its `ModelFamily.scoring`):
SOFTMAX = 'softmax'  # CLIP: labels softmax(logit_scale * cosine) over the vocabulary; presence: cosine >= threshold
SIGMOID = 'sigmoid'  # SigLIP: sigmoid(logit_scale * cosine + logit_bias) per text, for labels and presence alike
SCORINGS = (SOFTMAX, SIGMOID)
# Cosine similarity at which a presence query counts as present under softmax scoring: the default of the
# `presence_threshold` parameter and of every caller that scores without one (demo, evaluation).
DEFAULT_PRESENCE_THRESHOLD = 0.25
# Probability at which a presence query counts as present under sigmoid scoring (`presence_probability`): the
# decision boundary of the sigmoid loss the model was trained with.
DEFAULT_PRESENCE_PROBABILITY = 0.5
DEFAULT_THRESHOLDS = {SOFTMAX: DEFAULT_PRESENCE_THRESHOLD, SIGMOID: DEFAULT_PRESENCE_PROBABILITY}


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a tiny epsilon keeps zero rows finite)."""
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def cosine_similarities(global_embeddings: np.ndarray, vocabulary: VocabularyEmbeddings) -> np.ndarray:
    """Cosine similarity [B, L] of image embeddings ([D] or [B, D]) to the vocabulary's unit label embeddings."""
    return l2_normalize(np.atleast_2d(global_embeddings)) @ vocabulary.embeddings.T


def zero_shot_probabilities(global_embeddings: np.ndarray, vocabulary: VocabularyEmbeddings,
                            logit_scale: float) -> np.ndarray:
    """Softmax over labels of logit_scale * cosine similarity: [B, L] probabilities summing to 1."""
    return softmax_scores(cosine_similarities(global_embeddings, vocabulary), logit_scale)


def softmax_scores(cosines: np.ndarray, logit_scale: float) -> np.ndarray:
    """Softmax over the last axis of logit_scale * cosine: probabilities summing to 1 per row."""
    logits = logit_scale * np.asarray(cosines)
    logits -= logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=-1, keepdims=True)


def sigmoid_scores(cosines: np.ndarray, logit_scale: float, logit_bias: float) -> np.ndarray:
    """sigmoid(logit_scale * cosine + logit_bias) per entry: independent probabilities (SigLIP)."""
    logits = logit_scale * np.asarray(cosines, np.float64) + logit_bias
    # Written with exp of a non-positive number only, so that no logit overflows.
    positive = np.exp(-np.abs(logits))
    return np.where(logits >= 0, 1.0 / (1.0 + positive), positive / (1.0 + positive)).astype(np.float32)


@dataclass(frozen=True)
class ZeroShotScoring:
    """How one model's cosine similarities become scores: its family's kind and its trained scale and bias."""

    kind: str = SOFTMAX  # one of SCORINGS
    logit_scale: float = 1.0
    logit_bias: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SCORINGS:
            raise ValueError(f"scoring '{self.kind}' not supported; supported: {', '.join(SCORINGS)}")

    def label_scores(self, cosines: np.ndarray) -> np.ndarray:
        """[B, L] cosines -> label scores: softmax over labels, or a sigmoid probability per label."""
        if self.kind == SIGMOID:
            return sigmoid_scores(cosines, self.logit_scale, self.logit_bias)
        return softmax_scores(cosines, self.logit_scale)

    def presence_scores(self, cosines: np.ndarray) -> np.ndarray:
        """[B, Q] cosines -> what presence thresholds: the cosine itself (softmax), or the sigmoid probability."""
        if self.kind == SIGMOID:
            return sigmoid_scores(cosines, self.logit_scale, self.logit_bias)
        return np.asarray(cosines, np.float32)

    @property
    def default_threshold(self) -> float:
        """Return the presence threshold this kind of score is compared with by default."""
        return DEFAULT_THRESHOLDS[self.kind]


@dataclass(frozen=True)
class QueryPresence:
    """One presence query in one frame."""

    query: str
    similarity: float  # cosine of the image embedding to the query's text embedding
    threshold: float
    present: bool  # score >= threshold
    location: Optional[Localization]  # None when the frame was not localised
    score: float  # what the threshold applies to: the cosine (softmax scoring) or the sigmoid probability


@dataclass(frozen=True, eq=False)
class ClipFrameResult:
    """Everything CLIP says about one frame, against one (labels, queries) vocabulary snapshot (arrays read-only)."""

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    scores: np.ndarray  # [L] softmax probabilities over `labels` (softmax scoring) or sigmoid per label
    best_index: int
    labels_version: int
    queries: tuple[str, ...]
    similarities: np.ndarray  # [Q] cosine similarity per query
    present_mask: np.ndarray  # [Q] bool: presence_scores >= threshold
    threshold: float
    queries_version: Optional[int]  # None when the frame was scored without presence queries
    heatmaps: Optional[np.ndarray]  # [Q, grid_h, grid_w] patch cosine per query; None unless localised or asked
    locations: Optional[tuple[Localization, ...]]  # per query, in source-image pixels; None unless localised
    geometry: PreprocessGeometry  # model-input pixels -> source-image pixels of this frame
    patch_size: int
    scoring: str = SOFTMAX  # how `scores` and `presence_scores` were computed (SCORINGS)
    presence_scores: Optional[np.ndarray] = None  # [Q] what the threshold applied to (None: the similarities)

    @property
    def best_label(self) -> str:
        return self.labels[self.best_index]

    @property
    def best_score(self) -> float:
        return float(self.scores[self.best_index])

    @property
    def presence(self) -> tuple[QueryPresence, ...]:
        """Per-query results in query order."""
        scores = self.similarities if self.presence_scores is None else self.presence_scores
        return tuple(QueryPresence(query, float(self.similarities[q]), self.threshold, bool(self.present_mask[q]),
                                   self.locations[q] if self.locations is not None else None, float(scores[q]))
                     for q, query in enumerate(self.queries))

    @property
    def top_query(self) -> Optional[int]:
        """Index of the query most similar to the whole image (None without queries)."""
        return int(np.argmax(self.similarities)) if len(self.queries) else None

    def locate(self, query_index: int) -> Localization:
        """Localisation of one query: the scored one when localised, else computed from its heatmap."""
        if self.locations is not None:
            return self.locations[query_index]
        if self.heatmaps is None:
            raise ValueError('this frame was scored without heatmaps; score with localize=True or heatmaps=True')
        return localize_heatmap(self.heatmaps[query_index], self.patch_size, self.geometry)


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def score_batch(features: Sequence[ImageFeatures], labels: VocabularyEmbeddings,
                queries: Optional[VocabularyEmbeddings] = None, *,
                threshold: Optional[float] = None, logit_scale: float, patch_size: int,
                localize: bool = False, heatmaps: bool = False, scoring: str = SOFTMAX,
                logit_bias: float = 0.0) -> list[ClipFrameResult]:
    """
    Score a batch of encoded frames with one similarity product for the whole batch.

    Returns label scores, presence of each query, and when `localize` the query heatmaps and their localisation;
    `heatmaps` keeps the heatmaps without localising every query (e.g. for a debug image). `queries` None or empty:
    no presence. `scoring` (with `logit_scale` and `logit_bias`) is the model family's: 'softmax' gives label
    probabilities summing to 1 and thresholds the cosine; 'sigmoid' gives each label and query its own probability
    and thresholds that. `threshold` None: the scoring's default (DEFAULT_THRESHOLDS).
    """
    features = list(features)
    if not features:
        return []
    rule = ZeroShotScoring(scoring, logit_scale, logit_bias)
    threshold = rule.default_threshold if threshold is None else threshold
    embeddings = np.stack([f.global_embedding for f in features])
    probs = _read_only(rule.label_scores(cosine_similarities(embeddings, labels)))
    query_labels = queries.labels if queries is not None else ()
    similarities = _read_only(cosine_similarities(embeddings, queries) if query_labels
                              else np.zeros((len(features), 0), np.float32))
    presence_scores = _read_only(rule.presence_scores(similarities))
    results = []
    for i, feature in enumerate(features):
        maps = None
        if query_labels and (localize or heatmaps):
            # All query heatmaps of this frame in one product.
            maps = _read_only(similarity_heatmaps(feature.patch_tokens, queries.embeddings, feature.grid_hw))
        locations = None
        if localize:
            locations = tuple(localize_heatmap(heatmap, patch_size, feature.geometry) for heatmap in maps) \
                if maps is not None else ()
        # Compared as Python floats, as a message's float score is, whatever the embedding dtype.
        present_mask = _read_only(np.array([float(s) >= threshold for s in presence_scores[i]], dtype=bool))
        results.append(ClipFrameResult(
            labels=labels.labels, templates=labels.templates, scores=probs[i], best_index=int(np.argmax(probs[i])),
            labels_version=labels.version, queries=query_labels, similarities=similarities[i],
            present_mask=present_mask,
            threshold=float(threshold), queries_version=queries.version if queries is not None else None,
            heatmaps=maps, locations=locations, geometry=feature.geometry, patch_size=patch_size, scoring=rule.kind,
            presence_scores=presence_scores[i]))
    return results


def score(features: ImageFeatures, labels: VocabularyEmbeddings, queries: Optional[VocabularyEmbeddings] = None,
          *, threshold: Optional[float] = None, logit_scale: float, patch_size: int,
          localize: bool = False, heatmaps: bool = False, scoring: str = SOFTMAX,
          logit_bias: float = 0.0) -> ClipFrameResult:
    """Score one encoded frame; see `score_batch`."""
    return score_batch([features], labels, queries, threshold=threshold, logit_scale=logit_scale,
                       patch_size=patch_size, localize=localize, heatmaps=heatmaps, scoring=scoring,
                       logit_bias=logit_bias)[0]
