# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Backend triton against a real Triton Inference Server (robovision_serve on nvidia-pytriton, CPU, 127.0.0.1).

The server runs in its own venv (scripts/setup_serve.sh, made here when missing); where it cannot be made
(no /usr/bin/python3, no package index), every test here skips with the reason.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import structured_images
from robovision_ros.backends.base import BackendUnavailableError
from robovision_ros.backends.registry import create_backend
from robovision_ros.backends.triton_backend import PARAMETER_FINGERPRINT, PARAMETER_LOGIT_BIAS, PARAMETER_PRECISION, \
    TritonModelError, TritonRequestError, TritonTarget, check_served
from robovision_ros.model_dir import read_model_info
from ros_harness import NodeProcess, RosTestContext, change_state, get_state, set_parameters, unique_name

ROOT = Path(__file__).resolve().parent.parent
SERVE_SETUP_TIMEOUT_S = 1800  # a first install from the package index
SERVER_START_TIMEOUT_S = 120
MAX_BATCH = 4  # small, so that larger batches are split into several requests


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='session')
def serve_venv(tmp_path_factory) -> Path:
    """Make the serve venv with scripts/setup_serve.sh (a no-op when it is up to date)."""
    python = os.environ.get('ROBOVISION_SERVE_PYTHON', '/usr/bin/python3')
    if not Path(python).is_file():
        pytest.skip(f'no {python}: the Triton server needs the system Python 3 (scripts/setup_serve.sh)')
    log = tmp_path_factory.mktemp('serve_venv') / 'setup_serve.log'
    try:
        result = subprocess.run([str(ROOT / 'scripts' / 'setup_serve.sh')], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=SERVE_SETUP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.skip(f'scripts/setup_serve.sh did not finish in {SERVE_SETUP_TIMEOUT_S} s')
    log.write_text(result.stdout)
    if result.returncode != 0:
        pytest.skip(f'serve venv could not be created (scripts/setup_serve.sh exit {result.returncode}): '
                    f'{result.stdout.strip()[-600:]}')
    return Path(result.stdout.strip().splitlines()[-1])


class TritonServer:
    """robovision_serve in its own process group, on free loopback ports that survive a restart."""

    def __init__(self, model_dir: Path, cache: Path, log_dir: Path, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.model_dir, self.cache, self.log_dir, self.extra, self.env = model_dir, cache, log_dir, extra, env
        self.ports = (free_port(), free_port(), free_port())
        self.url = f'127.0.0.1:{self.ports[0]}'
        self.process: NodeProcess | None = None
        self.starts = 0

    def start(self, timeout_s: float = SERVER_START_TIMEOUT_S) -> float:
        """Start and wait until it serves; returns the seconds it took."""
        self.starts += 1
        began = time.monotonic()
        grpc, http, metrics = self.ports
        self.process = NodeProcess(
            ['-m', 'robovision_ros.tools.serve', str(self.model_dir), '--cache-dir', str(self.cache),
             '--host', '127.0.0.1', '--grpc-port', str(grpc), '--http-port', str(http), '--metrics-port', str(metrics),
             '--max-batch', str(MAX_BATCH), *self.extra], self.log_dir / f'serve{self.starts}.log', env=self.env)
        deadline = began + timeout_s
        while time.monotonic() < deadline:
            if 'robovision_serve: serving' in self.process.output():
                return time.monotonic() - began
            if not self.process.alive():
                break
            time.sleep(0.2)
        output = self.process.output()
        self.stop()
        raise AssertionError(f'robovision_serve did not start in {timeout_s} s:\n{output[-4000:]}')

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.killpg(self.process.process.pid, sig)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout_s=20.0)
            self.process = None

    def client(self):
        import tritonclient.grpc as grpcclient

        return grpcclient.InferenceServerClient(self.url)

    def inference_count(self, model: str) -> int:
        stats = self.client().get_inference_statistics(model_name=model, as_json=True)
        return int(stats['model_stats'][0].get('inference_count', 0))


@pytest.fixture(scope='module')
def server(serve_venv, tiny_clip_dir, model_cache, tmp_path_factory):
    # The local engine exports the ONNX files into the shared cache first; the server then loads them from there.
    create_backend(read_model_info(str(tiny_clip_dir)), 'onnxruntime', 'cpu', 'fp32', model_cache).close()
    server = TritonServer(tiny_clip_dir, model_cache, tmp_path_factory.mktemp('triton'))
    seconds = server.start()
    print(f'robovision_serve started in {seconds:.1f} s')
    yield server
    server.stop()


def test_runtime_modules_import_nothing_from_tools():
    """Serving and benchmarking are tools: no runtime module (backends, nodes, library) imports them."""
    import ast

    package = ROOT / 'robovision_ros' / 'robovision_ros'
    for path in package.rglob('*.py'):
        if 'tools' in path.relative_to(package).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ''] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith('robovision_ros.tools') for n in names), path


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return np.sum(a * b, -1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_parity_with_the_local_onnxruntime_engine(server, tiny_clip_dir, model_cache):
    from robovision_ros.encoder import PerceptionEncoder

    remote = PerceptionEncoder(str(tiny_clip_dir), 'triton',
                               options=TritonTarget(server.url, timeout_ms=5000).options())
    local = PerceptionEncoder(str(tiny_clip_dir), 'onnxruntime', cache_dir=model_cache)
    try:
        # Pixels travel as fp16 (robovision_serve's default); the bound holds with it.
        assert remote.backend.served.pixel_dtype == np.float16
        assert remote.logit_scale == pytest.approx(local.logit_scale, rel=1e-6)
        assert remote.backend.text_length == local.backend.text_length
        images = structured_images(2 * MAX_BATCH + 1, (96, 128), seed=3)  # three requests of at most MAX_BATCH
        (got, _), (want, _) = remote.encode_images(images), local.encode_images(images)
        patches = _cosines(np.stack([f.patch_tokens for f in got]), np.stack([f.patch_tokens for f in want]))
        pooled = _cosines(np.stack([f.global_embedding for f in got]), np.stack([f.global_embedding for f in want]))
        assert patches.min() >= 0.9999 and pooled.min() >= 0.9999, (patches.min(), pooled.min())
        texts = ['a photo of a red cup', 'a blue bottle', 'a green ball on a table'] * 3
        text_cosines = _cosines(remote.encode_texts(texts), local.encode_texts(texts))
        assert text_cosines.min() >= 0.9999
        remote_labels = remote.build_vocabulary(['red cup', 'blue bottle'], ['a photo of a {}.'], 1)
        local_labels = local.build_vocabulary(['red cup', 'blue bottle'], ['a photo of a {}.'], 1)
        np.testing.assert_allclose(remote.zero_shot(np.stack([f.global_embedding for f in got]), remote_labels),
                                   local.zero_shot(np.stack([f.global_embedding for f in want]), local_labels),
                                   atol=1e-3)
    finally:
        remote.close()
        local.close()


def _served_configs(server, info):
    client = server.client()
    return tuple(client.get_model_config(f'{info.path.name}_{kind}', as_json=True)['config']
                 for kind in ('image', 'text'))


def test_served_configs_are_checked_against_the_node_model(server, tiny_clip_dir):
    import copy

    info = read_model_info(str(tiny_clip_dir))
    image, text = _served_configs(server, info)
    served = check_served(info, 'fp32', image, text, 'here')
    assert served.image_batch == MAX_BATCH and served.text_length > 0 and served.engine == 'onnxruntime cpu'

    def broken(config, edit):
        config = copy.deepcopy(config)
        edit(config)
        return config

    def dims(name, value):
        return lambda c: next(t for t in c['output'] if t['name'] == name).update(dims=value)

    cases = [
        (broken(image, dims('patch_tokens', ['10', '32'])), text, "tensor 'patch_tokens' is TYPE_FP32 [10, 32]"),
        (broken(image, lambda c: c['input'][0].update(name='pixels')), text, "no tensor 'pixel_values'"),
        (broken(image, lambda c: c.update(max_batch_size=0)), text, 'does not batch'),
        (broken(image, lambda c: c['parameters'].pop(PARAMETER_FINGERPRINT)), text, 'not served by robovision_serve'),
        (broken(image, lambda c: c['parameters'][PARAMETER_FINGERPRINT].update(string_value='0' * 16)), text,
         'fingerprint 0000000000000000'),
        (image, broken(text, lambda c: c['parameters'][PARAMETER_PRECISION].update(string_value='fp16')),
         'runs fp16; this node asks for fp32 (set precision:=fp16)'),
        (image, broken(text, lambda c: c['input'][1].update(data_type='TYPE_INT32')), "'attention_mask' is TYPE_INT32"),
    ]
    for image_config, text_config, message in cases:
        with pytest.raises(TritonModelError, match=message.replace('(', r'\(').replace(')', r'\)')
                           .replace('[', r'\[').replace(']', r'\]')):
            check_served(info, 'fp32', image_config, text_config, 'here')


@pytest.mark.parametrize('family', ['siglip', 'dinov2_with_registers', 'dinov3_vit'])
def test_other_families_are_served_with_what_their_scores_need(family, serve_venv, tiny_siglip_dir, tiny_dino_dirs,
                                                               model_cache, tmp_path, server, tiny_clip_dir):
    """Serve what the scores need: SigLIP's logit bias in the config (required for sigmoid scores); DINO images."""
    import copy

    from robovision_ros.encoder import PerceptionEncoder

    model_dir = tiny_siglip_dir if family == 'siglip' else tiny_dino_dirs[family]
    info = read_model_info(str(model_dir))
    create_backend(info, 'onnxruntime', 'cpu', 'fp32', model_cache).close()  # the export the server loads
    family_server = TritonServer(model_dir, model_cache, tmp_path)
    family_server.start()
    try:
        remote = PerceptionEncoder(str(model_dir), 'triton', options=TritonTarget(family_server.url,
                                                                                  timeout_ms=5000).options())
        local = PerceptionEncoder(str(model_dir), 'onnxruntime', cache_dir=model_cache)
        images = structured_images(3, (96, 128), seed=4)
        (got, _), (want, _) = remote.encode_images(images), local.encode_images(images)
        # Pixels travel as fp16 (robovision_serve's default): the same bound as CLIP's parity test.
        pooled = _cosines(np.stack([f.global_embedding for f in got]), np.stack([f.global_embedding for f in want]))
        assert pooled.min() >= 0.9999 and got[0].patch_tokens.shape == want[0].patch_tokens.shape == (64, 64)
        assert (remote.scoring.kind, remote.scoring.logit_bias) == (local.scoring.kind,
                                                                    pytest.approx(local.scoring.logit_bias))
        if info.has_text:
            assert remote.scoring.logit_bias == pytest.approx(-10.0)
            image, text = _served_configs(family_server, info)
            no_bias = copy.deepcopy(text)
            no_bias['parameters'].pop(PARAMETER_LOGIT_BIAS)
            with pytest.raises(TritonModelError, match=f'no {PARAMETER_LOGIT_BIAS} parameter; siglip scores need'):
                check_served(info, 'fp32', image, no_bias, 'here')
            # A CLIP served without the bias (by an older robovision_serve) still loads: its scores do not use one.
            clip = read_model_info(str(tiny_clip_dir))
            clip_image, clip_text = _served_configs(server, clip)
            clip_text['parameters'].pop(PARAMETER_LOGIT_BIAS)
            assert check_served(clip, 'fp32', clip_image, clip_text, 'here').logit_bias == 0.0
        remote.close()
        local.close()
    finally:
        family_server.stop()


def test_load_fails_with_one_clear_reason(server, tiny_clip_dir):
    info = read_model_info(str(tiny_clip_dir))
    with pytest.raises(TritonModelError, match=f"Triton server {server.url} has no model 'nope_image' ready"):
        create_backend(info, 'triton', options=TritonTarget(server.url, 'nope').options())
    with pytest.raises(TritonModelError, match=r'runs fp32; this node asks for int8 \(set precision:=fp32\)'):
        create_backend(info, 'triton', precision='int8', options=TritonTarget(server.url).options())
    port = free_port()
    began = time.monotonic()
    with pytest.raises(BackendUnavailableError, match=f'Triton server 127.0.0.1:{port}: unreachable'):
        create_backend(info, 'triton', options=TritonTarget(f'grpc://127.0.0.1:{port}', timeout_ms=3000).options())
    assert time.monotonic() - began < 3.0
    # A server that accepts the connection but never answers: the request ends at its timeout.
    with socket.socket() as silent:
        silent.bind(('127.0.0.1', 0))
        silent.listen()
        began = time.monotonic()
        with pytest.raises(BackendUnavailableError, match='no answer within 500 ms'):
            create_backend(info, 'triton',
                           options=TritonTarget(f'127.0.0.1:{silent.getsockname()[1]}', timeout_ms=500).options())
        assert time.monotonic() - began < 2.0


def test_a_hung_server_costs_a_request_its_timeout_and_no_more(server, tiny_clip_dir):
    info = read_model_info(str(tiny_clip_dir))
    backend = create_backend(info, 'triton', options=TritonTarget(server.url, timeout_ms=500).options())
    pixels = np.zeros((1, 3, info.image_size, info.image_size), np.float32)
    try:
        backend.encode_image(pixels)
        assert backend.health() is None
        server.signal(signal.SIGSTOP)
        try:
            began = time.monotonic()
            with pytest.raises(TritonRequestError, match=f'Triton server {server.url}: no answer within 500 ms'):
                backend.encode_image(pixels)
            assert time.monotonic() - began < 1.5
            assert 'no answer within 500 ms' in backend.health()
        finally:
            server.signal(signal.SIGCONT)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                backend.encode_image(pixels)
                break
            except TritonRequestError:
                time.sleep(0.2)
        assert backend.health() is None
    finally:
        backend.close()


def test_a_killed_server_leaves_no_workspace_behind_after_the_next_start(
        serve_venv, tiny_clip_dir, model_cache, tmp_path):
    import shutil
    import tempfile

    # Short: pytriton's sockets live in the workspace, and a Unix socket path has at most 107 characters.
    home = Path(tempfile.mkdtemp(prefix='rvpt', dir='/tmp'))
    server = TritonServer(tiny_clip_dir, model_cache, tmp_path, env={'PYTRITON_HOME': str(home)})
    root = home / 'robovision_serve'
    try:
        server.start()
        (killed,) = list(root.iterdir())
        server.signal(signal.SIGKILL)
        server.process.process.wait(timeout=20.0)
        assert killed.is_dir() and sum(f.stat().st_size for f in killed.rglob('*') if f.is_file()) > 0
        server.start()
        (current,) = list(root.iterdir())  # the dead server's workspace was removed at this start
        assert current != killed and not killed.exists()
        server.stop()
        assert not current.exists()  # a server that stops normally removes its own
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_export_repository_for_a_stock_tritonserver(serve_venv, tiny_clip_dir, model_cache, tmp_path):
    """
    Check the exported model repository.

    The repository's configs parse as Triton's ModelConfig, the node's checks accept them, the ONNX files produce
    the declared shapes, and a real tritonserver reads the configs. (pytriton's bundled server has only the Python
    backend, so it stops at the missing onnxruntime backend library; serving the files needs a stock server.)
    """
    import onnxruntime as ort
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    info = read_model_info(str(tiny_clip_dir))
    result = subprocess.run([sys.executable, '-m', 'robovision_ros.tools.serve', str(tiny_clip_dir), '--cache-dir',
                             str(model_cache), '--export-repository', str(tmp_path / 'repo'), '--instances', '2'],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    configs = {}
    for kind in ('image', 'text'):
        name = f'{info.path.name}_{kind}'
        config = text_format.Parse((tmp_path / 'repo' / name / 'config.pbtxt').read_text(),
                                   model_config_pb2.ModelConfig())
        assert config.name == name and config.backend == 'onnxruntime' and config.max_batch_size == 32
        assert config.dynamic_batching.max_queue_delay_microseconds == 2000
        assert config.instance_group[0].count == 2
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        configs[kind] = json_format.MessageToDict(config, preserving_proto_field_name=True)
        session = ort.InferenceSession(str(tmp_path / 'repo' / name / '1' / 'model.onnx'),
                                       providers=['CPUExecutionProvider'])
        feeds = {t.name: np.zeros((2, *t.dims), np.float32 if t.data_type == model_config_pb2.TYPE_FP32 else np.int64)
                 for t in config.input}
        outputs = session.run([t.name for t in config.output], feeds)
        assert [o.shape[1:] for o in outputs] == [tuple(t.dims) for t in config.output]
    served = check_served(info, 'fp32', configs['image'], configs['text'], 'repository')
    assert served.pixel_dtype == np.float32 and served.image_batch == 32

    site = next((serve_venv / 'lib').glob('python3*/site-packages'))
    server = site / 'pytriton' / 'tritonserver'
    ports = [str(free_port()) for _ in range(3)]
    result = subprocess.run(
        [str(server / 'bin' / 'tritonserver'), '--model-repository', str(tmp_path / 'repo'), '--backend-directory',
         str(server / 'backends'), '--http-address', '127.0.0.1', '--grpc-address', '127.0.0.1', '--metrics-address',
         '127.0.0.1', '--http-port', ports[0], '--grpc-port', ports[1], '--metrics-port', ports[2]],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, 'LD_LIBRARY_PATH': str(site / 'nvidia_pytriton.libs')})
    for kind in ('image', 'text'):
        assert (f"failed to load '{info.path.name}_{kind}' version 1: Invalid argument: unable to find backend library "
                "for backend 'onnxruntime'") in result.stderr, result.stderr[-3000:]
    assert 'text proto' not in result.stderr and 'Error parsing' not in result.stderr


# --- nodes -----------------------------------------------------------------------------------------------------

def _frame(rgb, stamp: int):
    from sensor_msgs.msg import Image

    from robovision_ros.image_codec import encode_raw_image

    data, step = encode_raw_image(rgb, 'bgr8')
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='bgr8', step=step, data=data)
    msg.header.stamp.sec = stamp
    return msg


