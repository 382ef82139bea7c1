# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Params-file sections under namespaces.

robovision_ros.params_files against rclpy itself, the shipped config, and the launch file's namespace and warnings
(the latter where launch is installed).
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from robovision_ros.params_files import ParamsFileError, load_sections, parameter_value, section_matches, \
    unmatched_sections, unmatched_warning

CONFIG = Path(__file__).resolve().parent.parent / 'robovision_ros' / 'config' / 'robovision.yaml'
# Every kind of key, general sections first and then more specific ones; then a general section after a specific
# one (rclpy applies matching sections in file order, so it wins), and `/**` written a second time (rcl merges it
# into the first).
PARAMS = """
/**:
  ros__parameters:
    a: "any"
    b: "any"
    c: "any"
    d: "any"
/**/clip_perception:
  ros__parameters:
    b: "any namespace"
    c: "any namespace"
/*/clip_perception:
  ros__parameters:
    e: "one level"
clip_perception:
  ros__parameters:
    c: "bare"
    d: "bare"
/robot2/clip_perception:
  ros__parameters:
    d: "robot2"
    g: "robot2"
"**/clip_perception":
  ros__parameters:
    g: "late, any namespace"
"/**":
  ros__parameters:
    f: "late"
/**/clip_perception_2:
  ros__parameters:
    f: "other node"
"""
NAMES = 'abcdefg'
# A node that declares the given parameters with the given defaults and prints what it got: None for a default.
RCLPY_NODE = """
import json, sys, rclpy
from rclpy.node import Node
rclpy.init(args=sys.argv)
node = Node(sys.argv[1])
defaults = json.loads(sys.argv[2])
values = {name: node.declare_parameter(name, default).value for name, default in defaults.items()}
print(json.dumps({name: None if value == defaults[name] else value for name, value in values.items()}))
"""


