# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Test helper: stream full-size camera frames between two processes and count what arrives.

usage: frame_stream.py send TOPIC COUNT RATE_HZ    (waits for a subscriber, then publishes)
       frame_stream.py receive TOPIC SECONDS       (prints 'RECEIVED <n>' at the end)
Both use SensorDataQoS (best effort, depth 5), as camera drivers do.
"""
from __future__ import annotations

import sys
import time

import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image


def main() -> int:
    mode, topic = sys.argv[1], sys.argv[2]
    rclpy.init()
    node = rclpy.create_node(f'frame_stream_{mode}')
    if mode == 'send':
        count, rate = int(sys.argv[3]), float(sys.argv[4])
        publisher = node.create_publisher(Image, topic, qos_profile_sensor_data)
        deadline = time.monotonic() + 20.0
        while publisher.get_subscription_count() < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        msg = Image(height=480, width=640, encoding='bgr8', step=1920, data=bytes(480 * 1920))
        for i in range(count):
            msg.header.stamp.sec = i
            publisher.publish(msg)
            time.sleep(1.0 / rate)
        time.sleep(0.5)
        print(f'SENT {count}', flush=True)
    else:
        received = set()
        node.create_subscription(Image, topic, lambda m: received.add(m.header.stamp.sec), qos_profile_sensor_data)
        end = time.monotonic() + float(sys.argv[3])
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
        print(f'RECEIVED {len(received)}', flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
