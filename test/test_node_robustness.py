# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
A node in its own process against a clumsy or hostile operator.

Start values, topic names, dumps, signals while loading, clocks that disagree, broken model directories. Each case
is followed by a service call or a good frame that must be answered.
"""
from __future__ import annotations

import os
import signal
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.srv import GetParameters, ListParameters
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from conftest import TINY_CORPUS, structured_images
from robovision_msgs.msg import ZeroShotLabels
from robovision_ros.image_codec import encode_raw_image
from ros_harness import NodeProcess, RosTestContext, call_service, change_state, get_state, set_parameters, \
    unique_name

NODE = 'clip_perception'


def _frame(rgb, stamp=(100, 0)) -> Image:
    data, step = encode_raw_image(rgb, 'bgr8')
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='bgr8', step=step, data=data)
    msg.header.stamp.sec, msg.header.stamp.nanosec = stamp
    return msg


class Node:
    """A clip_perception process in its own namespace, with a camera publisher and output subscriptions."""

    def __init__(self, model_dir, cache, log_path, *ros_args: str) -> None:
        self.namespace = unique_name('/rvrobust')
        self.topic = self.namespace + '/camera/image_raw'
        self.process = NodeProcess(
            ['-m', f'robovision_ros.nodes.{NODE}', '--ros-args', '-r', f'__ns:={self.namespace}',
             '-p', f'model:={model_dir}', '-p', 'backend:=onnxruntime', '-p', f'engine_cache_dir:={cache}',
             '-p', 'image_topics:=camera/image_raw', *ros_args], log_path)
        self.ros = RosTestContext('robust_test')
        self.name = f'{self.namespace.lstrip("/")}/{NODE}'
        self.labels: list = []
        self.diagnostics: list = []
        self.ros.node.create_subscription(ZeroShotLabels, f'{self.namespace}/{NODE}/zero_shot_labels',
                                          self.labels.append, 50)
        self.ros.node.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics.append, 50)
        self.camera = self.ros.node.create_publisher(Image, self.topic, qos_profile_sensor_data)
        self.image = structured_images(1, (48, 64))[0]

    def output(self) -> str:
        return self.process.output()

    def wait_logged(self, text: str, timeout_s: float = 10.0) -> bool:
        return self.ros.spin_until(lambda: text in self.output(), timeout_s)

    def serve(self, stamp, timeout_s: float = 20.0) -> ZeroShotLabels:
        """Publish frames stamped `stamp` until an output for them arrives."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.camera.publish(_frame(self.image, stamp))
            if self.ros.spin_until(lambda: any((m.header.stamp.sec, m.header.stamp.nanosec) == stamp
                                               for m in self.labels), 0.3):
                return next(m for m in self.labels if (m.header.stamp.sec, m.header.stamp.nanosec) == stamp)
        raise AssertionError(f'no output for frames stamped {stamp}:\n{self.output()[-3000:]}')

    def status(self):
        name = f'/{self.name}: perception'
        statuses = [s for d in self.diagnostics for s in d.status if s.name == name]
        return statuses[-1] if statuses else None

    def close(self) -> int:
        self.ros.close()
        return self.process.stop()


def _now_stamp(ros, offset_s: float = 0.0) -> tuple[int, int]:
    ns = ros.node.get_clock().now().nanoseconds + int(offset_s * 1e9)
    return ns // 10**9, ns % 10**9


