"""launch_testing test of launch/robovision.launch.py: both nodes reach active and their topics appear.

Needs launch, launch_ros and launch_testing (not on PyPI): skipped with that reason where they are missing,
as in CI. Run with `launch_test test/test_launch.py` where they are installed.
"""
import os
import unittest

import pytest

launch_testing = pytest.importorskip(
    'launch_testing', reason='launch_testing is not installed (not on PyPI; part of a ROS 2 install)')
launch_ros = pytest.importorskip('launch_ros', reason='launch_ros is not installed (part of a ROS 2 install)')

import launch  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    share = get_package_share_directory('robovision_ros')
    include = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, 'launch', 'robovision.launch.py')),
        launch_arguments={'clip_model': os.environ.get('ROBOVISION_TEST_CLIP_MODEL', 'embedded:tiny_clip'),
                          'feature_model': os.environ.get('ROBOVISION_TEST_VIT_MODEL', 'embedded:tiny_vit'),
                          'backend': 'torch'}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestNodesActive(unittest.TestCase):

    def test_nodes_reach_active(self, proc_output):
        proc_output.assertWaitFor('configured clip', timeout=120, stream='stderr')
        proc_output.assertWaitFor('configured vit', timeout=120, stream='stderr')
