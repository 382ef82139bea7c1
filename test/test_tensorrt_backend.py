# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The TensorRT backend's logic against a test double of the TensorRT API (test/fake_tensorrt.py) on CPU.

The double runs each "engine" as its ONNX file in ONNX Runtime, so these tests check what the backend does around
TensorRT: engine cache keys, build and reuse, parser and version errors, the int8 Q/DQ file, optimization profiles,
and the buffer, shape and name plumbing of execution. They cannot check TensorRT itself (kernels, precision, GPU
memory, streams): that needs `ROBOVISION_TENSORRT_TESTS=1` on a machine with TensorRT and a GPU (test_encoder.py).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

import fake_tensorrt
from robovision_ros.backends import tensorrt_backend
from robovision_ros.backends.base import BackendUnavailableError
from robovision_ros.backends.registry import check_combination, create_backend
from robovision_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from robovision_ros.backends.tensorrt_backend import CudaDevice, TensorRTBackend
from robovision_ros.backends.engine_cache import EngineCache, EngineKey, file_sha256
from robovision_ros.model_dir import ModelInfo, read_model_info
from robovision_ros.families.base import ATTENTION_MASK, INPUT_IDS, PIXEL_VALUES
from robovision_ros.backends.onnx_export import cached_export, load_export, \
    quantize_qdq_int8

GPU_NAME = 'NVIDIA H200 (test double)'


class CpuStandIn(CudaDevice):
    """The backend's CUDA calls answered on CPU: a visible "GPU" whose torch device is the CPU."""

    torch_device = 'cpu'

    def __init__(self) -> None:
        self.gpu_name = GPU_NAME
        self.capability = '9.0'
        self.visible = True
        self.calls: Counter = Counter()

    def available(self) -> bool:
        return self.visible

    def name(self) -> str:
        return self.gpu_name

    def compute_capability(self) -> str:
        return self.capability

    def stream_handle(self) -> int:
        return 0

    def synchronize(self) -> None:
        self.calls['synchronize'] += 1

    def empty_cache(self) -> None:
        self.calls['empty_cache'] += 1


@pytest.fixture
def trt(monkeypatch):
    """
    Install the TensorRT double as `tensorrt` and the CPU stand-in as the backend's CUDA device.

    The double reports version 10.9.0 and starts with fresh counters.
    """
    monkeypatch.setitem(sys.modules, 'tensorrt', fake_tensorrt)
    monkeypatch.setattr(fake_tensorrt, '__version__', '10.9.0')
    monkeypatch.setattr(fake_tensorrt, 'CALLS', Counter())
    monkeypatch.setattr(fake_tensorrt, 'UNSUPPORTED_OPS', frozenset())
    monkeypatch.setattr(fake_tensorrt, 'EXECUTIONS', [])
    monkeypatch.setattr(fake_tensorrt, 'BUILT_NETWORKS', [])
    monkeypatch.setattr(tensorrt_backend, 'DEVICE', CpuStandIn())
    return fake_tensorrt


def _private_cache(model_dir: Path, shared: Path, tmp_path: Path) -> Path:
    """Make a cache of this test's own (engines, precision variants) holding a copy of the shared ONNX export."""
    exported = cached_export(read_model_info(str(model_dir)), shared)
    cache = tmp_path / 'cache'
    shutil.copytree(exported.directory, cache / 'onnx' / exported.directory.name)
    return cache


@pytest.fixture
def clip(tiny_clip_dir, model_cache, tmp_path) -> tuple[ModelInfo, Path]:
    return read_model_info(str(tiny_clip_dir)), _private_cache(tiny_clip_dir, model_cache, tmp_path)


