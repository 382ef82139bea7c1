# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Shared by the launch_testing tests of launch/robovision.launch.py (test/test_launch*.py).

`launch_test FILE` neither reads conftest.py nor puts test/ on sys.path, so each test file inserts test/ itself
and calls `isolate_dds()` before anything starts DDS.
"""
from __future__ import annotations

import os
import random
import time
from typing import Any, Callable, Optional

DEFAULT_DEADLINE_S = 120.0


def isolate_dds() -> None:
    """One DDS domain per test run, discovery on this host only (as conftest.py does for pytest runs)."""
    if 'ROBOVISION_TEST_DOMAIN_ID' not in os.environ:
        os.environ['ROBOVISION_TEST_DOMAIN_ID'] = str(random.SystemRandom().randint(10, 100))
    os.environ['ROS_DOMAIN_ID'] = os.environ['ROBOVISION_TEST_DOMAIN_ID']
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.pop('ROS_LOCALHOST_ONLY', None)


def include_robovision(**arguments: str) -> Any:
    """Include the installed launch/robovision.launch.py with these launch arguments."""
    import launch
    from ament_index_python.packages import get_package_share_directory
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    share = get_package_share_directory('robovision_ros')
    return launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'robovision.launch.py')),
        launch_arguments=list(arguments.items()))


class LabelsRecorder:
    """Records the ZeroShotLabels of clip_perception with the time they arrived."""

    def __init__(self, ros: Any, topic: str = '/clip_perception/zero_shot_labels') -> None:
        from robovision_msgs.msg import ZeroShotLabels

        self.ros = ros
        self.received: list[tuple[float, Any]] = []
        self.subscription = ros.node.create_subscription(
            ZeroShotLabels, topic, lambda msg: self.received.append((time.monotonic(), msg)), 10)

    def next_after(self, since: float, timeout_s: float = 60.0,
                   publish: Optional[Callable[[], None]] = None) -> Optional[Any]:
        """Return the first message that arrived after `since` (calling `publish` between waits, if given)."""
        deadline = time.monotonic() + timeout_s

        def fresh() -> list[Any]:
            return [msg for at, msg in self.received if at > since]

        while not fresh() and time.monotonic() < deadline:
            if publish is not None:
                publish()
            self.ros.spin_until(lambda: bool(fresh()), 0.5)
        messages = fresh()
        return messages[0] if messages else None


def wait_for_state(ros: Any, node_name: str, state: str, timeout_s: float = DEFAULT_DEADLINE_S) -> bool:
    """Poll the node's state until it is `state` (a node still starting has no get_state service yet)."""
    from robovision_ros.tools import lifecycle_client

    def reached() -> bool:
        try:
            return lifecycle_client.get_state(ros.node, ros.executor, node_name) == state
        except TimeoutError:
            return False

    return ros.spin_until(reached, timeout_s)


def stays_in_state(ros: Any, node_name: str, state: str, seconds: float = 3.0) -> bool:
    """Return True if `node_name` is in `state` now and still after `seconds` (nothing moved it on)."""
    from robovision_ros.tools import lifecycle_client

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if lifecycle_client.get_state(ros.node, ros.executor, node_name) != state:
            return False
        ros.spin_until(lambda: False, 0.5)
    return lifecycle_client.get_state(ros.node, ros.executor, node_name) == state


def get_parameter(ros: Any, node_name: str, name: str) -> Any:
    """Return a parameter's value as `ros2 param get` reads it (through the node's get_parameters service)."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    from robovision_ros.tools import lifecycle_client

    response = lifecycle_client.call_service(ros.node, ros.executor, GetParameters,
                                             f'/{node_name}/get_parameters', GetParameters.Request(names=[name]))
    return parameter_value_to_python(response.values[0])