def test_bad_start_values_keep_the_node_up_and_fail_configure_naming_them(tiny_clip_dir, model_cache, tmp_path):
    """Values rclpy refuses at declaration (range, type): the node stays up, configure names them, a set fixes it."""
    node = Node(tiny_clip_dir, model_cache, tmp_path / 'node.log', '-p', 'qos_depth:=0',
                '-p', 'max_image_pixels:=4611686018427387904', '-p', 'batch:=maybe')
    try:
        assert get_state(node.ros, node.name) == 'unconfigured', node.output()
        assert not change_state(node.ros, node.name, 'configure')
        assert node.wait_logged('configure failed'), node.output()
        failure = next(line for line in node.output().splitlines() if 'configure failed' in line)
        assert 'the value given at start was refused' in failure and 'set it to a valid value' in failure
        assert 'Traceback' not in node.output()
        results = set_parameters(node.ros, node.name, {'qos_depth': 1, 'max_image_pixels': 1 << 24, 'batch': False})
        assert all(r.successful for r in results), [r.reason for r in results]
        assert change_state(node.ros, node.name, 'configure') and change_state(node.ros, node.name, 'activate')
        node.serve((100, 0))
        assert node.process.alive()
    finally:
        node.close()


def test_a_start_value_out_of_range_by_orders_of_magnitude_is_one_line(tiny_clip_dir, model_cache, tmp_path):
    node = Node(tiny_clip_dir, model_cache, tmp_path / 'node.log', '-p', 'qos_depth:=1000000000')
    try:
        assert not change_state(node.ros, node.name, 'configure')
        assert node.wait_logged('qos_depth: the value given at start was refused'), node.output()
        assert node.process.alive() and 'Traceback' not in node.output()
    finally:
        node.close()


def test_invalid_topic_names_are_refused_at_the_set_and_at_configure(tiny_clip_dir, model_cache, tmp_path):
    node = Node(tiny_clip_dir, model_cache, tmp_path / 'node.log', '-p', 'image_topics:=/1abc')
    try:
        assert not change_state(node.ros, node.name, 'configure')
        assert node.wait_logged("image_topics: '/1abc' is not a valid topic name"), node.output()
        threads = len(os.listdir(f'/proc/{node.process.process.pid}/task'))
        for _ in range(3):
            assert not change_state(node.ros, node.name, 'configure')
        assert get_state(node.ros, node.name) == 'unconfigured'
        # Failed configures release everything: no thread is left behind.
        assert len(os.listdir(f'/proc/{node.process.process.pid}/task')) <= threads
        for bad in ('/~x', '/a//b', '/foo/{bar}', 'cam\tera'):
            (result,) = set_parameters(node.ros, node.name, {'image_topics': [bad]})
            assert not result.successful and 'not a valid topic name' in result.reason, (bad, result.reason)
        assert set_parameters(node.ros, node.name, {'image_topics': 'camera/image_raw'})[0].successful
        assert change_state(node.ros, node.name, 'configure') and change_state(node.ros, node.name, 'activate')
        node.serve((100, 0))
    finally:
        node.close()


def test_a_parameter_dump_loads_back_onto_an_active_node(tiny_clip_dir, model_cache, tmp_path):
    """Every parameter set to the value it has (what `ros2 param load` of a dump does) succeeds, fixed ones too."""
    node = Node(tiny_clip_dir, model_cache, tmp_path / 'node.log')
    try:
        assert change_state(node.ros, node.name, 'configure') and change_state(node.ros, node.name, 'activate')
        listed = call_service(node.ros, ListParameters, f'/{node.name}/list_parameters',
                              ListParameters.Request()).result.names
        request = GetParameters.Request(names=list(listed))
        values = call_service(node.ros, GetParameters, f'/{node.name}/get_parameters', request).values
        from rclpy.parameter import parameter_value_to_python

        # rclpy's own start_type_description_service is read-only whatever the value (rclpy refuses it, not us).
        dump = {name: parameter_value_to_python(value) for name, value in zip(listed, values)
                if name != 'start_type_description_service'}
        assert {'model', 'precision', 'image_topics', 'executor', 'labels'} <= set(dump)
        results = set_parameters(node.ros, node.name, dump)
        assert all(r.successful for r in results), [r.reason for r in results if not r.successful]
        # A changed value of a fixed or start-only parameter is still refused with the reason.
        (result,) = set_parameters(node.ros, node.name, {'precision': 'int8'})
        assert not result.successful and 'cannot change while configured' in result.reason
        (result,) = set_parameters(node.ros, node.name, {'executor': 'single'})
        assert not result.successful and 'read-only' in result.reason
        node.serve((100, 0))
    finally:
        node.close()


