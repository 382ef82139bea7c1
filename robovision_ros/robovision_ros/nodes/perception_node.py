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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from robovision_ros.backends.base import BackendUnavailableError
from robovision_ros.backends.onnx_export import ExportError, abandon_partial_exports
from robovision_ros.encoder import PerceptionEncoder
from robovision_ros.model_files import ModelLoadError
from robovision_ros.nodes.camera_liveness import Camera, CameraLiveness, image_qos, subscription_type
from robovision_ros.nodes.diagnostics import NodeDiagnostics
from robovision_ros.nodes.frame_worker import Frame, FrameWorker, stamp_age_ms
from robovision_ros.nodes.node_process import answer_queries_during_transitions
from robovision_ros.nodes.ros_parameters import NodeParameters
from robovision_ros.parameters import ParameterError, ParameterTable, build_settings
from robovision_ros.image_codec import decode_image_msg
from robovision_ros.message_conversions import STANDARD_OUTPUTS_OFF, vision_msgs_available
from robovision_ros.preprocessing import PreprocessConfigError
from robovision_ros.process_memory import release_memory
from robovision_ros.settings import LoadSettings, SubscriptionSettings, WorkerSettings

# Batching is kept where the model's time per frame in a batch of all cameras is below this share of one at a time.
BATCH_GAIN = 0.95
# Failures a user causes (wrong model path, unsupported combination, a bad value): one line, no traceback.
LOAD_ERRORS = (ModelLoadError, BackendUnavailableError, ExportError, PreprocessConfigError, ParameterError, OSError,
               ValueError)


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
        answer_queries_during_transitions(self)
        self.encoder: Optional[PerceptionEncoder] = None
        self._batched: Optional[bool] = None  # whether batching pays (measured at configure; None: not asked for)
        # One worker (one inference thread) for the node's life: a decode still running after a stop finishes on
        # the same thread, and a restart reuses it, so there is never a second inference thread.
        self._worker = FrameWorker(decode_image_msg, self._run_frames,
                                   lambda msg: stamp_age_ms(msg.header.stamp, self.get_clock().now().nanoseconds),
                                   self._log)
        self._outputs: dict[str, Any] = {}
        self._cameras: list[Camera] = []
        self._diagnostics = NodeDiagnostics(self, self._log)
        self._diagnostics_timer: Any = None
        self._transition: Optional[str] = None  # the transition running now, if any
        self._configured = False
        self._activated_at: Optional[float] = None
        self._liveness = CameraLiveness(self, self._log)
        # The vision_msgs equivalents of the outputs, where vision_msgs is installed (said once when it is not).
        self.standard_outputs = vision_msgs_available()
        self._said_standard_outputs_off = False
        self.parameters = NodeParameters(self, self.make_table(), self._fixed_lock, self._on_parameters)

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
        self._worker.update_settings(self._worker_settings(values))
        if self._configured:
            self.apply_live(names, values)

    def _worker_settings(self, values: dict[str, Any]) -> WorkerSettings:
        """Return the worker's settings from parameter values, batching as configure chose (`_choose_batching`)."""
        settings = build_settings(WorkerSettings, values)
        return settings if self._batched is None else replace(settings, batch=self._batched)

    def _choose_batching(self, values: dict[str, Any]) -> Optional[bool]:
        """
        Warm the model up; with `batch` on and several cameras, measure whether batching pays here.

        Batching runs the newest frame of every camera in one inference; it only pays where the model's time per frame
        at that batch size is below its time one at a time (GPUs, OpenVINO on CPU; ONNX Runtime's dynamic int8 on 2
        cores barely). Where it does not, the node serves frames one at a time and says so: batching that is slower
        per frame only adds latency. Returns the choice (None: batch off or one camera, nothing to choose).
        """
        cameras = len(values['image_topics'])
        if not values['batch'] or cameras < 2:
            self.encoder.warm_up()
            return None
        per_frame = self.encoder.warm_up(iterations=3, batch_sizes=range(1, cameras + 1))
        single, batched = per_frame[1], per_frame[cameras]
        pays = batched < BATCH_GAIN * single
        choice = 'batching' if pays else \
            'serving frames one at a time (batching does not pay for this model and backend on this machine)'
        self.get_logger().info(f'batch: {cameras} frames in one inference took {batched:.1f} ms per frame, one at a '
                               f'time {single:.1f} ms: {choice}')
        return pays

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
            # The encoder nodes' input_mode (the detector has none: its model's own input only).
            encoder_options = {} if load.input_mode is None else {'input_mode': load.input_mode}
            self.encoder = self.ENCODER(load.model, load.backend, load.device, load.precision, cache,
                                        int8_min_cosine=load.int8_min_cosine, options=load.backend_options,
                                        **encoder_options)
            self._batched = self._choose_batching(values)
            release_memory()  # what loading and the int8 gate allocated once goes back to the system
            if not self.standard_outputs and not self._said_standard_outputs_off:
                self._said_standard_outputs_off = True
                self.get_logger().info(STANDARD_OUTPUTS_OFF)
            self.prepare(values)
            for name, (msg_type, topic, qos) in self.outputs().items():
                self._outputs[name] = self.create_lifecycle_publisher(msg_type, topic, qos)
            self._diagnostics.start()
            self._diagnostics_timer = self.create_timer(1.0, self._on_timer)
            self._worker.update_settings(self._worker_settings(values))
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
        notes = ''
        if self.get_parameter('backend').value == 'auto':
            notes += f' (backend auto: {backend.capabilities.auto_basis or "the lowest auto_rank installed"})'
        if backend.int8_accuracy is not None:
            notes += (f'; int8 accuracy gate passed: cosine to fp32 {backend.int8_accuracy.worst:.4f} >= '
                      f"{self.get_parameter('int8_min_cosine').value}")
        self.get_logger().info(f'configured {self.encoder.info.family} model {model!r} on {backend.name} '
                               f'{backend.device} {backend.precision}{notes}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            subscription = build_settings(SubscriptionSettings, self.parameters.values())
            qos = image_qos(subscription.qos, subscription.qos_depth)
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
        self._worker.stop()
        self.release()

    def _unsubscribe(self) -> None:
        """Stop the inference thread, then the camera subscriptions."""
        self._worker.stop()
        for camera in self._cameras:
            self.destroy_subscription(camera.subscription)
        self._cameras = []
        self._activated_at = None
        self._liveness.stop()

    def _teardown(self) -> None:
        """Release everything configure created (also after a configure that failed half-way)."""
        self._worker.stop()
        self.release()
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        self._diagnostics.stop()
        for publisher in self._outputs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._outputs = {}
        if self.encoder is not None:
            self.encoder.close()
        self.encoder = None
        self._batched = None
        self._configured = False

    # --- hot path (on the worker thread) --------------------------------------------------------------------
    def _run_frames(self, frames: list[Frame], images: list[np.ndarray]) -> None:
        outputs = self.infer(frames, images)
        for name, msg in outputs.messages:
            self._outputs[name].publish(msg)
        stages = self._worker.stages
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

    # --- liveness and diagnostics (executor, once a second: nodes/diagnostics.py) ---------------------------
    def _on_timer(self) -> None:
        worker, encoder = self._worker, self.encoder
        if encoder is None:
            return
        try:
            values = self.parameters.values()
            silent = self._liveness.check(time.monotonic(), dict(worker.counters.last_arrival),
                                          values['camera_timeout_s'])
            self._diagnostics.publish(worker, encoder.backend, values, silent, self._activated_at,
                                      self.health_warnings(), self.extra_diagnostics())
        except Exception as error:  # noqa: BLE001 - diagnostics must never take the node down
            self.get_logger().error(f'diagnostics failed: {type(error).__name__}: {error}',
                                    throttle_duration_sec=30.0)
