# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
image_source: publish sensor_msgs/Image (and optionally CompressedImage) at a fixed rate.

The frames come from a folder of images, a video file, or the scene generator.

    ros2 run robovision_ros image_source --ros-args -p source:=generator -p rate_hz:=10.0 \
        -r image_raw:=/camera/image_raw
"""
from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Any, Optional

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from robovision_ros.image_codec import encode_raw_image
from robovision_ros.nodes.frame_sources import FrameSourceError, open_source
from robovision_ros.nodes.node_process import run_node_process

ENCODINGS = ('rgb8', 'bgr8', 'rgba8', 'bgra8', 'mono8')


class ImageSourceNode(Node):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__('image_source', **kwargs)
        read_only = dict(read_only=True)
        self.declare_parameter('source', 'generator', ParameterDescriptor(
            description="'generator', a folder of images, or a video file.", **read_only))
        self.declare_parameter('rate_hz', 10.0, ParameterDescriptor(description='Frames per second.', **read_only))
        self.declare_parameter('loop', True, ParameterDescriptor(description='Restart at the end.', **read_only))
        self.declare_parameter('encoding', 'bgr8', ParameterDescriptor(
            description=f'One of {", ".join(ENCODINGS)}.', **read_only))
        self.declare_parameter('frame_id', 'camera', ParameterDescriptor(description='header.frame_id.', **read_only))
        self.declare_parameter('width', 640, ParameterDescriptor(description='Generator width.', **read_only))
        self.declare_parameter('height', 480, ParameterDescriptor(description='Generator height.', **read_only))
        self.declare_parameter('seed', 0, ParameterDescriptor(description='Generator seed.', **read_only))
        self.declare_parameter('publish_compressed', False, ParameterDescriptor(
            description='Also publish <image_raw topic>/compressed (jpeg), named as image_transport names it.',
            **read_only))
        self.declare_parameter('qos', 'sensor_data', ParameterDescriptor(
            description='sensor_data (best effort) or reliable.', **read_only))
        self.declare_parameter('max_frames', 0, ParameterDescriptor(
            description='Stop after this many frames (0 = no limit).', **read_only))
        self.declare_parameter('pregenerate', 0, ParameterDescriptor(
            description='Generator: render this many scenes at start and cycle them (0 = render every frame).',
            **read_only))
        self.declare_parameter('wait_for_subscribers', 0, ParameterDescriptor(
            description='Start publishing once this many subscriptions have matched (0 = at once).', **read_only))
        p = {name: self.get_parameter(name).value for name in
             ('source', 'rate_hz', 'loop', 'encoding', 'frame_id', 'width', 'height', 'seed', 'publish_compressed',
              'qos', 'max_frames', 'wait_for_subscribers', 'pregenerate')}
        if p['encoding'] not in ENCODINGS:
            raise FrameSourceError(f"encoding '{p['encoding']}' not supported; supported: {', '.join(ENCODINGS)}")
        if p['rate_hz'] <= 0:
            raise FrameSourceError('rate_hz must be positive')
        self.encoding = p['encoding']
        self.frame_id = p['frame_id']
        self.max_frames = int(p['max_frames'])
        self.wait_for_subscribers = int(p['wait_for_subscribers'])
        self.source = open_source(p['source'], p['loop'], p['seed'], p['height'], p['width'], p['pregenerate'])
        qos = qos_profile_sensor_data if p['qos'] == 'sensor_data' else QoSProfile(depth=10)
        self.publisher = self.create_publisher(Image, 'image_raw', qos)
        self.compressed = self.create_publisher(CompressedImage, self._compressed_topic(), qos) \
            if p['publish_compressed'] else None
        self.published = 0
        self.ground_truth: OrderedDict[int, tuple[str, ...]] = OrderedDict()  # stamp ns -> labels (generator)
        self.finished = False
        self.timer = self.create_timer(1.0 / p['rate_hz'], self._publish)
        self.get_logger().info(f"publishing {p['source']} at {p['rate_hz']} Hz as {self.encoding}")

    def _compressed_topic(self) -> str:
        """
        Return the CompressedImage topic: `<raw topic>/compressed`, as image_transport names it.

        Derived from the raw topic after remapping (`-r image_raw:=/cam_c/image_raw` publishes
        /cam_c/image_raw/compressed); a remapping of `image_raw/compressed` itself still wins.
        """
        own = 'image_raw/compressed'
        remapped = self.resolve_topic_name(own)
        if remapped != self.resolve_topic_name(own, only_expand=True):
            return remapped
        return self.resolve_topic_name('image_raw').rstrip('/') + '/compressed'

    def _publish(self) -> None:
        if self.finished:
            return
        if self.published == 0 and self.publisher.get_subscription_count() < self.wait_for_subscribers:
            return
        frame = self.source.next_frame()
        if frame is None or (self.max_frames and self.published >= self.max_frames):
            self.finished = True
            self.get_logger().info(f'source finished after {self.published} frames')
            return
        stamp = self.get_clock().now()
        msg = Image(height=frame.shape[0], width=frame.shape[1], encoding=self.encoding, is_bigendian=0)
        msg.data, msg.step = encode_raw_image(frame, self.encoding)
        msg.header.stamp = stamp.to_msg()
        msg.header.frame_id = self.frame_id
        self.publisher.publish(msg)
        if self.compressed is not None:
            import cv2

            ok, jpeg = cv2.imencode('.jpg', np.ascontiguousarray(frame[..., ::-1]))
            if ok:
                self.compressed.publish(CompressedImage(header=msg.header, format='jpeg', data=jpeg.tobytes()))
        if self.source.last_scene is not None:
            self.ground_truth[stamp.nanoseconds] = self.source.last_scene.labels
            while len(self.ground_truth) > 200:
                self.ground_truth.popitem(last=False)
        self.published += 1


def main(args: Optional[list[str]] = None) -> int:
    def create() -> ImageSourceNode:
        try:
            return ImageSourceNode()
        except FrameSourceError as error:
            raise ValueError(str(error)) from None

    return run_node_process('image_source', create, args, stop_node=lambda node: node.source.close())


if __name__ == '__main__':
    sys.exit(main())
