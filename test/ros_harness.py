# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Helpers for tests that run real rclpy nodes over Fast DDS.

Discovery takes up to a few seconds, so every wait polls with a deadline; nothing queries once and hopes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterable, Optional

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node

from robovision_ros.tools import lifecycle_client

TEST_DIR = Path(__file__).resolve().parent


def unique_name(prefix: str) -> str:
    """Return a topic or node name no other test uses."""
    return f'{prefix}_{uuid.uuid4().hex[:8]}'


def spin_until(executor: SingleThreadedExecutor, predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Spin `executor` until `predicate()` is true or `timeout_s` passes; return the predicate's last value."""
    return lifecycle_client.spin_until(executor, predicate, timeout_s)


def wait_for_subscribers(executor: SingleThreadedExecutor, publisher, count: int = 1,
                         timeout_s: float = 15.0) -> bool:
    """Wait until `publisher` has matched at least `count` subscriptions."""
    return spin_until(executor, lambda: publisher.get_subscription_count() >= count, timeout_s)


def wait_for_publishers(executor: SingleThreadedExecutor, subscription, count: int = 1,
                        timeout_s: float = 15.0) -> bool:
    """Wait until `subscription` has matched at least `count` publishers."""
    return spin_until(executor, lambda: subscription.get_publisher_count() >= count, timeout_s)


class RosTestContext:
    """An rclpy context with one test node and a single-threaded executor, torn down on close."""

    def __init__(self, node_name: str = 'test_node') -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(unique_name(node_name), context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        return spin_until(self.executor, predicate, timeout_s)

    def close(self) -> None:
        lifecycle_client.forget_clients(self.node)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


class NodeProcess:
    """A node (or any Python entry point) in its own process, with its output captured to a log file."""

    def __init__(self, args: Iterable[str], log_path: Path, env: Optional[dict[str, str]] = None) -> None:
        self.log_path = log_path
        self._log = open(log_path, 'wb')
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env['PYTHONUNBUFFERED'] = '1'
        self.process = subprocess.Popen(
            [sys.executable, *args], stdout=self._log, stderr=subprocess.STDOUT, env=full_env,
            start_new_session=True,
            # Not the source tree: `python -m` would import the uninstalled package, which has no `msg`.
            cwd=log_path.parent)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGINT (as Ctrl-C would), then SIGKILL if it does not end in time; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout_s)
        self._log.close()
        return self.process.returncode


def call_service(ros: RosTestContext, srv_type, name: str, request, timeout_s: float = 60.0):
    return lifecycle_client.call_service(ros.node, ros.executor, srv_type, name, request, timeout_s)


def change_state(ros: RosTestContext, node: str, transition: str, timeout_s: float = 120.0) -> bool:
    return lifecycle_client.change_state(ros.node, ros.executor, node, transition, timeout_s)


def get_state(ros: RosTestContext, node: str) -> str:
    return lifecycle_client.get_state(ros.node, ros.executor, node)


def set_parameters(ros: RosTestContext, node: str, values: dict):
    return lifecycle_client.set_parameters(ros.node, ros.executor, node, values)


def ros_argument(value) -> str:
    """Format a parameter value as `--ros-args -p name:=VALUE` reads it (YAML): lists as JSON, strings as they are."""
    import json

    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


class PerceptionProcess:
    """
    A perception node (clip_perception or feature_extractor) in its own process, in a namespace of its own.

    `node` is the name its lifecycle and parameter services are called under; `topic(suffix)` names its outputs.
    """

    def __init__(self, kind: str, log_path: Path, params: Optional[dict] = None, prefix: str = '/rv') -> None:
        self.kind = kind
        self.namespace = unique_name(prefix)
        self.node = f'{self.namespace.lstrip("/")}/{kind}'
        args = ['-m', f'robovision_ros.nodes.{kind}', '--ros-args', '-r', f'__ns:={self.namespace}']
        for name, value in (params or {}).items():
            args += ['-p', f'{name}:={ros_argument(value)}']
        self.process = NodeProcess(args, log_path)

    def topic(self, suffix: str) -> str:
        return f'{self.namespace}/{self.kind}/{suffix}'

    def output(self) -> str:
        return self.process.output()

    def alive(self) -> bool:
        return self.process.alive()

    def stop(self, timeout_s: float = 10.0) -> int:
        return self.process.stop(timeout_s)
