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

# Cosine similarity at which a presence query counts as present: the default of the `presence_threshold`
# parameter and of every caller that scores without one (demo, evaluation).
DEFAULT_PRESENCE_THRESHOLD = 0.25


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a tiny epsilon keeps zero rows finite)."""
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def cosine_similarities(global_embeddings: np.ndarray, vocabulary: VocabularyEmbeddings) -> np.ndarray:
    """Cosine similarity [B, L] of image embeddings ([D] or [B, D]) to the vocabulary's unit label embeddings."""
    return l2_normalize(np.atleast_2d(global_embeddings)) @ vocabulary.embeddings.T


def zero_shot_probabilities(global_embeddings: np.ndarray, vocabulary: VocabularyEmbeddings,
                            logit_scale: float) -> np.ndarray:
    """Softmax over labels of logit_scale * cosine similarity: [B, L] probabilities summing to 1."""
    logits = logit_scale * cosine_similarities(global_embeddings, vocabulary)
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class QueryPresence:
    """One presence query in one frame."""

    query: str
    similarity: float  # cosine of the image embedding to the query's text embedding
    threshold: float
    present: bool  # similarity >= threshold
    location: Optional[Localization]  # None when the frame was not localised


@dataclass(frozen=True, eq=False)
class ClipFrameResult:
    """Everything CLIP says about one frame, against one (labels, queries) vocabulary snapshot (arrays read-only)."""

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    scores: np.ndarray  # [L] softmax probabilities over `labels`
    best_index: int
    labels_version: int
    queries: tuple[str, ...]
    similarities: np.ndarray  # [Q] cosine similarity per query
    present_mask: np.ndarray  # [Q] bool: similarity >= threshold
    threshold: float
    queries_version: Optional[int]  # None when the frame was scored without presence queries
    heatmaps: Optional[np.ndarray]  # [Q, grid_h, grid_w] patch cosine per query; None unless localised or asked
    locations: Optional[tuple[Localization, ...]]  # per query, in source-image pixels; None unless localised
    geometry: PreprocessGeometry  # model-input pixels -> source-image pixels of this frame
    patch_size: int

    @property
    def best_label(self) -> str:
        return self.labels[self.best_index]

    @property
    def best_score(self) -> float:
        return float(self.scores[self.best_index])

    @property
    def presence(self) -> tuple[QueryPresence, ...]:
        """Per-query results in query order."""
        return tuple(QueryPresence(query, float(self.similarities[q]), self.threshold, bool(self.present_mask[q]),
                                   self.locations[q] if self.locations is not None else None)
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
                threshold: float = DEFAULT_PRESENCE_THRESHOLD, logit_scale: float, patch_size: int,
                localize: bool = False, heatmaps: bool = False) -> list[ClipFrameResult]:
    """
    Score a batch of encoded frames with one similarity product for the whole batch.

    Returns label probabilities, presence of each query, and when `localize` the query heatmaps and their
    localisation; `heatmaps` keeps the heatmaps without localising every query (e.g. for a debug image). `queries`
    None or empty: no presence.
    """
    features = list(features)
    if not features:
        return []
    embeddings = np.stack([f.global_embedding for f in features])
    probs = _read_only(zero_shot_probabilities(embeddings, labels, logit_scale))
    query_labels = queries.labels if queries is not None else ()
    similarities = _read_only(cosine_similarities(embeddings, queries) if query_labels
                              else np.zeros((len(features), 0), np.float32))
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
        # Compared as Python floats, as a message's float similarity is, whatever the embedding dtype.
        present_mask = _read_only(np.array([float(s) >= threshold for s in similarities[i]], dtype=bool))
        results.append(ClipFrameResult(
            labels=labels.labels, templates=labels.templates, scores=probs[i], best_index=int(np.argmax(probs[i])),
            labels_version=labels.version, queries=query_labels, similarities=similarities[i],
            present_mask=present_mask,
            threshold=float(threshold), queries_version=queries.version if queries is not None else None,
            heatmaps=maps, locations=locations, geometry=feature.geometry, patch_size=patch_size))
    return results


def score(features: ImageFeatures, labels: VocabularyEmbeddings, queries: Optional[VocabularyEmbeddings] = None,
          *, threshold: float = DEFAULT_PRESENCE_THRESHOLD, logit_scale: float, patch_size: int,
          localize: bool = False, heatmaps: bool = False) -> ClipFrameResult:
    """Score one encoded frame; see `score_batch`."""
    return score_batch([features], labels, queries, threshold=threshold, logit_scale=logit_scale,
                       patch_size=patch_size, localize=localize, heatmaps=heatmaps)[0]
