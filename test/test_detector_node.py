# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
open_vocab_detector in its own process over DDS, driven as `ros2 lifecycle set` / `ros2 param set` drive it.

The embedded tiny detector on generated scenes whose boxes are known: every instance of every query is found where
it is, text queries change live, an example image (a file, or a region of a recent frame through the service) finds
the other instances of its object, and hostile inputs are refused with one line while the node keeps serving.
"""
from __future__ import annotations

import importlib.util
import time
from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, RegionOfInterest

from robovision_ros.detection import box_iou
from robovision_ros.image_codec import encode_raw_image
from robovision_msgs.msg import ObjectDetectionArray
from robovision_msgs.srv import AddImageQuery
from robovision_ros.synthetic.scenes import SceneGenerator
from ros_harness import PerceptionProcess, RosTestContext, call_service, change_state, get_state, set_parameters

NODE = 'open_vocab_detector'
HAVE_VISION_MSGS = importlib.util.find_spec('vision_msgs') is not None
NO_VISION_MSGS = ('vision_msgs is not installed (not on PyPI; a ROS 2 install has it, CI builds it with '
                  'ROBOVISION_ROS_SOURCES=../shared/ros-launch)')
SEED = 4242  # scenes no training or evaluation set uses
SCENE_HW = (240, 320)


def _scene(index, objects):
    return SceneGenerator(SEED, *SCENE_HW).scene(index, objects)


def _image(rgb, stamp, frame_id='camera'):
    data, step = encode_raw_image(rgb, 'bgr8')
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='bgr8', step=step, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp, 0
    msg.header.frame_id = frame_id
    return msg


@pytest.fixture(scope='module')
def graph(model_cache, tmp_path_factory):
    directory = tmp_path_factory.mktemp('detector_node')
    node = PerceptionProcess(NODE, directory / 'node.log', params={
        'backend': 'onnxruntime', 'engine_cache_dir': model_cache, 'image_topics': 'camera/image_raw',
        'queries': ['red cup', 'blue bottle'], 'score_threshold': 0.3})
    ros = RosTestContext('detector_test')
    received = {'detections': [], 'standard': []}
    ros.node.create_subscription(ObjectDetectionArray, node.topic('object_detections'), received['detections'].append,
                                 20)
    if HAVE_VISION_MSGS:
        from vision_msgs.msg import Detection2DArray

        ros.node.create_subscription(Detection2DArray, node.topic('detections'), received['standard'].append, 20)
    publisher = ros.node.create_publisher(Image, f'{node.namespace}/camera/image_raw', qos_profile_sensor_data)
    graph = SimpleNamespace(ros=ros, node=node.node, publisher=publisher, received=received, process=node,
                            directory=directory, stamp=[1000])
    for transition in ('configure', 'activate'):
        assert change_state(ros, node.node, transition), node.output()[-3000:]
    yield graph
    ros.close()
    node.stop()


def _detect(graph, rgb, until=lambda msg: True, timeout_s=30.0):
    """Publish `rgb` (a new stamp each time) until a result for it satisfies `until`; return that result."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        graph.stamp[0] += 1
        stamp = graph.stamp[0]
        before = len(graph.received['detections'])

        def mine():
            return [m for m in graph.received['detections'][before:] if m.header.stamp.sec == stamp]

        graph.publisher.publish(_image(rgb, stamp))
        graph.ros.spin_until(lambda: bool(mine()), 2.0)
        if mine() and until(mine()[0]):
            return mine()[0]
    raise AssertionError(f'no detections satisfying the condition in {timeout_s} s:\n{graph.process.output()[-3000:]}')


def _set(graph, values):
    """Set parameters (one by one, as `ros2 param set` and the service do) and require each to succeed."""
    results = set_parameters(graph.ros, graph.node, values)
    assert all(r.successful for r in results), [r.reason for r in results]


def _boxes(msg, label=None):
    return np.array([[d.x_min, d.y_min, d.x_max, d.y_max] for d in msg.detections
                     if label is None or d.label == label], float).reshape(-1, 4)


def _found(msg, objects, label):
    """How many of `objects` (SceneObjects) a detection of `label` covers at IoU >= 0.5 (each counted once)."""
    boxes = _boxes(msg, label)
    if not len(boxes) or not objects:
        return 0
    ious = box_iou(boxes, np.array([o.box for o in objects], float))
    return int(np.sum(ious.max(axis=0) >= 0.5))


