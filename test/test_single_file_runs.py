# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""One test file runs alone from the README's environment, also as `python -m pytest` from the repository root."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_pytest_on_one_file_from_the_repository_root_imports_the_installed_package():
    # `python -m pytest` puts the source tree first on sys.path; its robovision_ros has no generated `msg`.
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                             'test/test_message_conversions.py'], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'passed' in result.stdout
