# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The model families on random-weight checkpoints built from each family's transformers config (no hub needed).

SigLIP's sigmoid scores against transformers' own `logits_per_image`, register tokens left out of the patch
features, ONNX Runtime and torch precisions against torch fp32 per family, the export's metadata, and full-field
inputs with their grids and box mapping.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import DINO_KINDS, structured_images
from robovision_ros.backends.base import BackendUnavailableError
from robovision_ros.backends.onnx_export import cached_export
from robovision_ros.clip_scoring import SIGMOID, SOFTMAX, score, sigmoid_scores
from robovision_ros.encoder import PerceptionEncoder
from robovision_ros.families import families
from robovision_ros.features import ImageFeatures
from robovision_ros.model_dir import ModelLoadError, read_model_info
from robovision_ros.preprocessing import FULL_FRAME, ImagePreprocessor, PreprocessConfig, full_frame_hw
from robovision_ros.synthetic.tiny_models import vit_preprocessor_config
from robovision_ros.vocabulary import VocabularyEmbeddings

LABELS = ['red cup', 'blue bottle', 'green ball']
FAMILY_OF_KIND = {'dinov2': 'dinov2', 'dinov2_with_registers': 'dinov2_registers', 'dinov3_vit': 'dinov3'}
REGISTERS = {'dinov2': 0, 'dinov2_with_registers': 4, 'dinov3_vit': 4}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope='module')
def model_dirs(tiny_clip_dir, tiny_vit_dir, tiny_siglip_dir, tiny_siglip2_dir, tiny_dino_dirs):
    return {'clip': tiny_clip_dir, 'vit': tiny_vit_dir, 'siglip': tiny_siglip_dir, 'siglip2': tiny_siglip2_dir,
            **tiny_dino_dirs}


def test_every_family_module_registers_and_reads_its_directories(model_dirs):
    assert {'clip', 'vit', 'siglip', 'dinov2', 'dinov2_registers', 'dinov3'} <= set(families())
    expected = {'clip': 'clip', 'vit': 'vit', 'siglip': 'siglip', 'siglip2': 'siglip', **FAMILY_OF_KIND}
    for name, path in model_dirs.items():
        info = read_model_info(str(path))
        assert (info.family, info.image_size, info.patch_size) == (expected[name], 64, 8), name
        assert info.has_text == (name in ('clip', 'siglip', 'siglip2')), name
    assert families()['siglip'].scoring == SIGMOID and families()['clip'].scoring == SOFTMAX


def test_dinov2_input_size_comes_from_its_processor_not_its_position_table(tiny_dino_dirs):
    """DINOv2's config image_size is the position table (518 in the released models); the crop is the input."""
    import json

    path = tiny_dino_dirs['dinov2']
    assert json.loads((path / 'config.json').read_text())['image_size'] == 96
    assert read_model_info(str(path)).image_size == 64


def test_siglip_config_errors_name_the_field(tmp_path, tiny_siglip_dir):
    import json
    import shutil

    broken = tmp_path / 'broken'
    shutil.copytree(tiny_siglip_dir, broken)
    config = json.loads((broken / 'config.json').read_text())
    config['text_config']['projection_size'] = 32
    (broken / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match='text embedding has 32 dimensions and the image embedding 64'):
        read_model_info(str(broken))
    config['text_config']['projection_size'] = 64
    config['vision_config']['vision_use_head'] = False
    (broken / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match='vision_use_head is false'):
        read_model_info(str(broken))


def test_a_sentencepiece_only_siglip_directory_fails_with_one_line(tmp_path, tiny_siglip_dir):
    """SigLIP 1 checkpoints ship spiece.model alone: without the sentencepiece package, a ModelLoadError says so."""
    import importlib.util
    import json
    import shutil

    from robovision_ros.model_dir import load_tokenizer

    if importlib.util.find_spec('sentencepiece') is not None:
        pytest.skip('sentencepiece is installed here: the refusal this test checks cannot happen')
    spiece = tmp_path / 'spiece_only'
    spiece.mkdir()
    for name in ('config.json', 'preprocessor_config.json', 'model.safetensors'):
        shutil.copy(tiny_siglip_dir / name, spiece / name)
    (spiece / 'spiece.model').write_bytes(b'not read: the library is missing first')
    (spiece / 'tokenizer_config.json').write_text(json.dumps({'tokenizer_class': 'SiglipTokenizer'}))
    with pytest.raises(ModelLoadError, match='needs a library that is not installed .*SentencePiece') as error:
        load_tokenizer(read_model_info(str(spiece)))
    assert '\n' not in str(error.value)


