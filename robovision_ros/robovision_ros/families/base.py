# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
What a model family is: how its directory is read, how it loads, what its towers compute and what it exports.

A family (CLIP, ViT, ...) is one object, defined in its own module of this package, that owns everything that
differs between families: the config fields that give its sizes, the transformers class it loads with, what its
vision tower returns as patch tokens and global embedding, its text tower and tokenizer, its zero-shot logit scale,
and its preprocessing config. The rest of the package (backends, export, nodes) asks the family instead of branching
on a model type. The tensor names of the exported graphs are defined here once and used by export and every loader.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robovision_ros.model_files import MAX_TOKENIZER_BYTES, ModelLoadError, bounded_int, check_regular_file, \
    files_digest, read_json
from robovision_ros.preprocessing import PreprocessConfig

# Tensor names of the exported graphs, written by the export and fed/read by every backend that loads them.
PIXEL_VALUES = 'pixel_values'  # float32 [B, 3, H, W], normalised
PATCH_TOKENS = 'patch_tokens'  # float32 [B, N, D]
GLOBAL_EMBEDDING = 'global_embedding'  # float32 [B, Dg]
INPUT_IDS = 'input_ids'  # int64 [B, L]
ATTENTION_MASK = 'attention_mask'  # int64 [B, L]
TEXT_EMBEDDING = 'text_embedding'  # float32 [B, D]
IMAGE_INPUTS = (PIXEL_VALUES,)
IMAGE_OUTPUTS = (PATCH_TOKENS, GLOBAL_EMBEDDING)
TEXT_INPUTS = (INPUT_IDS, ATTENTION_MASK)
TEXT_OUTPUTS = (TEXT_EMBEDDING,)

# Bounds on the config values that size allocations (a config is read before any weight): generous for every
# released ViT/CLIP/SigLIP/DINO checkpoint, small enough that a corrupt value fails here with one line instead of
# allocating gigabytes first.
MAX_IMAGE_SIZE = 4096
MAX_HIDDEN_SIZE = 16384
MAX_TEXT_LENGTH = 1024


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the package needs to know about a model, read from its directory (no weights loaded)."""

    model_id: str
    path: Path
    family: str  # the ModelFamily's name ('clip', 'vit', ...)
    image_size: int
    patch_size: int
    patch_dim: int  # dimension of the published patch features (CLIP: projection_dim)
    global_dim: int
    has_text: bool  # the family has a text tower (zero-shot labels, presence)

    @property
    def model_type(self) -> str:
        """Return the family name (kept for callers that predate families)."""
        return self.family

    @property
    def fingerprint(self) -> str:
        """Hash of the model's config and weight files: names the exported ONNX files in a cache."""
        return files_digest(self.path)


class ModelFamily(ABC):
    """One model family: reading, loading, forward passes and tokenizer of its checkpoints."""

    name: str = ''
    model_types: tuple[str, ...] = ()  # the Hugging Face config `model_type` values this family reads
    has_text: bool = False
    # Tokenizer files of which at least one set must be present for a family with text.
    tokenizer_files: tuple[tuple[str, ...], ...] = ()

    @abstractmethod
    def read_info(self, model_id: str, path: Path, config: dict[str, Any]) -> ModelInfo:
        """Return the model's sizes from its config.json (bounded: ModelLoadError on an unusable value)."""

    @abstractmethod
    def load_torch(self, info: ModelInfo) -> Any:
        """Load the transformers model (fp32, CPU, eval mode; adapters are added by the caller)."""

    @abstractmethod
    def vision_forward(self, model: Any, pixel_values: Any, interpolate_pos_encoding: bool) -> tuple[Any, Any]:
        """pixel_values [B,3,H,W] -> (patch_tokens [B,N,D], global_embedding [B,Dg]) as torch tensors."""

    def text_forward(self, model: Any, input_ids: Any, attention_mask: Any) -> Any:
        """Token ids and mask [B,L] -> text embedding [B,D] in the joint space (families with text)."""
        raise ModelLoadError(f'{self.name} models have no text encoder')

    def logit_scale(self, model: Any) -> float:
        """Multiplier of cosine similarities in zero-shot logits (1.0 for families without text)."""
        return 1.0

    def text_length(self, tokenizer: Any, model: Any) -> int:
        """Return the fixed token length of the text encoder input."""
        raise ModelLoadError(f'{self.name} models have no text encoder')

    def load_tokenizer(self, info: ModelInfo) -> Any:
        """Load the tokenizer stored in the model directory; refuse a directory without its tokenizer files."""
        if not self.has_text:
            raise ModelLoadError(f'{info.model_id} is a {self.name} model: it has no text encoder')
        present = [names for names in self.tokenizer_files if all((info.path / n).exists() for n in names)]
        if not present:
            wanted = ' or '.join(' + '.join(names) for names in self.tokenizer_files)
            raise ModelLoadError(f'{info.path} has no tokenizer files ({wanted}); a {self.name} model needs them '
                                 'to encode labels')
        for name in present[0]:
            check_regular_file(info.path / name, MAX_TOKENIZER_BYTES)
        from robovision_ros.text_tokenizer import TextTokenizer, has_tokenizer_file

        if has_tokenizer_file(info.path):
            return TextTokenizer(info.path)  # no transformers (which imports torch) at run time
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(info.path))
        except (OSError, ValueError, TypeError) as error:
            raise ModelLoadError(f'no usable tokenizer in {info.path}: {error}') from error

    def preprocess_config(self, info: ModelInfo) -> PreprocessConfig:
        """Return the model's preprocessing, from its preprocessor_config.json."""
        return PreprocessConfig.from_model_dir(info.path)


def read_config(path: Path) -> dict[str, Any]:
    """Read a model directory's config.json (bounded)."""
    config_path = path / 'config.json'
    if not config_path.is_file():
        raise ModelLoadError(f'{path} is not a Hugging Face model directory: no config.json')
    return read_json(config_path)


def sub_config(config: dict[str, Any], key: str, where: Path) -> dict[str, Any]:
    """Return a nested config (e.g. vision_config), an empty dict where absent; refuse a non-object."""
    value = config.get(key, {})
    if not isinstance(value, dict):
        raise ModelLoadError(f'{where}: {key} must be an object; got {type(value).__name__}')
    return value


def check_transformer_sizes(config: dict[str, Any], where: Path) -> None:
    """Refuse transformer sizes beyond the bounds before transformers allocates them."""
    bounded_int(config, 'hidden_size', 768, 1, MAX_HIDDEN_SIZE, where)
    bounded_int(config, 'intermediate_size', 3072, 1, 4 * MAX_HIDDEN_SIZE, where)
    bounded_int(config, 'num_hidden_layers', 12, 1, 256, where)
    bounded_int(config, 'num_attention_heads', 12, 1, 256, where)
