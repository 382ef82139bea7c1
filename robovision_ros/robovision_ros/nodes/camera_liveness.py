# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Camera subscriptions (their QoS) and liveness: which cameras went silent, why (the ROS graph), when frames return.

A silent camera is logged once per silence with what the graph has on that topic (no publisher, with the image topics
other nodes publish; publishers of another type; a QoS mismatch); when its frames arrive, that is logged once too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


@dataclass
class Camera:
    """One camera subscription: the name the worker counts its frames under and the subscription itself."""

    name: str  # as given in image_topics (the worker's key)
    subscription: Any
    reliability: Any  # the subscription's QoS reliability
    logged_silent: bool = False
    seen: bool = False  # a frame arrived since activation (the first one is logged)


class CameraLiveness:
    """Tracks the cameras of one activation; `check` runs once a second on the executor."""

    def __init__(self, node: Any, log: Callable[[str, str], None]) -> None:
        self._node = node
        self._log = log
        self._cameras: list[Camera] = []
        self._activated_at: Optional[float] = None

    def start(self, cameras: list[Camera], now: float) -> None:
        self._cameras, self._activated_at = cameras, now

    def stop(self) -> None:
        self._cameras, self._activated_at = [], None

    def check(self, now: float, last_arrival: dict[str, float], timeout_s: float) -> list[str]:
        """Return the topics silent for `timeout_s` (0: never), logging each silence and each return once."""
        if self._activated_at is None:
            return []
        silent = []
        for camera in self._cameras:
            arrived = last_arrival.get(camera.name)
            topic = camera.subscription.topic_name
            if arrived is not None and arrived >= self._activated_at and not camera.seen:
                camera.seen = True
                self._log('info', f'frames arriving on {topic}')
            last = max(self._activated_at, arrived or 0.0)
            if timeout_s <= 0 or now - last < timeout_s:
                if camera.logged_silent:
                    camera.logged_silent = False
                    self._log('info', f'frames arriving on {topic} again')
                continue
            silent.append(topic)
            if not camera.logged_silent:
                camera.logged_silent = True
                camera.seen = False
                self._log('warn', self.describe_silence(camera, now - last))
        return silent

    def describe_silence(self, camera: Camera, seconds: float) -> str:
        """Why a camera may be silent: no publisher, a publisher of another type, or a QoS mismatch."""
        topic = camera.subscription.topic_name
        wanted = IMAGE_TYPES[1] if camera.subscription.msg_type is CompressedImage else IMAGE_TYPES[0]
        infos = self._others(self._node.get_publishers_info_by_topic(topic))
        head = f'no frame on {topic} for {seconds:.0f} s'
        if not infos:
            others = self._image_topics_of_others()
            seen = f'; image topics other nodes publish: {", ".join(others)}' if others \
                else '; no other node publishes an image topic'
            return f'{head}: no publisher{seen} (remap with image_topics:=<topic>)'
        types = sorted({info.topic_type for info in infos})
        if types != [wanted]:
            return (f'{head}: {len(infos)} publisher(s) of type {", ".join(types)}; this node subscribes {wanted} '
                    "(a topic name ending in 'compressed' is read as CompressedImage)")
        best_effort = [i for i in infos if i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        if camera.reliability == ReliabilityPolicy.RELIABLE and best_effort:
            return (f'{head}: {len(best_effort)} of {len(infos)} publisher(s) are best effort and this node '
                    'subscribes reliable: QoS mismatch (set qos:=sensor_data)')
        return f'{head}: {len(infos)} publisher(s) of {wanted} with compatible QoS, but nothing arrived'

    def _others(self, infos: list[Any]) -> list[Any]:
        """Endpoints that belong to other nodes (not this node's own subscriptions or debug publisher)."""
        name, namespace = self._node.get_name(), self._node.get_namespace()
        return [i for i in infos if (i.node_name, i.node_namespace) != (name, namespace)]

    def _image_topics_of_others(self) -> list[str]:
        topics = []
        for topic, types in self._node.get_topic_names_and_types():
            if any(t in IMAGE_TYPES for t in types) and self._others(self._node.get_publishers_info_by_topic(topic)):
                topics.append(topic)
        return sorted(topics)


def subscription_type(topic: str) -> type:
    """Return the type a camera topic carries: CompressedImage for names ending in 'compressed', else Image."""
    return CompressedImage if topic.rstrip('/').endswith('compressed') else Image


def image_qos(profile: str, depth: int) -> QoSProfile:
    """Return the QoS of a camera subscription: `sensor_data` (best effort, the default) or `reliable`, KEEP_LAST."""
    if profile == 'reliable':
        return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
    return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=qos_profile_sensor_data.reliability,
                      durability=qos_profile_sensor_data.durability)
