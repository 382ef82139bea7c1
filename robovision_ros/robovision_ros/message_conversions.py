# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Every output message is built here, and read back here: results and arrays <-> robovision_ros messages.

The nodes, the demo and the tests build messages from typed results with the `*_message(s)` functions (the input
image's header copied unchanged into each). `PatchFeatures.data` carries a row-major ``[grid_h * grid_w, dim]``
tensor as little-endian bytes; `fill_patch_features` writes it from an array and `patch_features_to_numpy` reads it
back as a zero-copy view, an exact round trip for float32 and float16. Inconsistent messages (shape, dtype or byte
length that disagree) raise `MessageConversionError`.
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from sensor_msgs.msg import Image, RegionOfInterest

from robovision_ros.clip_scoring import ClipFrameResult
from robovision_ros.detection import DetectionResult
from robovision_ros.features import ClassificationResult, EncodeTiming, ImageFeatures
from robovision_msgs.msg import ClassScores, ObjectDetection, ObjectDetectionArray, ObjectPresence, \
    ObjectPresenceArray, PatchFeatures, ZeroShotLabels
from robovision_ros.image_codec import encode_raw_image

SUPPORTED_DTYPES: dict[str, np.dtype] = {
    'float32': np.dtype('<f4'),
    'float16': np.dtype('<f2'),
}


class MessageConversionError(ValueError):
    """A message and an array (or the fields of one message) disagree."""


@dataclass(frozen=True)
class PatchFeatureTensor:
    """The tensor content of a `PatchFeatures` message."""

    features: np.ndarray  # [grid_h * grid_w, dim], float32 or float16
    grid_h: int
    grid_w: int
    global_embedding: np.ndarray  # [D_global], float32

    @property
    def grid(self) -> np.ndarray:
        """Features as a ``[grid_h, grid_w, dim]`` view."""
        return self.features.reshape(self.grid_h, self.grid_w, -1)


def _dtype_for(name: str) -> np.dtype:
    try:
        return SUPPORTED_DTYPES[name]
    except KeyError:
        raise MessageConversionError(
            f"dtype '{name}' not supported; supported: {', '.join(SUPPORTED_DTYPES)}") from None


def _dtype_name(dtype: np.dtype) -> str:
    for name, supported in SUPPORTED_DTYPES.items():
        if np.dtype(dtype).newbyteorder('<') == supported:
            return name
    raise MessageConversionError(
        f"array dtype '{np.dtype(dtype)}' not supported; supported: {', '.join(SUPPORTED_DTYPES)}")


def fill_patch_features(
    msg: Any,
    features: np.ndarray,
    grid_h: int,
    grid_w: int,
    global_embedding: Optional[np.ndarray] = None,
) -> Any:
    """
    Write `features` ([grid_h*grid_w, dim] or [grid_h, grid_w, dim]) into a `PatchFeatures` message.

    Sets grid_h, grid_w, dim, dtype, shape, data and global_embedding; the caller sets header, model and
    latency fields. Returns `msg`.
    """
    features = np.asarray(features)
    if features.ndim == 3:
        if features.shape[:2] != (grid_h, grid_w):
            raise MessageConversionError(
                f'features grid {features.shape[:2]} does not match grid_h x grid_w = ({grid_h}, {grid_w})')
        features = features.reshape(grid_h * grid_w, features.shape[2])
    if features.ndim != 2:
        raise MessageConversionError(
            f'features must be [grid_h*grid_w, dim] or [grid_h, grid_w, dim]; got shape {features.shape}')
    if grid_h <= 0 or grid_w <= 0 or features.shape[0] != grid_h * grid_w:
        raise MessageConversionError(
            f'features have {features.shape[0]} rows; grid {grid_h}x{grid_w} needs {grid_h * grid_w}')
    dtype_name = _dtype_name(features.dtype)
    little = np.ascontiguousarray(features, dtype=SUPPORTED_DTYPES[dtype_name])
    msg.grid_h = int(grid_h)
    msg.grid_w = int(grid_w)
    msg.dim = int(little.shape[1])
    msg.dtype = dtype_name
    msg.shape = [int(little.shape[0]), int(little.shape[1])]
    msg.data = packed_array('B', little)
    if global_embedding is None:
        msg.global_embedding = array.array('f')
    else:
        embedding = np.asarray(global_embedding, dtype=np.float32)
        if embedding.ndim != 1:
            raise MessageConversionError(f'global_embedding must be 1-D; got shape {embedding.shape}')
        msg.global_embedding = packed_array('f', embedding)
    return msg


def packed_array(typecode: str, values: np.ndarray) -> array.array:
    # Generated message setters type-check an array.array in O(1) but walk any other sequence element by
    # element, which costs milliseconds for a feature map.
    packed = array.array(typecode)
    packed.frombytes(np.ascontiguousarray(values).tobytes())
    return packed


def patch_features_to_numpy(msg: Any) -> PatchFeatureTensor:
    """Read a `PatchFeatures` message as arrays; `features` is a read-only view of the message buffer."""
    dtype = _dtype_for(msg.dtype)
    rows = int(msg.grid_h) * int(msg.grid_w)
    expected_shape = [rows, int(msg.dim)]
    if list(msg.shape) != expected_shape:
        raise MessageConversionError(
            f'shape {list(msg.shape)} disagrees with grid_h*grid_w, dim = {expected_shape}')
    expected_bytes = rows * int(msg.dim) * dtype.itemsize
    buffer = memoryview(msg.data).cast('B') if not isinstance(msg.data, bytes) else msg.data
    if len(buffer) != expected_bytes:
        raise MessageConversionError(
            f'data holds {len(buffer)} bytes; shape {expected_shape} of {msg.dtype} needs {expected_bytes}')
    features = np.frombuffer(buffer, dtype=dtype).reshape(expected_shape)
    return PatchFeatureTensor(
        features=features,
        grid_h=int(msg.grid_h),
        grid_w=int(msg.grid_w),
        global_embedding=np.asarray(msg.global_embedding, dtype=np.float32),
    )


def zero_shot_scores(msg: Any) -> dict[str, float]:
    """Map label -> score of a `ZeroShotLabels` message, checking that labels and scores pair up."""
    labels: Sequence[str] = list(msg.labels)
    scores = np.asarray(msg.scores, dtype=np.float32)
    if len(labels) != len(scores):
        raise MessageConversionError(f'{len(labels)} labels but {len(scores)} scores')
    return {label: float(score) for label, score in zip(labels, scores)}


# --- building output messages from results ---------------------------------------------------------------------
def zero_shot_messages(result: ClipFrameResult, header: Any, model_id: str, timing: Optional[EncodeTiming] = None,
                       total_ms: float = 0.0) -> tuple[ZeroShotLabels, ObjectPresenceArray]:
    """Return the two output messages of one scored frame; `header` is the input image's header, copied unchanged."""
    preprocess_ms, inference_ms = (timing.preprocess_ms, timing.inference_ms) if timing is not None else (0.0, 0.0)
    labels = ZeroShotLabels(header=header, model_id=model_id, labels=list(result.labels),
                            scores=packed_array('f', result.scores.astype(np.float32)), scoring=result.scoring,
                            best_label=result.best_label, best_score=result.best_score,
                            prompt_templates=list(result.templates), vocabulary_version=result.labels_version,
                            preprocess_ms=preprocess_ms, inference_ms=inference_ms, total_ms=total_ms)
    results = []
    for query in result.presence:
        presence = ObjectPresence(query=query.query, similarity=query.similarity, threshold=query.threshold,
                                  present=query.present, score=query.score)
        if query.location is not None:
            x, y, w, h = query.location.roi_xywh
            presence.has_location = True
            presence.roi = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
            presence.peak_x, presence.peak_y = query.location.peak_xy
            presence.peak_score = query.location.peak_score
        results.append(presence)
    presence_array = ObjectPresenceArray(header=header, model_id=model_id,
                                         vocabulary_version=result.queries_version or 0, results=results,
                                         total_ms=total_ms, scoring=result.scoring)
    return labels, presence_array


def patch_features_message(feature: ImageFeatures, header: Any, model_id: str, patch_size: int,
                           dtype: str = 'float32', timing: Optional[EncodeTiming] = None,
                           total_ms: float = 0.0) -> PatchFeatures:
    """Return the PatchFeatures message of one encoded image at one scale, its tensor in `dtype`."""
    msg = fill_patch_features(PatchFeatures(), feature.patch_tokens.astype(SUPPORTED_DTYPES[dtype]),
                              *feature.grid_hw, feature.global_embedding)
    msg.header = header
    msg.model_id = model_id
    msg.patch_size = int(patch_size)
    msg.scale = float(feature.scale)
    msg.normalized = bool(feature.normalized)
    if timing is not None:
        msg.preprocess_ms, msg.inference_ms = timing.preprocess_ms, timing.inference_ms
    msg.total_ms = total_ms
    return msg


def class_scores_message(result: ClassificationResult, header: Any, model_id: str) -> ClassScores:
    """Return the ClassScores message of one image classified by a model's head."""
    return ClassScores(header=header, model_id=model_id, labels=list(result.labels),
                       scores=packed_array('f', result.scores.astype(np.float32)), best_label=result.best_label,
                       best_score=result.best_score)


def detections_message(result: DetectionResult, query_is_image: Sequence[bool], header: Any, model_id: str,
                       score_threshold: float, nms_iou: float, timing: Optional[EncodeTiming] = None,
                       postprocess_ms: float = 0.0, total_ms: float = 0.0) -> ObjectDetectionArray:
    """Return the ObjectDetectionArray of one frame's detections; `header` is the input image's, copied unchanged."""
    detections = [ObjectDetection(x_min=d.box_xyxy[0], y_min=d.box_xyxy[1], x_max=d.box_xyxy[2], y_max=d.box_xyxy[3],
                                  score=d.score, label=d.label, query_index=d.query_index,
                                  image_query=bool(query_is_image[d.query_index]))
                  for d in result.detections]
    msg = ObjectDetectionArray(header=header, model_id=model_id, vocabulary_version=result.version,
                               queries=list(result.queries), query_is_image=[bool(v) for v in query_is_image],
                               score_threshold=float(score_threshold), nms_iou=float(nms_iou), detections=detections,
                               postprocess_ms=float(postprocess_ms), total_ms=float(total_ms))
    if timing is not None:
        msg.preprocess_ms, msg.inference_ms = timing.preprocess_ms, timing.inference_ms
    return msg


def image_message(rgb: np.ndarray, header: Any, encoding: str = 'rgb8') -> Image:
    """Return a sensor_msgs/Image of an RGB uint8 array (e.g. the debug view)."""
    data, step = encode_raw_image(rgb, encoding)
    return Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=step, data=data)


