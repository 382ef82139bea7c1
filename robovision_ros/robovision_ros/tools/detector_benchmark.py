# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_bench --detector: open_vocab_detector end to end through ROS, and what a query change costs.

    robovision_bench --detector [--detector-models tiny owlvit-b32 owlv2-b16] [--ros-seconds 20]
                     [--out docs/benchmarks.md]

Writes (or replaces) the section between `<!-- detector begin -->` and `<!-- detector end -->` of --out, leaving
the rest of the file as it is. Per model, in separate processes over DDS: image_source publishing 480x640 bgr8
scenes -> open_vocab_detector (onnxruntime, 20 text queries) -> a receiver; latency is receive time minus the
camera header stamp, the stage times are the ones each ObjectDetectionArray carries. Then, while frames keep
flowing, the text queries are changed 5 times to texts not seen before (`ros2 param set` through the parameter
service): how long the set takes to answer, how long until the first result with the new queries arrives, and
the frame latency meanwhile. In one process, the same change through DetectorEncoder: the text engine's time and
a check that the image engine did not run. Models owlvit-b32 and owlv2-b16 have random weights (the released
architectures and input sizes, 768x768 and 960x960): their timing means something, their boxes do not.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from robovision_ros.synthetic.scenes import LABELS
from robovision_ros.tools.child_processes import stop_processes

SECTION_BEGIN = '<!-- detector begin -->'
SECTION_END = '<!-- detector end -->'
QUERY_CHANGES = 5
# Camera rates per model: about what the node keeps up with on 2 CPU cores, so that latency is not queueing.
RATES_HZ = {'tiny': 10.0, 'owlvit-b32': 0.4, 'owlv2-b16': 0.06}
MIN_RESULTS = 6  # the steady window lasts at least this many frame intervals
MODELS = tuple(RATES_HZ)


def detector_model_dir(name: str, cache: Path) -> str:
    """'tiny' -> the embedded detector; 'owlvit-b32' / 'owlv2-b16' -> the released architectures, random weights."""
    if name == 'tiny':
        return 'embedded:tiny_owl'
    kind = {'owlvit-b32': 'owlvit', 'owlv2-b16': 'owlv2'}[name]
    directory = cache / f'{name}-random'
    if not (directory / 'model.safetensors').is_file():
        import torch
        from transformers import Owlv2Config, Owlv2ForObjectDetection, OwlViTConfig, OwlViTForObjectDetection

        from robovision_ros.synthetic.detector_training import corpus
        from robovision_ros.synthetic.tiny_models import init_owl_heads, make_tiny_owl, owl_preprocessor_config

        torch.manual_seed(0)
        config = Owlv2Config() if kind == 'owlv2' else OwlViTConfig()  # B/16 at 960, B/32 at 768
        model = init_owl_heads((Owlv2ForObjectDetection if kind == 'owlv2' else OwlViTForObjectDetection)(config))
        size = config.vision_config.image_size
        make_tiny_owl(directory, corpus(), kind=kind, num_merges=300, max_length=16, model=model.eval(),
                      preprocessor=owl_preprocessor_config(kind, size, (0.48145466, 0.4578275, 0.40821073),
                                                           (0.26862954, 0.26130258, 0.27577711)))
    return str(directory)


@dataclass
class DetectorRun:
    """What one model measured through ROS."""

    model: str
    rate_hz: float
    published: int
    latency_ms: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)  # preprocess/inference/postprocess_ms
    set_ms: list[float] = field(default_factory=list)  # set_parameters round trip
    applied_ms: list[float] = field(default_factory=list)  # set answered -> first result with the new queries
    latency_during_change_ms: list[float] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)  # in process: the text engine on the new texts
    image_runs_during_change: int = 0


