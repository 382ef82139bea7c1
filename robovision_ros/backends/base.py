"""The one interface every inference backend implements, and the typed results it returns."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import numpy as np

if TYPE_CHECKING:
    from robovision_ros.backends.accuracy_gate import Int8Accuracy

BACKENDS = ('torch', 'onnxruntime', 'tensorrt', 'auto')
DEVICES = ('cpu', 'cuda')
PRECISIONS = ('fp32', 'fp16', 'bf16', 'int8')


class BackendUnavailableError(RuntimeError):
    """The requested backend, device or precision cannot run here. Raised at load time; never a fallback."""


@dataclass(frozen=True)
class ImageEncoding:
    """Vision-encoder output for a batch: patch tokens on the grid and one global embedding per image."""

    patch_tokens: np.ndarray  # [B, grid_h * grid_w, D], float32
    global_embedding: np.ndarray  # [B, D_global], float32
    grid_hw: tuple[int, int]


class EncoderBackend(ABC):
    """Runs a model's vision (and, for CLIP, text) encoder on preprocessed inputs."""

    name: str = ''
    logit_scale: float = 1.0  # CLIP: multiplier of cosine similarities in zero-shot logits
    text_length: int = 0  # fixed token length of the text encoder input (0: the tokenizer decides)
    int8_accuracy: Optional[Int8Accuracy] = None  # int8: what the accuracy gate measured at load

    def __init__(self, device: str, precision: str) -> None:
        self.device = device
        self.precision = precision

    @abstractmethod
    def encode_image(self, pixel_values: np.ndarray) -> ImageEncoding:
        """float32 ``[B, 3, H, W]`` normalised pixels -> `ImageEncoding` (float32 arrays)."""

    @abstractmethod
    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """int64 token ids and mask ``[B, L]`` -> float32 text embeddings ``[B, D]`` (unnormalised)."""

    @property
    def cache_key(self) -> Optional[str]:
        """Key of the compiled artefact this backend runs (a TensorRT engine), if any."""
        return None

    def close(self) -> None:
        """Free the model and any device memory."""
