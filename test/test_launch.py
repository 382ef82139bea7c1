# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
launch_testing test of launch/robovision.launch.py with its defaults (autostart).

Both nodes reach active, their topics appear, a parameter set changes the labels that come out, and afterwards the
lifecycle is the operator's: deactivate stays inactive, cleanup, a new precision, configure (stays inactive),
activate, and outputs flow again at the new precision.

Needs launch, launch_ros and launch_testing, which are not on PyPI (they come with a ROS 2 install): skipped
with that reason where they are missing, as in CI. Run with `launch_test test/test_launch.py`.
"""
import os
import sys
import time
import unittest

import pytest

launch_testing = pytest.importorskip(
    'launch_testing', reason='launch_testing is not installed (not on PyPI; part of a ROS 2 install)')
pytest.importorskip('launch_ros', reason='launch_ros is not installed (part of a ROS 2 install)')

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # launch_test does not add test/ itself

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import numpy as np  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from launch_harness import LabelsRecorder, include_robovision, isolate_dds, stays_in_state, wait_for_state  # noqa
from robovision_ros.tools import lifecycle_client  # noqa: E402
from ros_harness import RosTestContext  # noqa: E402

CAMERA = '/launch_test/image_raw'
isolate_dds()


@pytest.mark.launch_test
def generate_test_description():
    return launch.LaunchDescription([
        include_robovision(backend='onnxruntime', image_topics=f'["{CAMERA}"]'),
        launch_testing.actions.ReadyToTest()])


class TestRobovisionLaunch(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ros = RosTestContext('robovision_launch_probe')
        cls.labels = LabelsRecorder(cls.ros)
        cls.camera = cls.ros.node.create_publisher(Image, CAMERA, qos_profile_sensor_data)
        cls.diagnostics: list[DiagnosticArray] = []
        cls.ros.node.create_subscription(DiagnosticArray, '/diagnostics', cls.diagnostics.append, 10)

    @classmethod
    def tearDownClass(cls):
        cls.ros.close()

    def _publish_frame(self) -> None:
        frame = Image(height=48, width=64, encoding='rgb8', step=192, data=np.zeros(48 * 192, np.uint8).tobytes())
        frame.header.stamp.sec = 7
        self.camera.publish(frame)

    def _set(self, node: str, values: dict) -> None:
        (result,) = lifecycle_client.set_parameters(self.ros.node, self.ros.executor, node, values)
        self.assertTrue(result.successful, result.reason)

    def _transition(self, node: str, transition: str) -> None:
        self.assertTrue(lifecycle_client.change_state(self.ros.node, self.ros.executor, node, transition),
                        f'{node}: {transition} failed')

    def test_active_topics_and_live_labels(self):
        for name in ('clip_perception', 'feature_extractor'):
            self.assertTrue(wait_for_state(self.ros, name, 'active'), f'{name} did not reach active')
        topics = {'/clip_perception/zero_shot_labels', '/clip_perception/object_presence',
                  '/feature_extractor/patch_features'}
        self.assertTrue(self.ros.spin_until(
            lambda: topics <= {n for n, _ in self.ros.node.get_topic_names_and_types()}, 30.0))

        self._set('clip_perception', {'labels': ['red cup', 'blue bottle']})
        message = self.labels.next_after(time.monotonic(), publish=self._publish_frame)
        self.assertIsNotNone(message, 'no ZeroShotLabels arrived')
        self.assertEqual(list(message.labels), ['red cup', 'blue bottle'])

    def test_operator_owns_the_lifecycle_after_autostart(self):
        name = 'clip_perception'
        self.assertTrue(wait_for_state(self.ros, name, 'active'), f'{name} did not reach active')
        self._transition(name, 'deactivate')
        self.assertTrue(stays_in_state(self.ros, name, 'inactive'), 'the launch re-activated a deactivated node')
        self._transition(name, 'cleanup')
        self.assertTrue(stays_in_state(self.ros, name, 'unconfigured', 1.0))
        self._set(name, {'precision': 'int8'})
        self._transition(name, 'configure')
        self.assertTrue(stays_in_state(self.ros, name, 'inactive'), 'the launch activated an operator configure')
        self._transition(name, 'activate')

        since = time.monotonic()
        message = self.labels.next_after(since, publish=self._publish_frame)
        self.assertIsNotNone(message, 'no ZeroShotLabels after configure and activate')

        def precision_reported() -> bool:
            return any(value.key == 'precision' and value.value == 'int8'
                       for array in self.diagnostics for status in array.status if name in status.name
                       for value in status.values)

        self.assertTrue(self.ros.spin_until(precision_reported, 15.0), 'diagnostics do not report precision int8')


@launch_testing.post_shutdown_test()
class TestNoProcessDied(unittest.TestCase):

    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
