"""The export CLI: ONNX files checked, int8 written, parity printed, errors clear."""
from __future__ import annotations

import re

from robovision_ros.export_cli import main


def test_export_clip_with_int8(tiny_clip_dir, tmp_path, capsys):
    out = tmp_path / 'export'
    assert main([str(tiny_clip_dir), '--out', str(out), '--int8']) == 0
    printed = capsys.readouterr().out
    for name in ('image_encoder.onnx', 'text_encoder.onnx', 'image_encoder.int8.onnx', 'text_encoder.int8.onnx',
                 'export.json'):
        assert (out / name).is_file(), name
    assert 'onnx.checker passed' in printed
    fp32 = re.search(r'parity vs PyTorch fp32 \(fp32\): patch_tokens max abs diff ([0-9.e-]+)', printed)
    assert fp32 and float(fp32.group(1)) <= 1e-4, printed
    assert 'parity vs PyTorch fp32 (int8)' in printed


def test_export_missing_model_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / 'missing'), '--out', str(tmp_path / 'o')]) == 2
    assert 'does not exist' in capsys.readouterr().err
