# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_gpu_check: the GPU path end to end through ROS in one go, with a results file (scripts/gpu_check.sh).

    robovision_gpu_check [--device cuda|cpu] [--out FILE] [--seconds 8] [--budget-s 420]

On cuda (CLIP-B/32 and B/16 with random weights, made here): the minimal rclpy node (the floor), clip_perception
torch fp16 eager and with cuda_graphs, feature_extractor B/16 fp16 with cuda_graphs, and 4 cameras batched, each
through ROS (image_source processes -> node -> receiver), plus the raw model eager vs graphs in one process. On cpu
(CI, so that the script cannot rot): the same rows with the embedded models and torch fp32; cuda_graphs rows are
left out (the parameter needs cuda) and say so. Nothing here claims a GPU figure that it did not measure: the
results file holds what this run measured, with the GPU targets of issue 26 beside them.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

# GPU targets (issue 26), e2e p50 through ROS on an H100/H200.
TARGETS_MS = {'clip-b32 fp16 cuda_graphs': 4.5, 'clip-b16 features fp16 cuda_graphs': 5.0,
              'clip-b32 fp16 cuda_graphs 4 cameras batched': 6.0}


def _row(run: Any, key: str, floor: Optional[Any]) -> dict[str, Any]:
    from robovision_ros.tools.benchmark import _p

    p50 = _p(run.latency_ms, 50)
    return {'key': key, 'config': run.config, 'p50_ms': p50, 'p95_ms': _p(run.latency_ms, 95),
            'results': run.results, 'published': run.published, 'node_peak_rss_mb': run.node_rss_mb,
            'torch_loaded': run.torch_loaded,
            'vs_floor': (p50 / _p(floor.latency_ms, 50)) if floor is not None and floor.latency_ms else None}


def raw_model_ms(model_dir: str, device: str, precision: str, graphs: bool, iterations: int = 50) -> float:
    """p50 of the image encoder alone on one prepared frame (torch backend), eager or replaying a CUDA graph."""
    import numpy as np

    from robovision_ros.encoder import PerceptionEncoder

    encoder = PerceptionEncoder(model_dir, 'torch', device, precision, options={'cuda_graphs': graphs})
    try:
        pixels = encoder.prepare([np.zeros((480, 640, 3), np.uint8)])
        times = []
        for i in range(iterations + 5):
            start = time.perf_counter()
            encoder.backend.encode_image(pixels)
            if i >= 5:
                times.append((time.perf_counter() - start) * 1e3)
        return float(np.percentile(times, 50))
    finally:
        encoder.close()


