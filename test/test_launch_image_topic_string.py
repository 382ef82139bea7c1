# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
launch_testing test: `image_topics:=/camera/image_raw`, a plain string, reaches the nodes as a string.

The nodes subscribe to it (camera:=true publishes on it).

Needs the node side that declares image_topics with dynamic typing (a string or a string array); before that the
nodes reject the string at start-up and this test fails. Needs launch, launch_ros and launch_testing (a ROS 2
install); skipped where they are missing, as in CI. Run with `launch_test test/test_launch_image_topic_string.py`.
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

from launch_harness import LabelsRecorder, get_parameter, include_robovision, isolate_dds, wait_for_state  # noqa
from ros_harness import RosTestContext  # noqa: E402

CAMERA = '/launch_test_string/image_raw'
isolate_dds()


@pytest.mark.launch_test
def generate_test_description():
    return launch.LaunchDescription([
        include_robovision(image_topics=CAMERA, camera='true', camera_rate_hz='5.0', backend='onnxruntime'),
        launch_testing.actions.ReadyToTest()])


class TestImageTopicString(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ros = RosTestContext('robovision_string_topic_probe')
        cls.labels = LabelsRecorder(cls.ros)

    @classmethod
    def tearDownClass(cls):
        cls.ros.close()

    def test_plain_string_topic(self):
        for name in ('clip_perception', 'feature_extractor'):
            self.assertTrue(wait_for_state(self.ros, name, 'active', 60.0), f'{name} did not reach active')
            self.assertEqual(get_parameter(self.ros, name, 'image_topics'), CAMERA)
        self.assertIsNotNone(self.labels.next_after(time.monotonic()), f'no ZeroShotLabels from frames on {CAMERA}')


@launch_testing.post_shutdown_test()
class TestNoProcessDied(unittest.TestCase):

    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
