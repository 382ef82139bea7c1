# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Open-vocabulary detection: per-patch predictions and query embeddings in, boxes in source-image pixels out.

An OWL-style detector's image graph predicts, for every patch of the model input, a class embedding, a logit shift
and scale, and a box; a query (a text, or an example image) is one embedding. `decode_detections` is the one place
they meet: logits of every patch for every query, as transformers' OWL class head computes them; per patch the best
query and its sigmoid score, as `post_process_object_detection` keeps them; then the score threshold, class-aware
non-maximum suppression and the `max_detections` bound, and the boxes mapped from model-input pixels to the source
image through the preprocessing geometry (a centre crop, a squash to a square, or a square pad: whatever the model's
preprocessing did). Plain numpy, no framework.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from robovision_ros.preprocessing import PreprocessGeometry

# transformers' OWL class head divides by (norm + 1e-6), not by the norm alone.
CLASS_EMBEDDING_EPS = 1e-6
DEFAULT_SCORE_THRESHOLD = 0.1  # transformers' post_process_object_detection default
DEFAULT_NMS_IOU = 0.3  # transformers' post_process_image_guided_detection default
DEFAULT_MAX_DETECTIONS = 50


@dataclass(frozen=True)
class PatchPredictions:
    """What a detector's image graph predicts for the patches of one image."""

    class_embeddings: np.ndarray  # [N, D] float32, unnormalised (compared by cosine with the queries)
    logit_shift: np.ndarray  # [N] float32
    logit_scale: np.ndarray  # [N] float32 (positive)
    boxes: np.ndarray  # [N, 4] float32 (centre x, centre y, width, height) relative to the model input, 0 .. 1
    objectness: Optional[np.ndarray]  # [N] float32 logits (OWLv2), None where the model has no objectness head
    grid_hw: tuple[int, int]


@dataclass(frozen=True)
class DetectorImageOutputs:
    """A detector's image-graph outputs for a batch (the family's typed image result)."""

    class_embeddings: np.ndarray  # [B, N, D]
    logit_shift: np.ndarray  # [B, N]
    logit_scale: np.ndarray  # [B, N]
    boxes: np.ndarray  # [B, N, 4]
    objectness: Optional[np.ndarray]  # [B, N] or None
    grid_hw: tuple[int, int]

    def __len__(self) -> int:
        return len(self.class_embeddings)

    def image(self, index: int) -> PatchPredictions:
        """Return the predictions for image `index` of the batch."""
        return PatchPredictions(self.class_embeddings[index], self.logit_shift[index], self.logit_scale[index],
                                self.boxes[index], None if self.objectness is None else self.objectness[index],
                                self.grid_hw)


@dataclass(frozen=True)
class Detection:
    """One detected instance: its box in source-image pixels, score and the query that found it."""

    box_xyxy: tuple[float, ...]  # x0, y0, x1, y1 in source-image pixels (continuous coordinates)
    score: float  # sigmoid of the query's logit at this patch, 0 .. 1
    query_index: int  # index into DetectionResult.queries
    label: str


@dataclass(frozen=True)
class DetectionResult:
    """The detections of one frame, best first, with the queries they refer to."""

    detections: tuple[Detection, ...]
    queries: tuple[str, ...]  # every query in index order (text queries first, then image queries)
    version: int  # the query set's version
    candidates: int  # patches above the score threshold before non-maximum suppression


