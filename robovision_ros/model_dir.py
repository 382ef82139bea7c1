"""Model loading: Hugging Face ViT and CLIP directories (or hub ids) and the encoder modules built from them.

A model is named by a local directory, a hub id (used only where the robot has a network or a cache), or
`embedded:<name>` for the small models shipped inside this package. Everything a backend needs -- the
preprocessing, the tokenizer, CLIP's logit scale, the patch grid -- comes from the model directory itself.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

EMBEDDED_PREFIX = 'embedded:'
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
    return model.eval()


def load_tokenizer(info: ModelInfo) -> Any:
    """The tokenizer stored in the model directory (CLIP only)."""
    if not info.has_text:
        raise ModelLoadError(f'{info.model_id} is a {info.model_type} model: it has no text encoder')
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(info.path))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f'no usable tokenizer in {info.path}: {error}') from error


def clip_text_length(tokenizer: Any, model: Any) -> int:
    """Fixed token length of the text encoder input: the tokenizer's limit, capped by the position table."""
    return int(min(tokenizer.model_max_length, model.config.text_config.max_position_embeddings))


def tokenize(tokenizer: Any, texts: Sequence[str], length: int, tensors: str = 'np') -> tuple[Any, Any]:
    """Texts -> (input_ids, attention_mask) ``[T, length]``: padded and truncated to the text encoder's fixed
    length, as int64 numpy arrays (`tensors` 'np') or torch tensors ('pt')."""
    tokens = tokenizer(list(texts), padding='max_length', max_length=length, truncation=True, return_tensors=tensors)
    ids, mask = tokens['input_ids'], tokens['attention_mask']
    if tensors == 'np':
        return ids.astype('int64'), mask.astype('int64')
    return ids, mask


def clip_logit_scale(model: Any) -> float:
    """CLIP's zero-shot multiplier of cosine similarities: exp of the trained `logit_scale` parameter."""
    return float(model.logit_scale.detach().float().exp())


def vision_encoder_module(model: Any, info: ModelInfo, interpolate_pos_encoding: bool = False) -> Any:
    """An nn.Module: pixel_values [B,3,H,W] -> (patch_tokens [B,N,D], global_embedding [B,Dg])."""
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
    """An nn.Module: (input_ids, attention_mask) [B,L] -> projected text embedding [B,D] (CLIP)."""
    import torch

    class TextEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            out = self.model.text_model(input_ids=input_ids, attention_mask=attention_mask)
            return self.model.text_projection(out.pooler_output)

    return TextEncoder().eval()
