# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Model directories that lie: every file is checked before it is read, every size-deciding value is bounded."""
from __future__ import annotations

import json
import os
import shutil
import tracemalloc

import pytest

from robovision_ros.backends.onnx_export import ExportError, cached_export, load_export
from robovision_ros.encoder import PerceptionEncoder
from robovision_ros.model_dir import read_model_info
from robovision_ros.model_files import ModelLoadError, bounded_int
from robovision_ros.preprocessing import PreprocessConfigError


@pytest.fixture
def model_copy(tiny_clip_dir, tmp_path):
    path = tmp_path / 'model'
    shutil.copytree(tiny_clip_dir, path)
    return path


def _edit_json(path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        target = data
        *parents, leaf = key.split('.')
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    path.write_text(json.dumps(data))


def test_a_fifo_as_weights_is_refused_before_anything_reads_it(model_copy):
    (model_copy / 'model.safetensors').unlink()
    os.mkfifo(model_copy / 'model.safetensors')
    with pytest.raises(ModelLoadError, match='model.safetensors is not a regular file'):
        read_model_info(str(model_copy))


def test_a_link_to_dev_zero_is_refused(model_copy):
    (model_copy / 'tokenizer.json').unlink()
    (model_copy / 'tokenizer.json').symlink_to('/dev/zero')
    with pytest.raises(ModelLoadError, match='tokenizer.json is not a regular file'):
        read_model_info(str(model_copy))


def test_an_oversized_config_is_refused_by_its_size(model_copy):
    (model_copy / 'config.json').write_text(' ' * (2 << 20) + '{}')
    with pytest.raises(ModelLoadError, match='config.json holds 2097154 bytes'):
        read_model_info(str(model_copy))


@pytest.mark.parametrize('key, value, reason', [
    ('vision_config.image_size', 20000, 'image_size = 20000 is outside the supported range 8 .. 4096'),
    ('vision_config.hidden_size', 10**9, 'hidden_size = 1000000000 is outside'),
    ('text_config.max_position_embeddings', 10**9, 'max_position_embeddings'),
    ('vision_config.patch_size', 0, 'patch_size = 0'),
    ('projection_dim', 'wide', 'projection_dim must be an integer'),
    ('vision_config', [1, 2], 'vision_config must be an object'),
    ('model_type', 'resnet', "model_type 'resnet' not supported; supported: clip"),
])
def test_config_values_that_size_allocations_are_bounded(model_copy, key, value, reason):
    _edit_json(model_copy / 'config.json', **{key: value})
    tracemalloc.start()
    try:
        with pytest.raises(ModelLoadError, match=reason.replace('(', r'\(').replace(')', r'\)')):
            read_model_info(str(model_copy))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f'refusing the config allocated {peak} bytes'


def test_a_preprocessor_crop_beyond_the_bound_is_refused(model_copy, model_cache):
    _edit_json(model_copy / 'preprocessor_config.json', crop_size={'height': 20000, 'width': 20000},
               do_center_crop=True)
    with pytest.raises(PreprocessConfigError, match='crop_size .* outside the supported range'):
        PerceptionEncoder(str(model_copy), 'onnxruntime', cache_dir=model_cache)


def test_a_clip_folder_without_its_tokenizer_fails_to_load(model_copy, model_cache):
    for name in ('tokenizer.json', 'vocab.json', 'merges.txt', 'tokenizer_config.json', 'special_tokens_map.json'):
        (model_copy / name).unlink(missing_ok=True)
    with pytest.raises(ModelLoadError, match='has no tokenizer files'):
        PerceptionEncoder(str(model_copy), 'onnxruntime', cache_dir=model_cache)


@pytest.mark.parametrize('changes, reason', [
    ({'text_length': 10**9}, 'text_length = 1000000000 is outside'),
    ({'input_size': 20000}, 'input_size = 20000 is outside'),
    ({'logit_scale': float('nan')}, 'logit_scale'),
    ({'text_length': 'long'}, 'text_length must be an integer'),
])
def test_a_damaged_cached_export_is_refused_with_the_fix(tiny_clip_dir, tmp_path, changes, reason):
    info = read_model_info(str(tiny_clip_dir))
    exported = cached_export(info, tmp_path)
    metadata = exported.directory / 'export.json'
    data = json.loads(metadata.read_text())
    data.update(changes)
    metadata.write_text(json.dumps(data))
    with pytest.raises(ExportError, match=reason) as error:
        load_export(exported.directory)
    assert f'delete {exported.directory}' in str(error.value)


def test_bounded_int_says_where_and_what():
    with pytest.raises(ModelLoadError, match=r'cfg.json: size = 9 is outside the supported range 1 \.\. 8'):
        bounded_int({'size': 9}, 'size', 1, 1, 8, 'cfg.json')
    with pytest.raises(ModelLoadError, match='must be an integer'):
        bounded_int({'size': 1.5}, 'size', 1, 1, 8, 'cfg.json')
    assert bounded_int({}, 'size', 4, 1, 8, 'cfg.json') == 4
