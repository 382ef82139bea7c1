# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Triton backend: the image and text encoders run on a Triton Inference Server, reached over gRPC.

The node decodes and preprocesses frames itself (on its CPU) and sends the normalised pixels; the server runs the
encoders (`robovision_serve`, robovision_ros/tools/serve.py, or a stock `tritonserver` on a repository written by
`robovision_serve --export-repository`). What the server runs is read from its model configs at load and checked
against the node's model: tensor names, shapes and types, the model fingerprint and the precision. The served
model configs carry that in their `parameters` (the `PARAMETER_*` keys below), which the serve tool writes.

`device` and `precision` mean: the node runs on the CPU (only preprocessing happens locally; the server's device
is its own business), and `precision` must be the precision the server was started with, so that a node never
silently gets fp16 or int8 results it did not ask for.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import numpy as np

from robovision_ros.backends.base import BackendCapabilities, BackendEntry, BackendRequest, BackendUnavailableError, \
    EncoderBackend, TransientBackendError
from robovision_ros.families import family_named
from robovision_ros.families.base import ATTENTION_MASK, INPUT_IDS, PIXEL_VALUES, TEXT_EMBEDDING, ModelInfo
from robovision_ros.parameters import FIXED, ParameterRule, ParameterSpec

LOG = logging.getLogger(__name__)

CAPABILITIES = BackendCapabilities(
    name='triton', module='tritonclient', precisions=(('cpu', ('fp32', 'fp16', 'bf16', 'int8')),),
    int8="the server's (robovision_serve: its backend's int8)", fixed_input_size=True, remote=True)

DEFAULT_PORT = 8001
DEFAULT_TIMEOUT_MS = 2000
# Texts per text-encoder request: a vocabulary is sent in small requests, so that each fits the same per-request
# timeout as a frame (8 texts of CLIP ViT-B/32 take about 0.4 s on a 2-core CPU server).
TEXT_REQUEST_TEXTS = 8
IMAGE_SUFFIX = '_image'
TEXT_SUFFIX = '_text'
# Model-config parameters the serve tool writes and this backend checks (string values).
PARAMETER_PRECISION = 'robovision.precision'
PARAMETER_FINGERPRINT = 'robovision.fingerprint'
PARAMETER_MODEL = 'robovision.model_id'
PARAMETER_LOGIT_SCALE = 'robovision.logit_scale'
PARAMETER_LOGIT_BIAS = 'robovision.logit_bias'  # SigLIP's; a family without one (CLIP) may omit it (0.0)
PARAMETER_ENGINE = 'robovision.engine'  # "<backend> <device>" the server runs, for logs and diagnostics
# Triton data types of the tensors (model config spelling); pixels may travel as fp16 (half the bytes).
PIXEL_TYPES = {'TYPE_FP32': np.float32, 'TYPE_FP16': np.float16}
# gRPC retries a lost server at least every 2 s (its default backoff grows to 2 minutes), so results resume within
# about 2 s of the server's return. The minimum is also gRPC's connect timeout: 2 s leaves room for slow links.
_CHANNEL_ARGS = [('grpc.max_send_message_length', 2**31 - 1), ('grpc.max_receive_message_length', 2**31 - 1),
                 ('grpc.initial_reconnect_backoff_ms', 500), ('grpc.min_reconnect_backoff_ms', 2000),
                 ('grpc.max_reconnect_backoff_ms', 2000)]


class TritonModelError(BackendUnavailableError):
    """The server does not serve the model this node needs (missing, other shapes, another model or precision)."""


class TritonRequestError(TransientBackendError):
    """One request to the server failed (unreachable, timed out, or refused); the next one may succeed."""


@dataclass(frozen=True)
class TritonTarget:
    """Where the encoders are served: gRPC address, served-model prefix ('' = from the model) and request timeout."""

    url: str
    model_prefix: str = ''
    timeout_ms: int = DEFAULT_TIMEOUT_MS

    def options(self) -> dict[str, Any]:
        """Return the node parameters that select this target (what `create_backend` takes as `options`)."""
        return {'triton_url': self.url, 'triton_model': self.model_prefix, 'triton_timeout_ms': self.timeout_ms}

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> 'TritonTarget':
        return cls(str(options.get('triton_url', '')), str(options.get('triton_model', '')),
                   int(options.get('triton_timeout_ms', DEFAULT_TIMEOUT_MS)))