def _stalled(node, text: str) -> bool:
    status = node.status()
    return status is not None and status.level == DiagnosticStatus.WARN and text in status.message


def test_a_node_that_publishes_nothing_says_why(tiny_clip_dir, model_cache, tmp_path):
    """Frames that all arrive and are all dropped (clocks apart, a rate limit): a WARN names the cause and the fix."""
    node = Node(tiny_clip_dir, model_cache, tmp_path / 'node.log', '-p', 'camera_timeout_s:=2.0',
                '-p', 'max_frame_age_ms:=1000.0')
    try:
        assert change_state(node.ros, node.name, 'configure') and change_state(node.ros, node.name, 'activate')
        node.serve(_now_stamp(node.ros))

        def stream(offset_s: float, until) -> bool:
            deadline = time.monotonic() + 20.0
            while time.monotonic() < deadline:
                node.camera.publish(_frame(node.image, _now_stamp(node.ros, offset_s)))
                if node.ros.spin_until(until, 0.2):
                    return True
            return False

        # A camera clock 100 s behind the node's (sim time on one side only): every frame is too old.
        assert stream(-100.0, lambda: _stalled(node, 'older than max_frame_age_ms')), node.status()
        assert 'median age' in node.status().message and 'clocks differ' in node.status().message
        assert node.wait_logged('older than max_frame_age_ms')
        # A camera clock ahead (a clock jump backwards on the node): dropped as stamped in the future.
        assert stream(100.0, lambda: _stalled(node, 'in the future')), node.status()
        # Clocks agree again: outputs flow, the WARN clears and the return is logged once.
        assert stream(0.0, lambda: node.status().level == DiagnosticStatus.OK), node.status()
        assert node.wait_logged('publishing again')
        # A rate limit that lets almost nothing through says so too.
        assert set_parameters(node.ros, node.name, {'max_rate_hz': 0.01})[0].successful
        assert stream(0.0, lambda: _stalled(node, 'dropped by max_rate_hz 0.01')), node.status()
        assert set_parameters(node.ros, node.name, {'max_rate_hz': 0.0, 'max_frame_age_ms': 0.0})[0].successful
        node.serve(_now_stamp(node.ros))
    finally:
        node.close()


@pytest.fixture(scope='module')
def slow_clip_dir(tmp_path_factory):
    """Make a random CLIP large enough that configure (export, int8 quantization, accuracy gate) takes seconds."""
    from robovision_ros.synthetic.tiny_models import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp('slow_clip'), TINY_CORPUS, image_size=224, patch_size=16,
                          width=256, layers=6, heads=8, projection_dim=256)


@pytest.mark.parametrize('executor', ['multi', 'single'])
def test_a_signal_during_configure_ends_the_process_cleanly(slow_clip_dir, tmp_path, executor):
    """Ctrl-C while the model loads: exit 0 without waiting for the load, no ERROR line, no partial export left."""
    cache = tmp_path / 'cache'
    node = Node(slow_clip_dir, cache, tmp_path / 'node.log', '-p', 'precision:=int8', '-p', f'executor:={executor}')
    try:
        assert get_state(node.ros, node.name) == 'unconfigured', node.output()
        from lifecycle_msgs.srv import ChangeState

        from robovision_ros.tools import lifecycle_client

        request = ChangeState.Request()
        request.transition.id = 1  # configure
        client = lifecycle_client._client(node.ros.node, node.ros.executor, ChangeState, f'/{node.name}/change_state')
        client.call_async(request)
        # Signal once the export is under way (its partial directory exists).
        assert node.ros.spin_until(lambda: any(p.name.startswith('.partial-') for p in (cache / 'onnx').glob('*'))
                                   if (cache / 'onnx').is_dir() else False, 60.0), node.output()
        node.process.process.send_signal(signal.SIGINT)
        node.process.process.wait(timeout=30.0)
        output = node.output()
        assert node.process.process.returncode == 0, output[-3000:]
        assert 'ERROR' not in output and 'Traceback' not in output, output[-3000:]
        assert 'shutting down during configuring: the transition is abandoned' in output, output[-3000:]
        assert not list((cache / 'onnx').glob('.partial-*')), 'a partial export was left behind'
        assert not [p for p in (cache / 'onnx').iterdir() if (p / 'image_encoder.onnx').exists()
                    and not (p / 'export.json').exists()], 'an incomplete export is where a run would load it'
    finally:
        node.close()


