# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Vocabulary encoding off the executor thread, without ROS.

A vocabulary set returns at once; this worker encodes the newest requested vocabulary in batches on its own
thread (a newer request supersedes one in progress between batches) and hands the finished embeddings to the
node, which swaps them in whole. A vocabulary is clip_perception's labels and presence queries, or
open_vocab_detector's text and image queries: any request with a `text_count`, built into a snapshot with a
`version` and the `spec` it was built from. Frames keep being scored against the previous vocabulary until then.
A build that fails (a remote text encoder unreachable) is retried with a growing delay until it is applied or
superseded; while it fails, `failing()` says why, for /diagnostics.
"""
from __future__ import annotations

import ctypes
import threading
import time
import traceback
from typing import Any, Callable, Optional, Protocol

from robovision_ros.backends.base import TransientBackendError
from robovision_ros.vocabulary import ENCODE_BATCH, VocabularyCancelled


class VocabularyRequest(Protocol):
    """What a node asks to encode (`vocabulary.VocabularySpec`, `detection_queries.DetectionQuerySpec`)."""

    @property
    def text_count(self) -> int: ...


class VocabularySnapshot(Protocol):
    """What a build returns (`vocabulary.Vocabulary`, `detection_queries.DetectionQueries`)."""

    @property
    def version(self) -> int: ...

    @property
    def spec(self) -> Any: ...


BuildFunction = Callable[[Any, int, Callable[[], bool]], Any]
# Delays between attempts at a vocabulary whose build failed: doubling from the first, at most the last.
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 10.0


def release_freed_memory() -> None:
    """Return freed heap pages to the system (glibc keeps them otherwise, and RSS stays at its peak)."""
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


class VocabularyWorker:
    """Encodes the newest requested vocabulary on its own thread and reports it through `on_ready`."""

    def __init__(self, build: BuildFunction, on_ready: Callable[[VocabularySnapshot, int, float], None],
                 on_error: Callable[[VocabularyRequest, BaseException, Optional[str]], None],
                 current: Callable[[], Optional[VocabularySnapshot]]) -> None:
        """
        Start the worker thread.

        `on_error(request, error, traceback)` is called for every failed attempt (traceback None for a transient
        backend error); the node decides what to log.
        """
        self._build = build
        self._on_ready = on_ready
        self._on_error = on_error
        self._current = current
        self._cv = threading.Condition()
        self._wanted: Optional[VocabularyRequest] = None
        self._generation = 0  # bumped by every request; a build whose generation is outdated stops
        self._busy = False
        self._running = True
        self._failed: Optional[VocabularyRequest] = None  # a request whose build failed, to retry
        self._failure = ''  # why it failed
        self._retry_delay = RETRY_FIRST_S
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._run, name='vocabulary', daemon=True)
        self._thread.start()

    def request(self, request: VocabularyRequest) -> None:
        """Encode `request` next (unless it is the vocabulary already in use); supersedes older requests."""
        with self._cv:
            self._wanted = request
            self._generation += 1
            self._failed, self._failure, self._retry_delay = None, '', RETRY_FIRST_S
            self._cv.notify_all()

    def idle(self) -> bool:
        """Whether the vocabulary asked for last is the one in use (nothing to encode, nothing failing)."""
        with self._cv:
            return self._wanted is None and not self._busy and self._failed is None

    def failing(self) -> Optional[str]:
        """Why the vocabulary asked for last is not in use yet and is being retried (None: it is not failing)."""
        with self._cv:
            return self._failure if self._failed is not None else None

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while (self._wanted is not None or self._busy or self._failed is not None) \
                    and time.monotonic() < deadline:
                self._cv.wait(timeout=0.05)
            return self._wanted is None and not self._busy and self._failed is None

    def stop(self, timeout_s: float = 30.0) -> None:
        with self._cv:
            self._running = False
            self._generation += 1
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s)

    def _next(self) -> Optional[VocabularyRequest]:
        """Return the request to build now: a new one, or a failed one whose retry time came (under the lock)."""
        if self._wanted is not None:
            request, self._wanted = self._wanted, None
            return request
        if self._failed is not None and time.monotonic() >= self._retry_at:
            return self._failed
        return None

    def _run(self) -> None:
        while True:
            with self._cv:
                request = None
                while self._running and request is None:
                    request = self._next()
                    if request is None:
                        self._cv.wait(timeout=0.1 if self._failed is not None else 0.5)
                if not self._running:
                    return
                generation = self._generation
                self._busy = True
            try:
                self._serve(request, generation)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _serve(self, request: VocabularyRequest, generation: int) -> None:
        current = self._current()
        if current is not None and current.spec == request:
            return  # the same vocabulary again: nothing to encode, no new version
        version = (current.version if current is not None else 0) + 1
        start = time.perf_counter()
        try:
            vocabulary = self._build(request, version, lambda: generation != self._generation)
        except VocabularyCancelled:
            return
        except Exception as error:  # noqa: BLE001 - reported to the node and retried; the previous vocabulary stays
            with self._cv:
                if generation != self._generation:
                    return  # superseded meanwhile: the newer request follows
                self._failed, self._failure = request, f'{type(error).__name__}: {error}'
                self._retry_at = time.monotonic() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_S)
            self._on_error(request, error,
                           None if isinstance(error, TransientBackendError) else traceback.format_exc())
            return
        texts = request.text_count
        if texts > ENCODE_BATCH:
            release_freed_memory()
        with self._cv:
            if generation != self._generation:
                return  # superseded while finishing; the newer request follows
            self._failed, self._failure, self._retry_delay = None, '', RETRY_FIRST_S
        self._on_ready(vocabulary, texts, (time.perf_counter() - start) * 1e3)
