# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""image_source in its own process: generated frames, a folder of images, compressed output, bad sources."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from rclpy._rclpy_pybind11 import NodeNameNonExistentError
from rclpy.qos import QoSProfile
from sensor_msgs.msg import CompressedImage, Image

from robovision_ros.image_codec import decode_compressed_image, decode_image_msg
from ros_harness import NodeProcess, RosTestContext, unique_name


def _run_source(tmp_path, params, count, compressed=False, timeout_s=30.0):
    namespace = unique_name('/rvsrc')
    args = ['-m', 'robovision_ros.nodes.image_source', '--ros-args', '-r', f'__ns:={namespace}',
            '-p', 'qos:=reliable', '-p', 'wait_for_subscribers:=1']
    for name, value in params.items():
        args += ['-p', f'{name}:={value}']
    process = NodeProcess(args, tmp_path / 'source.log')
    ros = RosTestContext('source_test')
    frames, jpegs = [], []
    ros.node.create_subscription(Image, f'{namespace}/image_raw', frames.append, QoSProfile(depth=50))
    if compressed:
        ros.node.create_subscription(CompressedImage, f'{namespace}/image_raw/compressed', jpegs.append,
                                     QoSProfile(depth=50))
    try:
        ros.spin_until(lambda: len(frames) >= count and (not compressed or len(jpegs) >= count), timeout_s)
        ros.spin_until(lambda: False, 0.5)  # anything beyond `count` would arrive now
        return frames, jpegs, process.output()
    finally:
        ros.close()
        process.stop()


def test_generated_frames(tmp_path):
    frames, jpegs, log = _run_source(tmp_path, {'source': 'generator', 'rate_hz': 20.0, 'max_frames': 4,
                                                'encoding': 'rgb8', 'frame_id': 'table_cam', 'width': 160,
                                                'height': 120, 'publish_compressed': 'true'}, 4, compressed=True)
    assert len(frames) == 4, log
    from robovision_ros.synthetic.scenes import SceneGenerator

    for i, frame in enumerate(frames):
        assert (frame.width, frame.height, frame.encoding, frame.header.frame_id) == (160, 120, 'rgb8', 'table_cam')
        # uint8 through a raw or lossless encoding: exact
        np.testing.assert_array_equal(decode_image_msg(frame), SceneGenerator(0, 120, 160).scene(i).image)
    assert len(jpegs) == 4 and jpegs[0].format == 'jpeg'
    assert np.abs(decode_compressed_image(jpegs[0].data, 'jpeg').astype(int)
                  - decode_image_msg(frames[0]).astype(int)).mean() < 8


def test_folder_without_loop_publishes_each_image_once(tmp_path):
    folder = tmp_path / 'images'
    folder.mkdir()
    images = []
    for i in range(3):
        rgb = np.full((24, 32, 3), (i * 80, 30, 200 - i * 60), np.uint8)
        cv2.imwrite(str(folder / f'{i:02d}.png'), rgb[..., ::-1])
        images.append(rgb)
    frames, _, log = _run_source(tmp_path, {'source': str(folder), 'rate_hz': 20.0, 'loop': 'false',
                                            'encoding': 'bgr8'}, 3, timeout_s=20.0)
    assert len(frames) == 3, log
    for frame, rgb in zip(frames, images):
        assert frame.encoding == 'bgr8'
        np.testing.assert_array_equal(decode_image_msg(frame), rgb)  # uint8 from a PNG file: exact
    assert 'source finished after 3 frames' in log


def test_missing_source_is_a_clear_error(tmp_path):
    process = NodeProcess(['-m', 'robovision_ros.nodes.image_source', '--ros-args', '-p',
                           f'source:={tmp_path / "nothing"}'], tmp_path / 'bad.log')
    assert process.process.wait(timeout=30) == 2
    process.stop()
    assert "neither 'generator', a folder of images, nor a video file" in process.output()


def test_video_file_without_loop(tmp_path):
    path = tmp_path / 'clip.avi'
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((48, 64, 3), (0, 40 * i, 200), np.uint8))  # BGR: red channel high
    writer.release()
    frames, _, log = _run_source(tmp_path, {'source': str(path), 'rate_hz': 20.0, 'loop': 'false'}, 5,
                                 timeout_s=20.0)
    assert len(frames) == 5, log
    first = decode_image_msg(frames[0]).astype(int)
    assert (first.shape, frames[0].encoding) == ((48, 64, 3), 'bgr8')
    assert abs(first[..., 0].mean() - 200) < 12 and first[..., 2].mean() < 12  # arrives as RGB: red first


@pytest.mark.parametrize('remap_compressed', [False, True], ids=['derived', 'remapped'])
def test_compressed_topic_follows_image_transport_naming(tmp_path, remap_compressed):
    """`-r image_raw:=/cam_c/image_raw` publishes /cam_c/image_raw/compressed; a remap of the compressed wins."""
    raw = unique_name('/cam_c') + '/image_raw'
    compressed = unique_name('/elsewhere') + '/jpeg' if remap_compressed else raw + '/compressed'
    args = ['-m', 'robovision_ros.nodes.image_source', '--ros-args', '-p', 'publish_compressed:=true',
            '-p', 'qos:=reliable', '-p', 'wait_for_subscribers:=1', '-p', 'rate_hz:=20.0', '-p', 'width:=64',
            '-p', 'height:=48', '-r', f'image_raw:={raw}']
    if remap_compressed:
        args += ['-r', f'image_raw/compressed:={compressed}']
    process = NodeProcess(args, tmp_path / 'source.log')
    ros = RosTestContext('source_naming_test')
    frames, jpegs = [], []
    ros.node.create_subscription(Image, raw, frames.append, QoSProfile(depth=10))
    ros.node.create_subscription(CompressedImage, compressed, jpegs.append, QoSProfile(depth=10))
    try:
        def same_frame_on_both() -> bool:  # the JPEG of a raw frame (the two subscriptions may match apart)
            stamps = {(f.header.stamp.sec, f.header.stamp.nanosec) for f in frames}
            return any((j.header.stamp.sec, j.header.stamp.nanosec) in stamps for j in jpegs)

        assert ros.spin_until(same_frame_on_both, 30.0), process.output()
        published: set[str] = set()

        def node_publishes_both() -> bool:
            # Data can arrive before this process's graph cache knows the node by name (discovery of the node
            # and of its endpoints are separate): until then the query raises, so poll with a deadline.
            nonlocal published
            try:
                published = {name for name, _ in ros.node.get_publisher_names_and_types_by_node('image_source', '/')}
            except NodeNameNonExistentError:
                return False
            return {raw, compressed} <= published

        assert ros.spin_until(node_publishes_both, 15.0), published
        assert not any(name.endswith('/compressed') and name != compressed for name in published), published
        assert jpegs[0].format == 'jpeg'
    finally:
        ros.close()
        process.stop()
