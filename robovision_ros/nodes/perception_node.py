# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The lifecycle of a perception node: load a model on configure, subscribe cameras on activate, publish outputs.

A subclass names its parameter table (`make_table`), its outputs (`OUTPUTS`) and one frame hook (`infer`: frames in,
messages and stage timings out); everything else lives here or in the modules this wires together: the parameters
(ros_parameters), the inference thread (frame_worker), camera liveness (camera_liveness), the health status
(health) and the process (node_process). Each transition is a short list its mirror transition undoes.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from robovision_ros.backends.base import BackendUnavailableError
from robovision_ros.backends.onnx_export import ExportError, abandon_partial_exports
from robovision_ros.encoder import PerceptionEncoder
from robovision_ros.model_files import ModelLoadError
from robovision_ros.nodes.camera_liveness import Camera, CameraLiveness, subscription_type
from robovision_ros.nodes.frame_worker import Frame, FrameWorker, RecentWindow
from robovision_ros.nodes.health import ERROR, OK, WARN, HealthInputs, node_health
from robovision_ros.nodes.ros_parameters import NodeParameters
from robovision_ros.parameters import ParameterError, ParameterTable, build_settings
from robovision_ros.image_codec import decode_image_msg
from robovision_ros.message_conversions import STANDARD_OUTPUTS_OFF, vision_msgs_available
from robovision_ros.preprocessing import PreprocessConfigError
from robovision_ros.settings import LoadSettings, SubscriptionSettings, WorkerSettings

# Failures a user causes (wrong model path, unsupported combination, a bad value): one line, no traceback.
LOAD_ERRORS = (ModelLoadError, BackendUnavailableError, ExportError, PreprocessConfigError, ParameterError, OSError,
               ValueError)
HEALTH_WINDOW_S = 10.0
_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


@dataclass
class FrameOutputs:
    """What one batch of frames produced: messages to publish (output name, message), in order, and stage times."""

    messages: list[tuple[str, Any]] = field(default_factory=list)
    preprocess_ms: float = 0.0
    inference_ms: float = 0.0
    postprocess_ms: float = 0.0


