# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Encoder engine on tiny models: loading, backend parity, precisions, vocabulary cache, multi-scale."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import structured_images
from robovision_ros.backends.accuracy_gate import Int8AccuracyError, probe_images
from robovision_ros.backends.base import DEVICES, INT8_DYNAMIC, INT8_STATIC_NNCF, INT8_STATIC_QDQ, PRECISIONS, \
    BackendUnavailableError
from robovision_ros.backends.registry import backend_capabilities, backend_choices, check_combination, \
    choose_backend, create_backend
from robovision_ros.encoder import PerceptionEncoder
from robovision_ros.model_dir import ModelLoadError, read_model_info
from robovision_ros.backends.onnx_export import INT8_RECIPE, cached_export, int8_recipe, precision_variant
from robovision_ros.vocabulary import VocabularyError


def _cosine(a, b):
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _global_cosine(encoder, reference, images):
    """Per-image cosine between the global embeddings of `encoder` and of `reference`."""
    ours, _ = encoder.encode_images(images)
    theirs, _ = reference.encode_images(images)
    return _cosine(np.stack([f.global_embedding for f in ours]), np.stack([f.global_embedding for f in theirs]))


@pytest.fixture(scope='module')
def torch_clip(tiny_clip_dir, model_cache):
    encoder = PerceptionEncoder(str(tiny_clip_dir), 'torch', 'cpu', 'fp32', model_cache)
    yield encoder
    encoder.close()


def test_model_info_comes_from_the_directory(tiny_clip_dir, tiny_vit_dir):
    clip = read_model_info(str(tiny_clip_dir))
    vit = read_model_info(str(tiny_vit_dir))
    assert (clip.model_type, clip.image_size, clip.patch_size, clip.patch_dim) == ('clip', 64, 8, 64)
    assert (vit.model_type, vit.has_text) == ('vit', False)


