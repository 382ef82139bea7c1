# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
launch_testing test: a user's params file decides what the launch arguments leave alone.

`params_file:=user.yaml camera:=true precision:=int8`: labels, backend and image_topics come from the user's file
(image_source publishes on the file's topic, so frames arrive), precision from the argument that was given.

Needs launch, launch_ros and launch_testing (a ROS 2 install); skipped where they are missing, as in CI. Run with
`launch_test test/test_launch_params_file.py`.
"""
import os
import sys
import tempfile
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

CAMERA = '/launch_test_params/camera'
USER_LABELS = ['green ball', 'yellow box', 'on']  # 'on' quoted below: unquoted YAML would make it a bool
USER_PARAMS = f"""
clip_perception:
  ros__parameters:
    backend: "onnxruntime"
    image_topics: ["{CAMERA}"]
    labels: ["green ball", "yellow box", "on"]
feature_extractor:
  ros__parameters:
    backend: "onnxruntime"
    image_topics: ["{CAMERA}"]
"""
isolate_dds()


@pytest.mark.launch_test
def generate_test_description():
    params = tempfile.NamedTemporaryFile('w', suffix='.yaml', prefix='robovision_user_', delete=False)
    params.write(USER_PARAMS)
    params.close()
    return launch.LaunchDescription([
        include_robovision(params_file=params.name, camera='true', camera_rate_hz='5.0', precision='int8'),
        launch_testing.actions.ReadyToTest()])


class TestUserParamsFile(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ros = RosTestContext('robovision_params_probe')
        cls.labels = LabelsRecorder(cls.ros)

    @classmethod
    def tearDownClass(cls):
        cls.ros.close()

    def test_params_file_keys_hold_and_given_arguments_override(self):
        self.assertTrue(wait_for_state(self.ros, 'clip_perception', 'active'), 'clip_perception did not reach active')
        self.assertEqual(get_parameter(self.ros, 'clip_perception', 'backend'), 'onnxruntime')
        self.assertEqual(get_parameter(self.ros, 'clip_perception', 'image_topics'), [CAMERA])
        self.assertEqual(get_parameter(self.ros, 'clip_perception', 'precision'), 'int8')
        self.assertEqual(get_parameter(self.ros, 'feature_extractor', 'precision'), 'int8')
        # Frames of image_source, wired to the file's topic, labelled with the file's vocabulary.
        message = self.labels.next_after(time.monotonic())
        self.assertIsNotNone(message, f'no ZeroShotLabels: image_source does not publish on {CAMERA}?')
        self.assertEqual(list(message.labels), USER_LABELS)


@launch_testing.post_shutdown_test()
class TestNoProcessDied(unittest.TestCase):

    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
