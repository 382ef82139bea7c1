# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
A test double of the few TensorRT 10/11 Python API calls robovision_ros's TensorRT backend makes.

Installed as `tensorrt` in sys.modules by the tests (test/test_tensorrt_backend.py), next to a CPU stand-in for the
backend's CUDA calls. An engine "built" here is the ONNX file it was parsed from plus the network's inputs, outputs
and optimization profiles; executing one runs that ONNX file with ONNX Runtime on CPU, reading the inputs from and
writing the outputs to the raw addresses the backend bound with set_tensor_address (CPU torch tensors under the
stand-in). So results are real, and the backend's names, shapes, dtypes, buffers and profiles are checked.

Checked as TensorRT checks them: the ONNX parse (with op types the parser can be told to refuse), that every
dynamic input has a profile shape and that profile shapes fit the network (rank, fixed dims, min <= opt <= max),
that set_input_shape stays within the profile (False otherwise), that every I/O tensor has an address and every
input a shape before execution (False otherwise), that an engine deserialises only in the version that built it
(None otherwise, as for a corrupt blob). Not modelled: GPU memory, streams and asynchrony, precision (the ONNX
file runs as it is in ONNX Runtime, so fp16 and Q/DQ give ONNX Runtime's numbers, not TensorRT's kernels), layer
fusion, builder flags, plugins, timing caches, and anything the backend does not call (an AttributeError here).
"""
from __future__ import annotations

import ctypes
import json
import struct
from collections import Counter
from enum import IntEnum
from typing import Any, Optional, Union

import numpy as np

__version__ = '10.9.0'
# Calls the tests count: 'build', 'parse', 'deserialize', 'execute'. The tests' fixture resets it.
CALLS: Counter = Counter()
# ONNX op types the parser refuses, as TensorRT refuses an op it has no importer for.
UNSUPPORTED_OPS: frozenset = frozenset()
# The input shapes of every execute_async_v3, in order: [{name: shape}].
EXECUTIONS: list = []
# Networks given to build_serialized_network, in order (for checks of creation flags and profiles).
BUILT_NETWORKS: list = []

_MAGIC = b'FAKETRT\0'
Dims = tuple[int, ...]


class NetworkDefinitionCreationFlag(IntEnum):
    EXPLICIT_BATCH = 0  # deprecated in TensorRT 10 (always on), as the real enum keeps it
    STRONGLY_TYPED = 1


class TensorIOMode(IntEnum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


# ONNX TensorProto element types -> TensorRT types -> numpy types.
_FROM_ONNX = {1: DataType.FLOAT, 10: DataType.HALF, 3: DataType.INT8, 6: DataType.INT32, 9: DataType.BOOL,
              2: DataType.UINT8, 7: DataType.INT64}
_NUMPY = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8, DataType.INT32: np.int32,
          DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}


class Logger:
    """trt.Logger: keeps what was logged, for the tests to read."""

    class Severity(IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self, min_severity: 'Logger.Severity' = Severity.WARNING) -> None:
        self.min_severity = min_severity
        self.messages: list[tuple[Logger.Severity, str]] = []

    def log(self, severity: 'Logger.Severity', msg: str) -> None:
        if severity <= self.min_severity:
            self.messages.append((severity, msg))


class _Tensor:
    """One network I/O tensor: name, type and dims (int, or the ONNX dim_param name of a dynamic dim)."""

    def __init__(self, name: str, dtype: DataType, dims: list[Union[int, str]]) -> None:
        self.name, self.dtype, self.dims = name, dtype, dims

    @property
    def shape(self) -> Dims:
        return tuple(d if isinstance(d, int) else -1 for d in self.dims)

    def as_json(self) -> dict:
        return {'name': self.name, 'dtype': int(self.dtype), 'dims': self.dims}

    @classmethod
    def from_json(cls, data: dict) -> '_Tensor':
        return cls(data['name'], DataType(data['dtype']), data['dims'])


class INetworkDefinition:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.onnx: Optional[bytes] = None
        self.inputs: list[_Tensor] = []
        self.outputs: list[_Tensor] = []

    @property
    def strongly_typed(self) -> bool:
        return bool(self.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)


class ParserError:
    """What parser.get_error returns; str() reads as TensorRT's does."""

    def __init__(self, node: int, name: str, op: str, desc: str) -> None:
        self._node, self._name, self._op, self._desc = node, name, op, desc

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def __str__(self) -> str:
        return (f'In node {self._node} with name: {self._name} and operator: {self._op} (importFallback): '
                f'UNSUPPORTED_NODE: {self._desc}')


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
        self.network, self.logger = network, logger
        self.errors: list[ParserError] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> ParserError:
        return self.errors[index]

    def clear_errors(self) -> None:
        self.errors = []

    def parse_from_file(self, model: str) -> bool:
        try:
            with open(model, 'rb') as f:
                data = f.read()
        except OSError as error:
            self.errors.append(ParserError(-1, '', '', f'Failed to open file {model}: {error}'))
            return False
        return self.parse(data)

    def parse(self, model: bytes) -> bool:
        import onnx
        from google.protobuf.message import DecodeError

        CALLS['parse'] += 1
        try:
            proto = onnx.load_from_string(bytes(model))
        except DecodeError as error:
            self.errors.append(ParserError(-1, '', '', f'Failed to parse ONNX model: {error}'))
            return False
        for index, node in enumerate(proto.graph.node):
            if node.op_type in UNSUPPORTED_OPS:
                self.errors.append(ParserError(index, node.name, node.op_type,
                                               f'No importer registered for op: {node.op_type}'))
        if self.errors:
            return False
        initializers = {init.name for init in proto.graph.initializer}
        self.network.inputs = [_tensor(v) for v in proto.graph.input if v.name not in initializers]
        self.network.outputs = [_tensor(v) for v in proto.graph.output]
        self.network.onnx = bytes(model)
        return True