def _image_key(info: ModelInfo, cache: Path, precision: str = 'fp32', onnx: str = 'image_encoder.onnx',
               export_dir: Optional[Path] = None) -> EngineKey:
    """Return the key the backend must store the image engine under, computed here from its definition."""
    size = info.image_size
    path = (export_dir or cache / 'onnx' / info.fingerprint) / onnx
    return EngineKey(onnx_sha256=file_sha256(path), tensorrt_version='10.9.0', gpu_name=GPU_NAME,
                     compute_capability='9.0', precision=precision,
                     profile=((PIXEL_VALUES, (1, 3, size, size), (1, 3, size, size), (4, 3, size, size)),),
                     family=info.family)


def _engines(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / 'tensorrt').glob('*.engine'))


def test_a_cache_miss_builds_strongly_typed_engines_and_stores_them_under_their_key(trt, clip):
    info, cache = clip
    backend = TensorRTBackend(info, 'cuda', 'fp32', cache)
    assert trt.CALLS['build'] == 2  # image and text encoder
    key = _image_key(info, cache)
    assert backend.cache_key == key.digest
    stored = EngineCache(cache / 'tensorrt').load(key, 'image_encoder')
    assert stored is not None and stored.startswith(b'FAKETRT')
    assert len(_engines(cache)) == 2 and f'image_encoder.fp32.{key.digest}.engine' in _engines(cache)
    image_network, text_network = trt.BUILT_NETWORKS
    assert image_network.strongly_typed and text_network.strongly_typed
    assert [t.name for t in text_network.inputs] == [INPUT_IDS, ATTENTION_MASK]


def test_a_second_load_is_a_cache_hit(trt, clip):
    info, cache = clip
    TensorRTBackend(info, 'cuda', 'fp32', cache).close()
    second = TensorRTBackend(info, 'cuda', 'fp32', cache)
    assert trt.CALLS['build'] == 2 and trt.CALLS['deserialize'] == 4
    assert second.cache_key == _image_key(info, cache).digest


@pytest.mark.parametrize('change', ['tensorrt_version', 'gpu_name', 'compute_capability', 'onnx_file'])
def test_a_changed_key_builds_a_new_engine(trt, clip, change):
    info, cache = clip
    first = TensorRTBackend(info, 'cuda', 'fp32', cache).cache_key
    if change == 'tensorrt_version':
        trt.__version__ = '11.0.0'  # restored by the fixture's monkeypatch
    elif change == 'gpu_name':
        tensorrt_backend.DEVICE.gpu_name = 'NVIDIA L4 (test double)'
    elif change == 'compute_capability':
        tensorrt_backend.DEVICE.capability = '8.9'
    else:
        import onnx

        path = cache / 'onnx' / info.fingerprint / 'image_encoder.onnx'
        model = onnx.load(str(path))
        model.doc_string = 're-exported'
        onnx.save(model, str(path))
    second = TensorRTBackend(info, 'cuda', 'fp32', cache).cache_key
    assert second != first
    # the image engine is rebuilt; the text engine only where its key changed too
    assert trt.CALLS['build'] == (3 if change == 'onnx_file' else 4)
    assert len(_engines(cache)) == trt.CALLS['build']


def test_another_precision_is_another_engine_built_from_its_own_onnx_file(trt, clip):
    info, cache = clip
    TensorRTBackend(info, 'cuda', 'fp32', cache)
    fp16 = TensorRTBackend(info, 'cuda', 'fp16', cache)
    assert trt.CALLS['build'] == 4
    assert fp16.cache_key == _image_key(info, cache, 'fp16', 'image_encoder.fp16.onnx').digest
    assert len(_engines(cache)) == 4


def test_force_rebuild_builds_again_under_the_same_key(trt, clip):
    info, cache = clip
    first = TensorRTBackend(info, 'cuda', 'fp32', cache).cache_key
    again = TensorRTBackend(info, 'cuda', 'fp32', cache, force_rebuild=True).cache_key
    assert again == first and trt.CALLS['build'] == 4 and len(_engines(cache)) == 2


