# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The one interface every inference backend implements, and the typed results it returns."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import numpy as np

from robovision_ros.families import family_named
from robovision_ros.families.base import ImageEncoding, ModelInfo
from robovision_ros.parameters import ParameterRule, ParameterSpec

DEVICES = ('cpu', 'cuda')
PRECISIONS = ('fp32', 'fp16', 'bf16', 'int8')


class BackendUnavailableError(RuntimeError):
    """The requested backend, device or precision cannot run here. Raised at load time; never a fallback."""


class TransientBackendError(RuntimeError):
    """
    One request failed for a reason outside this process (a remote server gone or slow); the next may succeed.

    Expected in operation: logged as one line per cause without a traceback, and a vocabulary it stopped is retried.
    """


# What int8 means on a backend.
INT8_DYNAMIC = 'dynamic int8 (weights quantized ahead, activations per batch at run time; no calibration)'
INT8_STATIC_QDQ = 'static int8 from a calibrated Q/DQ ONNX file (robovision_export --int8-qdq)'
INT8_STATIC_NNCF = ('static int8 by NNCF post-training quantization, calibrated on generated images or your own '
                    'frames (robovision_export --openvino int8 --calibration-images DIR)')


@dataclass(frozen=True)
class BackendCapabilities:
    """
    What one backend can run, declared once in its module (without importing its framework).

    Read by `auto` selection (the registry), the backend's constructor, parameter validation, the feature
    extractor (fixed input size), the benchmark and the export tool.
    """

    name: str
    module: str  # the Python module the backend needs installed
    precisions: tuple[tuple[str, tuple[str, ...]], ...]  # (device, precisions it runs there), devices in order
    int8: str = ''  # what int8 means here (INT8_DYNAMIC, INT8_STATIC_QDQ), '' where int8 is not run
    fixed_input_size: bool = False  # True: only the model's native input size (no multi-scale)
    device_tensors: bool = False  # encode_image accepts torch tensors already on the device (GPU preprocessing)
    cuda_graphs: bool = False  # can replay captured CUDA graphs (the `cuda_graphs` parameter)
    remote: bool = False  # inference runs on a server (`device` is where the node preprocesses); never `auto`
    # `auto` preference per device (or per 'device/precision'): the installed backend with the lowest rank that runs
    # the precision wins (the fastest first). A device missing here is never chosen by `auto` for this backend.
    auto_rank: tuple[tuple[str, int], ...] = ()
    auto_basis: str = ''  # why the rank is what it is (a measurement), logged when `auto` picks this backend

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(device for device, _ in self.precisions)

    def precisions_on(self, device: str) -> tuple[str, ...]:
        return dict(self.precisions).get(device, ())

    def runs(self, device: str, precision: str) -> bool:
        return precision in self.precisions_on(device)

    def input_size_problem(self, what: str) -> Optional[str]:
        """Return why `what` (an input of another size than the model's native one) cannot run here, or None."""
        if self.fixed_input_size:
            return (f'{what} needs a backend without a fixed input size (torch); {self.name} engines take the '
                    'native size only')
        return None

    def rank_on(self, device: str, precision: str = '') -> Optional[int]:
        """
        Return this backend's `auto` rank on `device` for `precision` (None: `auto` never picks it there).

        An entry 'device/precision' (e.g. 'cpu/fp32') overrides the device's rank for that precision.
        """
        ranks = dict(self.auto_rank)
        return ranks.get(f'{device}/{precision}', ranks.get(device))

    def rejection(self, device: str, precision: str, table: 'tuple[BackendCapabilities, ...]' = ()) -> Optional[str]:
        """
        Return why this backend cannot run `precision` on `device` (None if it can).

        `table`, all backends' capabilities, lets the reason name the backends that do run `precision`.
        """
        if device not in self.devices:
            return f"backend {self.name} needs device {' or '.join(self.devices)}"
        if self.runs(device, precision):
            return None
        reason = f"{self.name} on {device} runs {', '.join(self.precisions_on(device))}, not '{precision}'"
        elsewhere = [d for d in self.devices if self.runs(d, precision)]
        if elsewhere:
            return f"{reason}; {precision} needs device {' or '.join(elsewhere)}"
        # Remote backends are not suggested: they run whatever their server runs.
        others = [c.name for c in table if not c.remote and any(c.runs(d, precision) for d in c.devices)]
        return f"{reason}; use {' or '.join(others)} for {precision}" if others else reason

    def require(self, device: str, precision: str) -> None:
        """Raise BackendUnavailableError with `rejection`'s reason unless this backend runs the combination."""
        reason = self.rejection(device, precision)
        if reason is not None:
            raise BackendUnavailableError(reason)