def _tensor(value: Any) -> _Tensor:
    kind = value.type.tensor_type
    dims: list[Union[int, str]] = [d.dim_value if d.HasField('dim_value') else (d.dim_param or '?')
                                   for d in kind.shape.dim]
    return _Tensor(value.name, _FROM_ONNX[kind.elem_type], dims)


class IOptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[Dims, Dims, Dims]] = {}

    def set_shape(self, input: str, min: Dims, opt: Dims, max: Dims) -> None:
        self.shapes[input] = (tuple(min), tuple(opt), tuple(max))


class IBuilderConfig:
    def __init__(self) -> None:
        self.profiles: list[IOptimizationProfile] = []

    def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> INetworkDefinition:
        return INetworkDefinition(flags)

    def create_builder_config(self) -> IBuilderConfig:
        return IBuilderConfig()

    def create_optimization_profile(self) -> IOptimizationProfile:
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Optional[memoryview]:
        """Return the serialised engine (buffer protocol, as IHostMemory) or None after logging why, like TensorRT."""
        CALLS['build'] += 1
        BUILT_NETWORKS.append(network)
        problem = _profile_problem(network, config)
        if network.onnx is None:
            problem = 'network has no layers (nothing was parsed)'
        if problem is not None:
            self.logger.log(Logger.ERROR, problem)
            return None
        header = {'version': __version__, 'strongly_typed': network.strongly_typed,
                  'inputs': [t.as_json() for t in network.inputs], 'outputs': [t.as_json() for t in network.outputs],
                  'profiles': [{name: shapes for name, shapes in p.shapes.items()} for p in config.profiles]}
        blob = json.dumps(header).encode()
        return memoryview(_MAGIC + struct.pack('<I', len(blob)) + blob + network.onnx)


def _profile_problem(network: INetworkDefinition, config: IBuilderConfig) -> Optional[str]:
    """Why TensorRT would refuse these profiles for this network (None if it would not)."""
    dynamic = [t for t in network.inputs if -1 in t.shape]
    if dynamic and not config.profiles:
        return f'network has dynamic inputs ({", ".join(t.name for t in dynamic)}) but no optimization profile'
    inputs = {t.name: t for t in network.inputs}
    for index, profile in enumerate(config.profiles):
        for name in profile.shapes:
            if name not in inputs:
                return f'optimization profile {index} names {name!r}, which is not a network input'
        for tensor in dynamic:
            if tensor.name not in profile.shapes:
                return f'optimization profile {index} has no shape for dynamic input {tensor.name}'
        for name, (minimum, optimum, maximum) in profile.shapes.items():
            fixed = inputs[name].shape
            for dims in (minimum, optimum, maximum):
                if len(dims) != len(fixed) or any(f != -1 and f != d for f, d in zip(fixed, dims)):
                    return f'profile shape {dims} of {name} does not match its dims {fixed}'
            if not all(0 < a <= b <= c for a, b, c in zip(minimum, optimum, maximum)):
                return f'profile of {name} needs 0 < min <= opt <= max; got {minimum}, {optimum}, {maximum}'
    return None


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> Optional['ICudaEngine']:
        """Return the engine, or None after logging why (a corrupt blob, another TensorRT version), as TensorRT does."""
        CALLS['deserialize'] += 1
        data = bytes(serialized_engine)
        try:
            if not data.startswith(_MAGIC):
                raise ValueError('magic tag does not match')
            (length,) = struct.unpack_from('<I', data, len(_MAGIC))
            start = len(_MAGIC) + 4
            header = json.loads(data[start:start + length])
            onnx = data[start + length:]
        except (ValueError, struct.error) as error:
            self.logger.log(Logger.ERROR, f'IRuntime::deserializeCudaEngine: invalid engine ({error})')
            return None
        if header['version'] != __version__:
            self.logger.log(Logger.ERROR, f"engine built by TensorRT {header['version']}, this is {__version__}")
            return None
        return ICudaEngine(header, onnx)