def test_a_corrupt_cached_engine_is_rebuilt(trt, clip, caplog):
    info, cache = clip
    key = _image_key(info, cache)
    TensorRTBackend(info, 'cuda', 'fp32', cache)
    path = EngineCache(cache / 'tensorrt').path_for(key, 'image_encoder')
    path.write_bytes(b'truncated')
    with caplog.at_level(logging.WARNING, logger=tensorrt_backend.LOG.name):
        backend = TensorRTBackend(info, 'cuda', 'fp32', cache)
    assert trt.CALLS['build'] == 3  # the image engine only
    assert path.read_bytes().startswith(b'FAKETRT')
    assert any(str(path) in r.getMessage() and 'rebuilding' in r.getMessage() for r in caplog.records)
    pixels = np.zeros((1, 3, info.image_size, info.image_size), np.float32)
    assert backend.encode_image(pixels).global_embedding.shape[0] == 1


def test_an_engine_that_does_not_deserialise_even_when_fresh_is_a_clear_error(trt, clip, monkeypatch):
    info, cache = clip
    monkeypatch.setattr(trt.Runtime, 'deserialize_cuda_engine', lambda self, data: None)
    with pytest.raises(BackendUnavailableError, match=r'could not deserialise the engine it just built from .*\.onnx'):
        TensorRTBackend(info, 'cuda', 'fp32', cache)
    assert trt.CALLS['build'] == 1 and _engines(cache) == []  # not cached, so the next load builds again


def test_parser_errors_are_named(trt, clip):
    info, cache = clip
    trt.UNSUPPORTED_OPS = frozenset({'Softmax'})
    with pytest.raises(BackendUnavailableError, match=r'could not parse .*image_encoder\.onnx: In node \d+ .*'
                                                      r'No importer registered for op: Softmax'):
        TensorRTBackend(info, 'cuda', 'fp32', cache)
    assert trt.CALLS['build'] == 0 and _engines(cache) == []


def test_a_failed_build_is_a_clear_error(trt, clip, monkeypatch):
    info, cache = clip
    monkeypatch.setattr(trt.Builder, 'build_serialized_network', lambda self, network, config: None)
    with pytest.raises(BackendUnavailableError, match=r'failed to build an engine from .*image_encoder\.onnx'):
        TensorRTBackend(info, 'cuda', 'fp32', cache)
    assert _engines(cache) == []


@pytest.mark.parametrize('version', ['8.6.1', '9.3.0'])
def test_tensorrt_older_than_10_is_refused(trt, clip, version):
    info, cache = clip
    trt.__version__ = version
    with pytest.raises(BackendUnavailableError, match=f'TensorRT {version} found; robovision_ros needs 10 or 11'):
        TensorRTBackend(info, 'cuda', 'fp32', cache)


def test_missing_tensorrt_or_gpu_is_refused(trt, clip, monkeypatch):
    info, cache = clip
    monkeypatch.setitem(sys.modules, 'tensorrt', None)
    with pytest.raises(BackendUnavailableError, match='tensorrt module is missing'):
        TensorRTBackend(info, 'cuda', 'fp32', cache)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    tensorrt_backend.DEVICE.visible = False
    with pytest.raises(BackendUnavailableError, match='no CUDA GPU is visible'):
        TensorRTBackend(info, 'cuda', 'fp32', cache)


def test_int8_needs_the_qdq_file(trt, clip):
    info, cache = clip
    with pytest.raises(BackendUnavailableError, match=r'qdq\.onnx missing: .*robovision_export .*--int8-qdq'):
        TensorRTBackend(info, 'cuda', 'int8', cache)
    assert trt.CALLS['build'] == 0


