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

PACKAGE = Path(__file__).resolve().parent.parent / 'robovision_ros' / 'robovision_ros'
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


def _module_name(path: Path, package: Path) -> str:
    parts = ('robovision_ros',) + path.relative_to(package).with_suffix('').parts
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def _import_graph(package: Path) -> dict[str, set[str]]:
    """Map each module to the package's modules it imports (lazy and TYPE_CHECKING imports count)."""
    modules = {_module_name(p, package): p for p in package.rglob('*.py')}
    graph = {}
    for name, path in modules.items():
        # `from a.b import c` names a.b and a.b.c; only names that are modules of the package are edges.
        graph[name] = {m for m in _imports(path) if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycles():
    cycles = _cycles(_import_graph(PACKAGE))
    assert not cycles, f'import cycles (lazy and TYPE_CHECKING imports included): {cycles}'


def test_the_cycle_check_finds_a_lazy_cycle(tmp_path, monkeypatch):
    fake = tmp_path / 'robovision_ros'
    fake.mkdir()
    monkeypatch.setattr(__import__(__name__), 'PACKAGE', fake)
    (fake / 'a.py').write_text('from robovision_ros import b\n')
    (fake / 'b.py').write_text('from typing import TYPE_CHECKING\n'
                               'if TYPE_CHECKING:\n    from robovision_ros.a import x\n')
    (fake / 'c.py').write_text('def f():\n    import robovision_ros.a\n')
    assert _cycles(_import_graph(fake)) == [['robovision_ros.a', 'robovision_ros.b']]