@dataclass(frozen=True)
class Int8Accuracy:
    """
    How close an int8 engine is to fp32 on the probe images (cosine similarity, 1.0 is identical).

    One cosine per output of the family's image graph: the worst probe image's (for outputs with one row per patch,
    its mean over the patches).
    """

    cosines: tuple[tuple[str, float], ...]  # (image-graph output name, cosine), in the graph's output order

    @property
    def worst(self) -> float:
        return min(cosine for _, cosine in self.cosines)

    def cosine(self, output: str) -> float:
        return dict(self.cosines)[output]

    def describe(self) -> str:
        return ', '.join(f'{name} {cosine:.4f}' for name, cosine in self.cosines)


__all__ = ['BackendCapabilities', 'BackendEntry', 'BackendRequest', 'BackendUnavailableError', 'DEVICES',
           'EncoderBackend', 'INT8_DYNAMIC', 'INT8_STATIC_QDQ', 'ImageEncoding', 'Int8Accuracy', 'PRECISIONS',
           'TransientBackendError']


class EncoderBackend(ABC):
    """
    Runs a model's image graph (and, for families with text, its text encoder) on preprocessed inputs.

    A backend runs whatever image graph the model's family declares and returns its outputs by name (`run_image`);
    `encode_image` hands them to the family for its typed result, so no backend knows what a family computes.
    """

    name: str = ''
    capabilities: BackendCapabilities  # the module's CAPABILITIES
    info: ModelInfo  # the model it runs (set by each backend's constructor)
    logit_scale: float = 1.0  # CLIP: multiplier of cosine similarities in zero-shot logits
    logit_bias: float = 0.0  # SigLIP: offset added to the scaled cosine before the sigmoid
    text_length: int = 0  # fixed token length of the text encoder input (0: the tokenizer decides)
    int8_accuracy: Optional[Int8Accuracy] = None  # int8: what the accuracy gate measured at load

    def __init__(self, device: str, precision: str) -> None:
        self.device = device
        self.precision = precision

    @abstractmethod
    def run_image(self, pixel_values: Any) -> dict[str, np.ndarray]:
        """float32 ``[B, 3, H, W]`` normalised pixels -> every output of the family's image graph by name (float32)."""

    def encode_image(self, pixel_values: Any) -> Any:
        """float32 ``[B, 3, H, W]`` normalised pixels -> the family's typed result (`ImageEncoding` for encoders)."""
        outputs = self.run_image(pixel_values)
        height, width = pixel_values.shape[-2:]
        grid = (int(height) // self.info.patch_size, int(width) // self.info.patch_size)
        return family_named(self.info.family).image_result(outputs, grid)

    @abstractmethod
    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """int64 token ids and mask ``[B, L]`` -> float32 text embeddings ``[B, D]`` (unnormalised)."""

    @property
    def cache_key(self) -> Optional[str]:
        """Key of the compiled artefact this backend runs (a TensorRT engine), if any."""
        return None

    def stored_fp32_reference(self, fallback: Callable[[], 'EncoderBackend']) -> Optional['EncoderBackend']:
        """
        Return the fp32 outputs on the gate's probe images stored with this int8 engine, as a backend (or None).

        The int8 gate compares with them instead of loading the fp32 model into the node (its peak memory);
        `fallback` loads the real fp32 reference where the stored one does not answer.
        """
        return None

    def health(self) -> Optional[str]:
        """Why the backend cannot serve right now (a remote server gone), or None; read by /diagnostics."""
        return None

    def close(self) -> None:
        """Free the model and any device memory."""


REFERENCE_PIXELS = 'pixel_values'  # the key of the probe pixels in a stored reference (the rest: image outputs)


def store_reference(path: Any, pixels: np.ndarray, outputs: dict[str, np.ndarray]) -> None:
    """Write fp32 outputs on the probe pixels, apart and renamed into place (never a half-written reference)."""
    import os
    from pathlib import Path

    path = Path(path)
    partial = path.with_name(f'.partial-{os.getpid()}-{path.name}')
    np.savez(partial, **{REFERENCE_PIXELS: np.asarray(pixels, np.float32)},
             **{name: np.asarray(value, np.float32) for name, value in outputs.items()})
    partial.replace(path)


class StoredReference(EncoderBackend):
    """
    fp32 outputs of the gate's probe batch, computed when an int8 engine was made, as a backend.

    It answers that batch only (the pixels are stored with the outputs and compared to within 1e-3, far above the
    rounding differences of preprocessing between x86 CPUs); asked for other pixels, it loads the real fp32
    reference with `fallback` and answers with it.
    """

    name = 'stored fp32 reference'

    def __init__(self, info: ModelInfo, pixels: np.ndarray, outputs: dict[str, np.ndarray],
                 capabilities: BackendCapabilities, fallback: Callable[[], 'EncoderBackend']) -> None:
        super().__init__('cpu', 'fp32')
        self.info = info
        self.capabilities = capabilities
        self.pixels = pixels
        self.outputs = outputs
        self._fallback = fallback
        self._loaded: Optional[EncoderBackend] = None

    @classmethod
    def load(cls, info: ModelInfo, path: Any, capabilities: BackendCapabilities,
             fallback: Callable[[], 'EncoderBackend']) -> 'StoredReference':
        """Read a reference written by `store_reference`: the probe pixels and every image output by name."""
        with np.load(path) as stored:
            outputs = {name: stored[name] for name in stored.files if name != REFERENCE_PIXELS}
            return cls(info, stored[REFERENCE_PIXELS], outputs, capabilities, fallback)

    def run_image(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.asarray(pixel_values, np.float32)
        if pixels.shape == self.pixels.shape and np.allclose(pixels, self.pixels, rtol=0.0, atol=1e-3):
            return self.outputs
        if self._loaded is None:
            self._loaded = self._fallback()
        return self._loaded.run_image(pixel_values)

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise BackendUnavailableError('a stored fp32 reference has image outputs only')

    def close(self) -> None:
        if self._loaded is not None:
            self._loaded.close()
            self._loaded = None


@dataclass(frozen=True)
class BackendRequest:
    """What to load: a model on a device at a precision, where to cache, and the backend's own parameters."""

    info: ModelInfo
    device: str
    precision: str
    cache_dir: Optional[Path] = None
    force_rebuild: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)  # values of the backend's own parameters by name
    text: bool = True  # load the text encoder too (False: the int8 gate's fp32 reference needs images only)


@dataclass(frozen=True)
class BackendEntry:
    """
    One backend as the registry sees it, declared once in the backend's own module as `BACKEND`.

    `load` imports the backend's framework only when called. `parameters` are the node parameters the backend
    contributes (e.g. triton's server address), and `rules` check them against the others.
    """

    capabilities: BackendCapabilities
    load: Callable[[BackendRequest], EncoderBackend]
    parameters: tuple[ParameterSpec, ...] = ()
    rules: tuple[ParameterRule, ...] = ()

    @property
    def name(self) -> str:
        return self.capabilities.name