class ClipNode:
    """A clip_perception process on backend triton, with its camera publisher and label subscription."""

    def __init__(self, ros: RosTestContext, model_dir: Path, log_dir: Path, url: str, labels: list[str]) -> None:
        import json

        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from robovision_msgs.msg import ZeroShotLabels

        namespace = unique_name('/rvtriton')
        topic = namespace + '/camera/image_raw'
        self.ros, self.wanted_labels = ros, labels
        self.process = NodeProcess(
            ['-m', 'robovision_ros.nodes.clip_perception', '--ros-args', '-r', f'__ns:={namespace}',
             '-p', f'model:={model_dir}', '-p', 'backend:=triton', '-p', f'triton_url:={url}',
             '-p', 'triton_timeout_ms:=3000', '-p', f'image_topics:=["{topic}"]', '-p', f'labels:={json.dumps(labels)}',
             '-p', 'camera_timeout_s:=0.0'], log_dir / f'{namespace.strip("/")}.log')
        self.node = f'{namespace.lstrip("/")}/clip_perception'
        self.outputs: list = []
        ros.node.create_subscription(ZeroShotLabels, f'{namespace}/clip_perception/zero_shot_labels',
                                     self.outputs.append, 50)
        self.publisher = ros.node.create_publisher(Image, topic, qos_profile_sensor_data)
        self.image = structured_images(1, (48, 64), seed=7)[0]
        self.stamp = 1000

    def serve_frame(self, timeout_s: float = 20.0):
        """Publish a frame (new stamp) until its output arrives."""
        self.stamp += 1
        stamp = self.stamp
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.publisher.publish(_frame(self.image, stamp))
            if self.ros.spin_until(lambda: any(m.header.stamp.sec == stamp for m in self.outputs), 0.3):
                return next(m for m in self.outputs if m.header.stamp.sec == stamp)
        raise AssertionError(f'no output from {self.node}:\n{self.process.output()[-3000:]}')

    def close(self) -> None:
        self.process.stop()


