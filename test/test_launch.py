"""launch_testing test of launch/robovision.launch.py: both nodes reach active, their topics appear, and a
parameter set changes the labels that come out.

Needs launch, launch_ros and launch_testing, which are not on PyPI (they come with a ROS 2 install): skipped
with that reason where they are missing, as in CI. Run with `launch_test test/test_launch.py`.
"""
import os
import time
import unittest

import pytest

launch_testing = pytest.importorskip(
    'launch_testing', reason='launch_testing is not installed (not on PyPI; part of a ROS 2 install)')
pytest.importorskip('launch_ros', reason='launch_ros is not installed (part of a ROS 2 install)')

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from robovision_ros import lifecycle_client  # noqa: E402
from robovision_ros.msg import ZeroShotLabels  # noqa: E402

CAMERA = '/launch_test/image_raw'


@pytest.mark.launch_test
def generate_test_description():
    share = get_package_share_directory('robovision_ros')
    include = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'robovision.launch.py')),
        launch_arguments={'backend': 'onnxruntime', 'image_topics': f'["{CAMERA}"]'}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestRobovisionLaunch(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        rclpy.init()
        cls.node = rclpy.create_node('robovision_launch_probe')
        cls.executor = SingleThreadedExecutor()
        cls.executor.add_node(cls.node)

    @classmethod
    def tearDownClass(cls):
        lifecycle_client.forget_clients(cls.node)
        cls.executor.shutdown()
        cls.node.destroy_node()
        rclpy.shutdown()

    def _spin_until(self, predicate, timeout_s):
        return lifecycle_client.spin_until(self.executor, predicate, timeout_s)

    def test_active_topics_and_live_labels(self):
        for name in ('clip_perception', 'feature_extractor'):
            self.assertTrue(self._spin_until(
                lambda: lifecycle_client.get_state(self.node, self.executor, name) == 'active', 120.0),
                f'{name} did not reach active')
        topics = {'/clip_perception/zero_shot_labels', '/clip_perception/object_presence',
                  '/feature_extractor/patch_features'}
        self.assertTrue(self._spin_until(
            lambda: topics <= {n for n, _ in self.node.get_topic_names_and_types()}, 30.0))

        (result,) = lifecycle_client.set_parameters(self.node, self.executor, 'clip_perception',
                                                    {'labels': ['red cup', 'blue bottle']})
        self.assertTrue(result.successful)

        received = []
        self.node.create_subscription(ZeroShotLabels, '/clip_perception/zero_shot_labels', received.append, 10)
        publisher = self.node.create_publisher(Image, CAMERA, qos_profile_sensor_data)
        frame = Image(height=48, width=64, encoding='rgb8', step=192, data=np.zeros(48 * 192, np.uint8).tobytes())
        frame.header.stamp.sec = 7  # only outputs of this frame count, not of frames before the set
        deadline = time.monotonic() + 30.0
        while not [m for m in received if m.header.stamp.sec == 7] and time.monotonic() < deadline:
            publisher.publish(frame)
            self._spin_until(lambda: any(m.header.stamp.sec == 7 for m in received), 0.5)
        mine = [m for m in received if m.header.stamp.sec == 7]
        self.assertTrue(mine, 'no ZeroShotLabels arrived')
        self.assertEqual(list(mine[-1].labels), ['red cup', 'blue bottle'])