def test_every_instance_of_every_query_in_source_pixels_with_the_input_header(graph):
    scene = _scene(0, [('red', 'cup'), ('red', 'cup'), ('blue', 'bottle')])
    cups = [o for o in scene.objects if o.label == 'red cup']
    assert len(cups) == 2
    msg = _detect(graph, scene.image, lambda m: list(m.queries) == ['red cup', 'blue bottle'])
    assert msg.header.frame_id == 'camera' and msg.model_id == 'embedded:tiny_owl'
    assert list(msg.query_is_image) == [False, False] and msg.score_threshold == pytest.approx(0.3)
    assert _found(msg, cups, 'red cup') == 2, [(d.label, d.score) for d in msg.detections]
    assert _found(msg, [o for o in scene.objects if o.label == 'blue bottle'], 'blue bottle') == 1
    scores = [d.score for d in msg.detections]
    assert scores == sorted(scores, reverse=True) and min(scores) > 0.3
    assert all(0 <= d.x_min < d.x_max <= SCENE_HW[1] and 0 <= d.y_min < d.y_max <= SCENE_HW[0] for d in msg.detections)
    assert all(msg.queries[d.query_index] == d.label and not d.image_query for d in msg.detections)
    assert msg.inference_ms > 0 and msg.total_ms >= msg.inference_ms


def test_a_larger_camera_gets_boxes_in_its_own_pixels(graph):
    scene = SceneGenerator(SEED, 480, 640).scene(1, [('green', 'ball'), ('blue', 'bottle')])
    msg = _detect(graph, scene.image)
    assert _found(msg, [o for o in scene.objects if o.label == 'blue bottle'], 'blue bottle') == 1


def test_queries_change_live_and_the_version_counts(graph):
    scene = _scene(2, [('green', 'ball'), ('red', 'cup')])
    first = _detect(graph, scene.image)
    _set(graph, {'queries': ['green ball']})
    changed = _detect(graph, scene.image, lambda m: list(m.queries) == ['green ball'])
    assert changed.vocabulary_version > first.vocabulary_version
    assert {d.label for d in changed.detections} == {'green ball'}
    assert _found(changed, [o for o in scene.objects if o.label == 'green ball'], 'green ball') == 1
    # The live decode settings: max_detections bounds the output at once.
    _set(graph, {'queries': ['green ball', 'red cup'], 'max_detections': 1})
    capped = _detect(graph, scene.image, lambda m: list(m.queries) == ['green ball', 'red cup'])
    assert len(capped.detections) == 1
    _set(graph, {'queries': ['red cup', 'blue bottle'], 'max_detections': 50})


def _example_file(graph, name, objects=(('red', 'cup'),), index=10):
    """Write a crop of one object of a scene as an example image; return its path."""
    import cv2

    scene = _scene(index, list(objects))
    x0, y0, x1, y1 = scene.objects[0].box
    path = graph.directory / f'{name}.png'
    cv2.imwrite(str(path), np.ascontiguousarray(scene.image[max(y0 - 6, 0):y1 + 6, max(x0 - 6, 0):x1 + 6, ::-1]))
    return str(path)


def test_an_example_image_finds_the_instances_of_its_object(graph):
    path = _example_file(graph, 'my mug')
    _set(graph, {'queries': ['blue bottle'], 'image_queries': [path]})
    scene = _scene(3, [('red', 'cup'), ('red', 'cup'), ('blue', 'bottle')])
    msg = _detect(graph, scene.image, lambda m: list(m.queries) == ['blue bottle', 'my mug'])
    assert list(msg.query_is_image) == [False, True]
    mine = [d for d in msg.detections if d.label == 'my mug']
    assert mine and all(d.image_query and d.query_index == 1 for d in mine)
    assert _found(msg, [o for o in scene.objects if o.label == 'red cup'], 'my mug') >= 1
    _set(graph, {'queries': ['red cup', 'blue bottle'], 'image_queries': []})


