# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The image codec: sensor_msgs images <-> RGB uint8 arrays, with bounds (the cv_bridge role).

`decode_raw_image` reads `sensor_msgs/Image` data by its encoding (views where possible), `decode_compressed_image`
decodes `sensor_msgs/CompressedImage` payloads (jpeg, png, tiff) with OpenCV as image_transport's subscriber does,
and `decode_image_msg` is the thin adapter for either message. `encode_raw_image` is the inverse for the raw
encodings a publisher writes. The core works on buffers and numpy arrays and needs no ROS. Model preprocessing
(resize, crop, normalise) is `preprocessing.py`. What one compressed image may cost is bounded by the decoder
itself (OpenCV's own size limits, set here before cv2 loads; 8-bit output; a JPEG scan limit): see
`decode_compressed_image` and docs/architecture.md.
"""
from __future__ import annotations

import math
import os
import re
import struct
import sys
import tempfile
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, MutableMapping, Optional

import numpy as np


class ImageDecodeError(ValueError):
    """
    An image message that cannot be decoded.

    Raised for an unsupported encoding, an inconsistent size, corrupt data, or an image beyond the pixel or
    aspect-ratio bounds.
    """


# Bounds on what one frame may make the decoders allocate. 8192 x 8192 (67 Mpx) holds an 8K UHD frame
# (7680 x 4320) with room to spare; no camera produces an aspect ratio beyond 16:1 (a 32:9 panorama is 3.6).
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192
MAX_ASPECT_RATIO = 16.0

# encoding -> (dtype, channels, layout of the decoded array). 8UC3/8UC1 carry no colour semantics in
# sensor_msgs; like cv_bridge (and OpenCV, which produces them) we read 8UC3 as BGR and 8UC1 as grey.
# mono16/16UC1 are grey intensities, scaled to 8 bits by 1/256 as cv_bridge does. YUV 4:2:2 carries two bytes
# per pixel (U/V shared by each pixel pair); Bayer mosaics carry one sample per pixel.
_ENCODINGS: dict[str, tuple[np.dtype, int, str]] = {
    'rgb8': (np.dtype(np.uint8), 3, 'rgb'),
    'bgr8': (np.dtype(np.uint8), 3, 'bgr'),
    'rgba8': (np.dtype(np.uint8), 4, 'rgba'),
    'bgra8': (np.dtype(np.uint8), 4, 'bgra'),
    'mono8': (np.dtype(np.uint8), 1, 'grey'),
    '8UC1': (np.dtype(np.uint8), 1, 'grey'),
    '8UC3': (np.dtype(np.uint8), 3, 'bgr'),
    'mono16': (np.dtype(np.uint16), 1, 'grey'),
    '16UC1': (np.dtype(np.uint16), 1, 'grey'),
    'yuv422': (np.dtype(np.uint8), 2, 'uyvy'),
    'uyvy': (np.dtype(np.uint8), 2, 'uyvy'),
    'yuv422_yuy2': (np.dtype(np.uint8), 2, 'yuyv'),
    'yuyv': (np.dtype(np.uint8), 2, 'yuyv'),
    **{f'bayer_{pattern}{bits}': (np.dtype(np.uint8 if bits == 8 else np.uint16), 1, f'bayer_{pattern}')
       for bits in (8, 16) for pattern in ('rggb', 'bggr', 'gbrg', 'grbg')},
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
SUPPORTED_COMPRESSED_FORMATS: tuple[str, ...] = ('jpeg', 'png', 'tiff')


def _cv2_code(layout: str) -> int:
    """
    Return the OpenCV conversion code of a YUV/Bayer layout to RGB.

    OpenCV names Bayer patterns by the second row's first two pixels, so its names look shifted: cv_bridge maps
    bayer_rggb8 to COLOR_BayerBG2BGR, and so do we (to RGB).
    """
    import cv2

    return {
        'uyvy': cv2.COLOR_YUV2RGB_UYVY,
        'yuyv': cv2.COLOR_YUV2RGB_YUY2,
        'bayer_rggb': cv2.COLOR_BayerBG2RGB,
        'bayer_bggr': cv2.COLOR_BayerRG2RGB,
        'bayer_gbrg': cv2.COLOR_BayerGR2RGB,
        'bayer_grbg': cv2.COLOR_BayerGB2RGB,
    }[layout]


def check_image_bounds(width: int, height: int, max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
                       max_aspect_ratio: Optional[float] = MAX_ASPECT_RATIO, what: str = 'image') -> None:
    """
    Raise ImageDecodeError unless a `width` x `height` image is non-empty and within the bounds.

    The bounds are the pixel and aspect-ratio bounds (None disables a bound). Called before anything of that size is
    allocated.
    """
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f'{what} size {width}x{height} is empty')
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            f'{what} of {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} pixels')
    if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * min(width, height):
        raise ImageDecodeError(
            f'{what} of {width}x{height} has an aspect ratio of {max(width, height) / min(width, height):.1f}; '
            f'the limit is {max_aspect_ratio:g}')


def _as_bytes(data: Any) -> np.ndarray:
    """Any buffer (bytes, bytearray, array.array, memoryview, numpy array) -> a flat uint8 view, no copy."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as error:
        raise ImageDecodeError(f'image data of type {type(data).__name__} is not a byte buffer: {error}') from None


def decode_raw_image(data: Any, encoding: str, width: int, height: int, step: int, is_bigendian: bool = False,
                     max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
                     max_aspect_ratio: Optional[float] = MAX_ASPECT_RATIO) -> np.ndarray:
    """
    Decode raw image bytes to an RGB uint8 ``[height, width, 3]`` array.

    For rgb8 (and for bgr8/8UC3, as a reversed-channel view) the result is a view of `data`, not a copy.
    Rows may be padded (`step` > width * channels * itemsize); multi-byte pixels honour `is_bigendian`.
    YUV 4:2:2 and Bayer encodings are converted with OpenCV as cv_bridge converts them. Sizes beyond
    `max_pixels` or `max_aspect_ratio` are rejected before anything is allocated.
    """
    try:
        dtype, channels, layout = _ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise ImageDecodeError(
            f"encoding '{encoding}' not supported; supported: {', '.join(SUPPORTED_ENCODINGS)}") from None
    width, height, step = int(width), int(height), int(step)
    check_image_bounds(width, height, max_pixels, max_aspect_ratio)
    if layout in ('uyvy', 'yuyv') and width % 2:
        raise ImageDecodeError(f'{encoding} packs pixel pairs: width {width} must be even')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(f'step {step} is shorter than a row of {width} {encoding} pixels ({row_bytes} bytes)')
    buffer = _as_bytes(data)
    if buffer.size < step * height:
        raise ImageDecodeError(
            f'data holds {buffer.size} bytes; {height} rows of step {step} need {step * height}')
    rows = buffer[:step * height].reshape(height, step)[:, :row_bytes]
    wire_dtype = dtype.newbyteorder('>' if is_bigendian else '<') if dtype.itemsize > 1 else dtype
    pixels = rows.view(wire_dtype).reshape(height, width, channels)
    if layout.startswith('bayer'):
        return _demosaic(pixels[..., 0], layout)
    if dtype.itemsize > 1:
        pixels = (pixels.astype(np.uint16) >> 8).astype(np.uint8)
    return _to_rgb(pixels, layout)


def _demosaic(mosaic: np.ndarray, layout: str) -> np.ndarray:
    """
    Demosaic a Bayer mosaic (uint8, or uint16 in any byte order) to RGB uint8.

    16-bit samples are demosaiced at full depth and then scaled by 1/256, as for mono16.
    """
    import cv2

    native = mosaic if mosaic.dtype == np.uint8 else mosaic.astype(np.uint16)
    try:
        rgb = cv2.cvtColor(native, _cv2_code(layout))
    except cv2.error as error:
        raise ImageDecodeError(f'{layout} mosaic of {mosaic.shape[1]}x{mosaic.shape[0]} failed to convert: '
                               f'{error.err}') from None
    return rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)


