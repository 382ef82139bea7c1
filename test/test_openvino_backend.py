# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The OpenVINO backend on tiny models: parity with torch, bf16, the NNCF int8 gate, the IR cache, GPU/NPU doubles."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import structured_images
from robovision_ros.backends import openvino_backend
from robovision_ros.backends.accuracy_gate import Int8AccuracyError, probe_images
from robovision_ros.backends.base import INT8_STATIC_NNCF, BackendUnavailableError
from robovision_ros.backends.onnx_export import PARTIAL_PREFIX
from robovision_ros.backends.openvino_backend import INT8_RECIPE, OpenVinoBackend, image_int8_recipe, ir_for, \
    openvino_root
from robovision_ros.backends.registry import backend_capabilities, create_backend
from robovision_ros.encoder import PerceptionEncoder
from robovision_ros.model_dir import read_model_info
from robovision_ros.parameters import ParameterError
from robovision_ros.settings import clip_table

pytest.importorskip('openvino')
pytest.importorskip('nncf')


def _cosine(a, b):
    a = a.reshape(len(a), -1)
    b = b.reshape(len(b), -1)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope='module', params=['embedded', 'random'])
def model(request, tiny_clip_dir):
    return 'embedded:tiny_clip' if request.param == 'embedded' else str(tiny_clip_dir)


@pytest.fixture(scope='module')
def torch_reference(model, model_cache):
    encoder = PerceptionEncoder(model, 'torch', 'cpu', 'fp32', model_cache)
    yield encoder
    encoder.close()


def test_fp32_parity_with_torch(model, torch_reference, model_cache):
    """
    Compare OpenVINO fp32 (inference precision f32, set explicitly) with torch fp32 on images and texts.

    Both compute in fp32 with different kernels and summation orders; on any x86 CPU (AVX2, AVX-512, AMX) that
    differs by rounding only, far below 1e-4 relative to the outputs' scale. bf16 would be ~1e-2: the explicit f32
    hint is what this checks.
    """
    ours = PerceptionEncoder(model, 'openvino', 'cpu', 'fp32', model_cache)
    images = structured_images(4, seed=5)
    mine, _ = ours.encode_images(images)
    theirs, _ = torch_reference.encode_images(images)
    for a, b in zip(mine, theirs):
        scale = np.abs(b.patch_tokens).max()
        np.testing.assert_allclose(a.patch_tokens, b.patch_tokens, atol=1e-4 * scale)
        np.testing.assert_allclose(a.global_embedding, b.global_embedding, atol=1e-4 * np.abs(b.global_embedding).max())
    texts = ['a photo of a red cup.', 'blue bottle', 'a yellow box on a table']
    reference = torch_reference.encode_texts(texts)
    np.testing.assert_allclose(ours.encode_texts(texts), reference, atol=1e-4 * np.abs(reference).max())
    assert ours.logit_scale == pytest.approx(torch_reference.logit_scale, rel=1e-6)
    ours.close()


def test_bf16_runs_where_the_cpu_has_it(model, torch_reference, model_cache):
    import openvino as ov

    if not openvino_backend.cpu_has_bf16(ov.Core()):
        with pytest.raises(BackendUnavailableError, match='bf16 needs an OpenVINO CPU with native bf16'):
            PerceptionEncoder(model, 'openvino', 'cpu', 'bf16', model_cache)
        return
    ours = PerceptionEncoder(model, 'openvino', 'cpu', 'bf16', model_cache)
    images = structured_images(4, seed=6)
    # bf16 keeps 8 significant bits: embeddings stay within a cosine of 0.99 of fp32 on these small models.
    mine = np.stack([f.global_embedding for f in ours.encode_images(images)[0]])
    theirs = np.stack([f.global_embedding for f in torch_reference.encode_images(images)[0]])
    assert _cosine(mine, theirs).min() >= 0.99
    ours.close()


def test_bf16_is_refused_on_a_cpu_without_it(tiny_clip_dir, model_cache, monkeypatch):
    monkeypatch.setattr(openvino_backend, 'cpu_has_bf16', lambda core: False)
    with pytest.raises(BackendUnavailableError, match=r'bf16 needs .* this CPU has none .*; use fp32 or int8'):
        create_backend(read_model_info(str(tiny_clip_dir)), 'openvino', 'cpu', 'bf16', model_cache)


