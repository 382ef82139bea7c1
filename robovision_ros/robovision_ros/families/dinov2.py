# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The DINOv2 family: self-supervised ViT features (transformers Dinov2Model), CLS and patch tokens.

The config's `image_size` (518 for the released checkpoints) is the size of the position table, not of the input:
the processor crops to 224 and the position embeddings are interpolated to every input size. The native input is
therefore read from the preprocessor config. Subclasses add register tokens (DINOv2 with registers, DINOv3).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robovision_ros.families.base import MAX_HIDDEN_SIZE, MAX_IMAGE_SIZE, ModelFamily, ModelInfo, \
    check_transformer_sizes, preprocessed_side
from robovision_ros.model_files import ModelLoadError, bounded_int

MAX_REGISTER_TOKENS = 64  # released checkpoints have 4


class Dinov2Family(ModelFamily):
    """facebook/dinov2-* (transformers Dinov2Model): patch tokens after the final norm, CLS as the global embedding."""

    name = 'dinov2'
    model_types = ('dinov2',)
    model_class = 'Dinov2Model'
    default_patch_size = 14
    description = 'DINOv2: self-supervised ViT features'

    def register_tokens(self, config: dict[str, Any], where: Path) -> int:
        """Return how many register tokens sit between the CLS token and the patch tokens (none in DINOv2)."""
        return 0

    def read_info(self, model_id: str, path: Path, config: dict[str, Any]) -> ModelInfo:
        where = path / 'config.json'
        check_transformer_sizes(config, where)
        hidden = bounded_int(config, 'hidden_size', 768, 1, MAX_HIDDEN_SIZE, where)
        table_size = bounded_int(config, 'image_size', 224, 8, MAX_IMAGE_SIZE, where)
        patch_size = bounded_int(config, 'patch_size', self.default_patch_size, 1, table_size, where)
        self.register_tokens(config, where)
        image_size = preprocessed_side(path)
        if image_size < patch_size:
            raise ModelLoadError(f'{path}: model input {image_size} is smaller than one patch ({patch_size})')
        return ModelInfo(model_id, path, self.name, image_size, patch_size, hidden, hidden, False)

    def prepare_export(self, model: Any, input_hw: tuple[int, int]) -> None:
        """
        Freeze the position embeddings at the export's input size, computed once here in torch.

        The traced graph then adds a constant instead of resampling the position table on every frame, and DINOv2
        with registers resamples with an antialiased bicubic filter that the ONNX exporter cannot express at all.
        The export runs that one input size only (its backends have a fixed input size), so nothing is lost.
        """
        import torch

        embeddings = model.embeddings
        patch = int(model.config.patch_size)
        tokens = 1 + (input_hw[0] // patch) * (input_hw[1] // patch)  # CLS and patches: the table has no registers
        with torch.no_grad():
            dummy = torch.zeros(1, tokens, int(model.config.hidden_size))
            frozen = embeddings.interpolate_pos_encoding(dummy, *input_hw).detach().clone()

        def interpolate_pos_encoding(tokens: Any, height: int, width: int) -> Any:
            return frozen.to(tokens.dtype)

        embeddings.interpolate_pos_encoding = interpolate_pos_encoding

    def vision_forward(self, model: Any, pixel_values: Any, interpolate_pos_encoding: bool) -> tuple[Any, Any]:
        # The position embeddings interpolate to every input size by themselves (no flag to pass).
        hidden = model(pixel_values=pixel_values).last_hidden_state
        registers = int(getattr(model.config, 'num_register_tokens', 0))  # checked by read_info; none in DINOv2
        return hidden[:, 1 + registers:], hidden[:, 0]


FAMILY = Dinov2Family()
