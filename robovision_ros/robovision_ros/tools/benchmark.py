# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_bench: latency, memory and accuracy per backend and precision, in process and through ROS.

Against the naive pipeline, and end to end through ROS. Everything is measured side by side in one run on the machine it
runs on.

    robovision_bench [--models embedded clip-b32 clip-b16] [--iterations 20] [--ros-seconds 10]
                     [--out docs/benchmarks.md] [--skip-ros]
    robovision_bench --detector [--detector-models tiny owlvit-b32 owlv2-b16]   (tools/detector_benchmark.py)

Model level (one process, variants interleaved round-robin per iteration, warm-up excluded, p50/p95):
  naive      the tutorial pipeline: HF processor on a PIL image, CLIPModel.get_image_features, text features of
             every label recomputed per frame, softmax (pooled projected embeddings, as transformers 5 returns them);
  ours       each available backend x precision: raw model latency, full-frame latency (message bytes to
             zero-shot scores), peak RSS (each variant in its own process), embedding cosine and top-1 agreement
             against torch fp32, and zero-shot accuracy on the embedded model's held-out scenes.
End to end through ROS (separate processes over DDS): image_source publishing 480x640 bgr8, clip_perception
active, a receiver measuring publish-to-result latency from the header stamp, throughput and the fraction of
published frames that produced a result; 1 and 4 cameras, batching on and off, with and without the shipped DDS
profile. Models clip-b32/clip-b16 have random weights (timing does not depend on weight values). The floor: a
minimal hand-written rclpy node (tools/minimal_node.py: subscribe, the same session and preprocessing, publish) in
the same run; clip_perception's latency and peak RSS are given against it.
Machine load: each table records the load average and the CPU time other processes took while it ran, and is marked
not comparable when they took more than --max-foreign-load cores.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from robovision_ros.image_codec import decode_raw_image, encode_raw_image
from robovision_ros.synthetic.scenes import LABELS, SceneGenerator
from robovision_ros.tools.child_processes import stop_processes

TEMPLATE = 'a photo of a {}.'
FRAME_HW = (480, 640)
BENCH_SEED = 9003


# --- models -------------------------------------------------------------------------------------------------

def benchmark_model_dir(name: str, cache: Path) -> str:
    """'embedded' -> the shipped tiny CLIP; 'clip-b32' / 'clip-b16' -> ViT-B CLIPs with random weights."""
    if name == 'embedded':
        return 'embedded:tiny_clip'
    patch = {'clip-b32': 32, 'clip-b16': 16}[name]
    directory = cache / f'{name}-random'
    if not (directory / 'model.safetensors').is_file():
        import torch
        from transformers import CLIPConfig, CLIPModel

        from robovision_ros.synthetic.tiny_models import make_tiny_clip
        from robovision_ros.synthetic.training import corpus

        torch.manual_seed(0)
        model = CLIPModel(CLIPConfig(vision_config={'patch_size': patch}))
        make_tiny_clip(directory, corpus(), image_size=224, num_merges=300, max_length=77, model=model)
        # CLIP's own image statistics, as the released ViT-B models use
        from robovision_ros.synthetic.tiny_models import clip_preprocessor_config

        (directory / 'preprocessor_config.json').write_text(json.dumps(clip_preprocessor_config(
            224, (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))))
    return str(directory)


def bench_frames(count: int) -> list[tuple[bytes, Any]]:
    """480x640 bgr8 message payloads of generated scenes, with their scenes (ground truth)."""
    generator = SceneGenerator(BENCH_SEED, *FRAME_HW)
    frames = []
    for i in range(count):
        scene = generator.scene(i)
        data, _ = encode_raw_image(scene.image, 'bgr8')
        frames.append((data, scene))
    return frames


# --- variants -----------------------------------------------------------------------------------------------

