# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
What a model family is: how its directory is read, how it loads, what its towers compute and what it exports.

A family (CLIP, ViT, ...) is one object, defined in its own module of this package, that owns everything that
differs between families: the config fields that give its sizes, the transformers class it loads with, what its
vision tower returns as patch tokens and global embedding, its text tower and tokenizer, its zero-shot logit scale,
and its preprocessing config. The rest of the package (backends, export, nodes) asks the family instead of branching
on a model type. The tensor names of the exported graphs are defined here once and used by export and every loader.

A family's image graph has outputs of its own (`ModelFamily.image_outputs`, by name): an encoder family returns
patch tokens and a global embedding, a detector family (OWL-ViT) per-patch class embeddings, logit shifts and scales
and boxes. Backends run the graph and return its outputs by name; the family turns them into its typed result
(`ModelFamily.image_result`: `ImageEncoding` for the encoder families).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from robovision_ros.clip_scoring import SOFTMAX
from robovision_ros.model_files import MAX_TOKENIZER_BYTES, ModelLoadError, bounded_int, check_regular_file, \
    files_digest, read_json
from robovision_ros.preprocessing import PreprocessConfig, PreprocessConfigError

# Tensor names of the exported graphs, written by the export and fed/read by every backend that loads them.
PIXEL_VALUES = 'pixel_values'  # float32 [B, 3, H, W], normalised
PATCH_TOKENS = 'patch_tokens'  # float32 [B, N, D]
GLOBAL_EMBEDDING = 'global_embedding'  # float32 [B, Dg]
INPUT_IDS = 'input_ids'  # int64 [B, L]
ATTENTION_MASK = 'attention_mask'  # int64 [B, L]
TEXT_EMBEDDING = 'text_embedding'  # float32 [B, D]
IMAGE_INPUTS = (PIXEL_VALUES,)
IMAGE_OUTPUTS = (PATCH_TOKENS, GLOBAL_EMBEDDING)  # the encoder families' image graph (ModelFamily.image_outputs)
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


@dataclass(frozen=True)
class ImageEncoding:
    """Vision-encoder output for a batch: patch tokens on the grid and one global embedding per image."""

    patch_tokens: np.ndarray  # [B, grid_h * grid_w, D], float32
    global_embedding: np.ndarray  # [B, D_global], float32
    grid_hw: tuple[int, int]


