# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Conversions between robovision_ros messages and numpy arrays.

`PatchFeatures.data` carries a row-major ``[grid_h * grid_w, dim]`` tensor as little-endian bytes; these helpers
build such messages from arrays and read them back as zero-copy views, with an exact round trip for float32
and float16. Inconsistent messages (shape, dtype or byte length that disagree) raise `MessageConversionError`.
"""
from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

SUPPORTED_DTYPES: dict[str, np.dtype] = {
    'float32': np.dtype('<f4'),
    'float16': np.dtype('<f2'),
}


class MessageConversionError(ValueError):
    """A message and an array (or the fields of one message) disagree."""


@dataclass(frozen=True)
class PatchFeatureTensor:
    """The tensor content of a `PatchFeatures` message."""

    features: np.ndarray  # [grid_h * grid_w, dim], float32 or float16
    grid_h: int
    grid_w: int
    global_embedding: np.ndarray  # [D_global], float32

    @property
    def grid(self) -> np.ndarray:
        """Features as a ``[grid_h, grid_w, dim]`` view."""
        return self.features.reshape(self.grid_h, self.grid_w, -1)


def _dtype_for(name: str) -> np.dtype:
    try:
        return SUPPORTED_DTYPES[name]
    except KeyError:
        raise MessageConversionError(
            f"dtype '{name}' not supported; supported: {', '.join(SUPPORTED_DTYPES)}") from None


def _dtype_name(dtype: np.dtype) -> str:
    for name, supported in SUPPORTED_DTYPES.items():
        if np.dtype(dtype).newbyteorder('<') == supported:
            return name
    raise MessageConversionError(
        f"array dtype '{np.dtype(dtype)}' not supported; supported: {', '.join(SUPPORTED_DTYPES)}")


def fill_patch_features(
    msg: Any,
    features: np.ndarray,
    grid_h: int,
    grid_w: int,
    global_embedding: Optional[np.ndarray] = None,
) -> Any:
    """
    Write `features` ([grid_h*grid_w, dim] or [grid_h, grid_w, dim]) into a `PatchFeatures` message.

    Sets grid_h, grid_w, dim, dtype, shape, data and global_embedding; the caller sets header, model and
    latency fields. Returns `msg`.
    """
    features = np.asarray(features)
    if features.ndim == 3:
        if features.shape[:2] != (grid_h, grid_w):
            raise MessageConversionError(
                f'features grid {features.shape[:2]} does not match grid_h x grid_w = ({grid_h}, {grid_w})')
        features = features.reshape(grid_h * grid_w, features.shape[2])
    if features.ndim != 2:
        raise MessageConversionError(
            f'features must be [grid_h*grid_w, dim] or [grid_h, grid_w, dim]; got shape {features.shape}')
    if grid_h <= 0 or grid_w <= 0 or features.shape[0] != grid_h * grid_w:
        raise MessageConversionError(
            f'features have {features.shape[0]} rows; grid {grid_h}x{grid_w} needs {grid_h * grid_w}')
    dtype_name = _dtype_name(features.dtype)
    little = np.ascontiguousarray(features, dtype=SUPPORTED_DTYPES[dtype_name])
    msg.grid_h = int(grid_h)
    msg.grid_w = int(grid_w)
    msg.dim = int(little.shape[1])
    msg.dtype = dtype_name
    msg.shape = [int(little.shape[0]), int(little.shape[1])]
    msg.data = packed_array('B', little)
    if global_embedding is None:
        msg.global_embedding = array.array('f')
    else:
        embedding = np.asarray(global_embedding, dtype=np.float32)
        if embedding.ndim != 1:
            raise MessageConversionError(f'global_embedding must be 1-D; got shape {embedding.shape}')
        msg.global_embedding = packed_array('f', embedding)
    return msg


def packed_array(typecode: str, values: np.ndarray) -> array.array:
    # Generated message setters type-check an array.array in O(1) but walk any other sequence element by
    # element, which costs milliseconds for a feature map.
    packed = array.array(typecode)
    packed.frombytes(np.ascontiguousarray(values).tobytes())
    return packed


def patch_features_to_numpy(msg: Any) -> PatchFeatureTensor:
    """Read a `PatchFeatures` message as arrays; `features` is a read-only view of the message buffer."""
    dtype = _dtype_for(msg.dtype)
    rows = int(msg.grid_h) * int(msg.grid_w)
    expected_shape = [rows, int(msg.dim)]
    if list(msg.shape) != expected_shape:
        raise MessageConversionError(
            f'shape {list(msg.shape)} disagrees with grid_h*grid_w, dim = {expected_shape}')
    expected_bytes = rows * int(msg.dim) * dtype.itemsize
    buffer = memoryview(msg.data).cast('B') if not isinstance(msg.data, bytes) else msg.data
    if len(buffer) != expected_bytes:
        raise MessageConversionError(
            f'data holds {len(buffer)} bytes; shape {expected_shape} of {msg.dtype} needs {expected_bytes}')
    features = np.frombuffer(buffer, dtype=dtype).reshape(expected_shape)
    return PatchFeatureTensor(
        features=features,
        grid_h=int(msg.grid_h),
        grid_w=int(msg.grid_w),
        global_embedding=np.asarray(msg.global_embedding, dtype=np.float32),
    )


def zero_shot_scores(msg: Any) -> dict[str, float]:
    """Map label -> score of a `ZeroShotLabels` message, checking that labels and scores pair up."""
    labels: Sequence[str] = list(msg.labels)
    scores = np.asarray(msg.scores, dtype=np.float32)
    if len(labels) != len(scores):
        raise MessageConversionError(f'{len(labels)} labels but {len(scores)} scores')
    return {label: float(score) for label, score in zip(labels, scores)}