def test_int8_passes_the_gate_and_stays_close_to_torch(model, torch_reference, model_cache):
    int8 = PerceptionEncoder(model, 'openvino', 'cpu', 'int8', model_cache, int8_min_cosine=0.99)
    accuracy = int8.backend.int8_accuracy
    assert accuracy is not None and 0.99 <= accuracy.worst < 1.0
    images = structured_images(6, seed=7)
    mine = np.stack([f.global_embedding for f in int8.encode_images(images)[0]])
    theirs = np.stack([f.global_embedding for f in torch_reference.encode_images(images)[0]])
    assert _cosine(mine, theirs).min() >= 0.98, _cosine(mine, theirs)
    # The text tower keeps f32 compute with int8 weights (data-free): close to fp32.
    texts = ['a photo of a red cup.', 'blue bottle']
    assert _cosine(int8.encode_texts(texts), torch_reference.encode_texts(texts)).min() >= 0.999
    int8.close()


def test_int8_gate_fails_above_the_measured_cosine(tiny_clip_dir, model_cache):
    with pytest.raises(Int8AccuracyError, match=r'openvino int8 .* below int8_min_cosine 1\.0; use precision fp32'):
        create_backend(read_model_info(str(tiny_clip_dir)), 'openvino', 'cpu', 'int8', model_cache,
                       int8_min_cosine=1.0)


def test_the_gate_compares_with_openvino_fp32_without_onnxruntime(tiny_clip_dir, model_cache, monkeypatch):
    """The fp32 reference of an OpenVINO int8 engine is OpenVINO fp32: no onnxruntime session in the node."""
    from robovision_ros.backends import onnxruntime_backend

    def refuse(*args, **kwargs):
        raise AssertionError('onnxruntime loaded as the reference of openvino int8')

    monkeypatch.setattr(onnxruntime_backend.OnnxRuntimeBackend, '__init__', refuse)
    backend = create_backend(read_model_info(str(tiny_clip_dir)), 'openvino', 'cpu', 'int8', model_cache)
    assert backend.int8_accuracy is not None
    backend.close()


def test_int8_keeps_the_family_float_scopes_in_float(tmp_path):
    """SigLIP's attention-pooling attention stays float in the int8 IR (its recipe says so); the rest is quantized."""
    import openvino as ov

    info = read_model_info('embedded:tiny_siglip')
    assert image_int8_recipe(read_model_info('embedded:tiny_clip')) == INT8_RECIPE  # CLIP declares no scope
    image, _ = ir_for(info, tmp_path, 'int8')
    assert image.meta['recipe'] == image_int8_recipe(info) == f'{INT8_RECIPE}+float:.*/vision_model/head/attention/.*'
    model = ov.Core().read_model(str(image.xml))
    head_inputs = {op.get_friendly_name(): [i.get_source_output().get_node().get_type_name() for i in op.inputs()]
                   for op in model.get_ops() if op.get_type_name() == 'MatMul'
                   and op.get_friendly_name().startswith('/vision_model/head/')}
    attention = {name: kinds for name, kinds in head_inputs.items() if '/head/attention/' in name}
    mlp = {name: kinds for name, kinds in head_inputs.items() if '/head/mlp/' in name}
    assert attention and all('FakeQuantize' not in kinds for kinds in attention.values()), attention
    assert mlp and all('FakeQuantize' in kinds for kinds in mlp.values()), mlp


def test_ir_cache_entries_record_their_recipe_and_calibration(tiny_clip_dir, tmp_path):
    info = read_model_info(str(tiny_clip_dir))
    image, text = ir_for(info, tmp_path, 'int8')
    meta = json.loads((image.directory / 'meta.json').read_text())
    assert meta['recipe'] == INT8_RECIPE and meta['calibration_images'] == openvino_backend.CALIBRATION_IMAGES
    assert 'test cards' in meta['calibration']
    assert text is not None and text.directory.name == 'text.int8w'
    root = openvino_root(tmp_path, info)
    assert sorted(p.name for p in root.iterdir()) == ['image.fp32', 'image.int8', 'text.fp32', 'text.int8w']
    # A user's own frames (the export CLI) replace the int8 entry; the digest names the new set.
    frames = structured_images(5, seed=11)
    again, _ = ir_for(info, tmp_path, 'int8', calibration=frames, calibration_source='5 images from /frames',
                      replace=True)
    remade = json.loads((again.directory / 'meta.json').read_text())
    assert remade['calibration'] == '5 images from /frames' and remade['calibration_digest'] != meta[
        'calibration_digest']
    assert not any(p.name.startswith(PARTIAL_PREFIX) for p in root.iterdir())


