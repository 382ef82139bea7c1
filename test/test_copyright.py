# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Copyright and license header on every source file, the check ament_copyright makes (not on PyPI).

Every Python file (the packages with their launch files and setup.py, the tests) and every shell script (scripts/,
.ci/run) starts, after its shebang line if it has one, with the two lines of `HEADER`. The license is the one every
package.xml declares, its full text in LICENSE.
"""
from __future__ import annotations

from pathlib import Path
import xml.etree.ElementTree as ElementTree

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ('robovision_ros', 'robovision_msgs')  # the ROS packages of this repository
LICENSE_ID = 'Apache-2.0'
HEADER = ('# Copyright 2026 The robovision_ros authors', f'# SPDX-License-Identifier: {LICENSE_ID}')


def header_problem(path: Path) -> str | None:
    """Return what is wrong with the header of `path`, or None if it starts with `HEADER`."""
    lines = path.read_text(encoding='utf-8').splitlines()
    if lines and lines[0].startswith('#!'):
        lines = lines[1:]
    found = tuple(lines[:len(HEADER)])
    if found == HEADER:
        return None
    wrong = next((line for line, want in zip(found, HEADER) if line != want), None)
    return f'has {wrong[:70]!r} where the header should be' if wrong is not None else 'has no header'


def is_shell_script(path: Path) -> bool:
    """Tell whether `path` is a shell script: a `.sh` name or a sh/bash shebang."""
    if path.suffix == '.sh':
        return True
    with path.open('rb') as f:
        first = f.readline()
    return first.startswith(b'#!') and (first.rstrip().endswith((b'/sh', b'/bash', b' sh', b' bash')))


def checked_files() -> list[Path]:
    """Return the files that must carry the header, relative to the repository root."""
    python = [p for d in PACKAGES + ('test',) for p in (ROOT / d).rglob('*.py') if '__pycache__' not in p.parts]
    shell = [p for p in sorted((ROOT / 'scripts').iterdir()) if p.is_file() and is_shell_script(p)]
    return sorted(p.relative_to(ROOT) for p in python + shell + [ROOT / '.ci' / 'run'])


@pytest.mark.linter
@pytest.mark.copyright
def test_every_source_file_has_the_header():
    files = checked_files()
    # The set the check covers is the one this test's docstring names: no directory silently dropped.
    assert {p.parts[0] for p in files} >= {'robovision_ros', 'test', 'scripts', '.ci'}
    assert {Path('scripts/setup.sh'), Path('scripts/test'), Path('robovision_ros/setup.py'),
            Path('robovision_ros/launch/robovision.launch.py')} <= set(files)
    problems = [f'{p}: {problem}' for p in files if (problem := header_problem(ROOT / p))]
    assert not problems, (f'{len(problems)} of {len(files)} files lack the header\n  ' + '\n  '.join(HEADER)
                          + '\n(after the shebang line, if any):\n' + '\n'.join(problems))


@pytest.mark.linter
@pytest.mark.copyright
def test_license_matches_the_manifest():
    for package in PACKAGES:
        licenses = [e.text for e in ElementTree.parse(ROOT / package / 'package.xml').getroot().findall('license')]
        assert licenses == [LICENSE_ID], package
    text = (ROOT / 'LICENSE').read_text(encoding='utf-8')
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text
    assert 'END OF TERMS AND CONDITIONS' in text


@pytest.mark.linter
@pytest.mark.copyright
def test_header_check_rejects_what_it_should(tmp_path):
    good = '\n'.join(HEADER) + '\n\n"""Module."""\n'
    cases = {
        'good.py': (good, True),
        'shebang.sh': ('#!/usr/bin/env bash\n' + '\n'.join(HEADER) + '\nset -e\n', True),
        'missing.py': ('"""Module."""\nimport os\n', False),
        'empty.py': ('', False),
        'after_docstring.py': ('"""Module."""\n' + '\n'.join(HEADER) + '\n', False),
        'other_license.py': (HEADER[0] + '\n# SPDX-License-Identifier: MIT\n', False),
        'other_year.py': (good.replace('2026', '2025'), False),
        'one_line_only.py': (HEADER[0] + '\n', False),
        'blank_line_first.sh': ('#!/bin/sh\n\n' + '\n'.join(HEADER) + '\n', False),
    }
    for name, (text, ok) in cases.items():
        path = tmp_path / name
        path.write_text(text, encoding='utf-8')
        assert (header_problem(path) is None) == ok, name
    assert is_shell_script(tmp_path / 'shebang.sh')
    (tmp_path / 'run').write_text('#!/usr/bin/env bash\necho\n', encoding='utf-8')
    (tmp_path / 'notes').write_text('#!/usr/bin/env python3\n', encoding='utf-8')
    assert is_shell_script(tmp_path / 'run') and not is_shell_script(tmp_path / 'notes')
