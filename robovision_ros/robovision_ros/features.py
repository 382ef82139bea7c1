# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Typed results of the image side: what encoding a frame returns, read by scoring, messages and tools."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from robovision_ros.preprocessing import PreprocessGeometry


@dataclass(frozen=True)
class ImageFeatures:
    """Features of one image at one scale."""

    patch_tokens: np.ndarray  # [grid_h * grid_w, D]
    global_embedding: np.ndarray  # [D_global]
    grid_hw: tuple[int, int]
    geometry: PreprocessGeometry  # model-input pixels -> source-image pixels
    scale: float
    normalized: bool
    class_logits: Optional[np.ndarray] = None  # [C], when the model has a classification head

    @property
    def grid(self) -> np.ndarray:
        return self.patch_tokens.reshape(self.grid_hw[0], self.grid_hw[1], -1)


@dataclass(frozen=True)
class ClassificationResult:
    """Softmax class scores of one image from the model's classification head."""

    labels: tuple[str, ...]
    scores: np.ndarray  # [C] float32, sums to 1
    best_label: str
    best_score: float


@dataclass(frozen=True)
class EncodeTiming:
    """How long one batch spent in each stage (milliseconds)."""

    preprocess_ms: float
    inference_ms: float
