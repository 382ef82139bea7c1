# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Start clip_perception and feature_extractor as lifecycle nodes and (by default) take them to active once.

    ros2 launch robovision_ros robovision.launch.py camera:=true                      # bag-less demo
    ros2 launch robovision_ros robovision.launch.py image_topics:=/camera/image_raw backend:=onnxruntime
    ros2 launch robovision_ros robovision.launch.py image_topics:='["/cam1/image_raw", "/cam2/image_raw"]'
    ros2 launch robovision_ros robovision.launch.py params_file:=my.yaml            # my.yaml decides everything
    ros2 launch robovision_ros robovision.launch.py autostart:=false                 # leave them to a manager
    ros2 launch robovision_ros robovision.launch.py camera:=true detector:=true       # open_vocab_detector too

Parameters come from `params_file` (default config/robovision.yaml). The arguments image_topics, clip_model,
feature_model, backend, device and precision override the file only when given; left empty (the default) the
file's value holds.

autostart:=true configures both nodes and activates each one once, after that first configure succeeds. From
then on the lifecycle belongs to the operator: `ros2 lifecycle set /clip_perception deactivate` stays inactive.

camera:=true also starts image_source (generated scenes, or `camera_source:=` a folder or video), publishing on
the first of the perception nodes' image_topics, so the demo is wired whatever the topic is.
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
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue
from lifecycle_msgs.msg import Transition

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
        'image_topics': ('', 'Camera topic (/camera/image_raw) or a YAML list of topics '
                             '(\'["/cam1/image_raw", "/cam2/image_raw"]\').' + not_given),
        'clip_model': ('', 'Model of clip_perception (directory, hub id or embedded:<name>).' + not_given),
        'feature_model': ('', 'Model of feature_extractor.' + not_given),
        'detector': ('false', 'Also start open_vocab_detector (boxes for every instance of every query).'),
        'detector_model': ('', 'Model of open_vocab_detector (an OWL-ViT or OWLv2 directory, hub id or '
                               'embedded:<name>).' + not_given),
        'backend': ('', 'torch, onnxruntime, tensorrt or auto.' + not_given),
        'device': ('', 'cpu or cuda.' + not_given),
        'precision': ('', 'fp32, fp16, bf16 or int8.' + not_given),
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


def params_file_value(params_file: str, node_name: str, key: str) -> Any:
    """
    Return the value a params file gives `key` of node `node_name` (None if it gives none).

    Reads the top-level sections a launch params file can have for a node in the root namespace: `/**`, `**`,
    `node_name` and `/node_name`; the more specific section wins, as in rcl.
    """
    try:
        with open(params_file, encoding='utf-8') as stream:
            content = yaml.safe_load(stream) or {}
    except (OSError, yaml.YAMLError) as error:
        raise LaunchArgumentError(f'params_file {params_file!r} cannot be read: {error}') from error
    value = None
    for section in ('/**', '**', node_name, f'/{node_name}'):
        parameters = (content.get(section) or {}).get('ros__parameters') or {}
        if key in parameters:
            value = parameters[key]
    return value


def camera_topic(topics: Union[str, list[str], None]) -> str:
    """Return the topic image_source publishes on: the (first) topic the perception nodes subscribe to."""
    if topics is None:
        topics = NODE_DEFAULT_TOPICS
    return topics if isinstance(topics, str) else topics[0]


def _given(context: LaunchContext, name: str) -> Optional[str]:
    value = context.launch_configurations.get(name, '').strip()
    return value or None


def _perception_actions(context: LaunchContext) -> list[Action]:
    """Return the perception nodes with their overrides, their autostart, and (camera:=true) image_source."""
    params_file = LaunchConfiguration('params_file').perform(context)
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
        node = LifecycleNode(package='robovision_ros', executable=name, name=name, namespace='', output='screen',
                             parameters=[params_file] + ([overrides] if overrides else []))
        configure = EmitEvent(condition=autostart, event=ChangeState(
            lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_CONFIGURE))
        actions += [node, _activate_after_first_configure(node, autostart), configure]

    if IfCondition(LaunchConfiguration('camera')).evaluate(context):
        if topics is None:
            topics = params_file_value(params_file, 'clip_perception', 'image_topics')
        actions.append(_image_source(context, camera_topic(topics)))
    return actions


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


def _image_source(context: LaunchContext, topic: str) -> Node:
    """image_source publishing `topic` (an Image topic, or a CompressedImage topic ending in /compressed)."""
    if topic.rstrip('/').endswith('compressed'):
        raw = topic.rstrip('/')[:-len('compressed')].rstrip('/') or 'image_raw'
        remappings = [('image_raw', raw), ('image_raw/compressed', topic)]
    else:
        remappings = [('image_raw', topic)]
    try:
        rate_hz = float(LaunchConfiguration('camera_rate_hz').perform(context))
    except ValueError as error:
        raise LaunchArgumentError(f'camera_rate_hz: {error}') from error
    return Node(package='robovision_ros', executable='image_source', name='image_source', namespace='',
                output='screen', remappings=remappings, parameters=[{
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
