# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Which sections of a ROS 2 parameters file apply to which node, matched as rclpy matches them.

A section's key is a node-name pattern: `/**` (every node), `/**/clip_perception` (that node under any namespace),
`/*/clip_perception` (under exactly one namespace level), `/robot2/clip_perception`, or a bare `clip_perception`,
which rcl reads as `/clip_perception`: the root namespace only, so under a namespace it silently stops applying.
Every matching section applies, in file order: a later one overrides an earlier one's values (rclpy's behaviour,
checked in test/test_params_files.py against rclpy itself). Used by the launch file, without ROS.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Optional

import yaml


class ParamsFileError(ValueError):
    """A parameters file cannot be read, or is not a mapping of node sections with `ros__parameters`."""


def load_sections(path: str) -> dict[str, dict[str, Any]]:
    """
    Return {section key: its ros__parameters} of a parameters file, in file order.

    A key written twice is one section, at its first place, with the later values merged in (as rcl reads it).
    """
    try:
        with open(path, encoding='utf-8') as stream:
            loader = yaml.SafeLoader(stream)
            try:
                root = loader.get_single_node()
                if root is None:
                    return {}
                if not isinstance(root, yaml.MappingNode):
                    raise ParamsFileError(f'params file {path!r}: expected node sections (a mapping), got {root.tag}')
                pairs = [(loader.construct_object(key, deep=True), loader.construct_object(value, deep=True))
                         for key, value in root.value]
            finally:
                loader.dispose()
    except (OSError, yaml.YAMLError) as error:
        raise ParamsFileError(f'params file {path!r} cannot be read: {error}') from error
    sections: dict[str, dict[str, Any]] = {}
    for key, section in pairs:
        parameters = section.get('ros__parameters') if isinstance(section, dict) else None
        if not isinstance(parameters, dict):
            raise ParamsFileError(f'params file {path!r}: section {key!r} has no ros__parameters mapping')
        sections.setdefault(str(key), {}).update(parameters)
    return sections


def _absolute(key: str) -> str:
    return key if key.startswith('/') else '/' + key


def section_matches(key: str, node_fqn: str) -> bool:
    """
    Return True if the section `key` applies to the node with fully qualified name `node_fqn`.

    As rclpy: a key without a leading slash gets one; `/*` matches one `/token`, `/**` any number of them
    (none included), and the whole name must match.
    """
    pattern = ''
    for part in re.split(r'(/\*\*|/\*)', _absolute(key)):
        if part == '/**':
            pattern += r'(/\w+)*'
        elif part == '/*':
            pattern += r'(/\w+)'
        else:
            pattern += re.escape(part)
    return re.fullmatch(pattern, node_fqn) is not None


def parameter_value(sections: dict[str, dict[str, Any]], node_fqn: str, name: str) -> Optional[Any]:
    """Return the value the file gives parameter `name` of node `node_fqn` (None if it gives none)."""
    value = None
    for key, parameters in sections.items():
        if name in parameters and section_matches(key, node_fqn):
            value = parameters[name]
    return value


def _names_another_namespace(key: str, namespace: str) -> bool:
    """Return True for a key that explicitly names a namespace other than `namespace` (`/robot1/clip_perception`)."""
    tokens = _absolute(key).strip('/').split('/')
    key_namespace = '/' + '/'.join(tokens[:-1])
    return len(tokens) > 1 and '*' not in key_namespace and key_namespace != namespace


def unmatched_sections(sections: Iterable[str], node_fqns: Iterable[str], namespace: str) -> list[str]:
    """
    Return the section keys that apply to none of `node_fqns` (the nodes of one launch, in `namespace`).

    A key naming another namespace explicitly (`/robot1/clip_perception` in robot2's launch) is not counted: one
    file may hold the sections of several robots.
    """
    node_fqns = list(node_fqns)
    return [key for key in sections
            if not any(section_matches(key, fqn) for fqn in node_fqns) and not _names_another_namespace(key, namespace)]


def unmatched_warning(params_file: str, unmatched: list[str], node_fqns: list[str]) -> str:
    """Return the one-line warning for sections that match no node: which, for which nodes, and the fix."""
    keys = ', '.join(repr(key) for key in unmatched)
    node_name = _absolute(unmatched[0]).rsplit('/', 1)[-1] or 'clip_perception'
    return (f'params_file {params_file}: section(s) {keys} match no node of this launch ({", ".join(node_fqns)}) '
            f'and are ignored; a bare node name applies in the root namespace only: write \'/**/{node_name}:\' '
            'to apply under any namespace')
