# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Start clip_perception and feature_extractor as lifecycle nodes and (by default) take them to active once.

    ros2 launch robovision_ros robovision.launch.py camera:=true                      # bag-less demo
    ros2 launch robovision_ros robovision.launch.py image_topics:=/camera/image_raw backend:=onnxruntime
    ros2 launch robovision_ros robovision.launch.py image_topics:='["/cam1/image_raw", "/cam2/image_raw"]'
    ros2 launch robovision_ros robovision.launch.py params_file:=my.yaml            # my.yaml decides everything
    ros2 launch robovision_ros robovision.launch.py namespace:=robot2 camera:=true    # /robot2/camera/image_raw, ...
    ros2 launch robovision_ros robovision.launch.py autostart:=false                 # leave them to a manager
    ros2 launch robovision_ros robovision.launch.py camera:=true detector:=true       # open_vocab_detector too

Parameters come from `params_file` (default config/robovision.yaml). The arguments image_topics, clip_model,
feature_model, backend, device and precision override the file only when given; left empty (the default) the
file's value holds.

autostart:=true configures both nodes and activates each one once, after that first configure succeeds. From
then on the lifecycle belongs to the operator: `ros2 lifecycle set /clip_perception deactivate` stays inactive.

camera:=true also starts image_source (generated scenes, or `camera_source:=` a folder or video), publishing on
the first of the perception nodes' image_topics, so the demo is wired whatever the topic is.

namespace:=robot2 puts every node of the launch in that namespace (under an enclosing PushRosNamespace, a relative
one is appended to it). Topics are relative by default (camera/image_raw, the outputs ~/...), so each robot's
nodes read its own camera. Params-file sections apply as rcl matches them: `/**/clip_perception:` under any
namespace, a bare `clip_perception:` in the root namespace only; a section that matches no node of this launch is
named in one warning.
"""
from __future__ import annotations

import os
from typing import Any, List, Optional, Union

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import Action, LaunchContext, LaunchDescription
from launch.actions import (DeclareLaunchArgument, EmitEvent, LogInfo, OpaqueFunction, RegisterEventHandler,
                            SetEnvironmentVariable)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.logging import get_logger
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.utilities import make_namespace_absolute, prefix_namespace
from lifecycle_msgs.msg import Transition

from robovision_ros.backends.base import DEVICES, PRECISIONS
from robovision_ros.backends.registry import backend_choices
from robovision_ros.params_files import ParamsFileError, load_sections, parameter_value, unmatched_sections, \
    unmatched_warning

PERCEPTION_NODES = {'clip_perception': 'clip_model', 'feature_extractor': 'feature_model'}
DETECTOR_NODE = {'open_vocab_detector': 'detector_model'}  # started too with detector:=true
# Launch arguments that override one key of the params file, when given (non-empty).
OVERRIDES = ('image_topics', 'backend', 'device', 'precision')
# What the nodes subscribe to when neither the argument nor the params file names a topic (the nodes' default).
NODE_DEFAULT_TOPICS = ['image_raw']


def _arguments(share: str) -> dict[str, tuple[str, str]]:
    """Launch argument -> (default, description)."""
    not_given = ' Empty (default): the params file decides.'
    return {
        'params_file': (os.path.join(share, 'config', 'robovision.yaml'), 'Parameter file of both nodes.'),
        'namespace': ('', 'Namespace of every node of this launch (robot2 or /robot2); relative topics resolve '
                          'under it, so robots with their own namespace do not cross-talk.'),
        'image_topics': ('', 'Camera topic (/camera/image_raw) or a YAML list of topics '
                             '(\'["/cam1/image_raw", "/cam2/image_raw"]\').' + not_given),
        'clip_model': ('', 'Model of clip_perception (directory, hub id or embedded:<name>).' + not_given),
        'feature_model': ('', 'Model of feature_extractor.' + not_given),
        'detector': ('false', 'Also start open_vocab_detector (boxes for every instance of every query).'),
        'detector_model': ('', 'Model of open_vocab_detector (an OWL-ViT or OWLv2 directory, hub id or '
                               'embedded:<name>).' + not_given),
        'backend': ('', f'{", ".join(backend_choices())}.' + not_given),
        'device': ('', f'{", ".join(DEVICES)}.' + not_given),
        'precision': ('', f'{", ".join(PRECISIONS)}.' + not_given),
        'autostart': ('true', 'Configure and activate the nodes once; false leaves them unconfigured '
                              '(for a lifecycle manager).'),
        'camera': ('false', 'Also start image_source, publishing on the perception nodes\' (first) image topic.'),
        'camera_source': ('generator', "image_source's source: 'generator', a folder of images or a video file."),
        'camera_rate_hz': ('10.0', "image_source's frame rate."),
        'dds_profile': (os.path.join(share, 'config', 'fastdds_profile.xml'),
                        'Fast DDS profile with a shared-memory segment large enough for camera images.'),
    }


class LaunchArgumentError(ValueError):
    """A launch argument's value cannot be used."""


