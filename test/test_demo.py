"""The main job, run as README command 1 runs it (after setup): frames printed, debug image saved."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parent.parent


def test_main_job_runs_offline_and_saves_debug_image(tmp_path):
    executable = ROOT / 'install' / 'robovision_ros' / 'lib' / 'robovision_ros' / 'robovision_demo'
    result = subprocess.run([str(executable), '--frames', '4', '--rate', '4', '--out', str(tmp_path)],
                            capture_output=True, text=True, timeout=240, cwd=tmp_path,
                            env={**__import__('os').environ, 'HF_HUB_OFFLINE': '1'})
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith('frame ')]
    assert len(lines) == 4, result.stdout
    for line in lines:
        assert re.search(r'truth: .+\| best: \w+ \w+ [01]\.\d\d \|', line), line
        assert 'features 8x8x96' in line and line.rstrip().endswith('ms')
    assert '4 frames processed' in result.stdout
    image = cv2.imread(str(tmp_path / 'robovision_debug.png'))
    assert image is not None and image.shape == (480, 640, 3)