def test_missing_models_fail_naming_the_path_or_id(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match=str(tmp_path / 'nope')):
        read_model_info(str(tmp_path / 'nope'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(ModelLoadError, match="'openai/clip-vit-base-patch32'"):
        read_model_info('openai/clip-vit-base-patch32')
    with pytest.raises(ModelLoadError, match="embedded model 'nothing'"):
        read_model_info('embedded:nothing')


def test_patch_features_shapes_and_grid(tiny_vit_dir, model_cache):
    encoder = PerceptionEncoder(str(tiny_vit_dir), 'torch', 'cpu', 'fp32', model_cache)
    features, timing = encoder.encode_images(structured_images(2), normalize=True)
    assert len(features) == 2
    assert features[0].grid_hw == (8, 8) and features[0].patch_tokens.shape == (64, 64)
    assert features[0].grid.shape == (8, 8, 64)
    np.testing.assert_allclose(np.linalg.norm(features[0].patch_tokens, axis=1), 1.0, rtol=1e-5)
    assert timing.inference_ms > 0
    with pytest.raises(BackendUnavailableError, match='no text'):
        encoder.encode_texts(['x'])


def test_multi_scale_reports_each_grid(tiny_vit_dir, model_cache):
    encoder = PerceptionEncoder(str(tiny_vit_dir), 'torch', 'cpu', 'fp32', model_cache)
    image = structured_images(1)[0]
    grids = {scale: encoder.encode_images([image], scale=scale)[0][0].grid_hw for scale in (0.5, 1.0, 1.5)}
    assert grids == {0.5: (4, 4), 1.0: (8, 8), 1.5: (12, 12)}


def test_torch_matches_hf_clip_reference(torch_clip, tiny_clip_dir):
    """Our global embedding is HF's image feature; our text embedding is HF's text feature."""
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(tiny_clip_dir)).eval()
    images = structured_images(2)
    features, _ = torch_clip.encode_images(images)
    pixels = torch_clip.preprocessor(images)
    with torch.inference_mode():
        vision = model.vision_model(pixel_values=torch.from_numpy(pixels))
        reference = model.visual_projection(vision.pooler_output).numpy()
        tokens = torch_clip.tokenizer(['a red cup'], padding='max_length', max_length=16, return_tensors='pt')
        text_reference = model.text_projection(model.text_model(**tokens).pooler_output).numpy()
    np.testing.assert_allclose(np.stack([f.global_embedding for f in features]), reference, atol=1e-5)
    np.testing.assert_allclose(torch_clip.encode_texts(['a red cup']), text_reference, atol=1e-5)


def test_onnxruntime_fp32_parity_with_torch(torch_clip, tiny_clip_dir, model_cache):
    ort_clip = PerceptionEncoder(str(tiny_clip_dir), 'onnxruntime', 'cpu', 'fp32', model_cache)
    images = structured_images(3)
    ours, _ = ort_clip.encode_images(images)
    reference, _ = torch_clip.encode_images(images)
    for a, b in zip(ours, reference):
        assert np.abs(a.patch_tokens - b.patch_tokens).max() <= 1e-4
        assert np.abs(a.global_embedding - b.global_embedding).max() <= 1e-4
    texts = ['a photo of a red cup', 'blue bottle', 'a green ball on a white plate']
    assert np.abs(ort_clip.encode_texts(texts) - torch_clip.encode_texts(texts)).max() <= 1e-4
    assert ort_clip.logit_scale == pytest.approx(torch_clip.logit_scale)


def test_onnxruntime_int8_cosine_on_structured_images(torch_clip, tiny_clip_dir, model_cache):
    int8 = PerceptionEncoder(str(tiny_clip_dir), 'onnxruntime', 'cpu', 'int8', model_cache)
    cosine = _global_cosine(int8, torch_clip, structured_images(8, seed=3))
    assert cosine.min() >= 0.99, cosine
    texts = ['a photo of a red cup', 'a yellow box']
    assert _cosine(int8.encode_texts(texts), torch_clip.encode_texts(texts)).min() >= 0.99


def test_int8_runs_the_text_tower_in_fp32(tiny_clip_dir, model_cache):
    """int8 quantizes the per-frame image tower only; the text tower (run per vocabulary change) stays fp32."""
    int8 = PerceptionEncoder(str(tiny_clip_dir), 'onnxruntime', 'cpu', 'int8', model_cache)
    fp32 = PerceptionEncoder(str(tiny_clip_dir), 'onnxruntime', 'cpu', 'fp32', model_cache)
    texts = ['a photo of a red cup', 'a yellow box']
    np.testing.assert_allclose(int8.encode_texts(texts), fp32.encode_texts(texts), atol=1e-6)
    exported = cached_export(int8.info, model_cache)
    assert exported.variant(exported.image_path, 'int8').is_file()
    assert not exported.variant(exported.text_path, 'int8').is_file()


def test_int8_image_weights_cannot_saturate_x86_u8s8_kernels(tiny_clip_dir, model_cache):
    """
    Check that the int8 image weights cannot saturate x86 U8S8 kernels.

    Without VNNI, x86 U8S8 kernels add pairs of uint8 x int8 products in a saturating int16 (VPMADDUBSW). The
    7-bit weights of the int8 recipe keep every pair within int16, so no x86 CPU saturates.
    """
    import onnx
    from onnx import numpy_helper

    exported = cached_export(read_model_info(str(tiny_clip_dir)), model_cache)
    path = precision_variant(exported, exported.image_path, 'int8')
    assert int8_recipe(path) == INT8_RECIPE
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer
               if t.data_type == onnx.TensorProto.INT8]
    assert len(weights) >= 10
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert largest <= 64 and 2 * 255 * largest <= np.iinfo(np.int16).max


