# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Vocabulary encoding off the executor thread, without ROS.

A vocabulary set returns at once; this worker encodes the newest requested vocabulary in batches on its own
thread (a newer request supersedes one in progress between batches) and hands the finished embeddings to the
node, which swaps them in whole. Frames keep being scored against the previous vocabulary until then.
"""
from __future__ import annotations

import ctypes
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable, Optional

from robovision_ros.vocabulary import ENCODE_BATCH, VocabularyCancelled, VocabularyEmbeddings


@dataclass(frozen=True)
class VocabularyRequest:
    labels: tuple[str, ...]
    templates: tuple[str, ...]
    queries: tuple[str, ...]


@dataclass(frozen=True)
class Vocabularies:
    """The label and presence-query embeddings frames are scored against: one immutable snapshot."""

    labels: VocabularyEmbeddings
    queries: VocabularyEmbeddings

    @property
    def version(self) -> int:
        return self.labels.version

    @property
    def request(self) -> VocabularyRequest:
        return VocabularyRequest(self.labels.labels, self.labels.templates, self.queries.labels)


BuildFunction = Callable[[VocabularyRequest, int, Callable[[], bool]], Vocabularies]


def release_freed_memory() -> None:
    """Return freed heap pages to the system (glibc keeps them otherwise, and RSS stays at its peak)."""
    try:
        ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError):
        pass


class VocabularyWorker:
    """Encodes the newest requested vocabulary on its own thread and reports it through `on_ready`."""

    def __init__(self, build: BuildFunction, on_ready: Callable[[Vocabularies, int, float], None],
                 on_error: Callable[[VocabularyRequest, BaseException, str], None],
                 current: Callable[[], Optional[Vocabularies]]) -> None:
        self._build = build
        self._on_ready = on_ready
        self._on_error = on_error
        self._current = current
        self._cv = threading.Condition()
        self._wanted: Optional[VocabularyRequest] = None
        self._generation = 0  # bumped by every request; a build whose generation is outdated stops
        self._busy = False
        self._running = True
        self._thread = threading.Thread(target=self._run, name='vocabulary', daemon=True)
        self._thread.start()

    def request(self, request: VocabularyRequest) -> None:
        """Encode `request` next (unless it is the vocabulary already in use); supersedes older requests."""
        with self._cv:
            self._wanted = request
            self._generation += 1
            self._cv.notify_all()

    def idle(self) -> bool:
        with self._cv:
            return self._wanted is None and not self._busy

    def wait_idle(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while (self._wanted is not None or self._busy) and time.monotonic() < deadline:
                self._cv.wait(timeout=0.05)
            return self._wanted is None and not self._busy

    def stop(self, timeout_s: float = 30.0) -> None:
        with self._cv:
            self._running = False
            self._generation += 1
            self._cv.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._running and self._wanted is None:
                    self._cv.wait(timeout=0.5)
                if not self._running:
                    return
                request, generation = self._wanted, self._generation
                self._wanted = None
                self._busy = True
            try:
                self._serve(request, generation)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _serve(self, request: VocabularyRequest, generation: int) -> None:
        current = self._current()
        if current is not None and current.request == request:
            return  # the same vocabulary again: nothing to encode, no new version
        version = (current.version if current is not None else 0) + 1
        start = time.perf_counter()
        try:
            vocabularies = self._build(request, version, lambda: generation != self._generation)
        except VocabularyCancelled:
            return
        except Exception as error:  # noqa: BLE001 - reported to the node; the previous vocabulary stays in use
            self._on_error(request, error, traceback.format_exc())
            return
        texts = (len(request.labels) + len(request.queries)) * len(request.templates)
        if texts > ENCODE_BATCH:
            release_freed_memory()
        with self._cv:
            if generation != self._generation:
                return  # superseded while finishing; the newer request follows
        self._on_ready(vocabularies, texts, (time.perf_counter() - start) * 1e3)
