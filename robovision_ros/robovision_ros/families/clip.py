# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The CLIP family: image and text towers in one joint space; zero-shot labels by softmax over cosine * scale."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robovision_ros.families.base import MAX_HIDDEN_SIZE, MAX_IMAGE_SIZE, MAX_TEXT_LENGTH, ModelFamily, ModelInfo, \
    check_transformer_sizes, sub_config
from robovision_ros.model_files import bounded_int


class ClipFamily(ModelFamily):
    """OpenAI CLIP and its fine-tunes (transformers CLIPModel)."""

    name = 'clip'
    model_class = 'CLIPModel'
    model_types = ('clip',)
    has_text = True
    tokenizer_files = (('tokenizer.json',), ('vocab.json', 'merges.txt'))
    description = 'CLIP: softmax zero-shot scores'

    def read_info(self, model_id: str, path: Path, config: dict[str, Any]) -> ModelInfo:
        where = path / 'config.json'
        vision = sub_config(config, 'vision_config', where)
        text = sub_config(config, 'text_config', where)
        check_transformer_sizes(vision, where)
        check_transformer_sizes(text, where)
        bounded_int(text, 'max_position_embeddings', 77, 1, MAX_TEXT_LENGTH, where)
        bounded_int(text, 'vocab_size', 49408, 2, 1 << 20, where)
        image_size = bounded_int(vision, 'image_size', 224, 8, MAX_IMAGE_SIZE, where)
        patch_size = bounded_int(vision, 'patch_size', 32, 1, image_size, where)
        projection_dim = bounded_int(config, 'projection_dim', 512, 1, MAX_HIDDEN_SIZE, where)
        return ModelInfo(model_id, path, self.name, image_size, patch_size, projection_dim, projection_dim, True)

    def vision_forward(self, model: Any, pixel_values: Any, interpolate_pos_encoding: bool) -> tuple[Any, Any]:
        vision = model.vision_model
        out = vision(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        # Patch tokens go through the same final norm and projection as the pooled token, which puts them in the
        # joint image-text space (for localisation by text queries).
        patches = model.visual_projection(vision.post_layernorm(out.last_hidden_state[:, 1:]))
        return patches, model.visual_projection(out.pooler_output)

    def text_forward(self, model: Any, input_ids: Any, attention_mask: Any) -> Any:
        out = model.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return model.text_projection(out.pooler_output)

    def logit_scale(self, model: Any) -> float:
        """Return the zero-shot multiplier of cosine similarities: exp of the trained `logit_scale` parameter."""
        return float(model.logit_scale.detach().float().exp())

    def text_length(self, tokenizer: Any, model: Any) -> int:
        """Return the tokenizer's limit, capped by the position table."""
        return int(min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings))


FAMILY = ClipFamily()
