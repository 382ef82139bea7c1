# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Model directories: finding them, reading them through their family, loading weights, adapters and heads.

A model is named by a local directory, a hub id (used only where the robot has a network or a cache), or
`embedded:<name>` for the small models shipped inside this package. Everything a backend needs -- the
preprocessing, the tokenizer, the logit scale, the patch grid -- comes from the model directory itself, read by the
model's family (robovision_ros/families); this module holds what is the same for every family.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from robovision_ros.families import family_for_model_type, family_named
from robovision_ros.families.base import ModelFamily, ModelInfo, read_config
from robovision_ros.model_files import MAX_WEIGHTS_BYTES, ModelLoadError, check_model_files, check_regular_file

EMBEDDED_PREFIX = 'embedded:'
ADAPTERS_KEY = 'robovision_adapters'  # config.json field: bottleneck adapters after every transformer block
ADAPTERS_FILE = 'adapters.safetensors'
EMBEDDED_DIR = Path(__file__).resolve().parent / 'embedded_models'

__all__ = ['ModelInfo', 'ModelLoadError', 'family_of', 'load_tokenizer', 'load_torch_model', 'logit_bias',
           'logit_scale', 'read_model_info', 'resolve_model_dir', 'text_encoder_module', 'text_length', 'tokenize',
           'vision_encoder_module']


def resolve_model_dir(model_id: str) -> Path:
    """Local directory for `model_id`: an existing directory, an embedded model, or a hub id (download/cache)."""
    if model_id.startswith(EMBEDDED_PREFIX):
        name = model_id[len(EMBEDDED_PREFIX):]
        path = EMBEDDED_DIR / name
        if not (path / 'config.json').is_file():
            available = sorted(p.name for p in EMBEDDED_DIR.glob('*') if (p / 'config.json').is_file()) \
                if EMBEDDED_DIR.is_dir() else []
            raise ModelLoadError(f"embedded model '{name}' not found in {EMBEDDED_DIR}; available: {available}")
        return path
    path = Path(model_id).expanduser()
    if path.is_dir():
        if not (path / 'config.json').is_file():
            raise ModelLoadError(f'{path} is not a Hugging Face model directory: no config.json')
        return path.resolve()
    if path.is_absolute() or model_id.startswith('.') or model_id.count('/') > 1:
        raise ModelLoadError(f'model directory {path} does not exist')
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, allow_patterns=['*.json', '*.safetensors', '*.txt']))
    except Exception as error:  # the hub client raises many types; all mean "not available here"
        raise ModelLoadError(
            f"model '{model_id}' is neither a local directory nor available from the hub or its cache "
            f'({type(error).__name__}: {error})') from error


def read_model_info(model_id: str) -> ModelInfo:
    """
    Read a model directory's config (no weights are loaded) through the family its `model_type` names.

    Every file a loader may open is checked first (regular files of bounded size), and the config values that size
    allocations are range-checked by the family: a bad directory fails here with one line.
    """
    path = resolve_model_dir(model_id)
    check_model_files(path)
    config = read_config(path)
    family = family_for_model_type(config.get('model_type'), str(path))
    return family.read_info(model_id, path, config)


def family_of(info: ModelInfo) -> ModelFamily:
    """Return the family object of a model."""
    return family_named(info.family)


def load_torch_model(info: ModelInfo) -> Any:
    """Load the Hugging Face model through its family (eval mode, fp32, CPU), with its adapters if it has any."""
    model = family_of(info).load_torch(info)
    spec = read_config(info.path).get(ADAPTERS_KEY)
    if spec:
        load_adapters(model, info.path, spec)
    return model.eval()


def adapter_blocks(model: Any) -> list[Any]:
    """Return the transformer blocks of a HF CLIP/ViT model (every tower), in module order."""
    import re

    pattern = re.compile(r'(^|\.)layers?\.\d+$')
    return [module for name, module in model.named_modules() if pattern.search(name)]


