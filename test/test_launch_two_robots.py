# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
launch_testing test: two robots in one graph, `namespace:=robot1` and `namespace:=robot2`, each with its camera.

One params file serves both: `/**/...` sections apply to both robots, a `/robot2/clip_perception:` section to robot2
only, `/robot1/image_source:` and `/robot2/image_source:` give each camera its frame_id. No cross-talk: each
camera topic has its robot's image_source as its one publisher and its robot's two perception nodes as its only
subscriptions, nothing uses the root camera topic, and each robot's outputs carry its own camera's frame_id and
its own vocabulary.

Needs launch, launch_ros and launch_testing (a ROS 2 install, or ROBOVISION_ROS_SOURCES=DIR scripts/setup.sh);
skipped with that reason where they are missing. Run with `launch_test test/test_launch_two_robots.py` or pytest.
"""
import os
import sys
import tempfile
import time
import unittest

import pytest

NOT_ON_PYPI = 'not on PyPI; part of a ROS 2 install, or ROBOVISION_ROS_SOURCES=DIR scripts/setup.sh'
launch_testing = pytest.importorskip('launch_testing', reason=f'launch_testing is not installed ({NOT_ON_PYPI})')
pytest.importorskip('launch_ros', reason=f'launch_ros is not installed ({NOT_ON_PYPI})')

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # launch_test does not add test/ itself

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402

from launch_harness import LabelsRecorder, get_parameter, include_robovision, isolate_dds, wait_for_state  # noqa
from robovision_msgs.msg import PatchFeatures  # noqa: E402
from ros_harness import RosTestContext  # noqa: E402

ROBOTS = ('robot1', 'robot2')
SHARED_LABELS = ['red cup', 'blue bottle']
ROBOT2_LABELS = ['green ball', 'yellow box', 'on']
PARAMS = """
/**:
  ros__parameters:
    image_topics: ["camera/image_raw"]
/**/clip_perception:
  ros__parameters:
    backend: "onnxruntime"
    labels: ["red cup", "blue bottle"]
/**/feature_extractor:
  ros__parameters:
    backend: "onnxruntime"
    output_dtype: "float16"
/robot2/clip_perception:
  ros__parameters:
    labels: ["green ball", "yellow box", "on"]
/robot1/image_source:
  ros__parameters:
    frame_id: "robot1_camera"
/robot2/image_source:
  ros__parameters:
    frame_id: "robot2_camera"
"""
isolate_dds()


@pytest.mark.launch_test
def generate_test_description():
    params = tempfile.NamedTemporaryFile('w', suffix='.yaml', prefix='robovision_robots_', delete=False)
    params.write(PARAMS)
    params.close()
    return launch.LaunchDescription(
        [include_robovision(namespace=robot, params_file=params.name, camera='true', camera_rate_hz='2.0')
         for robot in ROBOTS] + [launch_testing.actions.ReadyToTest()])


class TestTwoRobots(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.ros = RosTestContext('robovision_robots_probe')
        cls.labels = {robot: LabelsRecorder(cls.ros, f'/{robot}/clip_perception/zero_shot_labels')
                      for robot in ROBOTS}
        cls.features = {robot: [] for robot in ROBOTS}
        for robot in ROBOTS:
            cls.ros.node.create_subscription(PatchFeatures, f'/{robot}/feature_extractor/patch_features',
                                             cls.features[robot].append, 10)

    @classmethod
    def tearDownClass(cls):
        cls.ros.close()

    def test_robots_are_separated(self):
        node = self.ros.node
        for robot in ROBOTS:
            for name in ('clip_perception', 'feature_extractor'):
                self.assertTrue(wait_for_state(self.ros, f'{robot}/{name}', 'active'), f'{robot}/{name} not active')

        def endpoints(topic: str) -> tuple[list[str], list[str]]:
            publishers = sorted(f'{i.node_namespace}/{i.node_name}' for i in node.get_publishers_info_by_topic(topic))
            subscriptions = sorted(f'{i.node_namespace}/{i.node_name}'
                                   for i in node.get_subscriptions_info_by_topic(topic))
            return publishers, subscriptions

        for robot in ROBOTS:
            camera = f'/{robot}/camera/image_raw'
            want = ([f'/{robot}/image_source'], [f'/{robot}/clip_perception', f'/{robot}/feature_extractor'])
            self.assertTrue(self.ros.spin_until(lambda: endpoints(camera) == want, 30.0),
                            f'{camera}: publishers and subscriptions {endpoints(camera)}, expected {want}')
        self.assertEqual(endpoints('/camera/image_raw'), ([], []), 'something uses the root camera topic')

        # Outputs: each robot's labels with its own vocabulary (the /robot2 section over the /** one), from its
        # own camera (frame_id), and its features at the float16 of the /**/feature_extractor section.
        for robot, labels in (('robot1', SHARED_LABELS), ('robot2', ROBOT2_LABELS)):
            self.assertEqual(get_parameter(self.ros, f'{robot}/clip_perception', 'labels'), labels)
            self.assertEqual(get_parameter(self.ros, f'{robot}/feature_extractor', 'output_dtype'), 'float16')
            message = self.labels[robot].next_after(time.monotonic())
            self.assertIsNotNone(message, f'no ZeroShotLabels from {robot}')
            self.assertEqual((list(message.labels), message.header.frame_id), (labels, f'{robot}_camera'))
        for robot in ROBOTS:
            self.assertTrue(self.ros.spin_until(lambda: bool(self.features[robot]), 30.0), f'no features: {robot}')
            frame_ids = {msg.header.frame_id for msg in self.features[robot]}
            dtypes = {msg.dtype for msg in self.features[robot]}
            self.assertEqual((frame_ids, dtypes), ({f'{robot}_camera'}, {'float16'}))
        for robot in ROBOTS:
            frame_ids = {msg.header.frame_id for _, msg in self.labels[robot].received}
            self.assertEqual(frame_ids, {f'{robot}_camera'}, f'{robot} labelled another camera\'s frames')


@launch_testing.post_shutdown_test()
class TestNoProcessDied(unittest.TestCase):

    def test_exit_codes(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
