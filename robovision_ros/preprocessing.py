# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Where a frame becomes a tensor: image decoding (sensor_msgs semantics) and model preprocessing.

The core works on buffers and numpy arrays and needs no ROS; `decode_image_msg` is the thin adapter for
`sensor_msgs/Image` and `sensor_msgs/CompressedImage`. Preprocessing follows the model directory's own
`preprocessor_config.json` (the Hugging Face image-processor semantics: resize, centre crop, rescale,
normalise), so nothing here hard-codes ImageNet or CLIP constants.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from robovision_ros.model_files import ModelLoadError, read_json


class ImageDecodeError(ValueError):
    """
    An image message that cannot be decoded.

    Raised for an unsupported encoding, an inconsistent size, corrupt data, or an image beyond the pixel or
    aspect-ratio bounds.
    """


class PreprocessConfigError(ValueError):
    """A model directory whose preprocessor config is missing or unusable."""


# The largest model input side a preprocessor config may ask for (resize or crop): a corrupt config fails with one
# line instead of allocating gigabytes per frame.
MAX_MODEL_INPUT_SIDE = 4096


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


# --- model preprocessing --------------------------------------------------------------------------------------

_PIL_RESAMPLE_NAMES = {0: 'nearest', 1: 'lanczos', 2: 'bilinear', 3: 'bicubic', 4: 'box', 5: 'hamming'}


@dataclass(frozen=True)
class PreprocessConfig:
    """Image preprocessing of one model, read from its `preprocessor_config.json`."""

    resize_shortest_edge: Optional[int]  # resize so the shorter side has this length (CLIP style) ...
    resize_hw: Optional[tuple[int, int]]  # ... or to exactly (height, width) (ViT style)
    crop_hw: Optional[tuple[int, int]]  # centre crop after resizing, if any
    resample: int  # PIL resampling filter id (2 bilinear, 3 bicubic)
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def input_hw(self) -> tuple[int, int]:
        """Height and width of the model input."""
        if self.crop_hw is not None:
            return self.crop_hw
        if self.resize_hw is not None:
            return self.resize_hw
        raise PreprocessConfigError('config resizes by shortest edge without a crop: input size varies')

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> 'PreprocessConfig':
        config = cls._from_dict(cfg)
        for what, hw in (('size', config.resize_hw), ('size', (config.resize_shortest_edge,) * 2),
                         ('crop_size', config.crop_hw)):
            if hw is not None and hw[0] is not None and not all(1 <= v <= MAX_MODEL_INPUT_SIDE for v in hw):
                raise PreprocessConfigError(f'{what} {hw[0]}x{hw[1]} in preprocessor config is outside the supported '
                                            f'range 1 .. {MAX_MODEL_INPUT_SIDE} per side')
        return config

    @classmethod
    def _from_dict(cls, cfg: dict[str, Any]) -> 'PreprocessConfig':
        size = cfg.get('size')
        shortest = None
        resize_hw = None
        if cfg.get('do_resize', True):
            if isinstance(size, dict) and 'shortest_edge' in size:
                shortest = int(size['shortest_edge'])
            elif isinstance(size, dict) and {'height', 'width'} <= set(size):
                resize_hw = (int(size['height']), int(size['width']))
            elif isinstance(size, int):
                resize_hw = (size, size)
            else:
                raise PreprocessConfigError(f'unsupported size {size!r} in preprocessor config')
        crop_hw = None
        if cfg.get('do_center_crop', False):
            crop = cfg.get('crop_size')
            if isinstance(crop, dict) and not {'height', 'width'} <= set(crop):
                raise PreprocessConfigError(f'crop_size {crop!r} in preprocessor config needs height and width')
            if isinstance(crop, dict):
                crop_hw = (int(crop['height']), int(crop['width']))
            elif isinstance(crop, int):
                crop_hw = (crop, crop)
            else:
                raise PreprocessConfigError(f'unsupported crop_size {crop!r} in preprocessor config')
        mean = tuple(float(v) for v in cfg.get('image_mean', (0.0, 0.0, 0.0))) if cfg.get(
            'do_normalize', True) else (0.0, 0.0, 0.0)
        std = tuple(float(v) for v in cfg.get('image_std', (1.0, 1.0, 1.0))) if cfg.get(
            'do_normalize', True) else (1.0, 1.0, 1.0)
        return cls(
            resize_shortest_edge=shortest,
            resize_hw=resize_hw,
            crop_hw=crop_hw,
            resample=int(cfg.get('resample', 2)),
            rescale_factor=float(cfg.get('rescale_factor', 1 / 255)) if cfg.get('do_rescale', True) else 1.0,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
        )

    @classmethod
    def from_model_dir(cls, model_dir: Path) -> 'PreprocessConfig':
        path = Path(model_dir) / 'preprocessor_config.json'
        if not path.is_file():
            raise PreprocessConfigError(f'{path} not found: the model directory must carry its preprocessor config')
        try:
            config = read_json(path)
        except ModelLoadError as error:
            raise PreprocessConfigError(str(error)) from None
        try:
            return cls.from_dict(config)
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, PreprocessConfigError):
                raise
            raise PreprocessConfigError(f'{path}: unusable preprocessor config ({type(error).__name__}: {error})') \
                from None


