# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The SigLIP family: image and text towers in one joint space, scored by an independent sigmoid per text.

transformers' SiglipModel, model_type 'siglip': the SigLIP checkpoints (google/siglip-*, SentencePiece tokenizer)
and the fixed-resolution SigLIP 2 checkpoints (google/siglip2-*-patch16-224 and the like, Gemma tokenizer.json),
which share that architecture. The variable-resolution SigLIP 2 ("NaFlex", Siglip2Model) is another architecture
and not this family.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robovision_ros.clip_scoring import SIGMOID
from robovision_ros.families.base import MAX_HIDDEN_SIZE, MAX_IMAGE_SIZE, MAX_TEXT_LENGTH, ModelFamily, ModelInfo, \
    check_transformer_sizes, sub_config
from robovision_ros.model_files import ModelLoadError, bounded_int


def pooled_per_token(head: Any, hidden: Any) -> Any:
    """
    Return each token as SigLIP's attention-pooling head would pool it if it were the only token: ``[B, N, D]``.

    The head attends from a learnt probe to the tokens; over a single token the softmax weight is 1, so the pooled
    vector is out_proj(value(token)) followed by the head's residual MLP. That puts every patch token in the space
    the pooled image embedding lives in, where text queries can localise it (as CLIP's projection does for CLIP).
    """
    import torch.nn.functional as F

    attention = head.attention
    dim = attention.embed_dim
    value = F.linear(hidden, attention.in_proj_weight[2 * dim:], attention.in_proj_bias[2 * dim:])
    pooled = attention.out_proj(value)
    return pooled + head.mlp(head.layernorm(pooled))


class SiglipFamily(ModelFamily):
    """SigLIP and fixed-resolution SigLIP 2 (transformers SiglipModel)."""

    name = 'siglip'
    model_class = 'SiglipModel'
    model_types = ('siglip',)
    has_text = True
    scoring = SIGMOID
    tokenizer_files = (('tokenizer.json',), ('spiece.model',), ('vocab.json', 'merges.txt'))
    description = 'SigLIP, SigLIP 2 (fixed resolution): sigmoid image-text scores'
    # The attention-pooling head's attention (its probe against every token, a softmax over the tokens): quantized
    # with the rest, a random SigLIP 2 layout's global embedding fell to cosine 0.986 of fp32 under OpenVINO's
    # static int8; kept in float, 0.998 (patch tokens 0.997 either way).
    int8_float_scopes = (r'.*/vision_model/head/attention/.*',)

    def read_info(self, model_id: str, path: Path, config: dict[str, Any]) -> ModelInfo:
        where = path / 'config.json'
        vision = sub_config(config, 'vision_config', where)
        text = sub_config(config, 'text_config', where)
        check_transformer_sizes(vision, where)
        check_transformer_sizes(text, where)
        bounded_int(text, 'max_position_embeddings', 64, 1, MAX_TEXT_LENGTH, where)
        bounded_int(text, 'vocab_size', 32000, 2, 1 << 20, where)
        image_size = bounded_int(vision, 'image_size', 224, 8, MAX_IMAGE_SIZE, where)
        patch_size = bounded_int(vision, 'patch_size', 16, 1, image_size, where)
        hidden = bounded_int(vision, 'hidden_size', 768, 1, MAX_HIDDEN_SIZE, where)
        text_hidden = bounded_int(text, 'hidden_size', 768, 1, MAX_HIDDEN_SIZE, where)
        projection = text.get('projection_size') if text.get('projection_size') is not None else text_hidden
        projection = bounded_int({'projection_size': projection}, 'projection_size', 768, 1, MAX_HIDDEN_SIZE, where)
        if projection != hidden:
            raise ModelLoadError(f'{where}: the text embedding has {projection} dimensions and the image embedding '
                                 f'{hidden}; SigLIP compares them directly, so they must be equal')
        if vision.get('vision_use_head', True) is not True:
            raise ModelLoadError(f'{where}: vision_use_head is false: the model has no pooled image embedding')
        return ModelInfo(model_id, path, self.name, image_size, patch_size, hidden, hidden, True)

    def vision_forward(self, model: Any, pixel_values: Any, interpolate_pos_encoding: bool) -> tuple[Any, Any]:
        vision = model.vision_model
        out = vision(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
        # SigLIP has no class token: every token of last_hidden_state (already through post_layernorm) is a patch.
        return pooled_per_token(vision.head, out.last_hidden_state), out.pooler_output

    def text_forward(self, model: Any, input_ids: Any, attention_mask: Any) -> Any:
        return model.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    def logit_scale(self, model: Any) -> float:
        """Return the multiplier of cosine similarities: exp of the trained `logit_scale` parameter."""
        return float(model.logit_scale.detach().float().exp())

    def logit_bias(self, model: Any) -> float:
        """Return the trained `logit_bias` added to every scaled cosine before the sigmoid."""
        return float(model.logit_bias.detach().float())

    def text_length(self, tokenizer: Any, model: Any) -> int:
        """Return the tokenizer's limit, capped by the position table (SigLIP is trained on max-length padding)."""
        return int(min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings))


FAMILY = SiglipFamily()
