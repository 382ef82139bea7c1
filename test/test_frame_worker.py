# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The frame worker and the vocabulary worker without ROS.

Newest-frame policy, limits, counters, and a thread that survives whatever one frame throws.
"""
from __future__ import annotations

import threading
import time
import tracemalloc
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from robovision_ros.image_codec import ImageDecodeError, decode_compressed_image
from robovision_ros.nodes.frame_worker import FrameWorker, RecentWindow
from robovision_ros.nodes.vocabulary_worker import VocabularyWorker
from robovision_ros.settings import WorkerSettings
from robovision_ros.vocabulary import MAX_VOCABULARY_TEXTS, TextEmbeddingCache, Vocabulary, VocabularyCancelled, \
    VocabularyError, VocabularySpec, validate_templates


def _msg(value: int) -> SimpleNamespace:
    return SimpleNamespace(value=value)


class Recorder:
    def __init__(self, fail_on: tuple = ()) -> None:
        self.batches: list[list[int]] = []
        self.logs: list[tuple[str, str]] = []
        self.fail_on = fail_on
        self.release = threading.Event()
        self.release.set()

    def decode(self, msg, max_pixels):
        if msg.value == 'bad':
            raise ImageDecodeError('corrupt frame')
        if msg.value == 'bug':
            raise KeyError('decoder bug')
        return np.full((2, 2, 3), msg.value, np.uint8)

    def process(self, frames, images):
        self.release.wait(5.0)
        values = [int(image[0, 0, 0]) for image in images]
        if any(v in self.fail_on for v in values):
            raise RuntimeError(f'inference exploded on {values}')
        self.batches.append(values)

    def log(self, level, message):
        self.logs.append((level, message))


def _worker(recorder: Recorder, **settings) -> FrameWorker:
    worker = FrameWorker(recorder.decode, recorder.process, lambda msg: None, recorder.log,
                         WorkerSettings(**settings))
    worker.start()
    return worker


def _until(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_newest_frame_wins_and_superseded_frames_are_counted():
    recorder = Recorder()
    recorder.release.clear()  # hold the worker inside the first frame
    worker = _worker(recorder)
    try:
        worker.submit(_msg(1), 'cam')
        assert _until(lambda: worker.counters.snapshot()['frames_in'] == 1)
        time.sleep(0.05)
        for value in (2, 3, 4):
            worker.submit(_msg(value), 'cam')
        recorder.release.set()
        assert _until(lambda: worker.counters.snapshot()['frames_out'] == 2)
        assert recorder.batches == [[1], [4]]
        assert worker.counters.snapshot()['dropped_superseded'] == 2
    finally:
        worker.stop()


def test_the_thread_survives_every_kind_of_frame_error():
    recorder = Recorder(fail_on=(7,))
    worker = _worker(recorder)
    try:
        for handled, value in enumerate(('bad', 'bug', 7, 'bad', 5), start=1):
            worker.submit(_msg(value), 'cam')  # one at a time, so none is superseded
            assert _until(lambda: sum(worker.counters.snapshot()[k] for k in
                                      ('frames_out', 'rejected_frames', 'failed_frames')) == handled)
        assert _until(lambda: recorder.batches == [[5]])
        counts = worker.counters.snapshot()
        assert counts['rejected_frames'] == 3 and counts['failed_frames'] == 1 and counts['frames_out'] == 1
        assert worker.alive and worker.failure is None
        errors = [m for level, m in recorder.logs if level == 'error']
        # Each cause is logged once, with the traceback for the unexpected ones; the repeat is not.
        assert sum('corrupt frame' in m for m in errors) == 1
        assert any('KeyError' in m and 'Traceback' in m for m in errors)
        assert any('RuntimeError' in m and 'inference exploded' in m and 'Traceback' in m for m in errors)
    finally:
        worker.stop()
    assert not worker.alive


def test_rate_limit_and_batch_settings_swap_whole():
    recorder = Recorder()
    worker = _worker(recorder, max_rate_hz=0.5)
    try:
        worker.submit(_msg(1), 'cam')
        assert _until(lambda: recorder.batches == [[1]])
        worker.submit(_msg(2), 'cam')
        assert _until(lambda: worker.counters.snapshot()['dropped_rate_limit'] == 1)
        recorder.release.clear()
        worker.update_settings(WorkerSettings(batch=True))
        worker.submit(_msg(3), 'left')  # taken alone while the worker is free ...
        time.sleep(0.1)
        worker.submit(_msg(4), 'left')  # ... these two wait in the mailbox and run as one batch
        worker.submit(_msg(5), 'right')
        recorder.release.set()
        assert _until(lambda: [sorted(b) for b in recorder.batches[-2:]] == [[3], [4, 5]])
    finally:
        worker.stop()


def test_stopping_discards_errors_of_torn_down_outputs():
    recorder = Recorder(fail_on=(9,))
    recorder.release.clear()
    worker = _worker(recorder)
    worker.submit(_msg(9), 'cam')
    assert _until(lambda: worker.counters.snapshot()['frames_in'] == 1)
    time.sleep(0.05)
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    time.sleep(0.05)
    recorder.release.set()
    stopper.join(5.0)
    assert not [m for level, m in recorder.logs if level == 'error']
    assert worker.counters.snapshot()['failed_frames'] == 0


def _inference_threads() -> int:
    return sum(thread.name == 'inference' and thread.is_alive() for thread in threading.enumerate())


def test_stop_leaves_a_long_decode_and_start_never_adds_a_second_thread():
    """
    A decode that outlives `stop` (a large image; it cannot be interrupted) is left to end on its own.

    Its frame is never processed, `stop` returns while it still decodes, and a `start` meanwhile does not start a
    second thread: the same thread serves the new frames after it (issue 22: outputs out of order, two threads).
    """
    recorder = Recorder()
    decoding, finish_decode = threading.Event(), threading.Event()

    def slow_decode(msg, max_pixels):
        if msg.value == 1:
            decoding.set()
            finish_decode.wait(60.0)
        return np.full((2, 2, 3), msg.value, np.uint8)

    before = _inference_threads()
    worker = FrameWorker(slow_decode, recorder.process, lambda msg: None, recorder.log)
    worker.start()
    try:
        worker.submit(_msg(1), 'cam')
        assert decoding.wait(10.0)
        stopper = threading.Thread(target=worker.stop)
        stopper.start()
        stopper.join(30.0)
        assert not stopper.is_alive() and not finish_decode.is_set()  # stop returned; the decode goes on
        assert _inference_threads() == before + 1
        worker.start()  # while the old thread still decodes
        assert _inference_threads() == before + 1
        worker.submit(_msg(2), 'cam')
        finish_decode.set()
        assert _until(lambda: recorder.batches == [[2]])
        assert _inference_threads() == before + 1 and worker.counters.snapshot()['frames_out'] == 1
    finally:
        finish_decode.set()
        worker.stop()
    assert _until(lambda: _inference_threads() == before) and not worker.alive
    assert recorder.batches == [[2]]  # frame 1, decoded after the stop, was never processed


def test_a_thread_left_decoding_ends_when_its_decode_ends():
    recorder = Recorder()
    decoding, finish_decode = threading.Event(), threading.Event()

    def slow_decode(msg, max_pixels):
        decoding.set()
        finish_decode.wait(60.0)
        return np.zeros((2, 2, 3), np.uint8)

    before = _inference_threads()
    worker = FrameWorker(slow_decode, recorder.process, lambda msg: None, recorder.log)
    worker.start()
    worker.submit(_msg(1), 'cam')
    assert decoding.wait(10.0)
    worker.stop(decode_timeout_s=0.0)
    assert worker.alive and not finish_decode.is_set()
    finish_decode.set()
    assert _until(lambda: not worker.alive and _inference_threads() == before)
    assert recorder.batches == [] and worker.counters.snapshot()['frames_out'] == 0


def test_decoder_warnings_are_logged_once_per_cause_and_the_frames_served():
    """A JPEG whose data ends early decodes (libjpeg fills it with grey) with a warning: logged once, not printed."""
    recorder = Recorder()
    ok, jpeg = cv2.imencode('.jpg', np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert ok
    truncated = jpeg.tobytes()[:-200] + b'\xff\xd9'  # the scan data stops short at the end-of-image marker

    def decode(msg, max_pixels):
        return decode_compressed_image(truncated, 'jpeg')

    worker = FrameWorker(decode, recorder.process, lambda msg: None, recorder.log)
    worker.start()
    try:
        for handled in range(1, 6):
            worker.submit(_msg(handled), 'cam')
            assert _until(lambda: worker.counters.snapshot()['frames_out'] == handled)
    finally:
        worker.stop()
    warnings = [message for level, message in recorder.logs if level == 'warn']
    assert len(warnings) == 1 and 'decoder warning: Corrupt JPEG data' in warnings[0], recorder.logs
    assert worker.last_error is None and worker.counters.snapshot()['rejected_frames'] == 0


def test_recent_window_forgets_old_errors():
    window = RecentWindow(seconds=10.0)
    assert window.update(0.0, {'rejected_frames': 0})['rejected_frames'] == 0
    assert window.update(1.0, {'rejected_frames': 3})['rejected_frames'] == 3
    assert window.update(9.0, {'rejected_frames': 3})['rejected_frames'] == 3
    assert window.update(12.0, {'rejected_frames': 3})['rejected_frames'] == 0


@pytest.mark.parametrize('template', ['a {} with {x}.', 'a {} {', 'a {} {0}', 'a {} }', '{} and {}', 'no field',
                                      'a {!r}', 'a {:>10}', 'a {0}'])
def test_templates_that_cannot_format_are_rejected(template):
    with pytest.raises(VocabularyError, match='prompt template'):
        validate_templates([template])


@pytest.mark.parametrize('template', ['{:999999999}', 'a {:3999999999}', '{:.999999999}', '{:10000000000}',
                                      '{0:999999999}', '{!r:999999999}', '{:{}}', 'a {:>999999999} b'])
def test_template_widths_are_refused_without_formatting(template):
    """
    A width or precision is refused from the parsed template: no string of that size is ever built.

    Formatting '{:999999999}' first cost 0.9 GB (issue 22 item 11); the peak allocation of the check is bounded
    by the template's length, asserted under tracemalloc with a 1 MiB margin.
    """
    tracemalloc.start()
    try:
        with pytest.raises(VocabularyError, match='no other .* field, format spec or conversion|not a valid format'):
            validate_templates([template])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, peak


@pytest.mark.parametrize('template', ['a photo of a {}.', '{}', 'a {{literal}} {}'])
def test_good_templates_pass(template):
    assert validate_templates([template]) == [template]


def _fake_encoder(calls: list[int], dim: int = 8):
    def encode(texts):
        calls.append(len(texts))
        rng = np.random.default_rng(abs(hash(tuple(texts))) % 2**32)
        return rng.standard_normal((len(texts), dim)).astype(np.float32) + 0.1
    return encode


def test_vocabulary_encodes_in_batches_bounds_its_cache_and_can_be_cancelled():
    calls: list[int] = []
    vocabulary = TextEmbeddingCache('m', _fake_encoder(calls), cache_texts=300)
    labels = [f'thing {i}' for i in range(250)]
    built = vocabulary.build(labels, ['a {}.', 'the {}.'], version=1)
    assert built.embeddings.shape == (250, 8)
    assert max(calls) <= 128 and sum(calls) == 500
    assert vocabulary.cached_texts == 300  # bounded: the least recently used dropped
    with pytest.raises(VocabularyError, match=f'at most {MAX_VOCABULARY_TEXTS}'):
        vocabulary.build([f'x{i}' for i in range(256)], [f'{{}} {i}' for i in range(17)], version=2)
    with pytest.raises(VocabularyCancelled):
        vocabulary.build([f'new {i}' for i in range(200)], ['a {}.'], version=3, cancelled=lambda: True)


def test_vocabulary_worker_newest_request_wins_and_unchanged_keeps_version():
    ready: list[Vocabulary] = []
    gate = threading.Event()

    def build(request, version, cancelled):
        gate.wait(5.0)
        embeddings = SimpleNamespace(labels=request.labels, templates=request.templates, version=version)
        return Vocabulary(embeddings, SimpleNamespace(labels=request.queries, version=version))

    current = {'v': None}

    def on_ready(vocabularies, texts, ms):
        current['v'] = vocabularies
        ready.append(vocabularies)

    worker = VocabularyWorker(build, on_ready, lambda *a: None, lambda: current['v'])
    try:
        worker.request(VocabularySpec(('a',), ('{}',), ()))
        time.sleep(0.1)
        worker.request(VocabularySpec(('b',), ('{}',), ()))  # supersedes 'a' while it is being built
        worker.request(VocabularySpec(('c',), ('{}',), ()))
        gate.set()
        assert worker.wait_idle(5.0)
        assert ready[-1].labels.labels == ('c',) and ready[-1].version == 1
        assert all(v.labels.labels != ('b',) for v in ready)
        worker.request(VocabularySpec(('c',), ('{}',), ()))  # the same again: no new version
        count = len(ready)
        assert worker.wait_idle(5.0) and len(ready) == count and ready[-1].version == 1
    finally:
        worker.stop()


def test_vocabulary_worker_retries_a_failed_build_until_it_is_applied(monkeypatch):
    """A build that fails (a remote text encoder gone) is retried, reported as failing meanwhile, then applied."""
    from robovision_ros.backends.base import TransientBackendError
    from robovision_ros.nodes import vocabulary_worker

    monkeypatch.setattr(vocabulary_worker, 'RETRY_FIRST_S', 0.01)
    monkeypatch.setattr(vocabulary_worker, 'RETRY_MAX_S', 0.02)
    server_up = threading.Event()
    attempts: list[int] = []
    errors: list[tuple[str, object]] = []

    def build(request, version, cancelled):
        attempts.append(version)
        if not server_up.is_set():
            raise TransientBackendError('Triton server host:8001: unreachable')
        return Vocabulary(SimpleNamespace(labels=request.labels, templates=request.templates, version=version),
                          SimpleNamespace(labels=request.queries, version=version))

    current = {'v': None}
    worker = VocabularyWorker(build, lambda v, t, ms: current.update(v=v),
                              lambda r, e, trace: errors.append((e, trace)), lambda: current['v'])
    try:
        worker.request(VocabularySpec(('a',), ('{}',), ()))
        deadline = time.monotonic() + 10.0
        while len(attempts) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(attempts) >= 3, attempts  # retried, not given up after the first failure
        assert worker.failing() == 'TransientBackendError: Triton server host:8001: unreachable'
        assert not worker.idle() and current['v'] is None
        assert all(trace is None for _, trace in errors)  # expected failures come without a traceback
        server_up.set()
        assert worker.wait_idle(10.0)
        assert current['v'].labels.labels == ('a',) and worker.failing() is None
        # A newer request supersedes a failing one at once.
        server_up.clear()
        worker.request(VocabularySpec(('b',), ('{}',), ()))
        while worker.failing() is None and time.monotonic() < deadline + 10.0:
            time.sleep(0.01)
        worker.request(VocabularySpec(('a',), ('{}',), ()))  # the vocabulary in use: nothing to retry
        assert worker.wait_idle(10.0) and worker.failing() is None
    finally:
        worker.stop()
