# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_serve: serve a model's image and text encoders on a Triton Inference Server for `backend:=triton`.

    robovision_serve MODEL [--backend onnxruntime] [--device cpu] [--precision fp32] [--instances N]
                     [--host 127.0.0.1] [--grpc-port 8001] [--http-port 8000] [--metrics-port 8002]
                     [--prefix NAME] [--max-batch 32] [--max-queue-delay-us 2000] [--pixels fp16|fp32]
    robovision_serve MODEL --export-repository DIR [--device cpu|cuda] [--precision ...] [--instances N]

The server is nvidia-pytriton's bundled Triton. The encoders run through this package's own engine
(`create_backend`, the same code and caches as a node), one engine per instance, behind Triton's dynamic batcher,
so requests from several nodes are batched together. Served as `<prefix>_image` (pixel_values -> the outputs of the
model family's image graph: patch_tokens and global_embedding for CLIP and ViT, per-patch class embeddings, logit
shifts and scales and boxes for OWL detectors) and `<prefix>_text` (input_ids, attention_mask -> text_embedding);
`<prefix>` defaults to the model directory's name, which is also what a node with `backend:=triton` looks for.

pytriton needs its own venv made from the system Python (scripts/setup_serve.sh); run from another interpreter,
this tool re-executes itself there with this package's source on PYTHONPATH.

`--export-repository DIR` instead writes a model repository (config.pbtxt with dynamic batching and the ONNX
files, onnxruntime backend layout) for a stock `tritonserver --model-repository DIR`; no pytriton needed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from robovision_ros.backends.base import DEVICES, PRECISIONS, BackendUnavailableError, EncoderBackend
from robovision_ros.backends.registry import backend_capabilities, create_backend
from robovision_ros.backends.triton_backend import PARAMETER_ENGINE, PARAMETER_FINGERPRINT, PARAMETER_LOGIT_BIAS, \
    PARAMETER_LOGIT_SCALE, PARAMETER_MODEL, PARAMETER_PRECISION, served_names, served_prefix
from robovision_ros.model_dir import ModelInfo, ModelLoadError, read_model_info
from robovision_ros.backends.onnx_export import ExportError, process_alive
from robovision_ros.families import family_named
from robovision_ros.families.base import ATTENTION_MASK, INPUT_IDS, PIXEL_VALUES, TEXT_EMBEDDING

SERVE_VENV_ENV = 'ROBOVISION_SERVE_VENV'
_CHILD_ENV = 'ROBOVISION_SERVE_CHILD'
# Variables of the project's shell (scripts/env.sh) that must not leak into the serve venv's interpreter: its
# PYTHONPATH would put numpy 2 and the ROS wheels before the serve venv's own packages.
_PROJECT_ENV = ('PYTHONPATH', 'PYTHONHOME', 'VIRTUAL_ENV', 'LD_LIBRARY_PATH', '_ROS_WHEELS_BOOTSTRAP_COMPLETE')


class ServeError(RuntimeError):
    """The server cannot start as asked (no serve venv, a model that does not load, ...)."""


def default_serve_venv() -> Path:
    cache = Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache'))
    return Path(os.environ.get(SERVE_VENV_ENV, cache / 'robovision_ros' / 'serve-venv'))


def source_root() -> Path:
    """Return the directory holding this package's source (what PYTHONPATH needs to import it)."""
    import robovision_ros

    return Path(robovision_ros.__file__).resolve().parent.parent


# --- what is served --------------------------------------------------------------------------------------------

def engine_description(backend: EncoderBackend) -> str:
    return f'{backend.name} {backend.device}'


def config_parameters(info: ModelInfo, backend: EncoderBackend) -> dict[str, str]:
    """Return the model-config parameters a node's triton backend checks (see triton_backend.check_served)."""
    return {PARAMETER_PRECISION: backend.precision, PARAMETER_FINGERPRINT: info.fingerprint,
            PARAMETER_MODEL: info.model_id, PARAMETER_LOGIT_SCALE: repr(float(backend.logit_scale)),
            PARAMETER_LOGIT_BIAS: repr(float(backend.logit_bias)), PARAMETER_ENGINE: engine_description(backend)}


def image_outputs(info: ModelInfo) -> tuple[str, ...]:
    """Return the names of the image model's outputs: those of the family's image graph."""
    return family_named(info.family).image_outputs


def image_shapes(info: ModelInfo) -> dict[str, tuple[int, ...]]:
    """Per-item shapes of the image model's tensors (the batch dimension is Triton's)."""
    return {PIXEL_VALUES: (3, info.image_size, info.image_size),
            **family_named(info.family).image_output_shapes(info)}