@dataclass(frozen=True)
class PreprocessGeometry:
    """How model-input pixels map back to source-image pixels: x_src = (x_in + crop_x) / scale_x."""

    source_hw: tuple[int, int]
    scale_y: float
    scale_x: float
    crop_y: int
    crop_x: int

    def to_source(self, y: float, x: float) -> tuple[float, float]:
        """Model-input pixel coordinates -> source-image pixel coordinates (clamped to the image)."""
        sy = (y + self.crop_y) / self.scale_y
        sx = (x + self.crop_x) / self.scale_x
        return (min(max(sy, 0.0), self.source_hw[0]), min(max(sx, 0.0), self.source_hw[1]))

    def visible_box(self, input_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1): the part of the source image that a model input of `input_hw` shows."""
        y0, x0 = self.to_source(0, 0)
        y1, x1 = self.to_source(*input_hw)
        return (int(x0), int(y0), int(round(x1)), int(round(y1)))


def resized_hw(config: PreprocessConfig, source_hw: tuple[int, int], scale: float = 1.0) -> tuple[int, int]:
    """Size after the resize step (HF's shortest-edge rule: the long side is int(short_target * long / short))."""
    h, w = source_hw
    if config.resize_hw is not None:
        return (round(config.resize_hw[0] * scale), round(config.resize_hw[1] * scale))
    if config.resize_shortest_edge is not None:
        target = round(config.resize_shortest_edge * scale)
        if h <= w:
            return (target, int(target * w / h))
        return (int(target * h / w), target)
    return (h, w)


def _crop_box(config: PreprocessConfig, hw: tuple[int, int], scale: float) -> tuple[int, int, int, int]:
    if config.crop_hw is None:
        return (0, 0, hw[0], hw[1])
    ch, cw = round(config.crop_hw[0] * scale), round(config.crop_hw[1] * scale)
    top = int(round((hw[0] - ch) / 2.0))
    left = int(round((hw[1] - cw) / 2.0))
    return (top, left, ch, cw)


# PIL's resampling filters: support radius (in output pixels) and kernel, as in PIL's Resample.c.
def _pil_bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def _pil_hamming(x: np.ndarray) -> np.ndarray:
    x = np.abs(x) * np.pi
    with np.errstate(invalid='ignore', divide='ignore'):
        value = np.sin(x) / x * (0.54 + 0.46 * np.cos(x))
    return np.where(x == 0, 1.0, np.where(x >= np.pi, 0.0, value))


_PIL_FILTERS = {
    1: (3.0, lambda x: np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)),  # lanczos
    2: (1.0, lambda x: np.maximum(1 - np.abs(x), 0.0)),  # bilinear
    3: (2.0, _pil_bicubic),
    4: (0.5, lambda x: ((x >= -0.5) & (x < 0.5)).astype(float)),  # box
    5: (1.0, _pil_hamming),
}


def _resample_weights(in_size: int, out_size: int, first: int, count: int,
                      resample: int) -> tuple[int, np.ndarray]:
    """
    Return rows `first` .. `first + count` of the matrix that resizes `in_size` samples to `out_size`.

    PIL's antialiased filters, PIL's coefficients: returns (first source index read, weights ``[count, span]``).
    Output indices outside 0 .. out_size get zero rows (padding).
    """
    scale = in_size / out_size
    index = np.arange(first, first + count)
    valid = (index >= 0) & (index < out_size)
    centers = (index + 0.5) * scale
    if resample == 0:  # nearest: the source pixel under each output centre
        lo_hi = np.clip(np.floor(centers), 0, in_size - 1).astype(np.int64)[:, None]
        taps, weights = lo_hi, np.ones((count, 1))
    else:
        support, kernel = _PIL_FILTERS.get(resample, _PIL_FILTERS[2])
        filter_scale = max(scale, 1.0)
        support *= filter_scale
        xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)
        xmax = np.minimum((centers + support + 0.5).astype(np.int64), in_size)
        taps = xmin[:, None] + np.arange(int(np.ceil(support)) * 2 + 1)[None, :]
        inside = taps < xmax[:, None]
        weights = np.where(inside, kernel((taps - centers[:, None] + 0.5) / filter_scale), 0.0)
        total = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, total, out=np.zeros_like(weights), where=total != 0)
        taps = np.where(inside, taps, xmin[:, None])
    weights[~valid] = 0
    lo = int(taps[valid].min()) if valid.any() else 0
    hi = int(taps[valid].max()) + 1 if valid.any() else 1
    matrix = np.zeros((count, hi - lo))
    rows = np.broadcast_to(np.arange(count)[:, None], taps.shape)
    keep = valid[:, None] & (weights != 0)
    np.add.at(matrix, (rows[keep], taps[keep] - lo), weights[keep])
    return lo, matrix


