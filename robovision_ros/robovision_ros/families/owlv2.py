# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The OWLv2 family (transformers Owlv2ForObjectDetection): OWL-ViT with an objectness head.

Its image graph adds each patch's objectness logit, which picks the patch that stands for an example image; its
preprocessing pads the frame to a square (bottom and right) before resizing, which its preprocessor config says
(`do_pad`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from robovision_ros.detection import PatchPredictions
from robovision_ros.families.base import ModelInfo
from robovision_ros.families.owlvit import CLASS_EMBEDDINGS, LOGIT_SCALE, LOGIT_SHIFT, OBJECTNESS, PRED_BOXES, \
    OwlVitFamily


class Owlv2Family(OwlVitFamily):
    """google/owlv2-* (transformers Owlv2ForObjectDetection)."""

    name = 'owlv2'
    model_types = ('owlv2',)
    description = 'OWLv2: open-vocabulary detection with objectness, the frame padded to a square'
    image_outputs = (CLASS_EMBEDDINGS, LOGIT_SHIFT, LOGIT_SCALE, PRED_BOXES, OBJECTNESS)
    base_attribute = 'owlv2'
    model_class = 'Owlv2ForObjectDetection'

    def heads(self, model: Any, feature_map: Any, interpolate_pos_encoding: bool) -> tuple[Any, ...]:
        batch, grid_h, grid_w, width = feature_map.shape
        objectness = model.objectness_predictor(feature_map.reshape(batch, grid_h * grid_w, width))
        return super().heads(model, feature_map, interpolate_pos_encoding) + (objectness,)

    def image_output_shapes(self, info: ModelInfo) -> dict[str, tuple[int, ...]]:
        return {**super().image_output_shapes(info), OBJECTNESS: ((info.image_size // info.patch_size) ** 2,)}

    def query_patch(self, predictions: PatchPredictions) -> int:
        """Return the patch with the highest objectness (transformers' Owlv2ForObjectDetection.embed_image_query)."""
        if predictions.objectness is None:
            raise ValueError('OWLv2 image predictions without objectness logits')
        return int(np.argmax(predictions.objectness))


FAMILY = Owlv2Family()