@pytest.fixture(scope='module')
def ros():
    from diagnostic_msgs.msg import DiagnosticArray

    ros = RosTestContext('triton_test')
    ros.diagnostics = []
    ros.node.create_subscription(DiagnosticArray, '/diagnostics', ros.diagnostics.append, 50)
    yield ros
    ros.close()


def _status(ros, node: str):
    statuses = [s for d in ros.diagnostics for s in d.status if s.name == f'/{node}: perception']
    return statuses[-1] if statuses else None


def test_two_nodes_share_one_server_with_their_own_vocabularies(server, ros, tiny_clip_dir, model_cache, tmp_path):
    from robovision_ros.encoder import PerceptionEncoder
    from robovision_ros.vocabulary import DEFAULT_TEMPLATES

    vocabularies = [['red cup', 'blue bottle'], ['green ball', 'yellow box', 'white plate']]
    nodes = [ClipNode(ros, tiny_clip_dir, tmp_path, server.url, labels) for labels in vocabularies]
    image_model = f'{tiny_clip_dir.name}_image'
    local = PerceptionEncoder(str(tiny_clip_dir), 'onnxruntime', cache_dir=model_cache)
    try:
        before = server.inference_count(image_model)
        for node in nodes:
            assert change_state(ros, node.node, 'configure'), node.process.output()
            assert change_state(ros, node.node, 'activate')
        (features,), _ = local.encode_images([nodes[0].image])
        served = 0
        for _ in range(3):
            for node in nodes:
                out = node.serve_frame()
                served += 1
                assert list(out.labels) == node.wanted_labels
                vocabulary = local.build_vocabulary(node.wanted_labels, DEFAULT_TEMPLATES, 1)
                expected = local.zero_shot(features.global_embedding[None], vocabulary)[0]
                np.testing.assert_allclose(out.scores, expected, atol=1e-3)
        # Every frame (and each node's warm-up) was inferred by the one server.
        assert server.inference_count(image_model) - before >= served + 2 * len(nodes)
        status = _status(ros, nodes[0].node)
        values = {kv.key: kv.value for kv in status.values} if status else {}
        assert values.get('backend') == 'triton' and values.get('backend_health') == 'ok', values
    finally:
        local.close()
        for node in nodes:
            node.close()