def test_an_int8_file_of_an_old_recipe_is_remade(tiny_clip_dir, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exported = cached_export(read_model_info(str(tiny_clip_dir)), tmp_path)
    old = exported.variant(exported.image_path, 'int8')
    quantize_dynamic(str(exported.image_path), str(old), weight_type=QuantType.QInt8, per_channel=True)  # old recipe
    assert int8_recipe(old) is None
    assert precision_variant(exported, exported.image_path, 'int8') == old
    assert int8_recipe(old) == INT8_RECIPE


_AVX2_CHILD = """
import sys
import numpy as np
import onnxruntime as ort
pixels = np.load(sys.argv[1])
for path, out in zip(sys.argv[2::2], sys.argv[3::2]):
    session = ort.InferenceSession(path, providers=['CPUExecutionProvider'])
    np.save(out, session.run(None, {'pixel_values': pixels})[1])
"""


@pytest.mark.skipif(shutil.which('qemu-x86_64') is None or platform.machine() != 'x86_64',
                    reason='needs qemu-user (apt install qemu-user) on x86-64 to emulate an AVX2-only CPU')
def test_int8_is_the_same_on_an_avx2_only_cpu(tiny_clip_dir, model_cache, tmp_path):
    """
    Check that int8 gives the same numbers on an AVX2-only CPU.

    ONNX Runtime has no option to force its non-VNNI int8 kernels, so the int8 image encoder runs under QEMU
    emulating a Haswell CPU (AVX2, no AVX-512, no VNNI): ONNX Runtime's CPU dispatch then picks the AVX2 U8S8
    kernels, as on an AVX2-only EPYC. Our recipe gives the same numbers there as here; a full-range 8-bit recipe
    (the old one) does not, where this host has VNNI.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig

    exported = cached_export(read_model_info(str(tiny_clip_dir)), model_cache)
    recipe = precision_variant(exported, exported.image_path, 'int8')
    full_range = tmp_path / 'full_range.int8.onnx'
    quantize_dynamic(str(exported.image_path), str(full_range), weight_type=QuantType.QInt8, per_channel=True)
    pixels = ImagePreprocessor(PreprocessConfig.from_model_dir(tiny_clip_dir))(structured_images(8, seed=3))
    np.save(tmp_path / 'pixels.npy', pixels)

    def native(path):
        return ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(
            None, {'pixel_values': pixels})[1]

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    subprocess.run(['qemu-x86_64', '-cpu', 'Haswell', sys.executable, '-c', _AVX2_CHILD, str(tmp_path / 'pixels.npy'),
                    str(recipe), str(tmp_path / 'recipe.npy'), str(full_range), str(tmp_path / 'full_range.npy')],
                   check=True, env=env, timeout=600, stderr=subprocess.DEVNULL)
    avx2 = np.load(tmp_path / 'recipe.npy')
    fp32 = native(exported.image_path)
    # Exact integer sums on both CPUs: only float rounding may differ.
    np.testing.assert_allclose(avx2, native(recipe), atol=1e-5)
    assert _cosine(avx2, fp32).min() >= 0.99
    flags = open('/proc/cpuinfo').read() if os.path.exists('/proc/cpuinfo') else ''
    if 'avx512_vnni' in flags or 'avx_vnni' in flags:  # control: the emulated CPU really ran non-VNNI kernels
        assert np.abs(np.load(tmp_path / 'full_range.npy') - native(full_range)).max() > 1e-3


def test_int8_gate_passes_on_the_tiny_model(tiny_clip_dir, model_cache):
    int8 = PerceptionEncoder(str(tiny_clip_dir), 'onnxruntime', 'cpu', 'int8', model_cache, int8_min_cosine=0.99)
    accuracy = int8.backend.int8_accuracy
    assert accuracy is not None and 0.99 <= accuracy.worst < 1.0
    assert accuracy.worst == min(accuracy.cosine('global_embedding'), accuracy.cosine('patch_tokens'))
    fp32 = PerceptionEncoder(str(tiny_clip_dir), 'onnxruntime', 'cpu', 'fp32', model_cache)
    assert fp32.backend.int8_accuracy is None


def test_int8_gate_fails_above_the_measured_cosine(tiny_clip_dir, model_cache):
    with pytest.raises(Int8AccuracyError, match=r'cosine 0\.9\d{3} .* below int8_min_cosine 1\.0; use precision fp32'):
        create_backend(read_model_info(str(tiny_clip_dir)), 'onnxruntime', 'cpu', 'int8', model_cache,
                       int8_min_cosine=1.0)
    with pytest.raises(ValueError, match='int8_min_cosine must be in'):
        create_backend(read_model_info(str(tiny_clip_dir)), 'onnxruntime', 'cpu', 'int8', model_cache,
                       int8_min_cosine=1.5)


def test_a_corrupted_int8_engine_fails_the_gate(tiny_clip_dir, model_cache, tmp_path):
    """Shuffled int8 weights in a cached int8 file of the current recipe: loading it fails, naming the cosine."""
    import onnx
    from onnx import numpy_helper

    info = read_model_info(str(tiny_clip_dir))
    precision_variant(cached_export(info, model_cache), cached_export(info, model_cache).image_path, 'int8')
    shutil.copytree(model_cache / 'onnx', tmp_path / 'onnx')
    exported = cached_export(info, tmp_path)
    path = exported.variant(exported.image_path, 'int8')
    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.INT8 and tensor.name.endswith('_quantized'):
            weights = numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array(rng.permutation(weights.ravel()).reshape(weights.shape),
                                                    tensor.name))
    onnx.save(model, str(path))
    assert int8_recipe(path) == INT8_RECIPE  # reused as is: only the gate can catch it
    with pytest.raises(Int8AccuracyError, match=r'cosine -?0\.\d{4} .* below int8_min_cosine 0\.99'):
        create_backend(info, 'onnxruntime', 'cpu', 'int8', tmp_path)


def test_probe_images_are_deterministic_structured_cards():
    first, second = probe_images(64), probe_images(64)
    assert len(first) >= 4 and all(a.shape == (64, 64, 3) and a.dtype == np.uint8 for a in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))  # uint8, the same code twice: exact
    # structured, not noise: few colours, and most vertical neighbours are equal (the gradient runs along x)
    assert all((a[1:] == a[:-1]).all(axis=-1).mean() > 0.7 for a in first)
    assert all(len(np.unique(a.reshape(-1, 3), axis=0)) < 500 for a in first)


def test_torch_bf16_on_cpu_is_close(torch_clip, tiny_clip_dir, model_cache):
    bf16 = PerceptionEncoder(str(tiny_clip_dir), 'torch', 'cpu', 'bf16', model_cache)
    cosine = _global_cosine(bf16, torch_clip, structured_images(4, seed=5))
    assert cosine.min() >= 0.99, cosine


@pytest.mark.parametrize('backend,device,precision,message', [
    ('torch', 'cpu', 'int8', 'use onnxruntime or openvino or tensorrt for int8'),
    ('torch', 'cpu', 'fp16', 'fp16 needs device cuda'),
    ('onnxruntime', 'cpu', 'fp16', "not 'fp16'"),
    ('tensorrt', 'cpu', 'fp16', 'needs device cuda'),
    ('torch', 'gpu', 'fp32', "device 'gpu' not supported"),
    ('torch', 'cpu', 'fp64', "precision 'fp64' not supported"),
])
def test_unavailable_combinations_fail_at_load(tiny_clip_dir, model_cache, backend, device, precision, message):
    with pytest.raises(BackendUnavailableError, match=message):
        create_backend(read_model_info(str(tiny_clip_dir)), backend, device, precision, model_cache)


def test_cuda_without_gpu_is_an_error_not_a_fallback(tiny_clip_dir, model_cache):
    import torch

    if torch.cuda.is_available():
        pytest.skip('a CUDA GPU is present')
    for backend in ('torch', 'onnxruntime', 'auto'):
        with pytest.raises(BackendUnavailableError, match='cuda'):
            create_backend(read_model_info(str(tiny_clip_dir)), backend, 'cuda', 'fp32', model_cache)


def test_auto_choice(monkeypatch):
    import importlib.util

    # int8: OpenVINO where installed, measured fastest there (its capabilities' auto_basis says where); fp32 and bf16
    # stay with onnxruntime and torch (OpenVINO's f32 kernels measured slower; bf16 needs CPU support).
    assert choose_backend('cpu', 'int8') == 'openvino'
    assert choose_backend('cpu', 'fp32') == 'onnxruntime'
    assert choose_backend('cpu', 'bf16') == 'torch'
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'openvino' else find_spec(name))
    assert choose_backend('cpu', 'fp32') == 'onnxruntime'
    assert choose_backend('cpu', 'int8') == 'onnxruntime'
    assert choose_backend('cpu', 'bf16') == 'torch'


def test_auto_logs_which_backend_and_why(tiny_clip_dir, model_cache, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger='robovision_ros.backends.registry'):
        create_backend(read_model_info(str(tiny_clip_dir)), 'auto', 'cpu', 'int8', model_cache).close()
    line = next(r.getMessage() for r in caplog.records if 'backend auto ->' in r.getMessage())
    assert line.startswith('backend auto -> openvino (device cpu, precision int8): int8 on CPU: OpenVINO'), line
    assert 'measured faster' in line


def _construct(info, backend, device, precision, cache_dir):
    """Call the backend's own constructor (no auto, no accuracy gate)."""
    if backend == 'torch':
        from robovision_ros.backends.torch_backend import TorchBackend

        return TorchBackend(info, device, precision)
    if backend == 'onnxruntime':
        from robovision_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(info, device, precision, cache_dir)
    if backend == 'openvino':
        from robovision_ros.backends.openvino_backend import OpenVinoBackend

        return OpenVinoBackend(info, device, precision, cache_dir)
    if backend == 'triton':
        from robovision_ros.backends.triton_backend import TritonBackend, TritonTarget

        return TritonBackend(info, device, precision, TritonTarget(UNREACHABLE_TRITON, timeout_ms=2000))
    from robovision_ros.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(info, device, precision, cache_dir)


UNREACHABLE_TRITON = '127.0.0.1:1'  # nothing listens on port 1: a connection is refused at once


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('device', DEVICES)
@pytest.mark.parametrize('backend', backend_choices())
def test_capability_matrix_check_and_constructors_agree(tiny_clip_dir, model_cache, backend, device, precision):
    """
    Check that check_combination and loading agree on every backend x device x precision.

    Each combination is accepted by both, or rejected by both for the same reason (a constructor states the first
    clause; the registry adds which other backends run the precision). Accepted on cuda without a GPU, loading fails
    for that reason only.
    """
    import torch

    info = read_model_info(str(tiny_clip_dir))
    reason = check_combination(backend, device, precision)

    def load():
        if backend == 'auto':
            return create_backend(info, backend, device, precision, model_cache, int8_min_cosine=None)
        return _construct(info, backend, device, precision, model_cache)

    if reason is not None:
        with pytest.raises(BackendUnavailableError) as error:
            load()
        assert reason.startswith(str(error.value)), (str(error.value), reason)
    elif backend == 'triton':  # accepted: loading goes as far as the server, which is not there
        with pytest.raises(BackendUnavailableError, match=f'Triton server {UNREACHABLE_TRITON}: unreachable'):
            load()
    elif device == 'cpu' or torch.cuda.is_available():
        load().close()
    else:
        with pytest.raises(BackendUnavailableError, match='cuda|GPU') as error:
            load()
        assert 'not supported' not in str(error.value) and ', not ' not in str(error.value)


@pytest.mark.parametrize('backend,device,precision', [('torch', 'gpu', 'fp32'), ('torch', 'cpu', 'fp64'),
                                                      ('jax', 'cpu', 'fp32')])
def test_unknown_names_are_rejected_the_same_way(tiny_clip_dir, model_cache, backend, device, precision):
    reason = check_combination(backend, device, precision)
    assert reason is not None and 'not supported; supported:' in reason
    with pytest.raises(BackendUnavailableError) as error:
        create_backend(read_model_info(str(tiny_clip_dir)), backend, device, precision, model_cache)
    assert str(error.value) == reason


def test_auto_picks_only_a_backend_that_runs_the_combination(monkeypatch):
    import importlib.util

    assert choose_backend('cpu', 'int8') == 'openvino'
    assert choose_backend('cuda', 'bf16') == 'torch'  # TensorRT does not run bf16, installed or not
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name, *a: None if name == 'tensorrt' else find_spec(name))
    with pytest.raises(BackendUnavailableError, match='no installed backend runs int8 on cuda; tensorrt would'):
        choose_backend('cuda', 'int8')  # was: torch, which rejects int8
    assert choose_backend('cuda', 'fp16') == 'torch'
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: object() if name == 'tensorrt' else find_spec(name))
    assert choose_backend('cuda', 'int8') == 'tensorrt'
    assert check_combination('auto', 'cuda', 'int8') is None
    with pytest.raises(BackendUnavailableError, match=r'no backend runs fp16 on cpu \(.*torch runs fp32, bf16'):
        choose_backend('cpu', 'fp16')