def _rclpy_values(params_file: Path, namespace: str, defaults: dict, node_name: str = 'clip_perception') -> dict:
    """Return what a real rclpy node `node_name` in `namespace` reads from `params_file` (None: the default)."""
    result = subprocess.run([sys.executable, '-c', RCLPY_NODE, node_name, json.dumps(defaults), '--ros-args',
                             '-r', f'__ns:={namespace}', '--params-file', str(params_file)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('namespace', ['/', '/robot2', '/robot3', '/fleet/robot2'])
def test_sections_apply_as_rclpy_applies_them(tmp_path, namespace):
    params_file = tmp_path / 'params.yaml'
    params_file.write_text(PARAMS)
    fqn = namespace.rstrip('/') + '/clip_perception'
    sections = load_sections(str(params_file))
    ours = {name: parameter_value(sections, fqn, name) for name in NAMES}
    assert ours == _rclpy_values(params_file, namespace, {name: '' for name in NAMES})
    assert (ours['b'], ours['f'], ours['g']) == ('any namespace', 'late', 'late, any namespace')  # not vacuous


def test_matching_rules():
    assert section_matches('/**', '/clip_perception') and section_matches('/**', '/a/b/c')
    assert section_matches('/**/clip_perception', '/clip_perception')
    assert section_matches('/**/clip_perception', '/fleet/robot2/clip_perception')
    assert not section_matches('/**/clip_perception', '/robot2/clip_perception_2')
    assert section_matches('/*/clip_perception', '/robot2/clip_perception')
    assert not section_matches('/*/clip_perception', '/clip_perception')
    assert section_matches('clip_perception', '/clip_perception')
    assert not section_matches('clip_perception', '/robot2/clip_perception')
    assert not section_matches('/robot2/clip_perception', '/robot21/clip_perception')
    assert section_matches('/**/clip.perception', '/clip.perception')  # a literal dot, not any character
    assert not section_matches('/**/clip.perception', '/clipXperception')


def test_sections_that_match_no_node_are_named_with_the_fix():
    sections = ['/**', '/**/clip_perception', 'clip_perception', '/clip_perception', 'feature_extractor',
                '/robot1/clip_perception', '/**/clip_percepton']
    nodes = ['/robot2/clip_perception', '/robot2/feature_extractor']
    unmatched = unmatched_sections(sections, nodes, '/robot2')
    # Bare and root sections stop applying under a namespace; a typo matches nothing anywhere; another robot's
    # explicit section is that robot's business.
    assert unmatched == ['clip_perception', '/clip_perception', 'feature_extractor', '/**/clip_percepton']
    assert unmatched_sections(sections[:5], ['/clip_perception', '/feature_extractor'], '/') == []
    warning = unmatched_warning('my.yaml', unmatched[:1], nodes)
    assert warning == ("params_file my.yaml: section(s) 'clip_perception' match no node of this launch "
                       '(/robot2/clip_perception, /robot2/feature_extractor) and are ignored; a bare node name '
                       "applies in the root namespace only: write '/**/clip_perception:' to apply under any "
                       'namespace')


def test_the_shipped_config_applies_under_any_namespace():
    sections = load_sections(str(CONFIG))
    for namespace in ('/', '/robot2', '/fleet/robot2'):
        fqns = [namespace.rstrip('/') + f'/{name}'
                for name in ('clip_perception', 'feature_extractor', 'open_vocab_detector')]
        assert unmatched_sections(sections, fqns, namespace) == []
        assert parameter_value(sections, fqns[0], 'image_topics') == ['camera/image_raw']  # relative
        assert parameter_value(sections, fqns[0], 'debug_image') is False
        assert parameter_value(sections, fqns[1], 'output_dtype') == 'float32'
        assert parameter_value(sections, fqns[1], 'debug_image') is None
    # And rclpy reads it so (`ros2 run ... -r __ns:=/robot2 --params-file config/robovision.yaml`).
    assert _rclpy_values(CONFIG, '/robot2', {'image_topics': ['image_raw'], 'debug_image': True}) == {
        'image_topics': ['camera/image_raw'], 'debug_image': False}
    assert _rclpy_values(CONFIG, '/robot2', {'output_dtype': 'float16', 'debug_image': True},
                         node_name='feature_extractor') == {'output_dtype': 'float32', 'debug_image': None}


def test_bad_params_files_are_one_clear_error(tmp_path):
    cases = {'list.yaml': '- a\n- b\n', 'no_params.yaml': 'clip_perception:\n  labels: [a]\n',
             'broken.yaml': 'clip_perception: [\n'}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ParamsFileError, match=name):
            load_sections(str(tmp_path / name))
    with pytest.raises(ParamsFileError, match='cannot be read'):
        load_sections(str(tmp_path / 'missing.yaml'))
    (tmp_path / 'empty.yaml').write_text('')
    assert load_sections(str(tmp_path / 'empty.yaml')) == {}


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _launch(tmp_path, arguments: dict[str, str], pushed_namespace: str = ''):
    """Run the installed launch file's node setup for `arguments`; return module, context, actions, warnings."""
    pytest.importorskip('launch_ros', reason='launch_ros is not installed (not on PyPI; part of a ROS 2 install, '
                                             'or ROBOVISION_ROS_SOURCES=DIR scripts/setup.sh)')
    import importlib.util

    import launch
    from ament_index_python.packages import get_package_share_directory

    path = Path(get_package_share_directory('robovision_ros')) / 'launch' / 'robovision.launch.py'
    spec = importlib.util.spec_from_file_location('robovision_launch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = launch.LaunchContext()
    for action in module.generate_launch_description().entities:
        if isinstance(action, launch.actions.DeclareLaunchArgument):
            context.launch_configurations[action.name] = arguments.get(action.name, action.default_value[0].text
                                                                       if action.default_value else '')
    if pushed_namespace:
        context.launch_configurations['ros_namespace'] = pushed_namespace
    records = _Records()
    logger = logging.getLogger('robovision.launch')
    logger.addHandler(records)
    try:
        actions = module._perception_actions(context)
    finally:
        logger.removeHandler(records)
    return module, context, actions, records.messages


def test_launch_namespace_argument_and_the_warnings(tmp_path):
    bare = tmp_path / 'bare.yaml'
    bare.write_text('clip_perception:\n  ros__parameters:\n    labels: ["a", "b"]\n')
    module, context, actions, warnings = _launch(tmp_path, {'namespace': 'robot2', 'camera': 'true',
                                                            'params_file': str(bare)})
    assert module._node_namespace(context) == '/robot2'
    assert warnings == [unmatched_warning(str(bare), ['clip_perception'], [
        '/robot2/clip_perception', '/robot2/feature_extractor', '/robot2/open_vocab_detector', '/robot2/image_source'])]

    # The shipped config under a namespace pushed by an enclosing launch: nodes under both, no section warning.
    module, context, actions, warnings = _launch(tmp_path, {'namespace': 'robot2', 'image_topics': '/abs/image_raw'},
                                                 pushed_namespace='/fleet')
    assert module._node_namespace(context) == '/fleet/robot2'
    assert warnings == ["namespace /fleet/robot2: image_topics ['/abs/image_raw'] are absolute and stay outside the "
                        'namespace (shared with every robot); use relative names such as camera/image_raw']
    module, context, _, warnings = _launch(tmp_path, {'namespace': '/robot3'}, pushed_namespace='/fleet')
    assert module._node_namespace(context) == '/robot3'  # absolute: the pushed namespace does not apply
    module, context, _, warnings = _launch(tmp_path, {})
    assert (module._node_namespace(context), warnings) == ('/', [])
