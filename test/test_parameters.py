# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The parameter tables and their pure validator, without ROS: every refusal a `ros2 param set` can meet."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from robovision_ros.parameters import FIXED, LIVE, ParameterError, ParameterRule, ParameterSpec, ParameterTable, \
    build_settings, markdown_table
from robovision_ros.settings import ClipSettings, FeatureSettings, LoadSettings, WorkerSettings, clip_table, \
    detector_table, feature_table

CLIP = clip_table()
FEATURES = feature_table()


def _refusal(table: ParameterTable, **changes) -> str:
    """Return the reason `table` refuses `changes` applied to its defaults (fails the test if it accepts them)."""
    values = table.defaults()
    values.update(changes)
    with pytest.raises(ParameterError) as error:
        table.validate(values, changes)
    return str(error.value)


def _accepted(table: ParameterTable, **changes) -> dict:
    values = table.defaults()
    values.update(changes)
    return table.validate(values, changes)


@pytest.mark.parametrize('changes, reason', [
    ({'prompt_templates': ['a {} with {x}.']}, 'prompt template'),
    ({'prompt_templates': ['a {} {']}, 'prompt template'),
    ({'prompt_templates': ['a {} {0}']}, 'prompt template'),
    ({'labels': []}, 'must not be empty'),
    ({'labels': [''] * 2}, 'blank'),
    ({'labels': ['x' * 200]}, 'longer than'),
    ({'labels': [f'l{i}' for i in range(257)]}, 'at most 256'),
    ({'labels': [f'l{i}' for i in range(256)], 'prompt_templates': [f'{{}} {i}' for i in range(17)]}, 'at most 4096'),
    ({'presence_queries': [f'q{i}' for i in range(200)], 'prompt_templates': [f'{{}} {i}' for i in range(21)]},
     'presence_queries x prompt_templates'),
    ({'labels': [True, False]}, 'must be strings'),
    ({'labels': '[y, no]'}, 'quote each entry'),  # what `ros2 param set ... "[y, no]"` sends
    ({'labels': 42}, 'must be a string or a list of strings'),
    ({'presence_threshold': float('nan')}, 'presence_threshold: must be a finite number'),
    ({'presence_threshold': 3.0}, 'presence_threshold: 3 is out of range -1 .. 1'),
    ({'presence_threshold': 'high'}, 'presence_threshold: expected a number'),
    ({'max_rate_hz': -1.0}, 'max_rate_hz'),
    ({'max_rate_hz': 1e-300}, 'use 0 (no limit) or at least'),
    ({'max_frame_age_ms': math.inf}, 'max_frame_age_ms: must be a finite number'),
    ({'max_image_pixels': 0}, 'max_image_pixels'),
    ({'max_image_pixels': 4611686018427387904}, 'max_image_pixels'),
    ({'qos_depth': 0}, 'qos_depth: 0 is out of range 1 .. 100'),
    ({'qos_depth': 1000000000}, 'qos_depth'),
    ({'batch': 'maybe'}, 'batch: expected true or false'),
    ({'localize': 1}, 'localize: expected true or false'),
    ({'qos': 'fast'}, "qos: 'fast' not supported; supported: sensor_data, reliable"),
    ({'executor': 'events'}, "executor: 'events' not supported"),
    ({'backend': 'openvino2'}, "backend: 'openvino2' not supported"),
    ({'precision': 'fp64'}, "precision: 'fp64' not supported"),
    ({'backend': 'torch', 'precision': 'int8'}, "torch on cpu runs fp32, bf16, not 'int8'"),
    ({'backend': 'onnxruntime', 'device': 'cuda', 'precision': 'int8'}, 'int8 needs device cpu'),
    ({'backend': 'triton'}, 'backend triton needs triton_url'),
    ({'backend': 'triton', 'triton_url': 'http://server:8000'}, 'only gRPC is used'),
    ({'backend': 'triton', 'triton_url': 'localhost', 'triton_model': 'a b'}, 'is not a Triton model name'),
    ({'cuda_graphs': True}, 'cuda_graphs needs backend torch on device cuda'),
    ({'model': '   '}, 'model: must name a model directory'),
    ({'int8_min_cosine': 1.5}, 'int8_min_cosine'),
    ({'presence_probability': 1.5}, 'presence_probability: 1.5 is out of range 0 .. 1'),
    ({'presence_probability': -0.1}, 'presence_probability'),
    ({'input_mode': 'zoom'}, "input_mode: 'zoom' not supported; supported: crop, full_frame"),
    ({'input_mode': 'full_frame', 'backend': 'onnxruntime'},
     'input_mode full_frame needs a backend without a fixed input size (torch); onnxruntime engines take the '
     'native size only'),
    ({'backend': 'tensorrt', 'device': 'cuda', 'input_mode': 'full_frame'}, 'tensorrt engines take the native size'),
    ({'output_dtype': 'int8'}, "output_dtype: 'int8' not supported"),
])
def test_clip_perception_refuses_wrong_values_with_the_reason(changes, reason):
    assert reason in _refusal(CLIP, **changes)


