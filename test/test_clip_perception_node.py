# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""clip_perception in its own process, driven as `ros2 lifecycle set` / `ros2 param set` drive it."""
from __future__ import annotations

import re
import time
from types import SimpleNamespace

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from conftest import structured_images
from robovision_ros.image_codec import encode_raw_image
from robovision_msgs.msg import ObjectPresenceArray, ZeroShotLabels
from ros_harness import PerceptionProcess, RosTestContext, change_state, get_state, set_parameters

NODE = 'clip_perception'


def _image(rgb, encoding='bgr8', stamp=(100, 5), frame_id='camera'):
    data, step = encode_raw_image(rgb, encoding)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=step, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    msg.header.frame_id = frame_id
    return msg


@pytest.fixture(scope='module')
def graph(tiny_clip_dir, model_cache, tmp_path_factory):
    """
    One clip_perception process shared by the focused tests below.

    Each test first brings the node to the state and vocabulary it needs (`_active_with`), so any one of them runs
    alone or in any order.
    """
    node = PerceptionProcess(NODE, tmp_path_factory.mktemp('clip_node') / 'node.log', params={
        'model': tiny_clip_dir, 'backend': 'onnxruntime', 'engine_cache_dir': model_cache,
        'image_topics': 'camera/image_raw',  # one topic as a plain string, relative to the node's namespace
        'labels': ['red cup', 'blue bottle', 'green ball'], 'presence_queries': ['red cup'],
        'presence_threshold': -1.0})
    ros = RosTestContext('clip_test')
    received = {'labels': [], 'presence': [], 'diagnostics': []}
    ros.node.create_subscription(ZeroShotLabels, node.topic('zero_shot_labels'), received['labels'].append, 10)
    ros.node.create_subscription(ObjectPresenceArray, node.topic('object_presence'), received['presence'].append, 10)
    ros.node.create_subscription(DiagnosticArray, '/diagnostics', received['diagnostics'].append, 10)
    publisher = ros.node.create_publisher(Image, f'{node.namespace}/camera/image_raw', qos_profile_sensor_data)
    yield SimpleNamespace(ros=ros, node=node.node, publisher=publisher, received=received, process=node,
                          image=structured_images(1, (48, 64))[0])
    ros.close()
    node.stop()


def _send_until(ros, publisher, received, key, make_msg, count=1, timeout_s=20.0):
    """
    Publish frames (best effort) until `count` outputs for them arrive; return those outputs.

    Outputs of earlier frames still in flight are skipped: they carry another stamp.
    """
    stamp = make_msg().header.stamp
    before = len(received[key])

    def mine():
        return [m for m in received[key][before:]
                if (m.header.stamp.sec, m.header.stamp.nanosec) == (stamp.sec, stamp.nanosec)]

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(mine()) < count:
        publisher.publish(make_msg())
        ros.spin_until(lambda: len(mine()) >= count, 0.3)
    assert len(mine()) >= count, f'no {key} output for frames stamped {stamp.sec}.{stamp.nanosec}'
    return mine()


def _wait_for_labels(ros, publisher, received, image, labels, timeout_s=20.0):
    """
    Send frames until an output scored against `labels` arrives (a vocabulary set is applied in the background).

    Every output before it carries the complete previous vocabulary, never a mix.
    """
    deadline = time.monotonic() + timeout_s
    start = len(received['labels'])
    while time.monotonic() < deadline:
        if any(list(m.labels) == labels for m in received['labels'][start:]):
            break
        publisher.publish(_image(image, stamp=(150, 0)))
        ros.spin_until(lambda: any(list(m.labels) == labels for m in received['labels'][start:]), 0.3)
    outputs = received['labels'][start:]
    assert any(list(m.labels) == labels for m in outputs), f'vocabulary {labels} never applied'
    first_new = next(i for i, m in enumerate(outputs) if list(m.labels) == labels)
    assert all(list(m.labels) != labels and len(m.labels) == len(m.scores) for m in outputs[:first_new])