# --- SigLIP ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module', params=['siglip', 'siglip2'])
def siglip(request, tiny_siglip_dir, tiny_siglip2_dir, model_cache):
    path = tiny_siglip_dir if request.param == 'siglip' else tiny_siglip2_dir
    encoder = PerceptionEncoder(str(path), 'torch', 'cpu', 'fp32', model_cache)
    yield encoder
    encoder.close()


def test_siglip_scores_are_transformers_sigmoid_of_logits_per_image(siglip):
    """Labels and presence: sigmoid(logits_per_image) of transformers' SiglipModel forward, per label."""
    import torch

    from robovision_ros.model_dir import load_torch_model, tokenize

    vocabulary = siglip.build_vocabulary(LABELS, ['a photo of a {}.'], 1)
    images = structured_images(2, (48, 64))
    features, _ = siglip.encode_images(images)
    results = siglip.score_batch(features, vocabulary, vocabulary, threshold=0.5)
    model = load_torch_model(siglip.info)
    ids, mask = tokenize(siglip.tokenizer, [f'a photo of a {label}.' for label in LABELS], siglip.backend.text_length,
                         'pt')
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, pixel_values=torch.from_numpy(siglip.prepare(images)))
    expected = torch.sigmoid(out.logits_per_image).numpy()
    assert siglip.scoring.logit_bias == pytest.approx(float(model.logit_bias.detach())) == pytest.approx(-10.0)
    for result, want in zip(results, expected):
        assert result.scoring == SIGMOID
        # Same fp32 weights and ops; our cosine is taken in numpy from the returned embeddings (a few float32 ulps
        # on any CPU), which the sigmoid's slope (at most scale / 4 = 2.5) keeps below 1e-5.
        np.testing.assert_allclose(result.scores, want, atol=1e-5)
        np.testing.assert_allclose(result.presence_scores, want, atol=1e-5)
        assert list(result.present_mask) == [bool(p >= 0.5) for p in result.presence_scores]
        assert not np.isclose(result.scores.sum(), 1.0)  # independent per label, not a distribution


def test_siglip_patch_tokens_are_each_token_pooled_alone(siglip):
    """Patch features: SigLIP's attention-pooling head applied to every token on its own (its output space)."""
    import torch

    from robovision_ros.families.siglip import pooled_per_token
    from robovision_ros.model_dir import load_torch_model

    model = load_torch_model(siglip.info)
    pixels = torch.from_numpy(siglip.prepare(structured_images(1, (48, 64))))
    with torch.inference_mode():
        hidden = model.vision_model(pixel_values=pixels).last_hidden_state
        per_token = pooled_per_token(model.vision_model.head, hidden)
        alone = torch.stack([model.vision_model.head(hidden[:, i:i + 1]) for i in (0, 17, 63)], dim=1)
    # The head over a one-token sequence: softmax weight exactly 1, the same matrix products in another order.
    np.testing.assert_allclose(per_token[:, [0, 17, 63]].numpy(), alone.numpy(), atol=1e-5)
    (feature,), _ = siglip.encode_images([pixels_image := structured_images(1, (48, 64))[0]])
    assert feature.patch_tokens.shape == (64, 64) and feature.grid_hw == (8, 8)
    assert pixels_image.shape == (48, 64, 3)
    np.testing.assert_allclose(feature.patch_tokens, per_token[0].numpy(), atol=1e-5)