def _to_rgb(pixels: np.ndarray, layout: str) -> np.ndarray:
    if layout == 'rgb':
        return pixels
    if layout == 'bgr':
        return pixels[..., ::-1]
    if layout == 'rgba':
        return pixels[..., :3]
    if layout == 'bgra':
        return pixels[..., 2::-1]
    if layout in ('uyvy', 'yuyv'):
        import cv2

        return cv2.cvtColor(pixels, _cv2_code(layout))
    return np.repeat(pixels, 3, axis=2)  # grey


# --- decoder limits -------------------------------------------------------------------------------------------
#
# A compressed image's true size is what its codec (libjpeg, libpng, libtiff inside OpenCV) reads from the header,
# and only the codec can be trusted to read it: a second parser of ours can disagree with it. OpenCV enforces
# these variables itself, from the codec's header read, before it allocates the image. It reads them once,
# when its library loads, so they must be in the environment before cv2 is first imported: this module sets them on
# import, and `_require_decoder_limits` checks on the first decode that the loaded OpenCV took them. A set but
# unusable value (OpenCV aborts the whole process on an empty or non-numeric one) is replaced, with a warning.
OPENCV_LIMIT_VARIABLES = ('OPENCV_IO_MAX_IMAGE_PIXELS', 'OPENCV_IO_MAX_IMAGE_WIDTH', 'OPENCV_IO_MAX_IMAGE_HEIGHT')
# A progressive JPEG costs a pass over the whole image per scan (about 13 ms at 8192 x 8192 here); OpenCV has no scan
# limit; libjpeg's progressive mode has 6-10 scans (libjpeg's own scan scripts), so 100 is generous. It is also
# libtiff's own limit for JPEG-compressed TIFF strips (LIBTIFF_JPEG_MAX_ALLOWED_SCAN_NUMBER), which libtiff enforces.
MAX_JPEG_SCANS = 100
_OPENCV_SIZE_VALUE = re.compile(r'([0-9]{1,19})(|KB|Kb|kb|MB|Mb|mb)')  # what OpenCV's parser accepts
_MAX_SIDE_LIMIT = 1 << 31  # a TIFF side is 32 bits; a larger limit cannot be checked (see _require_decoder_limits)


