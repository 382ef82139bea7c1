# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""CLIP frame results as ROS messages: one `ClipFrameResult` -> ZeroShotLabels + ObjectPresenceArray."""
from __future__ import annotations

from typing import Any

import numpy as np
from sensor_msgs.msg import RegionOfInterest

from robovision_ros.clip_scoring import ClipFrameResult
from robovision_ros.message_conversions import packed_array
from robovision_ros.msg import ObjectPresence, ObjectPresenceArray, ZeroShotLabels


def to_messages(result: ClipFrameResult, header: Any, model_id: str, preprocess_ms: float = 0.0,
                inference_ms: float = 0.0, total_ms: float = 0.0) -> tuple[ZeroShotLabels, ObjectPresenceArray]:
    """Return the two output messages of one frame; `header` is the input image's header, copied unchanged."""
    labels = ZeroShotLabels(header=header, model_id=model_id, labels=list(result.labels),
                            scores=packed_array('f', result.scores.astype(np.float32)),
                            best_label=result.best_label, best_score=result.best_score,
                            prompt_templates=list(result.templates), vocabulary_version=result.labels_version,
                            preprocess_ms=preprocess_ms, inference_ms=inference_ms, total_ms=total_ms)
    results = []
    for query in result.presence:
        presence = ObjectPresence(query=query.query, similarity=query.similarity, threshold=query.threshold,
                                  present=query.present)
        if query.location is not None:
            x, y, w, h = query.location.roi_xywh
            presence.has_location = True
            presence.roi = RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h)
            presence.peak_x, presence.peak_y = query.location.peak_xy
            presence.peak_score = query.location.peak_score
        results.append(presence)
    presence_array = ObjectPresenceArray(header=header, model_id=model_id,
                                         vocabulary_version=result.queries_version or 0, results=results,
                                         total_ms=total_ms)
    return labels, presence_array