def test_capabilities_are_declared_without_importing_frameworks():
    code = ('import sys\n'
            'from robovision_ros.backends.registry import backend_capabilities, check_combination\n'
            'table = backend_capabilities()\n'
            'check_combination("torch", "cpu", "int8")\n'
            'assert set(table) == {"torch", "onnxruntime", "openvino", "tensorrt", "triton"}, list(table)\n'
            'assert list(table)[-1] == "triton", list(table)  # remote backends last\n'
            'print(sorted(m for m in ("torch", "onnxruntime", "openvino", "nncf", "tensorrt", "tritonclient")\n'
            '             if m in sys.modules))\n')
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == '[]'


def test_capabilities_describe_each_backend():
    table = backend_capabilities()
    assert table['onnxruntime'].int8 == INT8_DYNAMIC and table['onnxruntime'].runs('cpu', 'int8')
    assert table['tensorrt'].int8 == INT8_STATIC_QDQ and table['tensorrt'].devices == ('cuda',)
    assert table['torch'].int8 == '' and not any(table['torch'].runs(d, 'int8') for d in DEVICES)
    assert table['torch'].cuda_graphs and table['torch'].device_tensors and not table['torch'].fixed_input_size
    assert table['onnxruntime'].fixed_input_size and not table['onnxruntime'].device_tensors
    assert table['openvino'].int8 == INT8_STATIC_NNCF and table['openvino'].devices == ('cpu',)
    assert table['openvino'].fixed_input_size and not table['openvino'].cuda_graphs
    assert table['triton'].remote and table['triton'].devices == ('cpu',) and not table['onnxruntime'].remote
    assert all(not c.remote for c in table.values() if c.name != 'triton')


