# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""TensorRT engine-cache keys and the cache's refusal of mismatched engines (no TensorRT needed)."""
from __future__ import annotations

import dataclasses

import pytest

from robovision_ros.backends.engine_cache import EngineCache, EngineCacheError, EngineKey, file_sha256

PROFILE = (('pixel_values', (1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 224, 224)),)


def _key(**changes):
    key = EngineKey(onnx_sha256='ab' * 32, tensorrt_version='10.9.0', gpu_name='NVIDIA H100', compute_capability='9.0',
                    precision='fp16', profile=PROFILE, family='clip')
    return dataclasses.replace(key, **changes)


@pytest.mark.parametrize('change', [
    {'onnx_sha256': 'cd' * 32}, {'tensorrt_version': '11.0.0'}, {'gpu_name': 'NVIDIA H200'},
    {'compute_capability': '8.9'}, {'precision': 'fp32'}, {'family': 'siglip'},
    {'profile': (('pixel_values', (1, 3, 224, 224), (2, 3, 224, 224), (8, 3, 224, 224)),)},
])
def test_every_key_field_changes_the_digest(change):
    assert _key(**change).digest != _key().digest
    assert _key().digest == _key().digest


def test_store_load_and_miss(tmp_path):
    cache = EngineCache(tmp_path)
    assert cache.load(_key(), 'image_encoder') is None
    path = cache.store(_key(), 'image_encoder', b'engine-bytes')
    assert path.name == f'image_encoder.fp16.{_key().digest}.engine'
    assert cache.load(_key(), 'image_encoder') == b'engine-bytes'
    assert cache.load(_key(gpu_name='NVIDIA H200'), 'image_encoder') is None  # other GPU: a miss, a rebuild


def test_tampered_sidecar_is_a_clear_error(tmp_path):
    cache = EngineCache(tmp_path)
    path = cache.store(_key(), 'image_encoder', b'x')
    sidecar = path.with_suffix('.json')
    sidecar.write_text(sidecar.read_text().replace('10.9.0', '10.8.0'))
    with pytest.raises(EngineCacheError, match='different tensorrt_version'):
        cache.load(_key(), 'image_encoder')
    sidecar.unlink()
    with pytest.raises(EngineCacheError, match='no key sidecar'):
        cache.load(_key(), 'image_encoder')


def test_file_sha256(tmp_path):
    (tmp_path / 'a').write_bytes(b'abc')
    assert file_sha256(tmp_path / 'a') == 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad'
