# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Pure-Python distribution of the robovision_ros library.

`colcon build` uses CMakeLists.txt (the package's build type is ament_cmake, because only CMake can generate
the messages). This file serves `pip install .` of the library alone -- encoders, preprocessing, export CLI --
on machines that need no ROS messages; `robovision_ros.msg` exists only in a colcon install.
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