class PerceptionNode(LifecycleNode):
    """Base lifecycle node: camera frames in, one inference worker, outputs defined by the subclass."""

    OUTPUTS: dict[str, tuple[type, str, Any]] = {}  # output name -> (message type, topic, depth or QoSProfile)
    # The engine configure loads: an image encoder, or a detector (DetectorEncoder) with the same constructor.
    ENCODER: type = PerceptionEncoder

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._move_lifecycle_services()
        self.encoder: Optional[PerceptionEncoder] = None
        self._worker: Optional[FrameWorker] = None
        self._outputs: dict[str, Any] = {}
        self._cameras: list[Camera] = []
        self._diagnostics_pub: Any = None
        self._diagnostics_timer: Any = None
        self._transition: Optional[str] = None  # the transition running now, if any
        self._configured = False
        self._activated_at: Optional[float] = None
        self._health = RecentWindow(HEALTH_WINDOW_S)
        self._stall: Optional[str] = None
        self._liveness = CameraLiveness(self, self._log)
        # The vision_msgs equivalents of the outputs, where vision_msgs is installed (said once when it is not).
        self.standard_outputs = vision_msgs_available()
        self._said_standard_outputs_off = False
        self.parameters = NodeParameters(self, self.make_table(), self._fixed_lock, self._on_parameters)

    def _move_lifecycle_services(self) -> None:
        """
        Let lifecycle queries answer during a transition; transitions themselves stay one at a time.

        rclpy's LifecycleNode creates its services in the default (mutually exclusive) group and offers no way to
        choose another, so get_state would wait for a model load. The services' `callback_group` is reassigned
        here, before the node is added to an executor: the only way rclpy leaves to do it.
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
    @classmethod
    def make_table(cls) -> ParameterTable:
        """Return the node's parameter table (settings.py)."""
        raise NotImplementedError

    def prepare(self, values: dict[str, Any]) -> None:
        """After the model is loaded (configure), e.g. encode the vocabulary; may raise a load error."""

    def release(self) -> None:
        """Undo `prepare` (cleanup, shutdown and a failed configure)."""

    def apply_live(self, names: set[str], values: dict[str, Any]) -> None:
        """Apply live parameters after a successful set of `names`; `values` holds every parameter, validated."""

    def infer(self, frames: list[Frame], images: list[np.ndarray]) -> FrameOutputs:
        """Run one batch of decoded frames (worker thread): the messages to publish and the stage timings."""
        raise NotImplementedError

    def outputs(self) -> dict[str, tuple[type, str, Any]]:
        """Return the outputs configure creates (after the model loaded): name -> (message type, topic, QoS)."""
        return dict(self.OUTPUTS)

    def extra_diagnostics(self) -> dict[str, Any]:
        return {}

    def health_warnings(self) -> list[str]:
        """Return the node's own conditions /diagnostics reports as WARN while they last."""
        return []

    def output_wanted(self, name: str) -> bool:
        """Whether output `name` has a subscriber (an output costly to compute is built only then)."""
        publisher = self._outputs.get(name)
        return publisher is not None and publisher.get_subscription_count() > 0

    # --- parameters -----------------------------------------------------------------------------------------
    def _fixed_lock(self) -> Optional[str]:
        if self._transition is not None:
            return self._transition
        return 'configured' if self._configured else None

    def _on_parameters(self, names: set[str], values: dict[str, Any]) -> None:
        if self._worker is not None:
            self._worker.update_settings(build_settings(WorkerSettings, values))
        if self._configured:
            self.apply_live(names, values)

    # --- lifecycle ------------------------------------------------------------------------------------------
    def transition_in_progress(self) -> Optional[str]:
        """Return the lifecycle transition running now ('configuring', ...), or None (read on a signal)."""
        return self._transition

    def abandon_transition(self) -> None:
        """Remove what a transition was writing (a partial export): the process exits during it."""
        abandon_partial_exports()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._transition = 'configuring'
        model = self.get_parameter('model').value
        try:
            values = self.parameters.validated()
            load = LoadSettings.from_values(values)
            cache = Path(load.engine_cache_dir) if load.engine_cache_dir else None
            self.encoder = self.ENCODER(load.model, load.backend, load.device, load.precision, cache,
                                        int8_min_cosine=load.int8_min_cosine, options=load.backend_options)
            self.encoder.warm_up()
            if not self.standard_outputs and not self._said_standard_outputs_off:
                self._said_standard_outputs_off = True
                self.get_logger().info(STANDARD_OUTPUTS_OFF)
            self.prepare(values)
            for name, (msg_type, topic, qos) in self.outputs().items():
                self._outputs[name] = self.create_lifecycle_publisher(msg_type, topic, qos)
            self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
            self._diagnostics_timer = self.create_timer(1.0, self._on_timer)
            self._worker = FrameWorker(decode_image_msg, self._run_frames, self._frame_age_ms, self._log,
                                       build_settings(WorkerSettings, values))
            self._health = RecentWindow(HEALTH_WINDOW_S)
        except Exception as error:  # noqa: BLE001 - every failure: one line with the cause, everything released
            cause = str(error) if isinstance(error, LOAD_ERRORS) else f'{type(error).__name__}: {error}'
            if not isinstance(error, LOAD_ERRORS):
                self.get_logger().debug(traceback.format_exc())
            self.get_logger().error(f'configure failed for model {model!r}: {cause}')
            self._teardown()
            return TransitionCallbackReturn.FAILURE
        finally:
            self._transition = None
        self._configured = True
        backend = self.encoder.backend
        self.get_logger().info(f'configured {self.encoder.info.family} model {model!r} on {backend.name} '
                               f'{backend.device} {backend.precision}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self._worker is not None
        try:
            subscription = build_settings(SubscriptionSettings, self.parameters.values())
            qos = self._image_qos(subscription)
            for topic in subscription.image_topics:
                handle = self.create_subscription(subscription_type(topic), topic,
                                                  lambda msg, topic=topic: self._worker.submit(msg, topic), qos)
                self._cameras.append(Camera(topic, handle, qos.reliability))
        except Exception as error:  # noqa: BLE001 - a failed activation is logged with its cause and undone
            self.get_logger().error(f'activate failed: {type(error).__name__}: {error}')
            self._unsubscribe()
            return TransitionCallbackReturn.FAILURE
        self._worker.start()
        self._activated_at = time.monotonic()
        self._liveness.start(self._cameras, self._activated_at)
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

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f'a transition from {state.label} raised; releasing everything (unconfigured)')
        self._unsubscribe()
        self._teardown()
        return TransitionCallbackReturn.SUCCESS

    def stop(self) -> None:
        """Stop inference (worker threads) before the node or its context goes away, e.g. on Ctrl-C."""
        if self._worker is not None:
            self._worker.stop()
        self.release()

    def _unsubscribe(self) -> None:
        """Stop the inference thread, then the camera subscriptions."""
        if self._worker is not None:
            self._worker.stop()
        for camera in self._cameras:
            self.destroy_subscription(camera.subscription)
        self._cameras = []
        self._activated_at = None
        self._liveness.stop()

    def _teardown(self) -> None:
        """Release everything configure created (also after a configure that failed half-way)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        self.release()
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        if self.encoder is not None:
            self.encoder.close()
        self.encoder = None
        self._configured = False

    @staticmethod
    def _image_qos(settings: SubscriptionSettings) -> QoSProfile:
        if settings.qos == 'reliable':
            return QoSProfile(depth=settings.qos_depth, history=HistoryPolicy.KEEP_LAST,
                              reliability=ReliabilityPolicy.RELIABLE)
        return QoSProfile(depth=settings.qos_depth, history=HistoryPolicy.KEEP_LAST,
                          reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability)

    # --- hot path (on the worker thread) --------------------------------------------------------------------
    def _run_frames(self, frames: list[Frame], images: list[np.ndarray]) -> None:
        outputs = self.infer(frames, images)
        for name, msg in outputs.messages:
            self._outputs[name].publish(msg)
        stages = self._worker.stages if self._worker is not None else {}
        for stage, value in (('preprocess_ms', outputs.preprocess_ms), ('inference_ms', outputs.inference_ms),
                             ('postprocess_ms', outputs.postprocess_ms)):
            if stage in stages:
                stages[stage].add(value)

    def _log(self, level: str, message: str) -> None:
        # One call site per severity: rclpy refuses a call site whose severity changes between calls.
        logger = self.get_logger()
        if level == 'error':
            logger.error(message)
        elif level == 'warn':
            logger.warn(message)
        elif level == 'info':
            logger.info(message)
        else:
            logger.debug(message)

    def _frame_age_ms(self, msg: Any) -> Optional[float]:
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return None
        now = self.get_clock().now().nanoseconds
        return (now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6

    # --- liveness and diagnostics (executor, once a second) -------------------------------------------------
    def _on_timer(self) -> None:
        try:
            self._publish_diagnostics()
        except Exception as error:  # noqa: BLE001 - diagnostics must never take the node down
            self.get_logger().error(f'diagnostics failed: {type(error).__name__}: {error}',
                                    throttle_duration_sec=30.0)

    def _publish_diagnostics(self) -> None:
        worker, encoder = self._worker, self.encoder
        if self._diagnostics_pub is None or encoder is None or worker is None:
            return
        values = self.parameters.values()
        now = time.monotonic()
        silent = self._liveness.check(now, dict(worker.counters.last_arrival), values['camera_timeout_s'])
        counters = worker.counters.snapshot()
        recent = self._health.update(now, counters)
        window = max(min(self._health.seconds, now - (self._activated_at or now)), 1.0)
        health = node_health(HealthInputs(
            active=self._activated_at is not None, window_s=window, recent=recent, silent_cameras=tuple(silent),
            worker_failure=worker.failure, backend_health=encoder.backend.health(), last_error=worker.last_error or '',
            frame_age_p50_ms=worker.frame_age.percentiles()[0], max_frame_age_ms=values['max_frame_age_ms'],
            max_rate_hz=values['max_rate_hz'], stall_after_s=min(values['camera_timeout_s'], HEALTH_WINDOW_S),
            warnings=tuple(self.health_warnings())))
        self._report_stall(health.stall)
        report: dict[str, Any] = {
            'input_rate_hz': recent['frames_in'] / window, 'output_rate_hz': recent['frames_out'] / window,
            **counters, 'rejected_recent': recent['rejected_frames'], 'failed_recent': recent['failed_frames'],
            'last_error': worker.last_error or '', 'backend': encoder.backend.name, 'device': encoder.backend.device,
            'precision': encoder.backend.precision, 'engine_cache_key': encoder.backend.cache_key or '',
            'model': values['model'], 'silent_cameras': ', '.join(silent),
            'backend_health': encoder.backend.health() or 'ok', **self.extra_diagnostics()}
        for name, stats in list(worker.stages.items()) + [('frame_age_ms', worker.frame_age)]:
            p50, p95 = stats.percentiles()
            report[f'{name}_p50'], report[f'{name}_p95'] = round(p50, 3), round(p95, 3)
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: perception',
                                  level=_LEVELS[health.level], message=health.message,
                                  hardware_id=encoder.backend.device)
        status.values = [KeyValue(key=k, value=f'{v:.3f}' if isinstance(v, float) else str(v))
                         for k, v in report.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def _report_stall(self, stall: Optional[str]) -> None:
        """Log once when frames arrive but nothing is published (with why), and once when outputs flow again."""
        if stall is not None and self._stall is None:
            self.get_logger().warn(stall)
        elif stall is None and self._stall is not None:
            self.get_logger().info('publishing again')
        self._stall = stall