def parse_url(url: str) -> str:
    """`grpc://host:port`, `host:port` or `host` -> `host:port` for gRPC; ValueError with the reason otherwise."""
    text = url.strip()
    scheme, sep, rest = text.partition('://')
    if sep:
        if scheme != 'grpc':
            raise ValueError(f"triton_url '{url}': only gRPC is used (grpc://host:port or host:port); "
                             f"got scheme '{scheme}'")
        text = rest
    text = text.rstrip('/')
    match = re.fullmatch(r'(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?', text)
    if not match:
        raise ValueError(f"triton_url '{url}' is not host:port (e.g. localhost:{DEFAULT_PORT}, "
                         f'grpc://gpu-server:{DEFAULT_PORT})')
    port = int(match.group(2) or DEFAULT_PORT)
    if not 0 < port < 65536:
        raise ValueError(f"triton_url '{url}': port {port} out of range")
    return f'{match.group(1)}:{port}'


def triton_problem(values: Mapping[str, Any]) -> Optional[str]:
    """Why the triton parameters among `values` cannot work for backend triton (None: they can, or not triton)."""
    if values['backend'] != 'triton':
        return None
    url, prefix = values['triton_url'], values['triton_model']
    if not url.strip():
        return f'backend triton needs triton_url (e.g. localhost:{DEFAULT_PORT} or grpc://gpu-server:{DEFAULT_PORT})'
    try:
        parse_url(url)
    except ValueError as error:
        return str(error)
    if not re.fullmatch(r'[A-Za-z0-9._-]*', prefix):
        return f"triton_model '{prefix}' is not a Triton model name (letters, digits, '.', '_', '-')"
    return None


PARAMETERS = (
    ParameterSpec('triton_url', 'string', '',
                  'backend triton: gRPC address of the Triton server, host:port or grpc://host:port (port '
                  f'{DEFAULT_PORT} if none). device is then cpu (preprocessing) and precision must be what the '
                  'server runs.', FIXED, owner='triton'),
    ParameterSpec('triton_model', 'string', '',
                  'backend triton: prefix of the served models <prefix>_image, <prefix>_text ("" = the model '
                  "directory's name, as robovision_serve names them).", FIXED, owner='triton'),
    ParameterSpec('triton_timeout_ms', 'integer', DEFAULT_TIMEOUT_MS,
                  'backend triton: limit of each request to the server (ms); a frame that takes longer fails.',
                  FIXED, bounds=(1, 600000), owner='triton'),
)


def served_prefix(info: ModelInfo) -> str:
    """
    Return the prefix `robovision_serve` serves a model under by default.

    That is its directory name, in Triton's model-name alphabet (letters, digits, '.', '_', '-').
    """
    return re.sub(r'[^A-Za-z0-9._-]', '_', info.path.name) or 'model'


def served_names(prefix: str, has_text: bool) -> tuple[str, Optional[str]]:
    """(image model, text model or None) served under `prefix`."""
    return prefix + IMAGE_SUFFIX, (prefix + TEXT_SUFFIX) if has_text else None


def _dims(tensor: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.get('dims', ()))