def test_sigmoid_scores_are_stable_at_extreme_logits():
    probabilities = sigmoid_scores(np.array([[-1.0, 0.0, 1.0]]), 1000.0, -10.0)
    assert np.all(np.isfinite(probabilities)) and probabilities[0, 0] == 0.0 and probabilities[0, 2] == 1.0
    assert sigmoid_scores(np.array([0.5]), 2.0, 0.0)[0] == pytest.approx(1 / (1 + np.exp(-1.0)))


# --- DINO: register tokens -----------------------------------------------------------------------------------
@pytest.mark.parametrize('kind', DINO_KINDS)
def test_patch_features_leave_out_class_and_register_tokens(kind, tiny_dino_dirs, model_cache):
    import torch

    from robovision_ros.model_dir import load_torch_model

    encoder = PerceptionEncoder(str(tiny_dino_dirs[kind]), 'torch', 'cpu', 'fp32', model_cache)
    image = structured_images(1, (48, 64))[0]
    (feature,), _ = encoder.encode_images([image])
    model = load_torch_model(encoder.info)
    with torch.inference_mode():
        hidden = model(pixel_values=torch.from_numpy(encoder.prepare([image]))).last_hidden_state[0].numpy()
    registers = REGISTERS[kind]
    assert hidden.shape[0] == 1 + registers + 64 and feature.patch_tokens.shape == (64, 64)
    # Same torch computation twice (one batch of one, fp32): equal to float32 rounding on any CPU.
    np.testing.assert_allclose(feature.patch_tokens, hidden[1 + registers:], atol=1e-5)
    np.testing.assert_allclose(feature.global_embedding, hidden[0], atol=1e-5)
    for token in hidden[:1 + registers]:  # neither CLS nor a register is a patch row
        assert np.abs(feature.patch_tokens - token).max(axis=1).min() > 1e-3
    encoder.close()


# --- ONNX Runtime and torch precisions against torch fp32, per family -----------------------------------------
FAMILIES = ('clip', 'vit', 'siglip', 'siglip2') + DINO_KINDS


def cpu_variants() -> list[tuple[str, str]]:
    """Every installed local backend's CPU precisions, from its capability declaration (torch fp32: the reference)."""
    import importlib.util

    from robovision_ros.backends.registry import backend_capabilities

    return [(c.name, precision) for c in backend_capabilities().values()
            if not c.remote and importlib.util.find_spec(c.module) is not None
            for precision in c.precisions_on('cpu') if (c.name, precision) != ('torch', 'fp32')]


@pytest.mark.parametrize('name', FAMILIES)
def test_every_cpu_backend_and_precision_against_torch_fp32(name, model_dirs, model_cache):
    """
    Each family on every backend and precision its capabilities declare on this CPU, against torch fp32.

    fp32: the same graph in two runtimes; kernels differ in summation order only, a few ulps on any x86 CPU
    (AVX2, AVX-512, AMX alike): cosine >= 0.9999, and for ONNX Runtime (measured here: < 3e-6) within 1e-4 element
    by element for these unit-scale activations. int8 (onnxruntime: dynamic, 7-bit weights, the same integer sums on
    every x86 kernel, see onnx_export.quantize_int8) must pass the nodes' default accuracy gate (0.99); bf16 (8
    mantissa bits) is held to a cosine of 0.98.
    """
    path = str(model_dirs[name])
    images = structured_images(3, (48, 64))
    reference = PerceptionEncoder(path, 'torch', 'cpu', 'fp32', model_cache)
    want, _ = reference.encode_images(images)
    want_patches = np.stack([f.patch_tokens for f in want])
    want_pooled = np.stack([f.global_embedding for f in want])
    variants = cpu_variants()
    assert ('onnxruntime', 'int8') in variants and ('torch', 'bf16') in variants
    for backend, precision in variants:
        encoder = PerceptionEncoder(path, backend, 'cpu', precision, model_cache)
        got, _ = encoder.encode_images(images)
        patches = np.stack([f.patch_tokens for f in got])
        pooled = np.stack([f.global_embedding for f in got])
        bound = {'fp32': 0.9999, 'int8': 0.99}.get(precision, 0.98)
        assert _cosine(pooled, want_pooled).min() >= bound, (name, backend, precision)
        assert _cosine(patches, want_patches).mean(axis=1).min() >= bound, (name, backend, precision)
        if (backend, precision) == ('onnxruntime', 'fp32'):
            np.testing.assert_allclose(patches, want_patches, atol=1e-4)
            np.testing.assert_allclose(pooled, want_pooled, atol=1e-4)
        if precision == 'int8':
            assert encoder.backend.int8_accuracy.worst >= 0.99
        if reference.info.has_text:
            texts = ['a photo of a red cup.', 'a blue bottle']
            # int8: the text tower runs once per vocabulary change, fp32 on ONNX Runtime, with int8 weights and
            # f32 compute on OpenVINO (NNCF weight compression; 0.999, as test_openvino_backend holds it).
            text_bound = {'bf16': 0.98, 'fp16': 0.98, 'int8': 0.999}.get(precision, 0.9999)
            assert _cosine(encoder.encode_texts(texts), reference.encode_texts(texts)).min() >= text_bound
            assert (encoder.scoring.kind, encoder.scoring.logit_bias) == (reference.scoring.kind,
                                                                          pytest.approx(reference.scoring.logit_bias))
        encoder.close()
    reference.close()


