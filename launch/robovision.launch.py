"""Start clip_perception and feature_extractor as lifecycle nodes and (by default) take them to active.

    ros2 launch robovision_ros robovision.launch.py image_topics:='["/camera/image_raw"]' backend:=onnxruntime
    ros2 launch robovision_ros robovision.launch.py autostart:=false   # leave unconfigured for a manager
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory('robovision_ros')
    arguments = {
        'params_file': (os.path.join(share, 'config', 'robovision.yaml'), 'Parameter file of both nodes.'),
        'image_topics': ('["/camera/image_raw"]', 'Camera topic(s), a YAML list.'),
        'clip_model': ('embedded:tiny_clip', 'Model of clip_perception.'),
        'feature_model': ('embedded:tiny_vit', 'Model of feature_extractor.'),
        'backend': ('auto', 'torch, onnxruntime, tensorrt or auto.'),
        'device': ('cpu', 'cpu or cuda.'),
        'precision': ('fp32', 'fp32, fp16, bf16 or int8.'),
        'autostart': ('true', 'Configure and activate the nodes; false leaves them to a lifecycle manager.'),
        'dds_profile': (os.path.join(share, 'config', 'fastdds_profile.xml'),
                        'Fast DDS profile with a shared-memory segment large enough for camera images.'),
    }
    actions = [DeclareLaunchArgument(name, default_value=default, description=text)
               for name, (default, text) in arguments.items()]
    actions.append(SetEnvironmentVariable('FASTDDS_DEFAULT_PROFILES_FILE', LaunchConfiguration('dds_profile')))
    autostart = IfCondition(LaunchConfiguration('autostart'))
    for name, model in (('clip_perception', 'clip_model'), ('feature_extractor', 'feature_model')):
        node = LifecycleNode(
            package='robovision_ros', executable=name, name=name, namespace='', output='screen',
            parameters=[LaunchConfiguration('params_file'), {
                'model': LaunchConfiguration(model),
                'image_topics': LaunchConfiguration('image_topics'),
                'backend': LaunchConfiguration('backend'),
                'device': LaunchConfiguration('device'),
                'precision': LaunchConfiguration('precision'),
            }])
        actions.append(node)
        actions.append(EmitEvent(condition=autostart, event=ChangeState(
            lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_CONFIGURE)))
        actions.append(RegisterEventHandler(condition=autostart, event_handler=OnStateTransition(
            target_lifecycle_node=node, goal_state='inactive',
            entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                  transition_id=Transition.TRANSITION_ACTIVATE))])))
    return LaunchDescription(actions)