class NaivePipeline:
    """What tutorials do: everything through the HF processor and model, text re-encoded every frame."""

    name = 'naive (HF processor + CLIPModel, text per frame)'

    def __init__(self, model_dir: str, device: str = 'cpu') -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        from robovision_ros.model_dir import resolve_model_dir

        path = str(resolve_model_dir(model_dir))
        self.torch = torch
        self.device = device
        self.processor = CLIPProcessor.from_pretrained(path)
        self.model = CLIPModel.from_pretrained(path).eval().to(device)
        self.texts = [TEMPLATE.format(label) for label in LABELS]

    def _scores(self, pixel_values: Any) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            image = self.model.get_image_features(pixel_values=pixel_values.to(self.device)).pooler_output
            tokens = self.processor(text=self.texts, padding=True, return_tensors='pt').to(self.device)
            text = self.model.get_text_features(**tokens).pooler_output
            image = image / image.norm(dim=-1, keepdim=True)
            text = text / text.norm(dim=-1, keepdim=True)
            probs = (self.model.logit_scale.exp() * image @ text.T).softmax(dim=-1)
        return image[0].float().cpu().numpy(), probs[0].float().cpu().numpy()

    def raw(self, pixel_values: Any) -> None:
        self._scores(pixel_values)

    def pixels(self, data: bytes) -> Any:
        from PIL import Image

        rgb = np.frombuffer(data, np.uint8).reshape(*FRAME_HW, 3)[..., ::-1]
        return self.processor(images=Image.fromarray(np.ascontiguousarray(rgb)), return_tensors='pt')['pixel_values']

    def frame(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        return self._scores(self.pixels(data))

    def close(self) -> None:
        self.model = None


class EngineVariant:
    """Our encoder engine on one backend and precision, vocabulary encoded once."""

    def __init__(self, model_dir: str, backend: str, precision: str, device: str = 'cpu') -> None:
        from robovision_ros.encoder import PerceptionEncoder

        self.name = f'{backend} {precision}' + (f' ({device})' if device != 'cpu' else '')
        self.encoder = PerceptionEncoder(model_dir, backend, device, precision)
        self.vocabulary = self.encoder.build_vocabulary(LABELS, [TEMPLATE], 1)

    def pixels(self, data: bytes) -> Any:
        return self.encoder.prepare([decode_raw_image(data, 'bgr8', FRAME_HW[1], FRAME_HW[0], FRAME_HW[1] * 3)])

    def raw(self, pixel_values: np.ndarray) -> None:
        self.encoder.backend.encode_image(pixel_values)

    def frame(self, data: bytes) -> tuple[np.ndarray, np.ndarray]:
        rgb = decode_raw_image(data, 'bgr8', FRAME_HW[1], FRAME_HW[0], FRAME_HW[1] * 3)
        (feature,), _ = self.encoder.encode_images([rgb])
        result = self.encoder.score(feature, self.vocabulary)
        embedding = feature.global_embedding
        return embedding / np.linalg.norm(embedding), result.scores

    def close(self) -> None:
        self.encoder.close()


def variants_for(device: str) -> tuple[tuple[str, str], ...]:
    """
    Return what is timed on `device`.

    The naive pipeline, then each installed backend's precisions there as its capabilities declare them: only
    configurations a node's parameters select. Left out: CUDA graphs (scripts/gpu_check.sh measures them through
    ROS), remote backends (triton), static int8, which needs a calibrated Q/DQ file made beforehand, and onnxruntime on
    CUDA without a GPU provider.
    """
    import importlib.util

    from robovision_ros.backends.base import INT8_STATIC_QDQ
    from robovision_ros.backends.registry import backend_capabilities

    variants: list[tuple[str, str]] = [('naive', 'fp32')]
    for capabilities in backend_capabilities().values():
        if capabilities.remote or importlib.util.find_spec(capabilities.module) is None:
            continue  # a remote backend needs a server: robovision_ros.tools.triton_bench measures it
        if capabilities.name == 'onnxruntime' and device == 'cuda':
            import onnxruntime

            if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
                continue
        for precision in capabilities.precisions_on(device):
            if precision == 'int8' and capabilities.int8 == INT8_STATIC_QDQ:
                continue
            variants.append((capabilities.name, precision))
    return tuple(variants)


def make_variant(model_dir: str, backend: str, precision: str, device: str = 'cpu') -> Any:
    if backend == 'naive':
        return NaivePipeline(model_dir, device)
    return EngineVariant(model_dir, backend, precision, device)


# --- measurement --------------------------------------------------------------------------------------------

@dataclass
class VariantResult:
    name: str
    raw_ms: list[float] = field(default_factory=list)
    frame_ms: list[float] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    top1: list[int] = field(default_factory=list)
    memory_mb: float = float('nan')
    gpu_memory_mb: float = 0.0
    zero_shot_accuracy: Optional[float] = None
    accuracy: str = ''  # worst global-embedding cosine vs torch fp32, as the model table prints it


def _p(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float('nan')


@dataclass
class MachineLoad:
    """The machine's load while one table was measured, and whether the table is comparable."""

    load_min: float  # 1-minute load average, lowest and highest sample
    load_max: float
    foreign_cores: float  # CPU time other processes (not this benchmark and its children) used, in cores on average
    limit: float  # foreign_cores above this makes the table not comparable

    @property
    def comparable(self) -> bool:
        return self.foreign_cores <= self.limit

    def line(self) -> str:
        verdict = 'comparable' if self.comparable else \
            f'**NOT comparable: other processes used more than {self.limit:.2f} cores; rerun on a quieter machine**'
        return (f'Machine load during this table: 1-minute load average {self.load_min:.1f}-{self.load_max:.1f} on '
                f'{os.cpu_count()} cores (the benchmark\'s own processes included); other processes used '
                f'{self.foreign_cores:.2f} cores on average: {verdict}.\n')


class LoadMonitor:
    """
    Record the machine load while a table is measured.

    The noise that matters is CPU time taken by processes other than the benchmark: /proc/stat's busy time minus
    this process's and its (waited-for) children's CPU time. The load average, which counts the benchmark's own
    processes too, is recorded alongside.
    """

    def __init__(self, limit_cores: float) -> None:
        import threading

        self.limit = limit_cores
        self._loads: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _busy_seconds() -> float:
        fields = [int(v) for v in Path('/proc/stat').read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal (guest is inside user)
        return busy / os.sysconf('SC_CLK_TCK')

    @staticmethod
    def _own_seconds() -> float:
        times = os.times()
        return times.user + times.system + times.children_user + times.children_system

    def _sample(self) -> None:
        while not self._stop.wait(2.0):
            self._loads.append(os.getloadavg()[0])

    def __enter__(self) -> 'LoadMonitor':
        self._start = (time.monotonic(), self._busy_seconds(), self._own_seconds())
        self._loads.append(os.getloadavg()[0])
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._loads.append(os.getloadavg()[0])
        wall, busy, own = (time.monotonic(), self._busy_seconds(), self._own_seconds())
        foreign = max(0.0, (busy - self._start[1]) - (own - self._start[2])) / max(wall - self._start[0], 1e-6)
        self.result = MachineLoad(min(self._loads), max(self._loads), foreign, self.limit)


def measure_models(model_dir: str, device: str, iterations: int, warmup: int,
                   log: Callable[[str], None]) -> list[VariantResult]:
    """Interleaved round-robin timing of every variant on the same frames."""
    frames = bench_frames(8)
    variants = []
    for backend, precision in variants_for(device):
        log(f'  loading {backend} {precision} on {device}')
        variants.append(make_variant(model_dir, backend, precision, device))
    results = [VariantResult(v.name) for v in variants]
    pixels = [v.pixels(frames[0][0]) for v in variants]
    for iteration in range(warmup + iterations):
        order = list(range(len(variants)))
        order = order[iteration % len(order):] + order[:iteration % len(order)]  # rotate who runs first
        data = frames[iteration % len(frames)][0]
        for k in order:
            variants[k].raw(pixels[k])  # untimed: the first call after another framework ran pays its wake-up
            start = time.perf_counter()
            variants[k].raw(pixels[k])
            raw = (time.perf_counter() - start) * 1e3
            start = time.perf_counter()
            embedding, probs = variants[k].frame(data)
            full = (time.perf_counter() - start) * 1e3
            if iteration >= warmup:
                results[k].raw_ms.append(raw)
                results[k].frame_ms.append(full)
                if iteration - warmup < len(frames):
                    results[k].embeddings.append(embedding)
                    results[k].top1.append(int(np.argmax(probs)))
    if model_dir == 'embedded:tiny_clip':
        held_out = SceneGenerator(9001, *FRAME_HW, min_objects=1, max_objects=1)
        scenes = [held_out.scene(i) for i in range(60)]
        payloads = [encode_raw_image(s.image, 'bgr8')[0] for s in scenes]
        for variant, result in zip(variants, results):
            hits = [LABELS[int(np.argmax(variant.frame(p)[1]))] == s.labels[0] for p, s in zip(payloads, scenes)]
            result.zero_shot_accuracy = float(np.mean(hits))
    for variant in variants:
        variant.close()
    return results


def memory_of_variant(model_dir: str, backend: str, precision: str, device: str = 'cpu') -> tuple[float, float]:
    """Peak RSS and peak GPU memory (MB) of a fresh process that loads the variant and runs three frames."""
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child started by a large
    # parent would report the parent's peak.
    # torch is imported only where the variant needs it (the naive pipeline, backend torch) or to read GPU memory:
    # imported here for every variant, it would add its ~250 MB to variants that never load it.
    gpu_memory = 'import torch; torch.cuda.max_memory_allocated()' if device == 'cuda' else '0'
    code = ('import re; from robovision_ros.tools.benchmark import make_variant, bench_frames; '
            f'v = make_variant({model_dir!r}, {backend!r}, {precision!r}, {device!r}); '
            '[v.frame(d) for d, _ in bench_frames(3)]; '
            f'gpu = {gpu_memory}; '
            'hwm = re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1); '
            'print("PEAK_KB", hwm, gpu // 1024)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=900,
                         cwd='/', env=dict(os.environ)).stdout
    for line in out.splitlines():
        if line.startswith('PEAK_KB'):
            _, rss, gpu = line.split()
            return int(rss) / 1024, int(gpu) / 1024
    return float('nan'), float('nan')


# --- end to end through ROS ---------------------------------------------------------------------------------

@dataclass
class RosResult:
    config: str
    latency_ms: list[float]
    published: int
    results: int
    seconds: float  # length of the published stream
    node_rss_mb: float = float('nan')  # peak RSS (VmHWM) of the node process, read before it is stopped
    torch_loaded: Optional[bool] = None  # whether the node process had libtorch mapped (None: unknown)
    minimal: bool = False  # the minimal hand-written node (the floor), not clip_perception
    cameras: int = 1
    accuracy: str = ''  # the variant's accuracy from the model table (cosine vs torch fp32)


def process_peak_rss_mb(pid: int) -> float:
    """Peak RSS (VmHWM) of a running process in MB, NaN if it is gone."""
    try:
        for line in Path(f'/proc/{pid}/status').read_text().splitlines():
            if line.startswith('VmHWM:'):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float('nan')


def process_maps_torch(pid: int) -> Optional[bool]:
    """Whether a running process has libtorch mapped (torch imported), None if it is gone."""
    try:
        return 'libtorch' in Path(f'/proc/{pid}/maps').read_text()
    except OSError:
        return None


def measure_ros(model_dir: str, backend: str, precision: str, cameras: int, batch: bool, profile: bool,
                seconds: float, rate_hz: float, executor_kind: str = 'single', minimal: bool = False,
                node_kind: str = 'clip_perception', device: str = 'cpu',
                extra: Optional[dict[str, str]] = None) -> RosResult:
    """
    image_source x cameras -> a perception node (or the minimal node) -> this process, each its own process, over DDS.

    `node_kind` clip_perception (zero-shot labels) or feature_extractor (patch features); `extra`: further node
    parameters (name -> value as `-p name:=value` takes it). The node's peak RSS and whether it mapped libtorch are
    read from /proc before it is stopped.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from robovision_ros.tools import lifecycle_client
    from robovision_msgs.msg import PatchFeatures, ZeroShotLabels

    env = dict(os.environ)
    profile_path = _shipped_profile()
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile_path) if profile else ''
    namespace = f'/bench_{os.getpid()}_{int(time.monotonic() * 1000) % 100000}'
    topics = [f'{namespace}/cam{i}/image_raw' for i in range(cameras)]
    frames = int(seconds * rate_hz)
    node_cmd = [sys.executable, '-m', f'robovision_ros.nodes.{node_kind}', '--ros-args', '-r',
                f'__ns:={namespace}', '-p', f'model:={model_dir}', '-p', f'backend:={backend}',
                '-p', f'device:={device}', '-p', f'precision:={precision}', '-p', f'image_topics:={json.dumps(topics)}',
                '-p', f'batch:={str(batch).lower()}', '-p', f'executor:={executor_kind}']
    if node_kind == 'clip_perception':
        node_cmd += ['-p', 'localize:=false', '-p', f'labels:={json.dumps(list(LABELS))}',
                     '-p', 'presence_queries:=["red cup"]']
    for name, value in (extra or {}).items():
        node_cmd += ['-p', f'{name}:={value}']
    if minimal:
        node_kind = 'clip_perception'
        node_cmd = [sys.executable, '-m', 'robovision_ros.tools.minimal_node', model_dir, backend, precision, *topics,
                    '--device', device, '--labels', *LABELS, '--ros-args', '-r', f'__ns:={namespace}']
    processes = [subprocess.Popen(node_cmd, env=env, cwd='/', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('bench_receiver', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    latencies: list[float] = []
    count = [0]

    def on_result(msg: Any) -> None:
        now = node.get_clock().now().nanoseconds
        latencies.append((now - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)
        count[0] += 1

    target = f'{namespace}/{node_kind}'
    result_type, result_topic = (ZeroShotLabels, f'{target}/zero_shot_labels') if node_kind == 'clip_perception' \
        else (PatchFeatures, f'{target}/patch_features')
    node.create_subscription(result_type, result_topic, on_result, 100)
    rss, torch_loaded = float('nan'), None
    try:
        if minimal:  # no lifecycle: its publisher appears once the model is loaded
            started = lifecycle_client.spin_until(
                executor, lambda: node.count_publishers(result_topic) > 0 or processes[0].poll() is not None, 900.0)
            if not started or processes[0].poll() is not None:
                raise RuntimeError(f'the minimal node did not start for {backend} {precision} '
                                   f'(exit code {processes[0].poll()})')
        elif not (lifecycle_client.change_state(node, executor, target, 'configure', 600.0)
                  and lifecycle_client.change_state(node, executor, target, 'activate')):
            raise RuntimeError(f'{node_kind} did not activate for {backend} {precision}')
        for i, topic in enumerate(topics):
            processes.append(subprocess.Popen(
                [sys.executable, '-m', 'robovision_ros.nodes.image_source', '--ros-args', '-r',
                 f'image_raw:={topic}', '-p', f'rate_hz:={rate_hz}', '-p', f'max_frames:={frames}',
                 '-p', f'seed:={i}', '-p', 'wait_for_subscribers:=1', '-p', 'pregenerate:=16'],
                env=env, cwd='/', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        lifecycle_client.spin_until(executor, lambda: False, seconds + 8.0)  # the stream, then the last results
        rss, torch_loaded = process_peak_rss_mb(processes[0].pid), process_maps_torch(processes[0].pid)
    finally:
        stop_processes(processes)
        lifecycle_client.forget_clients(node)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    on = f' on {device}' if device != 'cpu' else ''
    options = ''.join(f', {name} {value}' for name, value in (extra or {}).items())
    plural = 's' if cameras > 1 else ''
    if minimal:
        name = f'minimal rclpy node (the floor), {backend} {precision}{on}, {cameras} camera{plural}'
    else:
        name = f'{node_kind} {backend} {precision}{on}{options}, {cameras} camera{plural}, ' \
               f'batch {"on" if batch else "off"}, DDS profile {"on" if profile else "off"}, {executor_kind} executor'
    return RosResult(name, latencies, frames * cameras, count[0], frames / rate_hz, rss, torch_loaded, minimal,
                     cameras)


def transport_costs(repeats: int = 50) -> str:
    """
    Measure what a raw (serialized) subscription could save.

    rclpy's (de)serialisation of one 480x640 bgr8 Image, against the decode of its data into the RGB array the
    encoder takes (a view, no copy).
    """
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image

    data, step = encode_raw_image(bench_frames(1)[0][1].image, 'bgr8')
    msg = Image(height=FRAME_HW[0], width=FRAME_HW[1], encoding='bgr8', step=step, data=data)
    timings = {'serialize': [], 'deserialize': [], 'decode (view)': []}
    for _ in range(repeats):
        start = time.perf_counter()
        blob = serialize_message(msg)
        timings['serialize'].append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        received = deserialize_message(blob, Image)
        timings['deserialize'].append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        decode_raw_image(received.data, received.encoding, received.width, received.height, received.step)
        timings['decode (view)'].append((time.perf_counter() - start) * 1e3)
    rows = ' | '.join(f'{name} {_p(values, 50):.3f} ms' for name, values in timings.items())
    return f'Transport of one 921,600-byte Image in rclpy (p50 of {repeats}): {rows}\n'


def _shipped_profile() -> Path:
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory('robovision_ros')) / 'config' / 'fastdds_profile.xml'


# --- report -------------------------------------------------------------------------------------------------

def machine_description() -> str:
    import onnxruntime
    import torch
    import transformers

    cpu = platform.processor() or 'unknown CPU'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'
    try:
        import openvino

        openvino_version = f', openvino {openvino.get_version().split("-")[0]}'
    except ImportError:
        openvino_version = ''
    return (f'{cpu}, {os.cpu_count()} cores, GPU: {gpu}; Python {platform.python_version()}, torch '
            f'{torch.__version__}, onnxruntime {onnxruntime.__version__}{openvino_version}, transformers '
            f'{transformers.__version__}')


def model_table(model: str, device: str, results: list[VariantResult]) -> str:
    naive = results[0]
    # The fp32 reference: torch fp32 (the model as trained), else the first fp32 variant.
    reference = next((r for r in results if r.name == 'torch fp32'),
                     next((r for r in results[1:] if r.name.endswith('fp32')), results[1]))
    naive_frame = _p(naive.frame_ms, 50)
    memory = 'Memory (MB): peak RSS / GPU' if device == 'cuda' else 'Memory (MB): peak RSS'
    lines = [f'### {model} on {device}', '',
             '| Optimization | Latency (ms) frame p50 / p95 | Raw model (ms) p50 | Speed-up vs naive | '
             f'{memory} | Accuracy: cosine vs fp32 / top-1 agreement / zero-shot |',
             '|---|---|---|---|---|---|']
    for result in results:
        cosine = min(float(a @ b) for a, b in zip(result.embeddings, reference.embeddings))
        agreement = float(np.mean([a == b for a, b in zip(result.top1, reference.top1)]))
        result.accuracy = f'{cosine:.4f}'
        zero_shot = f'{result.zero_shot_accuracy:.2f}' if result.zero_shot_accuracy is not None else 'n/a'
        lines.append(f'| {result.name} | {_p(result.frame_ms, 50):.1f} / {_p(result.frame_ms, 95):.1f} | '
                     f'{_p(result.raw_ms, 50):.1f} | {naive_frame / _p(result.frame_ms, 50):.1f}x | '
                     f'{result.memory_mb:.0f}' + (f' / {result.gpu_memory_mb:.0f}' if device == 'cuda' else '') +
                     f' | {cosine:.4f} / {agreement:.2f} / {zero_shot} |')
    return '\n'.join(lines) + '\n'


def ros_table(model: str, runs: list[RosResult], naive_p50: float) -> str:
    """
    Return the end-to-end table: each row a configuration of the node's parameters, or the minimal node (the floor).

    Latency and peak RSS are also given against the minimal node with the same number of cameras in the same run.
    """
    floors = {run.cameras: run for run in runs if run.minimal}
    lines = [f'### End to end through ROS: {model}', '',
             '| Configuration | Publish-to-result p50 / p95 (ms) | Results/s | Frames with a result | '
             'Speed-up vs naive | e2e p50 vs minimal node | Node peak RSS (MB) | RSS vs minimal node | '
             'torch in the node | Accuracy: cosine vs fp32 |', '|---|---|---|---|---|---|---|---|---|---|']
    for run in runs:
        p50 = _p(run.latency_ms, 50)
        floor = floors.get(run.cameras)
        vs_e2e = f'{p50 / _p(floor.latency_ms, 50):.2f}x' if floor and not run.minimal and floor.latency_ms else '-'
        vs_rss = f'{run.node_rss_mb / floor.node_rss_mb:.2f}x' if floor and not run.minimal else '-'
        torch_loaded = {True: 'yes', False: 'no', None: '?'}[run.torch_loaded]
        lines.append(f'| {run.config} | {p50:.1f} / {_p(run.latency_ms, 95):.1f} | '
                     f'{run.results / run.seconds:.1f} | {run.results}/{run.published} '
                     f'({run.results / max(run.published, 1):.0%}) | {naive_p50 / p50:.1f}x | {vs_e2e} | '
                     f'{run.node_rss_mb:.0f} | {vs_rss} | {torch_loaded} | {run.accuracy or "-"} |')
    return '\n'.join(lines) + '\n'


# (cameras, batch, DDS profile, executor, backend, precision, minimal node): the end-to-end rows, in order.
# FASTEST as backend: the int8 backend with the lowest raw-model p50 in this run's model table; RUNNER_UP: the next.
FASTEST, RUNNER_UP = 'fastest', 'runner-up'
ROS_RUNS = ((1, False, True, 'single', FASTEST, 'int8', True),
            (1, False, True, 'multi', FASTEST, 'int8', False),
            (1, False, True, 'single', FASTEST, 'int8', False),
            (1, False, True, 'multi', RUNNER_UP, 'int8', False),
            (4, False, True, 'single', FASTEST, 'int8', True),
            (4, False, True, 'multi', FASTEST, 'int8', False),
            (4, True, True, 'multi', FASTEST, 'int8', False),
            (4, True, True, 'multi', RUNNER_UP, 'int8', False),
            (4, False, True, 'single', FASTEST, 'int8', False),
            (4, True, True, 'single', FASTEST, 'int8', False))


def plot(path: Path, all_results: dict[str, list[VariantResult]]) -> None:
    """Bar chart of full-frame p50 latency per variant and model (PNG, drawn with OpenCV)."""
    import cv2

    rows = [(f'{model}: {r.name.split(" (")[0]}', _p(r.frame_ms, 50)) for model, results in all_results.items()
            for r in results]
    width, bar_h, left = 1000, 26, 330
    image = np.full((60 + bar_h * len(rows), width, 3), 255, np.uint8)
    cv2.putText(image, 'full-frame latency p50 (ms), log scale', (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0),
                2)
    top = max(v for _, v in rows)
    for i, (name, value) in enumerate(rows):
        y = 50 + i * bar_h
        length = int((width - left - 80) * np.log1p(value) / np.log1p(top))
        colour = (60, 60, 200) if 'naive' in name else (200, 120, 40)
        cv2.rectangle(image, (left, y), (left + length, y + bar_h - 6), colour, -1)
        cv2.putText(image, name, (10, y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        cv2.putText(image, f'{value:.1f}', (left + length + 5, y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.imwrite(str(path), image)


def main(argv: Optional[Sequence[str]] = None) -> int:
    if '--detector' in (sys.argv[1:] if argv is None else argv):  # its own section (tools/detector_benchmark.py)
        from robovision_ros.tools.detector_benchmark import main as detector_main

        return detector_main([a for a in (sys.argv[1:] if argv is None else argv) if a != '--detector'],
                             machine_description())
    parser = argparse.ArgumentParser(prog='robovision_bench', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--models', nargs='+', default=['embedded', 'clip-b32', 'clip-b16'])
    parser.add_argument('--iterations', type=int, default=20)
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--ros-seconds', type=float, default=10.0)
    parser.add_argument('--ros-rate', type=float, default=10.0, help='frames per second per camera')
    parser.add_argument('--skip-ros', action='store_true')
    parser.add_argument('--device', choices=('cpu', 'cuda'), default='cpu',
                        help='cuda times the GPU variants (model level only)')
    parser.add_argument('--out', type=Path, default=Path('benchmarks.md'))
    parser.add_argument('--cache', type=Path, default=Path.home() / '.cache' / 'robovision_ros' / 'bench')
    parser.add_argument('--max-foreign-load', type=float, default=0.25 * (os.cpu_count() or 1),
                        help='a table during which other processes used more CPU cores than this on average is '
                             'marked not comparable (default: a quarter of the cores)')
    parser.add_argument('--families', action='store_true',
                        help='run only the model-family section (SigLIP-B/16, DINOv2-S/14 and -B/14, one pass vs two '
                             'nodes) and write it to --out')
    parser.add_argument('--family-rate', type=float, default=2.0, help='camera rate of the family section (Hz)')
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)

    if args.families:
        report = families_report(args, log)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
        log(f'wrote {args.out}')
        return 0

    sections = [f'Machine: {machine_description()}', '']
    if args.device == 'cpu' and not args.skip_ros:
        sections.append(transport_costs())
        print(sections[-1], flush=True)
    all_results: dict[str, list[VariantResult]] = {}
    for model in args.models:
        model_dir = benchmark_model_dir(model, args.cache)
        variants = variants_for(args.device)
        log(f'{model}: timing {len(variants)} variants interleaved, {args.iterations} iterations')
        with LoadMonitor(args.max_foreign_load) as monitor:
            results = measure_models(model_dir, args.device, args.iterations, args.warmup, log)
            for (backend, precision), result in zip(variants, results):
                result.memory_mb, result.gpu_memory_mb = memory_of_variant(model_dir, backend, precision, args.device)
        all_results[model] = results
        table = model_table(model, args.device, results) + '\n' + monitor.result.line()
        print(table, flush=True)
        sections.append(table)
        if args.skip_ros or args.device != 'cpu':
            continue
        runs = []
        int8 = sorted(((b, r) for (b, p), r in zip(variants, results) if p == 'int8' and b != 'naive'),
                      key=lambda item: _p(item[1].raw_ms, 50))
        ranked = {FASTEST: int8[0][0], RUNNER_UP: int8[min(1, len(int8) - 1)][0]}
        with LoadMonitor(args.max_foreign_load) as monitor:
            for cameras, batch, profile, executor_kind, backend, precision, minimal in ROS_RUNS:
                backend = ranked.get(backend, backend)
                log(f'{model}: ROS end to end, {"minimal node" if minimal else "clip_perception"} {backend} '
                    f'{precision}, {cameras} camera(s), batch {batch}, profile {profile}, {executor_kind}')
                run = measure_ros(model_dir, backend, precision, cameras, batch, profile, args.ros_seconds,
                                  args.ros_rate, executor_kind, minimal)
                run.accuracy = results[variants.index((backend, precision))].accuracy
                runs.append(run)
        table = ros_table(model, runs, _p(results[0].frame_ms, 50)) + '\n' + monitor.result.line()
        print(table, flush=True)
        sections.append(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text('\n'.join(sections))
    plot(args.out.with_suffix('.png'), all_results)
    log(f'wrote {args.out} and {args.out.with_suffix(".png")}')
    return 0


# --- model families and one pass (robovision_bench --families) -------------------------------------------------
# A section of its own: random-weight SigLIP and DINOv2 at their released sizes through the node end to end, and
# clip_perception's one-pass patch features against a second node, each measured side by side in one run.

FAMILY_MODELS = ('siglip-b16', 'dinov2-s14', 'dinov2-b14')


def family_model_dir(name: str, cache: Path) -> str:
    """Return a random-weight model directory at a released model's sizes: 'siglip-b16', 'dinov2-s14', 'dinov2-b14'."""
    directory = cache / f'{name}-random'
    if (directory / 'model.safetensors').is_file():
        return str(directory)
    import torch
    import transformers

    from robovision_ros.synthetic.tiny_models import dino_preprocessor_config, make_tiny_siglip
    from robovision_ros.synthetic.training import corpus

    torch.manual_seed(0)
    if name == 'siglip-b16':  # google/siglip-base-patch16-224's sizes (its own tokenizer replaced by a small BPE)
        from robovision_ros.synthetic.tiny_models import write_clip_tokenizer

        tokenizer = write_clip_tokenizer(directory, corpus(), 300, 64)
        model = transformers.SiglipModel(transformers.SiglipConfig(
            text_config={'vocab_size': len(tokenizer), 'max_position_embeddings': 64,
                         'pad_token_id': tokenizer.pad_token_id, 'eos_token_id': tokenizer.eos_token_id},
            vision_config={'image_size': 224, 'patch_size': 16}))
        return str(make_tiny_siglip(directory, corpus(), image_size=224, patch_size=16, num_merges=300,
                                    max_length=64, model=model))
    width, heads = {'dinov2-s14': (384, 6), 'dinov2-b14': (768, 12)}[name]  # facebook/dinov2-small / -base
    model = transformers.Dinov2Model(transformers.Dinov2Config(hidden_size=width, num_attention_heads=heads,
                                                               image_size=518, patch_size=14))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory))
    (directory / 'preprocessor_config.json').write_text(json.dumps(dino_preprocessor_config(224)))
    return str(directory)


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (Linux /proc)."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


@dataclass
class NodeRun:
    """One end-to-end run: nodes on one camera, latencies per output, the nodes' CPU time."""

    config: str
    latency_ms: dict[str, list[float]]  # output topic suffix -> publish-to-receive latencies
    published: int
    seconds: float
    cpu_s: float  # CPU time of the node processes while the camera ran


def measure_nodes(nodes: Sequence[tuple[str, dict[str, Any]]], outputs: Sequence[tuple[str, str, Any]], config: str,
                  seconds: float, rate_hz: float) -> NodeRun:
    """
    Run perception nodes (kind, parameters) on one image_source camera; time the `outputs` (node kind, suffix, type).

    Each node runs in its own process and is configured and activated before the camera starts; their CPU time is
    read from /proc over the stream only (loading and export excluded). The models' ONNX exports are made here
    first, so that configure only loads them.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from robovision_ros.backends.registry import create_backend
    from robovision_ros.model_dir import read_model_info
    from robovision_ros.tools import lifecycle_client

    for _, params in nodes:
        create_backend(read_model_info(params['model']), params['backend'], 'cpu', params['precision']).close()

    env = dict(os.environ, FASTDDS_DEFAULT_PROFILES_FILE=str(_shipped_profile()))
    namespace = f'/fbench_{os.getpid()}_{int(time.monotonic() * 1000) % 100000}'
    topic = f'{namespace}/cam0/image_raw'
    frames = int(seconds * rate_hz)
    processes = []
    for kind, params in nodes:
        command = [sys.executable, '-m', f'robovision_ros.nodes.{kind}', '--ros-args', '-r', f'__ns:={namespace}',
                   '-p', f'image_topics:={json.dumps([topic])}']
        for name, value in params.items():
            command += ['-p', f'{name}:={json.dumps(value) if not isinstance(value, str) else value}']
        processes.append(subprocess.Popen(command, env=env, cwd='/', stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('family_bench_receiver', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    latencies: dict[str, list[float]] = {suffix: [] for _, suffix, _ in outputs}

    def receiver(suffix: str) -> Callable[[Any], None]:
        def on_message(msg: Any) -> None:
            now = node.get_clock().now().nanoseconds
            latencies[suffix].append((now - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)
        return on_message

    for kind, suffix, msg_type in outputs:
        node.create_subscription(msg_type, f'{namespace}/{kind}/{suffix}', receiver(suffix), 100)
    try:
        for kind, _ in nodes:
            target = f'{namespace}/{kind}'
            if not (lifecycle_client.change_state(node, executor, target, 'configure', 900.0)
                    and lifecycle_client.change_state(node, executor, target, 'activate')):
                raise RuntimeError(f'{kind} did not activate ({config})')
        cpu_before = sum(_cpu_seconds(p.pid) for p in processes)
        camera = subprocess.Popen(
            [sys.executable, '-m', 'robovision_ros.nodes.image_source', '--ros-args', '-r', f'image_raw:={topic}',
             '-p', f'rate_hz:={rate_hz}', '-p', f'max_frames:={frames}', '-p', 'seed:=0',
             '-p', 'wait_for_subscribers:=1', '-p', 'pregenerate:=16'],
            env=env, cwd='/', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(camera)
        lifecycle_client.spin_until(executor, lambda: camera.poll() is not None, seconds + 60.0)
        lifecycle_client.spin_until(executor, lambda: False, 5.0)  # the last results
        cpu = sum(_cpu_seconds(p.pid) for p in processes[:-1]) - cpu_before
    finally:
        stop_processes(processes)
        lifecycle_client.forget_clients(node)
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    return NodeRun(config, latencies, frames, frames / rate_hz, cpu)


def family_model_rows(name: str, model_dir: str, iterations: int, log: Callable[[str], None]) -> str:
    """Model level: torch fp32, onnxruntime fp32 and int8 interleaved on the same frames; agreement with torch fp32."""
    from robovision_ros.encoder import PerceptionEncoder

    frames = [decode_raw_image(data, 'bgr8', FRAME_HW[1], FRAME_HW[0], FRAME_HW[1] * 3) for data, _ in bench_frames(4)]
    variants = [('torch', 'fp32'), ('onnxruntime', 'fp32'), ('onnxruntime', 'int8')]
    encoders = []
    for backend, precision in variants:
        log(f'  {name}: loading {backend} {precision}')
        encoders.append(PerceptionEncoder(model_dir, backend, 'cpu', precision))
    timings: list[list[float]] = [[] for _ in variants]
    outputs: list[list[Any]] = [[] for _ in variants]
    for iteration in range(1 + iterations):
        for k in (list(range(len(variants))) * 2)[iteration % len(variants):][:len(variants)]:
            start = time.perf_counter()
            (feature,), _ = encoders[k].encode_images([frames[iteration % len(frames)]])
            if iteration:  # the first round is the warm-up
                timings[k].append((time.perf_counter() - start) * 1e3)
                if iteration <= len(frames):
                    outputs[k].append(feature)
    info = encoders[0].info
    grid = outputs[0][0].grid_hw
    lines = [f'### {name} (random weights: {info.family}, {info.image_size}px, patch {info.patch_size}, '
             f'grid {grid[0]}x{grid[1]}, {info.patch_dim}-d patches)', '',
             '| Backend | Frame (ms) p50 / p95 | Cosine vs torch fp32: global (worst) / patches (worst mean) |',
             '|---|---|---|']
    for (backend, precision), times, features in zip(variants, timings, outputs):
        pooled = min(_unit_cosine(a.global_embedding, b.global_embedding) for a, b in zip(features, outputs[0]))
        patches = min(float(np.mean([_unit_cosine(p, q) for p, q in zip(a.patch_tokens, b.patch_tokens)]))
                      for a, b in zip(features, outputs[0]))
        lines.append(f'| {backend} {precision} | {_p(times, 50):.1f} / {_p(times, 95):.1f} | '
                     f'{pooled:.4f} / {patches:.4f} |')
    for encoder in encoders:
        encoder.close()
    return '\n'.join(lines) + '\n'


def _unit_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def family_node_rows(runs: Sequence[NodeRun]) -> str:
    lines = ['| Configuration | Output | Publish-to-result p50 / p95 (ms) | Results/s | Results / frames | '
             'Node CPU per frame (ms) |', '|---|---|---|---|---|---|']
    for run in runs:
        for suffix, values in run.latency_ms.items():
            lines.append(f'| {run.config} | {suffix} | {_p(values, 50):.1f} / {_p(values, 95):.1f} | '
                         f'{len(values) / run.seconds:.1f} | {len(values)}/{run.published} | '
                         f'{run.cpu_s * 1e3 / max(run.published, 1):.0f} |')
    return '\n'.join(lines) + '\n'


def families_report(args: argparse.Namespace, log: Callable[[str], None]) -> str:
    """Return the families section: model-level rows, node rows per model, then one pass against two nodes."""
    from robovision_msgs.msg import PatchFeatures, ZeroShotLabels

    sections = [f'Machine: {machine_description()}', '']
    node_runs = []
    for name in FAMILY_MODELS:
        model_dir = family_model_dir(name, args.cache)
        sections.append(family_model_rows(name, model_dir, args.iterations, log))
        if name.startswith('siglip'):
            nodes = [('clip_perception', {'model': model_dir, 'backend': 'onnxruntime', 'precision': 'int8',
                                          'labels': list(LABELS), 'presence_queries': ['red cup'],
                                          'localize': False})]
            outputs = [('clip_perception', 'zero_shot_labels', ZeroShotLabels)]
        else:
            nodes = [('feature_extractor', {'model': model_dir, 'backend': 'onnxruntime', 'precision': 'int8'})]
            outputs = [('feature_extractor', 'patch_features', PatchFeatures)]
        log(f'{name}: through the node, {args.ros_seconds:.0f} s at {args.family_rate} Hz')
        node_runs.append(measure_nodes(nodes, outputs, f'{name}, {nodes[0][0]}, onnxruntime int8',
                                       args.ros_seconds, args.family_rate))
    sections += ['### Through the node (1 camera, 480x640 bgr8, onnxruntime int8)', '', family_node_rows(node_runs)]
    # One pass against two nodes: labels + features of one camera from CLIP ViT-B/16 (random weights).
    clip = benchmark_model_dir('clip-b16', args.cache)
    common = {'model': clip, 'backend': 'onnxruntime', 'precision': 'int8', 'labels': list(LABELS),
              'presence_queries': ['red cup'], 'localize': False}
    one_pass = ([('clip_perception', {**common, 'patch_features': True})],
                [('clip_perception', 'zero_shot_labels', ZeroShotLabels),
                 ('clip_perception', 'patch_features', PatchFeatures)], 'one pass: clip_perception patch_features')
    two_nodes = ([('clip_perception', common),
                  ('feature_extractor', {'model': clip, 'backend': 'onnxruntime', 'precision': 'int8'})],
                 [('clip_perception', 'zero_shot_labels', ZeroShotLabels),
                  ('feature_extractor', 'patch_features', PatchFeatures)], 'two nodes: + feature_extractor')
    pass_runs = []
    for nodes, outputs, config in (one_pass, two_nodes, one_pass, two_nodes):  # alternated: drift hits both
        log(f'clip-b16: {config}')
        pass_runs.append(measure_nodes(nodes, outputs, config, args.ros_seconds, args.family_rate))
    cpu = {config: [r.cpu_s / r.published for r in pass_runs if r.config == config]
           for config in (one_pass[2], two_nodes[2])}
    ratio = np.mean(cpu[one_pass[2]]) / np.mean(cpu[two_nodes[2]])
    sections += ['### One pass vs two nodes: labels + patch features of one camera (clip-b16, onnxruntime int8)', '',
                 f'Node CPU per frame, one pass / two nodes: **{ratio:.2f}** (mean of two alternated runs each).', '',
                 family_node_rows(pass_runs)]
    return '\n'.join(sections)


if __name__ == '__main__':
    sys.exit(main())
