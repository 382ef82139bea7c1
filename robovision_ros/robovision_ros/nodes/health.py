# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The health of a perception node as /diagnostics reports it, computed from counters without ROS.

`node_health` turns what happened in the last window (counter growth from `RecentWindow`), the worker's and the
backend's state and the silent cameras into one level and message. A node that receives frames but publishes
nothing says why (every frame too old, stamped in the future, rate-limited, rejected or failed), with the measured
value and the likely fix, instead of reporting OK.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclass(frozen=True)
class HealthInputs:
    """What the status is computed from (one snapshot, taken once a second)."""

    active: bool
    window_s: float  # how long the recent counters cover (at most the health window, at least 1 s)
    recent: Mapping[str, int]  # growth of each frame counter within the window
    silent_cameras: tuple[str, ...] = ()
    worker_failure: Optional[str] = None  # why the inference thread ended, if it did
    backend_health: Optional[str] = None  # why the backend cannot serve now (a remote server gone)
    last_error: str = ''
    frame_age_p50_ms: float = 0.0  # median header-stamp age of recent frames (negative: stamped in the future)
    max_frame_age_ms: float = 0.0
    max_rate_hz: float = 0.0
    stall_after_s: float = 5.0  # frames in but nothing out for this long is a stall (0 = not reported)
    warnings: tuple[str, ...] = ()  # the node's own conditions worth a WARN (a set vocabulary not in use)


@dataclass(frozen=True)
class Health:
    level: int
    message: str
    stall: Optional[str] = None  # why frames arrive but nothing is published, while that lasts


def stall_reason(inputs: HealthInputs) -> Optional[str]:
    """Why frames arrive but no output was published in the window (None: outputs flow, or no frames arrive)."""
    recent = inputs.recent
    if (not inputs.active or inputs.stall_after_s <= 0 or inputs.window_s < inputs.stall_after_s
            or recent.get('frames_in', 0) == 0 or recent.get('frames_out', 0) > 0):
        return None
    causes = {name: recent.get(name, 0)
              for name in ('dropped_too_old', 'dropped_future_stamp', 'dropped_rate_limit', 'rejected_frames',
                           'failed_frames')}
    cause = max(causes, key=lambda name: causes[name])
    count, total, seconds = causes[cause], recent['frames_in'], inputs.window_s
    head = f'{total} frames arrived in the last {seconds:.0f} s and none was published'
    if count == 0:
        return f'{head}: inference has not finished a frame (a slow decode or model, or a stuck backend)'
    if cause == 'dropped_too_old':
        return (f'{head}: {count} dropped as older than max_frame_age_ms {inputs.max_frame_age_ms:g} (median age '
                f'{inputs.frame_age_p50_ms:.0f} ms). The camera and node clocks differ (use_sim_time on one side '
                'only, or unsynchronised hosts) or the limit is too tight')
    if cause == 'dropped_future_stamp':
        return (f'{head}: {count} dropped as stamped more than max_frame_age_ms {inputs.max_frame_age_ms:g} in the '
                f'future (median age {inputs.frame_age_p50_ms:.0f} ms). The camera clock is ahead of the node\'s '
                '(use_sim_time, unsynchronised hosts, or a clock jump)')
    if cause == 'dropped_rate_limit':
        return f'{head}: {count} dropped by max_rate_hz {inputs.max_rate_hz:g}'
    what = 'rejected' if cause == 'rejected_frames' else 'failed'
    return f'{head}: {count} {what}; last error: {inputs.last_error}'


def node_health(inputs: HealthInputs) -> Health:
    """Return the level and message /diagnostics reports."""
    if not inputs.active:
        return Health(OK, 'inactive')
    if inputs.worker_failure is not None:
        return Health(ERROR, f'inference thread stopped: {inputs.worker_failure}')
    if inputs.backend_health is not None:
        return Health(ERROR, inputs.backend_health)
    stall = stall_reason(inputs)
    if stall is not None:
        return Health(WARN, stall, stall)
    if inputs.silent_cameras:
        return Health(WARN, f'no frames from {", ".join(inputs.silent_cameras)}')
    if inputs.warnings:
        return Health(WARN, '; '.join(inputs.warnings))
    rejected, failed = inputs.recent.get('rejected_frames', 0), inputs.recent.get('failed_frames', 0)
    if rejected or failed:
        return Health(WARN, f'{rejected} rejected, {failed} failed frames in the last {inputs.window_s:.0f} s: '
                            f'{inputs.last_error}')
    return Health(OK, 'active')