def test_a_region_of_a_recent_frame_becomes_an_image_query_through_the_service(graph):
    _set(graph, {'queries': ['blue bottle'], 'image_queries': []})
    scene = _scene(4, [('yellow', 'box'), ('blue', 'bottle')])
    _detect(graph, scene.image, lambda m: list(m.queries) == ['blue bottle'])
    box = next(o for o in scene.objects if o.label == 'yellow box').box
    request = AddImageQuery.Request(label='that box', roi=RegionOfInterest(
        x_offset=box[0], y_offset=box[1], width=box[2] - box[0], height=box[3] - box[1]))
    response = call_service(graph.ros, AddImageQuery, f'/{graph.node}/add_image_query', request)
    assert response.success, response.message
    assert response.path.endswith('/that box.png') and 'that box' in response.message
    other = _scene(5, [('yellow', 'box'), ('red', 'ball')])
    msg = _detect(graph, other.image, lambda m: list(m.queries) == ['blue bottle', 'that box'])
    assert _found(msg, [o for o in other.objects if o.label == 'yellow box'], 'that box') == 1
    # Hostile requests: a region outside the frame, a blank label, the name of a text query.
    for label, roi, reason in (('x', RegionOfInterest(x_offset=300, y_offset=0, width=40, height=40), 'inside the'),
                               (' ', RegionOfInterest(width=10, height=10), 'blank'),
                               ('blue bottle', RegionOfInterest(width=10, height=10), 'is a text query'),
                               ('../up', RegionOfInterest(width=10, height=10), 'file name')):
        response = call_service(graph.ros, AddImageQuery, f'/{graph.node}/add_image_query',
                                AddImageQuery.Request(label=label, roi=roi))
        assert not response.success and reason in response.message and '\n' not in response.message
    _set(graph, {'queries': ['red cup', 'blue bottle'], 'image_queries': []})


def test_hostile_queries_are_refused_with_one_line_and_the_node_keeps_serving(graph):
    corrupt = graph.directory / 'corrupt.png'
    corrupt.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(64))
    huge = graph.directory / 'huge.png'
    import cv2

    cv2.imwrite(str(huge), np.zeros((2100, 2100, 3), np.uint8))
    cases = [({'image_queries': [str(corrupt)]}, 'not a usable image'),
             ({'image_queries': [str(huge)]}, 'huge.png'),
             ({'image_queries': [str(graph.directory / 'absent.png')]}, 'no such file'),
             ({'image_queries': [_example_file(graph, f'q{i}') for i in range(9)]}, 'at most 8'),
             ({'queries': [f'query {i}' for i in range(257)]}, 'at most 256'),
             ({'queries': ['x' * 129]}, 'longer than 128'),
             ({'queries': ['red cup', 'red cup']}, 'unique'),
             ({'image_queries': [_example_file(graph, 'red cup')]}, 'named like a text query'),
             ({'score_threshold': 1.5}, 'out of range'),
             ({'max_detections': 0}, 'out of range')]
    for values, reason in cases:
        (result,) = set_parameters(graph.ros, graph.node, values)
        assert not result.successful and reason in result.reason and '\n' not in result.reason, (values, result)
    assert get_state(graph.ros, graph.node) == 'active'
    scene = _scene(6, [('red', 'cup')])
    msg = _detect(graph, scene.image)
    assert list(msg.queries) == ['red cup', 'blue bottle']
    assert graph.process.alive()


@pytest.mark.skipif(not HAVE_VISION_MSGS, reason=NO_VISION_MSGS)
def test_detection2darray_carries_the_same_detections(graph):
    scene = _scene(7, [('red', 'cup'), ('blue', 'bottle')])
    msg = _detect(graph, scene.image)
    stamp = msg.header.stamp.sec
    assert graph.ros.spin_until(lambda: any(m.header.stamp.sec == stamp for m in graph.received['standard']), 10.0)
    standard = next(m for m in graph.received['standard'] if m.header.stamp.sec == stamp)
    assert [d.results[0].hypothesis.class_id for d in standard.detections] == [d.label for d in msg.detections]
    for ours, theirs in zip(msg.detections, standard.detections):
        assert theirs.bbox.center.position.x == pytest.approx((ours.x_min + ours.x_max) / 2, abs=1e-3)
        assert theirs.bbox.size_x == pytest.approx(ours.x_max - ours.x_min, abs=1e-3)
        assert theirs.results[0].hypothesis.score == pytest.approx(ours.score, abs=1e-6)


@pytest.mark.skipif(HAVE_VISION_MSGS, reason='vision_msgs is installed: the standard output is on')
def test_without_vision_msgs_the_node_says_once_that_the_standard_output_is_off(graph):
    assert graph.process.output().count('vision_msgs is not installed') == 1