def test_an_interrupted_conversion_leaves_no_entry(tiny_clip_dir, tmp_path, monkeypatch):
    info = read_model_info(str(tiny_clip_dir))
    ir_for(info, tmp_path, 'fp32')

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt('signal during quantization')

    monkeypatch.setattr(openvino_backend, 'quantize_image_int8', interrupted)
    with pytest.raises(KeyboardInterrupt):
        ir_for(info, tmp_path, 'int8')
    root = openvino_root(tmp_path, info)
    assert not (root / 'image.int8').exists()
    assert not any(p.name.startswith(PARTIAL_PREFIX) for p in root.iterdir())


def test_an_entry_of_another_recipe_is_remade(tiny_clip_dir, tmp_path):
    info = read_model_info(str(tiny_clip_dir))
    image, _ = ir_for(info, tmp_path, 'int8')
    meta_path = image.directory / 'meta.json'
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), 'recipe': 'old'}))
    ir_for(info, tmp_path, 'int8')
    assert json.loads(meta_path.read_text())['recipe'] == INT8_RECIPE


def test_capabilities_and_parameters():
    capabilities = backend_capabilities()['openvino']
    assert capabilities.int8 == INT8_STATIC_NNCF and capabilities.devices == ('cpu',)
    assert capabilities.precisions_on('cpu') == ('fp32', 'bf16', 'int8') and capabilities.fixed_input_size
    onnxruntime = backend_capabilities()['onnxruntime']
    assert capabilities.rank_on('cpu', 'int8') < onnxruntime.rank_on('cpu', 'int8')
    assert capabilities.rank_on('cpu', 'fp32') is None and capabilities.rank_on('cpu', 'bf16') is None
    assert capabilities.auto_basis
    table = clip_table()
    values = table.defaults()
    assert values['openvino_device'] == 'CPU'
    with pytest.raises(ParameterError, match='openvino_device GPU needs backend openvino; got backend onnxruntime'):
        table.validate({**values, 'backend': 'onnxruntime', 'openvino_device': 'GPU'})
    assert table.validate({**values, 'backend': 'openvino', 'openvino_device': 'GPU'})['openvino_device'] == 'GPU'


# --- GPU / NPU: a test double (no Intel GPU or NPU here) -------------------------------------------------------

class DoubleCore:
    """An OpenVINO Core that lists extra devices and compiles their models on the CPU, recording each call."""

    def __init__(self, extra: tuple[str, ...]) -> None:
        import openvino as ov

        self.core = ov.Core()
        self.extra = extra
        self.compiled: list[tuple[str, dict, object]] = []

    @property
    def available_devices(self):
        return list(self.core.available_devices) + list(self.extra)

    def get_property(self, *args):
        return self.core.get_property(*args)

    def read_model(self, path):
        return self.core.read_model(path)

    def compile_model(self, model, device, config):
        self.compiled.append((device, dict(config), model))
        cpu_config = {key: value for key, value in config.items() if key != 'PERFORMANCE_HINT'}
        return self.core.compile_model(model, 'CPU', {**cpu_config, 'INFERENCE_PRECISION_HINT': 'f32'})


def test_a_missing_openvino_device_is_an_error_naming_those_present(tiny_clip_dir, model_cache):
    import openvino as ov

    if 'GPU' in ov.Core().available_devices:
        pytest.skip('an OpenVINO GPU is present')
    with pytest.raises(BackendUnavailableError, match=r'openvino_device GPU requested but .* \(available: CPU'):
        create_backend(read_model_info(str(tiny_clip_dir)), 'openvino', 'cpu', 'fp32', model_cache,
                       options={'openvino_device': 'GPU'})


def test_gpu_double_compiles_both_towers_for_the_gpu(tiny_clip_dir, model_cache, monkeypatch):
    double = DoubleCore(('GPU.0',))
    monkeypatch.setattr(openvino_backend, '_make_core', lambda: double)
    info = read_model_info(str(tiny_clip_dir))
    backend = OpenVinoBackend(info, 'cpu', 'fp32', model_cache, ov_device='GPU')
    assert [device for device, _, _ in double.compiled] == ['GPU', 'GPU']
    assert all('INFERENCE_NUM_THREADS' not in config and config['INFERENCE_PRECISION_HINT'] == 'f32'
               for _, config, _ in double.compiled)
    with pytest.raises(BackendUnavailableError, match='openvino_device GPU runs fp32 or int8'):
        OpenVinoBackend(info, 'cpu', 'bf16', model_cache, ov_device='GPU')
    backend.close()


