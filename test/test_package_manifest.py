# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""package.xml is a valid format-3 manifest with the dependencies a stock ROS 2 build resolves."""
from pathlib import Path

from catkin_pkg.package import parse_package

ROOT = Path(__file__).resolve().parent.parent


def test_package_xml_is_valid_format_3():
    package = parse_package(str(ROOT / 'package.xml'))
    package.validate()
    assert package.package_format == 3 and package.name == 'robovision_ros'
    names = {d.name for d in package.build_depends + package.buildtool_depends + package.exec_depends +
             package.test_depends}
    for required in ('rclpy', 'lifecycle_msgs', 'sensor_msgs', 'std_msgs', 'builtin_interfaces', 'diagnostic_msgs',
                     'rosidl_default_generators', 'rosidl_default_runtime', 'launch_ros', 'launch_testing',
                     'launch_testing_ros'):
        assert required in names, required
    assert any(group.name == 'rosidl_interface_packages' for group in package.member_of_groups)
    assert package.get_build_type() == 'ament_cmake'
