# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
How a robovision_ros node process runs and stops.

Spin until Ctrl-C, SIGTERM or an rclpy shutdown, then stop the node's own threads before the ROS context goes,
ignoring further signals meanwhile.

rclpy's own signal handlers would shut the context down at once, under a frame being published. Here the first
SIGINT/SIGTERM only ends the spin loop. `ros2 launch` started without a terminal (scripts, containers) delivers
two SIGINTs milliseconds apart (the process group's and its own), then SIGTERM after 5 s: later signals are
ignored, so the process still exits 0 and launch reports it finished cleanly.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable, Optional

import rclpy

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run_node_process(name: str, create_node: Callable[[], Any], args: Optional[list[str]] = None,
                     make_executor: Optional[Callable[[Any], Any]] = None,
                     stop_node: Callable[[Any], None] = lambda node: None) -> int:
    """
    Create, spin, stop and destroy a node; return the process's exit code.

    Create the node (after rclpy.init), spin it on `make_executor(node)` (default: single-threaded) until a shutdown
    signal, call `stop_node(node)`, then destroy it and shut rclpy down. A `ValueError` from `create_node` or
    `make_executor` (a bad argument) prints it and returns 2.
    """
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    for sig in SHUTDOWN_SIGNALS:
        signal.signal(sig, lambda signum, frame: stop.set())
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    code = 0
    try:
        node = create_node()
        executor = make_executor(node) if make_executor is not None else SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except ExternalShutdownException:
        pass
    except ValueError as error:
        print(f'{name}: error: {error}', file=sys.stderr, flush=True)
        code = 2
    finally:
        for sig in SHUTDOWN_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # further signals while shutting down are expected and ignored
        if node is not None:
            stop_node(node)
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code