@pytest.fixture(scope='module')
def lone_node(server, ros, tiny_clip_dir, tmp_path_factory):
    node = ClipNode(ros, tiny_clip_dir, tmp_path_factory.mktemp('lone'), f'127.0.0.1:{free_port()}', ['red cup'])
    yield node
    node.close()


def test_configure_fails_with_one_line_for_a_missing_server_or_model(server, ros, lone_node):
    node = lone_node
    assert not change_state(ros, node.node, 'configure')
    assert get_state(ros, node.node) == 'unconfigured'
    failures = [line for line in node.process.output().splitlines() if 'configure failed' in line]
    assert len(failures) == 1 and 'unreachable' in failures[0] and 'Triton server 127.0.0.1:' in failures[0], failures

    for values, reason in (({'triton_url': 'http://localhost:8000'}, 'only gRPC'),
                           ({'device': 'cuda'}, 'backend triton needs device cpu'),
                           ({'triton_model': 'a/b'}, 'not a Triton model name'),
                           ({'triton_url': ''}, 'backend triton needs triton_url')):
        (result,) = set_parameters(ros, node.node, values)
        assert not result.successful and reason in result.reason, result.reason

    (result, other) = set_parameters(ros, node.node, {'triton_url': f'grpc://{server.url}', 'triton_model': 'nope'})
    assert result.successful and other.successful
    assert not change_state(ros, node.node, 'configure')
    assert f"Triton server {server.url} has no model 'nope_image' ready" in node.process.output()

    (result,) = set_parameters(ros, node.node, {'triton_model': ''})
    assert change_state(ros, node.node, 'configure'), node.process.output()[-3000:]
    assert change_state(ros, node.node, 'activate')
    assert list(node.serve_frame().labels) == ['red cup']


