# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
vision_msgs, built from source where it is not installed (CI: ROBOVISION_ROS_SOURCES), works through rclpy.

Detection2DArray, Classification and LabelInfo round-trip through rclpy's serialization and across Fast DDS
between two processes, every field intact. Skipped with the reason where vision_msgs is not installed.
"""
from __future__ import annotations

import time

import pytest

vision_msgs = pytest.importorskip(
    'vision_msgs.msg', reason='vision_msgs is not installed (not on PyPI; a ROS 2 distribution package, or '
                              'ROBOVISION_ROS_SOURCES=DIR scripts/setup.sh with its sources)')

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402

from ros_harness import TEST_DIR, NodeProcess, RosTestContext, unique_name, wait_for_publishers, \
    wait_for_subscribers  # noqa: E402

QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)


def _header(msg, frame_id: str = 'camera') -> None:
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = 1700000000
    msg.header.stamp.nanosec = 123456789


def detections() -> 'vision_msgs.Detection2DArray':
    array = vision_msgs.Detection2DArray()
    _header(array)
    for i, (label, score) in enumerate((('red cup', 0.91), ('blue bottle', 0.42))):
        detection = vision_msgs.Detection2D(id=f'det{i}')
        _header(detection)
        detection.bbox.center.position.x = 100.5 + i
        detection.bbox.center.position.y = 200.25
        detection.bbox.center.theta = 0.0
        detection.bbox.size_x = 64.0
        detection.bbox.size_y = 32.0 + i
        hypothesis = vision_msgs.ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = label
        hypothesis.hypothesis.score = score
        detection.results.append(hypothesis)
        array.detections.append(detection)
    return array


def classification() -> 'vision_msgs.Classification':
    msg = vision_msgs.Classification()
    _header(msg)
    msg.results = [vision_msgs.ObjectHypothesis(class_id=label, score=score)
                   for label, score in (('red cup', 0.7), ('green ball', 0.2), ('on', 0.1))]
    return msg


def label_info() -> 'vision_msgs.LabelInfo':
    msg = vision_msgs.LabelInfo(threshold=0.25)
    _header(msg)
    msg.class_map = [vision_msgs.VisionClass(class_id=i, class_name=name)
                     for i, name in enumerate(('red cup', 'green ball', 'on'))]
    return msg


def test_serialization_round_trip():
    for msg in (detections(), classification(), label_info()):
        assert deserialize_message(serialize_message(msg), type(msg)) == msg


def test_round_trip_across_dds_between_two_processes(tmp_path):
    messages = {'Detection2DArray': detections(), 'Classification': classification(), 'LabelInfo': label_info()}
    topics = {name: unique_name('/rv_vision_' + name.lower()) for name in messages}
    process = NodeProcess([str(TEST_DIR / 'relay_node.py'),
                           *(f'vision_msgs/msg/{name}={topic}' for name, topic in topics.items())],
                          tmp_path / 'relay.log')
    ros = RosTestContext('vision_msgs_test')
    try:
        received: dict[str, list] = {name: [] for name in messages}
        for name, msg in messages.items():
            publisher = ros.node.create_publisher(type(msg), topics[name] + '/in', QOS)
            subscription = ros.node.create_subscription(
                type(msg), topics[name] + '/out', received[name].append, QOS)
            assert wait_for_subscribers(ros.executor, publisher), process.output()
            assert wait_for_publishers(ros.executor, subscription), process.output()
            # Matching can be seen on one side before the other has finished discovery: resend until one arrives.
            deadline = time.monotonic() + 20.0
            while not received[name] and time.monotonic() < deadline:
                publisher.publish(msg)
                ros.spin_until(lambda: bool(received[name]), 0.5)
            assert received[name], f'no {name} came back\n{process.output()}'
            assert received[name][0] == msg
        back = received['Detection2DArray'][0]
        assert [d.results[0].hypothesis.class_id for d in back.detections] == ['red cup', 'blue bottle']
        assert back.detections[1].bbox.size_y == 33.0 and back.header.stamp.nanosec == 123456789
    finally:
        ros.close()
        process.stop()
