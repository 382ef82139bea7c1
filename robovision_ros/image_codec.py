# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The image codec: sensor_msgs images <-> RGB uint8 arrays, with bounds (the cv_bridge role).

`decode_raw_image` reads `sensor_msgs/Image` data by its encoding (views where possible), `decode_compressed_image`
decodes `sensor_msgs/CompressedImage` payloads (jpeg, png, tiff) with OpenCV as image_transport's subscriber does,
and `decode_image_msg` is the thin adapter for either message. `encode_raw_image` is the inverse for the raw
encodings a publisher writes. The core works on buffers and numpy arrays and needs no ROS. Model preprocessing
(resize, crop, normalise) is `preprocessing.py`.
"""
from __future__ import annotations

import re
from typing import Any, Optional

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


# --- compressed images ----------------------------------------------------------------------------------------

# Names a format string may use for each codec we decode (sensor_msgs/CompressedImage lists jpeg, png, tiff).
_CODEC_NAMES = {'jpeg': 'jpeg', 'jpg': 'jpeg', 'png': 'png', 'tiff': 'tiff', 'tif': 'tiff'}
# Words of image_transport's format strings ("bgr8; jpeg compressed bgr8") that name no codec.
_FORMAT_WORDS = {'compressed', *(name.lower() for name in _ENCODINGS), 'rgb16', 'bgr16', 'rgba16', 'bgra16'}
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # DHT, JPG and DAC share the range
_HEADER_SCAN_LIMIT = 1 << 20  # a JPEG's frame header (SOF) must start within its first MiB


def _sniff_codec(head: bytes) -> Optional[str]:
    """Return the codec that a payload's magic bytes identify, if any of those we decode."""
    if head[:2] == b'\xff\xd8':
        return 'jpeg'
    if head[:8] == b'\x89PNG\r\n\x1a\n':
        return 'png'
    if head[:4] in (b'II*\x00', b'MM\x00*', b'II+\x00', b'MM\x00+'):
        return 'tiff'
    return None


def _jpeg_size(data: memoryview) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header (SOFn), walking the marker segments before it."""
    end = min(len(data), _HEADER_SCAN_LIMIT)
    i = 2
    while i + 4 <= end:
        if data[i] != 0xFF:
            raise ImageDecodeError(f'corrupt JPEG: no marker at byte {i}')
        while i < end and data[i] == 0xFF:  # fill bytes
            i += 1
        if i + 3 > end:
            break
        marker = data[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            break
        length = int.from_bytes(data[i:i + 2], 'big')
        if length < 2:
            raise ImageDecodeError(f'corrupt JPEG: segment length {length} at byte {i}')
        if marker in _JPEG_SOF_MARKERS:
            if i + 7 > len(data):
                break
            height = int.from_bytes(data[i + 3:i + 5], 'big')
            width = int.from_bytes(data[i + 5:i + 7], 'big')
            return width, height
        i += length
    raise ImageDecodeError('corrupt JPEG: no frame header (SOF marker) with the image size')


def _png_size(data: memoryview) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which must come first."""
    if len(data) < 24 or bytes(data[12:16]) != b'IHDR':
        raise ImageDecodeError('corrupt PNG: no IHDR chunk after the signature')
    return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')


def _tiff_size(data: memoryview) -> tuple[int, int]:
    """(width, height) of a TIFF's first image (the one OpenCV decodes), from its first IFD."""
    order = 'little' if bytes(data[:2]) == b'II' else 'big'
    if int.from_bytes(data[2:4], order) != 42:
        raise ImageDecodeError('BigTIFF is not supported')
    offset = int.from_bytes(data[4:8], order)
    if offset + 2 > len(data):
        raise ImageDecodeError(f'corrupt TIFF: first IFD at {offset} lies beyond the {len(data)} bytes')
    entries = int.from_bytes(data[offset:offset + 2], order)
    size: dict[int, int] = {}
    for k in range(entries):
        entry = offset + 2 + 12 * k
        if entry + 12 > len(data):
            break
        tag = int.from_bytes(data[entry:entry + 2], order)
        kind = int.from_bytes(data[entry + 2:entry + 4], order)
        if tag in (256, 257) and kind in (3, 4):  # ImageWidth, ImageLength as SHORT or LONG
            size[tag] = int.from_bytes(data[entry + 8:entry + (10 if kind == 3 else 12)], order)
    if 256 not in size or 257 not in size:
        raise ImageDecodeError('corrupt TIFF: first IFD has no image width and length')
    return size[256], size[257]


_HEADER_READERS = {'jpeg': _jpeg_size, 'png': _png_size, 'tiff': _tiff_size}


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


def decode_compressed_image(data: Any, format_: str, max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
                            max_aspect_ratio: Optional[float] = MAX_ASPECT_RATIO) -> np.ndarray:
    """
    Decode a `sensor_msgs/CompressedImage` payload (jpeg, png or tiff) to an RGB uint8 array.

    The payload's magic bytes decide the codec; the format string decides the channel order (see
    `_parse_format`) and, when the bytes are no image we decode, the error. The size in the image header is
    checked against `max_pixels` and `max_aspect_ratio` before decoding. Grey images become RGB, alpha is dropped,
    16-bit samples are scaled by 1/256.
    """
    import cv2

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
    width, height = _HEADER_READERS[codec](memoryview(buffer))
    check_image_bounds(width, height, max_pixels, max_aspect_ratio, what=f'{codec} image')
    try:
        decoded = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)  # as image_transport's subscriber decodes
    except cv2.error as error:
        raise ImageDecodeError(f"could not decode {buffer.size} bytes of '{format_}' data: {error.err}") from None
    if decoded is None or decoded.size == 0:
        raise ImageDecodeError(f"could not decode {buffer.size} bytes of '{format_}' data")
    return _decoded_to_rgb(decoded, rgb_order, format_)


def _decoded_to_rgb(decoded: np.ndarray, rgb_order: bool, format_: str) -> np.ndarray:
    """Convert what cv2.imdecode(IMREAD_UNCHANGED) returns (grey, BGR or BGRA; uint8 or uint16) to RGB uint8."""
    if decoded.dtype == np.uint16:
        decoded = (decoded >> 8).astype(np.uint8)
    elif decoded.dtype != np.uint8:
        raise ImageDecodeError(f"'{format_}' image has {decoded.dtype} samples; only 8- and 16-bit are supported")
    if decoded.ndim == 2:
        decoded = decoded[..., None]
    channels = decoded.shape[2]
    if channels in (1, 2):  # grey, grey + alpha
        return np.repeat(decoded[..., :1], 3, axis=2)
    if channels in (3, 4):
        return decoded[..., :3] if rgb_order else decoded[..., 2::-1]
    raise ImageDecodeError(f"'{format_}' image has {channels} channels; expected 1 to 4")


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
