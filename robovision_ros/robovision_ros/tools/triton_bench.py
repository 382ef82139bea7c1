# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Benchmark N clip_perception nodes on one Triton server against N nodes each running the model locally.

Backend triton against onnxruntime, end to end through ROS.

    python -m robovision_ros.tools.triton_bench [--model embedded:tiny_clip] [--nodes 1 2 4] [--rate 10]
                                                 [--seconds 15] [--out docs/benchmarks_triton.md]

Each node has its own camera (image_source, 480x640 bgr8 at --rate Hz) and its own process. Measured per run:
results per second (all nodes), publish-to-result latency p50/p95 from the header stamp, the CPU the nodes used
(what a robot would spend) and the server used, and, for the server, the batch sizes Triton's dynamic batcher
formed (its statistics API: inferences / executions, and the count per batch size).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from robovision_ros.tools.benchmark import _p, _shipped_profile, machine_description
from robovision_ros.tools.child_processes import stop_processes
from robovision_ros.synthetic.scenes import LABELS


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@dataclass
class Run:
    mode: str  # 'local' or 'triton'
    nodes: int
    seconds: float
    published: int = 0
    latency_ms: list[float] = field(default_factory=list)
    node_cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    inferences: int = 0
    executions: int = 0
    batch_counts: dict[int, int] = field(default_factory=dict)


def _cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU time of these processes and their children so far."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            for p in [process, *process.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


class Server:
    """robovision_serve on loopback ports (see robovision_ros/tools/serve.py)."""

    def __init__(self, model: str, cache: Optional[str], log: Path) -> None:
        self.port = _free_port()
        args = [sys.executable, '-m', 'robovision_ros.tools.serve', model, '--host', '127.0.0.1', '--grpc-port',
                str(self.port), '--http-port', str(_free_port()), '--metrics-port', str(_free_port())]
        if cache:
            args += ['--cache-dir', cache]
        self.log = log
        self._log_file = open(log, 'w')
        self.process = subprocess.Popen(args, stdout=self._log_file, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while 'robovision_serve: serving' not in log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f'robovision_serve did not start:\n{log.read_text()[-3000:]}')
            time.sleep(0.3)
        import tritonclient.grpc as grpcclient

        self.client = grpcclient.InferenceServerClient(f'127.0.0.1:{self.port}')

    def statistics(self, model: str) -> tuple[int, int, dict[int, int]]:
        """(inferences, executions, {batch size: executions}) so far."""
        stats = self.client.get_inference_statistics(model_name=model, as_json=True)['model_stats'][0]
        batches = {int(b['batch_size']): int(b.get('compute_infer', {}).get('count', 0))
                   for b in stats.get('batch_stats', [])}
        return int(stats.get('inference_count', 0)), int(stats.get('execution_count', 0)), batches

    def stop(self) -> None:
        self.process.send_signal(2)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        self._log_file.close()