TRANSITIONS_TO_ACTIVE = {'unconfigured': ('configure', 'activate'), 'inactive': ('activate',), 'active': ()}
TRANSITIONS_TO_UNCONFIGURED = {'unconfigured': (), 'inactive': ('cleanup',), 'active': ('deactivate', 'cleanup')}


def _transition(graph, path: dict) -> None:
    state = get_state(graph.ros, graph.node)
    for transition in path[state]:
        assert change_state(graph.ros, graph.node, transition), graph.process.output()[-3000:]


def _active_with(graph, labels=('red cup', 'blue bottle', 'green ball')) -> None:
    """Bring the shared node to active with this label vocabulary applied (whatever an earlier test left)."""
    _transition(graph, TRANSITIONS_TO_ACTIVE)
    (result,) = set_parameters(graph.ros, graph.node, {'labels': list(labels)})
    assert result.successful, result.reason
    _wait_for_labels(graph.ros, graph.publisher, graph.received, graph.image, list(labels))


def _diagnostic_counter(diagnostics, node_name: str, key: str) -> int:
    """Largest value of counter `key` in the /diagnostics statuses of node `node_name` (fully qualified)."""
    values = [{kv.key: kv.value for kv in s.values} for d in diagnostics for s in d.status
              if s.name == f'{node_name}: perception']
    return max((int(v.get(key, 0)) for v in values), default=0)


def test_configure_from_unconfigured_and_fixed_parameters_refused(graph):
    # The first service answers once discovery finds the node.
    _transition(graph, TRANSITIONS_TO_UNCONFIGURED)
    assert get_state(graph.ros, graph.node) == 'unconfigured', graph.process.output()
    assert change_state(graph.ros, graph.node, 'configure'), graph.process.output()
    assert get_state(graph.ros, graph.node) == 'inactive'
    # Fixed parameters are rejected with the reason while configured.
    (result,) = set_parameters(graph.ros, graph.node, {'precision': 'int8'})
    assert not result.successful and 'cleanup' in result.reason
    assert change_state(graph.ros, graph.node, 'activate')


def test_labels_carry_scores_and_the_input_header(graph):
    _active_with(graph)
    out = _send_until(graph.ros, graph.publisher, graph.received, 'labels', lambda: _image(graph.image))[-1]
    assert list(out.labels) == ['red cup', 'blue bottle', 'green ball']
    assert abs(sum(out.scores) - 1.0) < 1e-4 and out.best_label in out.labels
    assert out.best_score == pytest.approx(max(out.scores))
    assert (out.header.stamp.sec, out.header.stamp.nanosec, out.header.frame_id) == (100, 5, 'camera')
    assert out.prompt_templates == ['a photo of a {}.']


def test_presence_with_location_in_source_pixels(graph):
    _active_with(graph)
    presence = _send_until(graph.ros, graph.publisher, graph.received, 'presence', lambda: _image(graph.image))[-1]
    assert [r.query for r in presence.results] == ['red cup']
    first = presence.results[0]
    assert first.present and first.threshold == pytest.approx(-1.0) and first.has_location
    assert 0 <= first.peak_x < 64 and 0 <= first.peak_y < 48
    assert first.roi.width >= 1 and first.roi.x_offset + first.roi.width <= 64