def _p(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float('nan')


def measure_detector_ros(model_dir: str, name: str, backend: str, seconds: float, rate_hz: float,
                         log: Callable[[str], None]) -> DetectorRun:
    """image_source -> open_vocab_detector -> this process, then query changes while frames flow."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from ament_index_python.packages import get_package_share_directory

    from robovision_msgs.msg import ObjectDetectionArray
    from robovision_ros.tools import lifecycle_client

    profile = Path(get_package_share_directory('robovision_ros')) / 'config' / 'fastdds_profile.xml'
    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(profile))
    namespace = f'/detbench_{os.getpid()}_{int(time.monotonic() * 1000) % 100000}'
    topic = f'{namespace}/camera/image_raw'
    seconds = max(seconds, MIN_RESULTS / rate_hz)
    frames = 0  # no limit: the camera runs until the measurement ends (stopped with the node)
    node_cmd = [sys.executable, '-m', 'robovision_ros.nodes.open_vocab_detector', '--ros-args', '-r',
                f'__ns:={namespace}', '-p', f'model:={model_dir}', '-p', f'backend:={backend}',
                '-p', f'image_topics:={json.dumps([topic])}', '-p', f'queries:={json.dumps(list(LABELS))}']
    processes = [subprocess.Popen(node_cmd, env=env, cwd='/', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('detector_bench_receiver', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received: list[tuple[float, Any]] = []
    arrivals: list[float] = []  # time.perf_counter() at each result

    def on_result(msg: Any) -> None:
        now = node.get_clock().now().nanoseconds
        arrivals.append(time.perf_counter())
        received.append(((now - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6, msg))

    node.create_subscription(ObjectDetectionArray, f'{namespace}/open_vocab_detector/object_detections',
                             on_result, 100)
    target = f'{namespace}/open_vocab_detector'
    run = DetectorRun(name, rate_hz, 0)
    try:
        if not (lifecycle_client.change_state(node, executor, target, 'configure', 1800.0)
                and lifecycle_client.change_state(node, executor, target, 'activate')):
            raise RuntimeError(f'open_vocab_detector did not activate with {model_dir}')
        processes.append(subprocess.Popen(
            [sys.executable, '-m', 'robovision_ros.nodes.image_source', '--ros-args', '-r', f'image_raw:={topic}',
             '-p', f'rate_hz:={rate_hz}', '-p', f'max_frames:={frames}', '-p', 'wait_for_subscribers:=1',
             '-p', 'pregenerate:=16'], env=env, cwd='/', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        lifecycle_client.spin_until(executor, lambda: len(received) > 0, 120.0)
        started = len(received)
        lifecycle_client.spin_until(executor, lambda: False, seconds)
        steady = received[started:]
        run.published = int(seconds * rate_hz)
        run.latency_ms = [latency for latency, _ in steady]
        for stage in ('preprocess_ms', 'inference_ms', 'postprocess_ms'):
            run.stages[stage] = [getattr(msg, stage) for _, msg in steady]
        log(f'{name}: {len(steady)} results in {seconds:.0f} s, p50 {_p(run.latency_ms, 50):.1f} ms; '
            'changing the queries')
        for change in range(QUERY_CHANGES):
            queries = [f'{label} number {change}' for label in LABELS[:4]]  # new texts: nothing cached
            before = len(received)
            start = time.perf_counter()
            (result,) = lifecycle_client.set_parameters(node, executor, target, {'queries': queries})
            answered = time.perf_counter()
            if not result.successful:
                raise RuntimeError(f'query change refused: {result.reason}')
            run.set_ms.append((answered - start) * 1e3)

            def applied() -> bool:
                return any(list(msg.queries) == queries for _, msg in received[before:])

            lifecycle_client.spin_until(executor, applied, 60.0 + 4.0 / rate_hz)
            first = next((i for i, (_, msg) in enumerate(received[before:]) if list(msg.queries) == queries), None)
            if first is None:
                raise RuntimeError(f'the query change {change} was never applied')
            run.latency_during_change_ms += [latency for latency, _ in received[before:before + first + 1]]
            run.applied_ms.append((arrivals[before + first] - answered) * 1e3)
            lifecycle_client.spin_until(executor, lambda: False, max(1.0, 2.0 / rate_hz))
    finally:
        stop_processes(processes)
        lifecycle_client.forget_clients(node)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    return run


def measure_query_change_in_process(model_dir: str, backend: str, run: DetectorRun) -> None:
    """Time the same query changes through DetectorEncoder (the text engine) and count the image engine's runs."""
    from robovision_ros.detection_queries import DetectionQuerySpec
    from robovision_ros.detector import DetectorEncoder

    detector = DetectorEncoder(model_dir, backend, 'cpu', 'fp32')
    try:
        template = ('a photo of a {}.',)
        detector.build_queries(DetectionQuerySpec(LABELS, template, ()), 1)
        runs = detector.image_runs
        for change in range(QUERY_CHANGES):
            queries = tuple(f'{label} variant {change}' for label in LABELS[:4])
            start = time.perf_counter()
            detector.build_queries(DetectionQuerySpec(queries, template, ()), change + 2)
            run.encode_ms.append((time.perf_counter() - start) * 1e3)
        run.image_runs_during_change = detector.image_runs - runs
    finally:
        detector.close()


def section(runs: Sequence[DetectorRun], backend: str, machine: str, load: str) -> str:
    """Render the benchmarks.md section of the detector runs."""
    lines = [SECTION_BEGIN, f'## Open-vocabulary detection (open_vocab_detector), {time.strftime("%Y-%m-%d")}', '',
             'Produced by `robovision_bench --detector` (robovision_ros/tools/detector_benchmark.py). '
             f'{machine}. {load}', '',
             f'End to end through ROS: image_source (480x640 bgr8, the rate below) -> open_vocab_detector ({backend} '
             'fp32 on CPU, 20 text queries) -> a receiver process; latency is receive time minus the camera header '
             'stamp; stage times are those the ObjectDetectionArray messages carry. owlvit-b32 (768x768, 576 '
             'patches) and owlv2-b16 (960x960, 3600 patches) have random weights: timing only.', '',
             '| Model | Camera rate | Results/s | Publish-to-result p50 / p95 (ms) | Preprocess p50 (ms) | '
             'Image engine p50 (ms) | Decode p50 (ms) |', '|---|---|---|---|---|---|---|']
    for run in runs:
        seconds = run.published / run.rate_hz
        lines.append(f'| {run.model} | {run.rate_hz:g} Hz | {len(run.latency_ms) / seconds:.2f} | '
                     f'{_p(run.latency_ms, 50):.1f} / {_p(run.latency_ms, 95):.1f} | '
                     f'{_p(run.stages["preprocess_ms"], 50):.1f} | {_p(run.stages["inference_ms"], 50):.1f} | '
                     f'{_p(run.stages["postprocess_ms"], 50):.2f} |')
    lines += ['', f'A query change, {QUERY_CHANGES} times per model while frames flow: the text queries set to 4 '
              'texts not seen before (`ros2 param set ... queries`). *Set answered*: the parameter service round '
              'trip; *applied after*: from that answer to the first result decoded with the new queries (the text '
              'engine on its own thread, then the next frame); *frame latency meanwhile*: every result from the set '
              'to that first one. *Text engine*: the same change in one process (DetectorEncoder.build_queries), '
              'and how often the image engine ran during it. A text-query change never runs the image engine; '
              'until it shows, a result waits for the text engine, then for the next frame and that frame\'s '
              'processing.', '',
              '| Model | Set answered p50 (ms) | Applied after p50 / max (ms) | Frame latency meanwhile p50 / max '
              '(ms) | Text engine, 4 texts p50 (ms) | Image-engine runs during the changes |',
              '|---|---|---|---|---|---|']
    for run in runs:
        lines.append(f'| {run.model} | {_p(run.set_ms, 50):.1f} | {_p(run.applied_ms, 50):.0f} / '
                     f'{max(run.applied_ms, default=float("nan")):.0f} | {_p(run.latency_during_change_ms, 50):.1f} / '
                     f'{max(run.latency_during_change_ms, default=float("nan")):.1f} | {_p(run.encode_ms, 50):.1f} '
                     f'| {run.image_runs_during_change} |')
    lines.append(SECTION_END)
    return '\n'.join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace the detector section of `path` (appended when the file has none), leaving the rest as it is."""
    current = path.read_text() if path.is_file() else ''
    pattern = re.compile(re.escape(SECTION_BEGIN) + '.*?' + re.escape(SECTION_END), re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text, current)
    else:
        updated = current.rstrip('\n') + ('\n\n' if current else '') + text + '\n'
    path.write_text(updated)


def run_detector_benchmark(models: Sequence[str], seconds: float, out: Path, cache: Path, machine: str,
                           log: Callable[[str], None], backend: str = 'onnxruntime') -> str:
    """Measure each model, write the section into `out`; return the section. `machine` describes the machine."""
    runs = []
    for name in models:
        model_dir = detector_model_dir(name, cache)
        log(f'{name}: {model_dir}')
        run = measure_detector_ros(model_dir, name, backend, seconds, RATES_HZ[name], log)
        measure_query_change_in_process(model_dir, backend, run)
        runs.append(run)
    load = f'Load average when the runs ended: {os.getloadavg()[0]:.1f} (other jobs shared the cores).'
    text = section(runs, backend, machine, load)
    write_section(out, text)
    return text


def main(argv: Optional[Sequence[str]] = None, machine: str = '') -> int:
    """Run the detector section (robovision_bench --detector passes `machine`, its machine description)."""
    import argparse

    parser = argparse.ArgumentParser(prog='robovision_bench --detector', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--detector-models', nargs='+', default=list(MODELS), choices=MODELS)
    parser.add_argument('--ros-seconds', type=float, default=20.0)
    parser.add_argument('--out', type=Path, default=Path('benchmarks.md'))
    parser.add_argument('--cache', type=Path, default=Path.home() / '.cache' / 'robovision_ros' / 'bench')
    args, _ = parser.parse_known_args(argv)

    def log(message: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)

    print(run_detector_benchmark(args.detector_models, args.ros_seconds, args.out, args.cache, machine, log))
    return 0
