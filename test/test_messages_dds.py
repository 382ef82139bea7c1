# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Every robovision_ros message type crosses real Fast DDS between two processes and arrives intact."""
from __future__ import annotations

import array

import numpy as np
import pytest
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import RegionOfInterest

from robovision_ros.message_conversions import fill_patch_features, patch_features_to_numpy
from robovision_msgs.msg import ObjectPresence, ObjectPresenceArray, PatchFeatures, ZeroShotLabels
from ros_harness import TEST_DIR, NodeProcess, RosTestContext, unique_name, wait_for_publishers, \
    wait_for_subscribers

QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
TOPICS = {name: unique_name('/rv_test_' + name.lower()) for name in
          ('PatchFeatures', 'ZeroShotLabels', 'ObjectPresenceArray')}


@pytest.fixture(scope='module')
def relay(tmp_path_factory):
    """Start a relay process echoing each message type, plus this process's publishers and subscriptions."""
    log = tmp_path_factory.mktemp('relay') / 'relay.log'
    process = NodeProcess([str(TEST_DIR / 'relay_node.py'), *(f'{t}={topic}' for t, topic in TOPICS.items())],
                          log)
    ros = RosTestContext('message_test')
    received: dict[str, list] = {name: [] for name in TOPICS}
    publishers = {}
    types = {'PatchFeatures': PatchFeatures, 'ZeroShotLabels': ZeroShotLabels,
             'ObjectPresenceArray': ObjectPresenceArray}
    for name, topic in TOPICS.items():
        publishers[name] = ros.node.create_publisher(types[name], topic + '/in', QOS)
        subscription = ros.node.create_subscription(
            types[name], topic + '/out', lambda msg, name=name: received[name].append(msg), QOS)
        assert wait_for_subscribers(ros.executor, publishers[name]), process.output()
        assert wait_for_publishers(ros.executor, subscription), process.output()
    yield ros, publishers, received
    ros.close()
    process.stop()


def _round_trip(relay, name: str, msg):
    ros, publishers, received = relay
    received[name].clear()
    publishers[name].publish(msg)
    assert ros.spin_until(lambda: len(received[name]) >= 1, timeout_s=15.0), f'no {name} came back'
    return received[name][0]


def _header(msg, frame_id: str, sec: int, nanosec: int) -> None:
    msg.header.frame_id = frame_id
    msg.header.stamp.sec = sec
    msg.header.stamp.nanosec = nanosec


@pytest.mark.parametrize('grid_h,grid_w,dim', [(14, 14, 768), (7, 7, 512)])
@pytest.mark.parametrize('dtype', [np.float32, np.float16])
def test_patch_features_cross_dds_intact(relay, grid_h, grid_w, dim, dtype):
    rng = np.random.default_rng(grid_h * dim)
    features = rng.standard_normal((grid_h * grid_w, dim)).astype(dtype)
    embedding = rng.standard_normal(dim).astype(np.float32)
    msg = fill_patch_features(PatchFeatures(), features, grid_h, grid_w, embedding)
    _header(msg, 'camera_optical', 1700000000, 123456789)
    msg.model_id = 'tiny-vit'
    msg.patch_size = 16
    msg.scale = 1.0
    msg.normalized = False
    msg.preprocess_ms, msg.inference_ms, msg.total_ms = 1.5, 2.5, 4.25

    back = _round_trip(relay, 'PatchFeatures', msg)

    assert back.header.frame_id == 'camera_optical'
    assert (back.header.stamp.sec, back.header.stamp.nanosec) == (1700000000, 123456789)
    assert back.model_id == 'tiny-vit' and back.patch_size == 16
    assert (back.preprocess_ms, back.inference_ms, back.total_ms) == (1.5, 2.5, 4.25)
    tensor = patch_features_to_numpy(back)
    assert tensor.features.dtype == np.dtype(dtype)
    assert tensor.features.shape == (grid_h * grid_w, dim)
    assert tensor.grid.shape == (grid_h, grid_w, dim)
    np.testing.assert_array_equal(tensor.features, features)  # bit-exact
    np.testing.assert_array_equal(tensor.global_embedding, embedding)


def test_zero_shot_labels_unicode_cross_dds_intact(relay):
    labels = ['red cup', 'tasse rouge', '赤いカップ', 'čaša', 'бутылка', 'box 📦']
    scores = np.array([0.5, 0.2, 0.1, 0.1, 0.05, 0.05], dtype=np.float32)
    msg = ZeroShotLabels()
    _header(msg, 'cam', 12, 34)
    msg.model_id = 'tiny-clip'
    msg.labels = labels
    msg.scores = array.array('f', scores.tobytes())
    msg.best_label, msg.best_score = labels[0], float(scores[0])
    msg.prompt_templates = ['a photo of a {}.', 'ein Foto von {} ✓']
    msg.vocabulary_version = 7

    back = _round_trip(relay, 'ZeroShotLabels', msg)

    assert list(back.labels) == labels
    np.testing.assert_array_equal(np.asarray(back.scores, dtype=np.float32), scores)  # a copy through DDS: exact
    assert back.best_label == 'red cup'
    assert list(back.prompt_templates) == ['a photo of a {}.', 'ein Foto von {} ✓']
    assert back.vocabulary_version == 7
    assert (back.header.frame_id, back.header.stamp.sec, back.header.stamp.nanosec) == ('cam', 12, 34)


def test_empty_presence_array_cross_dds_intact(relay):
    msg = ObjectPresenceArray()
    _header(msg, 'cam', 5, 6)
    msg.vocabulary_version = 3
    back = _round_trip(relay, 'ObjectPresenceArray', msg)
    assert list(back.results) == []
    assert back.vocabulary_version == 3 and back.header.stamp.sec == 5


def test_presence_array_with_localisation_cross_dds_intact(relay):
    located = ObjectPresence(query='blue bottle', similarity=0.31, threshold=0.25, present=True,
                             has_location=True, roi=RegionOfInterest(x_offset=10, y_offset=20, height=30,
                                                                     width=40),
                             peak_x=25, peak_y=35, peak_score=0.42)
    absent = ObjectPresence(query='green ball', similarity=0.1, threshold=0.25, present=False)
    msg = ObjectPresenceArray(results=[located, absent], model_id='tiny-clip')
    back = _round_trip(relay, 'ObjectPresenceArray', msg)
    assert [r.query for r in back.results] == ['blue bottle', 'green ball']
    first = back.results[0]
    assert first.present and first.has_location
    assert (first.roi.x_offset, first.roi.y_offset, first.roi.width, first.roi.height) == (10, 20, 40, 30)
    assert (first.peak_x, first.peak_y) == (25, 35)
    assert first.peak_score == pytest.approx(0.42)
    assert not back.results[1].present and not back.results[1].has_location
