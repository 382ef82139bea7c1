# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Client side of the services `ros2 lifecycle set` and `ros2 param set` call, for tools and tests.

DDS discovery is asynchronous: a service can report ready while its server has not yet matched the client's
response reader, and then the first response is lost. So clients are created once per service and given a
moment to settle, queries are retried, and a lifecycle transition whose answer does not come is confirmed by
the node's state instead of being sent blindly again.
"""
from __future__ import annotations

import time
from typing import Any, Callable

from rclpy.node import Node

SETTLE_S = 0.5
ATTEMPT_S = 10.0
GOAL_STATES = {'configure': 'inactive', 'activate': 'active', 'deactivate': 'inactive', 'cleanup': 'unconfigured',
               'shutdown': 'finalized'}
TRANSITION_STATES = ('configuring', 'cleaningup', 'shuttingdown', 'activating', 'deactivating', 'errorprocessing')

_clients: dict[tuple[int, Any, str], Any] = {}


def spin_until(executor: Any, predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Spin `executor` until `predicate()` holds or `timeout_s` passes (discovery takes seconds: poll)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step_s)
    return predicate()


def _client(node: Node, executor: Any, srv_type: Any, name: str) -> Any:
    key = (id(node), srv_type, name)
    if key not in _clients:
        client = node.create_client(srv_type, name)
        if not spin_until(executor, client.service_is_ready, 15.0):
            node.destroy_client(client)
            raise TimeoutError(f'service {name} not available')
        spin_until(executor, lambda: False, SETTLE_S)  # let the server match our response reader too
        _clients[key] = client
    return _clients[key]


def forget_clients(node: Node) -> None:
    """Drop the cached clients of `node` (call before destroying it)."""
    for key in [k for k in _clients if k[0] == id(node)]:
        node.destroy_client(_clients.pop(key))


def call_service(node: Node, executor: Any, srv_type: Any, name: str, request: Any, timeout_s: float = 60.0,
                 retry: bool = True) -> Any:
    """
    Call a service and wait for the answer.

    With `retry` (for requests that may be repeated), a request without an answer after ATTEMPT_S seconds is sent
    again until `timeout_s` passes.
    """
    client = _client(node, executor, srv_type, name)
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        future = client.call_async(request)
        if spin_until(executor, future.done, min(ATTEMPT_S, remaining) if retry else remaining):
            return future.result()
        if not retry or time.monotonic() >= deadline:
            raise TimeoutError(f'service {name} did not answer in {timeout_s} s')


def get_state(node: Node, executor: Any, target: str) -> str:
    from lifecycle_msgs.srv import GetState

    return call_service(node, executor, GetState, f'/{target.lstrip("/")}/get_state',
                        GetState.Request()).current_state.label


def change_state(node: Node, executor: Any, target: str, transition: str, timeout_s: float = 120.0) -> bool:
    """
    Request a lifecycle transition of `target` as `ros2 lifecycle set <target> <transition>` does.

    Like the CLI, look the transition up by its label among the ones available in the current state (e.g. 'shutdown'
    is a different transition from each state), then request it through /<target>/change_state.
    """
    from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions

    name = target.lstrip('/')
    start_state = get_state(node, executor, name)
    available = call_service(node, executor, GetAvailableTransitions, f'/{name}/get_available_transitions',
                             GetAvailableTransitions.Request()).available_transitions
    matches = [t.transition for t in available if t.transition.label == transition]
    if not matches:
        raise ValueError(f"transition '{transition}' not available for {name} in state {start_state}; "
                         f"available: {', '.join(t.transition.label for t in available)}")
    request = ChangeState.Request()
    request.transition.id = matches[0].id
    client = _client(node, executor, ChangeState, f'/{name}/change_state')
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        future = client.call_async(request)
        if spin_until(executor, future.done, min(ATTEMPT_S, deadline - time.monotonic())):
            return future.result().success
        # No answer yet: a long transition (a model export) or a lost request or response. Ask the state.
        state = get_state(node, executor, name)
        while state in TRANSITION_STATES and time.monotonic() < deadline:
            if spin_until(executor, future.done, 1.0):
                return future.result().success
            state = get_state(node, executor, name)
        if future.done():
            return future.result().success
        if state == GOAL_STATES.get(transition):
            return True  # it happened; only the answer was lost
        if state != start_state:
            return False
        # Still in the start state: the request was lost. Send it again.
    raise TimeoutError(f'{name}: transition {transition} did not complete in {timeout_s} s')


def set_parameters(node: Node, executor: Any, target: str, values: dict[str, Any]) -> list[Any]:
    """
    Set parameters of `target` as `ros2 param set` does; return the SetParametersResult list.

    Goes through /<target>/set_parameters. Retried when unanswered: setting the same values again changes nothing
    (the nodes bump the vocabulary version only when the vocabulary really changes).
    """
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request()
    request.parameters = [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
    return call_service(node, executor, SetParameters, f'/{target.lstrip("/")}/set_parameters', request).results