def test_live_vocabulary_swaps_whole_and_an_unchanged_set_keeps_its_version(graph):
    ros, publisher, received = graph.ros, graph.publisher, graph.received
    _active_with(graph)
    version = _send_until(ros, publisher, received, 'labels', lambda: _image(graph.image, stamp=(180, 0)))[-1] \
        .vocabulary_version
    # The set returns at once, the new embeddings are encoded off the executor and swapped in whole; once an
    # output carries them, every later frame uses them.
    (result,) = set_parameters(ros, graph.node, {'labels': ['white plate', 'yellow box']})
    assert result.successful, result.reason
    _wait_for_labels(ros, publisher, received, graph.image, ['white plate', 'yellow box'])
    received['labels'].clear()
    latest = _send_until(ros, publisher, received, 'labels', lambda: _image(graph.image, stamp=(200, 0)))
    assert all(list(m.labels) == ['white plate', 'yellow box'] for m in latest)
    assert all(m.vocabulary_version == version + 1 for m in latest)
    # Setting the same vocabulary again (as a retried `ros2 param set` would) changes nothing.
    (result,) = set_parameters(ros, graph.node, {'labels': ['white plate', 'yellow box']})
    assert result.successful
    received['labels'].clear()
    again = _send_until(ros, publisher, received, 'labels', lambda: _image(graph.image, stamp=(250, 0)))
    assert all(m.vocabulary_version == version + 1 for m in again)


def test_invalid_vocabularies_are_rejected_with_a_reason(graph):
    _active_with(graph)
    for bad, why in ((['a', 'a'], 'unique'), (['ok', ' '], 'blank')):
        (result,) = set_parameters(graph.ros, graph.node, {'labels': bad})
        assert not result.successful and why in result.reason
    (result,) = set_parameters(graph.ros, graph.node, {'prompt_templates': ['no placeholder']})
    assert not result.successful and "'{}'" in result.reason


def test_unsupported_encoding_is_logged_and_good_frames_still_served(graph):
    _active_with(graph)
    bad = Image(height=2, width=2, encoding='yuv444', step=6, data=bytes(12))
    deadline = time.monotonic() + 15.0
    while "encoding 'yuv444' not supported" not in graph.process.output() and time.monotonic() < deadline:
        graph.publisher.publish(bad)  # best effort, newest frame only: resend until one is processed
        graph.ros.spin_until(lambda: "encoding 'yuv444'" in graph.process.output(), 0.3)
    assert "encoding 'yuv444' not supported; supported: rgb8" in graph.process.output()
    out = _send_until(graph.ros, graph.publisher, graph.received, 'labels',
                      lambda: _image(graph.image, stamp=(300, 0)))
    assert out[0].header.stamp.sec == 300


def test_diagnostics_report_rates_drops_and_stages(graph):
    name = f'/{graph.node}: perception'
    received = graph.received
    _active_with(graph)
    bad = Image(height=2, width=2, encoding='yuv444', step=6, data=bytes(12))

    def rejected_reported():
        return any(s.name == name and int({kv.key: kv.value for kv in s.values}.get('rejected_frames', 0)) >= 1
                   for d in received['diagnostics'] for s in d.status)

    deadline = time.monotonic() + 15.0
    while not rejected_reported() and time.monotonic() < deadline:
        graph.publisher.publish(bad)  # a rejected frame, counted
        graph.ros.spin_until(rejected_reported, 0.5)
    assert rejected_reported()
    status = [s for d in received['diagnostics'] for s in d.status if s.name == name][-1]
    values = {kv.key: kv.value for kv in status.values}
    for key in ('input_rate_hz', 'output_rate_hz', 'dropped_superseded', 'dropped_too_old',
                'inference_ms_p50', 'inference_ms_p95', 'backend', 'precision', 'frame_age_ms_p50',
                'vocabulary_version', 'last_error'):
        assert key in values, key
    assert values['backend'] == 'onnxruntime' and int(values['rejected_frames']) >= 1


