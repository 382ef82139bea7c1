# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Render the nodes' parameter tables into docs/architecture.md and the model families' table into README.md.

    robovision_parameter_docs [--write]

The parameter tables are those of settings.py (and the backends' own parameters); this tool adds where each
parameter lands, and writes each table between its `<!-- parameters:NAME begin -->` and `<!-- parameters:NAME end
-->` markers. The families table (`<!-- families begin -->`) is read from the family registry and the backends'
capability declarations. test/test_parameters.py and test/test_families.py fail when a table is stale.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from robovision_ros.backends.registry import backend_parameters
from robovision_ros.parameters import ParameterSpec, markdown_table
from robovision_ros.settings import CLIP_PARAMETERS, COMMON_PARAMETERS, DETECTOR_PARAMETERS, FEATURE_PARAMETERS, \
    model_parameter

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
    'input_mode': '`PerceptionEncoder` -> `ImagePreprocessor` (configure)',
    'presence_threshold': '`ClipSettings.threshold_for` -> `clip_scoring.score_batch` (next frame, softmax families)',
    'presence_probability': '`ClipSettings.threshold_for` -> `clip_scoring.score_batch` (next frame, sigmoid '
                            'families)',
    'patch_features': '`ClipSettings` -> `ClipPerceptionNode.infer` (next frame)',
    'localize': '`ClipSettings` -> `clip_scoring.score_batch` (next frame)',
    'debug_image': '`ClipSettings` -> `ClipPerceptionNode.infer` (next frame)',
    'scales': '`FeatureSettings` -> `PerceptionEncoder.encode_images` (next frame)',
    'normalize': '`FeatureSettings` / `ClipSettings` -> `PerceptionEncoder.encode_images` (next frame)',
    'output_dtype': '`FeatureSettings` / `ClipSettings` -> `message_conversions.patch_features_message` (next frame)',
}
# Where a node's own parameter lands when another node has one of the same name.
USED_BY_NODE = {
    'open_vocab_detector': {
        'queries': '`VocabularyWorker` -> `DetectorEncoder.build_queries` (swapped in when encoded)',
        'prompt_templates': '`VocabularyWorker` -> `DetectorEncoder.build_queries` (swapped in when encoded)',
        'image_queries': '`VocabularyWorker` -> `ImageQueryCache` (swapped in when encoded)',
        'score_threshold': '`DetectorSettings` -> `detection.decode_detections` (next frame)',
        'nms_iou': '`DetectorSettings` -> `detection.decode_detections` (next frame)',
        'max_detections': '`DetectorSettings` -> `detection.decode_detections` (next frame)',
        'debug_image': '`DetectorSettings` -> `OpenVocabDetectorNode.infer` (next frame)',
    },
}
DOC = Path('docs') / 'architecture.md'
README = Path('README.md')
FAMILIES_MARKERS = re.compile(r'(<!-- families begin[^>]*-->)(.*?)(<!-- families end -->)', re.S)