class ModelFamily(ABC):
    """One model family: reading, loading, forward passes and tokenizer of its checkpoints."""

    name: str = ''
    model_types: tuple[str, ...] = ()  # the Hugging Face config `model_type` values this family reads
    has_text: bool = False
    # An open-vocabulary detector (open_vocab_detector runs it); the encoder nodes refuse it, and it them.
    detector: bool = False
    # Names of the image graph's outputs, in the order `vision_forward` returns them; export writes them under these
    # names and every backend returns them by name.
    image_outputs: tuple[str, ...] = IMAGE_OUTPUTS
    # How zero-shot scores come from cosine similarities (clip_scoring.SCORINGS): 'softmax' over labels (CLIP) or
    # an independent 'sigmoid' per text (SigLIP). Families without text keep the default; it is never read.
    scoring: str = SOFTMAX
    # Whether the vision tower runs inputs of other sizes than the native one (its position embeddings interpolate,
    # or are relative): multi-scale features and input_mode full_frame need it.
    flexible_input: bool = True
    description: str = ''  # one line for the README's table of families
    # Regular expressions of image-graph node names (as exported: '/vision_model/head/...') that calibrated static
    # int8 keeps in float: parts whose activations one calibrated range fits badly (OpenVINO's NNCF reads them).
    int8_float_scopes: tuple[str, ...] = ()
    # Tokenizer files of which at least one set must be present for a family with text.
    tokenizer_files: tuple[tuple[str, ...], ...] = ()

    @abstractmethod
    def read_info(self, model_id: str, path: Path, config: dict[str, Any]) -> ModelInfo:
        """Return the model's sizes from its config.json (bounded: ModelLoadError on an unusable value)."""

    # The transformers class the weights load into, and the options its from_pretrained takes.
    model_class: str = ''
    load_options: tuple[tuple[str, Any], ...] = ()

    def load_torch(self, info: ModelInfo) -> Any:
        """Load the transformers model `model_class` (fp32, CPU; adapters are added by the caller)."""
        import transformers

        try:
            return getattr(transformers, self.model_class).from_pretrained(str(info.path), **dict(self.load_options))
        except (OSError, ValueError) as error:
            raise ModelLoadError(f'could not load weights from {info.path}: {error}') from error

    @abstractmethod
    def vision_forward(self, model: Any, pixel_values: Any, interpolate_pos_encoding: bool) -> tuple[Any, ...]:
        """
        Run the image graph: pixel_values [B,3,H,W] -> its outputs as torch tensors, in `image_outputs` order.

        Encoder families: (patch_tokens [B,N,D], global_embedding [B,Dg]).
        """

    def image_output_shapes(self, info: ModelInfo) -> dict[str, tuple[int, ...]]:
        """Per-image shapes of the image graph's outputs at the native input size (the batch dimension left out)."""
        grid = info.image_size // info.patch_size
        return {PATCH_TOKENS: (grid * grid, info.patch_dim), GLOBAL_EMBEDDING: (info.global_dim,)}

    def image_result(self, outputs: Mapping[str, np.ndarray], grid_hw: tuple[int, int]) -> Any:
        """Return the typed result of one batch from the image graph's outputs by name (`ImageEncoding` here)."""
        return ImageEncoding(outputs[PATCH_TOKENS], outputs[GLOBAL_EMBEDDING], grid_hw)

    def prepare_export(self, model: Any, input_hw: tuple[int, int]) -> None:
        """Adapt a freshly loaded model for tracing at one fixed input size (the ONNX export); default: nothing."""

    def text_forward(self, model: Any, input_ids: Any, attention_mask: Any) -> Any:
        """Token ids and mask [B,L] -> text embedding [B,D] in the joint space (families with text)."""
        raise ModelLoadError(f'{self.name} models have no text encoder')

    def logit_scale(self, model: Any) -> float:
        """Multiplier of cosine similarities in zero-shot logits (1.0 for families without text)."""
        return 1.0

    def logit_bias(self, model: Any) -> float:
        """Offset added to the scaled cosine in zero-shot logits (0.0 unless the family trained one: SigLIP)."""
        return 0.0

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
        except ImportError as error:  # e.g. a SentencePiece tokenizer (SigLIP's spiece.model) without sentencepiece
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelLoadError(f'the tokenizer in {info.path} needs a library that is not installed ({reason}); '
                                 'install it, or give the directory a tokenizer.json') from error

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


def preprocessed_side(path: Path) -> int:
    """
    Return the side of the square model input that a directory's preprocessor config produces.

    For families whose config `image_size` is the size of the position table rather than of the input (DINOv2:
    518 in the config, 224 after the processor's crop).
    """
    try:
        height, width = PreprocessConfig.from_model_dir(path).input_hw
    except PreprocessConfigError as error:
        raise ModelLoadError(str(error)) from None
    if height != width:
        raise ModelLoadError(f'{path / "preprocessor_config.json"}: the model input is {height}x{width}; '
                             'only square native inputs are supported')
    return height


def check_transformer_sizes(config: dict[str, Any], where: Path) -> None:
    """Refuse transformer sizes beyond the bounds before transformers allocates them."""
    bounded_int(config, 'hidden_size', 768, 1, MAX_HIDDEN_SIZE, where)
    bounded_int(config, 'intermediate_size', 3072, 1, 4 * MAX_HIDDEN_SIZE, where)
    bounded_int(config, 'num_hidden_layers', 12, 1, 256, where)
    bounded_int(config, 'num_attention_heads', 12, 1, 256, where)