@pytest.mark.parametrize('topic', ['/~x', '/a//b', '/1abc', '/foo/{bar}', 'cam\tera', '', 'camera/', '/a b'])
def test_invalid_topic_names_are_refused_as_ros_would_resolve_them(topic):
    assert 'not a valid topic name' in _refusal(CLIP, image_topics=[topic])


def test_topic_names_that_resolve_are_accepted_and_must_be_unique():
    values = _accepted(CLIP, image_topics=['camera/image_raw', '/cam2/image_raw/compressed', '~/image'])
    assert values['image_topics'] == ('camera/image_raw', '/cam2/image_raw/compressed', '~/image')
    assert _accepted(CLIP, image_topics='camera/image_raw')['image_topics'] == ('camera/image_raw',)
    assert 'must be unique' in _refusal(CLIP, image_topics=['/a', '/a'])


def test_accepted_values_come_back_typed():
    values = _accepted(CLIP, labels='single', presence_queries=[], presence_threshold=1, max_rate_hz=5)
    assert values['labels'] == ('single',)  # one plain string is one label
    assert values['presence_queries'] == ()  # the CLI's "[]" (an empty bool array) empties the queries
    assert values['presence_threshold'] == 1.0 and isinstance(values['presence_threshold'], float)
    assert values['max_rate_hz'] == 5.0
    assert _accepted(CLIP, labels=[' red cup ', 'blue cup'])['labels'] == ('red cup', 'blue cup')  # stripped


def test_feature_scales_are_bounded_and_need_a_backend_without_a_fixed_input():
    assert 'at most 8' in _refusal(FEATURES, scales=[1.0] * 9)
    assert 'out of range 0.1 .. 4' in _refusal(FEATURES, scales=[0.05])
    assert 'must not be empty' in _refusal(FEATURES, scales=[])
    reason = _refusal(FEATURES, scales=[1.0, 1.5], backend='onnxruntime')
    assert 'scales other than 1.0 need a backend without a fixed input size' in reason
    assert _accepted(FEATURES, scales=[1.0, 1.5], backend='torch')['scales'] == (1.0, 1.5)
    assert _accepted(FEATURES, scales=[1.0, 1.5], backend='auto')['scales'] == (1.0, 1.5)  # decided at configure
    assert "output_dtype: 'int8' not supported" in _refusal(FEATURES, output_dtype='int8')


def test_a_wrong_value_not_being_changed_does_not_block_other_changes():
    values = CLIP.defaults()
    values['qos_depth'] = 0  # e.g. a bad start value rclpy did not refuse
    assert CLIP.validate(values, {'presence_threshold'})['qos_depth'] == 0
    with pytest.raises(ParameterError, match='qos_depth'):
        CLIP.validate(values)  # configure validates everything


def test_full_frame_is_accepted_where_the_backend_runs_other_sizes():
    assert _accepted(CLIP, input_mode='full_frame', backend='torch')['input_mode'] == 'full_frame'
    assert _accepted(FEATURES, input_mode='full_frame', backend='auto')['input_mode'] == 'full_frame'  # at configure
    assert 'fixed input size' in _refusal(FEATURES, input_mode='full_frame', backend='triton', triton_url='host')