def measure(mode: str, nodes: int, model: str, rate_hz: float, seconds: float, server: Optional[Server],
            image_model: str, cache: Optional[str]) -> Run:
    """`nodes` clip_perception processes, each with its own image_source camera, for `seconds`."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from robovision_ros.tools import lifecycle_client
    from robovision_msgs.msg import ZeroShotLabels

    env = dict(os.environ)
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(_shipped_profile())
    namespace = f'/tbench_{os.getpid()}_{mode}_{nodes}'
    frames = int(seconds * rate_hz)
    backend = ['-p', 'backend:=onnxruntime'] if mode == 'local' else \
        ['-p', 'backend:=triton', '-p', f'triton_url:=127.0.0.1:{server.port}']
    if cache and mode == 'local':
        backend += ['-p', f'engine_cache_dir:={cache}']
    node_processes = [subprocess.Popen(
        [sys.executable, '-m', 'robovision_ros.nodes.clip_perception', '--ros-args', '-r', f'__ns:={namespace}/n{i}',
         '-p', f'model:={model}', *backend, '-p', f'image_topics:=["{namespace}/n{i}/image_raw"]',
         '-p', 'localize:=false', '-p', f'labels:={json.dumps(list(LABELS))}', '-p', 'presence_queries:=["red cup"]'],
        env=env, cwd='/', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(nodes)]
    cameras: list[subprocess.Popen] = []
    context = rclpy.Context()
    rclpy.init(context=context)
    receiver = rclpy.create_node('triton_bench_receiver', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(receiver)
    run = Run(mode, nodes, frames / rate_hz, published=frames * nodes)

    def on_result(msg: Any) -> None:
        now = receiver.get_clock().now().nanoseconds
        run.latency_ms.append((now - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) / 1e6)

    for i in range(nodes):
        receiver.create_subscription(ZeroShotLabels, f'{namespace}/n{i}/clip_perception/zero_shot_labels', on_result,
                                     100)
    try:
        for i in range(nodes):
            target = f'{namespace}/n{i}/clip_perception'
            if not (lifecycle_client.change_state(receiver, executor, target, 'configure', 600.0)
                    and lifecycle_client.change_state(receiver, executor, target, 'activate')):
                raise RuntimeError(f'{target} did not activate ({mode})')
        node_cpu = _cpu_seconds([p.pid for p in node_processes])
        server_cpu = _cpu_seconds([server.process.pid]) if server else 0.0
        stats = server.statistics(image_model) if server else (0, 0, {})
        cameras = [subprocess.Popen(
            [sys.executable, '-m', 'robovision_ros.nodes.image_source', '--ros-args', '-r',
             f'image_raw:={namespace}/n{i}/image_raw', '-p', f'rate_hz:={rate_hz}', '-p', f'max_frames:={frames}',
             '-p', f'seed:={i}', '-p', 'wait_for_subscribers:=1', '-p', 'pregenerate:=16'],
            env=env, cwd='/', stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in range(nodes)]
        lifecycle_client.spin_until(executor, lambda: False, seconds + 6.0)  # the stream, then the last results
        run.node_cpu_s = _cpu_seconds([p.pid for p in node_processes]) - node_cpu
        if server:
            run.server_cpu_s = _cpu_seconds([server.process.pid]) - server_cpu
            after = server.statistics(image_model)
            run.inferences, run.executions = after[0] - stats[0], after[1] - stats[1]
            run.batch_counts = {size: count - stats[2].get(size, 0) for size, count in after[2].items()
                                if count - stats[2].get(size, 0) > 0}
    finally:
        stop_processes([*cameras, *node_processes])
        lifecycle_client.forget_clients(receiver)
        executor.shutdown()
        receiver.destroy_node()
        rclpy.shutdown(context=context)
    return run


def table(runs: list[Run], window_s: float) -> str:
    lines = ['| nodes | where | results/s (all nodes) | delivered | latency p50 | latency p95 | node CPU (all nodes) | '
             'server CPU | server batch size: mean (executions per size) |',
             '|---|---|---|---|---|---|---|---|---|']
    for run in runs:
        results = len(run.latency_ms)
        batches = ('-' if run.mode == 'local' else
                   f'{run.inferences / max(run.executions, 1):.2f} '
                   f'({", ".join(f"{size}: {count}" for size, count in sorted(run.batch_counts.items()))})')
        lines.append(
            f'| {run.nodes} | {run.mode} | {results / run.seconds:.1f} | {results}/{run.published} | '
            f'{_p(run.latency_ms, 50):.1f} ms | {_p(run.latency_ms, 95):.1f} ms | '
            f'{100 * run.node_cpu_s / window_s:.0f} % | '
            f'{"-" if run.mode == "local" else f"{100 * run.server_cpu_s / window_s:.0f} %"} | {batches} |')
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='triton_bench', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--model', default='embedded:tiny_clip')
    parser.add_argument('--nodes', type=int, nargs='+', default=[1, 2, 4])
    parser.add_argument('--rate', type=float, default=10.0, help='frames per second per camera')
    parser.add_argument('--seconds', type=float, default=15.0)
    parser.add_argument('--cache-dir', default='')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    from robovision_ros.backends.triton_backend import served_names, served_prefix
    from robovision_ros.model_dir import read_model_info

    image_model, _ = served_names(served_prefix(read_model_info(args.model)), True)
    log_dir = Path(os.environ.get('TMPDIR', '/tmp'))
    runs: list[Run] = []
    server = Server(args.model, args.cache_dir or None, log_dir / f'triton_bench_serve_{os.getpid()}.log')
    try:
        for nodes in args.nodes:
            for mode in ('local', 'triton'):
                print(f'[{time.strftime("%H:%M:%S")}] {nodes} node(s), {mode}', flush=True)
                runs.append(measure(mode, nodes, args.model, args.rate, args.seconds,
                                    server if mode == 'triton' else None, image_model, args.cache_dir or None))
                print(table(runs[-1:], args.seconds + 6.0), flush=True)
    finally:
        server.stop()
    report = (f'Machine: {machine_description()}\n\nModel {args.model}; each node: its own 480x640 bgr8 camera at '
              f'{args.rate:g} Hz for {args.seconds:g} s; server: robovision_serve, onnxruntime cpu fp32, 1 instance, '
              f'dynamic batching (max queue delay 2 ms), pixels as fp16. CPU is a share of one core over the '
              f'{args.seconds + 6:g} s window.\n\n{table(runs, args.seconds + 6.0)}')
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