def families_table() -> str:
    """
    Return the README's table of model families: what each node publishes from them and where they run.

    Every family exports through the same ONNX path, so each runs on every backend; what differs by backend is
    read from its capabilities (precisions per device, and whether other input sizes than the native one run).
    """
    from robovision_ros.backends.registry import backend_capabilities
    from robovision_ros.clip_scoring import SIGMOID
    from robovision_ros.families import families

    capabilities = backend_capabilities().values()
    runs = ', '.join(c.name for c in capabilities)
    flexible = ', '.join(c.name for c in capabilities if not c.fixed_input_size)
    rows = ['| Family (`model_type`) | clip_perception publishes | feature_extractor publishes | open_vocab_detector '
            'publishes | Backends | Full frame, multi-scale |', '|---|---|---|---|---|---|']
    for family in families().values():
        if family.detector:
            clip = features = '- (a detector: configure fails; run it with open_vocab_detector)'
            detector = 'boxes per text or image query (ObjectDetectionArray, vision_msgs Detection2DArray)'
            sizes = "no (the model's own input)"
        else:
            if family.has_text:
                threshold = 'probability `presence_probability`' if family.scoring == SIGMOID else \
                    'cosine `presence_threshold`'
                clip = (f'labels ({family.scoring} scores), presence ({threshold}), localisation, patch features '
                        'from the same pass (`patch_features`)')
            else:
                clip = '- (no text tower: configure fails)'
            features = 'patch features (patch tokens only) + global embedding, per scale'
            if family.name == 'vit':
                features += '; class scores with a classification head'
            detector = '- (not a detector: configure fails)'
            sizes = flexible if family.flexible_input else 'no (native size only)'
        types = ', '.join(f'`{t}`' for t in family.model_types)
        rows.append(f'| {family.description} ({types}) | {clip} | {features} | {detector} | {runs} | {sizes} |')
    rows += ['', '| Backend | Device: precisions | int8 | Input sizes |', '|---|---|---|---|']
    for c in capabilities:
        precisions = '; '.join(f"{device}: {', '.join(p)}" for device, p in c.precisions)
        sizes = 'native only (exported size)' if c.fixed_input_size else 'any (full frame, multi-scale)'
        rows.append(f'| {c.name}{" (remote)" if c.remote else ""} | {precisions} | {c.int8 or "-"} | {sizes} |')
    return '\n'.join(rows)


def render_readme(text: str) -> str:
    """Return the README `text` with its families table replaced by the current one."""
    if not FAMILIES_MARKERS.search(text):
        raise SystemExit(f'{README}: no markers for the families table')
    table = families_table()
    return FAMILIES_MARKERS.sub(lambda m: f'{m.group(1)}\n{table}\n{m.group(3)}', text)


def node_tables() -> dict[str, tuple[ParameterSpec, ...]]:
    """Return the parameter groups as the doc shows them: shared, contributed by backends, each node's own."""
    return {'common': (model_parameter('embedded:tiny_clip (clip_perception), embedded:tiny_vit (feature_extractor), '
                                       'embedded:tiny_owl (open_vocab_detector)'),)
            + COMMON_PARAMETERS,
            'backends': backend_parameters(), 'clip_perception': CLIP_PARAMETERS,
            'feature_extractor': FEATURE_PARAMETERS, 'open_vocab_detector': DETECTOR_PARAMETERS}


def used_by(table: str) -> dict[str, str]:
    """Return where each parameter of one table lands (a node's own entries first)."""
    return {**USED_BY, **USED_BY_NODE.get(table, {})}


def render(text: str) -> str:
    """Return `text` with every generated table replaced by the current one."""
    for name, specs in node_tables().items():
        pattern = re.compile(rf'(<!-- parameters:{name} begin[^>]*-->)(.*?)(<!-- parameters:{name} end -->)', re.S)
        if not pattern.search(text):
            raise SystemExit(f'{DOC}: no markers for the {name} table')
        table = markdown_table(specs, used_by(name))
        text = pattern.sub(lambda m: f'{m.group(1)}\n{table}\n{m.group(3)}', text)
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_parameter_docs', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--doc', type=Path, default=DOC, help='the architecture doc (default: docs/architecture.md)')
    parser.add_argument('--readme', type=Path, default=README, help='the README (default: README.md)')
    parser.add_argument('--write', action='store_true', help='rewrite the doc (default: print whether it is current)')
    args = parser.parse_args(argv)
    missing = [spec.name for name, specs in node_tables().items() for spec in specs if spec.name not in used_by(name)]
    if missing:
        print(f'robovision_parameter_docs: say where these parameters land (USED_BY): {missing}', file=sys.stderr)
        return 1
    stale = 0
    for path, render_doc in ((args.doc, render), (args.readme, render_readme)):
        text = path.read_text()
        rendered = render_doc(text)
        if args.write:
            path.write_text(rendered)
            print(f'{path}: {"updated" if rendered != text else "already current"}')
        else:
            print(f'{path}: {"current" if rendered == text else "stale (run with --write)"}')
            stale += rendered != text
    return 1 if stale else 0


if __name__ == '__main__':
    sys.exit(main())
