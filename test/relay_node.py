# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Test helper run as its own process: republish every message from `<topic>/in` on `<topic>/out`.

usage: relay_node.py TYPE=TOPIC [TYPE=TOPIC ...]
TYPE is a robovision_msgs.msg class name (PatchFeatures) or a full type name (vision_msgs/msg/Detection2DArray).
"""
from __future__ import annotations

import importlib
import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

import robovision_msgs.msg as robovision_msgs


def main() -> int:
    qos = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    rclpy.init()
    node = Node('relay')
    for pair in sys.argv[1:]:
        type_name, topic = pair.split('=', 1)
        if '/' in type_name:
            package, kind, name = type_name.split('/')
            msg_type = getattr(importlib.import_module(f'{package}.{kind}'), name)
        else:
            msg_type = getattr(robovision_msgs, type_name)
        publisher = node.create_publisher(msg_type, topic + '/out', qos)
        node.create_subscription(msg_type, topic + '/in', publisher.publish, qos)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
