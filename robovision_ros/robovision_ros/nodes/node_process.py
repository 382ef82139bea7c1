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

A signal during a lifecycle transition (configure loads a model or builds an engine: seconds to minutes) cannot wait
for it: Python cannot interrupt the thread that loads. If the node is still in a transition `TRANSITION_GRACE_S`
after the signal, the process abandons it (`abandon`: e.g. remove a partial export, which is written apart and
renamed into place only when complete, so nothing half-written is ever left where a later run would load it) and
exits 0 at once.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Optional

import rclpy

SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXECUTORS = ('multi', 'single')
TRANSITION_GRACE_S = 1.0  # a transition still running this long after the first signal is abandoned


def answer_queries_during_transitions(node: Any) -> None:
    """
    Let a lifecycle node's queries (get_state, ...) answer during a transition; transitions stay one at a time.

    rclpy's LifecycleNode creates its services in the default (mutually exclusive) group and offers no way to choose
    another, so get_state would wait for a model load. The services' `callback_group` is reassigned here, before the
    node is added to an executor: the only way rclpy leaves to do it (these are rclpy's private attributes).
    """
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup

    queries = ReentrantCallbackGroup()
    transitions = MutuallyExclusiveCallbackGroup()
    for service, group in ((node._service_change_state, transitions), (node._service_get_state, queries),
                           (node._service_get_available_states, queries),
                           (node._service_get_available_transitions, queries),
                           (node._service_get_transition_graph, queries)):
        service.callback_group = group
        group.add_entity(service)


def make_executor(kind: str) -> Any:
    """
    Make the executor that runs a node's callbacks (inference has its own thread in any case).

    multi (default): a MultiThreadedExecutor, so that lifecycle queries and parameter services answer while a
    transition (loading a model) runs; single: SingleThreadedExecutor. (rclpy's experimental EventsExecutor is not
    offered: in a trial here the lifecycle services of a node spun by it did not answer.)
    """
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    if kind == 'multi':
        return MultiThreadedExecutor(num_threads=3)
    if kind == 'single':
        return SingleThreadedExecutor()
    raise ValueError(f"executor '{kind}' not supported; supported: {', '.join(EXECUTORS)}")


def run_node_process(name: str, create_node: Callable[[], Any], args: Optional[list[str]] = None,
                     make_executor: Optional[Callable[[Any], Any]] = None,
                     stop_node: Callable[[Any], None] = lambda node: None,
                     in_transition: Callable[[Any], Optional[str]] = lambda node: None,
                     abandon: Callable[[Any], None] = lambda node: None) -> int:
    """
    Create, spin, stop and destroy a node; return the process's exit code.

    Create the node (after rclpy.init), spin it on `make_executor(node)` (default: single-threaded) until a shutdown
    signal, call `stop_node(node)`, then destroy it and shut rclpy down. `in_transition(node)` names a transition in
    progress (None: none); one still running `TRANSITION_GRACE_S` after the signal is abandoned (`abandon(node)`)
    and the process exits 0 at once. A `ValueError` from `create_node` or `make_executor` (a bad argument) prints it
    and returns 2.
    """
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    holder: dict[str, Any] = {}

    def watchdog() -> None:
        """After the first signal: end a process whose node stays in a transition past the grace period."""
        time.sleep(TRANSITION_GRACE_S)
        node = holder.get('node')
        transition = in_transition(node) if node is not None else None
        if transition is not None:
            abandon(node)
            node.get_logger().info(f'shutting down during {transition}: the transition is abandoned')
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)

    def on_signal(signum: int, frame: Any) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=watchdog, name='shutdown-watchdog', daemon=True).start()

    for sig in SHUTDOWN_SIGNALS:
        signal.signal(sig, on_signal)
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    node = executor = None
    code = 0
    try:
        node = holder['node'] = create_node()
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


def params_files(argv: list[str]) -> list[str]:
    """Return the `--params-file` paths among a node process's ROS arguments (after `--ros-args`)."""
    files, in_ros_args = [], False
    for i, token in enumerate(argv):
        if token == '--ros-args':
            in_ros_args = True
        elif token == '--':
            in_ros_args = False
        elif in_ros_args and token == '--params-file' and i + 1 < len(argv):
            files.append(argv[i + 1])
    return files


def warn_about_unmatched_params_files(node: Any, argv: list[str]) -> None:
    """
    Warn once for each `--params-file` whose sections match no section for this node (they are silently ignored).

    The usual cause: a bare `clip_perception:` section with the node run under a namespace (`-r __ns:=/robot2`).
    """
    from robovision_ros.params_files import ParamsFileError, load_sections, section_matches, unmatched_warning

    name = node.get_fully_qualified_name()
    for path in params_files(argv):
        try:
            sections = load_sections(path)
        except ParamsFileError:
            continue  # rcl reports a file it cannot read itself
        if sections and not any(section_matches(key, name) for key in sections):
            node.get_logger().warn(unmatched_warning(path, list(sections), [name]))


def run_node(node_class: type, args: Optional[list[str]] = None) -> int:
    """
    Spin a perception node until Ctrl-C, SIGTERM or shutdown, on the executor its `executor` parameter names.

    Its worker threads stop before the context goes; a signal during configure ends the process within about a
    second (see the module docstring).
    """
    def create() -> Any:
        node = node_class()
        warn_about_unmatched_params_files(node, list(args if args is not None else sys.argv))
        return node

    return run_node_process(node_class.__name__, create, args,
                            lambda node: make_executor(node.get_parameter('executor').value),
                            lambda node: node.stop(), lambda node: node.transition_in_progress(),
                            lambda node: node.abandon_transition())