def parse_image_topics(text: str) -> Union[str, list[str]]:
    """
    Return a plain topic name as a string and a YAML flow list ('["/a", "/b"]') as a list of strings.

    Not plain YAML for the plain name: a topic called `on` or `y` must not become a bool.
    """
    text = text.strip()
    if not text.startswith('['):
        return text
    try:
        topics = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise LaunchArgumentError(f'image_topics {text!r} is not a YAML list: {error}') from error
    if not isinstance(topics, list) or not topics or not all(isinstance(t, str) and t.strip() for t in topics):
        raise LaunchArgumentError(f'image_topics {text!r}: expected a non-empty list of topic names '
                                  '(quote names YAML reads as booleans or numbers)')
    return topics


def camera_topic(topics: Union[str, list[str], None]) -> str:
    """Return the topic image_source publishes on: the (first) topic the perception nodes subscribe to."""
    if topics is None:
        topics = NODE_DEFAULT_TOPICS
    return topics if isinstance(topics, str) else topics[0]


def _given(context: LaunchContext, name: str) -> Optional[str]:
    value = context.launch_configurations.get(name, '').strip()
    return value or None


def _node_namespace(context: LaunchContext) -> str:
    """Return the absolute namespace the nodes get: namespace:= under any enclosing PushRosNamespace."""
    given = LaunchConfiguration('namespace').perform(context).strip()
    return make_namespace_absolute(prefix_namespace(context.launch_configurations.get('ros_namespace'), given)
                                   or '/')


def _fqn(namespace: str, name: str) -> str:
    return f'{namespace.rstrip("/")}/{name}'


def _perception_actions(context: LaunchContext) -> list[Action]:
    """Return the perception nodes with their overrides, their autostart, and (camera:=true) image_source."""
    params_file = LaunchConfiguration('params_file').perform(context)
    try:
        sections = load_sections(params_file)
    except ParamsFileError as error:
        raise LaunchArgumentError(str(error)) from error
    namespace = _node_namespace(context)
    autostart = IfCondition(LaunchConfiguration('autostart'))
    actions: list[Action] = []
    topics_argument = _given(context, 'image_topics')
    topics = parse_image_topics(topics_argument) if topics_argument else None
    nodes = dict(PERCEPTION_NODES)
    if IfCondition(LaunchConfiguration('detector')).evaluate(context):
        nodes.update(DETECTOR_NODE)
    for name, model_argument in nodes.items():
        overrides: dict[str, ParameterValue] = {}
        for key, argument in [('model', model_argument)] + [(key, key) for key in OVERRIDES if key != 'image_topics']:
            value = _given(context, argument)
            if value is not None:
                overrides[key] = ParameterValue(value, value_type=str)
        if topics is not None:
            topics_type = str if isinstance(topics, str) else List[str]
            overrides['image_topics'] = ParameterValue(topics, value_type=topics_type)
        node = LifecycleNode(package='robovision_ros', executable=name, name=name, namespace=namespace,
                             output='screen', parameters=[params_file] + ([overrides] if overrides else []))
        configure = EmitEvent(condition=autostart, event=ChangeState(
            lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_CONFIGURE))
        actions += [node, _activate_after_first_configure(node, autostart), configure]

    # Every node this launch file can start: a section for one switched off (detector:=false) is not unmatched.
    node_fqns = [_fqn(namespace, name) for name in (*PERCEPTION_NODES, *DETECTOR_NODE, 'image_source')]
    if topics is None:
        topics = parameter_value(sections, node_fqns[0], 'image_topics')
    if IfCondition(LaunchConfiguration('camera')).evaluate(context):
        actions.append(_image_source(context, namespace, params_file, camera_topic(topics)))
    _warn_about_namespaces(params_file, sections, node_fqns, namespace, topics)
    return actions


