"""Inference backends behind one interface, chosen by name, device and precision.

Heavy imports (torch, onnxruntime, tensorrt) happen inside the backend that needs them.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from robovision_ros.backends.accuracy_gate import DEFAULT_INT8_MIN_COSINE, Int8Accuracy, Int8AccuracyError, \
    gate_int8
from robovision_ros.backends.base import BACKENDS, DEVICES, PRECISIONS, BackendUnavailableError, \
    EncoderBackend, ImageEncoding
from robovision_ros.models import ModelInfo

LOG = logging.getLogger(__name__)

__all__ = ['BACKENDS', 'DEFAULT_INT8_MIN_COSINE', 'DEVICES', 'PRECISIONS', 'BackendUnavailableError', 'EncoderBackend',
           'ImageEncoding', 'Int8Accuracy', 'Int8AccuracyError', 'choose_backend', 'create_backend']


def choose_backend(device: str, precision: str) -> str:
    """The backend `auto` means for this device and precision: the fastest one installed that runs it.

    On CUDA: TensorRT if importable, else PyTorch (onnxruntime here is CPU-only). On CPU: ONNX Runtime for fp32
    and int8 (faster than eager PyTorch on CPU), PyTorch for bf16.
    """
    if device == 'cuda':
        if precision in ('fp32', 'fp16') and importlib.util.find_spec('tensorrt') is not None:
            return 'tensorrt'
        return 'torch'
    if precision in ('fp32', 'int8') and importlib.util.find_spec('onnxruntime') is not None:
        return 'onnxruntime'
    return 'torch'


def create_backend(info: ModelInfo, backend: str = 'auto', device: str = 'cpu', precision: str = 'fp32',
                   cache_dir: Optional[Path] = None, force_rebuild: bool = False,
                   int8_min_cosine: Optional[float] = DEFAULT_INT8_MIN_COSINE) -> EncoderBackend:
    """Load `info` on the requested backend; an unavailable combination raises BackendUnavailableError.

    An int8 engine must pass the accuracy gate: its cosine to fp32 on built-in probe images must reach
    `int8_min_cosine` (None skips the gate), else Int8AccuracyError. The measurement is kept on
    `backend.int8_accuracy`.
    """
    for value, allowed, what in ((backend, BACKENDS, 'backend'), (device, DEVICES, 'device'),
                                 (precision, PRECISIONS, 'precision')):
        if value not in allowed:
            raise BackendUnavailableError(f"{what} '{value}' not supported; supported: {', '.join(allowed)}")
    if int8_min_cosine is not None and not 0.0 <= int8_min_cosine <= 1.0:
        raise ValueError(f'int8_min_cosine must be in [0, 1]; got {int8_min_cosine}')
    if backend == 'auto':
        backend = choose_backend(device, precision)
        LOG.info('backend auto -> %s (device %s, precision %s)', backend, device, precision)
    loaded = _load(info, backend, device, precision, cache_dir, force_rebuild)
    if precision == 'int8' and int8_min_cosine is not None:
        loaded.int8_accuracy = gate_int8(loaded, lambda: _fp32_reference(info, device, cache_dir),
                                         _probe_preprocessor(info), info.image_size, int8_min_cosine)
        LOG.info('int8 accuracy gate passed: cosine to fp32 %.4f (global %.4f, patches %.4f) >= %s',
                 loaded.int8_accuracy.worst, loaded.int8_accuracy.global_cosine, loaded.int8_accuracy.patch_cosine,
                 int8_min_cosine)
    return loaded


def _load(info: ModelInfo, backend: str, device: str, precision: str, cache_dir: Optional[Path],
          force_rebuild: bool) -> EncoderBackend:
    if backend == 'torch':
        from robovision_ros.backends.torch_backend import TorchBackend

        return TorchBackend(info, device, precision)
    if backend == 'onnxruntime':
        from robovision_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(info, device, precision, cache_dir)
    from robovision_ros.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(info, device, precision, cache_dir, force_rebuild=force_rebuild)


def _fp32_reference(info: ModelInfo, device: str, cache_dir: Optional[Path]) -> EncoderBackend:
    """The fp32 engine int8 is compared with: ONNX Runtime on CPU running the fp32 export every int8 variant is
    made from (cheap to load, no GPU needed), or PyTorch fp32 on `device` where onnxruntime is missing."""
    if importlib.util.find_spec('onnxruntime') is not None:
        return _load(info, 'onnxruntime', 'cpu', 'fp32', cache_dir, False)
    return _load(info, 'torch', device, 'fp32', cache_dir, False)


def _probe_preprocessor(info: ModelInfo) -> Callable[[list[np.ndarray]], np.ndarray]:
    from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig

    return ImagePreprocessor(PreprocessConfig.from_model_dir(info.path))