def test_server_stop_and_return_during_a_stream(server, ros, lone_node):
    """
    Check that a server that stops and returns during a stream is survived.

    Frames fail and are counted while the server is gone, /diagnostics says ERROR with the reason, services
    answer, and results resume by themselves when the server is back (same address). A vocabulary set while the
    server is gone is retried until it is in use, and the outage is logged without tracebacks.
    """
    from diagnostic_msgs.msg import DiagnosticStatus

    node = lone_node
    if get_state(ros, node.node) != 'active':  # the previous test failed before activating it
        set_parameters(ros, node.node, {'triton_url': server.url, 'triton_model': ''})
        assert change_state(ros, node.node, 'configure'), node.process.output()[-3000:]
        assert change_state(ros, node.node, 'activate')
    node.serve_frame()
    server.stop()
    reason = f'Triton server {server.url}: unreachable (connection refused or lost)'

    def failing() -> bool:
        status = _status(ros, node.node)
        return status is not None and status.level == DiagnosticStatus.ERROR and reason in status.message

    deadline = time.monotonic() + 20.0
    while time.monotonic() < deadline and not failing():
        node.stamp += 1
        node.publisher.publish(_frame(node.image, node.stamp))
        ros.spin_until(lambda: False, 0.1)
    assert failing(), (_status(ros, node.node), node.process.output()[-3000:])
    values = {kv.key: kv.value for kv in _status(ros, node.node).values}
    assert int(values['failed_frames']) >= 1 and reason in values['backend_health']
    began = time.monotonic()
    assert get_state(ros, node.node) == 'active'  # lifecycle services answer while the server is gone
    (result,) = set_parameters(ros, node.node, {'presence_threshold': 0.3})
    assert result.successful and time.monotonic() - began < 5.0
    logged = [line for line in node.process.output().splitlines() if 'inference failed' in line and reason in line]
    assert len(logged) == 1, logged  # once per cause, however many frames fail
    # A vocabulary set now cannot be encoded (the text encoder is on the server): accepted, reported, retried.
    (result,) = set_parameters(ros, node.node, {'labels': ['red cup', 'green ball']})
    assert result.successful

    def vocabulary_failing() -> bool:
        status = _status(ros, node.node)
        values = {kv.key: kv.value for kv in status.values} if status else {}
        return values.get('vocabulary_pending') == 'True' and 'unreachable' in values.get('vocabulary_error', '')

    assert ros.spin_until(vocabulary_failing, 15.0), _status(ros, node.node)

    server.start()
    deadline = time.monotonic() + 40.0
    out = node.serve_frame(timeout_s=30.0)
    while list(out.labels) != ['red cup', 'green ball'] and time.monotonic() < deadline:
        out = node.serve_frame(timeout_s=30.0)
    assert list(out.labels) == ['red cup', 'green ball'], 'the vocabulary set during the outage was never applied'
    assert node.process.alive()
    assert 'Traceback' not in node.process.output(), node.process.output()[-3000:]
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and failing():
        ros.spin_until(lambda: False, 0.5)
    assert ros.spin_until(lambda: not vocabulary_failing() and _status(ros, node.node).level == DiagnosticStatus.OK,
                          10.0), _status(ros, node.node)
    status = _status(ros, node.node)
    assert {kv.key: kv.value for kv in status.values}['backend_health'] == 'ok'