def text_shapes(info: ModelInfo, text_length: int) -> dict[str, tuple[int, ...]]:
    return {INPUT_IDS: (text_length,), ATTENTION_MASK: (text_length,), TEXT_EMBEDDING: (info.global_dim,)}


def check_engine_shapes(info: ModelInfo, backend: EncoderBackend) -> None:
    """Run the engine once and check its outputs have the shapes the configs will declare."""
    shapes = image_shapes(info)
    outputs = backend.run_image(np.zeros((1, *shapes[PIXEL_VALUES]), np.float32))
    got = {name: outputs[name].shape[1:] for name in image_outputs(info)}
    if info.has_text:
        ids = np.zeros((1, backend.text_length), np.int64)
        got[TEXT_EMBEDDING] = backend.encode_text(ids, np.ones_like(ids)).shape[1:]
        shapes.update(text_shapes(info, backend.text_length))
    wrong = {name: (tuple(shape), shapes[name]) for name, shape in got.items() if tuple(shape) != shapes[name]}
    if wrong:
        raise ServeError(f'{info.model_id}: engine output shapes {wrong} differ from the model config')


def image_infer(backend: EncoderBackend) -> Callable[..., dict[str, np.ndarray]]:
    """Make a batched infer function for the image model (pixels arrive as fp16 or fp32; the engine takes fp32)."""
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        outputs = backend.run_image(inputs[PIXEL_VALUES].astype(np.float32, copy=False))
        return {name: np.ascontiguousarray(value, np.float32) for name, value in outputs.items()}
    return infer


def text_infer(backend: EncoderBackend) -> Callable[..., dict[str, np.ndarray]]:
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {TEXT_EMBEDDING: np.ascontiguousarray(backend.encode_text(inputs[INPUT_IDS], inputs[ATTENTION_MASK]),
                                                     np.float32)}
    return infer


# --- pytriton server -------------------------------------------------------------------------------------------

def _add_parameters(triton: Any, model_name: str, parameters: dict[str, str]) -> None:
    """
    Put `parameters` into the config pytriton generates for `model_name` (before the server loads it).

    pytriton's ModelConfig has no field for config parameters; its generated config keeps its own
    `backend_parameters` (workspace path), which this extends. Checked against nvidia-pytriton 0.7.0 (pinned in
    requirements-serve.txt); a node refuses a model without them, so a change here cannot pass unnoticed.
    """
    models = [m for m in triton._model_manager.models if m.model_name == model_name]
    if len(models) != 1:
        raise ServeError(f'pytriton internals changed: model {model_name} not found to add its config parameters')
    models[0]._get_triton_model_config().backend_parameters.update(parameters)


def server_workspace() -> Path:
    """
    Return this server's pytriton workspace, after removing those of servers that are gone.

    pytriton removes its workspace (sockets, the generated model store: ~20 MB) when it stops; a server killed with
    SIGKILL cannot, so each server works in `<PYTRITON_HOME>/robovision_serve/<pid>` and the next start removes the
    directories whose process no longer runs.
    """
    from pytriton.constants import PYTRITON_HOME

    root = Path(PYTRITON_HOME) / 'robovision_serve'
    if root.is_dir():
        for entry in root.iterdir():
            if entry.name.isdigit() and not process_alive(int(entry.name)):
                shutil.rmtree(entry, ignore_errors=True)
    workspace = root / str(os.getpid())
    shutil.rmtree(workspace, ignore_errors=True)
    return workspace


