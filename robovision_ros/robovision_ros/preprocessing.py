# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Where a decoded frame becomes a tensor: model preprocessing.

Preprocessing follows the model directory's own `preprocessor_config.json` (the Hugging Face image-processor
semantics: resize, centre crop, rescale, normalise), so nothing here hard-codes ImageNet or CLIP constants.
Frames arrive as RGB uint8 arrays from the image codec (`image_codec.py`).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from robovision_ros.model_files import ModelLoadError, read_json


class PreprocessConfigError(ValueError):
    """A model directory whose preprocessor config is missing or unusable."""


# The largest model input side a preprocessor config may ask for (resize or crop): a corrupt config fails with one
# line instead of allocating gigabytes per frame.
MAX_MODEL_INPUT_SIDE = 4096

# What part of a frame the model sees (the `input_mode` parameter).
CROP = 'crop'  # the model's own preprocessing: resize and centre crop (or squash) to the native input
FULL_FRAME = 'full_frame'  # the whole frame, aspect kept: short side at the native size, both sides patch multiples
INPUT_MODES = (CROP, FULL_FRAME)


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
    # Pad the frame to a square (bottom and right, black) and resize that to the square `resize_hw`: the whole frame
    # is seen, undistorted (OWLv2's `do_pad`). Only the frame's own pixels (and the padding its filter reaches) are
    # resized: the cost follows the frame, not the square.
    pad_to_square: bool = False

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
        pad_to_square = bool(cfg.get('do_pad', False))
        if pad_to_square and (resize_hw is None or resize_hw[0] != resize_hw[1] or crop_hw is not None):
            raise PreprocessConfigError(f'do_pad needs a square size and no centre crop; got size {size!r}, '
                                        f'crop_size {cfg.get("crop_size")!r}')
        return cls(
            resize_shortest_edge=shortest,
            resize_hw=resize_hw,
            crop_hw=crop_hw,
            resample=int(cfg.get('resample', 2)),
            rescale_factor=float(cfg.get('rescale_factor', 1 / 255)) if cfg.get('do_rescale', True) else 1.0,
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            pad_to_square=pad_to_square,
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


def full_frame_hw(native_hw: tuple[int, int], source_hw: tuple[int, int], patch_size: int,
                  scale: float = 1.0) -> tuple[int, int]:
    """
    Return the model input size that shows a whole `source_hw` frame with its aspect kept.

    The shorter side gets the native input's shorter side (times `scale`), the longer side follows the frame's
    aspect; both are rounded to the nearest multiple of `patch_size` (at least one patch), so that every input pixel
    falls in a patch: 480x640 with a 224 input and patch 14 -> 224x294.
    """
    short = min(native_hw) * scale
    h, w = source_hw
    target = (short, short * w / h) if h <= w else (short * h / w, short)
    return tuple(max(patch_size, int(round(side / patch_size)) * patch_size) for side in target)  # type: ignore


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

    `full_frame_patch` (the model's patch size) switches to input mode full_frame: no crop, the whole frame resized
    to `full_frame_hw` with the config's filter and normalisation; the input size then follows the frame's aspect.
    """

    def __init__(self, config: PreprocessConfig, crop_before_resize: bool = True,
                 full_frame_patch: Optional[int] = None) -> None:
        if full_frame_patch is not None and config.pad_to_square:
            raise PreprocessConfigError('input_mode full_frame resizes the whole frame with its aspect kept; this '
                                        'model pads every frame to a square (do_pad) and takes that square only')
        self.config = config
        self.crop_before_resize = crop_before_resize
        self.full_frame_patch = full_frame_patch
        mean = np.asarray(config.mean, dtype=np.float32)
        std = np.asarray(config.std, dtype=np.float32)
        # (x * rescale - mean) / std == x * gain + bias
        self._gain = (config.rescale_factor / std).astype(np.float32)
        self._bias = (-mean / std).astype(np.float32)
        self._device_constants: dict[tuple[str, Any], tuple[Any, Any]] = {}
        self._device_weights_cache: dict[tuple[Any, ...], tuple[Any, ...]] = {}
        self._pinned: dict[tuple[int, tuple[int, ...]], Any] = {}  # CUDA upload staging (pinned host memory)
        self._pool: Any = None  # threads resizing the frames of a batch (made at the first batch)

    @property
    def mode(self) -> str:
        """Return the input mode: CROP or FULL_FRAME."""
        return CROP if self.full_frame_patch is None else FULL_FRAME

    def _plan(self, source_hw: tuple[int, int], scale: float) -> tuple[int, int, int, int, int, int]:
        """(resized h, w, crop top, left, crop h, w) of one frame size: the resize, then the window the model sees."""
        if self.full_frame_patch is not None:
            rh, rw = full_frame_hw(self.config.input_hw, source_hw, self.full_frame_patch, scale)
            return rh, rw, 0, 0, rh, rw
        if self.config.pad_to_square:  # the padded square is the input, whatever the frame's size
            side = self._square_side(scale)
            return side, side, 0, 0, side, side
        rh, rw = resized_hw(self.config, source_hw, scale)
        return (rh, rw) + _crop_box(self.config, (rh, rw), scale)

    def input_hw(self, source_hw: tuple[int, int], scale: float = 1.0) -> tuple[int, int]:
        """Return the model input size of a frame of `source_hw` (the same for every frame size in crop mode)."""
        return self._plan(source_hw, scale)[4:]

    def geometry(self, source_hw: tuple[int, int], scale: float = 1.0) -> PreprocessGeometry:
        if self.config.pad_to_square and self.full_frame_patch is None:
            # The padded square, as large as the longer side, becomes the input: one factor for both axes.
            factor = self._square_side(scale) / max(source_hw)
            return PreprocessGeometry(source_hw=source_hw, scale_y=factor, scale_x=factor, crop_y=0, crop_x=0)
        rh, rw, top, left, _, _ = self._plan(source_hw, scale)
        return PreprocessGeometry(source_hw=source_hw, scale_y=rh / source_hw[0], scale_x=rw / source_hw[1],
                                  crop_y=top, crop_x=left)

    def resize_and_crop(self, rgb: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """
        Resize (PIL, the model's filter) and centre-crop one RGB uint8 image; returns uint8 HWC.

        With `crop_before_resize`, PIL resizes only the source box that maps onto the crop (reading the filter's
        support around it) straight to the crop size; see the class docstring for how close that is to HF.
        """
        from PIL import Image

        if self.config.pad_to_square:
            return self._pad_and_resize(rgb, scale)
        source_hw = rgb.shape[:2]
        rh, rw, top, left, ch, cw = self._plan(source_hw, scale)
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

    def _square_side(self, scale: float) -> int:
        assert self.config.resize_hw is not None  # from_dict refuses do_pad without a square size
        return round(self.config.resize_hw[0] * scale)

    def _pad_and_resize(self, rgb: np.ndarray, scale: float) -> np.ndarray:
        """
        Pad one RGB uint8 image to a square with black (bottom, right) and resize it to the input square.

        As the HF processor does it (pad, then resize), but PIL resizes only the output rows and columns that the
        frame reaches through the filter, from the frame plus the black margin the filter reads; the rest of the
        square is black.
        """
        from PIL import Image

        side = self._square_side(scale)
        h, w = rgb.shape[:2]
        factor = side / max(h, w)
        support = _PIL_FILTERS.get(self.config.resample, (0.5, None))[0]
        reach = int(np.ceil(support)) + 1  # output pixels beyond the frame whose filter still reads it
        rows, cols = min(side, int(np.ceil(h * factor)) + reach), min(side, int(np.ceil(w * factor)) + reach)
        margin = int(np.ceil(support * max(1.0, 1.0 / factor))) + 2  # source pixels the filter reads beyond the box
        longest = max(h, w)  # the canvas never extends past the square: its edge is the image's edge
        canvas = np.zeros((min(int(np.ceil(rows / factor)) + margin, longest),
                           min(int(np.ceil(cols / factor)) + margin, longest), 3), np.uint8)
        canvas[:h, :w] = rgb
        visible = Image.fromarray(canvas).resize((cols, rows), resample=self.config.resample,
                                                 box=(0, 0, cols / factor, rows / factor))
        square = np.zeros((side, side, 3), np.uint8)
        square[:rows, :cols] = np.asarray(visible)
        return square

    def normalize(self, batch_uint8: np.ndarray) -> np.ndarray:
        """uint8 ``[B, H, W, 3]`` -> float32 ``[B, 3, H, W]`` normalised."""
        out = batch_uint8.astype(np.float32) * self._gain + self._bias
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def __call__(self, images: Sequence[np.ndarray], scale: float = 1.0) -> np.ndarray:
        """
        RGB uint8 images (any sizes) -> float32 ``[B, 3, H, W]``.

        The frames of a batch are resized on two threads: PIL and OpenCV release the GIL while they resample, and
        the inference threads are idle meanwhile (a batch of 4 camera frames: ~2x less preprocessing wall time).
        """
        if len(images) > 1:
            crops = list(self._resize_pool().map(lambda image: self.resize_and_crop(image, scale), images))
        else:
            crops = [self.resize_and_crop(image, scale) for image in images]
        return self.normalize(np.stack(crops))

    def _resize_pool(self) -> Any:
        if self._pool is None:
            import os
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1)), thread_name_prefix='preprocess')
        return self._pool

    def _device_weights(self, source_hw: tuple[int, int], scale: float, device: str) -> tuple[Any, ...]:
        """Per frame size: the source rows/cols the crop reads and the resampling matrices, cached on `device`."""
        import torch

        key = (source_hw, scale, str(device))
        if key not in self._device_weights_cache and self.config.pad_to_square:
            # The padded square resized as a whole; the black padding adds nothing, so its taps are left out.
            side = self._square_side(scale)
            _, wy = _resample_weights(max(source_hw), side, 0, side, self.config.resample)
            _, wx = _resample_weights(max(source_hw), side, 0, side, self.config.resample)
            wy, wx = wy[:, :source_hw[0]], wx[:, :source_hw[1]]
            if len(self._device_weights_cache) >= 16:  # a few camera sizes in practice
                self._device_weights_cache.clear()
            self._device_weights_cache[key] = (0, wy.shape[1], 0, wx.shape[1],
                                               torch.as_tensor(wy, dtype=torch.float32, device=device),
                                               torch.as_tensor(wx.T, dtype=torch.float32, device=device))
        if key not in self._device_weights_cache:
            rh, rw, top, left, ch, cw = self._plan(source_hw, scale)
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

    def _upload(self, host: np.ndarray, device: str, slot: int) -> Any:
        """
        Copy uint8 rows to `device`; to a CUDA device through a pinned staging buffer (one per batch slot and shape).

        From pageable memory a copy is staged by the driver and blocks; from pinned memory it is one DMA that runs
        asynchronously. A buffer is reused only by the next call, which comes after this batch's results were copied
        back (which waits for the upload on the same stream).
        """
        import torch

        if not str(device).startswith('cuda'):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore', UserWarning)  # torch warns about read-only message buffers
                return torch.from_numpy(host).to(device)
        key = (slot, host.shape)
        staging = self._pinned.get(key)
        if staging is None:
            if len(self._pinned) >= 32:  # a few camera sizes x batch slots in practice
                self._pinned.clear()
            staging = self._pinned[key] = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
        staging.numpy()[...] = host
        return staging.to(device, non_blocking=True)

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
            tensor = self._upload(host, device, len(crops))
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