@dataclass(frozen=True)
class DecoderLimits:
    """The process-wide limits that OpenCV enforces on every compressed image before allocating it."""

    max_pixels: int
    max_width: int
    max_height: int
    replaced: tuple[str, ...] = ()  # inherited values that were unusable, and what replaced them


def decoder_limits_from_environment(environ: MutableMapping[str, str]) -> DecoderLimits:
    """
    Read OpenCV's decoder limits from `environ`, fill in the missing ones, and write them all back.

    The pixel limit defaults to DEFAULT_MAX_IMAGE_PIXELS; each side to the longest side that the pixel limit and
    MAX_ASPECT_RATIO allow together (32768 by default), so that OpenCV also refuses the extreme aspect ratios of
    images whose pixel count is within the limit. A value that OpenCV could not parse (it would abort the process)
    or that is zero is replaced by the default and listed in `replaced`.
    """
    replaced: list[str] = []

    def read(name: str, default: int, ceiling: int) -> int:
        text = environ.get(name)
        if text is None:
            return default
        match = _OPENCV_SIZE_VALUE.fullmatch(text)
        value = int(match.group(1)) * {'': 1, 'k': 1 << 10, 'm': 1 << 20}[match.group(2)[:1].lower()] if match else 0
        if 0 < value <= ceiling:
            return value
        replaced.append(f'{name}={text!r} is not a whole number from 1 to {ceiling}; using {default}')
        return default

    pixels = read('OPENCV_IO_MAX_IMAGE_PIXELS', DEFAULT_MAX_IMAGE_PIXELS, 1 << 62)
    side = min(math.isqrt(int(pixels * MAX_ASPECT_RATIO)), _MAX_SIDE_LIMIT)
    limits = DecoderLimits(pixels, read('OPENCV_IO_MAX_IMAGE_WIDTH', side, _MAX_SIDE_LIMIT),
                           read('OPENCV_IO_MAX_IMAGE_HEIGHT', side, _MAX_SIDE_LIMIT), tuple(replaced))
    for name, value in zip(OPENCV_LIMIT_VARIABLES, (limits.max_pixels, limits.max_width, limits.max_height)):
        environ[name] = str(value)
    return limits


