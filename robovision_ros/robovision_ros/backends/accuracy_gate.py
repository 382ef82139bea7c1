# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The int8 accuracy gate: an int8 engine is compared with fp32 on built-in probe images when it is loaded.

int8 accuracy depends on the model, the quantization recipe and the CPU or GPU kernels that run it, so it is
measured where it runs instead of assumed: below the threshold, loading fails (`Int8AccuracyError`), never a
silently worse engine.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from robovision_ros.backends.base import BackendUnavailableError, EncoderBackend, Int8Accuracy
from robovision_ros.process_memory import release_memory

DEFAULT_INT8_MIN_COSINE = 0.99


class Int8AccuracyError(BackendUnavailableError):
    """An int8 engine whose outputs are further from fp32 than the configured threshold allows."""


PROBE_SEED = 20240611


def probe_images(size: int, count: int = 6, seed: int = PROBE_SEED) -> list[np.ndarray]:
    """
    Return deterministic RGB uint8 test cards: colour regions, a disc, stripes and a gradient.

    Not noise, which no camera sees and which quantizes unlike real images. The gate uses `PROBE_SEED`; int8
    calibration uses another seed, so the gate never measures on the images an engine was calibrated with.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    images = []
    for i in range(count):
        image = np.empty((size, size, 3), np.uint8)
        image[:] = rng.integers(40, 216, 3)
        half = size // 2
        image[:half, :half] = rng.integers(0, 256, 3)  # a colour quadrant
        centre = rng.integers(size // 4, 3 * size // 4, 2)
        disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < (size // (5 + i % 3)) ** 2
        image[disc] = rng.integers(0, 256, 3)
        stripes = ((xx + (i + 1) * yy) // max(2, size // 8)) % 2 == 1
        image[stripes & (yy > 3 * size // 4)] = (255, 255, 255) if i % 2 else (0, 0, 0)
        image[..., i % 3] = np.clip(image[..., i % 3].astype(int) + xx * 60 // size - 30, 0, 255)  # a gradient
        images.append(image)
    return images


def probe_pixels(preprocess: Callable, image_size: int) -> np.ndarray:
    """Return the gate's probe images, preprocessed as the model's frames are (the batch the gate compares on)."""
    return preprocess(probe_images(image_size))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def output_cosine(ours: np.ndarray, theirs: np.ndarray) -> float:
    """
    Return the worst image's cosine of one image-graph output ``[B, ...]`` to its reference.

    An output with one row per patch (``[B, N, D]``, D > 1: patch tokens, class embeddings, boxes) is compared row by
    row and averaged over the patches; any other (``[B, D]`` embeddings, ``[B, N]`` per-patch scalars) as one vector
    per image.
    """
    if ours.ndim == 3 and ours.shape[-1] > 1:
        per_image = _cosine(ours, theirs).mean(axis=1)
    else:
        per_image = _cosine(ours.reshape(len(ours), -1), theirs.reshape(len(theirs), -1))
    return float(per_image.min())


def measure_int8_accuracy(candidate: EncoderBackend, reference: EncoderBackend, pixel_values: Any) -> Int8Accuracy:
    """Cosine of `candidate`'s image-graph outputs to `reference`'s on the same preprocessed batch, per output."""
    ours = candidate.run_image(pixel_values)
    theirs = reference.run_image(pixel_values)
    return Int8Accuracy(tuple((name, output_cosine(ours[name], theirs[name])) for name in theirs))


def check_int8_accuracy(candidate: EncoderBackend, reference: EncoderBackend, pixel_values: Any,
                        min_cosine: float = DEFAULT_INT8_MIN_COSINE) -> Int8Accuracy:
    """`measure_int8_accuracy`, raising `Int8AccuracyError` if any output's cosine is below `min_cosine`."""
    if not 0.0 <= min_cosine <= 1.0:
        raise ValueError(f'int8_min_cosine must be in [0, 1]; got {min_cosine}')
    accuracy = measure_int8_accuracy(candidate, reference, pixel_values)
    if accuracy.worst < min_cosine:
        raise Int8AccuracyError(
            f'{candidate.name} int8 on {candidate.device} is too far from fp32 on the probe images: cosine '
            f'{accuracy.worst:.4f} ({accuracy.describe()}) is below int8_min_cosine {min_cosine}; use precision fp32 '
            '(or lower int8_min_cosine if this accuracy is acceptable)')
    return accuracy


def gate_int8(candidate: EncoderBackend, make_reference: Callable[[], EncoderBackend], preprocess: Callable,
              image_size: int, min_cosine: float = DEFAULT_INT8_MIN_COSINE) -> Int8Accuracy:
    """
    Load the fp32 reference, check `candidate` against it on the probe images, free the reference.

    On failure `candidate` is closed too and `Int8AccuracyError` propagates.
    """
    reference = make_reference()
    try:
        return check_int8_accuracy(candidate, reference, probe_pixels(preprocess, image_size), min_cosine)
    except Int8AccuracyError:
        candidate.close()
        raise
    finally:
        reference.close()
        del reference
        release_memory()
