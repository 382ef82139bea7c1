# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Shared lifecycle machinery of the perception nodes.

Parameters, camera subscriptions, the frame worker, camera liveness and /diagnostics. Subclasses add their parameters
(`_declare_parameters`), outputs (`_create_outputs`, `_process`) and live settings (`_validate_live`, `_apply_live`).

The inference itself runs on a `FrameWorker` thread (nodes/frame_worker.py, no ROS); lifecycle queries
(get_state) and parameter services answer on their own callback groups, also while the model loads.
"""
from __future__ import annotations

import math
import re
import time
import traceback
from pathlib import Path
from typing import Any, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from robovision_ros.backends import BACKENDS, DEFAULT_INT8_MIN_COSINE, DEVICES, PRECISIONS, BackendUnavailableError, \
    TritonTarget, check_combination
from robovision_ros.backends.triton_backend import DEFAULT_TIMEOUT_MS, parse_url
from robovision_ros.encoder import PerceptionEncoder
from robovision_ros.image_codec import DEFAULT_MAX_IMAGE_PIXELS, decode_image_msg
from robovision_ros.model_dir import ModelLoadError
from robovision_ros.nodes.frame_worker import Frame, FrameWorker, RecentWindow, StageStats, WorkerSettings
from robovision_ros.nodes.node_process import run_node_process
from robovision_ros.backends.onnx_export import ExportError
from robovision_ros.preprocessing import PreprocessConfigError

FIXED_PARAMETERS = ('model', 'backend', 'device', 'precision', 'int8_min_cosine', 'engine_cache_dir', 'image_topics',
                    'qos', 'qos_depth', 'batch', 'triton_url', 'triton_model', 'triton_timeout_ms')
# Failures a user causes (wrong model path, unsupported combination): one line, no traceback.
LOAD_ERRORS = (ModelLoadError, BackendUnavailableError, ExportError, PreprocessConfigError, OSError, ValueError)
EXECUTORS = ('multi', 'single')
HEALTH_WINDOW_S = 10.0

__all__ = ['Frame', 'PerceptionNode', 'StageStats', 'make_executor', 'run_node']


class ConfigureError(ValueError):
    """A parameter value that makes configure fail (the reason is logged as given)."""


def _descriptor(description: str, read_only: bool = False, dynamic_typing: bool = False,
                **ranges: Any) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=description, read_only=read_only, dynamic_typing=dynamic_typing)
    if 'float_range' in ranges:
        low, high = ranges['float_range']
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
    if 'integer_range' in ranges:
        low, high = ranges['integer_range']
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    return descriptor


def string_list(value: Any, what: str, allow_empty: bool = False) -> list[str]:
    """
    Return a parameter value as a list of strings.

    Accepted: a string array, one string (a single entry), or an empty array of any type (`ros2 param set ...
    "[]"` sends an empty bool array). Raises ValueError with the reason.
    """
    if isinstance(value, str):
        if value.strip().startswith('[') and value.strip().endswith(']'):
            # `ros2 param set ... "[y, no]"`: YAML read a mix of strings and booleans, so the CLI sent the text.
            raise ValueError(f'{what}: {value!r} looks like a list whose entries YAML read as booleans or numbers; '
                             f"quote each entry: \"['y', 'no']\"")
        values = [value]
    elif isinstance(value, (list, tuple)) or hasattr(value, 'tolist'):
        values = list(value)
        if any(not isinstance(v, str) for v in values):
            raise ValueError(f"{what} must be strings; got {values!r}. Quote words YAML reads as booleans or "
                             f"numbers: \"['y', 'no', '42']\"")
    else:
        raise ValueError(f'{what} must be a string or a list of strings; got {value!r}')
    if not values and not allow_empty:
        raise ValueError(f'{what} must not be empty')
    return values


def _check_triton(url: Any, prefix: Any) -> Optional[str]:
    """Why the triton parameters cannot work (None: they can)."""
    if not isinstance(url, str) or not url.strip():
        return 'backend triton needs triton_url (e.g. localhost:8001 or grpc://gpu-server:8001)'
    try:
        parse_url(url)
    except ValueError as error:
        return str(error)
    if not isinstance(prefix, str) or not re.fullmatch(r'[A-Za-z0-9._-]*', prefix):
        return f"triton_model '{prefix}' is not a Triton model name (letters, digits, '.', '_', '-')"
    return None


def _finite(value: Any, name: str) -> Optional[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return f'{name} must be a finite number; got {value}'
    return None


class PerceptionNode(LifecycleNode):
    """Base lifecycle node: camera frames in, one inference worker, outputs defined by the subclass."""

    default_model = ''

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._move_lifecycle_services()
        fixed = ' Fixed while configured: cleanup, set, configure to change.'
        self.declare_parameter('model', self.default_model,
                               _descriptor('Model directory, hub id, or embedded:<name>.' + fixed))
        self.declare_parameter('backend', 'auto', _descriptor(f'One of {", ".join(BACKENDS)}.' + fixed))
        self.declare_parameter('device', 'cpu', _descriptor(f'One of {", ".join(DEVICES)}.' + fixed))
        self.declare_parameter('precision', 'fp32', _descriptor(f'One of {", ".join(PRECISIONS)}.' + fixed))
        self.declare_parameter('int8_min_cosine', DEFAULT_INT8_MIN_COSINE, _descriptor(
            'int8 accuracy gate: configure fails when the int8 engine agrees with fp32 less than this (cosine on '
            'built-in probe images).' + fixed, float_range=(0.0, 1.0)))
        self.declare_parameter('engine_cache_dir', '',
                               _descriptor('ONNX/TensorRT cache directory ("" = ~/.cache/robovision_ros).' + fixed))
        self.declare_parameter('triton_url', '', _descriptor(
            'backend triton: gRPC address of the Triton server, host:port or grpc://host:port (port 8001 if none). '
            'device is then cpu (preprocessing) and precision must be what the server runs.' + fixed))
        self.declare_parameter('triton_model', '', _descriptor(
            'backend triton: prefix of the served models <prefix>_image, <prefix>_text ("" = the model '
            "directory's name, as robovision_serve names them)." + fixed))
        self.declare_parameter('triton_timeout_ms', DEFAULT_TIMEOUT_MS, _descriptor(
            'backend triton: limit of each request to the server (ms); a frame that takes longer fails.' + fixed,
            integer_range=(1, 600000)))
        self.declare_parameter('image_topics', ['image_raw'], _descriptor(
            'Camera topic, or a list of them; a name ending in compressed is a CompressedImage.' + fixed,
            dynamic_typing=True))
        self.declare_parameter('qos', 'sensor_data',
                               _descriptor('Image subscription QoS: sensor_data or reliable.' + fixed))
        self.declare_parameter('qos_depth', 1, _descriptor('Image subscription depth.' + fixed,
                                                           integer_range=(1, 100)))
        self.declare_parameter('batch', False,
                               _descriptor('Run the newest frame of every camera in one inference.' + fixed))
        self.declare_parameter('executor', 'multi', _descriptor(
            'multi: lifecycle and parameter services answer while the model loads (default); single: one '
            'thread for all callbacks. Set at start only.', read_only=True))
        self.declare_parameter('max_rate_hz', 0.0, _descriptor('Process at most this many frames per second '
                                                               '(0 = as fast as possible).',
                                                               float_range=(0.0, 1000.0)))
        self.declare_parameter('max_frame_age_ms', 0.0,
                               _descriptor('Drop frames whose header stamp is older than this (0 = off).',
                                           float_range=(0.0, 60000.0)))
        self.declare_parameter('max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS, _descriptor(
            'Reject frames with more pixels than this (raw, or as a compressed header claims) before decoding.',
            integer_range=(1, 1 << 30)))
        self.declare_parameter('camera_timeout_s', 5.0, _descriptor(
            'Warn (log and /diagnostics) when an active node got no frame from a camera for this long (0 = off).',
            float_range=(0.0, 3600.0)))
        self.encoder: Optional[PerceptionEncoder] = None
        self._worker: Optional[FrameWorker] = None
        self._image_subscriptions: list[Any] = []
        self._diagnostics_pub: Any = None
        self._diagnostics_timer: Any = None
        self._configuring = False
        self._activated_at: Optional[float] = None
        self._silent_topics: set[str] = set()
        self._health = RecentWindow(HEALTH_WINDOW_S)
        self._declare_parameters()
        # Registered after every declaration: values given at start are validated by configure (a bad one fails
        # configure with the reason) instead of ending the process with a traceback during declaration.
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

    def _move_lifecycle_services(self) -> None:
        """
        Let lifecycle queries answer during a transition; transitions themselves stay one at a time.

        get_state reports 'configuring' while the model loads. rclpy's LifecycleNode puts all of them in the default
        group.
        """
        queries = ReentrantCallbackGroup()
        transitions = MutuallyExclusiveCallbackGroup()
        for service, group in ((self._service_change_state, transitions), (self._service_get_state, queries),
                               (self._service_get_available_states, queries),
                               (self._service_get_available_transitions, queries),
                               (self._service_get_transition_graph, queries)):
            service.callback_group = group
            group.add_entity(service)

    # --- subclass hooks -------------------------------------------------------------------------------------
    def _declare_parameters(self) -> None:
        """Declare the subclass's parameters (called before the parameter callbacks are registered)."""

    def _create_outputs(self) -> None:
        raise NotImplementedError

    def _destroy_outputs(self) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        """After the model is loaded (on configure): e.g. encode the vocabulary. May raise a load error."""

    def _release(self) -> None:
        """Undo `_prepare` (on cleanup, shutdown and a failed configure)."""

    def _process(self, frames: list[Frame], images: list[np.ndarray], received: list[float]) -> None:
        raise NotImplementedError

    def _validate_live(self, values: dict[str, Any], names: set[str]) -> Optional[str]:
        """
        Validate the subclass's parameters among `names`; return a reason to reject, or None.

        `values` holds every parameter as it will be after this set. A value that is wrong but not being set does not
        block other sets.
        """
        return None

    def _apply_live(self, names: set[str]) -> None:
        """Apply live parameters after a successful set of `names` (read them with `_param`)."""

    # --- parameters ---------------------------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def image_topics(self) -> list[str]:
        return string_list(self._param('image_topics'), 'image_topics')

    def _values_after(self, params: list[Any]) -> dict[str, Any]:
        """Every parameter's value as it will be if `params` are accepted."""
        values = {name: self.get_parameter(name).value for name in self._parameters}
        values.update({p.name: p.value for p in params})
        return values

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        try:
            reason = self._check_parameters(params)
        except Exception as error:  # noqa: BLE001 - a parameter callback must answer, never raise
            reason = f'could not validate: {type(error).__name__}: {error}'
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _check_parameters(self, params: list[Any]) -> Optional[str]:
        if self._configuring or self.encoder is not None:
            fixed = [p.name for p in params if p.name in FIXED_PARAMETERS]
            if fixed:
                state = 'configuring' if self._configuring else 'configured'
                return f'{", ".join(fixed)} cannot change while {state}; cleanup, set, then configure'
        return self._check_values(self._values_after(params), {p.name for p in params})

    def _check_values(self, values: dict[str, Any], names: set[str]) -> Optional[str]:
        """Check `values` (all parameters) where `names` changed; the reason to reject, or None."""
        checks = {'backend': BACKENDS, 'device': DEVICES, 'precision': PRECISIONS,
                  'qos': ('sensor_data', 'reliable'), 'executor': EXECUTORS}
        for name in names:
            if name in checks and values[name] not in checks[name]:
                return f"{name} '{values[name]}' not supported; supported: {', '.join(checks[name])}"
            problem = _finite(values[name], name)
            if problem:
                return problem
        if names & {'backend', 'device', 'precision'}:
            reason = check_combination(values['backend'], values['device'], values['precision'])
            if reason:
                return reason
        if values['backend'] == 'triton' and names & {'backend', 'triton_url', 'triton_model'}:
            reason = _check_triton(values['triton_url'], values['triton_model'])
            if reason:
                return reason
        if 'image_topics' in names:
            try:
                topics = string_list(values['image_topics'], 'image_topics')
            except ValueError as error:
                return str(error)
            if any(not t.strip() or ' ' in t.strip() for t in topics):
                return f'image_topics must be topic names without blanks; got {topics!r}'
            if len(set(topics)) != len(topics):
                return f'image_topics must be unique; got {topics!r}'
        return self._validate_live(values, names) if names else None

    def _after_set_parameters(self, params: list[Any]) -> None:
        names = {p.name for p in params}
        if self._worker is not None:
            self._worker.update_settings(self._worker_settings())
        self._apply_live(names)

    def _worker_settings(self) -> WorkerSettings:
        return WorkerSettings(batch=bool(self._param('batch')), max_rate_hz=float(self._param('max_rate_hz')),
                              max_frame_age_ms=float(self._param('max_frame_age_ms')),
                              max_image_pixels=int(self._param('max_image_pixels')))

    # --- lifecycle ------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        model = self._param('model')
        self._configuring = True
        try:
            reason = self._check_values(self._values_after([]), set(self._parameters))
            if reason:
                raise ConfigureError(reason)
            cache = self._param('engine_cache_dir') or None
            triton = TritonTarget(self._param('triton_url'), self._param('triton_model'),
                                  int(self._param('triton_timeout_ms'))) if self._param('backend') == 'triton' else None
            self.encoder = PerceptionEncoder(model, self._param('backend'), self._param('device'),
                                             self._param('precision'), Path(cache) if cache else None,
                                             int8_min_cosine=float(self._param('int8_min_cosine')), triton=triton)
            self.encoder.warm_up()
            self._prepare()
            self._create_outputs()
            self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
            self._diagnostics_timer = self.create_timer(1.0, self._on_timer)
            self._worker = FrameWorker(self._decode, self._run_process, self._frame_age_ms, self._log,
                                       self._worker_settings())
            self._health = RecentWindow(HEALTH_WINDOW_S)
        except Exception as error:  # noqa: BLE001 - every failure: one line with the cause, everything released
            if isinstance(error, LOAD_ERRORS):
                cause = str(error)
            else:
                cause = f'{type(error).__name__}: {error}'
                self.get_logger().debug(traceback.format_exc())
            self.get_logger().error(f'configure failed for model {model!r}: {cause}')
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        finally:
            self._configuring = False
        self.get_logger().info(
            f'configured {self.encoder.info.model_type} model {model!r} on {self.encoder.backend.name} '
            f'{self.encoder.backend.device} {self.encoder.backend.precision}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self._worker is not None
        qos = self._image_qos()
        for topic in self.image_topics():
            msg_type = CompressedImage if topic.rstrip('/').endswith('compressed') else Image
            self._image_subscriptions.append(self.create_subscription(
                msg_type, topic, lambda msg, topic=topic: self._worker.submit(msg, topic), qos))
        self._worker.start()
        self._activated_at = time.monotonic()
        self._silent_topics = set()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def stop(self) -> None:
        """Stop inference (worker threads) before the node or its context goes away, e.g. on Ctrl-C."""
        if self._worker is not None:
            self._worker.stop()
        self._release()

    def _unsubscribe(self) -> None:
        """Stop the inference thread, then the camera subscriptions."""
        if self._worker is not None:
            self._worker.stop()
        for subscription in self._image_subscriptions:
            self.destroy_subscription(subscription)
        self._image_subscriptions = []
        self._activated_at = None

    def _teardown(self) -> None:
        """Release everything configure created (also after a configure that failed half-way)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self._release()
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        self._destroy_outputs()
        if self.encoder is not None:
            self.encoder.close()
        self.encoder = None

    def _image_qos(self) -> QoSProfile:
        depth = int(self._param('qos_depth'))
        if self._param('qos') == 'reliable':
            return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
        return QoSProfile(depth=depth, history=HistoryPolicy.KEEP_LAST,
                          reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability)

    # --- hot path (on the worker thread) --------------------------------------------------------------------
    @property
    def stages(self) -> dict[str, StageStats]:
        assert self._worker is not None
        return self._worker.stages

    @staticmethod
    def _decode(msg: Any, max_pixels: int) -> np.ndarray:
        return decode_image_msg(msg, max_pixels=max_pixels)

    def _run_process(self, frames: list[Frame], images: list[np.ndarray]) -> None:
        self._process(frames, images, [f.arrival for f in frames])

    def _log(self, level: str, message: str) -> None:
        getattr(self.get_logger(), level)(message)

    def _frame_age_ms(self, msg: Any) -> Optional[float]:
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return None
        now = self.get_clock().now().nanoseconds
        return (now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6

    # --- liveness and diagnostics ---------------------------------------------------------------------------
    def _on_timer(self) -> None:
        try:
            silent = self._check_cameras()
            self._publish_diagnostics(silent)
        except Exception as error:  # noqa: BLE001 - diagnostics must never take the node down
            self.get_logger().error(f'diagnostics failed: {type(error).__name__}: {error}',
                                    throttle_duration_sec=30.0)

    def _check_cameras(self) -> list[str]:
        """Topics an active node got no frame from for camera_timeout_s; each silence is logged once."""
        timeout = float(self._param('camera_timeout_s'))
        if self._activated_at is None or self._worker is None or timeout <= 0:
            return []
        now = time.monotonic()
        last_arrival = dict(self._worker.counters.last_arrival)
        silent = []
        for subscription in self._image_subscriptions:
            topic = subscription.topic_name
            last = max(self._activated_at, last_arrival.get(self._subscribed_name(subscription), 0.0))
            if now - last < timeout:
                self._silent_topics.discard(topic)
                continue
            silent.append(topic)
            if topic not in self._silent_topics:
                self._silent_topics.add(topic)
                self.get_logger().warn(self._describe_silence(subscription, now - last))
        return silent

    def _subscribed_name(self, subscription: Any) -> str:
        """Return the name the worker counts a subscription's frames under (the parameter's spelling)."""
        topics = self.image_topics()
        index = self._image_subscriptions.index(subscription)
        return topics[index] if index < len(topics) else subscription.topic_name

    def _describe_silence(self, subscription: Any, seconds: float) -> str:
        """Why a camera may be silent: no publisher, a publisher of another type, or a QoS mismatch."""
        topic = subscription.topic_name
        wanted = 'sensor_msgs/msg/CompressedImage' if subscription.msg_type is CompressedImage \
            else 'sensor_msgs/msg/Image'
        infos = self.get_publishers_info_by_topic(topic)
        head = f'no frame on {topic} for {seconds:.0f} s'
        if not infos:
            others = sorted(name for name, types in self.get_topic_names_and_types()
                            if any(t in ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage') for t in types))
            seen = f'; image topics in the graph: {", ".join(others)}' if others else '; no image topic in the graph'
            return f'{head}: no publisher{seen} (remap with image_topics:=<topic>)'
        types = sorted({info.topic_type for info in infos})
        if types != [wanted]:
            return (f'{head}: {len(infos)} publisher(s) of type {", ".join(types)}; this node subscribes {wanted} '
                    "(a topic name ending in 'compressed' is read as CompressedImage)")
        ours = self._image_qos().reliability
        best_effort_only = [i for i in infos if i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT]
        if ours == ReliabilityPolicy.RELIABLE and best_effort_only:
            return (f'{head}: {len(best_effort_only)} of {len(infos)} publisher(s) are best effort and this node '
                    'subscribes reliable: QoS mismatch (set qos:=sensor_data)')
        return f'{head}: {len(infos)} publisher(s) of {wanted} with compatible QoS, but nothing arrived'

    def _publish_diagnostics(self, silent: list[str]) -> None:
        if self._diagnostics_pub is None or self.encoder is None or self._worker is None:
            return
        worker = self._worker
        counters = worker.counters.snapshot()
        recent = self._health.update(time.monotonic(), counters)
        window = max(min(self._health.seconds, time.monotonic() - (self._activated_at or time.monotonic())), 1.0)
        values: dict[str, Any] = {
            'input_rate_hz': recent['frames_in'] / window, 'output_rate_hz': recent['frames_out'] / window,
            **counters,
            'rejected_recent': recent['rejected_frames'], 'failed_recent': recent['failed_frames'],
            'last_error': worker.last_error or '',
            'backend': self.encoder.backend.name, 'device': self.encoder.backend.device,
            'precision': self.encoder.backend.precision,
            'engine_cache_key': self.encoder.backend.cache_key or '',
            'model': self._param('model'), 'silent_cameras': ', '.join(silent),
        }
        for name, stats in list(worker.stages.items()) + [('frame_age_ms', worker.frame_age)]:
            p50, p95 = stats.percentiles()
            values[f'{name}_p50'] = round(p50, 3)
            values[f'{name}_p95'] = round(p95, 3)
        health = self.encoder.backend.health()
        values['backend_health'] = health or 'ok'
        values.update(self._extra_diagnostics())
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: perception',
                                  hardware_id=self.encoder.backend.device)
        active = self._activated_at is not None
        status.level, status.message = DiagnosticStatus.OK, 'active' if active else 'inactive'
        if active and worker.failure is not None:
            status.level, status.message = DiagnosticStatus.ERROR, f'inference thread stopped: {worker.failure}'
        elif active and health is not None:
            status.level, status.message = DiagnosticStatus.ERROR, health
        elif active and silent:
            status.level, status.message = DiagnosticStatus.WARN, f'no frames from {", ".join(silent)}'
        elif active and (recent['rejected_frames'] or recent['failed_frames']):
            status.level = DiagnosticStatus.WARN
            status.message = (f'{recent["rejected_frames"]} rejected, {recent["failed_frames"]} failed frames in the '
                              f'last {self._health.seconds:.0f} s: {worker.last_error}')
        status.values = [KeyValue(key=k, value=f'{v:.3f}' if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def _extra_diagnostics(self) -> dict[str, Any]:
        return {}


def make_executor(kind: str) -> Any:
    """
    Make the executor that runs the node's callbacks (inference has its own thread in any case).

    multi (default): a MultiThreadedExecutor, so that lifecycle queries and parameter services answer while
    a transition (loading a model) runs; single: SingleThreadedExecutor. Chosen with the node's read-only
    `executor` parameter. (rclpy's experimental EventsExecutor is not offered: in a trial here the lifecycle
    services of a node spun by it did not answer.)
    """
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    if kind == 'multi':
        return MultiThreadedExecutor(num_threads=3)
    if kind == 'single':
        return SingleThreadedExecutor()
    raise ValueError(f"executor '{kind}' not supported; supported: {', '.join(EXECUTORS)}")


def run_node(node_class: type, args: Optional[list[str]] = None) -> int:
    """
    Spin a perception node until Ctrl-C, SIGTERM or shutdown, on the executor its `executor` parameter names.

    Its worker threads stop before the context goes (see nodes/node_process.py).
    """
    return run_node_process(node_class.__name__, node_class, args,
                            lambda node: make_executor(node.get_parameter('executor').value),
                            lambda node: node.stop())
