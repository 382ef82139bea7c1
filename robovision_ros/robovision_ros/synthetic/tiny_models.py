# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Small Hugging Face-format model directories of every family, made by this project.

No model hub is reachable on CI, so tests and the embedded default models start from directories written here:
a `config.json` + `model.safetensors`, a `preprocessor_config.json`, and for the families with text a tokenizer
learnt from a small corpus (CLIP-format BPE `vocab.json` + `merges.txt`, or a `tokenizer.json` alone as SigLIP 2
ships it). They load through exactly the code path of a real model directory (`robovision_ros.model_dir`); the
configs are each family's transformers config at small sizes, the weights random unless a trained model is given.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

_CLIP_WORD_PATTERN = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+""")


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode character map."""
    printable = list(range(ord('!'), ord('~') + 1)) + list(range(ord('¡'), ord('¬') + 1)) + \
        list(range(ord('®'), ord('ÿ') + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def learn_clip_bpe(corpus: Iterable[str], num_merges: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """
    Learn a CLIP-format byte-level BPE (vocab, merges) from `corpus`, as CLIP's vocabulary is built.

    The vocabulary is every byte symbol, every byte symbol + '</w>', one token per merge, then the start and end
    tokens -- so any text still tokenizes; words of the corpus become single tokens after enough merges.
    """
    byte_map = _bytes_to_unicode()
    words: Counter[tuple[str, ...]] = Counter()
    for text in corpus:
        for word in _CLIP_WORD_PATTERN.findall(text.lower()):
            symbols = [byte_map[b] for b in word.encode('utf-8')]
            symbols[-1] += '</w>'
            words[tuple(symbols)] += 1
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:]):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs.items(), key=lambda item: (item[1], item[0]))[0]
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for symbols, count in words.items():
            out: list[str] = []
            i = 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    tokens = list(byte_map.values())
    tokens += [t + '</w>' for t in tokens]
    tokens += [a + b for a, b in merges]
    tokens += ['<|startoftext|>', '<|endoftext|>']
    return {token: i for i, token in enumerate(dict.fromkeys(tokens))}, merges


def write_clip_tokenizer(out_dir: Path, corpus: Iterable[str], num_merges: int = 200,
                         max_length: int = 16) -> Any:
    """Write a CLIP tokenizer (vocab.json, merges.txt, configs) to `out_dir` and return it loaded."""
    from transformers import CLIPTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab, merges = learn_clip_bpe(corpus, num_merges)
    (out_dir / 'vocab.json').write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / 'merges.txt').write_text('#version: 0.2\n' + ''.join(f'{a} {b}\n' for a, b in merges),
                                        encoding='utf-8')
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def clip_preprocessor_config(image_size: int, mean: tuple[float, ...] = (0.5, 0.5, 0.5),
                             std: tuple[float, ...] = (0.5, 0.5, 0.5)) -> dict[str, Any]:
    """CLIP-style image processor settings: shortest-edge bicubic resize, centre crop, rescale, normalise."""
    return {
        'image_processor_type': 'CLIPImageProcessor',
        'do_resize': True, 'size': {'shortest_edge': image_size}, 'resample': 3,
        'do_center_crop': True, 'crop_size': {'height': image_size, 'width': image_size},
        'do_rescale': True, 'rescale_factor': 1 / 255,
        'do_normalize': True, 'image_mean': list(mean), 'image_std': list(std),
        'do_convert_rgb': True,
    }


def vit_preprocessor_config(image_size: int, mean: tuple[float, ...] = (0.5, 0.5, 0.5),
                            std: tuple[float, ...] = (0.5, 0.5, 0.5)) -> dict[str, Any]:
    """ViT-style image processor settings: bilinear resize to a square, rescale, normalise."""
    return {
        'image_processor_type': 'ViTImageProcessor',
        'do_resize': True, 'size': {'height': image_size, 'width': image_size}, 'resample': 2,
        'do_rescale': True, 'rescale_factor': 1 / 255,
        'do_normalize': True, 'image_mean': list(mean), 'image_std': list(std),
    }