def test_vocabulary_change_encodes_only_new_labels(torch_clip):
    templates = ['a photo of a {}.', 'a {} on a table']
    first = torch_clip.build_vocabulary(['red cup', 'blue bottle', 'green ball'], templates, 1)
    encoded = torch_clip.vocabulary.texts_encoded
    second = torch_clip.build_vocabulary(['red cup', 'blue bottle', 'white plate'], templates, 2)
    assert torch_clip.vocabulary.texts_encoded - encoded == len(templates)  # only 'white plate'
    # Exact: both rows come from the same cached text embeddings through the same mean and normalisation.
    np.testing.assert_array_equal(first.embeddings[:2], second.embeddings[:2])
    assert second.labels == ('red cup', 'blue bottle', 'white plate') and second.version == 2
    np.testing.assert_allclose(np.linalg.norm(second.embeddings, axis=1), 1.0, rtol=1e-5)


def test_vocabulary_validation(torch_clip):
    for labels, message in (([], 'must not be empty'), (['a', 'a'], 'unique'), (['a', '  '], 'blank'),
                            (['x' * 200], 'longer than')):
        with pytest.raises(VocabularyError, match=message):
            torch_clip.build_vocabulary(labels, ['a {}'], 1)
    with pytest.raises(VocabularyError, match="exactly one '{}'"):
        torch_clip.build_vocabulary(['cup'], ['a photo'], 1)


