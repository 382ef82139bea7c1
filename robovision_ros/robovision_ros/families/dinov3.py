# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The DINOv3 ViT family (transformers DINOv3ViTModel): rotary position embeddings, so every input size runs.

The sequence is [CLS, registers..., patches...] after the final norm (the released ViTs have 4 registers);
the registers are dropped from the patch features and CLS is the global embedding. The ConvNeXt DINOv3 models are
not ViTs and not this family.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robovision_ros.families.dinov2 import MAX_REGISTER_TOKENS, Dinov2Family
from robovision_ros.model_files import bounded_int


class Dinov3Family(Dinov2Family):
    """facebook/dinov3-vit*-pretrain-*."""

    name = 'dinov3'
    model_types = ('dinov3_vit',)
    model_class = 'DINOv3ViTModel'
    default_patch_size = 16
    description = 'DINOv3 (ViT): rotary positions, register tokens removed from the patch features'

    def prepare_export(self, model: Any, input_hw: tuple[int, int]) -> None:
        """Nothing to freeze: the rotary position embeddings trace to constants of the export's size by themselves."""

    def register_tokens(self, config: dict[str, Any], where: Path) -> int:
        return bounded_int(config, 'num_register_tokens', 0, 0, MAX_REGISTER_TOKENS, where)


FAMILY = Dinov3Family()
