# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The vision_msgs equivalents of clip_perception's outputs carry the same results as its own messages.

vision_msgs is not on PyPI: a robot gets it from its distribution, CI builds it from ../shared/ros-launch
(ROBOVISION_ROS_SOURCES). Without it these tests skip, and the node says once that the standard outputs are off.
"""
from __future__ import annotations

import importlib.util
import time

import pytest
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from conftest import structured_images
from robovision_ros.image_codec import encode_raw_image
from robovision_msgs.msg import ObjectPresenceArray, ZeroShotLabels
from ros_harness import PerceptionProcess, RosTestContext, change_state, set_parameters

HAVE_VISION_MSGS = importlib.util.find_spec('vision_msgs') is not None
NODE = 'clip_perception'


def _frame(rgb, stamp):
    data, step = encode_raw_image(rgb, 'bgr8')
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='bgr8', step=step, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 0
    msg.header.frame_id = 'camera'
    return msg


NO_VISION_MSGS = ('vision_msgs is not installed (not on PyPI; a ROS 2 install has it, CI builds it with '
                  'ROBOVISION_ROS_SOURCES=../shared/ros-launch)')


@pytest.mark.skipif(not HAVE_VISION_MSGS, reason=NO_VISION_MSGS)
def test_vision_msgs_outputs_equal_the_own_results(tiny_clip_dir, model_cache, tmp_path):
    from vision_msgs.msg import Classification, Detection2DArray, LabelInfo

    process = PerceptionProcess(NODE, tmp_path / 'node.log', prefix='/rvstd', params={
        'model': tiny_clip_dir, 'backend': 'onnxruntime', 'engine_cache_dir': model_cache,
        'image_topics': 'camera/image_raw', 'labels': ['red cup', 'blue bottle', 'green ball'],
        'presence_queries': ['red cup', 'green ball'], 'presence_threshold': -1.0})
    ros = RosTestContext('std_test')
    got = {name: [] for name in ('labels', 'presence', 'classification', 'detections', 'label_info')}
    ros.node.create_subscription(ZeroShotLabels, process.topic('zero_shot_labels'), got['labels'].append, 20)
    ros.node.create_subscription(ObjectPresenceArray, process.topic('object_presence'), got['presence'].append, 20)
    ros.node.create_subscription(Classification, process.topic('classification'), got['classification'].append, 20)
    ros.node.create_subscription(Detection2DArray, process.topic('detections'), got['detections'].append, 20)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE)
    camera = ros.node.create_publisher(Image, f'{process.namespace}/camera/image_raw', qos_profile_sensor_data)
    image = structured_images(1, (48, 64))[0]

    def serve(stamp: int) -> dict:
        deadline = time.monotonic() + 20.0
        while time.monotonic() < deadline:
            camera.publish(_frame(image, stamp))
            if ros.spin_until(lambda: all(any(m.header.stamp.sec == stamp for m in got[k])
                                          for k in ('labels', 'presence', 'classification', 'detections')), 0.3):
                break
        return {k: next(m for m in got[k] if m.header.stamp.sec == stamp)
                for k in ('labels', 'presence', 'classification', 'detections')}

    try:
        assert change_state(ros, process.node, 'configure'), process.output()
        assert change_state(ros, process.node, 'activate')
        out = serve(100)
        classification = out['classification']
        assert [r.class_id for r in classification.results] == list(out['labels'].labels)
        # The same float32 scores, widened to float64 by vision_msgs: exact after the float32 round trip.
        assert [float(r.score) for r in classification.results] == [float(s) for s in out['labels'].scores]
        assert classification.header.frame_id == 'camera'
        present = [r for r in out['presence'].results if r.present and r.has_location]
        assert len(present) == 2  # threshold -1: both queries present
        detections = out['detections'].detections
        assert [d.results[0].hypothesis.class_id for d in detections] == [r.query for r in present]
        for detection, own in zip(detections, present):
            assert detection.bbox.size_x == own.roi.width and detection.bbox.size_y == own.roi.height
            assert detection.bbox.center.position.x == own.roi.x_offset + own.roi.width / 2.0
            assert detection.bbox.center.position.y == own.roi.y_offset + own.roi.height / 2.0
            assert detection.results[0].hypothesis.score == pytest.approx(own.similarity, abs=1e-6)
        # LabelInfo is latched: a subscriber that joins now gets the vocabulary in use, and a change sends a new one.
        ros.node.create_subscription(LabelInfo, process.topic('label_info'), got['label_info'].append, latched)
        assert ros.spin_until(lambda: bool(got['label_info']), 10.0)
        assert [c.class_name for c in got['label_info'][-1].class_map] == ['red cup', 'blue bottle', 'green ball']
        assert [c.class_id for c in got['label_info'][-1].class_map] == [0, 1, 2]
        assert set_parameters(ros, process.node, {'labels': ['white plate', 'yellow box']})[0].successful
        deadline = time.monotonic() + 20.0
        stamp = 200
        while time.monotonic() < deadline and not any(
                [c.class_name for c in m.class_map] == ['white plate', 'yellow box'] for m in got['label_info']):
            stamp += 1
            serve(stamp)
        assert [c.class_name for c in got['label_info'][-1].class_map] == ['white plate', 'yellow box']
    finally:
        ros.close()
        process.stop()


@pytest.mark.skipif(HAVE_VISION_MSGS, reason='vision_msgs is installed here: the standard outputs are on')
def test_without_vision_msgs_the_node_says_once_that_the_standard_outputs_are_off(
        tiny_clip_dir, model_cache, tmp_path):
    process = PerceptionProcess(NODE, tmp_path / 'node.log', prefix='/rvnostd', params={
        'model': tiny_clip_dir, 'backend': 'onnxruntime', 'engine_cache_dir': model_cache})
    ros = RosTestContext('nostd_test')
    try:
        for _ in range(2):
            assert change_state(ros, process.node, 'configure') and change_state(ros, process.node, 'cleanup')
        assert process.output().count('standard outputs (vision_msgs') == 1, process.output()
    finally:
        ros.close()
        process.stop()