def make_tiny_clip(out_dir: Path, corpus: Iterable[str], image_size: int = 64, patch_size: int = 8,
                   width: int = 64, layers: int = 2, heads: int = 4, projection_dim: int = 64,
                   num_merges: int = 200, max_length: int = 16, seed: int = 0,
                   model: Optional[Any] = None) -> Path:
    """Write a CLIP model directory (random init from `seed` unless `model` is given)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    out_dir = Path(out_dir)
    tokenizer = write_clip_tokenizer(out_dir, corpus, num_merges, max_length)
    if model is None:
        config = CLIPConfig(
            text_config=dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width * 4,
                             num_hidden_layers=layers, num_attention_heads=heads,
                             max_position_embeddings=max_length, bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
            vision_config=dict(hidden_size=width, intermediate_size=width * 4, num_hidden_layers=layers,
                               num_attention_heads=heads, image_size=image_size, patch_size=patch_size),
            projection_dim=projection_dim)
        torch.manual_seed(seed)
        model = CLIPModel(config)
    return save_clip_model(out_dir, model, image_size)


def save_clip_model(out_dir: Path, model: Any, image_size: int) -> Path:
    """Write a CLIP model's weights and preprocessor config next to a tokenizer already in `out_dir`."""
    out_dir = Path(out_dir)
    model.save_pretrained(str(out_dir))
    (out_dir / 'preprocessor_config.json').write_text(json.dumps(clip_preprocessor_config(image_size), indent=2))
    return out_dir


def make_tiny_vit(out_dir: Path, image_size: int = 64, patch_size: int = 8, width: int = 64, layers: int = 2,
                  heads: int = 4, seed: int = 0, model: Optional[Any] = None) -> Path:
    """Write a ViT model directory (random init from `seed` unless `model` is given)."""
    import torch
    from transformers import ViTConfig, ViTModel

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if model is None:
        config = ViTConfig(hidden_size=width, intermediate_size=width * 4, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch_size)
        torch.manual_seed(seed)
        model = ViTModel(config, add_pooling_layer=False)
    model.save_pretrained(str(out_dir))
    (out_dir / 'preprocessor_config.json').write_text(json.dumps(vit_preprocessor_config(image_size), indent=2))
    return out_dir


def owl_preprocessor_config(kind: str, image_size: int, mean: tuple[float, ...] = (0.5, 0.5, 0.5),
                            std: tuple[float, ...] = (0.5, 0.5, 0.5)) -> dict[str, Any]:
    """
    Return the preprocessing of the released OWL models at another size.

    OWL-ViT resizes the whole frame to a square (bicubic); OWLv2 pads it to a square (bottom and right) and resizes
    that (bilinear).
    """
    common = {'do_resize': True, 'size': {'height': image_size, 'width': image_size}, 'do_rescale': True,
              'rescale_factor': 1 / 255, 'do_normalize': True, 'image_mean': list(mean), 'image_std': list(std),
              'do_convert_rgb': True}
    if kind == 'owlv2':
        return {'image_processor_type': 'Owlv2ImageProcessor', 'do_pad': True, 'resample': 2, **common}
    return {'image_processor_type': 'OwlViTImageProcessor', 'do_center_crop': False, 'resample': 3, **common}


def owl_config(kind: str, vocab_size: int, image_size: int = 64, patch_size: int = 8, vision_width: int = 64,
               text_width: int = 32, layers: int = 2, heads: int = 4, max_length: int = 16,
               special_tokens: Optional[dict[str, int]] = None) -> Any:
    """Return an OwlViTConfig or Owlv2Config of the given sizes (`kind` 'owlvit' or 'owlv2')."""
    from transformers import Owlv2Config, OwlViTConfig

    config_class = Owlv2Config if kind == 'owlv2' else OwlViTConfig
    return config_class(
        text_config=dict(vocab_size=vocab_size, hidden_size=text_width, intermediate_size=text_width * 4,
                         num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_length,
                         **(special_tokens or {})),
        vision_config=dict(hidden_size=vision_width, intermediate_size=vision_width * 4, num_hidden_layers=layers,
                           num_attention_heads=heads, image_size=image_size, patch_size=patch_size),
        projection_dim=text_width)


