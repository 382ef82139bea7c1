# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The robovision_ros package (ament_python): the library, the nodes, the tools, the launch file and its config.

`colcon build` builds it as a ROS package (the executables under lib/robovision_ros for `ros2 run`, the launch file
and config under share/robovision_ros); `pip install ./robovision_ros` installs the library alone -- encoders,
preprocessing, export CLI -- on machines that need no ROS. The messages are the robovision_msgs package's.
"""
from glob import glob

from setuptools import setup

package_name = 'robovision_ros'

setup(
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.py')),
        ('share/' + package_name + '/config', glob('config/*')),
    ],
)