def test_int8_engines_are_built_from_the_qdq_files(trt, clip):
    info, cache = clip
    exported = load_export(cache / 'onnx' / info.fingerprint)
    rng = np.random.default_rng(0)
    size = exported.input_size
    image_feeds = [{PIXEL_VALUES: rng.standard_normal((2, 3, size, size)).astype(np.float32)}]
    ids = rng.integers(1, 50, (2, exported.text_length)).astype(np.int64)
    text_feeds = [{INPUT_IDS: ids, ATTENTION_MASK: np.ones_like(ids)}]
    quantize_qdq_int8(exported.image_path, exported.variant(exported.image_path, 'qdq'), image_feeds)
    quantize_qdq_int8(exported.text_path, exported.variant(exported.text_path, 'qdq'), text_feeds)
    backend = create_backend(info, 'tensorrt', 'cuda', 'int8', cache, int8_min_cosine=0.0)
    assert backend.cache_key == _image_key(info, cache, 'int8', 'image_encoder.qdq.onnx').digest
    # the accuracy gate ran on the engine: quantized (below 1), and close to fp32 (2 random calibration batches)
    assert backend.int8_accuracy is not None and 0.5 < backend.int8_accuracy.worst < 0.9999
    image_network, text_network = trt.BUILT_NETWORKS
    assert image_network.strongly_typed and text_network.strongly_typed
    assert b'QuantizeLinear' in image_network.onnx and b'QuantizeLinear' in text_network.onnx


@pytest.fixture
def clip_reference(clip):
    info, cache = clip
    reference = OnnxRuntimeBackend(info, 'cpu', 'fp32', cache)
    yield reference
    reference.close()


@pytest.mark.parametrize('batch', [1, 3])
def test_encode_image_equals_onnxruntime(trt, clip, clip_reference, batch):
    info, cache = clip
    backend = TensorRTBackend(info, 'cuda', 'fp32', cache)
    pixels = np.random.default_rng(batch).standard_normal((batch, 3, info.image_size, info.image_size))
    ours = backend.encode_image(pixels.astype(np.float32))
    reference = clip_reference.encode_image(pixels.astype(np.float32))
    assert ours.patch_tokens.dtype == np.float32 and ours.patch_tokens.shape == reference.patch_tokens.shape
    np.testing.assert_allclose(ours.patch_tokens, reference.patch_tokens, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours.global_embedding, reference.global_embedding, rtol=1e-5, atol=1e-5)
    assert ours.grid_hw == reference.grid_hw
    assert trt.EXECUTIONS == [{PIXEL_VALUES: pixels.shape}]
    assert tensorrt_backend.DEVICE.calls['synchronize'] == 1


