# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Code style: flake8 over the package, the launch files and the tests (configuration in setup.cfg)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_flake8_is_clean():
    result = subprocess.run([sys.executable, '-m', 'flake8', 'robovision_ros', 'test'],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
