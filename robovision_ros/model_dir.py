# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Model loading: Hugging Face ViT and CLIP directories (or hub ids) and the encoder modules built from them.

A model is named by a local directory, a hub id (used only where the robot has a network or a cache), or
`embedded:<name>` for the small models shipped inside this package. Everything a backend needs -- the
preprocessing, the tokenizer, CLIP's logit scale, the patch grid -- comes from the model directory itself.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

EMBEDDED_PREFIX = 'embedded:'
ADAPTERS_KEY = 'robovision_adapters'  # config.json field: bottleneck adapters after every transformer block
ADAPTERS_FILE = 'adapters.safetensors'
EMBEDDED_DIR = Path(__file__).resolve().parent / 'embedded_models'
SUPPORTED_MODEL_TYPES = ('clip', 'vit')


class ModelLoadError(RuntimeError):
    """A model that cannot be found or loaded; the message names the path or hub id."""


@dataclass(frozen=True)
class ModelInfo:
    """What the rest of the package needs to know about a model, read from its directory."""

    model_id: str
    path: Path
    model_type: str  # 'clip' or 'vit'
    image_size: int
    patch_size: int
    patch_dim: int  # dimension of the published patch features (CLIP: projection_dim)
    global_dim: int

    @property
    def has_text(self) -> bool:
        return self.model_type == 'clip'

    @property
    def fingerprint(self) -> str:
        """Hash of the model's config and weight files: names the exported ONNX files in a cache."""
        digest = hashlib.sha256()
        for name in sorted(p.name for p in self.path.iterdir() if p.suffix in ('.json', '.safetensors', '.bin')):
            digest.update(name.encode())
            digest.update((self.path / name).read_bytes())
        return digest.hexdigest()[:16]


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
    """Read a model directory's config (no weights are loaded)."""
    path = resolve_model_dir(model_id)
    config = json.loads((path / 'config.json').read_text())
    model_type = config.get('model_type')
    if model_type == 'clip':
        vision = config.get('vision_config', {})
        projection_dim = int(config.get('projection_dim', 512))
        return ModelInfo(model_id, path, 'clip', int(vision.get('image_size', 224)),
                         int(vision.get('patch_size', 32)), projection_dim, projection_dim)
    if model_type == 'vit':
        hidden = int(config.get('hidden_size', 768))
        return ModelInfo(model_id, path, 'vit', int(config.get('image_size', 224)),
                         int(config.get('patch_size', 16)), hidden, hidden)
    raise ModelLoadError(
        f"{path}: model_type '{model_type}' not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")


def load_torch_model(info: ModelInfo) -> Any:
    """Load the Hugging Face model (eval mode, fp32, CPU)."""
    try:
        if info.model_type == 'clip':
            from transformers import CLIPModel

            model = CLIPModel.from_pretrained(str(info.path))
        else:
            from transformers import ViTModel

            model = ViTModel.from_pretrained(str(info.path), add_pooling_layer=False)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f'could not load weights from {info.path}: {error}') from error
    spec = json.loads((info.path / 'config.json').read_text()).get(ADAPTERS_KEY)
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
    if info.model_type != 'vit':
        return None
    config = json.loads((info.path / 'config.json').read_text())
    if 'ViTForImageClassification' not in config.get('architectures', []) or not config.get('id2label'):
        return None
    from safetensors.numpy import load_file

    weights = load_file(str(info.path / 'model.safetensors'))
    if 'classifier.weight' not in weights:
        raise ModelLoadError(f'{info.path}: config names ViTForImageClassification but has no classifier weights')
    labels = tuple(config['id2label'][str(i)] for i in range(len(config['id2label'])))
    return ClassificationHead(labels, weights['classifier.weight'].astype('float32'),
                              weights['classifier.bias'].astype('float32'))


def load_tokenizer(info: ModelInfo) -> Any:
    """Load the tokenizer stored in the model directory (CLIP only)."""
    if not info.has_text:
        raise ModelLoadError(f'{info.model_id} is a {info.model_type} model: it has no text encoder')
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(info.path))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f'no usable tokenizer in {info.path}: {error}') from error


def clip_text_length(tokenizer: Any, model: Any) -> int:
    """Return the fixed token length of the text input: the tokenizer's limit, capped by the position table."""
    return int(min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings))


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


def clip_logit_scale(model: Any) -> float:
    """Return CLIP's zero-shot multiplier of cosine similarities: exp of the trained `logit_scale` parameter."""
    return float(model.logit_scale.detach().float().exp())


def vision_encoder_module(model: Any, info: ModelInfo, interpolate_pos_encoding: bool = False) -> Any:
    """Wrap the vision tower: pixel_values [B,3,H,W] -> (patch_tokens [B,N,D], global_embedding [B,Dg])."""
    import torch

    class VisionEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if info.model_type == 'clip':
                vision = self.model.vision_model
                out = vision(pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
                # Patch tokens go through the same final norm and projection as the pooled token, which puts
                # them in the joint image-text space (for localisation by text queries).
                patches = self.model.visual_projection(vision.post_layernorm(out.last_hidden_state[:, 1:]))
                return patches, self.model.visual_projection(out.pooler_output)
            hidden = self.model(pixel_values=pixel_values,
                                interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state
            return hidden[:, 1:], hidden[:, 0]

    return VisionEncoder().eval()


def text_encoder_module(model: Any) -> Any:
    """Wrap the text tower: (input_ids, attention_mask) [B,L] -> projected text embedding [B,D] (CLIP)."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask)
            return self.model.text_projection(out.pooler_output)

    return TextEncoder().eval()