def test_npu_double_runs_batch_one_and_leaves_text_to_the_cpu(tiny_clip_dir, model_cache, monkeypatch):
    double = DoubleCore(('NPU',))
    monkeypatch.setattr(openvino_backend, '_make_core', lambda: double)
    info = read_model_info(str(tiny_clip_dir))
    npu = OpenVinoBackend(info, 'cpu', 'fp32', model_cache, ov_device='NPU')
    assert [device for device, _, _ in double.compiled] == ['NPU', 'CPU']
    image_model = double.compiled[0][2]
    assert list(image_model.input(0).get_partial_shape().to_shape()) == [1, 3, info.image_size, info.image_size]
    monkeypatch.setattr(openvino_backend, '_make_core', lambda: DoubleCore(()).core)
    cpu = OpenVinoBackend(info, 'cpu', 'fp32', model_cache)
    from robovision_ros.backends.registry import _probe_preprocessor

    pixels = _probe_preprocessor(info)(probe_images(info.image_size, 3))
    a, b = npu.encode_image(pixels), cpu.encode_image(pixels)
    assert a.patch_tokens.shape == b.patch_tokens.shape and a.global_embedding.shape == (3, b.global_embedding.shape[1])
    # Same fp32 model and kernels, batch 1 against batch 3: equal up to rounding of the batched GEMMs (any x86 CPU).
    np.testing.assert_allclose(a.global_embedding, b.global_embedding, atol=1e-4 * np.abs(b.global_embedding).max())
    npu.close()
    cpu.close()


def test_the_gate_uses_the_stored_fp32_reference_and_loads_no_fp32_model(tiny_clip_dir, tmp_path, monkeypatch):
    """The int8 entry stores fp32 outputs on the probe images; the gate compares with them, not a loaded fp32 model."""
    info = read_model_info(str(tiny_clip_dir))
    image, _ = ir_for(info, tmp_path, 'int8')
    assert (image.directory / openvino_backend.REFERENCE_FILE).is_file()
    with_stored = create_backend(info, 'openvino', 'cpu', 'int8', tmp_path)  # measured against the stored outputs
    (image.directory / openvino_backend.REFERENCE_FILE).rename(tmp_path / 'kept.npz')
    loaded = create_backend(info, 'openvino', 'cpu', 'int8', tmp_path)  # no stored outputs: loads OpenVINO fp32
    # Both references are the same fp32 model on the same CPU: cosines agree to rounding (1e-5 on any x86 CPU).
    assert with_stored.int8_accuracy.worst == pytest.approx(loaded.int8_accuracy.worst, abs=1e-5)
    (tmp_path / 'kept.npz').rename(image.directory / openvino_backend.REFERENCE_FILE)
    original_init = OpenVinoBackend.__init__

    def no_fp32(self, info, device, precision, *args, **kwargs):
        assert precision != 'fp32', 'the gate loaded an fp32 model'
        original_init(self, info, device, precision, *args, **kwargs)

    monkeypatch.setattr(OpenVinoBackend, '__init__', no_fp32)
    gated = create_backend(info, 'openvino', 'cpu', 'int8', tmp_path)
    assert gated.int8_accuracy.worst == pytest.approx(with_stored.int8_accuracy.worst, abs=1e-6)
    for backend in (with_stored, loaded, gated):
        backend.close()


def test_a_stored_reference_of_other_pixels_falls_back_to_the_fp32_model(tiny_clip_dir, tmp_path):
    info = read_model_info(str(tiny_clip_dir))
    image, _ = ir_for(info, tmp_path, 'int8')
    path = image.directory / openvino_backend.REFERENCE_FILE
    with np.load(path) as stored:
        arrays = dict(stored)
    np.savez(path, **{**arrays, 'pixel_values': arrays['pixel_values'] + 0.5})  # as if preprocessing had changed
    backend = create_backend(info, 'openvino', 'cpu', 'int8', tmp_path)
    assert backend.int8_accuracy is not None and backend.int8_accuracy.worst >= 0.99
    backend.close()
