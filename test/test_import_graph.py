# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The runtime (what the perception nodes import) imports nothing from the tools or the synthetic world.

Tools (export, benchmark, demo, fine-tuning) and the synthetic world (scenes, tiny models, training, evaluation)
may use the runtime, never the other way round. image_source, the camera stand-in for demos and tests, may use
the scene generator.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / 'robovision_ros'
OUTSIDE_RUNTIME = ('tools', 'synthetic')
# Nodes that are not part of the perception runtime: the demo camera reads generated scenes.
RUNTIME_EXCEPTIONS = ('nodes/image_source.py', 'nodes/frame_sources.py')


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (a lazy import inside a function counts too)."""
    names: set[str] = set()
    package = '.'.join(('robovision_ros',) + path.relative_to(PACKAGE).parent.parts)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.rsplit('.', node.level - 1)[0] if node.level > 1 else package
                module = f'{base}.{node.module}' if node.module else base
            else:
                module = node.module or ''
            names.add(module)
            names.update(f'{module}.{alias.name}' for alias in node.names)
    return names


def _runtime_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob('*.py')
                  if p.relative_to(PACKAGE).parts[0] not in OUTSIDE_RUNTIME
                  and str(p.relative_to(PACKAGE)) not in RUNTIME_EXCEPTIONS)


def test_the_runtime_is_found():
    names = {str(p.relative_to(PACKAGE)) for p in _runtime_modules()}
    assert {'encoder.py', 'nodes/clip_perception.py', 'nodes/perception_node.py', 'backends/onnx_export.py'} <= names
    assert not any(n.startswith(('tools/', 'synthetic/')) for n in names)


@pytest.mark.parametrize('path', _runtime_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_runtime_module_imports_no_tool_or_synthetic_module(path):
    forbidden = sorted(name for name in _imports(path)
                       if any(name == f'robovision_ros.{part}' or name.startswith(f'robovision_ros.{part}.')
                              for part in OUTSIDE_RUNTIME))
    assert not forbidden, f'{path.relative_to(PACKAGE)} imports {forbidden}'


def test_the_check_catches_a_forbidden_import(tmp_path, monkeypatch):
    fake = tmp_path / 'robovision_ros'
    (fake / 'nodes').mkdir(parents=True)
    (fake / 'nodes' / 'bad.py').write_text('def f():\n    from ..synthetic import scenes\n')
    monkeypatch.setattr(__import__(__name__), 'PACKAGE', fake)
    assert 'robovision_ros.synthetic.scenes' in _imports(fake / 'nodes' / 'bad.py')
