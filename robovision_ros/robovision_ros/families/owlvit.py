# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The OWL-ViT family: open-vocabulary detection (transformers OwlViTForObjectDetection).

The image graph is everything of the detector that does not depend on the queries: the vision tower, the class
head's projection of every patch (its class embedding) with its logit shift and scale, and the box head. The text
graph is the text tower with its projection: one embedding per query text. A query change runs the text graph only;
`detection.decode_detections` combines both, per frame, in numpy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from robovision_ros.detection import DetectorImageOutputs, PatchPredictions, box_iou, centre_to_corners
from robovision_ros.families.base import MAX_HIDDEN_SIZE, MAX_IMAGE_SIZE, MAX_TEXT_LENGTH, ModelFamily, ModelInfo, \
    check_transformer_sizes, sub_config
from robovision_ros.model_files import ModelLoadError, bounded_int

# Outputs of a detector's image graph (tensor names of its ONNX export and of the served Triton model).
CLASS_EMBEDDINGS = 'class_embeddings'  # float32 [B, N, D]: the class head's projection of each patch, unnormalised
LOGIT_SHIFT = 'logit_shift'  # float32 [B, N]
LOGIT_SCALE = 'logit_scale'  # float32 [B, N]: elu(.) + 1, as the class head applies it
PRED_BOXES = 'pred_boxes'  # float32 [B, N, 4]: (cx, cy, w, h) relative to the model input
OBJECTNESS = 'objectness'  # float32 [B, N]: objectness logits (OWLv2)


class OwlVitFamily(ModelFamily):
    """google/owlvit-* and models of the same architecture (the embedded tiny detector)."""

    name = 'owlvit'
    model_types = ('owlvit',)
    has_text = True
    detector = True
    description = 'OWL-ViT: open-vocabulary detection, a box and a sigmoid score per patch and query'
    tokenizer_files = (('tokenizer.json',), ('vocab.json', 'merges.txt'))
    image_outputs = (CLASS_EMBEDDINGS, LOGIT_SHIFT, LOGIT_SCALE, PRED_BOXES)
    base_attribute = 'owlvit'  # the detector's OwlViTModel attribute
    model_class = 'OwlViTForObjectDetection'

    def read_info(self, model_id: str, path: Path, config: dict[str, Any]) -> ModelInfo:
        where = path / 'config.json'
        vision = sub_config(config, 'vision_config', where)
        text = sub_config(config, 'text_config', where)
        check_transformer_sizes(vision, where)
        check_transformer_sizes(text, where)
        bounded_int(text, 'max_position_embeddings', 16, 1, MAX_TEXT_LENGTH, where)
        bounded_int(text, 'vocab_size', 49408, 2, 1 << 20, where)
        image_size = bounded_int(vision, 'image_size', 768, 8, MAX_IMAGE_SIZE, where)
        patch_size = bounded_int(vision, 'patch_size', 32, 1, image_size, where)
        text_width = bounded_int(text, 'hidden_size', 512, 1, MAX_HIDDEN_SIZE, where)
        projection_dim = bounded_int(config, 'projection_dim', 512, 1, MAX_HIDDEN_SIZE, where)
        if text_width != projection_dim:
            # The class head projects patches to the text width and compares them with projected queries.
            raise ModelLoadError(f'{where}: text_config.hidden_size {text_width} must equal projection_dim '
                                 f'{projection_dim} (class embeddings and query embeddings are compared)')
        return ModelInfo(model_id, path, self.name, image_size, patch_size, text_width, projection_dim, True)

    def vision_forward(self, model: Any, pixel_values: Any, interpolate_pos_encoding: bool) -> tuple[Any, ...]:
        feature_map = model.image_embedder(pixel_values=pixel_values,
                                           interpolate_pos_encoding=interpolate_pos_encoding)[0]
        return self.heads(model, feature_map, interpolate_pos_encoding)

    def heads(self, model: Any, feature_map: Any, interpolate_pos_encoding: bool) -> tuple[Any, ...]:
        """Run the query-independent heads on the patch feature map [B, H, W, C], in `image_outputs` order."""
        batch, grid_h, grid_w, width = feature_map.shape
        features = feature_map.reshape(batch, grid_h * grid_w, width)
        head = model.class_head
        class_embeddings = head.dense0(features)
        shift = head.logit_shift(features)[..., 0]
        scale = (head.elu(head.logit_scale(features)) + 1)[..., 0]
        boxes = model.box_predictor(features, feature_map, interpolate_pos_encoding)
        return class_embeddings, shift, scale, boxes

    def text_forward(self, model: Any, input_ids: Any, attention_mask: Any) -> Any:
        base = getattr(model, self.base_attribute)
        out = base.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return base.text_projection(out.pooler_output)

    def text_length(self, tokenizer: Any, model: Any) -> int:
        """Return the tokenizer's limit, capped by the position table (16 for the released OWL models)."""
        return int(min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings))

    def image_output_shapes(self, info: ModelInfo) -> dict[str, tuple[int, ...]]:
        patches = (info.image_size // info.patch_size) ** 2
        return {CLASS_EMBEDDINGS: (patches, info.patch_dim), LOGIT_SHIFT: (patches,), LOGIT_SCALE: (patches,),
                PRED_BOXES: (patches, 4)}

    def image_result(self, outputs: Mapping[str, np.ndarray], grid_hw: tuple[int, int]) -> DetectorImageOutputs:
        return DetectorImageOutputs(outputs[CLASS_EMBEDDINGS], outputs[LOGIT_SHIFT], outputs[LOGIT_SCALE],
                                    outputs[PRED_BOXES], outputs.get(OBJECTNESS), grid_hw)

    def query_patch(self, predictions: PatchPredictions) -> int:
        """
        Return the patch whose class embedding stands for an example image (image-guided detection).

        As transformers' OwlViTForObjectDetection.embed_image_query: among the boxes that cover the example best
        (IoU with the whole image at least 0.8 of the best; generalised IoU when no box overlaps it), the one whose
        class embedding is least like the mean of all patches (the object, not the background).
        """
        corners = centre_to_corners(predictions.boxes)
        whole = np.array([[0.0, 0.0, 1.0, 1.0]])
        ious = box_iou(whole, corners)[0]
        if np.all(ious == 0.0):
            ious = _generalized_iou(whole, corners)[0]
        selected = np.flatnonzero(ious >= ious.max() * 0.8)
        mean = predictions.class_embeddings.astype(np.float64).mean(axis=0)
        similarity = predictions.class_embeddings[selected].astype(np.float64) @ mean
        return int(selected[np.argmin(similarity)])


def _generalized_iou(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Generalised IoU of xyxy boxes [N, 4] x [M, 4] (IoU minus the empty part of the enclosing box)."""
    iou = box_iou(first, second)
    area_first = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    area_second = (second[:, 2] - second[:, 0]) * (second[:, 3] - second[:, 1])
    top_left = np.maximum(first[:, None, :2], second[None, :, :2])
    bottom_right = np.minimum(first[:, None, 2:], second[None, :, 2:])
    size = np.clip(bottom_right - top_left, 0, None)
    intersection = size[..., 0] * size[..., 1]
    union = area_first[:, None] + area_second[None, :] - intersection
    enclosing = np.clip(np.maximum(first[:, None, 2:], second[None, :, 2:])
                        - np.minimum(first[:, None, :2], second[None, :, :2]), 0, None)
    area = enclosing[..., 0] * enclosing[..., 1]
    return iou - np.divide(area - union, area, out=np.zeros_like(area), where=area > 0)


FAMILY = OwlVitFamily()
