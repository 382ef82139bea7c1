# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The export CLI: ONNX files checked, int8 written, parity printed, errors clear."""
from __future__ import annotations

import re

from robovision_ros.tools.export_cli import main


def test_export_clip_with_int8(tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / 'export'
    assert main([str(tiny_clip_dir), '--out', str(out), '--int8']) == 0
    printed = capsys.readouterr().out
    for name in ('image_encoder.onnx', 'text_encoder.onnx', 'image_encoder.int8.onnx', 'export.json'):
        assert (out / name).is_file(), name
    assert not (out / 'text_encoder.int8.onnx').exists()  # int8 keeps the text tower in fp32
    assert 'onnx.checker passed' in printed
    fp32 = re.search(r'parity vs PyTorch fp32 \(fp32\): patch_tokens max abs diff ([0-9.e-]+)', printed)
    assert fp32 and float(fp32.group(1)) <= 1e-4, printed
    assert 'parity vs PyTorch fp32 (int8)' in printed


def test_export_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')]) == 2
    assert 'does not exist' in capsys.readouterr().err


def test_int8_qdq_export_for_tensorrt(tiny_clip_dir, tmp_path, capsys):
    """Static int8 Q/DQ files (TensorRT's int8 input) run in ONNX Runtime close to fp32 on structured images."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from conftest import structured_images
    from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig

    out = tmp_path / 'export'
    assert main([str(tiny_clip_dir), '--out', str(out), '--int8-qdq']) == 0
    printed = capsys.readouterr().out
    assert 'calibrating int8 Q/DQ on 64 generated scenes' in printed and 'parity vs PyTorch fp32 (qdq)' in printed
    qdq = out / 'image_encoder.qdq.onnx'
    ops = {node.op_type for node in onnx.load(str(qdq)).graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear'} <= ops
    pixels = ImagePreprocessor(PreprocessConfig.from_model_dir(tiny_clip_dir))(structured_images(6, seed=11))
    (_, reference), (_, quantized) = (
        ort.InferenceSession(str(path), providers=['CPUExecutionProvider']).run(None, {'pixel_values': pixels})
        for path in (out / 'image_encoder.onnx', qdq))
    cosine = (reference * quantized).sum(1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(quantized, axis=1))
    assert cosine.min() >= 0.99, cosine
    assert (out / 'text_encoder.qdq.onnx').is_file()


def test_openvino_int8_export_on_your_own_frames_is_what_the_node_loads(tiny_clip_dir, tmp_path, capsys):
    """--openvino int8 --calibration-images: NNCF on the folder's frames, in the engine cache the node reads."""
    import json

    import cv2

    from conftest import structured_images
    from robovision_ros.backends.openvino_backend import openvino_root
    from robovision_ros.backends.registry import create_backend
    from robovision_ros.model_dir import read_model_info

    frames = tmp_path / 'frames'
    frames.mkdir()
    for i, image in enumerate(structured_images(7, seed=21)):
        cv2.imwrite(str(frames / f'{i}.png'), image[..., ::-1])
    cache = tmp_path / 'cache'
    assert main([str(tiny_clip_dir), '--out', str(tmp_path / 'export'), '--openvino', 'int8',
                 '--calibration-images', str(frames), '--engine-cache-dir', str(cache)]) == 0
    printed = capsys.readouterr().out
    assert f'calibrating OpenVINO int8 (NNCF) on 7 images from {frames}' in printed
    assert 'int8 accuracy gate passed' in printed
    info = read_model_info(str(tiny_clip_dir))
    meta = json.loads((openvino_root(cache, info) / 'image.int8' / 'meta.json').read_text())
    assert meta['calibration'] == f'7 images from {frames}' and meta['calibration_images'] == 7
    backend = create_backend(info, 'openvino', 'cpu', 'int8', cache)  # the node's load: reuses that model
    assert backend.ir.directory == openvino_root(cache, info) / 'image.int8'
    assert json.loads((backend.ir.directory / 'meta.json').read_text())['calibration_digest'] == meta[
        'calibration_digest']
    backend.close()


def test_export_siglip_and_dinov3(tiny_siglip_dir, tiny_dino_dirs, tmp_path, capsys):
    """The same CLI for the other families: files, family and bias recorded, fp32 parity printed."""
    import json

    for name, model in (('siglip', tiny_siglip_dir), ('dinov3', tiny_dino_dirs['dinov3_vit'])):
        out = tmp_path / name
        assert main([str(model), '--out', str(out)]) == 0
        printed = capsys.readouterr().out
        metadata = json.loads((out / 'export.json').read_text())
        assert metadata['family'] == name and (out / 'text_encoder.onnx').is_file() == (name == 'siglip')
        assert metadata['logit_bias'] == (-10.0 if name == 'siglip' else 0.0)
        fp32 = re.search(r'parity vs PyTorch fp32 \(fp32\): patch_tokens max abs diff ([0-9.e-]+)', printed)
        assert fp32 and float(fp32.group(1)) <= 1e-4, printed