def _tensors(config: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {t['name']: t for t in config.get(kind, [])}


def _parameters(config: dict[str, Any]) -> dict[str, str]:
    return {key: value.get('string_value', '') for key, value in config.get('parameters', {}).items()}


def _require_tensor(name: str, where: str, tensors: dict[str, dict[str, Any]], dims: tuple[int, ...],
                    types: tuple[str, ...]) -> str:
    """Return the tensor's data type; TritonModelError unless `tensors` holds `name` with `dims` and a `types`."""
    tensor = tensors.get(name)
    if tensor is None:
        raise TritonModelError(f"{where} has no tensor '{name}' (it has: {', '.join(tensors) or 'none'})")
    dtype = tensor.get('data_type', '')
    if _dims(tensor) != dims or dtype not in types:
        raise TritonModelError(f"{where}: tensor '{name}' is {dtype} {list(_dims(tensor))}; this model needs "
                               f"{' or '.join(types)} {list(dims)}")
    return dtype


@dataclass(frozen=True)
class ServedModels:
    """What the server's model configs say, checked against the node's model."""

    pixel_dtype: Any  # np.float16 or np.float32: what the image model takes
    image_batch: int  # max_batch_size of the image model
    text_batch: int
    text_length: int
    logit_scale: float
    engine: str
    logit_bias: float = 0.0


def check_served(info: ModelInfo, precision: str, image_config: dict[str, Any],
                 text_config: Optional[dict[str, Any]], where: str) -> ServedModels:
    """
    Check the served model configs (Triton's JSON form) against `info` and `precision`.

    Raise TritonModelError with what was expected and what the server has.
    """
    configs = [image_config] + ([text_config] if text_config is not None else [])
    for config in configs:
        name = config.get('name', '?')
        if int(config.get('max_batch_size', 0)) < 1:
            raise TritonModelError(f"{where}: model '{name}' does not batch (max_batch_size 0); serve it with "
                                   'robovision_serve or a config with max_batch_size >= 1')
        parameters = _parameters(config)
        if PARAMETER_FINGERPRINT not in parameters or PARAMETER_PRECISION not in parameters:
            raise TritonModelError(f"{where}: model '{name}' was not served by robovision_serve (its config has no "
                                   f"{PARAMETER_FINGERPRINT} / {PARAMETER_PRECISION} parameters)")
        if parameters[PARAMETER_FINGERPRINT] != info.fingerprint:
            raise TritonModelError(
                f"{where}: model '{name}' is {parameters.get(PARAMETER_MODEL, '?')} (fingerprint "
                f"{parameters[PARAMETER_FINGERPRINT]}); this node's model {info.model_id} has fingerprint "
                f'{info.fingerprint}: serve the same model directory on both sides')
        if parameters[PARAMETER_PRECISION] != precision:
            raise TritonModelError(f"{where}: model '{name}' runs {parameters[PARAMETER_PRECISION]}; this node asks "
                                   f'for {precision} (set precision:={parameters[PARAMETER_PRECISION]})')
    size = info.image_size
    image_where = f"{where}: model '{image_config.get('name', '?')}'"
    pixel_type = _require_tensor(PIXEL_VALUES, image_where, _tensors(image_config, 'input'), (3, size, size),
                                 tuple(PIXEL_TYPES))
    outputs = _tensors(image_config, 'output')
    for name, dims in family_named(info.family).image_output_shapes(info).items():
        _require_tensor(name, image_where, outputs, dims, ('TYPE_FP32',))
    text_length, text_batch, logit_scale, logit_bias = 0, 0, 1.0, 0.0
    if text_config is not None:
        text_where = f"{where}: model '{text_config.get('name', '?')}'"
        inputs = _tensors(text_config, 'input')
        ids = inputs.get(INPUT_IDS)
        text_length = _dims(ids)[0] if ids is not None and len(_dims(ids)) == 1 else -1
        if text_length < 1:
            raise TritonModelError(f"{text_where}: '{INPUT_IDS}' must be INT64 of one fixed length; got "
                                   f"{ids.get('data_type') if ids else 'none'} {list(_dims(ids)) if ids else []}")
        for name in (INPUT_IDS, ATTENTION_MASK):
            _require_tensor(name, text_where, inputs, (text_length,), ('TYPE_INT64',))
        _require_tensor(TEXT_EMBEDDING, text_where, _tensors(text_config, 'output'), (info.global_dim,),
                        ('TYPE_FP32',))
        text_batch = int(text_config['max_batch_size'])
        try:
            logit_scale = float(_parameters(text_config)[PARAMETER_LOGIT_SCALE])
        except (KeyError, ValueError):
            raise TritonModelError(f'{text_where}: no numeric {PARAMETER_LOGIT_SCALE} parameter')
        logit_bias = _served_bias(info, _parameters(text_config), text_where)
    return ServedModels(PIXEL_TYPES[pixel_type], int(image_config['max_batch_size']), text_batch, text_length,
                        logit_scale, _parameters(image_config).get(PARAMETER_ENGINE, ''), logit_bias)


def _served_bias(info: ModelInfo, parameters: dict[str, str], where: str) -> float:
    """
    Return the logit bias a served text model declares.

    Required for a family that scores with a sigmoid (its scores depend on the bias); a family without one may omit
    it, as servers that predate it do.
    """
    from robovision_ros.clip_scoring import SIGMOID

    if PARAMETER_LOGIT_BIAS not in parameters:
        if family_named(info.family).scoring == SIGMOID:
            raise TritonModelError(f'{where}: no {PARAMETER_LOGIT_BIAS} parameter; {info.family} scores need the '
                                   "model's logit bias (serve it with this version of robovision_serve)")
        return 0.0
    try:
        return float(parameters[PARAMETER_LOGIT_BIAS])
    except ValueError:
        raise TritonModelError(f'{where}: {PARAMETER_LOGIT_BIAS} is not a number: '
                               f'{parameters[PARAMETER_LOGIT_BIAS]!r}') from None


def _import_client() -> tuple[Any, Any]:
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError as error:
        raise BackendUnavailableError(f"backend triton needs tritonclient[grpc] ({error}); "
                                      'pip install -r requirements.txt')
    return grpcclient, InferenceServerException


class TritonBackend(EncoderBackend):
    """Encoders on a Triton server; every request is bounded by the target's timeout."""

    name = 'triton'
    capabilities = CAPABILITIES

    def __init__(self, info: ModelInfo, device: str, precision: str, target: Optional[TritonTarget]) -> None:
        CAPABILITIES.require(device, precision)
        if target is None or not target.url.strip():
            raise BackendUnavailableError('backend triton needs the server address (triton_url, e.g. '
                                          f'localhost:{DEFAULT_PORT})')
        if target.timeout_ms <= 0:
            raise ValueError(f'triton_timeout_ms must be positive; got {target.timeout_ms}')
        super().__init__(device, precision)
        grpcclient, self._server_error = _import_client()
        self._grpc = grpcclient
        self.info = info
        self.url = parse_url(target.url)
        self.timeout_s = target.timeout_ms / 1000.0
        self.image_model, self.text_model = served_names(target.model_prefix or served_prefix(info), info.has_text)
        self._health: Optional[str] = None
        self._health_lock = threading.Lock()
        self._client: Any = grpcclient.InferenceServerClient(self.url, channel_args=_CHANNEL_ARGS)
        try:
            self.served = self._check_server()
        except BaseException:
            self.close()
            raise
        self.logit_scale = self.served.logit_scale
        self.logit_bias = self.served.logit_bias
        self.text_length = self.served.text_length
        LOG.info('triton %s: %s%s (%s %s, pixels as %s)', self.url, self.image_model,
                 f', {self.text_model}' if self.text_model else '', self.served.engine, precision,
                 np.dtype(self.served.pixel_dtype).name)

    # --- load-time checks --------------------------------------------------------------------------------------
    def _check_server(self) -> ServedModels:
        where = f'Triton server {self.url}'
        try:
            self._client.is_server_live(client_timeout=self.timeout_s)
            configs = []
            for name in (self.image_model, self.text_model):
                if name is None:
                    continue
                if not self._client.is_model_ready(name, client_timeout=self.timeout_s):
                    raise TritonModelError(f"{where} has no model '{name}' ready{self._served_models()} "
                                           '(triton_model names the prefix of the served models)')
                configs.append(self._client.get_model_config(name, as_json=True,
                                                             client_timeout=self.timeout_s)['config'])
        except self._server_error as error:
            raise BackendUnavailableError(f'{where}: {self._describe(error)}')
        return check_served(self.info, self.precision, configs[0], configs[1] if len(configs) > 1 else None, where)

    def _served_models(self) -> str:
        """'; it serves: a, b' where the server lists its models (pytriton restricts that list to its token)."""
        try:
            index = self._client.get_model_repository_index(as_json=True, client_timeout=self.timeout_s)
        except self._server_error:
            return ''
        ready = sorted(m['name'] for m in index.get('models', []) if m.get('state') == 'READY')
        return f"; it serves: {', '.join(ready) or 'nothing'}"

    # --- requests ----------------------------------------------------------------------------------------------
    def _describe(self, error: Any) -> str:
        """Return a short, stable reason for a failed request (the frame worker logs each distinct one once)."""
        status = str(error.status() or '').replace('StatusCode.', '')
        lines = (error.message() or str(error)).strip().splitlines()
        message = lines[0] if lines else ''
        if status == 'UNAVAILABLE' and re.search(r'connect|socket closed|connection reset|broken pipe', message, re.I):
            return 'unreachable (connection refused or lost)'
        if status == 'DEADLINE_EXCEEDED':
            return f'no answer within {self.timeout_s * 1e3:.0f} ms'
        return f"{status or 'error'}: {message}"

    def _infer(self, model: str, feeds: dict[str, np.ndarray], types: dict[str, str],
               outputs: tuple[str, ...]) -> list[np.ndarray]:
        inputs = []
        for name, array in feeds.items():
            tensor = self._grpc.InferInput(name, list(array.shape), types[name])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        try:
            result = self._client.infer(model, inputs, outputs=[self._grpc.InferRequestedOutput(n) for n in outputs],
                                        client_timeout=self.timeout_s)
        except self._server_error as error:
            reason = f'Triton server {self.url}: {self._describe(error)}'
            self._set_health(reason)
            raise TritonRequestError(reason) from None
        self._set_health(None)
        return [result.as_numpy(name) for name in outputs]

    def _set_health(self, reason: Optional[str]) -> None:
        with self._health_lock:
            if reason != self._health:
                if reason is None:
                    LOG.info('Triton server %s answers again', self.url)
                self._health = reason

    def health(self) -> Optional[str]:
        with self._health_lock:
            return self._health

    def run_image(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.asarray(pixel_values)
        size = self.info.image_size
        if pixels.shape[-2:] != (size, size):
            raise BackendUnavailableError(f'the served image encoder takes {size}x{size} inputs; got '
                                          f'{pixels.shape[-2]}x{pixels.shape[-1]} (multi-scale runs on the torch '
                                          'backend)')
        pixels = np.ascontiguousarray(pixels, dtype=self.served.pixel_dtype)
        kind = 'FP16' if self.served.pixel_dtype == np.float16 else 'FP32'
        names = family_named(self.info.family).image_outputs
        chunks = [self._infer(self.image_model, {PIXEL_VALUES: pixels[start:start + self.served.image_batch]},
                              {PIXEL_VALUES: kind}, names)
                  for start in range(0, len(pixels), self.served.image_batch)]
        return {name: np.concatenate([chunk[i] for chunk in chunks]).astype(np.float32, copy=False)
                for i, name in enumerate(names)}

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self.text_model is None:
            raise BackendUnavailableError(f'{self.info.model_id} has no text encoder')
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        out = []
        step = min(self.served.text_batch, TEXT_REQUEST_TEXTS)
        for start in range(0, len(ids), step):
            end = start + step
            (text,) = self._infer(self.text_model, {INPUT_IDS: ids[start:end], ATTENTION_MASK: mask[start:end]},
                                  {INPUT_IDS: 'INT64', ATTENTION_MASK: 'INT64'}, (TEXT_EMBEDDING,))
            out.append(text)
        return np.concatenate(out).astype(np.float32, copy=False)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _load(request: BackendRequest) -> TritonBackend:
    return TritonBackend(request.info, request.device, request.precision, TritonTarget.from_options(request.options))


BACKEND = BackendEntry(CAPABILITIES, _load, PARAMETERS,
                       (ParameterRule(frozenset({'backend', 'triton_url', 'triton_model'}), triton_problem),))
