# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
A node's vocabulary in use, and its live changes.

clip_perception's labels and presence queries, open_vocab_detector's text and image queries: built once at
configure; every later set is encoded off the executor by a `VocabularyWorker` and swapped in whole.
Versions keep counting across cleanup/configure, so a consumer never sees a number reused. A failed rebuild is logged
once per cause (the worker retries silently) and `warnings()` says so for /diagnostics while it lasts.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from robovision_ros.nodes.vocabulary_worker import BuildFunction, VocabularyRequest, VocabularySnapshot, \
    VocabularyWorker


@dataclass(frozen=True)
class Wording:
    """How a node's log lines and diagnostics name its vocabulary."""

    what: str  # one request, with {n} its entries: 'vocabulary of {n} labels'
    set_last: str  # 'the vocabulary set last is'
    serving: str  # what frames keep getting meanwhile: 'scoring'
    retrying: str  # 'retrying until it is'


class LiveVocabulary:
    """The snapshot frames are served against (`current`, one reference swap), its builds and its failures."""

    def __init__(self, build: BuildFunction, describe: Callable[[Any, int, float], str], wording: Wording,
                 log_info: Callable[[str], None], log_error: Callable[[str], None]) -> None:
        self.current: Optional[Any] = None
        self._build = build
        self._describe = describe
        self._wording = wording
        self._log_info = log_info
        self._log_error = log_error
        self._last_version = 0
        self._worker: Optional[VocabularyWorker] = None
        self._causes: set[str] = set()  # causes of failed builds already logged

    def start(self, request: VocabularyRequest) -> None:
        """Build `request` now (configure: errors propagate), then take later sets off the executor."""
        began = time.perf_counter()
        self.current = self._build(request, self._last_version + 1, lambda: False)
        self._log_info(self._describe(self.current, request.text_count, (time.perf_counter() - began) * 1e3))
        self._worker = VocabularyWorker(self._build, self._on_ready, self._on_error, lambda: self.current)

    def request(self, request: VocabularyRequest) -> None:
        """Ask for `request` to replace the current snapshot (nothing before `start`)."""
        if self._worker is not None:
            self._worker.request(request)

    def stop(self) -> None:
        """Stop the builds and forget the snapshot; the version count goes on at the next `start`."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        if self.current is not None:
            self._last_version = self.current.version
        self.current = None

    def _on_ready(self, snapshot: VocabularySnapshot, texts: int, elapsed_ms: float) -> None:
        self.current = snapshot  # one reference swap: the next frame is served against all of it
        self._last_version = snapshot.version
        self._causes.clear()
        self._log_info(self._describe(snapshot, texts, elapsed_ms))

    def _on_error(self, request: Any, error: BaseException, trace: Optional[str]) -> None:
        """Log a failed build once per cause (retries are silent); /diagnostics warns while it lasts."""
        cause = f'{type(error).__name__}: {error}'
        if cause in self._causes:
            return
        self._causes.add(cause)
        words = self._wording
        self._log_error(f'{words.what.format(n=len(request.labels))} not applied yet ({cause}); still {words.serving} '
                        f'with v{self.version}; {words.retrying}' + (f'\n{trace}' if trace else ''))

    @property
    def version(self) -> int:
        """Return the version frames are served with now (0: none)."""
        current = self.current
        return current.version if current is not None else 0

    def diagnostics(self, sizes: dict[str, int]) -> dict[str, Any]:
        """Return the /diagnostics values: the version, the node's `sizes`, whether a set is pending or failing."""
        worker = self._worker
        return {'vocabulary_version': self.version, **sizes,
                'vocabulary_pending': bool(worker and not worker.idle()),
                'vocabulary_error': (worker.failing() if worker else None) or ''}

    def warnings(self) -> list[str]:
        """Return a warning while the vocabulary set last is not in use (its build fails and is retried)."""
        failing = self._worker.failing() if self._worker else None
        if failing is None:
            return []
        return [f'{self._wording.set_last} not in use ({failing}); {self._wording.serving} with v{self.version}, '
                'retrying']