# --- the standard vision_msgs equivalents (where vision_msgs is installed) ---------------------------------------
# vision_msgs is not a hard dependency (a robot gets it from its distribution; it is not on PyPI): these functions
# import it when called, and `vision_msgs_available` says whether they can run. Class ids are the label texts;
# LabelInfo maps each label's index in the vocabulary to its text.
STANDARD_OUTPUTS_OFF = ('vision_msgs is not installed: the standard outputs (vision_msgs Classification, '
                        'Detection2DArray, LabelInfo) are off; the package\'s own messages are published as usual')


def vision_msgs_available() -> bool:
    """Whether vision_msgs can be imported here."""
    import importlib.util

    return importlib.util.find_spec('vision_msgs') is not None


def classification_message(labels: Sequence[str], scores: np.ndarray, header: Any) -> Any:
    """vision_msgs/Classification: one hypothesis per label (class_id = the label), in vocabulary order."""
    from vision_msgs.msg import Classification, ObjectHypothesis

    return Classification(header=header, results=[ObjectHypothesis(class_id=label, score=float(score))
                                                  for label, score in zip(labels, scores)])


def presence_detections_message(result: ClipFrameResult, header: Any) -> Any:
    """vision_msgs/Detection2DArray: one detection per present, localised presence query (its ROI and score)."""
    from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose

    detections = []
    for query in result.presence:
        if not query.present or query.location is None:
            continue
        x, y, w, h = query.location.roi_xywh
        box = BoundingBox2D(size_x=float(w), size_y=float(h))
        box.center.position.x, box.center.position.y = x + w / 2.0, y + h / 2.0
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = query.query, query.score
        detections.append(Detection2D(header=header, bbox=box, results=[hypothesis], id=query.query))
    return Detection2DArray(header=header, detections=detections)


def detections_vision_message(result: DetectionResult, header: Any) -> Any:
    """vision_msgs/Detection2DArray of one frame's detections: per detection its box and one hypothesis (the label)."""
    from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesisWithPose

    detections = []
    for detection in result.detections:
        x0, y0, x1, y1 = detection.box_xyxy
        box = BoundingBox2D(size_x=float(x1 - x0), size_y=float(y1 - y0))
        box.center.position.x, box.center.position.y = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = detection.label, detection.score
        detections.append(Detection2D(header=header, bbox=box, results=[hypothesis]))
    return Detection2DArray(header=header, detections=detections)


def label_info_message(labels: Sequence[str], header: Any, threshold: float = 0.0) -> Any:
    """vision_msgs/LabelInfo of a vocabulary: each label's index and text."""
    from vision_msgs.msg import LabelInfo, VisionClass

    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=i, class_name=label) for i, label in enumerate(labels)])