def unit_rows(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Return `vectors` [.., D] scaled to unit length along the last axis."""
    vectors = np.asarray(vectors, np.float32)
    return vectors / (np.linalg.norm(vectors, axis=-1, keepdims=True) + eps)


def query_logits(predictions: PatchPredictions, queries: np.ndarray) -> np.ndarray:
    """
    Return the logit of every patch for every query, [N, Q].

    (cosine(class embedding, query) + shift) * scale, as transformers' OwlViTClassPredictionHead computes it;
    `queries` [Q, D] need not be normalised.
    """
    embeddings = predictions.class_embeddings / (
        np.linalg.norm(predictions.class_embeddings, axis=-1, keepdims=True) + CLASS_EMBEDDING_EPS)
    queries = np.asarray(queries, np.float32)
    queries = queries / (np.linalg.norm(queries, axis=-1, keepdims=True) + CLASS_EMBEDDING_EPS)
    return (embeddings @ queries.T + predictions.logit_shift[:, None]) * predictions.logit_scale[:, None]


def sigmoid(values: np.ndarray) -> np.ndarray:
    """Return the logistic function of `values`, without overflow warnings for large negative logits."""
    return 0.5 * (np.tanh(0.5 * np.asarray(values, np.float64)) + 1.0)


def centre_to_corners(boxes: np.ndarray) -> np.ndarray:
    """(centre x, centre y, width, height) -> (x0, y0, x1, y1), any leading shape."""
    boxes = np.asarray(boxes, np.float64)
    centre, size = boxes[..., :2], boxes[..., 2:4]
    return np.concatenate([centre - 0.5 * size, centre + 0.5 * size], axis=-1)


def box_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Return the intersection over union of every box in `first` [N, 4] with every box in `second` [M, 4] (xyxy)."""
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    area_first = np.clip(first[:, 2] - first[:, 0], 0, None) * np.clip(first[:, 3] - first[:, 1], 0, None)
    area_second = np.clip(second[:, 2] - second[:, 0], 0, None) * np.clip(second[:, 3] - second[:, 1], 0, None)
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    size = np.clip(bottom_right - top_left, 0, None)
    intersection = size[..., 0] * size[..., 1]
    union = area_first[:, None] + area_second[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """
    Return the indices of the boxes greedy non-maximum suppression keeps, best score first.

    A box is dropped when its IoU with a kept, better-scoring box exceeds `iou_threshold` (as transformers'
    image-guided post-processing and torchvision's nms do); ties keep the lower index first. A threshold of 1 or
    more keeps everything.
    """
    order = np.lexsort((np.arange(len(scores)), -np.asarray(scores, np.float64)))
    if iou_threshold >= 1.0 or len(order) == 0:
        return order
    boxes = np.asarray(boxes, np.float64)
    keep: list[int] = []
    suppressed = np.zeros(len(scores), bool)
    for index in order:
        if suppressed[index]:
            continue
        keep.append(int(index))
        suppressed |= box_iou(boxes[index:index + 1], boxes)[0] > iou_threshold
    return np.asarray(keep, np.int64)


def class_aware_nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Non-maximum suppression within each class only (two overlapping boxes of two queries both stay)."""
    classes = np.asarray(classes)
    keep = [np.flatnonzero(classes == value)[nms(boxes[classes == value], scores[classes == value], iou_threshold)]
            for value in np.unique(classes)]
    kept = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    return kept[np.lexsort((kept, -np.asarray(scores, np.float64)[kept]))]


def boxes_to_source(boxes_xyxy: np.ndarray, geometry: PreprocessGeometry) -> np.ndarray:
    """
    Map boxes [K, 4] from model-input pixels to source-image pixels, clamped to the image.

    The inverse of the preprocessing's resize and crop (`PreprocessGeometry`): x_src = (x_in + crop_x) / scale_x. A
    box reaching into padding or beyond a crop is cut at the image border.
    """
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    height, width = geometry.source_hw
    xs = np.clip((boxes[:, [0, 2]] + geometry.crop_x) / geometry.scale_x, 0.0, width)
    ys = np.clip((boxes[:, [1, 3]] + geometry.crop_y) / geometry.scale_y, 0.0, height)
    return np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], axis=1)


def decode_detections(predictions: PatchPredictions, queries: np.ndarray, labels: Sequence[str],
                      geometry: PreprocessGeometry, input_hw: tuple[int, int], threshold: float,
                      nms_iou: float, max_detections: int, version: int = 0) -> DetectionResult:
    """
    Turn one image's patch predictions and the query embeddings into its detections.

    Per patch, the best query and sigmoid(logit) as its score (transformers' `post_process_object_detection`),
    kept above `threshold` (strictly); class-aware NMS at `nms_iou` on the model-input boxes; the best
    `max_detections`; boxes mapped to source pixels. `queries` [Q, D] and `labels` are in query-index order.
    """
    if len(labels) != len(queries):
        raise ValueError(f'{len(labels)} labels for {len(queries)} query embeddings')
    if len(queries) == 0:
        return DetectionResult((), tuple(labels), version, 0)
    logits = query_logits(predictions, queries)
    best = np.argmax(logits, axis=1)
    scores = sigmoid(logits[np.arange(len(best)), best])
    candidates = np.flatnonzero(scores > threshold)
    in_pixels = centre_to_corners(predictions.boxes[candidates]) * np.array(
        [input_hw[1], input_hw[0], input_hw[1], input_hw[0]], np.float64)
    kept = class_aware_nms(in_pixels, scores[candidates], best[candidates], nms_iou)[:max_detections]
    source = boxes_to_source(in_pixels[kept], geometry)
    detections = tuple(
        Detection(tuple(float(v) for v in box), float(scores[candidates[k]]), int(best[candidates[k]]),
                  labels[int(best[candidates[k]])])
        for box, k in zip(source, kept))
    return DetectionResult(detections, tuple(labels), version, int(len(candidates)))
