# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_export: HF model directory -> ONNX (image and text encoders) -> int8/fp16 ONNX -> TensorRT engine.

    robovision_export MODEL --out DIR [--int8] [--fp16] [--int8-qdq [--calibration-images DIR]]
                      [--tensorrt fp32|fp16|int8] [--force-rebuild]
                      [--openvino fp32|bf16|int8 [--calibration-images DIR] [--engine-cache-dir DIR]]

Every ONNX file is verified with onnx.checker and parity-checked against PyTorch fp32 (max abs difference
printed). The TensorRT step needs tensorrt and a CUDA GPU. The OpenVINO step writes its IR where the nodes load it
(the engine cache, `engine_cache_dir`), int8 calibrated on the folder's images (default: generated test cards and
scenes), and runs the int8 accuracy gate on the result.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from robovision_ros.backends.onnxruntime_backend import CAPABILITIES as ONNXRUNTIME
from robovision_ros.backends.openvino_backend import CAPABILITIES as OPENVINO
from robovision_ros.backends.tensorrt_backend import CAPABILITIES as TENSORRT


def _progress(message: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)


def _write_qdq(info, exported, calibration_dir: Optional[Path]) -> None:
    """Write static int8 Q/DQ variants, calibrated on a folder of images or on generated scenes."""
    from robovision_ros.backends.onnx_export import calibration_feeds, quantize_qdq_int8
    from robovision_ros.synthetic.scenes import LABELS, SceneGenerator
    from robovision_ros.synthetic.training import TEMPLATES

    if calibration_dir is not None:
        images = _read_images(calibration_dir)
        _progress(f'calibrating int8 Q/DQ on {len(images)} images from {calibration_dir}')
    else:
        generator = SceneGenerator(seed=4242)
        images = [generator.scene(i).image for i in range(64)]
        _progress('calibrating int8 Q/DQ on 64 generated scenes (pass --calibration-images for your cameras)')
    texts = [t.format(label) for t in TEMPLATES for label in LABELS]
    image_feeds, text_feeds = calibration_feeds(info, exported, images, texts)
    quantize_qdq_int8(exported.image_path, exported.variant(exported.image_path, 'qdq'), image_feeds)
    if exported.text_path is not None:
        quantize_qdq_int8(exported.text_path, exported.variant(exported.text_path, 'qdq'), text_feeds)
    _progress('wrote int8 Q/DQ ONNX files')


def _read_images(calibration_dir: Path) -> list:
    from robovision_ros.nodes.frame_sources import open_source

    source = open_source(str(calibration_dir), loop=False)
    images = []
    while len(images) < 256:  # not iter(next_frame, None): a sentinel compares with == (an array)
        frame = source.next_frame()
        if frame is None:
            break
        images.append(frame)
    return images