def test_zero_shot_scores_are_probabilities(torch_clip):
    vocabulary = torch_clip.build_vocabulary(['red cup', 'blue bottle', 'green ball'], ['a photo of a {}.'], 1)
    features, _ = torch_clip.encode_images(structured_images(2))
    probs = torch_clip.zero_shot(np.stack([f.global_embedding for f in features]), vocabulary)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    similarities = torch_clip.similarities(features[0].global_embedding, vocabulary)
    assert np.all(np.abs(similarities) <= 1.0 + 1e-6)
    # softmax of logit_scale * cosine, in the same order as the similarities: the most similar label has the
    # highest probability, up to float32 rounding of exp (a near tie may round either way; not an exact argmax).
    assert probs[0][np.argmax(similarities[0])] >= probs[0].max() * (1 - 1e-6)


@pytest.mark.skipif(os.environ.get('ROBOVISION_TENSORRT_TESTS') != '1',
                    reason='TensorRT tests need tensorrt and a CUDA GPU; set ROBOVISION_TENSORRT_TESTS=1 there')
def test_tensorrt_parity_with_torch(torch_clip, tiny_clip_dir, model_cache):
    trt = PerceptionEncoder(str(tiny_clip_dir), 'tensorrt', 'cuda', 'fp32', model_cache)
    images = structured_images(2)
    ours, _ = trt.encode_images(images)
    reference, _ = torch_clip.encode_images(images)
    assert np.abs(ours[0].global_embedding - reference[0].global_embedding).max() <= 1e-3


