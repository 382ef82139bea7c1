# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Inference backends behind one interface, chosen by name, device and precision.

Heavy imports (torch, onnxruntime, tensorrt, tritonclient) happen inside the backend that needs them.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from robovision_ros.backends.accuracy_gate import DEFAULT_INT8_MIN_COSINE, Int8Accuracy, Int8AccuracyError, \
    gate_int8
from robovision_ros.backends.base import BACKENDS, DEVICES, INT8_DYNAMIC, INT8_STATIC_QDQ, PRECISIONS, \
    BackendCapabilities, BackendUnavailableError, EncoderBackend, ImageEncoding
from robovision_ros.backends.triton_backend import TritonTarget
from robovision_ros.model_dir import ModelInfo

LOG = logging.getLogger(__name__)

__all__ = ['AUTO_PREFERENCE', 'BACKENDS', 'DEFAULT_INT8_MIN_COSINE', 'DEVICES', 'INT8_DYNAMIC', 'INT8_STATIC_QDQ',
           'PRECISIONS', 'BackendCapabilities', 'BackendUnavailableError', 'EncoderBackend', 'ImageEncoding',
           'Int8Accuracy', 'Int8AccuracyError', 'TritonTarget', 'backend_capabilities', 'check_combination',
           'choose_backend', 'create_backend']


# `auto` picks the first installed backend of this order that runs the device and precision: the fastest first.
# Remote backends (triton) are never picked: they need a server address.
AUTO_PREFERENCE = {'cuda': ('tensorrt', 'torch', 'onnxruntime'), 'cpu': ('onnxruntime', 'torch')}


def backend_capabilities() -> dict[str, BackendCapabilities]:
    """Every backend's capabilities by name, in BACKENDS order (importing no framework)."""
    from robovision_ros.backends import onnxruntime_backend, tensorrt_backend, torch_backend, triton_backend

    return {module.CAPABILITIES.name: module.CAPABILITIES
            for module in (torch_backend, onnxruntime_backend, tensorrt_backend, triton_backend)}


def _installed(capabilities: BackendCapabilities) -> bool:
    return importlib.util.find_spec(capabilities.module) is not None


def _auto_choice(device: str, precision: str) -> tuple[Optional[str], Optional[str]]:
    """(backend, None) for `auto` on this device and precision, or (None, why none can run it)."""
    table = backend_capabilities()
    running = [table[name] for name in AUTO_PREFERENCE[device] if table[name].runs(device, precision)]
    for capabilities in running:
        if _installed(capabilities):
            return capabilities.name, None
    if running:
        return None, (f"auto: no installed backend runs {precision} on {device}; "
                      f"{' or '.join(c.name for c in running)} would (install {', '.join(c.module for c in running)})")
    offered = '; '.join(f"{c.name} runs {', '.join(c.precisions_on(device))}"
                        for c in table.values() if device in c.devices)
    return None, f'auto: no backend runs {precision} on {device} ({offered})'


def choose_backend(device: str, precision: str) -> str:
    """
    Return the backend `auto` means for this device and precision.

    That is the fastest installed one whose capabilities run it (AUTO_PREFERENCE). On CUDA: TensorRT if installed (fp32,
    fp16, int8), else PyTorch (onnxruntime here is CPU-only). On CPU: ONNX Runtime for fp32 and int8 (faster than eager
    PyTorch on CPU), PyTorch for bf16. Raises BackendUnavailableError if no installed backend runs it.
    """
    backend, reason = _auto_choice(device, precision)
    if backend is None:
        raise BackendUnavailableError(reason)
    return backend