def test_the_export_records_family_and_logit_bias(tiny_siglip_dir, tiny_dino_dirs, model_cache):
    siglip = cached_export(read_model_info(str(tiny_siglip_dir)), model_cache)
    assert (siglip.family, siglip.logit_bias, siglip.logit_scale) == ('siglip', pytest.approx(-10.0),
                                                                      pytest.approx(10.0))
    dino = cached_export(read_model_info(str(tiny_dino_dirs['dinov2_with_registers'])), model_cache)
    assert (dino.family, dino.logit_bias, dino.text_path) == ('dinov2_registers', 0.0, None)


# --- full field of view -------------------------------------------------------------------------------------------
@pytest.mark.parametrize('native, source, patch, expected', [
    ((224, 224), (480, 640), 14, (224, 294)),  # the example
    ((224, 224), (480, 640), 16, (224, 304)),
    ((224, 224), (640, 480), 16, (304, 224)),  # portrait
    ((64, 64), (48, 64), 8, (64, 88)),
    ((224, 224), (100, 4000), 16, (224, 8960)),
])
def test_full_frame_size_keeps_the_aspect_in_patch_multiples(native, source, patch, expected):
    assert full_frame_hw(native, source, patch) == expected
    assert expected[0] % patch == 0 and expected[1] % patch == 0


def test_full_frame_preprocessing_resizes_the_whole_frame():
    from PIL import Image

    config = PreprocessConfig.from_dict(vit_preprocessor_config(64))
    preprocessor = ImagePreprocessor(config, full_frame_patch=8)
    image = structured_images(1, (48, 64))[0]
    assert preprocessor.mode == FULL_FRAME and preprocessor.input_hw((48, 64)) == (64, 88)
    resized = preprocessor.resize_and_crop(image)
    # The same PIL call on the same pixels: the whole frame, resized with the model's filter.
    np.testing.assert_array_equal(resized, np.asarray(Image.fromarray(image).resize((88, 64), resample=2)))
    geometry = preprocessor.geometry((48, 64))
    assert (geometry.crop_y, geometry.crop_x) == (0, 0)
    assert geometry.to_source(64, 88) == (48, 64) and geometry.visible_box((64, 88)) == (0, 0, 64, 48)
    # The device path (here on the CPU) resizes with PIL's coefficients: within one uint8 step of PIL.
    pixels = preprocessor.torch_preprocess([image], 'cpu', __import__('torch').float32).numpy()
    np.testing.assert_allclose(pixels, preprocessor([image]), atol=2.0 / 255 / 0.5 + 1e-6)


