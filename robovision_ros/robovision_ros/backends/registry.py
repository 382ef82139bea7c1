# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The backend registry: every module of this package named `*_backend` that defines `BACKEND` is a backend.

Adding a backend is one new module: its `BackendEntry` declares what it runs (capabilities), how it loads, and the
node parameters it contributes; `auto` selection, parameter validation, the launch file's choices, the demo and the
docs read them from here. Heavy imports (torch, onnxruntime, tensorrt, tritonclient) happen only in `load`.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import pkgutil
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from robovision_ros.backends.accuracy_gate import DEFAULT_INT8_MIN_COSINE, gate_int8
from robovision_ros.backends.base import DEVICES, PRECISIONS, BackendCapabilities, BackendEntry, BackendRequest, \
    BackendUnavailableError, EncoderBackend
from robovision_ros.families.base import ModelInfo
from robovision_ros.parameters import ParameterRule, ParameterSpec

LOG = logging.getLogger(__name__)
AUTO = 'auto'
PACKAGE = 'robovision_ros.backends'


@functools.lru_cache(maxsize=None)
def backend_entries() -> dict[str, BackendEntry]:
    """Every registered backend by name: local ones by name, then remote ones (importing no framework)."""
    package = importlib.import_module(PACKAGE)
    entries = []
    for module_info in pkgutil.iter_modules(package.__path__):
        if module_info.name.endswith('_backend'):
            entry = getattr(importlib.import_module(f'{PACKAGE}.{module_info.name}'), 'BACKEND', None)
            if isinstance(entry, BackendEntry):
                entries.append(entry)

    return {entry.name: entry for entry in sorted(entries, key=lambda e: (e.capabilities.remote, e.name))}


def backend_names() -> tuple[str, ...]:
    """Return the registered backends' names (what the `backend` parameter takes, besides `auto`)."""
    return tuple(backend_entries())


def backend_choices() -> tuple[str, ...]:
    """Return what the `backend` parameter takes: every registered backend and `auto`."""
    return backend_names() + (AUTO,)


def backend_capabilities() -> dict[str, BackendCapabilities]:
    """Every backend's capabilities by name."""
    return {name: entry.capabilities for name, entry in backend_entries().items()}


def backend_parameters() -> tuple[ParameterSpec, ...]:
    """Return the node parameters contributed by the backends, in registry order."""
    return tuple(spec for entry in backend_entries().values() for spec in entry.parameters)


def backend_rules() -> tuple[ParameterRule, ...]:
    """Return the backends' checks across parameters (each runs when a parameter it reads changes)."""
    return tuple(rule for entry in backend_entries().values() for rule in entry.rules)


def _installed(capabilities: BackendCapabilities) -> bool:
    return importlib.util.find_spec(capabilities.module) is not None


def _auto_choice(device: str, precision: str) -> tuple[Optional[str], Optional[str]]:
    """(backend, None) for `auto` on this device and precision, or (None, why none can run it)."""
    table = backend_capabilities()
    candidates = sorted((c for c in table.values()
                         if c.rank_on(device, precision) is not None and c.runs(device, precision)),
                        key=lambda c: c.rank_on(device, precision))
    for capabilities in candidates:
        if _installed(capabilities):
            return capabilities.name, None
    if candidates:
        return None, (f"auto: no installed backend runs {precision} on {device}; "
                      f"{' or '.join(c.name for c in candidates)} would (install "
                      f"{', '.join(c.module for c in candidates)})")
    offered = '; '.join(f"{c.name} runs {', '.join(c.precisions_on(device))}"
                        for c in table.values() if device in c.devices)
    return None, f'auto: no backend runs {precision} on {device} ({offered})'


def choose_backend(device: str, precision: str) -> str:
    """
    Return the backend `auto` means for this device and precision.

    That is the installed backend with the lowest `auto_rank` on the device whose capabilities run the precision
    (remote backends declare no rank: they need a server address). Raises BackendUnavailableError if none does.
    """
    backend, reason = _auto_choice(device, precision)
    if backend is None:
        raise BackendUnavailableError(reason)
    return backend


