"""Client side of the services `ros2 lifecycle set` and `ros2 param set` call, for tools and tests."""
from __future__ import annotations

import time
from typing import Any, Callable

from rclpy.node import Node


def spin_until(executor: Any, predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> bool:
    """Spin `executor` until `predicate()` holds or `timeout_s` passes (discovery takes seconds: poll)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        executor.spin_once(timeout_sec=step_s)
    return predicate()


def call_service(node: Node, executor: Any, srv_type: Any, name: str, request: Any, timeout_s: float = 60.0) -> Any:
    """Wait for the service, call it, wait for the answer; raise TimeoutError if either does not come."""
    client = node.create_client(srv_type, name)
    try:
        if not spin_until(executor, client.service_is_ready, 15.0):
            raise TimeoutError(f'service {name} not available')
        future = client.call_async(request)
        if not spin_until(executor, future.done, timeout_s):
            raise TimeoutError(f'service {name} did not answer in {timeout_s} s')
        return future.result()
    finally:
        node.destroy_client(client)


def change_state(node: Node, executor: Any, target: str, transition: str, timeout_s: float = 120.0) -> bool:
    """`ros2 lifecycle set <target> <transition>`: like the CLI, look the transition up by its label among the
    ones available in the current state (e.g. 'shutdown' is a different transition from each state), then
    request it through /<target>/change_state."""
    from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions

    name = target.lstrip('/')
    available = call_service(node, executor, GetAvailableTransitions, f'/{name}/get_available_transitions',
                             GetAvailableTransitions.Request()).available_transitions
    matches = [t.transition for t in available if t.transition.label == transition]
    if not matches:
        raise ValueError(f"transition '{transition}' not available for {name}; available: "
                         f"{', '.join(t.transition.label for t in available)}")
    request = ChangeState.Request()
    request.transition.id = matches[0].id
    return call_service(node, executor, ChangeState, f'/{name}/change_state', request, timeout_s).success


def get_state(node: Node, executor: Any, target: str) -> str:
    from lifecycle_msgs.srv import GetState

    return call_service(node, executor, GetState, f'/{target.lstrip("/")}/get_state',
                        GetState.Request()).current_state.label


def set_parameters(node: Node, executor: Any, target: str, values: dict[str, Any]) -> list[Any]:
    """`ros2 param set` through /<target>/set_parameters; returns the SetParametersResult list."""
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request()
    request.parameters = [Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
    return call_service(node, executor, SetParameters, f'/{target.lstrip("/")}/set_parameters', request).results
