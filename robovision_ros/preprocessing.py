"""Where a frame becomes a tensor: image decoding (sensor_msgs semantics) and model preprocessing.

The core works on buffers and numpy arrays and needs no ROS; `decode_image_msg` is the thin adapter for
`sensor_msgs/Image` and `sensor_msgs/CompressedImage`. Preprocessing follows the model directory's own
`preprocessor_config.json` (the Hugging Face image-processor semantics: resize, centre crop, rescale,
normalise), so nothing here hard-codes ImageNet or CLIP constants.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np


class ImageDecodeError(ValueError):
    """An image message that cannot be decoded: unsupported encoding, inconsistent size, corrupt data."""


class PreprocessConfigError(ValueError):
    """A model directory whose preprocessor config is missing or unusable."""


# encoding -> (dtype, channels, channel order of the decoded array). 8UC3/8UC1 carry no colour semantics in
# sensor_msgs; like cv_bridge (and OpenCV, which produces them) we read 8UC3 as BGR and 8UC1 as grey.
# mono16/16UC1 are grey intensities, scaled to 8 bits by 1/256 as cv_bridge does.
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
}
SUPPORTED_ENCODINGS: tuple[str, ...] = tuple(_ENCODINGS)
SUPPORTED_COMPRESSED_FORMATS: tuple[str, ...] = ('jpeg', 'png')
DEFAULT_MAX_IMAGE_PIXELS = 8192 * 8192


def decode_raw_image(data: Any, encoding: str, width: int, height: int, step: int,
                     is_bigendian: bool = False) -> np.ndarray:
    """Decode raw image bytes to an RGB uint8 ``[height, width, 3]`` array.

    For rgb8 (and for bgr8/8UC3, as a reversed-channel view) the result is a view of `data`, not a copy.
    Rows may be padded (`step` > width * channels * itemsize); multi-byte pixels honour `is_bigendian`.
    """
    try:
        dtype, channels, order = _ENCODINGS[encoding]
    except KeyError:
        raise ImageDecodeError(
            f"encoding '{encoding}' not supported; supported: {', '.join(SUPPORTED_ENCODINGS)}") from None
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f'image size {width}x{height} is empty')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(f'step {step} is shorter than a row of {width} {encoding} pixels ({row_bytes} bytes)')
    buffer = np.frombuffer(data, dtype=np.uint8)
    if buffer.size < step * height:
        raise ImageDecodeError(
            f'data holds {buffer.size} bytes; {height} rows of step {step} need {step * height}')
    rows = buffer[:step * height].reshape(height, step)[:, :row_bytes]
    wire_dtype = dtype.newbyteorder('>' if is_bigendian else '<') if dtype.itemsize > 1 else dtype
    pixels = rows.view(wire_dtype).reshape(height, width, channels)
    if dtype.itemsize > 1:
        pixels = (pixels.astype(np.uint16) >> 8).astype(np.uint8)
    return _to_rgb(pixels, order)


def _to_rgb(pixels: np.ndarray, order: str) -> np.ndarray:
    if order == 'rgb':
        return pixels
    if order == 'bgr':
        return pixels[..., ::-1]
    if order == 'rgba':
        return pixels[..., :3]
    if order == 'bgra':
        return pixels[..., 2::-1]
    return np.repeat(pixels, 3, axis=2)  # grey


def decode_compressed_image(data: Any, format_: str) -> np.ndarray:
    """Decode a `sensor_msgs/CompressedImage` payload (jpeg or png) to an RGB uint8 array."""
    import cv2

    fmt = format_.lower()
    if not any(name in fmt for name in SUPPORTED_COMPRESSED_FORMATS):
        raise ImageDecodeError(
            f"compressed format '{format_}' not supported; supported: {', '.join(SUPPORTED_COMPRESSED_FORMATS)}")
    buffer = np.frombuffer(data, dtype=np.uint8)
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # BGR
    if decoded is None:
        raise ImageDecodeError(f"could not decode {buffer.size} bytes of '{format_}' data")
    return decoded[..., ::-1]


def decode_image_msg(msg: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """`sensor_msgs/Image` or `sensor_msgs/CompressedImage` -> RGB uint8 ``[H, W, 3]``."""
    if hasattr(msg, 'encoding'):
        if msg.width * msg.height > max_pixels:
            raise ImageDecodeError(f'image {msg.width}x{msg.height} has more than max_image_pixels {max_pixels}')
        return decode_raw_image(msg.data, msg.encoding, msg.width, msg.height, msg.step, bool(msg.is_bigendian))
    if hasattr(msg, 'format'):
        return decode_compressed_image(msg.data, msg.format)
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
            return cls.from_dict(json.loads(path.read_text()))
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


class ImagePreprocessor:
    """RGB uint8 frames -> normalised float32 NCHW model input, matching the HF image processor.

    Resizing uses PIL with the model's resampling filter, exactly as the HF processor does; crop, rescale and
    normalisation are fused into one multiply-add with per-channel constants computed once here.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        self.config = config
        mean = np.asarray(config.mean, dtype=np.float32)
        std = np.asarray(config.std, dtype=np.float32)
        # (x * rescale - mean) / std == x * gain + bias
        self._gain = (config.rescale_factor / std).astype(np.float32)
        self._bias = (-mean / std).astype(np.float32)
        self._device_constants: dict[tuple[str, Any], tuple[Any, Any]] = {}

    def geometry(self, source_hw: tuple[int, int], scale: float = 1.0) -> PreprocessGeometry:
        rh, rw = resized_hw(self.config, source_hw, scale)
        top, left, _, _ = _crop_box(self.config, (rh, rw), scale)
        return PreprocessGeometry(source_hw=source_hw, scale_y=rh / source_hw[0], scale_x=rw / source_hw[1],
                                  crop_y=top, crop_x=left)

    def resize_and_crop(self, rgb: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Resize (PIL, the model's filter) and centre-crop one RGB uint8 image; returns uint8 HWC."""
        from PIL import Image

        rh, rw = resized_hw(self.config, rgb.shape[:2], scale)
        if (rh, rw) != rgb.shape[:2]:
            image = Image.fromarray(np.ascontiguousarray(rgb))
            resized = np.asarray(image.resize((rw, rh), resample=self.config.resample))
        else:
            resized = rgb
        top, left, ch, cw = _crop_box(self.config, (rh, rw), scale)
        if top < 0 or left < 0:
            padded = np.zeros((max(ch, rh), max(cw, rw), 3), np.uint8)
            padded[max(-top, 0):max(-top, 0) + rh, max(-left, 0):max(-left, 0) + rw] = resized
            resized, top, left = padded, max(top, 0), max(left, 0)
        return resized[top:top + ch, left:left + cw]

    def normalize(self, batch_uint8: np.ndarray) -> np.ndarray:
        """uint8 ``[B, H, W, 3]`` -> float32 ``[B, 3, H, W]`` normalised."""
        out = batch_uint8.astype(np.float32) * self._gain + self._bias
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def __call__(self, images: Sequence[np.ndarray], scale: float = 1.0) -> np.ndarray:
        """RGB uint8 images (any sizes) -> float32 ``[B, 3, H, W]``."""
        return self.normalize(np.stack([self.resize_and_crop(image, scale) for image in images]))

    def torch_preprocess(self, images: Sequence[np.ndarray], device: str, dtype: Any, scale: float = 1.0) -> Any:
        """The GPU path: upload each uint8 frame once, then resize (antialiased, the model's filter), crop and
        normalise on `device`. Matches the PIL path to within resampling differences (tested)."""
        import torch
        import torch.nn.functional as F

        mode = 'bicubic' if self.config.resample == 3 else 'bilinear'
        crops = []
        for image in images:
            # A bgr8 frame decodes to a channel-reversed view of the message buffer: upload the buffer itself and
            # reverse the channels on the device, instead of a host copy of the whole frame.
            reversed_channels = image.strides[-1] < 0
            host = np.ascontiguousarray(image[..., ::-1] if reversed_channels else image)
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', UserWarning)  # torch warns about read-only message buffers
                tensor = torch.from_numpy(host).to(device, non_blocking=True)
            if reversed_channels:
                tensor = tensor.flip(-1)
            tensor = tensor.permute(2, 0, 1).unsqueeze(0).float()
            rh, rw = resized_hw(self.config, image.shape[:2], scale)
            if (rh, rw) != tuple(image.shape[:2]):
                tensor = F.interpolate(tensor, size=(rh, rw), mode=mode, antialias=True, align_corners=False)
                tensor = tensor.round_().clamp_(0, 255)  # PIL resizes to uint8
            top, left, ch, cw = _crop_box(self.config, (rh, rw), scale)
            if top < 0 or left < 0:
                raise PreprocessConfigError('crop larger than the resized image is not supported on the device path')
            crops.append(tensor[..., top:top + ch, left:left + cw])
        key = (str(device), dtype)
        if key not in self._device_constants:
            self._device_constants[key] = (torch.as_tensor(self._gain, device=device).view(1, 3, 1, 1),
                                           torch.as_tensor(self._bias, device=device).view(1, 3, 1, 1))
        gain, bias = self._device_constants[key]
        return (torch.cat(crops) * gain + bias).to(dtype).contiguous()