def serve(args: argparse.Namespace) -> int:
    """Load one engine per instance, bind the image (and text) model, serve until SIGINT/SIGTERM."""
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig

    info = read_model_info(args.model)
    prefix = args.prefix or served_prefix(info)
    image_name, text_name = served_names(prefix, info.has_text)
    cache = Path(args.cache_dir) if args.cache_dir else None
    engines = [create_backend(info, args.backend, args.device, args.precision, cache) for _ in range(args.instances)]
    check_engine_shapes(info, engines[0])
    parameters = config_parameters(info, engines[0])
    pixel_dtype = np.float16 if args.pixels == 'fp16' else np.float32
    config = ModelConfig(max_batch_size=args.max_batch,
                         batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us))
    shapes = image_shapes(info)
    workspace = server_workspace()
    triton = Triton(workspace=workspace, config=TritonConfig(
        grpc_address=args.host, grpc_port=args.grpc_port, http_address=args.host, http_port=args.http_port,
        metrics_address=args.host, metrics_port=args.metrics_port, log_verbose=0, exit_timeout_secs=5),
        # Inference statistics (batch sizes, queue times) stay readable by clients and the benchmark; loading
        # and unloading models, shared memory, tracing and logging stay behind pytriton's access token.
        security_config=TritonSecurityConfig(
            restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != 'statistics']))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        triton.bind(image_name, [batch(image_infer(e)) for e in engines],
                    inputs=[Tensor(name=PIXEL_VALUES, dtype=pixel_dtype, shape=shapes[PIXEL_VALUES])],
                    outputs=[Tensor(name=n, dtype=np.float32, shape=shapes[n]) for n in image_outputs(info)],
                    config=config, strict=True)
        _add_parameters(triton, image_name, parameters)
        if text_name is not None:
            shapes = text_shapes(info, engines[0].text_length)
            triton.bind(text_name, [batch(text_infer(e)) for e in engines],
                        inputs=[Tensor(name=n, dtype=np.int64, shape=shapes[n]) for n in (INPUT_IDS, ATTENTION_MASK)],
                        outputs=[Tensor(name=TEXT_EMBEDDING, dtype=np.float32, shape=shapes[TEXT_EMBEDDING])],
                        config=config, strict=True)
            _add_parameters(triton, text_name, parameters)
        triton.run()
        served = ', '.join(n for n in (image_name, text_name) if n)
        print(f'robovision_serve: serving {served} of {info.model_id} on grpc://{args.host}:{args.grpc_port} '
              f'({engine_description(engines[0])} {engines[0].precision}, {args.instances} instance(s), '
              f'max batch {args.max_batch}, pixels as {args.pixels})', flush=True)
        while not stop.wait(1.0):
            if not triton.is_alive():
                print('robovision_serve: the Triton server stopped', file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        triton.stop()
        for engine in engines:
            engine.close()
        shutil.rmtree(workspace, ignore_errors=True)


def _reexec_in_serve_venv(argv: Sequence[str]) -> None:
    """Run this tool in the serve venv (does not return), unless this interpreter is the one to serve from."""
    venv = default_serve_venv()
    if os.environ.get(_CHILD_ENV) or Path(sys.prefix).resolve() == venv.resolve():
        return
    python = venv / 'bin' / 'python'
    if not python.is_file():
        import importlib.util

        if importlib.util.find_spec('pytriton') is not None:
            return  # pytriton installed here (e.g. a GPU server set up by hand): serve from this interpreter
        raise ServeError(f'no serve venv at {venv} and no pytriton here: run scripts/setup_serve.sh '
                         f'(or set {SERVE_VENV_ENV})')
    env = {k: v for k, v in os.environ.items() if k not in _PROJECT_ENV}
    env.update({_CHILD_ENV: '1', 'PYTHONPATH': str(source_root()), 'PATH': f"{venv / 'bin'}:{env.get('PATH', '')}"})
    os.execve(str(python), [str(python), '-m', 'robovision_ros.tools.serve', *argv], env)


# --- model repository for a stock tritonserver -----------------------------------------------------------------

_TRITON_TYPES = {np.dtype(np.float32): 'TYPE_FP32', np.dtype(np.float16): 'TYPE_FP16', np.dtype(np.int64): 'TYPE_INT64'}


def model_config_text(name: str, inputs: dict[str, tuple[Any, tuple[int, ...]]],
                      outputs: dict[str, tuple[Any, tuple[int, ...]]], max_batch: int, queue_delay_us: int,
                      instances: int, device: str, parameters: dict[str, str]) -> str:
    """config.pbtxt of one model for Triton's onnxruntime backend, built as Triton's ModelConfig message."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    config = pb.ModelConfig(name=name, backend='onnxruntime', max_batch_size=max_batch)
    for target, tensors in ((config.input, inputs), (config.output, outputs)):
        for tensor_name, (dtype, dims) in tensors.items():
            target.add(name=tensor_name, data_type=pb.DataType.Value(_TRITON_TYPES[np.dtype(dtype)]), dims=dims)
    config.dynamic_batching.max_queue_delay_microseconds = queue_delay_us
    config.instance_group.add(count=instances, kind=pb.ModelInstanceGroup.KIND_GPU if device == 'cuda'
                              else pb.ModelInstanceGroup.KIND_CPU)
    for key, value in parameters.items():
        config.parameters[key].string_value = value
    return text_format.MessageToString(config)


def export_repository(args: argparse.Namespace) -> list[Path]:
    """Write `<prefix>_image` (and `<prefix>_text`) with config.pbtxt and 1/model.onnx; returns the configs."""
    from robovision_ros.backends.onnxruntime_backend import CAPABILITIES as ONNXRUNTIME
    from robovision_ros.backends.onnx_export import cached_export, precision_variant, text_precision

    reason = ONNXRUNTIME.rejection(args.device, args.precision)
    if reason is not None:
        raise ServeError(f"the stock server's onnxruntime backend: {reason}")
    info = read_model_info(args.model)
    exported = cached_export(info, Path(args.cache_dir) if args.cache_dir else None)
    prefix = args.prefix or served_prefix(info)
    image_name, text_name = served_names(prefix, info.has_text)
    parameters = {PARAMETER_PRECISION: args.precision, PARAMETER_FINGERPRINT: info.fingerprint,
                  PARAMETER_MODEL: info.model_id, PARAMETER_LOGIT_SCALE: repr(float(exported.logit_scale)),
                  PARAMETER_LOGIT_BIAS: repr(float(exported.logit_bias)),
                  PARAMETER_ENGINE: f'onnxruntime {args.device}'}
    shapes = image_shapes(info)
    models = [(image_name, precision_variant(exported, exported.image_path, args.precision),
               {PIXEL_VALUES: (np.float32, shapes[PIXEL_VALUES])},
               {n: (np.float32, shapes[n]) for n in image_outputs(info)})]
    if text_name is not None:
        shapes = text_shapes(info, exported.text_length)
        models.append((text_name, precision_variant(exported, exported.text_path, text_precision(args.precision)),
                       {n: (np.int64, shapes[n]) for n in (INPUT_IDS, ATTENTION_MASK)},
                       {TEXT_EMBEDDING: (np.float32, shapes[TEXT_EMBEDDING])}))
    written = []
    for name, onnx_path, inputs, outputs in models:
        directory = Path(args.export_repository) / name
        (directory / '1').mkdir(parents=True, exist_ok=True)
        shutil.copyfile(onnx_path, directory / '1' / 'model.onnx')
        config = directory / 'config.pbtxt'
        config.write_text(model_config_text(name, inputs, outputs, args.max_batch, args.max_queue_delay_us,
                                            args.instances, args.device, parameters))
        written.append(config)
    return written


# --- command line ----------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='robovision_serve', description=__doc__.strip().split('\n')[0])
    parser.add_argument('model', help='model directory, hub id, or embedded:<name> (the same the nodes load)')
    local = [name for name, capabilities in backend_capabilities().items() if not capabilities.remote]
    parser.add_argument('--backend', default='onnxruntime', choices=local,
                        help='engine the server runs (default onnxruntime)')
    parser.add_argument('--device', default='cpu', choices=DEVICES, help='device of the server (default cpu)')
    parser.add_argument('--precision', default='fp32', choices=PRECISIONS,
                        help="precision of the server's engine; nodes must ask for the same (default fp32)")
    parser.add_argument('--instances', type=int, default=1, help='engine instances serving in parallel (default 1)')
    parser.add_argument('--prefix', default='', help='served names <prefix>_image, <prefix>_text '
                        "(default: the model directory's name)")
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for robots)')
    parser.add_argument('--grpc-port', type=int, default=8001)
    parser.add_argument('--http-port', type=int, default=8000)
    parser.add_argument('--metrics-port', type=int, default=8002)
    parser.add_argument('--max-batch', type=int, default=32, help='largest batch the dynamic batcher forms')
    parser.add_argument('--max-queue-delay-us', type=int, default=2000,
                        help='how long the batcher waits for more requests to fill a batch (microseconds)')
    parser.add_argument('--pixels', choices=('fp16', 'fp32'), default='fp16',
                        help='type the normalised pixels travel in (fp16: half the bytes, results within the '
                             'parity bound; see docs/benchmarks_triton.md)')
    parser.add_argument('--cache-dir', default='', help='ONNX/engine cache (default ~/.cache/robovision_ros)')
    parser.add_argument('--export-repository', metavar='DIR',
                        help='write a Triton model repository for a stock tritonserver instead of serving')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    for name in ('instances', 'max_batch'):
        if getattr(args, name) < 1:
            print(f'robovision_serve: --{name.replace("_", "-")} must be at least 1', file=sys.stderr)
            return 2
    try:
        if args.export_repository:
            for config in export_repository(args):
                print(f'robovision_serve: wrote {config}')
            return 0
        _reexec_in_serve_venv(argv)
        return serve(args)
    except (ServeError, ModelLoadError, BackendUnavailableError, ExportError, OSError) as error:
        print(f'robovision_serve: {error}', file=sys.stderr, flush=True)
        return 1


if __name__ == '__main__':
    sys.exit(main())
