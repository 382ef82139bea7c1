# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Seeded fuzzing of the decoders. A few hundred cases, seconds.

Whatever arrives, the only outcomes are an RGB uint8 ``[H, W, 3]`` array within the bounds or an ImageDecodeError
(never cv2.error, IndexError, MemoryError, ...).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import structured_images
from robovision_ros.image_codec import SUPPORTED_ENCODINGS, ImageDecodeError, decode_compressed_image, \
    decode_raw_image

MAX_PIXELS = 1 << 16  # small, so that a mutated header that passes the bound costs little to decode
FORMATS = ['jpeg', 'jpg', 'png', 'tiff', 'tif', '', 'bgr8; jpeg compressed bgr8', 'rgb8; jpeg compressed rgb8',
           'rgb8; png compressed rgb8', 'mono16; png compressed mono16', '16UC1; compressedDepth png', 'webp',
           'h264', ';', 'compressed', 'bgr8;', 'JPEG', 'rgba8; png compressed bgra8']


def _check(result: np.ndarray, hw: tuple[int, int] | None = None) -> None:
    assert isinstance(result, np.ndarray) and result.dtype == np.uint8 and result.ndim == 3
    assert result.shape[2] == 3 and result.shape[0] * result.shape[1] <= MAX_PIXELS
    if hw is not None:
        assert result.shape[:2] == hw


def _seed_files(rng: np.random.Generator) -> list[bytes]:
    rgb = structured_images(1, (24, 32), seed=1)[0]
    images = [rgb, rgb[..., 0], rgb.astype(np.uint16) * 257, np.dstack([rgb, rgb[..., :1]])]
    files = []
    for ext in ('.jpg', '.png', '.tiff'):
        for image in images:
            if ext == '.jpg' and image.dtype != np.uint8:
                continue
            ok, data = cv2.imencode(ext, image)
            assert ok
            files.append(data.tobytes())
    return files


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buffer = bytearray(data)
    kind = rng.integers(0, 5)
    if kind == 0:  # truncate
        return bytes(buffer[:rng.integers(0, len(buffer) + 1)])
    if kind == 1:  # flip bytes, mostly in the header
        for _ in range(rng.integers(1, 8)):
            i = int(rng.integers(0, min(len(buffer), 64 if rng.random() < 0.7 else len(buffer))))
            buffer[i] = int(rng.integers(0, 256))
        return bytes(buffer)
    if kind == 2:  # insert or delete a run
        i = int(rng.integers(0, len(buffer)))
        if rng.random() < 0.5:
            return bytes(buffer[:i] + rng.bytes(int(rng.integers(1, 40))) + buffer[i:])
        return bytes(buffer[:i] + buffer[i + int(rng.integers(1, 40)):])
    if kind == 3:  # magic bytes followed by garbage
        magic = [b'\xff\xd8', b'\x89PNG\r\n\x1a\n', b'II*\x00', b'MM\x00*', b'II+\x00', b'']
        return magic[rng.integers(0, len(magic))] + rng.bytes(int(rng.integers(0, 64)))
    return bytes(buffer)  # unchanged


def test_compressed_fuzz():
    rng = np.random.default_rng(20240611)
    files = _seed_files(rng)
    outcomes = {'decoded': 0, 'rejected': 0}
    for case in range(300):
        data = _mutate(files[rng.integers(0, len(files))], rng)
        fmt = FORMATS[rng.integers(0, len(FORMATS))] if rng.random() < 0.9 else rng.bytes(6).decode('latin-1')
        try:
            result = decode_compressed_image(data, fmt, max_pixels=MAX_PIXELS)
        except ImageDecodeError:
            outcomes['rejected'] += 1
            continue
        _check(result)
        outcomes['decoded'] += 1
    assert outcomes['decoded'] > 30 and outcomes['rejected'] > 30, outcomes  # the fuzzing reaches both outcomes


def test_raw_fuzz():
    rng = np.random.default_rng(7)
    encodings = list(SUPPORTED_ENCODINGS) + ['yuv444', 'RGB8', '', 'bayer_rggb32', 'nv12']
    sizes = [-3, 0, 1, 2, 3, 5, 8, 17, 40]
    outcomes = {'decoded': 0, 'rejected': 0}
    for case in range(400):
        encoding = encodings[rng.integers(0, len(encodings))]
        width, height = (int(sizes[i]) for i in rng.integers(0, len(sizes), 2))
        pixel_bytes = 2 if '16' in encoding or encoding in ('yuv422', 'yuv422_yuy2', 'uyvy', 'yuyv') else \
            4 if encoding in ('rgba8', 'bgra8') else 1 if 'mono8' in encoding or '8UC1' in encoding or \
            'bayer' in encoding else 3
        row = max(width, 0) * pixel_bytes
        step = int(rng.choice([row, row + int(rng.integers(1, 9)), row - 1, 0, -row, 2 ** 40],
                              p=[0.55, 0.2, 0.1, 0.05, 0.05, 0.05]))
        size = max(step * max(height, 0), 0)
        length = int(rng.choice([size, max(size - 1, 0), size + 5, 0], p=[0.7, 0.1, 0.15, 0.05])) \
            if size < 1 << 20 else 64
        data = rng.bytes(length)
        if rng.random() < 0.2:
            data = bytearray(data)
        try:
            result = decode_raw_image(data, encoding, width, height, step, bool(rng.integers(0, 2)),
                                      max_pixels=MAX_PIXELS)
        except ImageDecodeError:
            outcomes['rejected'] += 1
            continue
        _check(result, (height, width))
        outcomes['decoded'] += 1
    assert outcomes['decoded'] > 50 and outcomes['rejected'] > 50, outcomes


@pytest.mark.parametrize('data', [None, 12, 'text', [1, 2, 3], object()])
def test_non_buffers(data):
    with pytest.raises(ImageDecodeError):
        decode_compressed_image(data, 'png')
    with pytest.raises(ImageDecodeError):
        decode_raw_image(data, 'rgb8', 1, 1, 3)