def test_cleanup_and_configure_repeatedly_then_change_a_fixed_parameter(graph):
    ros, node = graph.ros, graph.node
    _active_with(graph, ['white plate', 'yellow box'])
    assert change_state(ros, node, 'deactivate')
    for _ in range(2):
        assert change_state(ros, node, 'cleanup')
        assert get_state(ros, node) == 'unconfigured'
        assert change_state(ros, node, 'configure')
    assert change_state(ros, node, 'cleanup')
    (result,) = set_parameters(ros, node, {'precision': 'int8'})
    assert result.successful
    assert change_state(ros, node, 'configure')
    assert change_state(ros, node, 'activate')
    graph.received['labels'].clear()
    out = _send_until(ros, graph.publisher, graph.received, 'labels',
                      lambda: _image(graph.image, 'rgb8', stamp=(400, 0)))
    assert list(out[-1].labels) == ['white plate', 'yellow box']
    assert graph.process.alive()
    _transition(graph, TRANSITIONS_TO_UNCONFIGURED)  # back to fp32 for the other tests
    assert set_parameters(ros, node, {'precision': 'fp32'})[0].successful


def test_configure_failure_is_clear_and_recoverable(tiny_clip_dir, model_cache, tmp_path):
    process = PerceptionProcess(NODE, tmp_path / 'node.log', prefix='/rvfail', params={
        'model': tmp_path / 'missing_model', 'engine_cache_dir': model_cache})
    ros = RosTestContext('clip_fail_test')
    node = process.node
    try:
        assert not change_state(ros, node, 'configure')
        assert get_state(ros, node) == 'unconfigured'
        assert ros.spin_until(lambda: 'missing_model' in process.output() and 'does not exist' in process.output(),
                              5.0)
        results = set_parameters(ros, node, {'model': str(tiny_clip_dir), 'backend': 'torch'})
        assert all(r.successful for r in results)
        assert change_state(ros, node, 'configure')
        (result,) = set_parameters(ros, node, {'device': 'cuda'})
        assert not result.successful
        assert change_state(ros, node, 'cleanup')
        (result,) = set_parameters(ros, node, {'device': 'cuda'})
        assert result.successful
        import torch

        if not torch.cuda.is_available():
            assert not change_state(ros, node, 'configure')
            assert ros.spin_until(lambda: 'no CUDA GPU' in process.output(), 5.0)
        assert process.alive()
        assert change_state(ros, node, 'shutdown')  # from unconfigured
        assert get_state(ros, node) == 'finalized'
    finally:
        ros.close()
        process.stop()


