# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The main job, run as README command 1 runs it (after setup): frames printed, debug image saved."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent


def test_main_job_runs_offline_and_saves_debug_image(tmp_path):
    executable = ROOT / 'install' / 'robovision_ros' / 'lib' / 'robovision_ros' / 'robovision_demo'
    result = subprocess.run([str(executable), '--frames', '4', '--rate', '4', '--out', str(tmp_path)],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path,
                            env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith('frame ')]
    assert len(lines) == 4, result.stdout
    for line in lines:
        assert re.search(r'truth: .+\| best: \w+ \w+ [01]\.\d\d \|', line), line
        assert 'features 8x8x96' in line and line.rstrip().endswith('ms')
        assert re.search(r'\| boxes: (none|skipped \(|\w+ \w+ [01]\.\d\d \[\d+,\d+,\d+,\d+\])', line), line
    # The detector boxes what is on the table: most ground-truth labels of the printed frames appear among its boxes.
    truths = [set(re.search(r'truth: ([^|]+)\|', line).group(1).strip().split(', ')) for line in lines]
    boxed = [set(re.findall(r'(\w+ \w+) [01]\.\d\d \[', line.split('| boxes:')[1])) for line in lines]
    # Under load the detector may skip a frame (newest frame only): the frames it served.
    served = [n for n, line in enumerate(lines) if '| boxes: skipped' not in line]
    assert served, lines
    found = sum(len(truths[n] & boxed[n]) for n in served)
    assert found >= 0.5 * sum(len(truths[n]) for n in served), lines
    assert '4 frames processed' in result.stdout
    image = cv2.imread(str(tmp_path / 'robovision_debug.png'))
    assert image is not None and image.shape == (480, 640, 3)
    boxes = cv2.imread(str(tmp_path / 'robovision_detections.png'))
    assert boxes is not None and boxes.shape == (480, 640, 3)


def test_main_job_ends_cleanly_on_ctrl_c(tmp_path):
    executable = ROOT / 'install' / 'robovision_ros' / 'lib' / 'robovision_ros' / 'robovision_demo'
    process = subprocess.Popen([str(executable), '--frames', '0', '--rate', '4', '--out', str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and sum(line.startswith('frame ') for line in lines) < 2:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
    assert sum(line.startswith('frame ') for line in lines) >= 2, ''.join(lines)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, ''.join(lines) + out
    assert 'frames processed' in out and (tmp_path / 'robovision_debug.png').is_file()


def test_main_job_selects_the_embedded_siglip(tmp_path):
    executable = ROOT / 'install' / 'robovision_ros' / 'lib' / 'robovision_ros' / 'robovision_demo'
    result = subprocess.run([str(executable), '--frames', '2', '--rate', '4', '--out', str(tmp_path),
                             '--clip-model', 'embedded:tiny_siglip'],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path,
                            env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'clip_perception (embedded:tiny_siglip, sigmoid scores)' in result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith('frame ')]
    assert len(lines) == 2, result.stdout
    for line in lines:  # presence prints the probability the threshold applies to: between 0 and 1
        scores = [float(v) for v in re.findall(r'(?:YES|no ) ([+-]\d\.\d\d)', line)]
        assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores), line
