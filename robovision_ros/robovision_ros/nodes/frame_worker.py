# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The inference worker of a perception node, without ROS.

A one-slot mailbox per camera, the newest-frame policy, rate and age limits, counters, and a thread that cannot die
on a bad frame.

The node hands every received message to `FrameWorker.submit`; the worker thread takes the newest frame of
each camera, decodes it, and calls the node's `process` with the decoded images. Whatever one frame throws
(decode, inference, publish) is caught, counted and logged once per cause with its traceback; the next frame
is served. Live settings arrive as one immutable `WorkerSettings` snapshot, swapped whole between frames.

A decode cannot be interrupted, and at the pixel limit it takes seconds (docs/architecture.md): `stop` waits for
one at most a second, then leaves the thread to finish it, and that frame is never handed to `process`. A `start`
while that thread still decodes does not start another: the same thread serves the new frames after it, so a
worker never has more than one inference thread.
"""
from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from robovision_ros.backends.base import TransientBackendError
from robovision_ros.image_codec import ImageDecodeError, take_decoder_messages
from robovision_ros.settings import WorkerSettings

# How many distinct error causes are remembered for once-per-cause logging; beyond it, errors are still
# counted but only logged with a throttle.
MAX_REMEMBERED_CAUSES = 64
REPEAT_LOG_PERIOD_S = 60.0  # a known cause is logged again at most this often, with its count
STOP_DECODE_WAIT_S = 1.0  # how long `stop` waits for a decode in progress before leaving the thread to finish it


@dataclass
class Frame:
    msg: Any
    topic: str
    arrival: float  # time.monotonic() at arrival


class StageStats:
    """Rolling latency samples of one stage (last 200 frames); thread-safe."""

    def __init__(self) -> None:
        self._samples: deque[float] = deque(maxlen=200)
        self._lock = threading.Lock()

    def add(self, value: float) -> None:
        with self._lock:
            self._samples.append(value)

    def percentiles(self) -> tuple[float, float]:
        with self._lock:
            samples = list(self._samples)
        if not samples:
            return (0.0, 0.0)
        p50, p95 = np.percentile(np.asarray(samples, float), (50, 95))
        return (float(p50), float(p95))


COUNTERS = ('frames_in', 'frames_out', 'dropped_superseded', 'dropped_too_old', 'dropped_future_stamp',
            'dropped_rate_limit', 'rejected_frames', 'failed_frames')


class FrameCounters:
    """Frame counters written by the subscription callbacks and the worker thread, under one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(COUNTERS, 0)
        self.last_arrival: dict[str, float] = {}  # topic -> time.monotonic() of its last frame

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._values[name] += count

    def arrived(self, topic: str, now: float) -> None:
        with self._lock:
            self._values['frames_in'] += 1
            self.last_arrival[topic] = now

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)


