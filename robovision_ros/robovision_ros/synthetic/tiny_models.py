# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Small Hugging Face-format ViT and CLIP model directories made by this project.

No model hub is reachable on CI, so tests and the embedded default models start from directories written here:
a `config.json` + `model.safetensors`, a `preprocessor_config.json`, and for CLIP a CLIP-format BPE tokenizer
(`vocab.json` + `merges.txt`) learnt from a small corpus. They load through exactly the code path of a real
model directory (`robovision_ros.model_dir`).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

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