def _warn_about_namespaces(params_file: str, sections: dict[str, dict[str, Any]], node_fqns: list[str],
                           namespace: str, topics: Union[str, list[str], None]) -> None:
    """Warn once about params-file sections no node of this launch reads, and absolute topics under a namespace."""
    logger = get_logger('robovision.launch')
    unmatched = unmatched_sections(sections, node_fqns, namespace)
    if unmatched:
        logger.warning(unmatched_warning(params_file, unmatched, node_fqns))
    listed = [topics] if isinstance(topics, str) else topics if isinstance(topics, list) else []
    absolute = [t for t in listed if isinstance(t, str) and t.startswith('/')]
    if namespace != '/' and absolute:
        logger.warning(f'namespace {namespace}: image_topics {absolute} are absolute and stay outside the namespace '
                       '(shared with every robot); use relative names such as camera/image_raw')


def _activate_after_first_configure(node: LifecycleNode, condition: IfCondition) -> RegisterEventHandler:
    """
    Activate `node` when the configure the launch requested succeeds; never again after that.

    The handler unregisters on the first transition out of `configuring`: success (inactive) activates, a failed
    configure leaves the node to the operator. Later configures and deactivates are the operator's.
    """
    def on_configured(context: LaunchContext) -> list[Action]:
        if context.locals.event.goal_state == 'inactive':
            return [EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                transition_id=Transition.TRANSITION_ACTIVATE))]
        return [LogInfo(msg=f'autostart: configure of {node.node_name} ended in '
                            f"'{context.locals.event.goal_state}'; not activating")]

    return RegisterEventHandler(condition=condition, event_handler=OnStateTransition(
        target_lifecycle_node=node, start_state='configuring', entities=[OpaqueFunction(function=on_configured)],
        handle_once=True))


def _image_source(context: LaunchContext, namespace: str, params_file: str, topic: str) -> Node:
    """
    image_source publishing `topic` (an Image topic, or a CompressedImage topic ending in /compressed).

    It reads the params file too (its own sections, `/**/image_source:`); the camera arguments override it.
    """
    if topic.rstrip('/').endswith('compressed'):
        raw = topic.rstrip('/')[:-len('compressed')].rstrip('/') or 'image_raw'
        remappings = [('image_raw', raw), ('image_raw/compressed', topic)]
    else:
        remappings = [('image_raw', topic)]
    try:
        rate_hz = float(LaunchConfiguration('camera_rate_hz').perform(context))
    except ValueError as error:
        raise LaunchArgumentError(f'camera_rate_hz: {error}') from error
    return Node(package='robovision_ros', executable='image_source', name='image_source', namespace=namespace,
                output='screen', remappings=remappings, parameters=[params_file, {
                    'source': ParameterValue(LaunchConfiguration('camera_source'), value_type=str),
                    'rate_hz': rate_hz,
                    'publish_compressed': topic.rstrip('/').endswith('compressed'),
                }])


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory('robovision_ros')
    actions: list[Action] = [DeclareLaunchArgument(name, default_value=default, description=text)
                             for name, (default, text) in _arguments(share).items()]
    actions.append(SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', LaunchConfiguration('dds_profile')))
    actions.append(OpaqueFunction(function=_perception_actions))
    return LaunchDescription(actions)
