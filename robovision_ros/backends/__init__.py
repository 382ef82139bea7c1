"""Inference backends behind one interface, chosen by name, device and precision.

Heavy imports (torch, onnxruntime, tensorrt) happen inside the backend that needs them.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Optional

from robovision_ros.backends.base import BACKENDS, DEVICES, PRECISIONS, BackendUnavailableError, \
    EncoderBackend, ImageEncoding
from robovision_ros.models import ModelInfo

LOG = logging.getLogger(__name__)

__all__ = ['BACKENDS', 'DEVICES', 'PRECISIONS', 'BackendUnavailableError', 'EncoderBackend', 'ImageEncoding',
           'choose_backend', 'create_backend']


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
                   cache_dir: Optional[Path] = None, force_rebuild: bool = False) -> EncoderBackend:
    """Load `info` on the requested backend; an unavailable combination raises BackendUnavailableError."""
    for value, allowed, what in ((backend, BACKENDS, 'backend'), (device, DEVICES, 'device'),
                                 (precision, PRECISIONS, 'precision')):
        if value not in allowed:
            raise BackendUnavailableError(f"{what} '{value}' not supported; supported: {', '.join(allowed)}")
    if backend == 'auto':
        backend = choose_backend(device, precision)
        LOG.info('backend auto -> %s (device %s, precision %s)', backend, device, precision)
    if backend == 'torch':
        from robovision_ros.backends.torch_backend import TorchBackend

        return TorchBackend(info, device, precision)
    if backend == 'onnxruntime':
        from robovision_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(info, device, precision, cache_dir)
    from robovision_ros.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(info, device, precision, cache_dir, force_rebuild=force_rebuild)
