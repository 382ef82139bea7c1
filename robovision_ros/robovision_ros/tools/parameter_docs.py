# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Render the nodes' parameter tables into docs/architecture.md (robovision_parameter_docs --write).

The tables are those of settings.py (and the backends' own parameters); this tool adds where each parameter lands,
and writes each table between its `<!-- parameters:NAME begin -->` and `<!-- parameters:NAME end -->` markers.
test/test_parameters.py fails when the doc is stale.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from robovision_ros.backends.registry import backend_parameters
from robovision_ros.parameters import ParameterSpec, markdown_table
from robovision_ros.settings import CLIP_PARAMETERS, COMMON_PARAMETERS, FEATURE_PARAMETERS, model_parameter

# Where each parameter lands (read by, and when).
USED_BY = {
    'model': '`model_dir.read_model_info` -> family; `onnx_export.cached_export` (configure)',
    'backend': '`backends.registry.create_backend` (configure)',
    'device': '`backends.registry.create_backend` (configure)',
    'precision': '`backends.registry.create_backend` (configure)',
    'int8_min_cosine': '`backends.accuracy_gate` via `create_backend` (configure, int8 only)',
    'engine_cache_dir': '`onnx_export.cached_export`, the TensorRT engine cache (configure)',
    'image_topics': '`PerceptionNode.on_activate` (subscriptions)',
    'qos': '`PerceptionNode.on_activate`',
    'qos_depth': '`PerceptionNode.on_activate`',
    'batch': '`WorkerSettings` -> `FrameWorker` (next frame)',
    'executor': '`node_process.make_executor` (process start)',
    'max_rate_hz': '`WorkerSettings` -> `FrameWorker` (next frame)',
    'max_frame_age_ms': '`WorkerSettings` -> `FrameWorker` (next frame)',
    'max_image_pixels': '`WorkerSettings` -> `FrameWorker` -> `decode_image_msg` (next frame)',
    'camera_timeout_s': '`camera_liveness`, `health` (each second)',
    'cuda_graphs': '`TorchBackend` (configure)',
    'openvino_device': '`OpenVinoBackend` (configure)',
    'triton_url': '`TritonBackend` (configure)',
    'triton_model': '`TritonBackend` (configure)',
    'triton_timeout_ms': '`TritonBackend` (configure)',
    'labels': '`VocabularyWorker` (swapped in when encoded)',
    'prompt_templates': '`VocabularyWorker` (swapped in when encoded)',
    'presence_queries': '`VocabularyWorker` (swapped in when encoded)',
    'presence_threshold': '`ClipSettings` -> `clip_scoring.score_batch` (next frame)',
    'localize': '`ClipSettings` -> `clip_scoring.score_batch` (next frame)',
    'debug_image': '`ClipSettings` -> `ClipPerceptionNode.infer` (next frame)',
    'scales': '`FeatureSettings` -> `PerceptionEncoder.encode_images` (next frame)',
    'normalize': '`FeatureSettings` -> `PerceptionEncoder.encode_images` (next frame)',
    'output_dtype': '`FeatureSettings` -> `message_conversions.patch_features_message` (next frame)',
}
DOC = Path('docs') / 'architecture.md'


def node_tables() -> dict[str, tuple[ParameterSpec, ...]]:
    """Return the parameter groups as the doc shows them: shared, contributed by backends, each node's own."""
    return {'common': (model_parameter('embedded:tiny_clip (clip_perception), embedded:tiny_vit (feature_extractor)'),)
            + COMMON_PARAMETERS,
            'backends': backend_parameters(), 'clip_perception': CLIP_PARAMETERS,
            'feature_extractor': FEATURE_PARAMETERS}


def render(text: str) -> str:
    """Return `text` with every generated table replaced by the current one."""
    for name, specs in node_tables().items():
        pattern = re.compile(rf'(<!-- parameters:{name} begin[^>]*-->)(.*?)(<!-- parameters:{name} end -->)', re.S)
        if not pattern.search(text):
            raise SystemExit(f'{DOC}: no markers for the {name} table')
        table = markdown_table(specs, USED_BY)
        text = pattern.sub(lambda m: f'{m.group(1)}\n{table}\n{m.group(3)}', text)
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_parameter_docs', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--doc', type=Path, default=DOC, help='the architecture doc (default: docs/architecture.md)')
    parser.add_argument('--write', action='store_true', help='rewrite the doc (default: print whether it is current)')
    args = parser.parse_args(argv)
    missing = [spec.name for specs in node_tables().values() for spec in specs if spec.name not in USED_BY]
    if missing:
        print(f'robovision_parameter_docs: say where these parameters land (USED_BY): {missing}', file=sys.stderr)
        return 1
    text = args.doc.read_text()
    rendered = render(text)
    if args.write:
        args.doc.write_text(rendered)
        print(f'{args.doc}: {"updated" if rendered != text else "already current"}')
        return 0
    print(f'{args.doc}: {"current" if rendered == text else "stale (run with --write)"}')
    return 0 if rendered == text else 1


if __name__ == '__main__':
    sys.exit(main())
