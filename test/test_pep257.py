# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Docstring style: ament's pep257 check (the ament convention, no extra ignores), as ament_lint's own test does."""
from __future__ import annotations

import logging
from pathlib import Path

from ament_pep257.main import main
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.linter
@pytest.mark.pep257
def test_pep257(capsys, caplog, monkeypatch):
    caplog.set_level(logging.WARNING, logger='pydocstyle.utils')  # not one 'Checking file' record per file
    monkeypatch.chdir(ROOT)  # file names in the report relative to the repository root
    rc = main(argv=['robovision_ros', 'test'])
    out = capsys.readouterr()
    errors = [line for line in out.out.splitlines() if not line.startswith('checking ')]
    assert rc == 0, '\n'.join(errors + out.err.splitlines())