class ICudaEngine:
    def __init__(self, header: dict, onnx: bytes) -> None:
        import onnxruntime as ort

        self.strongly_typed: bool = header['strongly_typed']
        self.inputs = [_Tensor.from_json(t) for t in header['inputs']]
        self.outputs = [_Tensor.from_json(t) for t in header['outputs']]
        self.profiles: list[dict[str, tuple[Dims, Dims, Dims]]] = [
            {name: tuple(tuple(dims) for dims in shapes) for name, shapes in p.items()} for p in header['profiles']]
        self.tensors = {t.name: t for t in self.inputs + self.outputs}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(onnx, options, providers=['CPUExecutionProvider'])
        self._output_shapes: dict[tuple[tuple[str, Dims], ...], dict[str, Dims]] = {}

    @property
    def num_io_tensors(self) -> int:
        return len(self.tensors)

    @property
    def num_optimization_profiles(self) -> int:
        return len(self.profiles)

    def get_tensor_name(self, index: int) -> str:
        return list(self.tensors)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        if name not in self.tensors:
            return TensorIOMode.NONE
        return TensorIOMode.INPUT if self.tensors[name] in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> Dims:
        return self.tensors[name].shape

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.tensors[name].dtype

    def output_shapes(self, input_shapes: tuple[tuple[str, Dims], ...]) -> dict[str, Dims]:
        """Each output's shape for these input shapes (run once on zeros, then remembered)."""
        if input_shapes not in self._output_shapes:
            feeds = {name: np.zeros(shape, _NUMPY[self.tensors[name].dtype]) for name, shape in input_shapes}
            results = self.session.run([t.name for t in self.outputs], feeds)
            self._output_shapes[input_shapes] = {t.name: r.shape for t, r in zip(self.outputs, results)}
        return self._output_shapes[input_shapes]

    def create_execution_context(self) -> 'IExecutionContext':
        return IExecutionContext(self)


class IExecutionContext:
    """Optimization profile 0; runs the engine's ONNX file with ONNX Runtime on the bound addresses."""

    def __init__(self, engine: ICudaEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, Dims] = {}
        self.addresses: dict[str, int] = {}
        self.errors: list[str] = []  # what TensorRT would log on each refused call

    def set_input_shape(self, name: str, shape: Dims) -> bool:
        engine = self.engine
        shape = tuple(int(d) for d in shape)
        if engine.get_tensor_mode(name) != TensorIOMode.INPUT:
            return self._error(f'set_input_shape: {name!r} is not an input')
        minimum, _, maximum = engine.profiles[0][name] if name in engine.profiles[0] else (
            engine.tensors[name].shape,) * 3
        if len(shape) != len(minimum) or not all(a <= d <= b for a, d, b in zip(minimum, shape, maximum)):
            return self._error(f'set_input_shape: {name} {shape} outside the profile [{minimum}, {maximum}]')
        self.shapes[name] = shape
        return True

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if name not in self.engine.tensors:
            return self._error(f'set_tensor_address: {name!r} is not an I/O tensor')
        self.addresses[name] = int(memory)
        return True

    def get_tensor_shape(self, name: str) -> Dims:
        """
        Return an input's set shape, or an output's shape for the inputs' set shapes (-1 where not yet known).

        TensorRT infers output shapes statically; the double learns them by running the ONNX file once on zeros
        of the set input shapes (the exported graphs have data-dependent dim names ONNX cannot resolve).
        """
        tensor = self.engine.tensors[name]
        if tensor in self.engine.inputs:
            return self.shapes.get(name, tensor.shape)
        if any(t.name not in self.shapes for t in self.engine.inputs):
            return tensor.shape
        return self.engine.output_shapes(tuple((t.name, self.shapes[t.name]) for t in self.engine.inputs))[name]

    def execute_async_v3(self, stream_handle: int) -> bool:
        CALLS['execute'] += 1
        engine = self.engine
        for tensor in engine.inputs + engine.outputs:
            if not self.addresses.get(tensor.name):
                return self._error(f'execute_async_v3: no address set for {tensor.name}')
        missing = [t.name for t in engine.inputs if t.name not in self.shapes and -1 in t.shape]
        if missing:
            return self._error(f'execute_async_v3: input shapes not set: {", ".join(missing)}')
        feeds = {}
        for tensor in engine.inputs:
            shape = self.get_tensor_shape(tensor.name)
            dtype = np.dtype(_NUMPY[tensor.dtype])
            raw = ctypes.string_at(self.addresses[tensor.name], int(np.prod(shape)) * dtype.itemsize)
            feeds[tensor.name] = np.frombuffer(raw, dtype).reshape(shape)
        EXECUTIONS.append({name: value.shape for name, value in feeds.items()})
        results = engine.session.run([t.name for t in engine.outputs], feeds)
        for tensor, result in zip(engine.outputs, results):
            expected = self.get_tensor_shape(tensor.name)
            if result.shape != expected or result.dtype != _NUMPY[tensor.dtype]:
                return self._error(f'{tensor.name}: ran to {result.dtype}{list(result.shape)}, '
                                   f'engine says {_NUMPY[tensor.dtype].__name__}{list(expected)}')
            result = np.ascontiguousarray(result)
            ctypes.memmove(self.addresses[tensor.name], result.ctypes.data, result.nbytes)
        return True

    def _error(self, message: str) -> bool:
        self.errors.append(message)
        return False
