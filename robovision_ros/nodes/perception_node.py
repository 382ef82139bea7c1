"""Shared lifecycle machinery of the perception nodes: parameters, camera subscriptions, the newest-frame
mailbox and inference worker, and /diagnostics. Subclasses add their outputs (`_create_outputs`,
`_process`) and live parameters (`_validate_live`, `_apply_live`).
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from robovision_ros.backends import BACKENDS, DEVICES, PRECISIONS, BackendUnavailableError
from robovision_ros.encoder import PerceptionEncoder
from robovision_ros.models import ModelLoadError
from robovision_ros.onnx_export import ExportError
from robovision_ros.preprocessing import ImageDecodeError, PreprocessConfigError, decode_image_msg

FIXED_PARAMETERS = ('model', 'backend', 'device', 'precision', 'engine_cache_dir', 'image_topics', 'qos',
                    'qos_depth', 'batch')
LOAD_ERRORS = (ModelLoadError, BackendUnavailableError, ExportError, PreprocessConfigError, OSError)


@dataclass
class Frame:
    msg: Any
    topic: str
    arrival: float  # time.monotonic() at arrival


class StageStats:
    """Rolling latency samples of one stage (last 200 frames)."""

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=200)

    def add(self, value: float) -> None:
        self.samples.append(value)

    def percentiles(self) -> tuple[float, float]:
        if not self.samples:
            return (0.0, 0.0)
        p50, p95 = np.percentile(np.fromiter(self.samples, float), (50, 95))
        return (float(p50), float(p95))


def _descriptor(description: str, read_only: bool = False, **ranges: Any) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if 'float_range' in ranges:
        low, high = ranges['float_range']
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
    if 'integer_range' in ranges:
        low, high = ranges['integer_range']
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    return descriptor


class PerceptionNode(LifecycleNode):
    """Base lifecycle node: camera frames in, one inference worker, outputs defined by the subclass."""

    default_model = ''

    def __init__(self, node_name: str, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        fixed = ' Fixed while configured: cleanup, set, configure to change.'
        self.declare_parameter('model', self.default_model,
                               _descriptor('Model directory, hub id, or embedded:<name>.' + fixed))
        self.declare_parameter('backend', 'auto', _descriptor(f'One of {", ".join(BACKENDS)}.' + fixed))
        self.declare_parameter('device', 'cpu', _descriptor(f'One of {", ".join(DEVICES)}.' + fixed))
        self.declare_parameter('precision', 'fp32', _descriptor(f'One of {", ".join(PRECISIONS)}.' + fixed))
        self.declare_parameter('engine_cache_dir', '',
                               _descriptor('ONNX/TensorRT cache directory ("" = ~/.cache/robovision_ros).' + fixed))
        self.declare_parameter('image_topics', ['image_raw'],
                               _descriptor('Camera topics; a name ending in /compressed is a CompressedImage.'
                                           + fixed))
        self.declare_parameter('qos', 'sensor_data',
                               _descriptor('Image subscription QoS: sensor_data or reliable.' + fixed))
        self.declare_parameter('qos_depth', 1, _descriptor('Image subscription depth.' + fixed,
                                                           integer_range=(1, 100)))
        self.declare_parameter('batch', False,
                               _descriptor('Run the newest frame of every camera in one inference.' + fixed))
        self.declare_parameter('max_rate_hz', 0.0, _descriptor('Process at most this many frames per second '
                                                               '(0 = as fast as possible).',
                                                               float_range=(0.0, 1000.0)))
        self.declare_parameter('max_frame_age_ms', 0.0,
                               _descriptor('Drop frames whose header stamp is older than this (0 = off).',
                                           float_range=(0.0, 60000.0)))
        self.encoder: Optional[PerceptionEncoder] = None
        self._image_subscriptions: list[Any] = []
        self._mailbox: dict[str, Frame] = {}
        self._mailbox_cv = threading.Condition()
        self._worker: Optional[threading.Thread] = None
        self._running = False
        self._diagnostics_pub: Any = None
        self._diagnostics_timer: Any = None
        self._reset_counters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self.add_post_set_parameters_callback(self._after_set_parameters)

    # --- subclass hooks -------------------------------------------------------------------------------------
    def _create_outputs(self) -> None:
        raise NotImplementedError

    def _destroy_outputs(self) -> None:
        raise NotImplementedError

    def _prepare(self) -> None:
        """After the model is loaded (on configure): e.g. encode the vocabulary. May raise a load error."""

    def _process(self, frames: list[Frame], images: list[np.ndarray], received: list[float]) -> None:
        raise NotImplementedError

    def _validate_live(self, params: dict[str, Any]) -> Optional[str]:
        """Validate live parameters (name -> value); return a reason to reject, or None."""
        return None

    def _apply_live(self, params: dict[str, Any]) -> None:
        """Apply live parameters after a successful set."""

    # --- parameters ---------------------------------------------------------------------------------------
    def _param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def _on_set_parameters(self, params: list[Any]) -> SetParametersResult:
        if self.encoder is not None:
            fixed = [p.name for p in params if p.name in FIXED_PARAMETERS]
            if fixed:
                return SetParametersResult(
                    successful=False,
                    reason=f'{", ".join(fixed)} cannot change while configured; cleanup, set, then configure')
        checks = {'backend': BACKENDS, 'device': DEVICES, 'precision': PRECISIONS,
                  'qos': ('sensor_data', 'reliable')}
        for p in params:
            if p.name in checks and p.value not in checks[p.name]:
                return SetParametersResult(
                    successful=False, reason=f"{p.name} '{p.value}' not supported; supported: "
                                             f"{', '.join(checks[p.name])}")
            if p.name == 'image_topics' and (not p.value or any(not t.strip() for t in p.value)):
                return SetParametersResult(successful=False, reason='image_topics must list at least one topic')
        reason = self._validate_live({p.name: p.value for p in params})
        if reason:
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _after_set_parameters(self, params: list[Any]) -> None:
        self._apply_live({p.name: p.value for p in params})

    # --- lifecycle ------------------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        model = self._param('model')
        try:
            cache = self._param('engine_cache_dir') or None
            self.encoder = PerceptionEncoder(model, self._param('backend'), self._param('device'),
                                             self._param('precision'), Path(cache) if cache else None)
            self.encoder.warm_up()
            self._prepare()
        except LOAD_ERRORS + (ValueError,) as error:
            self.get_logger().error(f'configure failed for model {model!r}: {error}')
            self._release_model()
            return TransitionCallbackReturn.FAILURE
        self._create_outputs()
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._diagnostics_timer = self.create_timer(1.0, self._publish_diagnostics)
        self._reset_counters()
        self.get_logger().info(
            f'configured {self.encoder.info.model_type} model {model!r} on {self.encoder.backend.name} '
            f'{self.encoder.backend.device} {self.encoder.backend.precision}')
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        qos = self._image_qos()
        for topic in self._param('image_topics'):
            msg_type = CompressedImage if topic.rstrip('/').endswith('compressed') else Image
            self._image_subscriptions.append(self.create_subscription(
                msg_type, topic, lambda msg, topic=topic: self._on_image(msg, topic), qos))
        self._running = True
        self._worker = threading.Thread(target=self._work, name='inference', daemon=True)
        self._worker.start()
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

    def _unsubscribe(self) -> None:
        """Stop the inference thread, then the camera subscriptions."""
        self._stop_worker()
        for subscription in self._image_subscriptions:
            self.destroy_subscription(subscription)
        self._image_subscriptions = []

    def _teardown(self) -> None:
        if self._diagnostics_timer is not None:
            self.destroy_timer(self._diagnostics_timer)
            self._diagnostics_timer = None
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
            self._diagnostics_pub = None
        if self.encoder is not None:
            self._destroy_outputs()
        self._release_model()

    def _release_model(self) -> None:
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

    # --- hot path -------------------------------------------------------------------------------------------
    def _on_image(self, msg: Any, topic: str) -> None:
        with self._mailbox_cv:
            self.frames_in += 1
            if topic in self._mailbox:
                self.frames_dropped_busy += 1  # a newer frame replaces one never processed
            self._mailbox[topic] = Frame(msg, topic, time.monotonic())
            self._mailbox_cv.notify()

    def _take_frames(self) -> list[Frame]:
        with self._mailbox_cv:
            while self._running and not self._mailbox:
                self._mailbox_cv.wait(timeout=0.2)
            if not self._running:
                return []
            if self._param('batch'):
                frames = list(self._mailbox.values())
                self._mailbox.clear()
            else:  # oldest-arrived camera first, one frame per inference
                topic = min(self._mailbox, key=lambda t: self._mailbox[t].arrival)
                frames = [self._mailbox.pop(topic)]
            return frames

    def _work(self) -> None:
        last = 0.0
        while self._running:
            frames = self._take_frames()
            if not frames:
                continue
            rate = float(self._param('max_rate_hz'))
            if rate > 0 and time.monotonic() - last < 1.0 / rate:
                self.frames_dropped_rate += len(frames)
                continue
            last = time.monotonic()
            fresh, images = [], []
            for frame in frames:
                age_ms = self._frame_age_ms(frame.msg)
                if age_ms is not None:
                    self.frame_age.add(age_ms)
                limit = float(self._param('max_frame_age_ms'))
                if limit > 0 and age_ms is not None and age_ms > limit:
                    self.frames_dropped_age += 1
                    continue
                try:
                    images.append(decode_image_msg(frame.msg))
                    fresh.append(frame)
                except ImageDecodeError as error:
                    self.frames_bad += 1
                    self.get_logger().error(f'frame from {frame.topic} rejected: {error}',
                                            throttle_duration_sec=5.0)
            if fresh:
                try:
                    self._process(fresh, images, [f.arrival for f in fresh])
                    self.frames_out += len(fresh)
                except (ValueError, RuntimeError) as error:
                    self.frames_bad += len(fresh)
                    self.get_logger().error(f'inference failed: {error}', throttle_duration_sec=5.0)
                except Exception:  # noqa: BLE001 - an unexpected error must not end the inference thread silently
                    self.frames_bad += len(fresh)
                    self.get_logger().error(f'unexpected error in inference:\n{traceback.format_exc()}',
                                            throttle_duration_sec=5.0)

    def _frame_age_ms(self, msg: Any) -> Optional[float]:
        stamp = msg.header.stamp
        if stamp.sec == 0 and stamp.nanosec == 0:
            return None
        now = self.get_clock().now().nanoseconds
        return (now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6

    def _stop_worker(self) -> None:
        self._running = False
        with self._mailbox_cv:
            self._mailbox_cv.notify_all()
            self._mailbox.clear()
        if self._worker is not None:
            self._worker.join(timeout=30.0)
        self._worker = None

    # --- diagnostics ----------------------------------------------------------------------------------------
    def _reset_counters(self) -> None:
        self.frames_in = self.frames_out = 0
        self.frames_dropped_busy = self.frames_dropped_age = self.frames_dropped_rate = self.frames_bad = 0
        self.stages = {'preprocess_ms': StageStats(), 'inference_ms': StageStats(), 'postprocess_ms': StageStats()}
        self.frame_age = StageStats()
        self._last_diag = (time.monotonic(), 0, 0)

    def _publish_diagnostics(self) -> None:
        if self._diagnostics_pub is None or self.encoder is None:
            return
        now = time.monotonic()
        then, frames_in, frames_out = self._last_diag
        elapsed = max(now - then, 1e-6)
        self._last_diag = (now, self.frames_in, self.frames_out)
        values = {
            'input_rate_hz': (self.frames_in - frames_in) / elapsed,
            'output_rate_hz': (self.frames_out - frames_out) / elapsed,
            'frames_in': self.frames_in, 'frames_out': self.frames_out,
            'dropped_superseded': self.frames_dropped_busy, 'dropped_too_old': self.frames_dropped_age,
            'dropped_rate_limit': self.frames_dropped_rate, 'rejected_frames': self.frames_bad,
            'backend': self.encoder.backend.name, 'device': self.encoder.backend.device,
            'precision': self.encoder.backend.precision,
            'engine_cache_key': self.encoder.backend.cache_key or '',
            'model': self._param('model'),
        }
        for name, stats in list(self.stages.items()) + [('frame_age_ms', self.frame_age)]:
            p50, p95 = stats.percentiles()
            values[f'{name}_p50'] = round(p50, 3)
            values[f'{name}_p95'] = round(p95, 3)
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: perception',
                                  hardware_id=self.encoder.backend.device)
        active = self._running
        status.level = DiagnosticStatus.WARN if self.frames_bad and active else DiagnosticStatus.OK
        status.message = 'active' if active else 'inactive'
        status.values = [KeyValue(key=k, value=f'{v:.3f}' if isinstance(v, float) else str(v))
                         for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


EXECUTORS = ('multi', 'single')


def make_executor(kind: str) -> Any:
    """The executor that runs the node's callbacks (inference has its own thread in any case).

    single (default): SingleThreadedExecutor; multi: MultiThreadedExecutor. robovision_bench measures both side
    by side (docs/benchmarks.md: on 2 cores the single-threaded one delivered more frames for CLIP-B/16 and tied
    otherwise); ROBOVISION_EXECUTOR selects one. (rclpy's experimental EventsExecutor is not offered: in a trial
    here the lifecycle services of a node spun by it did not answer.)
    """
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    if kind == 'multi':
        return MultiThreadedExecutor(num_threads=4)
    if kind == 'single':
        return SingleThreadedExecutor()
    raise ValueError(f"ROBOVISION_EXECUTOR '{kind}' not supported; supported: {', '.join(EXECUTORS)}")


def run_node(node_class: type, args: Optional[list[str]] = None) -> int:
    """Spin a perception node until Ctrl-C or shutdown, on the executor ROBOVISION_EXECUTOR names."""
    import os

    from rclpy.executors import ExternalShutdownException

    executor_kind = os.environ.get('ROBOVISION_EXECUTOR', 'single')
    rclpy.init(args=args)
    executor = make_executor(executor_kind)
    node = node_class()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node._stop_worker()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
