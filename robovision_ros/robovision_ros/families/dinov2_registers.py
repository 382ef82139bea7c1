# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
DINOv2 with registers (transformers Dinov2WithRegistersModel): register tokens are dropped from the patch features.

The sequence is [CLS, registers..., patches...]; the registers hold global scratch information the model learnt to
park there (Darcet et al., "Vision Transformers Need Registers"), not a place in the image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from robovision_ros.families.dinov2 import MAX_REGISTER_TOKENS, Dinov2Family
from robovision_ros.model_files import bounded_int


class Dinov2RegistersFamily(Dinov2Family):
    """facebook/dinov2-with-registers-*."""

    name = 'dinov2_registers'
    model_types = ('dinov2_with_registers',)
    model_class = 'Dinov2WithRegistersModel'
    description = 'DINOv2 with registers: register tokens removed from the patch features'

    def register_tokens(self, config: dict[str, Any], where: Path) -> int:
        return bounded_int(config, 'num_register_tokens', 4, 0, MAX_REGISTER_TOKENS, where)


FAMILY = Dinov2RegistersFamily()
