# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""ONNX Runtime backend: CPU EP (fp32, int8), CUDA EP (fp32, fp16) and TensorRT EP where installed."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from robovision_ros.backends.base import INT8_DYNAMIC, BackendCapabilities, BackendEntry, BackendRequest, \
    BackendUnavailableError, EncoderBackend, StoredReference, store_reference
from robovision_ros.backends.onnx_export import cached_export, precision_variant, text_precision
from robovision_ros.families.base import ATTENTION_MASK, INPUT_IDS, PIXEL_VALUES, TEXT_EMBEDDING, ModelInfo
from robovision_ros.model_dir import family_of

LOG = logging.getLogger(__name__)
# Beside an int8 file: the fp32 outputs on the int8 gate's probe images (np.savez adds the .npz).
REFERENCE_SUFFIX = '.reference.npz'

CAPABILITIES = BackendCapabilities(
    name='onnxruntime', module='onnxruntime', precisions=(('cpu', ('fp32', 'int8')), ('cuda', ('fp32', 'fp16'))),
    int8=INT8_DYNAMIC, fixed_input_size=True, auto_rank=(('cpu', 10), ('cuda', 30)))


def providers_for(device: str, precision: str, available: list[str]) -> list[str]:
    """Return the execution providers for `device`, best first; raise if the device has none here."""
    CAPABILITIES.require(device, precision)
    if device == 'cpu':
        return ['CPUExecutionProvider']
    gpu = [p for p in ('TensorrtExecutionProvider', 'CUDAExecutionProvider') if p in available]
    if not gpu:
        raise BackendUnavailableError(
            f'device cuda requested but onnxruntime has no GPU execution provider (available: {available}); '
            'install onnxruntime-gpu')
    return gpu


class OnnxRuntimeBackend(EncoderBackend):
    name = 'onnxruntime'
    capabilities = CAPABILITIES

    def __init__(self, info: ModelInfo, device: str, precision: str, cache_dir: Optional[Path] = None,
                 threads: int = 0, text: bool = True) -> None:
        CAPABILITIES.require(device, precision)
        import onnxruntime as ort

        super().__init__(device, precision)
        self.info = info
        self.output_names = list(family_of(info).image_outputs)
        self.providers = providers_for(device, precision, ort.get_available_providers())
        self.exported = cached_export(info, cache_dir)
        self.logit_scale = self.exported.logit_scale
        self.logit_bias = self.exported.logit_bias
        self.text_length = self.exported.text_length
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        # No spin-waiting between runs: on a robot the inference thread shares few cores with the camera driver
        # and the other nodes, which a spinning thread pool would starve.
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        image_path = precision_variant(self.exported, self.exported.image_path, precision)
        self.image_session = ort.InferenceSession(str(image_path), options, providers=self.providers)
        self.text_session: Any = None
        if self.exported.text_path is not None and text:
            text_path = precision_variant(self.exported, self.exported.text_path, text_precision(precision))
            self.text_session = ort.InferenceSession(str(text_path), options, providers=self.providers)
        LOG.info('onnxruntime %s %s with providers %s', device, precision, self.image_session.get_providers())

    def run_image(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if pixels.shape[-2:] != (self.exported.input_size, self.exported.input_size):
            raise BackendUnavailableError(
                f'onnxruntime engine takes {self.exported.input_size}x{self.exported.input_size} inputs; '
                f'got {pixels.shape[-2]}x{pixels.shape[-1]} (multi-scale runs on the torch backend)')
        outputs = self.image_session.run(self.output_names, {PIXEL_VALUES: pixels})
        return dict(zip(self.output_names, outputs))

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.text_session is None:
            raise BackendUnavailableError(f'{self.info.model_id} has no text encoder')
        feeds = {INPUT_IDS: input_ids.astype(np.int64), ATTENTION_MASK: attention_mask.astype(np.int64)}
        (text,) = self.text_session.run([TEXT_EMBEDDING], feeds)
        return text

    def stored_fp32_reference(self, fallback: Callable[[], EncoderBackend]) -> Optional[EncoderBackend]:
        """
        Return the fp32 outputs on the gate's probe images stored beside the int8 file (made at its first gate).

        The first configure of an int8 file computes them with the fp32 session (`fallback`) and stores them; later
        configures compare with the stored outputs and never load the fp32 model (its peak memory).
        """
        if self.precision != 'int8' or self.device != 'cpu':
            return None
        path = self.exported.variant(self.exported.image_path, 'int8').with_suffix(REFERENCE_SUFFIX)
        if path.is_file():
            return StoredReference.load(self.info, path, CAPABILITIES, fallback)
        return _StoringReference(fallback(), path)

    def close(self) -> None:
        self.image_session = None
        self.text_session = None


class _StoringReference(EncoderBackend):
    """The loaded fp32 reference, storing what it answers (the probe batch) for the next configure."""

    name = 'fp32 reference'
    capabilities = CAPABILITIES

    def __init__(self, reference: EncoderBackend, path: Path) -> None:
        super().__init__('cpu', 'fp32')
        self.info = reference.info
        self.reference = reference
        self.path = path

    def run_image(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.reference.run_image(pixel_values)
        store_reference(self.path, pixel_values, outputs)
        return outputs

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        raise BackendUnavailableError('the fp32 reference has image outputs only')

    def close(self) -> None:
        self.reference.close()


def _load(request: BackendRequest) -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend(request.info, request.device, request.precision, request.cache_dir,
                              text=request.text)


BACKEND = BackendEntry(CAPABILITIES, _load)