def init_owl_heads(model: Any, prior: float = 0.01, seed: int = 0, logit_scale: float = 1.0) -> Any:
    """
    Initialise an OWL detector's heads so that its first predictions are sensible, as detection heads are.

    transformers initialises the head layers with unit-variance weights, which saturates the box sigmoid (every box
    at a corner, no gradient) and the class logits (scores of 0 or 1). Here the layers get PyTorch's default fan-in
    scaling, the last box layer starts at zero (each patch's box is its grid prior: the patch itself), the logit
    scale at `logit_scale` and the logit shift at the RetinaNet prior (a score of `prior` before training).
    """
    import math

    import torch

    generator = torch.Generator().manual_seed(seed)
    heads = [model.class_head, model.box_head] + ([model.objectness_head] if hasattr(model, 'objectness_head') else [])
    with torch.no_grad():
        for head in heads:
            for layer in head.modules():
                if isinstance(layer, torch.nn.Linear):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound, bound, generator=generator)
                    layer.bias.zero_()
        model.box_head.dense2.weight.mul_(0.1)
        model.class_head.logit_scale.weight.mul_(0.1)
        model.class_head.logit_scale.bias.fill_(logit_scale - 1.0)  # the head applies elu(.) + 1
        model.class_head.logit_shift.weight.mul_(0.1)
        model.class_head.logit_shift.bias.fill_(-math.log((1 - prior) / prior))
    return model