DECODER_LIMITS = decoder_limits_from_environment(os.environ)
for _note in DECODER_LIMITS.replaced:
    warnings.warn(f'robovision_ros.image_codec: {_note}', RuntimeWarning, stacklevel=1)


# --- compressed images ----------------------------------------------------------------------------------------

# Names a format string may use for each codec we decode (sensor_msgs/CompressedImage lists jpeg, png, tiff).
_CODEC_NAMES = {'jpeg': 'jpeg', 'jpg': 'jpeg', 'png': 'png', 'tiff': 'tiff', 'tif': 'tiff'}
# Words of image_transport's format strings ("bgr8; jpeg compressed bgr8") that name no codec.
_FORMAT_WORDS = {'compressed', *(name.lower() for name in _ENCODINGS), 'rgb16', 'bgr16', 'rgba16', 'bgra16'}


def _sniff_codec(head: bytes) -> Optional[str]:
    """Return the codec that a payload's magic bytes identify, if any of those we decode."""
    if head[:2] == b'\xff\xd8':
        return 'jpeg'
    if head[:8] == b'\x89PNG\r\n\x1a\n':
        return 'png'
    if head[:4] in (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+'):
        return 'tiff'
    return None


def _parse_format(format_: str) -> tuple[Optional[str], list[str], bool]:
    """
    Parse an image_transport format string.

    Returns (codec it names, other words naming no known codec, whether the decoded channels are in RGB order).
    image_transport writes 'jpeg' / 'png' (old) or '<encoding>; <codec> compressed <target>' (e.g. 'rgb8; jpeg
    compressed bgr8'); as its subscriber, we read the channels OpenCV decodes as RGB only when the target says
    'compressed rgb...', else as BGR.
    """
    text = format_.lower()
    codec_part = text.split(';', 1)[1] if ';' in text else text
    words = re.findall(r'[a-z0-9_]+', codec_part)
    codec = next((_CODEC_NAMES[word] for word in words if word in _CODEC_NAMES), None)
    unknown = [word for word in words if word not in _CODEC_NAMES and word not in _FORMAT_WORDS]
    return codec, unknown, 'compressed rgb' in codec_part


# What the C libraries under cv2.imdecode write to stderr themselves: OpenCV's log lines (libtiff's messages arrive
# through them), libpng's and libjpeg's default printers (OpenCV installs no handler for either). The libjpeg lines
# are its warnings (jerror.h JWRN_*); its errors end the decode without printing.
_DECODER_LINE = re.compile(
    r'\[\s*(?:FATAL|ERROR|WARN|INFO|DEBUG|VERBOSE)\s*:\d+@[0-9.]+\]|libpng (?:warning|error)|Corrupt JPEG data'
    r'|Premature end of JPEG file|Invalid SOS parameters|Inconsistent progression sequence'
    r'|Unknown Adobe color transform|Warning: unknown JFIF|Warning: thumbnail image size|Application transferred too')
_DECODER_CONTINUATION = re.compile(r'> |\s|libtiff |$')  # OpenCV's multi-line errors, libtiff's wrapped warnings
_OPENCV_LOG_PREFIX = re.compile(r'\[[^\]]*\]\s+(?:global\s+)?\S+:\d+\s+\S+\s+')  # "[ WARN:0@0.1] global f.cpp:12 fn "
_MAX_CAPTURED_BYTES = 1 << 16
_stderr_lock = threading.Lock()
_stderr_capture: Optional[int] = None  # an unnamed file, opened once, that stands in for fd 2 during decodes


class _ThreadMessages(threading.local):
    def __init__(self) -> None:
        self.lines: list[str] = []


_decoder_warnings = _ThreadMessages()


def take_decoder_messages() -> list[str]:
    """
    Return, and forget, what the decoders reported about images this thread decoded successfully.

    These are warnings (a truncated JPEG filled with grey, a PNG chunk with a bad CRC): the image was decoded and
    returned. Messages of a decode that failed are in its ImageDecodeError instead. At most 8 are kept.
    """
    lines, _decoder_warnings.lines = _decoder_warnings.lines, []
    return lines


def _split_decoder_output(text: str) -> tuple[list[str], str]:
    """
    Return the decoders' messages in `text` (one line each, errors first) and the rest, which other threads wrote.

    A message that the decoder wrapped over several lines (OpenCV's "> " lines, libtiff's notes) becomes one line.
    """
    messages: list[tuple[bool, str]] = []  # (not an error, message)
    foreign: list[str] = []
    in_message = False
    for line in text.splitlines():
        if _DECODER_LINE.match(line):
            error = line.lstrip('[ ').startswith(('ERROR', 'FATAL')) or line.startswith('libpng error')
            messages.append((not error, _OPENCV_LOG_PREFIX.sub('', line, count=1).strip()))
            in_message = True
        elif in_message and _DECODER_CONTINUATION.match(line):
            if line.strip('> \t'):
                messages[-1] = (messages[-1][0], f"{messages[-1][1]} {line.strip('> ')}")
        else:
            foreign.append(line)
            in_message = False
    return [message for _, message in sorted(messages, key=lambda item: item[0])], \
        ''.join(line + '\n' for line in foreign)


def _anonymous_file() -> int:
    """Return the descriptor of a new file with no name (in memory where the kernel offers it)."""
    if hasattr(os, 'memfd_create'):
        return os.memfd_create('robovision-decoder-stderr')
    descriptor, path = tempfile.mkstemp(prefix='robovision-decoder-stderr-')
    os.unlink(path)
    return descriptor


@contextmanager
def _decoder_output() -> Iterator[list[str]]:
    """
    Collect what the decoders print to stderr during the block, so that it reaches the caller, not the terminal.

    OpenCV's log, libpng and libjpeg write to file descriptor 2 from C; nothing in Python can redirect them but the
    descriptor itself. Decodes that capture are serialised by a lock. Lines that are not a decoder's (another thread
    logging meanwhile) are written to the real stderr when the block ends, delayed, not lost; only the first 64 KiB
    written during one block are read (a hostile TIFF can make libtiff warn once per tag).
    """
    global _stderr_capture
    messages: list[str] = []
    with _stderr_lock:
        if _stderr_capture is None:
            _stderr_capture = _anonymous_file()
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(_stderr_capture, 2)
        try:
            yield messages
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            size = os.lseek(_stderr_capture, 0, os.SEEK_END)
            os.lseek(_stderr_capture, 0, os.SEEK_SET)
            text = os.read(_stderr_capture, min(size, _MAX_CAPTURED_BYTES)).decode(errors='replace')
            os.ftruncate(_stderr_capture, 0)
            os.lseek(_stderr_capture, 0, os.SEEK_SET)
            found, foreign = _split_decoder_output(text)
            messages.extend(found)
            if foreign:
                os.write(2, foreign.encode())


def _tiff_header(width: int, height: int) -> bytes:
    """Return a TIFF whose only image claims `width` x `height` 8-bit grey pixels (and holds one byte of them)."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 8 + 2 + 8 * 12 + 4),
               (277, 3, 1), (279, 4, 1)]
    ifd = struct.pack('<H', len(entries)) + b''.join(struct.pack('<HHII', tag, kind, 1, value)
                                                     for tag, kind, value in entries) + b'\0\0\0\0'
    return b'II*\0' + struct.pack('<I', 8) + ifd + b'\0'


def _imdecode(buffer: np.ndarray) -> tuple[Optional[np.ndarray], Optional[str], list[str]]:
    """
    Return cv2.imdecode's image (None if it failed), its exception text if it raised, and the decoders' messages.

    IMREAD_COLOR_BGR: OpenCV converts every image to 8-bit BGR as it decodes, so the image it allocates is 3 bytes
    per pixel whatever the file's sample format, and libtiff refuses floating-point and 32/64-bit samples before
    reading any (TIFFRGBAImageOK). IMREAD_IGNORE_ORIENTATION: the pixels as the camera sent them, as
    image_transport's subscriber reads them.
    """
    import cv2

    image, failure = None, None
    with _decoder_output() as messages:
        try:
            image = cv2.imdecode(buffer, cv2.IMREAD_COLOR_BGR | cv2.IMREAD_IGNORE_ORIENTATION)
        except cv2.error as error:
            failure = error.err
    return image, failure, messages


_limits_in_effect: Optional[bool] = None


def _require_decoder_limits() -> None:
    """
    Raise ImageDecodeError unless the loaded OpenCV enforces DECODER_LIMITS.

    It does unless cv2 was imported before this module set the environment (then OpenCV runs with its defaults of
    2^30 pixels); checked once, by asking OpenCV to decode a TIFF header one pixel wider than the limit.
    """
    global _limits_in_effect
    if _limits_in_effect is None:
        _, failure, _ = _imdecode(np.frombuffer(_tiff_header(DECODER_LIMITS.max_width + 1, 1), np.uint8))
        _limits_in_effect = failure is not None and 'CV_IO_MAX_IMAGE_WIDTH' in failure
    if not _limits_in_effect:
        raise ImageDecodeError(
            'compressed images are refused: OpenCV was loaded before robovision_ros.image_codec set its decoder '
            f'limits ({", ".join(OPENCV_LIMIT_VARIABLES)}); import robovision_ros.image_codec before cv2, or export '
            'those variables before the process starts')


def _count_jpeg_scans(buffer: np.ndarray) -> int:
    """
    Return an upper bound on the scans libjpeg will decode: the number of start-of-scan markers (FF DA) in the bytes.

    Entropy-coded data cannot contain FF DA (an FF there is followed by 00 or a restart marker), so every scan libjpeg
    reads starts at one of them; occurrences inside other segments only make the count larger.
    """
    return buffer.tobytes().count(b'\xff\xda')


def decode_compressed_image(data: Any, format_: str, max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
                            max_aspect_ratio: Optional[float] = MAX_ASPECT_RATIO) -> np.ndarray:
    """
    Decode a `sensor_msgs/CompressedImage` payload (jpeg, png or tiff) to an RGB uint8 array.

    The payload's magic bytes decide the codec; the format string decides the channel order (see `_parse_format`)
    and, when the bytes are no image we decode, the error. What one payload can cost is bounded by the decoder
    itself: OpenCV refuses, from the size its codec reads in the header and before allocating, an image beyond the
    process-wide DECODER_LIMITS; it decodes to 8-bit BGR, so an image costs 3 bytes per pixel whatever its sample
    format, and libtiff refuses floating-point samples; a JPEG may have at most MAX_JPEG_SCANS scans. The decoded
    size is then checked against `max_pixels` and `max_aspect_ratio`. Grey images become RGB, alpha is dropped,
    16-bit samples become 8-bit as the codec scales them (the high byte; libtiff rounds colour TIFFs instead, a
    difference of at most one level). What the codecs print is captured: on failure it is in the error; on success
    it is kept for `take_decoder_messages`.
    """
    if not isinstance(format_, str):
        raise ImageDecodeError(f'compressed format must be a string, not {type(format_).__name__}')
    buffer = _as_bytes(data)
    named, unknown, rgb_order = _parse_format(format_)
    codec = _sniff_codec(buffer[:8].tobytes())
    if codec is None:
        supported = ', '.join(SUPPORTED_COMPRESSED_FORMATS)
        if named is not None:
            raise ImageDecodeError(
                f"could not decode {buffer.size} bytes of '{format_}' data: no {named} signature at the start")
        if unknown:
            raise ImageDecodeError(f"compressed format '{format_}' not supported; supported: {supported}")
        raise ImageDecodeError(
            f"could not decode {buffer.size} bytes of '{format_}' data: not {supported} by its first bytes")
    if codec == 'jpeg' and (scans := _count_jpeg_scans(buffer)) > MAX_JPEG_SCANS:
        raise ImageDecodeError(f'jpeg data has {scans} start-of-scan markers; at most {MAX_JPEG_SCANS} scans are '
                               'decoded (a progressive JPEG has about 10)')
    _require_decoder_limits()
    decoded, failure, messages = _imdecode(buffer)
    for variable, claim in (('PIXELS', f'more than {DECODER_LIMITS.max_pixels} pixels'),
                            ('WIDTH', f'a width over {DECODER_LIMITS.max_width}'),
                            ('HEIGHT', f'a height over {DECODER_LIMITS.max_height}')):
        if failure is not None and f'CV_IO_MAX_IMAGE_{variable}' in failure:
            raise ImageDecodeError(f'{codec} image refused by its decoder before decoding: the header claims {claim} '
                                   f'(the process-wide limit OPENCV_IO_MAX_IMAGE_{variable})')
    if decoded is None or decoded.size == 0:
        reason = '; '.join(([' '.join(failure.split())] if failure else []) + messages[:3])
        raise ImageDecodeError(f"could not decode {buffer.size} bytes of '{format_}' data"
                               + (f': {reason[:400]}' if reason else ''))
    if messages:
        _decoder_warnings.lines = (_decoder_warnings.lines + messages)[:8]
    height, width = decoded.shape[:2]
    check_image_bounds(width, height, max_pixels, max_aspect_ratio, what=f'decoded {codec} image')
    return decoded if rgb_order else decoded[..., ::-1]


def decode_image_msg(msg: Any, max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
                     max_aspect_ratio: Optional[float] = MAX_ASPECT_RATIO) -> np.ndarray:
    """`sensor_msgs/Image` or `sensor_msgs/CompressedImage` -> RGB uint8 ``[H, W, 3]``, within the given bounds."""
    if hasattr(msg, 'encoding'):
        return decode_raw_image(msg.data, msg.encoding, msg.width, msg.height, msg.step, bool(msg.is_bigendian),
                                max_pixels, max_aspect_ratio)
    if hasattr(msg, 'format'):
        return decode_compressed_image(msg.data, msg.format, max_pixels, max_aspect_ratio)
    raise ImageDecodeError(f'{type(msg).__name__} is neither sensor_msgs/Image nor sensor_msgs/CompressedImage')


def encode_raw_image(rgb: np.ndarray, encoding: str) -> tuple[bytes, int]:
    """RGB uint8 -> (bytes, step) in `encoding` (rgb8, bgr8, rgba8, bgra8, mono8); the inverse of decoding."""
    rgb = np.asarray(rgb, dtype=np.uint8)
    if encoding == 'rgb8':
        out = rgb
    elif encoding in ('bgr8', '8UC3'):
        out = rgb[..., ::-1]
    elif encoding == 'rgba8':
        out = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif encoding == 'bgra8':
        out = np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    elif encoding in ('mono8', '8UC1'):
        out = rgb.mean(axis=2, keepdims=True).round().astype(np.uint8)
    else:
        raise ImageDecodeError(f"cannot encode to '{encoding}'; supported: rgb8, bgr8, rgba8, bgra8, mono8")
    out = np.ascontiguousarray(out)
    return out.tobytes(), out.shape[1] * out.shape[2]
