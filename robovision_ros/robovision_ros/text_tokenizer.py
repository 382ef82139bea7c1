# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
A model directory's `tokenizer.json` run by the `tokenizers` library alone, without transformers.

`transformers.AutoTokenizer` imports torch (6 s and ~250 MB of resident memory in a node that runs ONNX Runtime or
OpenVINO and needs no torch). The fast tokenizer transformers would build for such a directory is this same
`tokenizers.Tokenizer`; the settings transformers adds around it (pad token, padding side, length limit) come from
`tokenizer_config.json`. test/test_text_tokenizer.py checks that ids and masks equal AutoTokenizer's.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from robovision_ros.model_files import MAX_TOKENIZER_BYTES, ModelLoadError, check_regular_file, read_json

TOKENIZER_FILE = 'tokenizer.json'
CONFIG_FILE = 'tokenizer_config.json'
UNLIMITED_LENGTH = 1 << 30  # transformers' "no limit" model_max_length is a huge number; the text length caps it


class TextTokenizer:
    """Tokenize texts to fixed-length id and mask arrays, as a transformers fast tokenizer would."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        path = directory / TOKENIZER_FILE
        check_regular_file(path, MAX_TOKENIZER_BYTES)
        config = read_json(directory / CONFIG_FILE) if (directory / CONFIG_FILE).is_file() else {}
        if config.get('padding_side', 'right') != 'right':
            raise ModelLoadError(f"{directory / CONFIG_FILE}: padding_side {config['padding_side']!r} not supported; "
                                 'supported: right')
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises a bare Exception for a file it cannot read
            raise ModelLoadError(f'no usable tokenizer in {path}: {error}') from error
        self._lock = threading.Lock()
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        pad_token = _token_text(config.get('pad_token'))
        self.pad_token_id = self._tokenizer.token_to_id(pad_token) if pad_token else None
        if pad_token and self.pad_token_id is None:
            raise ModelLoadError(f'{directory}: pad token {pad_token!r} is not in {TOKENIZER_FILE}')
        self.pad_token = pad_token
        self.model_max_length = int(config.get('model_max_length', UNLIMITED_LENGTH))

    def __call__(self, texts: Sequence[str], padding: str = 'max_length', max_length: int = 0,
                 truncation: bool = True, return_tensors: str = 'np') -> dict[str, Any]:
        """
        Return {'input_ids', 'attention_mask'} ``[T, max_length]`` int64 (numpy, or torch for 'pt').

        Only what the project calls is supported: padding to `max_length` and truncation to it.
        """
        if padding != 'max_length' or not truncation or max_length <= 0:
            raise ValueError("TextTokenizer pads and truncates to max_length only (padding='max_length', "
                             f'truncation=True, max_length > 0); got padding={padding!r}, truncation={truncation}, '
                             f'max_length={max_length}')
        if self.pad_token_id is None:
            raise ModelLoadError('this tokenizer has no pad token: it cannot pad to a fixed length')
        with self._lock:  # truncation and padding are settings of the shared Rust tokenizer, as in transformers
            self._tokenizer.enable_truncation(max_length, strategy='longest_first', direction='right')
            self._tokenizer.enable_padding(direction='right', pad_id=self.pad_token_id, pad_token=self.pad_token,
                                           length=max_length)
            encodings = self._tokenizer.encode_batch([str(text) for text in texts])
        ids = np.array([encoding.ids for encoding in encodings], np.int64).reshape(len(texts), max_length)
        mask = np.array([encoding.attention_mask for encoding in encodings], np.int64).reshape(len(texts), max_length)
        if return_tensors == 'pt':
            import torch

            return {'input_ids': torch.from_numpy(ids), 'attention_mask': torch.from_numpy(mask)}
        if return_tensors != 'np':
            raise ValueError(f"return_tensors must be 'np' or 'pt'; got {return_tensors!r}")
        return {'input_ids': ids, 'attention_mask': mask}


def _token_text(token: Any) -> str:
    """Return a token as tokenizer_config.json gives it: a string, or an AddedToken object with `content`."""
    if isinstance(token, dict):
        return str(token.get('content', ''))
    return str(token) if token else ''


def has_tokenizer_file(directory: Path) -> bool:
    """Whether `directory` holds a `tokenizer.json` that `TextTokenizer` reads."""
    return (directory / TOKENIZER_FILE).is_file()
