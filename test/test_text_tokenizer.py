# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The lean tokenizer (tokenizers alone) gives the ids and masks transformers' AutoTokenizer gives."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from robovision_ros.model_dir import EMBEDDED_DIR, load_tokenizer, read_model_info, tokenize
from robovision_ros.text_tokenizer import TextTokenizer

TEXTS = ['a photo of a red cup.', '', 'RED   Cup!!', 'ünïcödé 東京 emoji 🙂', 'word ' * 50, 'a,b;c\td\ne',
         "it's a yellow-box", '  leading and trailing  ']


@pytest.mark.parametrize('which', ['embedded', 'generated', 'embedded_siglip', 'siglip2_layout'])
def test_ids_and_masks_equal_autotokenizer(which, tiny_clip_dir, tiny_siglip2_dir):
    """CLIP's BPE, the tiny SigLIP's, and a SigLIP 2 file layout (a tokenizer.json alone, no vocab/merges)."""
    from transformers import AutoTokenizer

    directory = {'embedded': EMBEDDED_DIR / 'tiny_clip', 'generated': tiny_clip_dir,
                 'embedded_siglip': EMBEDDED_DIR / 'tiny_siglip', 'siglip2_layout': tiny_siglip2_dir}[which]
    if which == 'siglip2_layout':
        assert not (directory / 'vocab.json').exists() and isinstance(load_tokenizer(read_model_info(
            str(directory))), TextTokenizer)
    ours = TextTokenizer(directory)
    reference = AutoTokenizer.from_pretrained(str(directory))
    assert ours.model_max_length == reference.model_max_length
    for length in (ours.model_max_length, 8, 3):  # 3: truncation keeps BOS and EOS around one text token
        mine = ours(TEXTS, max_length=length)
        theirs = reference(TEXTS, padding='max_length', max_length=length, truncation=True, return_tensors='np')
        np.testing.assert_array_equal(mine['input_ids'], theirs['input_ids'])
        np.testing.assert_array_equal(mine['attention_mask'], theirs['attention_mask'])
        assert mine['input_ids'].dtype == np.int64


def test_load_tokenizer_imports_neither_transformers_nor_torch():
    # A fresh interpreter: this test process has imported both already.
    code = ('import sys; from robovision_ros.model_dir import read_model_info, load_tokenizer, tokenize; '
            "t = load_tokenizer(read_model_info('embedded:tiny_clip')); tokenize(t, ['a red cup'], 16); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, cwd='/')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]', out.stdout


def test_tokenize_through_model_dir_and_refusals():
    tokenizer = load_tokenizer(read_model_info('embedded:tiny_clip'))
    ids, mask = tokenize(tokenizer, ['a red cup', 'a blue bottle on a table'], 16)
    assert ids.shape == mask.shape == (2, 16) and mask[0].sum() < mask[1].sum()
    with pytest.raises(ValueError, match='max_length'):
        tokenizer(['x'], padding='longest', max_length=16)
