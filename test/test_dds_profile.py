# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The shipped Fast DDS profile delivers a stream of full-size camera frames between processes.

Fast DDS's default 512 KB shared-memory segment cannot hold a 921,600-byte 480x640 bgr8 frame; with
best-effort QoS such frames then go over UDP and are lost. The stream is counted with and without the profile;
only the profile's delivery is asserted (the default's is printed, since it is what the profile fixes).
"""
from __future__ import annotations

import re
from pathlib import Path

from ros_harness import TEST_DIR, NodeProcess, unique_name

PROFILE = Path(__file__).resolve().parent.parent / 'robovision_ros' / 'config' / 'fastdds_profile.xml'
FRAMES = 60


def _stream(tmp_path: Path, env: dict[str, str]) -> int:
    topic = unique_name('/rv_stream')
    receiver = NodeProcess([str(TEST_DIR / 'frame_stream.py'), 'receive', topic, '12'], tmp_path / 'recv.log', env)
    sender = NodeProcess([str(TEST_DIR / 'frame_stream.py'), 'send', topic, str(FRAMES), '30'],
                         tmp_path / 'send.log', env)
    assert sender.process.wait(timeout=60) == 0, sender.output()
    assert receiver.process.wait(timeout=60) == 0, receiver.output()
    sender.stop()
    receiver.stop()
    match = re.search(r'RECEIVED (\d+)', receiver.output())
    assert match, receiver.output()
    return int(match.group(1))


def test_full_size_frames_arrive_with_the_shipped_profile(tmp_path):
    with_profile = _stream(tmp_path, {'FASTDDS_DEFAULT_PROFILES_FILE': str(PROFILE)})
    (tmp_path / 'default').mkdir()
    without = _stream(tmp_path / 'default', {'FASTDDS_DEFAULT_PROFILES_FILE': ''})
    print(f'480x640 bgr8 at 30 Hz, {FRAMES} sent: {with_profile} arrived with the profile, {without} without')
    assert with_profile >= 0.9 * FRAMES