def check_combination(backend: str, device: str, precision: str) -> Optional[str]:
    """
    Return why `backend` cannot run `precision` on `device`, from the capability table (None: it can).

    `auto` is resolved against the installed backends. The same reason create_backend and the backends' constructors
    raise; whether a GPU or the framework is present here is checked only at load.
    """
    for value, allowed, what in ((backend, BACKENDS, 'backend'), (device, DEVICES, 'device'),
                                 (precision, PRECISIONS, 'precision')):
        if value not in allowed:
            return f"{what} '{value}' not supported; supported: {', '.join(allowed)}"
    if backend == 'auto':
        return _auto_choice(device, precision)[1]
    table = backend_capabilities()
    return table[backend].rejection(device, precision, tuple(table.values()))


def create_backend(info: ModelInfo, backend: str = 'auto', device: str = 'cpu', precision: str = 'fp32',
                   cache_dir: Optional[Path] = None, force_rebuild: bool = False,
                   int8_min_cosine: Optional[float] = DEFAULT_INT8_MIN_COSINE,
                   triton: Optional[TritonTarget] = None) -> EncoderBackend:
    """
    Load `info` on the requested backend; an unavailable combination raises BackendUnavailableError.

    An int8 engine must pass the accuracy gate: its cosine to fp32 on built-in probe images must reach
    `int8_min_cosine` (None skips the gate), else Int8AccuracyError. The measurement is kept on
    `backend.int8_accuracy`. A remote backend (`triton`, at the server `triton` names) is not gated here: the
    server's own create_backend gated its engine when it started.
    """
    reason = check_combination(backend, device, precision)
    if reason is not None:
        raise BackendUnavailableError(reason)
    if int8_min_cosine is not None and not 0.0 <= int8_min_cosine <= 1.0:
        raise ValueError(f'int8_min_cosine must be in [0, 1]; got {int8_min_cosine}')
    if backend == 'auto':
        backend = choose_backend(device, precision)
        LOG.info('backend auto -> %s (device %s, precision %s)', backend, device, precision)
    loaded = _load(info, backend, device, precision, cache_dir, force_rebuild, triton)
    if precision == 'int8' and int8_min_cosine is not None and not loaded.capabilities.remote:
        loaded.int8_accuracy = gate_int8(loaded, lambda: _fp32_reference(info, device, cache_dir),
                                         _probe_preprocessor(info), info.image_size, int8_min_cosine)
        LOG.info('int8 accuracy gate passed: cosine to fp32 %.4f (global %.4f, patches %.4f) >= %s',
                 loaded.int8_accuracy.worst, loaded.int8_accuracy.global_cosine, loaded.int8_accuracy.patch_cosine,
                 int8_min_cosine)
    return loaded


def _load(info: ModelInfo, backend: str, device: str, precision: str, cache_dir: Optional[Path],
          force_rebuild: bool, triton: Optional[TritonTarget] = None) -> EncoderBackend:
    if backend == 'torch':
        from robovision_ros.backends.torch_backend import TorchBackend

        return TorchBackend(info, device, precision)
    if backend == 'onnxruntime':
        from robovision_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(info, device, precision, cache_dir)
    if backend == 'triton':
        from robovision_ros.backends.triton_backend import TritonBackend

        return TritonBackend(info, device, precision, triton)
    from robovision_ros.backends.tensorrt_backend import TensorRTBackend

    return TensorRTBackend(info, device, precision, cache_dir, force_rebuild=force_rebuild)


def _fp32_reference(info: ModelInfo, device: str, cache_dir: Optional[Path]) -> EncoderBackend:
    """
    Load the fp32 engine an int8 engine is compared with.

    That is ONNX Runtime on CPU running the fp32 export every int8 variant is made from (cheap to load, no GPU
    needed), or PyTorch fp32 on `device` where onnxruntime is missing.
    """
    if importlib.util.find_spec('onnxruntime') is not None:
        return _load(info, 'onnxruntime', 'cpu', 'fp32', cache_dir, False)
    return _load(info, 'torch', device, 'fp32', cache_dir, False)


def _probe_preprocessor(info: ModelInfo) -> Callable[[list[np.ndarray]], np.ndarray]:
    from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig

    return ImagePreprocessor(PreprocessConfig.from_model_dir(info.path))