def test_camera_warnings_name_only_other_nodes_topics_and_frames_arriving_is_logged(
        tiny_clip_dir, model_cache, tmp_path):
    node = Node(tiny_clip_dir, model_cache, tmp_path / 'node.log', '-p', 'camera_timeout_s:=1.0',
                '-p', 'debug_image:=true')
    try:
        node.ros.node.destroy_publisher(node.camera)  # no camera yet
        assert change_state(node.ros, node.name, 'configure') and change_state(node.ros, node.name, 'activate')
        assert node.wait_logged(f'no frame on {node.topic}'), node.output()
        warning = next(line for line in node.output().splitlines() if f'no frame on {node.topic}' in line)
        # The node's own subscription and its own debug_image publisher are not "image topics in the graph".
        assert f'{node.namespace}/{NODE}/debug_image' not in warning, warning
        assert 'no publisher;' in warning and f'publish: {node.topic}' not in warning and \
            f', {node.topic}' not in warning, warning
        node.camera = node.ros.node.create_publisher(Image, node.topic, qos_profile_sensor_data)
        node.serve((100, 0))
        assert node.wait_logged(f'frames arriving on {node.topic}'), node.output()
        # The vocabulary line at configure says how long encoding took, and counts queries in English.
        line = next(line for line in node.output().splitlines() if 'vocabulary v' in line)
        assert 'texts in' in line and ' ms)' in line and '2 presence queries' in line, line
    finally:
        node.close()


def test_a_broken_model_directory_fails_configure_with_one_line(tiny_clip_dir, model_cache, tmp_path):
    import shutil

    broken = tmp_path / 'fifo_model'
    shutil.copytree(tiny_clip_dir, broken)
    (broken / 'model.safetensors').unlink()
    os.mkfifo(broken / 'model.safetensors')  # a reader would block forever
    node = Node(broken, model_cache, tmp_path / 'node.log')
    try:
        assert not change_state(node.ros, node.name, 'configure')
        assert node.wait_logged('is not a regular file'), node.output()
        assert node.process.alive() and 'Traceback' not in node.output()
        assert set_parameters(node.ros, node.name, {'model': str(tiny_clip_dir)})[0].successful
        assert change_state(node.ros, node.name, 'configure')
    finally:
        node.close()


def test_a_params_file_whose_sections_match_no_node_is_named_at_start(tiny_clip_dir, model_cache, tmp_path):
    """`ros2 run ... -r __ns:=/robot2 --params-file` with a bare `clip_perception:` section: one warning, the fix."""
    bare = tmp_path / 'bare.yaml'
    bare.write_text("clip_perception:\n  ros__parameters:\n    labels: ['red cup']\n")
    node = Node(tiny_clip_dir, model_cache, tmp_path / 'node.log', '--params-file', str(bare))
    try:
        assert node.wait_logged('match no node'), node.output()
        assert "write '/**/clip_perception:'" in node.output()
        assert get_state(node.ros, node.name) == 'unconfigured'
    finally:
        node.close()