def make_tiny_owl(out_dir: Path, corpus: Iterable[str], kind: str = 'owlvit', image_size: int = 64,
                  patch_size: int = 8, vision_width: int = 64, text_width: int = 32, layers: int = 2, heads: int = 4,
                  num_merges: int = 200, max_length: int = 16, seed: int = 0, model: Optional[Any] = None,
                  preprocessor: Optional[dict[str, Any]] = None, prior: float = 0.3,
                  logit_scale: float = 1.0) -> Path:
    """
    Write an OWL-ViT (`kind` 'owlvit') or OWLv2 ('owlv2') detector directory.

    Random init from `seed` unless `model` is given, heads by `init_owl_heads` (scores spread around `prior`).
    """
    import torch
    from transformers import Owlv2ForObjectDetection, OwlViTForObjectDetection

    out_dir = Path(out_dir)
    tokenizer = write_clip_tokenizer(out_dir, corpus, num_merges, max_length)
    if model is None:
        config = owl_config(kind, len(tokenizer), image_size, patch_size, vision_width, text_width, layers, heads,
                            max_length, dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                             pad_token_id=tokenizer.pad_token_id))
        torch.manual_seed(seed)
        model = init_owl_heads((Owlv2ForObjectDetection if kind == 'owlv2' else OwlViTForObjectDetection)(config),
                               prior, seed, logit_scale).eval()
    model.save_pretrained(str(out_dir))
    (out_dir / 'preprocessor_config.json').write_text(json.dumps(
        preprocessor or owl_preprocessor_config(kind, image_size), indent=2))
    return out_dir


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def write_word_tokenizer(out_dir: Path, corpus: Iterable[str], max_length: int = 16) -> Any:
    """
    Write a word-level `tokenizer.json` alone (no vocab.json or merges.txt, as SigLIP 2 ships) and return it.

    Ids: 0 pad, 1 end of text, 2 unknown, then the corpus words; every text ends with the end token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    words = sorted({w for text in corpus for w in _CLIP_WORD_PATTERN.findall(text.lower())})
    vocab = {'<pad>': 0, '</s>': 1, '<unk>': 2, **{w: i + 3 for i, w in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token='<unk>'))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace()])
    tokenizer.post_processor = processors.TemplateProcessing(single='$A </s>', special_tokens=[('</s>', 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token='<pad>', eos_token='</s>',
                                   unk_token='<unk>', model_max_length=max_length, do_lower_case=True)
    fast.save_pretrained(str(out_dir))
    for stray in ('vocab.json', 'merges.txt'):
        (out_dir / stray).unlink(missing_ok=True)
    return fast


def dino_preprocessor_config(image_size: int) -> dict[str, Any]:
    """DINOv2-style processor settings: bicubic resize of the shortest edge to 256/224 of the input, centre crop."""
    return {
        'image_processor_type': 'BitImageProcessor',
        'do_resize': True, 'size': {'shortest_edge': round(image_size * 256 / 224)}, 'resample': 3,
        'do_center_crop': True, 'crop_size': {'height': image_size, 'width': image_size},
        'do_rescale': True, 'rescale_factor': 1 / 255,
        'do_normalize': True, 'image_mean': list(IMAGENET_MEAN), 'image_std': list(IMAGENET_STD),
    }


def make_tiny_siglip(out_dir: Path, corpus: Iterable[str], image_size: int = 64, patch_size: int = 8,
                     width: int = 64, layers: int = 2, heads: int = 4, max_length: int = 16, seed: int = 0,
                     tokenizer: str = 'bpe', num_merges: int = 200, model: Optional[Any] = None) -> Path:
    """
    Write a SigLIP model directory (transformers SiglipModel; random init from `seed` unless `model` is given).

    `tokenizer` 'bpe': CLIP-format vocab.json + merges.txt; 'word': a tokenizer.json alone, the file layout of the
    fixed-resolution SigLIP 2 checkpoints.
    """
    import torch
    from transformers import SiglipConfig, SiglipModel

    out_dir = Path(out_dir)
    corpus = list(corpus)
    if tokenizer == 'word':
        text_tokenizer = write_word_tokenizer(out_dir, corpus, max_length)
    else:
        text_tokenizer = write_clip_tokenizer(out_dir, corpus, num_merges, max_length)
    if model is None:
        config = SiglipConfig(
            text_config=dict(vocab_size=len(text_tokenizer), hidden_size=width, intermediate_size=width * 4,
                             num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_length,
                             pad_token_id=text_tokenizer.pad_token_id, eos_token_id=text_tokenizer.eos_token_id,
                             bos_token_id=text_tokenizer.bos_token_id),
            vision_config=dict(hidden_size=width, intermediate_size=width * 4, num_hidden_layers=layers,
                               num_attention_heads=heads, image_size=image_size, patch_size=patch_size))
        torch.manual_seed(seed)
        model = SiglipModel(config)
        with torch.no_grad():  # the released models' scale and bias (random init draws them from N(0, 1))
            model.logit_scale.fill_(float(np.log(10.0)))
            model.logit_bias.fill_(-10.0)
    model.save_pretrained(str(out_dir))
    (out_dir / 'preprocessor_config.json').write_text(json.dumps(
        {**vit_preprocessor_config(image_size), 'image_processor_type': 'SiglipImageProcessor'}, indent=2))
    return out_dir


def make_tiny_dino(out_dir: Path, kind: str = 'dinov2', image_size: int = 64, patch_size: int = 8,
                   position_table: Optional[int] = None, width: int = 64, layers: int = 2, heads: int = 4,
                   registers: int = 4, seed: int = 0) -> Path:
    """
    Write a random DINO model directory: `kind` 'dinov2', 'dinov2_with_registers' or 'dinov3_vit'.

    DINOv2's position table covers `position_table` pixels (default 1.5x the input, as 518 does 224 in the released
    models), so every input interpolates it, as there; DINOv3 has rotary positions and `registers` register tokens.
    """
    import torch
    import transformers

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = dict(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads, patch_size=patch_size)
    table = position_table or (image_size * 3 // 2) // patch_size * patch_size
    if kind == 'dinov2':
        config, model_class = transformers.Dinov2Config(image_size=table, **common), 'Dinov2Model'
    elif kind == 'dinov2_with_registers':
        config = transformers.Dinov2WithRegistersConfig(image_size=table, num_register_tokens=registers, **common)
        model_class = 'Dinov2WithRegistersModel'
    elif kind == 'dinov3_vit':
        config = transformers.DINOv3ViTConfig(image_size=image_size, intermediate_size=width * 4,
                                              num_register_tokens=registers, **common)
        model_class = 'DINOv3ViTModel'
    else:
        raise ValueError(f"kind '{kind}' not one of dinov2, dinov2_with_registers, dinov3_vit")
    torch.manual_seed(seed)
    model = getattr(transformers, model_class)(config)
    if kind != 'dinov3_vit':
        with torch.no_grad():  # zero-initialised in transformers; trained checkpoints carry real values
            for name in ('cls_token', 'register_tokens'):
                if hasattr(model.embeddings, name):
                    getattr(model.embeddings, name).normal_(0, 0.02)
    model.save_pretrained(str(out_dir))
    processor = dino_preprocessor_config(image_size) if kind != 'dinov3_vit' else {
        **vit_preprocessor_config(image_size, IMAGENET_MEAN, IMAGENET_STD),
        'image_processor_type': 'DINOv3ViTImageProcessorFast'}
    (out_dir / 'preprocessor_config.json').write_text(json.dumps(processor, indent=2))
    return out_dir