def _tokens(rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    ids = rng.integers(1, 50, (batch, length)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[:, length // 2:] = 0
    return ids, mask


@pytest.mark.parametrize('batch', [1, 3])
def test_encode_text_equals_onnxruntime(trt, clip, clip_reference, batch):
    info, cache = clip
    backend = TensorRTBackend(info, 'cuda', 'fp32', cache)
    ids, mask = _tokens(np.random.default_rng(batch), batch, backend.text_length)
    ours = backend.encode_text(ids, mask)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, clip_reference.encode_text(ids, mask), rtol=1e-5, atol=1e-5)
    assert trt.EXECUTIONS == [{INPUT_IDS: ids.shape, ATTENTION_MASK: ids.shape}]


def test_batches_beyond_the_optimization_profile_run_in_chunks(trt, clip, clip_reference):
    """
    Batches beyond the optimization profile run in chunks, not into a refused shape.

    The image profile runs up to 4 frames (one per camera in batch mode) and the text profile 64 texts, while a
    vocabulary is encoded 128 texts at a time.
    """
    info, cache = clip
    backend = TensorRTBackend(info, 'cuda', 'fp32', cache)
    rng = np.random.default_rng(0)
    pixels = rng.standard_normal((6, 3, info.image_size, info.image_size)).astype(np.float32)
    np.testing.assert_allclose(backend.encode_image(pixels).patch_tokens,
                               clip_reference.encode_image(pixels).patch_tokens, rtol=1e-5, atol=1e-5)
    ids, mask = _tokens(rng, 70, backend.text_length)
    np.testing.assert_allclose(backend.encode_text(ids, mask), clip_reference.encode_text(ids, mask),
                               rtol=1e-5, atol=1e-5)
    assert [shapes[PIXEL_VALUES][0] for shapes in trt.EXECUTIONS[:2]] == [4, 2]
    assert [shapes[INPUT_IDS][0] for shapes in trt.EXECUTIONS[2:]] == [64, 6]


def test_non_contiguous_inputs_are_made_dense(trt, clip, clip_reference):
    info, cache = clip
    backend = TensorRTBackend(info, 'cuda', 'fp32', cache)
    ids, mask = _tokens(np.random.default_rng(1), 3, backend.text_length)
    fortran_ids, fortran_mask = np.asfortranarray(ids), np.asfortranarray(mask)
    np.testing.assert_allclose(backend.encode_text(fortran_ids, fortran_mask), clip_reference.encode_text(ids, mask),
                               rtol=1e-5, atol=1e-5)
    pixels = np.random.default_rng(2).standard_normal((2, info.image_size, info.image_size, 3)).astype(np.float32)
    channels_first = pixels.transpose(0, 3, 1, 2)  # a strided view
    np.testing.assert_allclose(backend.encode_image(channels_first).global_embedding,
                               clip_reference.encode_image(channels_first).global_embedding, rtol=1e-5, atol=1e-5)


def test_shapes_the_engine_does_not_run_are_clear_errors(trt, clip):
    info, cache = clip
    backend = TensorRTBackend(info, 'cuda', 'fp32', cache)
    size, length = info.image_size, backend.text_length
    with pytest.raises(BackendUnavailableError, match=f'takes {size}x{size} inputs; got 32x32'):
        backend.encode_image(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(BackendUnavailableError, match=rf'refused input_ids of shape \(1, {length + 1}\) '
                                                      rf'\(its profile runs \(1, {length}\) to \(64, {length}\)\)'):
        backend.encode_text(np.ones((1, length + 1), np.int64), np.ones((1, length + 1), np.int64))
    assert trt.CALLS['execute'] == 0


def test_vit_has_an_image_engine_only(trt, tiny_vit_dir, model_cache, tmp_path):
    info = read_model_info(str(tiny_vit_dir))
    cache = _private_cache(tiny_vit_dir, model_cache, tmp_path)
    backend = TensorRTBackend(info, 'cuda', 'fp32', cache)
    assert trt.CALLS['build'] == 1 and backend.text_engine is None
    pixels = np.random.default_rng(0).standard_normal((2, 3, info.image_size, info.image_size)).astype(np.float32)
    reference = OnnxRuntimeBackend(info, 'cpu', 'fp32', cache).encode_image(pixels)
    np.testing.assert_allclose(backend.encode_image(pixels).global_embedding, reference.global_embedding,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(BackendUnavailableError, match='has no text encoder'):
        backend.encode_text(np.ones((1, 4), np.int64), np.ones((1, 4), np.int64))
    backend.close()
    assert tensorrt_backend.DEVICE.calls['empty_cache'] == 1 and backend.image_engine is None


def test_create_backend_and_auto_load_tensorrt_on_cuda(trt, clip):
    info, cache = clip
    assert isinstance(create_backend(info, 'tensorrt', 'cuda', 'fp16', cache), TensorRTBackend)
    assert isinstance(create_backend(info, 'auto', 'cuda', 'fp32', cache), TensorRTBackend)


@pytest.mark.parametrize('device,precision', [('cpu', 'fp32'), ('cpu', 'int8'), ('cuda', 'bf16')])
def test_combinations_outside_the_capability_table_are_rejected_with_its_reason(trt, clip, device, precision):
    info, cache = clip
    reason = check_combination('tensorrt', device, precision)
    assert reason is not None
    for load in (lambda: create_backend(info, 'tensorrt', device, precision, cache),
                 lambda: TensorRTBackend(info, device, precision, cache)):
        with pytest.raises(BackendUnavailableError) as error:
            load()
        # The constructor states the first clause; the registry adds which other backends run the precision.
        assert reason.startswith(str(error.value))
    assert trt.CALLS['build'] == 0 and trt.CALLS['parse'] == 0
    assert dataclasses.asdict(tensorrt_backend.CAPABILITIES)['precisions'] == (('cuda', ('fp32', 'fp16', 'int8')),)


def test_export_cli_builds_the_engine_from_the_files_it_wrote(trt, tiny_clip_dir, tmp_path, capsys):
    """
    `robovision_export --int8-qdq --tensorrt int8` builds from the Q/DQ files it just wrote into --out.

    It used to export the model a second time under --out/onnx/ and then miss the Q/DQ files there.
    """
    from robovision_ros.tools.export_cli import main

    out = tmp_path / 'export'
    assert main([str(tiny_clip_dir), '--out', str(out), '--int8-qdq', '--tensorrt', 'int8']) == 0, \
        capsys.readouterr().err
    key = _image_key(read_model_info(str(tiny_clip_dir)), out, 'int8', 'image_encoder.qdq.onnx', export_dir=out)
    assert f'TensorRT engine ready, key {key.digest}' in capsys.readouterr().out
    assert EngineCache(out / 'tensorrt').load(key, 'image_encoder') is not None
    assert not (out / 'onnx').exists() and trt.CALLS['build'] == 2


@pytest.mark.parametrize('kind', ['siglip', 'dinov2', 'dinov2_with_registers', 'dinov3_vit'])
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_every_family_builds_and_runs_its_engines(trt, kind, precision, tiny_siglip_dir, tiny_dino_dirs, model_cache,
                                                  tmp_path):
    """Each family's export through the engine path: keys naming the family, text engine for SigLIP, its bias."""
    model_dir = tiny_siglip_dir if kind == 'siglip' else tiny_dino_dirs[kind]
    info = read_model_info(str(model_dir))
    cache = _private_cache(model_dir, model_cache, tmp_path)
    backend = TensorRTBackend(info, 'cuda', precision, cache)
    onnx_name = 'image_encoder.onnx' if precision == 'fp32' else f'image_encoder.{precision}.onnx'
    assert backend.cache_key == _image_key(info, cache, precision, onnx_name).digest
    assert _stored_key(cache, backend.cache_key)['family'] == info.family
    assert trt.CALLS['build'] == (2 if info.has_text else 1) and (backend.text_engine is not None) == info.has_text
    assert (backend.logit_bias, backend.logit_scale) == ((-10.0, 10.0) if info.has_text else (0.0, 1.0))
    pixels = np.random.default_rng(0).standard_normal((2, 3, info.image_size, info.image_size)).astype(np.float32)
    reference = OnnxRuntimeBackend(info, 'cpu', 'fp32', cache)
    ours, theirs = backend.encode_image(pixels), reference.encode_image(pixels)
    assert ours.patch_tokens.shape == theirs.patch_tokens.shape == (2, 64, info.patch_dim)
    # The double runs the fp32 file in ONNX Runtime (equal to rounding) and the fp16 file with fp16 weights and
    # math: held to a cosine, as reduced precision is.
    if precision == 'fp32':
        np.testing.assert_allclose(ours.global_embedding, theirs.global_embedding, rtol=1e-5, atol=1e-5)
    else:
        cosine = (ours.global_embedding * theirs.global_embedding).sum(1) / (
            np.linalg.norm(ours.global_embedding, axis=1) * np.linalg.norm(theirs.global_embedding, axis=1))
        assert cosine.min() > 0.99
    reference.close()
    backend.close()


def _stored_key(cache: Path, digest: str) -> dict:
    """Return the key sidecar of the image engine stored under `digest` in `cache`."""
    import json

    (sidecar,) = (cache / 'tensorrt').glob(f'image_encoder.*.{digest}.json')
    return json.loads(sidecar.read_text())
