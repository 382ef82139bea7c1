"""Test-wide setup: DDS isolation for this test run, and helpers shared by the ROS graph tests."""
from __future__ import annotations

import os
import random

# Isolate DDS before anything initialises rclpy: one domain per test run, discovery limited to this host, so
# that parallel runs on the same machine (CI next to a developer's session) never see each other's topics.
# An explicitly set ROS_DOMAIN_ID wins, for debugging with `ros2 topic echo`.
if 'ROBOVISION_TEST_DOMAIN_ID' not in os.environ:
    os.environ['ROBOVISION_TEST_DOMAIN_ID'] = str(random.SystemRandom().randint(10, 100))
os.environ['ROS_DOMAIN_ID'] = os.environ['ROBOVISION_TEST_DOMAIN_ID']
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_LOCALHOST_ONLY', None)