class RecentWindow:
    """Counter snapshots over the last `seconds`, so health reflects what happens now, not history."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.seconds = seconds
        self._history: deque[tuple[float, dict[str, int]]] = deque()

    def update(self, now: float, counters: dict[str, int]) -> dict[str, int]:
        """Record `counters` at `now`; return how much each grew within the window."""
        self._history.append((now, counters))
        while len(self._history) > 1 and now - self._history[1][0] >= self.seconds:
            self._history.popleft()
        oldest = self._history[0][1]
        return {name: counters[name] - oldest.get(name, 0) for name in counters}


def stamp_age_ms(stamp: Any, now_ns: int) -> Optional[float]:
    """Return the milliseconds from a header stamp to `now_ns` (negative: in the future); None if the stamp is unset."""
    if stamp.sec == 0 and stamp.nanosec == 0:
        return None
    return (now_ns - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6


LogFunction = Callable[[str, str], None]  # (level: 'info'|'warn'|'error'|'debug', message)


class FrameWorker:
    """Runs `process(frames, images)` on the newest frame(s) of each camera, on its own thread."""

    def __init__(self, decode: Callable[[Any, int], np.ndarray],
                 process: Callable[[list[Frame], list[np.ndarray]], None],
                 frame_age_ms: Callable[[Any], Optional[float]], log: LogFunction,
                 settings: Optional[WorkerSettings] = None) -> None:
        self._decode = decode
        self._process = process
        self._frame_age_ms = frame_age_ms
        self._log = log
        self.settings = settings if settings is not None else WorkerSettings()
        self.counters = FrameCounters()
        self.stages = {'preprocess_ms': StageStats(), 'inference_ms': StageStats(), 'postprocess_ms': StageStats()}
        self.frame_age = StageStats()
        self._mailbox: dict[str, Frame] = {}
        self._cv = threading.Condition()
        self._thread: Optional[threading.Thread] = None  # the one inference thread, until it ends (set under _cv)
        self._running = False
        self._stopping = False
        self._generation = 0  # bumped by start and stop: a frame taken in an earlier generation is never processed
        self._decoding = False  # the thread is inside `decode`
        self._causes: dict[str, list] = {}  # cause -> [count, time of its last log line]
        self._last_throttled_log = 0.0
        self.failure: Optional[str] = None  # why the thread ended, if it ever ends on its own
        self.last_error: Optional[str] = None  # the most recent per-frame error, for /diagnostics

    # --- control -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """
        Serve frames from now on; frames that arrived while stopped are dropped.

        If the thread that a `stop` left finishing a decode has not ended yet, it carries on serving instead of a
        second thread being started.
        """
        with self._cv:
            if self._running:
                return
            self._generation += 1
            self._running, self._stopping, self.failure = True, False, None
            self._mailbox.clear()  # frames that arrived while inactive are not served late
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name='inference', daemon=True)
                self._thread.start()

    def stop(self, timeout_s: float = 30.0, decode_timeout_s: float = STOP_DECODE_WAIT_S) -> None:
        """
        Stop serving: pending frames are discarded and the frame in progress is never handed to `process`.

        Waits for the thread to finish that frame: at most `decode_timeout_s` while it decodes (then the thread is
        left to end the decode on its own, or to carry on after a `start`), at most `timeout_s` while it is in
        `process` (inference and publishing use the node's outputs, which the caller may destroy next).
        """
        with self._cv:
            self._stopping = True
            self._running = False
            self._generation += 1
            self._mailbox.clear()
            self._cv.notify_all()
            thread = self._thread
        if thread is None or thread is threading.current_thread():
            return
        began = time.monotonic()
        while thread.is_alive():
            waited = time.monotonic() - began
            if waited >= timeout_s or (self._decoding and waited >= decode_timeout_s):
                return
            thread.join(0.02)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def update_settings(self, settings: WorkerSettings) -> None:
        self.settings = settings  # one reference swap; the worker reads it once per frame

    # --- input -------------------------------------------------------------------------------------------
    def submit(self, msg: Any, topic: str) -> None:
        """Accept a frame that arrived (subscription callback): it replaces any unprocessed frame of the same camera."""
        now = time.monotonic()
        self.counters.arrived(topic, now)
        with self._cv:
            if topic in self._mailbox:
                self.counters.add('dropped_superseded')
            self._mailbox[topic] = Frame(msg, topic, now)
            self._cv.notify()

    def _take(self) -> Optional[tuple[list[Frame], WorkerSettings, int]]:
        """
        Return the next frame(s) to serve, the settings they are served with, and the generation they belong to.

        Settings are read once, after the wait. Returns None when stopped, having given up the thread's place
        under the lock, so that a `start` from then on starts a new thread.
        """
        with self._cv:
            while self._running and not self._mailbox:
                self._cv.wait(timeout=0.2)
            settings = self.settings
            if not self._running:
                if self._thread is threading.current_thread():
                    self._thread = None
                return None
            if settings.batch:
                frames = list(self._mailbox.values())
                self._mailbox.clear()
                return frames, settings, self._generation
            topic = min(self._mailbox, key=lambda t: self._mailbox[t].arrival)  # oldest-arrived camera first
            return [self._mailbox.pop(topic)], settings, self._generation

    # --- the thread --------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            last = 0.0
            while (taken := self._take()) is not None:
                frames, settings, generation = taken
                if settings.max_rate_hz > 0 and time.monotonic() - last < 1.0 / settings.max_rate_hz:
                    self.counters.add('dropped_rate_limit', len(frames))
                    continue
                last = time.monotonic()
                self._serve(frames, settings, generation)
        except BaseException as error:  # noqa: B902 - record why the thread ended, whatever it was
            self.failure = f'{type(error).__name__}: {error}'
            self._log('error', f'inference thread stopped: {self.failure}\n{traceback.format_exc()}')
            with self._cv:
                if self._thread is threading.current_thread():
                    self._thread = None

    def _serve(self, frames: list[Frame], settings: WorkerSettings, generation: int) -> None:
        fresh, images = [], []
        for frame in frames:
            try:
                age_ms = self._frame_age_ms(frame.msg)
                if age_ms is not None:
                    self.frame_age.add(age_ms)
                    # The age limit bounds the distance between the stamp and the node's clock both ways: a frame
                    # stamped further in the future than the limit says the clocks disagree just as much.
                    if settings.max_frame_age_ms > 0 and abs(age_ms) > settings.max_frame_age_ms:
                        self.counters.add('dropped_too_old' if age_ms > 0 else 'dropped_future_stamp')
                        continue
                self._decoding = True
                try:
                    images.append(self._decode(frame.msg, settings.max_image_pixels))
                finally:
                    self._decoding = False
                fresh.append(frame)
                for message in take_decoder_messages():  # the image decoded; what its decoder said is a warning
                    self._report(f'frame from {frame.topic}: decoder warning: {message}', None, level='warn')
            except ImageDecodeError as error:
                self.counters.add('rejected_frames')
                self._report(f'frame from {frame.topic} rejected: {error}', None)
            except Exception as error:  # noqa: BLE001 - a decoder bug must not end the thread
                self.counters.add('rejected_frames')
                self._report(f'frame from {frame.topic} rejected: unexpected {type(error).__name__}: {error}',
                             traceback.format_exc())
        with self._cv:
            if not fresh or generation != self._generation:
                return  # a stop came during the decode: whatever was decoded belongs to the past
        try:
            self._process(fresh, images)
            self.counters.add('frames_out', len(fresh))
        except Exception as error:  # noqa: BLE001 - counted and logged with its cause; the next frame is served
            if self._stopping:
                return  # outputs torn down under a frame in flight at shutdown: not a failure
            self.counters.add('failed_frames', len(fresh))
            # An expected failure (a server gone) is one line per cause; anything else comes with its traceback.
            trace = None if isinstance(error, TransientBackendError) else traceback.format_exc()
            self._report(f'inference failed on a frame from {fresh[0].topic}: {type(error).__name__}: {error}', trace)

    def _report(self, message: str, trace: Optional[str], level: str = 'error') -> None:
        """
        Log a cause the first time it is seen (with its traceback), then at most once a minute with its count.

        Errors are counted in /diagnostics by the caller and become `last_error`; warnings are only logged.
        """
        if level == 'error':
            self.last_error = message
        cause = message if trace is None else trace.strip().splitlines()[-1] + message.split(':')[0]
        now = time.monotonic()
        seen = self._causes.get(cause)
        if seen is None:
            if len(self._causes) < MAX_REMEMBERED_CAUSES:
                self._causes[cause] = [1, now]
                self._log(level, message if trace is None else f'{message}\n{trace}')
            elif now - self._last_throttled_log >= 5.0:  # too many distinct causes: throttle them together
                self._last_throttled_log = now
                self._log(level, message)
            return
        seen[0] += 1
        if now - seen[1] >= REPEAT_LOG_PERIOD_S:
            seen[1] = now
            self._log(level, f'{message} ({seen[0]} times so far)')