def test_input_mode_is_the_encoder_nodes_own():
    """The detector sees its model's own input (OWLv2 pads to a square): it declares no input_mode."""
    detector = detector_table()
    assert 'input_mode' in CLIP and 'input_mode' in FEATURES and 'input_mode' not in detector
    assert LoadSettings.from_values(detector.defaults()).input_mode is None


def test_presence_threshold_follows_the_family_scoring():
    """One threshold per kind of score: a cosine for softmax families (CLIP), a probability for sigmoid (SigLIP)."""
    settings = build_settings(ClipSettings, _accepted(CLIP, presence_threshold=0.3, presence_probability=0.7))
    assert settings.threshold_for('softmax') == 0.3 and settings.threshold_for('sigmoid') == 0.7
    assert ClipSettings().threshold_for('softmax') == 0.25 and ClipSettings().threshold_for('sigmoid') == 0.5


def test_settings_defaults_are_the_table_defaults():
    clip, features = CLIP.defaults(), FEATURES.defaults()
    assert WorkerSettings() == build_settings(WorkerSettings, clip)
    assert ClipSettings() == build_settings(ClipSettings, clip)
    assert FeatureSettings() == build_settings(FeatureSettings, features)
    load = LoadSettings.from_values(clip)
    assert (load.model, load.backend, load.device, load.precision) == ('embedded:tiny_clip', 'auto', 'cpu', 'fp32')
    assert load.input_mode == 'crop' and not ClipSettings().patch_features
    assert set(load.backend_options) == {'triton_url', 'triton_model', 'triton_timeout_ms', 'cuda_graphs',
                                         'openvino_device'}
    assert FEATURES.defaults()['model'] == 'embedded:tiny_vit'


def test_backend_parameters_come_from_the_backends():
    assert CLIP['triton_url'].owner == 'triton' and CLIP['cuda_graphs'].owner == 'torch'
    assert CLIP['backend'].choices[-1] == 'auto' and 'triton' in CLIP['backend'].choices
    assert {'labels', 'presence_threshold'} <= set(CLIP.specs) and 'scales' not in CLIP
    assert {'scales', 'output_dtype'} <= set(FEATURES.specs) and 'labels' not in FEATURES


def test_a_table_refuses_a_parameter_declared_twice_or_a_rule_on_an_unknown_name():
    spec = ParameterSpec('a', 'bool', False, 'A.')
    with pytest.raises(ValueError, match='declared twice'):
        ParameterTable([spec, spec])
    with pytest.raises(ValueError, match='undeclared'):
        ParameterTable([spec], [ParameterRule(frozenset({'b'}), lambda v: None)])
    with pytest.raises(ValueError, match='kind'):
        ParameterSpec('c', 'complex', 0, 'C.')


def test_descriptions_say_choices_bounds_and_lifetime():
    assert CLIP['qos_depth'].full_description.endswith('Range 1 .. 100. Fixed while configured: cleanup, set, '
                                                       'configure to change.')
    assert 'One of: sensor_data, reliable.' in CLIP['qos'].full_description
    assert CLIP['labels'].lifetime == LIVE and CLIP['precision'].lifetime == FIXED
    assert CLIP['executor'].full_description.endswith('Set at start only.')


def _generated_section(text: str, name: str) -> str:
    match = re.search(rf'<!-- parameters:{name} begin[^>]*-->\n(.*?)\n<!-- parameters:{name} end -->', text, re.S)
    assert match, f'docs/architecture.md has no generated {name} parameter table'
    return match.group(1)


def test_the_architecture_doc_tables_are_generated_from_the_tables():
    from robovision_ros.tools.parameter_docs import node_tables, used_by

    doc = (Path(__file__).resolve().parents[1] / 'docs' / 'architecture.md').read_text()
    for name, specs in node_tables().items():
        assert _generated_section(doc, name) == markdown_table(specs, used_by(name)), \
            f'docs/architecture.md is stale: run robovision_parameter_docs --write ({name})'