def test_warm_up_measures_each_batch_size(tiny_clip_dir, model_cache):
    """warm_up returns the model's time per frame at each batch size it ran (the node's batching choice reads it)."""
    encoder = PerceptionEncoder(str(tiny_clip_dir), 'onnxruntime', 'cpu', 'fp32', model_cache)
    per_frame = encoder.warm_up(iterations=2, batch_sizes=(1, 3))
    assert set(per_frame) == {1, 3} and all(value > 0 for value in per_frame.values())
    encoder.close()


def test_a_batch_is_preprocessed_on_threads_as_one_at_a_time(tiny_clip_dir):
    from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig

    preprocess = ImagePreprocessor(PreprocessConfig.from_model_dir(tiny_clip_dir))
    images = structured_images(5, seed=13)
    batched = preprocess(images)
    # The same function on the same pixels, only on a worker thread: identical results on any CPU.
    np.testing.assert_array_equal(batched, np.concatenate([preprocess([image]) for image in images]))


def test_onnxruntime_int8_gate_stores_its_fp32_reference_for_the_next_configure(tiny_clip_dir, tmp_path, monkeypatch):
    """The first int8 gate stores the fp32 outputs on the probes; the next configure loads no fp32 session."""
    from robovision_ros.backends.onnxruntime_backend import REFERENCE_SUFFIX, OnnxRuntimeBackend

    info = read_model_info(str(tiny_clip_dir))
    first = create_backend(info, 'onnxruntime', 'cpu', 'int8', tmp_path)
    exported = cached_export(info, tmp_path)
    assert exported.variant(exported.image_path, 'int8').with_suffix(REFERENCE_SUFFIX).is_file()
    original_init = OnnxRuntimeBackend.__init__

    def no_fp32(self, info, device, precision, *args, **kwargs):
        assert precision != 'fp32', 'the gate loaded an fp32 session'
        original_init(self, info, device, precision, *args, **kwargs)

    monkeypatch.setattr(OnnxRuntimeBackend, '__init__', no_fp32)
    second = create_backend(info, 'onnxruntime', 'cpu', 'int8', tmp_path)
    # The same int8 file and kernels compared with the same fp32 outputs (stored, then loaded): equal cosines.
    assert second.int8_accuracy.worst == pytest.approx(first.int8_accuracy.worst, abs=1e-6)
    first.close()
    second.close()
