# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The package.xml files are valid format-3 manifests with the dependencies a stock ROS 2 build resolves."""
from pathlib import Path

from catkin_pkg.package import parse_package
from catkin_pkg.packages import find_packages

ROOT = Path(__file__).resolve().parent.parent


def test_the_repository_holds_the_messages_and_the_nodes_as_two_packages():
    # What colcon finds: packages are found by their package.xml, and a package's subfolders are not searched.
    found = {package.name: path for path, package in find_packages(str(ROOT), exclude_paths=[
        str(ROOT / d) for d in ('build', 'install', 'log')]).items()}
    assert found == {'robovision_msgs': 'robovision_msgs', 'robovision_ros': 'robovision_ros'}, found


def test_robovision_msgs_is_a_message_package_alone():
    package = parse_package(str(ROOT / 'robovision_msgs' / 'package.xml'))
    package.validate()
    assert package.package_format == 3 and package.get_build_type() == 'ament_cmake'
    names = {d.name for d in package.build_depends + package.buildtool_depends + package.exec_depends}
    assert {'rosidl_default_generators', 'rosidl_default_runtime', 'std_msgs', 'sensor_msgs'} <= names
    assert any(group.name == 'rosidl_interface_packages' for group in package.member_of_groups)
    # A consumer of the messages pulls in no model, framework or tool.
    assert not names & {'rclpy', 'launch', 'launch_ros', 'python3-numpy', 'python3-opencv'}


def test_robovision_ros_is_the_python_package_of_the_nodes():
    package = parse_package(str(ROOT / 'robovision_ros' / 'package.xml'))
    package.validate()
    assert package.package_format == 3 and package.get_build_type() == 'ament_python'
    names = {d.name for d in package.build_depends + package.buildtool_depends + package.exec_depends +
             package.test_depends}
    for required in ('robovision_msgs', 'rclpy', 'lifecycle_msgs', 'sensor_msgs', 'std_msgs', 'builtin_interfaces',
                     'diagnostic_msgs', 'launch_ros', 'launch_testing', 'launch_testing_ros'):
        assert required in names, required