def test_two_cameras_batched_stale_frames_dropped_and_debug_image(tiny_clip_dir, model_cache, tmp_path):
    """
    Check batching, the dropping of stale frames and the debug image.

    batch=true runs both cameras' newest frames in one inference, each output keeping its own header; frames older
    than max_frame_age_ms are dropped and counted; the debug image appears when subscribed.
    """
    process = PerceptionProcess(NODE, tmp_path / 'node.log', prefix='/rvbatch', params={
        'model': tiny_clip_dir, 'backend': 'onnxruntime', 'engine_cache_dir': model_cache,
        'image_topics': ['left/image_raw', 'right/image_raw'], 'batch': True, 'max_frame_age_ms': 2000.0,
        'debug_image': True})
    namespace, node = process.namespace, process.node
    left, right = namespace + '/left/image_raw', namespace + '/right/image_raw'
    ros = RosTestContext('batch_test')
    labels, debug, diagnostics = [], [], []
    ros.node.create_subscription(ZeroShotLabels, f'{namespace}/{NODE}/zero_shot_labels', labels.append, 20)
    ros.node.create_subscription(Image, f'{namespace}/{NODE}/debug_image', debug.append, 5)
    ros.node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 20)
    publishers = {name: ros.node.create_publisher(Image, topic, qos_profile_sensor_data)
                  for name, topic in (('left', left), ('right', right))}
    image = structured_images(1, (48, 64))[0]
    try:
        assert change_state(ros, node, 'configure'), process.output()
        assert change_state(ros, node, 'activate')
        deadline = time.monotonic() + 30.0
        while time.monotonic() < deadline and not (
                {'left', 'right'} <= {m.header.frame_id for m in labels} and debug):
            now = ros.node.get_clock().now().to_msg()
            for name, publisher in publishers.items():
                msg = _image(image, frame_id=name)
                msg.header.stamp = now
                publisher.publish(msg)
            ros.spin_until(lambda: False, 0.3)
        assert {'left', 'right'} <= {m.header.frame_id for m in labels}, process.output()
        # configure measured whether batching pays here and said which it chose
        assert re.search(r'batch: 2 frames in one inference took [0-9.]+ ms per frame, one at a time [0-9.]+ ms: '
                         r'(batching|serving frames one at a time)', process.output()), process.output()
        assert debug and debug[-1].encoding == 'rgb8' and (debug[-1].width, debug[-1].height) == (64, 48)
        assert debug[-1].header.frame_id in ('left', 'right')

        # Stale frames (stamped 60 s ago) are dropped, never published, and counted in /diagnostics.
        before = len(labels)
        old = ros.node.get_clock().now().nanoseconds - 60 * 10**9
        for _ in range(10):
            msg = _image(image, stamp=(old // 10**9, old % 10**9), frame_id='stale')
            publishers['left'].publish(msg)
            ros.spin_until(lambda: False, 0.2)
        assert not [m for m in labels[before:] if m.header.frame_id == 'stale']
        assert ros.spin_until(
            lambda: _diagnostic_counter(diagnostics, f'{namespace}/{NODE}', 'dropped_too_old') >= 1, 5.0)
    finally:
        ros.close()
        process.stop()


def test_compressed_camera_and_rate_limit(tiny_clip_dir, model_cache, tmp_path):
    """
    A topic ending in /compressed is read as CompressedImage.

    max_rate_hz caps processing; the rest is counted as rate-limited in /diagnostics.
    """
    import cv2
    from sensor_msgs.msg import CompressedImage

    process = PerceptionProcess(NODE, tmp_path / 'node.log', prefix='/rvjpeg', params={
        'model': tiny_clip_dir, 'backend': 'onnxruntime', 'engine_cache_dir': model_cache,
        'image_topics': ['image_raw/compressed']})
    namespace, node = process.namespace, process.node
    topic = namespace + '/image_raw/compressed'
    ros = RosTestContext('jpeg_test')
    labels, diagnostics = [], []
    ros.node.create_subscription(ZeroShotLabels, f'{namespace}/{NODE}/zero_shot_labels', labels.append, 50)
    ros.node.create_subscription(DiagnosticArray, '/diagnostics', diagnostics.append, 20)
    publisher = ros.node.create_publisher(CompressedImage, topic, qos_profile_sensor_data)
    ok, jpeg = cv2.imencode('.jpg', structured_images(1, (48, 64))[0][..., ::-1])
    assert ok
    msg = CompressedImage(format='jpeg', data=jpeg.tobytes())
    msg.header.frame_id = 'jpeg_cam'
    try:
        assert change_state(ros, node, 'configure'), process.output()
        assert change_state(ros, node, 'activate')
        out = _send_until(ros, publisher, {'labels': labels}, 'labels', lambda: msg)
        assert out[-1].header.frame_id == 'jpeg_cam' and out[-1].labels[0] == 'red cup'  # node defaults

        (result,) = set_parameters(ros, node, {'max_rate_hz': 0.2})
        assert result.successful
        labels.clear()
        sent = 0
        while sent < 60 and _diagnostic_counter(diagnostics, f'{namespace}/{NODE}', 'dropped_rate_limit') < 3:
            publisher.publish(msg)
            sent += 1
            ros.spin_until(lambda: False, 0.05)
        # At 0.2 Hz at most one frame in a 5-second slot is served; the rest are counted as rate-limited.
        assert ros.spin_until(
            lambda: _diagnostic_counter(diagnostics, f'{namespace}/{NODE}', 'dropped_rate_limit') >= 3, 10.0)
        assert len(labels) <= 2, len(labels)
    finally:
        ros.close()
        process.stop()