def check_combination(backend: str, device: str, precision: str) -> Optional[str]:
    """
    Return why `backend` cannot run `precision` on `device`, from the capability table (None: it can).

    `auto` is resolved against the installed backends. The same reason create_backend raises; whether a GPU or the
    framework is present here is checked only at load.
    """
    for value, allowed, what in ((backend, backend_choices(), 'backend'), (device, DEVICES, 'device'),
                                 (precision, PRECISIONS, 'precision')):
        if value not in allowed:
            return f"{what} '{value}' not supported; supported: {', '.join(allowed)}"
    if backend == AUTO:
        return _auto_choice(device, precision)[1]
    table = backend_capabilities()
    return table[backend].rejection(device, precision, tuple(table.values()))


def create_backend(info: ModelInfo, backend: str = AUTO, device: str = 'cpu', precision: str = 'fp32',
                   cache_dir: Optional[Path] = None, force_rebuild: bool = False,
                   int8_min_cosine: Optional[float] = DEFAULT_INT8_MIN_COSINE,
                   options: Optional[Mapping[str, Any]] = None) -> EncoderBackend:
    """
    Load `info` on the requested backend; an unavailable combination raises BackendUnavailableError.

    `options` holds the values of the backend's own parameters by name (e.g. triton_url, cuda_graphs). An int8 engine
    must pass the accuracy gate: its cosine to fp32 on built-in probe images must reach `int8_min_cosine` (None
    skips the gate), else Int8AccuracyError. The measurement is kept on `backend.int8_accuracy`. A remote backend is
    not gated here: the server's own create_backend gated its engine when it started.
    """
    reason = check_combination(backend, device, precision)
    if reason is not None:
        raise BackendUnavailableError(reason)
    if int8_min_cosine is not None and not 0.0 <= int8_min_cosine <= 1.0:
        raise ValueError(f'int8_min_cosine must be in [0, 1]; got {int8_min_cosine}')
    if backend == AUTO:
        backend = choose_backend(device, precision)
        basis = backend_capabilities()[backend].auto_basis
        LOG.info('backend auto -> %s (device %s, precision %s): %s', backend, device, precision,
                 basis or 'the lowest auto_rank among the installed backends that run it')
    request = BackendRequest(info, device, precision, cache_dir, force_rebuild, dict(options or {}))
    loaded = backend_entries()[backend].load(request)
    if precision == 'int8' and int8_min_cosine is not None and not loaded.capabilities.remote:
        loaded.int8_accuracy = gate_int8(loaded, lambda: _fp32_reference(backend, request, loaded),
                                         _probe_preprocessor(info), info.image_size, int8_min_cosine)
        LOG.info('int8 accuracy gate passed: cosine to fp32 %.4f (%s) >= %s', loaded.int8_accuracy.worst,
                 loaded.int8_accuracy.describe(), int8_min_cosine)
    return loaded


def _fp32_reference(backend: str, request: BackendRequest, loaded: EncoderBackend) -> EncoderBackend:
    """
    Load the fp32 engine an int8 engine is compared with.

    First choice: the fp32 outputs stored with the int8 engine when it was made (`stored_fp32_reference`): then no
    fp32 model is loaded into the process at all. Else (`_loaded_fp32_reference`) the same backend at fp32 on CPU
    where it runs that (its own fp32 model: no other framework is imported into the node), else ONNX Runtime on CPU
    running the fp32 export every int8 variant is made from (cheap to load, no GPU needed), or PyTorch fp32 on the
    request's device where onnxruntime is missing.
    """
    stored = loaded.stored_fp32_reference(lambda: _loaded_fp32_reference(backend, request))
    return stored if stored is not None else _loaded_fp32_reference(backend, request)


def _loaded_fp32_reference(backend: str, request: BackendRequest) -> EncoderBackend:
    entries = backend_entries()
    own = entries[backend]
    if own.capabilities.runs('cpu', 'fp32'):
        return own.load(BackendRequest(request.info, 'cpu', 'fp32', request.cache_dir, text=False))
    if _installed(entries['onnxruntime'].capabilities):
        return entries['onnxruntime'].load(BackendRequest(request.info, 'cpu', 'fp32', request.cache_dir, text=False))
    return entries['torch'].load(BackendRequest(request.info, request.device, 'fp32', request.cache_dir, text=False))


def _probe_preprocessor(info: ModelInfo) -> Callable[[list[np.ndarray]], np.ndarray]:
    from robovision_ros.model_dir import family_of
    from robovision_ros.preprocessing import ImagePreprocessor

    return ImagePreprocessor(family_of(info).preprocess_config(info))
