# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
/diagnostics of a perception node: once a second, its health (nodes/health.py), counters and stage latencies.

A stall (frames arrive, nothing is published) is also logged: once when it starts, with its cause, and once when
outputs flow again.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from robovision_ros.nodes.frame_worker import FrameWorker, RecentWindow
from robovision_ros.nodes.health import ERROR, OK, WARN, HealthInputs, node_health

HEALTH_WINDOW_S = 10.0  # health reflects the last this many seconds, not history
_LEVELS = {OK: DiagnosticStatus.OK, WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}


class NodeDiagnostics:
    """The /diagnostics publisher of one node and the state its status is computed from."""

    def __init__(self, node: Any, log: Callable[[str, str], None]) -> None:
        self._node = node
        self._log = log
        self._publisher: Any = None
        self._window = RecentWindow(HEALTH_WINDOW_S)
        self._stall: Optional[str] = None

    def start(self) -> None:
        """Create the publisher and start a new health window (configure)."""
        self._publisher = self._node.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._window = RecentWindow(HEALTH_WINDOW_S)
        self._stall = None

    def stop(self) -> None:
        if self._publisher is not None:
            self._node.destroy_publisher(self._publisher)
            self._publisher = None

    def publish(self, worker: FrameWorker, backend: Any, values: dict[str, Any], silent: list[str],
                activated_at: Optional[float], warnings: list[str], extra: dict[str, Any]) -> None:
        """Publish one status computed from the worker's counters over the window, and log a stall's changes."""
        if self._publisher is None:
            return
        now = time.monotonic()
        counters = worker.counters.snapshot()
        recent = self._window.update(now, counters)
        window = max(min(self._window.seconds, now - (activated_at or now)), 1.0)
        health = node_health(HealthInputs(
            active=activated_at is not None, window_s=window, recent=recent, silent_cameras=tuple(silent),
            worker_failure=worker.failure, backend_health=backend.health(), last_error=worker.last_error or '',
            frame_age_p50_ms=worker.frame_age.percentiles()[0], max_frame_age_ms=values['max_frame_age_ms'],
            max_rate_hz=values['max_rate_hz'], stall_after_s=min(values['camera_timeout_s'], HEALTH_WINDOW_S),
            warnings=tuple(warnings)))
        self._report_stall(health.stall)
        report: dict[str, Any] = {
            'input_rate_hz': recent['frames_in'] / window, 'output_rate_hz': recent['frames_out'] / window,
            **counters, 'rejected_recent': recent['rejected_frames'], 'failed_recent': recent['failed_frames'],
            'last_error': worker.last_error or '', 'backend': backend.name, 'device': backend.device,
            'precision': backend.precision, 'engine_cache_key': backend.cache_key or '', 'model': values['model'],
            'silent_cameras': ', '.join(silent), 'backend_health': backend.health() or 'ok', **extra}
        for name, stats in list(worker.stages.items()) + [('frame_age_ms', worker.frame_age)]:
            p50, p95 = stats.percentiles()
            report[f'{name}_p50'], report[f'{name}_p95'] = round(p50, 3), round(p95, 3)
        status = DiagnosticStatus(name=f'{self._node.get_fully_qualified_name()}: perception',
                                  level=_LEVELS[health.level], message=health.message, hardware_id=backend.device)
        status.values = [KeyValue(key=k, value=f'{v:.3f}' if isinstance(v, float) else str(v))
                         for k, v in report.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)

    def _report_stall(self, stall: Optional[str]) -> None:
        """Log once when frames arrive but nothing is published (with why), and once when outputs flow again."""
        if stall is not None and self._stall is None:
            self._log('warn', stall)
        elif stall is None and self._stall is not None:
            self._log('info', 'publishing again')
        self._stall = stall
