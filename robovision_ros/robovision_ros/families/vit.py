# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The ViT family: patch tokens and the CLS token of a plain Vision Transformer (transformers ViTModel)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robovision_ros.families.base import MAX_HIDDEN_SIZE, MAX_IMAGE_SIZE, ModelFamily, ModelInfo, \
    check_transformer_sizes
from robovision_ros.model_files import bounded_int


class VitFamily(ModelFamily):
    """google/vit-* and fine-tunes (a classification head, if any, is read by model_dir)."""

    name = 'vit'
    model_class = 'ViTModel'
    load_options = (('add_pooling_layer', False),)
    model_types = ('vit',)
    description = 'ViT: supervised ViT features (a classification head, if any, gives class scores)'

    def read_info(self, model_id: str, path: Path, config: dict[str, Any]) -> ModelInfo:
        where = path / 'config.json'
        check_transformer_sizes(config, where)
        hidden = bounded_int(config, 'hidden_size', 768, 1, MAX_HIDDEN_SIZE, where)
        image_size = bounded_int(config, 'image_size', 224, 8, MAX_IMAGE_SIZE, where)
        patch_size = bounded_int(config, 'patch_size', 16, 1, image_size, where)
        return ModelInfo(model_id, path, self.name, image_size, patch_size, hidden, hidden, False)

    def vision_forward(self, model: Any, pixel_values: Any, interpolate_pos_encoding: bool) -> tuple[Any, Any]:
        hidden = model(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state
        return hidden[:, 1:], hidden[:, 0]


FAMILY = VitFamily()
