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
from lifecycle_msgs.srv import GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

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

    @classmethod
    def tearDownClass(cls):
        cls.node.destroy_node()
        rclpy.shutdown()

    def _spin_until(self, predicate, timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.1)
        return predicate()

    def _call(self, srv_type, name, request):
        client = self.node.create_client(srv_type, name)
        self.assertTrue(self._spin_until(client.service_is_ready, 30.0), name)
        future = client.call_async(request)
        self.assertTrue(self._spin_until(future.done, 30.0), name)
        return future.result()

    def test_active_topics_and_live_labels(self):
        for name in ('clip_perception', 'feature_extractor'):
            self.assertTrue(self._spin_until(
                lambda: self._call(GetState, f'/{name}/get_state', GetState.Request()).current_state.label
                == 'active', 120.0), f'{name} did not reach active')
        topics = {'/clip_perception/zero_shot_labels', '/clip_perception/object_presence',
                  '/feature_extractor/patch_features'}
        self.assertTrue(self._spin_until(
            lambda: topics <= {n for n, _ in self.node.get_topic_names_and_types()}, 30.0))

        request = SetParameters.Request()
        request.parameters = [Parameter('labels', value=['red cup', 'blue bottle']).to_parameter_msg()]
        self.assertTrue(self._call(SetParameters, '/clip_perception/set_parameters', request).results[0].successful)

        received = []
        self.node.create_subscription(ZeroShotLabels, '/clip_perception/zero_shot_labels', received.append, 10)
        publisher = self.node.create_publisher(Image, CAMERA, qos_profile_sensor_data)
        frame = Image(height=48, width=64, encoding='rgb8', step=192, data=np.zeros(48 * 192, np.uint8).tobytes())
        deadline = time.monotonic() + 30.0
        while not received and time.monotonic() < deadline:
            publisher.publish(frame)
            self._spin_until(lambda: bool(received), 0.5)
        self.assertTrue(received, 'no ZeroShotLabels arrived')
        self.assertEqual(list(received[-1].labels), ['red cup', 'blue bottle'])