def _write_openvino(info, precision: str, calibration_dir: Optional[Path], cache_dir: Optional[Path]) -> None:
    """Convert (and for int8 quantize) the model to OpenVINO IR in the engine cache, then load it as a node would."""
    from robovision_ros.backends.openvino_backend import ir_for
    from robovision_ros.backends.registry import create_backend

    images, source = None, ''
    if precision == 'int8' and calibration_dir is not None:
        images = _read_images(calibration_dir)
        source = f'{len(images)} images from {calibration_dir}'
        _progress(f'calibrating OpenVINO int8 (NNCF) on {source}')
    elif precision == 'int8':
        _progress('calibrating OpenVINO int8 (NNCF) on generated test cards and scenes (pass --calibration-images '
                  'for yours)')
    image, _ = ir_for(info, cache_dir, precision, calibration=images, calibration_source=source,
                      replace=images is not None)
    _progress(f'OpenVINO {precision} model in {image.directory}')
    backend = create_backend(info, 'openvino', 'cpu', precision, cache_dir)
    if backend.int8_accuracy is not None:
        _progress(f'int8 accuracy gate passed: cosine to fp32 {backend.int8_accuracy.worst:.4f}')
    backend.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_export', description=__doc__.strip().split('\n')[0])
    parser.add_argument('model', help='model directory, hub id, or embedded:<name>')
    parser.add_argument('--out', type=Path, required=True, help='output directory')
    parser.add_argument('--int8', action='store_true',
                        help='also write the dynamic-int8 image encoder (the text encoder stays fp32)')
    parser.add_argument('--fp16', action='store_true', help='also write fp16 ONNX files (for GPU providers)')
    parser.add_argument('--int8-qdq', action='store_true',
                        help='also write static int8 Q/DQ ONNX files (what TensorRT int8 engines are built from)')
    parser.add_argument('--calibration-images', type=Path,
                        help='folder of representative images for --int8-qdq (default: 64 generated scenes) and '
                             '--openvino int8 (default: generated test cards and scenes)')
    parser.add_argument('--tensorrt', choices=TENSORRT.precisions_on('cuda'), help='also build a TensorRT engine')
    parser.add_argument('--force-rebuild', action='store_true', help='rebuild the TensorRT engine')
    parser.add_argument('--openvino', choices=OPENVINO.precisions_on('cpu'),
                        help='also convert to OpenVINO IR in the engine cache (int8: NNCF, calibrated)')
    parser.add_argument('--engine-cache-dir', type=Path,
                        help='the nodes\' engine_cache_dir, where --openvino writes (default ~/.cache/robovision_ros)')
    args = parser.parse_args(argv)

    from robovision_ros.backends.base import BackendUnavailableError
    from robovision_ros.model_dir import ModelLoadError, read_model_info
    from robovision_ros.nodes.frame_sources import FrameSourceError
    from robovision_ros.backends.onnx_export import ExportError, export_onnx, parity_check, precision_variant, \
        text_precision

    try:
        info = read_model_info(args.model)
        _progress(f'model {info.model_id}: {info.model_type}, {info.image_size}px, patch {info.patch_size}')
        exported = export_onnx(info, args.out, progress=_progress)
        _progress('onnx.checker passed')
        precisions = ['fp32'] + (['int8'] if args.int8 else []) + (['fp16'] if args.fp16 else [])
        for precision in precisions:
            for path, tower_precision in ((exported.image_path, precision),
                                          (exported.text_path, text_precision(precision))):
                if path is not None and tower_precision != 'fp32':
                    _progress(f'writing {tower_precision} variant of {path.name}')
                    precision_variant(exported, path, tower_precision)
            if not ONNXRUNTIME.runs('cpu', precision):
                continue  # fp16 graphs are for GPU providers; the CPU parity check would not be meaningful
            diffs = parity_check(info, exported, precision)
            _progress(f'parity vs PyTorch fp32 ({precision}): ' +
                      ', '.join(f'{name} max abs diff {value:.3g}' for name, value in diffs.items()))
        if args.int8_qdq:
            _write_qdq(info, exported, args.calibration_images)
            diffs = parity_check(info, exported, 'qdq')
            _progress('parity vs PyTorch fp32 (qdq): ' +
                      ', '.join(f'{name} max abs diff {value:.3g}' for name, value in diffs.items()))
        if args.openvino:
            _write_openvino(info, args.openvino, args.calibration_images, args.engine_cache_dir)
        if args.tensorrt:
            from robovision_ros.backends.tensorrt_backend import TensorRTBackend

            _progress(f'building TensorRT {args.tensorrt} engine (minutes)')
            backend = TensorRTBackend(info, 'cuda', args.tensorrt, cache_dir=args.out,
                                      force_rebuild=args.force_rebuild, exported=exported)
            _progress(f'TensorRT engine ready, key {backend.cache_key}')
    except (ModelLoadError, ExportError, BackendUnavailableError, FrameSourceError) as error:
        print(f'robovision_export: error: {error}', file=sys.stderr)
        return 2
    _progress(f'done: {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