def plan(device: str, cache: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """Return the runs: (key, model dir, measure_ros keyword arguments)."""
    from robovision_ros.tools.benchmark import benchmark_model_dir

    if device == 'cuda':
        clip, features, precision = benchmark_model_dir('clip-b32', cache), benchmark_model_dir('clip-b16', cache), \
            'fp16'
        name, features_name = 'clip-b32', 'clip-b16'
    else:
        clip, features, precision = 'embedded:tiny_clip', 'embedded:tiny_vit', 'fp32'
        name, features_name = 'embedded clip', 'embedded vit'
    graphs = {'cuda_graphs': 'true'} if device == 'cuda' else None
    base = dict(backend='torch', precision=precision, device=device, batch=False, profile=True,
                executor_kind='single')
    runs = [(f'{name} {precision} minimal node', clip, {**base, 'minimal': True}),
            (f'{name} {precision} eager', clip, base),
            (f'{name} {precision} cuda_graphs', clip, {**base, 'extra': graphs}),
            (f'{features_name} features {precision} cuda_graphs', features,
             {**base, 'node_kind': 'feature_extractor', 'extra': graphs}),
            (f'{name} {precision} minimal node 4 cameras', clip, {**base, 'minimal': True, 'cameras': 4}),
            (f'{name} {precision} cuda_graphs 4 cameras batched', clip,
             {**base, 'cameras': 4, 'batch': True, 'extra': graphs})]
    if device != 'cuda':  # cuda_graphs needs device cuda: the rows run eager here and say so
        runs = [(key.replace('cuda_graphs', 'eager (cuda_graphs needs cuda)'), model, {**kwargs, 'extra': None})
                for key, model, kwargs in runs]
    return runs


def report(device: str, rows: list[dict[str, Any]], raw: dict[str, float], failures: list[str], elapsed_s: float,
           environment: str) -> str:
    lines = [f'# robovision_gpu_check on {device} ({time.strftime("%Y-%m-%d %H:%M")})', '', environment, '',
             f'Wall time of the checks: {elapsed_s:.0f} s.', '']
    if raw:
        lines += ['Raw model in one process (image encoder on a prepared frame, p50 of 50): ' +
                  '; '.join(f'{k} {v:.2f} ms' for k, v in raw.items()), '']
    lines += ['| Run | Configuration | e2e p50 / p95 (ms) | Frames with a result | vs minimal node | '
              'Node peak RSS (MB) |', '|---|---|---|---|---|---|']
    for row in rows:
        vs = f"{row['vs_floor']:.2f}x" if row['vs_floor'] is not None else '-'
        lines.append(f"| {row['key']} | {row['config']} | {row['p50_ms']:.2f} / {row['p95_ms']:.2f} | "
                     f"{row['results']}/{row['published']} | {vs} | {row['node_peak_rss_mb']:.0f} |")
    lines.append('')
    if device == 'cuda':
        lines += ['Against the GPU targets of issue 26 (e2e p50 through ROS, H100/H200):', '']
        measured = {row['key']: row['p50_ms'] for row in rows}
        for key, target in TARGETS_MS.items():
            value = measured.get(key)
            verdict = 'not measured' if value is None else ('met' if value <= target else 'missed')
            lines.append(f'- {key}: ' + (f'{value:.2f} ms' if value is not None else '-') +
                         f' (target <= {target} ms): {verdict}')
        lines.append('')
    else:
        lines += ['CPU mode: checks that the script, the nodes and the measurement run end to end; no GPU figure.', '']
    if failures:
        lines += ['Failures:', ''] + [f'- {failure}' for failure in failures] + ['']
    return '\n'.join(lines)


def environment_line(device: str) -> str:
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'
    return (f'Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), GPU: {gpu}, '
            f'device checked: {device}')


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_gpu_check', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--device', choices=('cuda', 'cpu'), default='cuda')
    parser.add_argument('--out', type=Path, default=Path('gpu_check_results.md'))
    parser.add_argument('--seconds', type=float, default=8.0, help='stream length of each run (10 Hz per camera)')
    parser.add_argument('--budget-s', type=float, default=420.0,
                        help='stop starting runs once this much time has passed (the rest are reported as skipped)')
    parser.add_argument('--cache', type=Path, default=Path.home() / '.cache' / 'robovision_ros' / 'bench')
    args = parser.parse_args(argv)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f'[gpu_check {time.strftime("%H:%M:%S")}] {message}', flush=True)

    import torch

    from robovision_ros.tools.benchmark import measure_ros

    if args.device == 'cuda' and not torch.cuda.is_available():
        print('robovision_gpu_check: error: --device cuda but torch finds no CUDA GPU '
              f'(torch {torch.__version__}); use --device cpu', file=sys.stderr)
        return 2
    environment = environment_line(args.device)
    log(environment)
    rows: list[dict[str, Any]] = []
    failures: list[str] = []
    floors: dict[int, Any] = {}
    raw: dict[str, float] = {}
    for key, model_dir, kwargs in plan(args.device, args.cache):
        if time.monotonic() - started > args.budget_s:
            failures.append(f'{key}: skipped, the time budget of {args.budget_s:.0f} s was spent')
            continue
        kwargs = dict(kwargs)
        cameras = kwargs.pop('cameras', 1)
        log(f'{key}: {model_dir}, {cameras} camera(s)')
        try:
            run = measure_ros(model_dir, cameras=cameras, seconds=args.seconds, rate_hz=10.0, **kwargs)
        except RuntimeError as error:
            failures.append(f'{key}: {error}')
            continue
        if run.minimal:
            floors[cameras] = run
        if run.results == 0:
            failures.append(f'{key}: no result arrived ({run.published} frames published)')
            continue
        rows.append(_row(run, key, None if run.minimal else floors.get(cameras)))
        log(f"{key}: p50 {rows[-1]['p50_ms']:.2f} ms, {run.results}/{run.published} frames")
    if args.device == 'cuda' and time.monotonic() - started < args.budget_s:
        clip = plan(args.device, args.cache)[0][1]
        raw = {'fp16 eager': raw_model_ms(clip, 'cuda', 'fp16', False),
               'fp16 cuda_graphs': raw_model_ms(clip, 'cuda', 'fp16', True)}
    elapsed = time.monotonic() - started
    text = report(args.device, rows, raw, failures, elapsed, environment)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix('.json').write_text(json.dumps(
        {'device': args.device, 'environment': environment, 'elapsed_s': elapsed, 'rows': rows, 'raw_model_ms': raw,
         'failures': failures}, indent=2, default=str))
    print(text, flush=True)
    log(f'wrote {args.out} and {args.out.with_suffix(".json")}')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