def insert_adapters(model: Any, bottleneck: int) -> int:
    """
    Add a zero-initialised bottleneck adapter (down, GELU, up, residual) after every transformer block.

    Each adapter is the block's submodule `adapter` (weights named `...layers.N.adapter.*`) and runs in a forward
    hook on the block's output, so the model's own code, export and weight names stay as they are. Returns the
    number of blocks adapted.
    """
    import torch

    class BottleneckAdapter(torch.nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.down = torch.nn.Linear(dim, bottleneck)
            self.up = torch.nn.Linear(bottleneck, dim)
            torch.nn.init.zeros_(self.up.weight)
            torch.nn.init.zeros_(self.up.bias)

        def forward(self, hidden: torch.Tensor) -> torch.Tensor:
            return hidden + self.up(torch.nn.functional.gelu(self.down(hidden)))

    def apply_adapter(block: Any, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (block.adapter(output[0]),) + tuple(output[1:])
        return block.adapter(output)

    blocks = adapter_blocks(model)
    for block in blocks:
        dim = next(m for m in block.modules() if isinstance(m, torch.nn.LayerNorm)).normalized_shape[0]
        block.adapter = BottleneckAdapter(dim)
        block.register_forward_hook(apply_adapter)
    return len(blocks)


def load_adapters(model: Any, path: Path, spec: dict[str, Any]) -> None:
    """Insert the adapters that config field `robovision_adapters` describes and load their weights."""
    from safetensors.torch import load_file

    blocks = insert_adapters(model, int(spec['bottleneck']))
    if blocks != int(spec.get('blocks', blocks)):
        raise ModelLoadError(f"{path}: config says {spec['blocks']} adapted blocks; the model has {blocks}")
    weights_path = path / spec.get('file', ADAPTERS_FILE)
    if not weights_path.is_file():
        raise ModelLoadError(f'{path}: {ADAPTERS_KEY} in config.json but no adapter weights {weights_path.name}')
    check_regular_file(weights_path, MAX_WEIGHTS_BYTES)
    missing, unexpected = model.load_state_dict(load_file(str(weights_path)), strict=False)
    missing = [name for name in missing if '.adapter.' in name]
    if missing or unexpected:
        raise ModelLoadError(f'{weights_path}: adapter weights do not fit the model (missing {missing[:3]}, '
                             f'unexpected {unexpected[:3]})')


@dataclass(frozen=True)
class ClassificationHead:
    """A linear classifier on the global embedding (HF ViTForImageClassification: classifier(layernorm(CLS)))."""

    labels: tuple[str, ...]
    weight: Any  # float32 numpy [C, D]
    bias: Any  # float32 numpy [C]

    def logits(self, global_embeddings: Any) -> Any:
        """[B, D] unnormalised global embeddings -> [B, C] logits."""
        return global_embeddings @ self.weight.T + self.bias


def read_classification_head(info: ModelInfo) -> Optional[ClassificationHead]:
    """Read the ViT classification head stored with the model, or None (no head, or not a ViT)."""
    if info.family != 'vit':
        return None
    config = read_config(info.path)
    if 'ViTForImageClassification' not in config.get('architectures', []) or not config.get('id2label'):
        return None
    from safetensors.numpy import load_file

    check_regular_file(info.path / 'model.safetensors', MAX_WEIGHTS_BYTES)
    weights = load_file(str(info.path / 'model.safetensors'))
    if 'classifier.weight' not in weights:
        raise ModelLoadError(f'{info.path}: config names ViTForImageClassification but has no classifier weights')
    labels = tuple(config['id2label'][str(i)] for i in range(len(config['id2label'])))
    return ClassificationHead(labels, weights['classifier.weight'].astype('float32'),
                              weights['classifier.bias'].astype('float32'))


def load_tokenizer(info: ModelInfo) -> Any:
    """Load the tokenizer stored in the model directory (families with text; refused without its files)."""
    return family_of(info).load_tokenizer(info)


def tokenize(tokenizer: Any, texts: Sequence[str], length: int, tensors: str = 'np') -> tuple[Any, Any]:
    """
    Tokenize texts into (input_ids, attention_mask) ``[T, length]``.

    Padded and truncated to the text encoder's fixed length, as int64 numpy arrays (`tensors` 'np') or torch
    tensors ('pt').
    """
    tokens = tokenizer(list(texts), padding='max_length', max_length=length, truncation=True, return_tensors=tensors)
    ids, mask = tokens['input_ids'], tokens['attention_mask']
    if tensors == 'np':
        return ids.astype('int64'), mask.astype('int64')
    return ids, mask


def text_length(tokenizer: Any, model: Any, info: ModelInfo) -> int:
    """Return the fixed token length of the model's text input (its family decides)."""
    return family_of(info).text_length(tokenizer, model)


def logit_scale(model: Any, info: ModelInfo) -> float:
    """Return the model's zero-shot multiplier of cosine similarities (1.0 for families without text)."""
    return family_of(info).logit_scale(model)


def logit_bias(model: Any, info: ModelInfo) -> float:
    """Return the model's zero-shot logit bias (0.0 unless its family trained one: SigLIP)."""
    return family_of(info).logit_bias(model)


def vision_encoder_module(model: Any, info: ModelInfo, interpolate_pos_encoding: bool = False) -> Any:
    """Wrap the image graph: pixel_values [B,3,H,W] -> the family's image outputs (`ModelFamily.image_outputs`)."""
    import torch

    family = family_of(info)

    class VisionEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return family.vision_forward(self.model, pixel_values, interpolate_pos_encoding)

    return VisionEncoder().eval()


def text_encoder_module(model: Any, info: ModelInfo) -> Any:
    """Wrap the text tower: (input_ids, attention_mask) [B,L] -> text embedding [B,D] in the joint space."""
    import torch

    family = family_of(info)

    class TextEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return family.text_forward(self.model, input_ids, attention_mask)

    return TextEncoder().eval()