def _source_span(in_size: int, out_size: int, first: int, end: int, resample: int) -> tuple[int, int]:
    """
    Return the source indices [start, stop) that resized outputs `first` .. `end` read.

    The span includes a sample of slack either side (clamped to the image): what PIL needs to see to compute those
    outputs as it would from the whole.
    """
    support = _PIL_FILTERS.get(resample, (0.5, None))[0] * max(in_size / out_size, 1.0)
    start = int(first * in_size / out_size - support) - 2
    stop = int(np.ceil(end * in_size / out_size + support)) + 2
    return max(start, 0), min(stop, in_size)


class ImagePreprocessor:
    """
    RGB uint8 frames -> normalised float32 NCHW model input, matching the HF image processor.

    Resizing uses PIL with the model's resampling filter, as the HF processor does; crop, rescale and
    normalisation are fused into one multiply-add with per-channel constants computed once here.

    By default only the part of the frame that the centre crop keeps is resized (`crop_before_resize`), so the cost
    follows the model input, not the frame's shape. That equals the HF processor (resize all, then crop) up to
    PIL's uint8 rounding between its two passes, whose order PIL picks from the sizes it is given: at most one
    uint8 step on camera-like images (tested). `crop_before_resize=False` resizes the whole frame first and is
    exactly the HF processor.
    """

    def __init__(self, config: PreprocessConfig, crop_before_resize: bool = True) -> None:
        self.config = config
        self.crop_before_resize = crop_before_resize
        mean = np.asarray(config.mean, dtype=np.float32)
        std = np.asarray(config.std, dtype=np.float32)
        # (x * rescale - mean) / std == x * gain + bias
        self._gain = (config.rescale_factor / std).astype(np.float32)
        self._bias = (-mean / std).astype(np.float32)
        self._device_constants: dict[tuple[str, Any], tuple[Any, Any]] = {}
        self._device_weights_cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}

    def geometry(self, source_hw: tuple[int, int], scale: float = 1.0) -> PreprocessGeometry:
        rh, rw = resized_hw(self.config, source_hw, scale)
        top, left, _, _ = _crop_box(self.config, (rh, rw), scale)
        return PreprocessGeometry(source_hw=source_hw, scale_y=rh / source_hw[0], scale_x=rw / source_hw[1],
                                  crop_y=top, crop_x=left)

    def resize_and_crop(self, rgb: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """
        Resize (PIL, the model's filter) and centre-crop one RGB uint8 image; returns uint8 HWC.

        With `crop_before_resize`, PIL resizes only the source box that maps onto the crop (reading the filter's
        support around it) straight to the crop size; see the class docstring for how close that is to HF.
        """
        from PIL import Image

        source_hw = rgb.shape[:2]
        rh, rw = resized_hw(self.config, source_hw, scale)
        top, left, ch, cw = _crop_box(self.config, (rh, rw), scale)
        y0, y1 = max(top, 0), min(top + ch, rh)  # the part of the crop that the resized image covers
        x0, x1 = max(left, 0), min(left + cw, rw)
        if not self.crop_before_resize and (rh, rw) != source_hw:  # HF's order: resize everything, then crop
            image = Image.fromarray(np.ascontiguousarray(rgb))
            visible = np.asarray(image.resize((rw, rh), resample=self.config.resample))[y0:y1, x0:x1]
        elif (rh, rw) == source_hw:
            visible = rgb[y0:y1, x0:x1]
        else:
            # Only the source rows/cols that the kept outputs read go to PIL, with the box relative to them.
            sy, ey = _source_span(source_hw[0], rh, y0, y1, self.config.resample)
            sx, ex = _source_span(source_hw[1], rw, x0, x1, self.config.resample)
            fy, fx = source_hw[0] / rh, source_hw[1] / rw
            box = (x0 * fx - sx, y0 * fy - sy, x1 * fx - sx, y1 * fy - sy)
            image = Image.fromarray(np.ascontiguousarray(rgb[sy:ey, sx:ex]))
            visible = np.asarray(image.resize((x1 - x0, y1 - y0), resample=self.config.resample, box=box))
        if (y0, x0, y1, x1) == (top, left, top + ch, left + cw):
            return visible
        padded = np.zeros((ch, cw, 3), np.uint8)  # crop larger than the resized image: pad with black
        padded[y0 - top:y1 - top, x0 - left:x1 - left] = visible
        return padded

    def normalize(self, batch_uint8: np.ndarray) -> np.ndarray:
        """uint8 ``[B, H, W, 3]`` -> float32 ``[B, 3, H, W]`` normalised."""
        out = batch_uint8.astype(np.float32) * self._gain + self._bias
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def __call__(self, images: Sequence[np.ndarray], scale: float = 1.0) -> np.ndarray:
        """RGB uint8 images (any sizes) -> float32 ``[B, 3, H, W]``."""
        return self.normalize(np.stack([self.resize_and_crop(image, scale) for image in images]))

    def _device_weights(self, source_hw: tuple[int, int], scale: float, device: str) -> tuple[Any, ...]:
        """Per frame size: the source rows/cols the crop reads and the resampling matrices, cached on `device`."""
        import torch

        key = (source_hw, scale, str(device))
        if key not in self._device_weights_cache:
            rh, rw = resized_hw(self.config, source_hw, scale)
            top, left, ch, cw = _crop_box(self.config, (rh, rw), scale)
            if (rh, rw) == source_hw and top >= 0 and left >= 0:
                entry: tuple[Any, ...] = (top, top + ch, left, left + cw, None, None)
            else:
                y0, wy = _resample_weights(source_hw[0], rh, top, ch, self.config.resample)
                x0, wx = _resample_weights(source_hw[1], rw, left, cw, self.config.resample)
                entry = (y0, y0 + wy.shape[1], x0, x0 + wx.shape[1],
                         torch.as_tensor(wy, dtype=torch.float32, device=device),
                         torch.as_tensor(wx.T, dtype=torch.float32, device=device))
            if len(self._device_weights_cache) >= 16:  # a few camera sizes in practice
                self._device_weights_cache.clear()
            self._device_weights_cache[key] = entry
        return self._device_weights_cache[key]

    def torch_preprocess(self, images: Sequence[np.ndarray], device: str, dtype: Any, scale: float = 1.0) -> Any:
        """
        Preprocess on the GPU: resize, crop and normalise on `device` with PIL's filter coefficients.

        Upload the rows of each uint8 frame that the crop reads, once, then resize and crop in one step on `device`
        (two matrix products, rounded to uint8 between and after the passes as PIL does), and normalise. Matches the
        PIL path to within rounding (tested); the cost follows the model input, not the frame's shape.
        """
        import torch

        crops = []
        for image in images:
            y0, y1, x0, x1, wy, wx = self._device_weights(tuple(image.shape[:2]), scale, device)
            # A bgr8 frame decodes to a channel-reversed view of the message buffer: upload the buffer rows
            # themselves and reverse the channels on the device, instead of a host copy of the frame.
            reversed_channels = image.strides[-1] < 0
            rows = image[y0:y1]
            host = np.ascontiguousarray(rows[..., ::-1] if reversed_channels else rows)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', UserWarning)  # torch warns about read-only message buffers
                tensor = torch.from_numpy(host).to(device, non_blocking=True)
            if reversed_channels:
                tensor = tensor.flip(-1)
            tensor = tensor[:, x0:x1].permute(2, 0, 1).float()  # [3, rows, cols]
            if wx is not None:
                tensor = (tensor @ wx).round_().clamp_(0, 255)  # horizontal pass first, as PIL does
                tensor = (wy @ tensor).round_().clamp_(0, 255)
            crops.append(tensor.unsqueeze(0))
        key = (str(device), dtype)
        if key not in self._device_constants:
            self._device_constants[key] = (torch.as_tensor(self._gain, device=device).view(1, 3, 1, 1),
                                           torch.as_tensor(self._bias, device=device).view(1, 3, 1, 1))
        gain, bias = self._device_constants[key]
        return (torch.cat(crops) * gain + bias).to(dtype).contiguous()
