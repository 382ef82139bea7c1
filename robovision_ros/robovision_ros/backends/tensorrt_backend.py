# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
TensorRT backend (native Python API, TensorRT 10 and 11).

UNVERIFIED on hardware: no TensorRT has run this code. Its logic runs in CI against a test double of the TensorRT
API (test/fake_tensorrt.py, which executes each engine's ONNX file in ONNX Runtime on CPU): engine build, cache key,
reuse and rebuild, parser, build and version errors, the int8 Q/DQ file, optimization profiles and the buffer,
shape and name plumbing. TensorRT's own behaviour (kernels, precision, memory, streams) is checked only by
`ROBOVISION_TENSORRT_TESTS=1` on a machine with TensorRT and a GPU.

Engines are built from the ONNX export as strongly typed networks: precision comes from the ONNX file itself
(fp32, the fp16 variant, or for int8 the Q/DQ variant made by `robovision_export --int8-qdq` with calibration
images), which is what TensorRT 11 requires (it drops the FP16/INT8 builder flags) and works the same on
TensorRT 10. Buffers are torch tensors on the device of `DEVICE`, the one place the backend's CUDA calls live.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np

from robovision_ros.backends.base import INT8_STATIC_QDQ, BackendCapabilities, BackendEntry, BackendRequest, \
    BackendUnavailableError, EncoderBackend
from robovision_ros.backends.engine_cache import EngineCache, EngineKey, file_sha256
from robovision_ros.backends.onnx_export import ExportedModel, ExportError, cached_export, default_cache_dir, \
    precision_variant
from robovision_ros.families.base import ATTENTION_MASK, INPUT_IDS, PIXEL_VALUES, TEXT_EMBEDDING, ModelInfo
from robovision_ros.model_dir import family_of

LOG = logging.getLogger(__name__)
CAPABILITIES = BackendCapabilities(
    name='tensorrt', module='tensorrt', precisions=(('cuda', ('fp32', 'fp16', 'int8')),), int8=INT8_STATIC_QDQ,
    fixed_input_size=True, device_tensors=True, auto_rank=(('cuda', 0),))
# Which ONNX file each precision's engine is built from (strongly typed: the file's types decide).
_ONNX_VARIANT = {'fp32': 'fp32', 'fp16': 'fp16', 'int8': 'qdq'}


class CudaDevice:
    """
    Every CUDA call the backend makes, in one place.

    Whether a GPU is visible, which GPU the engine key names, the stream TensorRT runs on and the torch device its
    buffers live on. The tests replace `DEVICE` with a CPU stand-in to run the backend's logic against a test double
    of TensorRT.
    """

    torch_device = 'cuda'

    def available(self) -> bool:
        import torch

        return torch.cuda.is_available()

    def name(self) -> str:
        import torch

        return torch.cuda.get_device_name()

    def compute_capability(self) -> str:
        import torch

        major, minor = torch.cuda.get_device_capability()
        return f'{major}.{minor}'

    def stream_handle(self) -> int:
        """Return the current torch stream as the handle execute_async_v3 takes."""
        import torch

        return torch.cuda.current_stream().cuda_stream

    def synchronize(self) -> None:
        import torch

        torch.cuda.current_stream().synchronize()

    def empty_cache(self) -> None:
        import torch

        torch.cuda.empty_cache()


DEVICE = CudaDevice()


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as error:
        raise BackendUnavailableError(f'backend tensorrt requested but the tensorrt module is missing ({error})')
    major = int(trt.__version__.split('.')[0])
    if major < 10:
        raise BackendUnavailableError(f'TensorRT {trt.__version__} found; robovision_ros needs 10 or 11')
    return trt


class _Engine:
    """One deserialised engine with its execution context and torch output buffers."""

    def __init__(self, trt: Any, runtime: Any, engine: Any, profile: tuple) -> None:
        self.runtime = runtime  # kept: TensorRT needs the runtime to outlive its engines
        self.engine = engine
        self.context = self.engine.create_execution_context()
        self.trt = trt
        self.profile = {name: (minimum, maximum) for name, minimum, _, maximum in profile}
        self.max_batch = min(maximum[0] for _, maximum in self.profile.values())
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        """
        Run on device tensors by input name; return outputs by name.

        A batch larger than the optimization profile's maximum runs in chunks of that maximum.
        """
        import torch

        batch = next(iter(feeds.values())).shape[0]
        if batch <= self.max_batch:
            return self._run(feeds)
        chunks = [self._run({name: tensor[start:start + self.max_batch] for name, tensor in feeds.items()})
                  for start in range(0, batch, self.max_batch)]
        return {name: torch.cat([chunk[name] for chunk in chunks]) for name in self.outputs}

    def _run(self, feeds: dict[str, Any]) -> dict[str, Any]:
        import torch

        # TensorRT reads dense row-major memory at the address it is given. The dense copies stay referenced until
        # execution is enqueued (freed earlier, the allocator could hand their memory to the next copy, which the
        # stream would run before the engine reads them).
        inputs = {name: tensor.contiguous() for name, tensor in feeds.items()}
        for name, tensor in inputs.items():
            if not self.context.set_input_shape(name, tuple(tensor.shape)):
                minimum, maximum = self.profile[name]
                raise BackendUnavailableError(f'TensorRT engine refused {name} of shape {tuple(tensor.shape)} '
                                              f'(its profile runs {minimum} to {maximum})')
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.outputs:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = torch.float16 if self.engine.get_tensor_dtype(name) == self.trt.DataType.HALF else torch.float32
            out = torch.empty(shape, dtype=dtype, device=DEVICE.torch_device)
            self.context.set_tensor_address(name, out.data_ptr())
            outputs[name] = out
        if not self.context.execute_async_v3(DEVICE.stream_handle()):
            raise RuntimeError('TensorRT execution failed')
        return outputs


class TensorRTBackend(EncoderBackend):
    name = 'tensorrt'
    capabilities = CAPABILITIES

    def __init__(self, info: ModelInfo, device: str, precision: str, cache_dir: Optional[Path] = None,
                 max_batch: int = 4, force_rebuild: bool = False, exported: Optional[ExportedModel] = None) -> None:
        """
        Set up the backend.

        `exported`: the ONNX export to build from (default: `info`'s cached export under `cache_dir`).
        """
        CAPABILITIES.require(device, precision)
        super().__init__(device, precision)
        if not DEVICE.available():
            raise BackendUnavailableError('device cuda requested but no CUDA GPU is visible')
        trt = _import_tensorrt()
        self.trt = trt
        self.info = info
        self.output_names = family_of(info).image_outputs
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        cache_root = cache_dir or default_cache_dir()
        self.exported = exported or cached_export(info, cache_root)
        self.logit_scale = self.exported.logit_scale
        self.logit_bias = self.exported.logit_bias
        self.text_length = self.exported.text_length
        self.cache = EngineCache(cache_root / 'tensorrt')
        size = self.exported.input_size
        image_profile = ((PIXEL_VALUES, (1, 3, size, size), (1, 3, size, size), (max_batch, 3, size, size)),)
        self.image_engine, self._image_key = self._engine(
            'image_encoder', self._onnx(self.exported.image_path),
            image_profile, force_rebuild)
        self.text_engine = None
        if self.exported.text_path is not None:
            length = self.exported.text_length
            text_profile = tuple((name, (1, length), (8, length), (64, length))
                                 for name in (INPUT_IDS, ATTENTION_MASK))
            self.text_engine, _ = self._engine(
                'text_encoder', self._onnx(self.exported.text_path),
                text_profile, force_rebuild)

    def _onnx(self, fp32_path: Optional[Path]) -> Path:
        try:
            path = precision_variant(self.exported, fp32_path, _ONNX_VARIANT[self.precision])
        except ExportError as error:
            raise BackendUnavailableError(str(error)) from error
        assert path is not None
        return path

    def _key(self, onnx_path: Path, profile: tuple) -> EngineKey:
        return EngineKey(onnx_sha256=file_sha256(onnx_path), tensorrt_version=self.trt.__version__,
                         gpu_name=DEVICE.name(), compute_capability=DEVICE.compute_capability(),
                         precision=self.precision, profile=profile, family=self.info.family)

    def _engine(self, stem: str, onnx_path: Path, profile: tuple, force_rebuild: bool) -> tuple[_Engine, EngineKey]:
        """
        Return the engine for `onnx_path` and `profile`: from the cache, else built and cached.

        A cached engine that does not deserialise (truncated, corrupt) is rebuilt and replaced, with a warning.
        """
        key = self._key(onnx_path, profile)
        engine_bytes = None if force_rebuild else self.cache.load(key, stem)
        if engine_bytes is not None:
            engine = self.runtime.deserialize_cuda_engine(engine_bytes)
            if engine is not None:
                return _Engine(self.trt, self.runtime, engine, profile), key
            LOG.warning('cached TensorRT engine %s does not deserialise (corrupt or truncated); rebuilding it',
                        self.cache.path_for(key, stem))
        LOG.info('building TensorRT engine %s (%s); this takes minutes', stem, self.precision)
        engine_bytes = self._build(onnx_path, profile)
        engine = self.runtime.deserialize_cuda_engine(engine_bytes)
        if engine is None:
            raise BackendUnavailableError(f'TensorRT could not deserialise the engine it just built from {onnx_path}')
        path = self.cache.store(key, stem, engine_bytes)
        LOG.info('cached TensorRT engine at %s', path)
        return _Engine(self.trt, self.runtime, engine, profile), key

    def _build(self, onnx_path: Path, profile: tuple) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailableError(f'TensorRT could not parse {onnx_path}: {errors}')
        config = builder.create_builder_config()
        optimization_profile = builder.create_optimization_profile()
        for name, minimum, optimum, maximum in profile:
            optimization_profile.set_shape(name, minimum, optimum, maximum)
        config.add_optimization_profile(optimization_profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailableError(f'TensorRT failed to build an engine from {onnx_path}')
        return bytes(serialized)

    @property
    def cache_key(self) -> Optional[str]:
        return self._image_key.digest

    def run_image(self, pixel_values: Any) -> dict[str, np.ndarray]:
        import torch

        pixels = torch.as_tensor(pixel_values).to(DEVICE.torch_device, torch.float32).contiguous()
        size = self.exported.input_size
        if tuple(pixels.shape[-2:]) != (size, size):
            raise BackendUnavailableError(
                f'tensorrt engine takes {size}x{size} inputs; got {pixels.shape[-2]}x{pixels.shape[-1]} '
                '(multi-scale runs on the torch backend)')
        outputs = self.image_engine.run({PIXEL_VALUES: pixels})
        DEVICE.synchronize()
        return {name: outputs[name].float().cpu().numpy() for name in self.output_names}

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        import torch

        if self.text_engine is None:
            raise BackendUnavailableError(f'{self.info.model_id} has no text encoder')
        feeds = {INPUT_IDS: torch.as_tensor(input_ids, dtype=torch.int64, device=DEVICE.torch_device),
                 ATTENTION_MASK: torch.as_tensor(attention_mask, dtype=torch.int64, device=DEVICE.torch_device)}
        text = self.text_engine.run(feeds)[TEXT_EMBEDDING]
        DEVICE.synchronize()
        return text.float().cpu().numpy()

    def close(self) -> None:
        self.image_engine = None
        self.text_engine = None
        DEVICE.empty_cache()


def _load(request: BackendRequest) -> TensorRTBackend:
    return TensorRTBackend(request.info, request.device, request.precision, request.cache_dir,
                           force_rebuild=request.force_rebuild)


BACKEND = BackendEntry(CAPABILITIES, _load)