@pytest.mark.parametrize('kind', ['vit', 'siglip', 'dinov2', 'dinov2_with_registers', 'dinov3_vit'])
def test_full_frame_features_have_the_frame_grid(kind, model_dirs, model_cache):
    encoder = PerceptionEncoder(str(model_dirs[kind]), 'torch', 'cpu', 'fp32', model_cache, input_mode=FULL_FRAME)
    frames = [structured_images(1, (48, 64))[0], structured_images(1, (64, 48))[0], structured_images(1, (48, 64))[0]]
    features, _ = encoder.encode_images(frames)  # two shapes in one batch: each group runs on its own
    assert [f.grid_hw for f in features] == [(8, 11), (11, 8), (8, 11)]
    assert [f.patch_tokens.shape[0] for f in features] == [88, 88, 88]
    alone, _ = encoder.encode_images(frames[1:2])
    # The same frame alone or in a mixed batch: one batch of one either way, float32 rounding on any CPU.
    np.testing.assert_allclose(alone[0].patch_tokens, features[1].patch_tokens, atol=1e-5)
    encoder.close()


def test_full_frame_needs_a_backend_that_runs_other_input_sizes(tiny_vit_dir, model_cache):
    with pytest.raises(BackendUnavailableError, match='input_mode full_frame needs a backend without a fixed input '
                                                      'size .torch.; onnxruntime engines take the native size only'):
        PerceptionEncoder(str(tiny_vit_dir), 'onnxruntime', 'cpu', 'fp32', model_cache, input_mode=FULL_FRAME)
    with pytest.raises(ValueError, match="input_mode 'all' not supported"):
        PerceptionEncoder(str(tiny_vit_dir), 'torch', 'cpu', 'fp32', model_cache, input_mode='all')


@pytest.mark.parametrize('mode', ['crop', 'full_frame'])
def test_localisation_boxes_map_back_to_source_pixels(mode):
    """A query matching one patch block: its box in source pixels is that block through the mode's geometry."""
    config = PreprocessConfig.from_dict({'do_resize': True, 'size': {'shortest_edge': 64}, 'resample': 2,
                                         'do_center_crop': True, 'crop_size': {'height': 64, 'width': 64}})
    preprocessor = ImagePreprocessor(config, full_frame_patch=8 if mode == 'full_frame' else None)
    source_hw = (480, 640)
    grid_h, grid_w = (h // 8 for h in preprocessor.input_hw(source_hw))
    patches = np.tile(np.array([1.0, 0.0], np.float32), (grid_h * grid_w, 1))
    block = [(r, c) for r in (2, 3) for c in (4, 5, 6)]  # rows 2-3, columns 4-6
    for r, c in block:
        patches[r * grid_w + c] = (0.0, 1.0)
    geometry = preprocessor.geometry(source_hw)
    feature = ImageFeatures(patches, np.array([0.0, 1.0], np.float32), (grid_h, grid_w), geometry, 1.0, False)
    query = VocabularyEmbeddings(('thing',), ('{}',), np.array([[0.0, 1.0]], np.float32), 1)
    location = score(feature, query, query, logit_scale=1.0, patch_size=8, localize=True).locations[0]
    # Expected from the geometry's definition: x_src = (x_in + crop_x) / scale_x, for the block's corners.
    x0 = (4 * 8 + geometry.crop_x) / geometry.scale_x
    x1 = (7 * 8 + geometry.crop_x) / geometry.scale_x
    y0 = (2 * 8 + geometry.crop_y) / geometry.scale_y
    y1 = (4 * 8 + geometry.crop_y) / geometry.scale_y
    assert location.roi_xywh == (int(x0), int(y0), int(x1) - int(x0), int(y1) - int(y0))
    if mode == 'full_frame':  # 480x640 -> 64x88: scale 88/640 across, 64/480 down, no crop
        assert (grid_h, grid_w) == (8, 11) and location.roi_xywh == (232, 120, 175, 120)
    else:  # 480x640 -> 64x85, centre crop 64x64 from column 10
        assert (grid_h, grid_w) == (8, 8) and geometry.crop_x == 10 and location.roi_xywh == (316, 120, 180, 120)


def test_the_readme_families_table_is_generated_from_the_registries():
    from pathlib import Path

    from robovision_ros.tools.parameter_docs import render_readme

    readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
    assert render_readme(readme) == readme, 'README.md families table is stale: run robovision_parameter_docs --write'
    for family in families().values():
        assert family.description and family.description in readme
