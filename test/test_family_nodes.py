# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The new families end to end over DDS, as `ros2 lifecycle set` and `ros2 param set` drive the nodes.

clip_perception with patch_features publishes the same PatchFeatures as feature_extractor for the same model and
frame (one pass instead of two encoders); after cleanup, `model` set to a SigLIP directory gives sigmoid scores that
say so; feature_extractor runs DINOv2 with registers and, in input_mode full_frame, DINOv3 with the frame's grid.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from conftest import structured_images
from robovision_ros.image_codec import encode_raw_image
from robovision_ros.message_conversions import patch_features_to_numpy
from robovision_msgs.msg import ObjectPresenceArray, PatchFeatures, ZeroShotLabels
from ros_harness import PerceptionProcess, RosTestContext, change_state, get_state, set_parameters, unique_name

LABELS = ['red cup', 'blue bottle', 'green ball']


def _frame(rgb: np.ndarray, stamp_sec: int) -> Image:
    data, step = encode_raw_image(rgb, 'rgb8')
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8', step=step, data=data)
    msg.header.stamp.sec = stamp_sec
    msg.header.frame_id = 'camera'
    return msg


@pytest.fixture(scope='module')
def graph(tiny_clip_dir, model_cache, tmp_path_factory):
    """clip_perception (one pass: patch_features on) and feature_extractor on the same camera and CLIP model."""
    logs = tmp_path_factory.mktemp('family_nodes')
    camera = f'/{unique_name("famcam")}/image_raw'
    common = {'model': tiny_clip_dir, 'backend': 'onnxruntime', 'engine_cache_dir': model_cache,
              'image_topics': [camera]}
    clip = PerceptionProcess('clip_perception', logs / 'clip.log', prefix='/rvfam', params={
        **common, 'labels': LABELS, 'presence_queries': ['red cup', 'green ball'], 'patch_features': True})
    features = PerceptionProcess('feature_extractor', logs / 'features.log', prefix='/rvfam', params=common)
    ros = RosTestContext('family_test')
    received = {'labels': [], 'presence': [], 'clip_features': [], 'features': []}
    for key, msg_type, topic in (('labels', ZeroShotLabels, clip.topic('zero_shot_labels')),
                                 ('presence', ObjectPresenceArray, clip.topic('object_presence')),
                                 ('clip_features', PatchFeatures, clip.topic('patch_features')),
                                 ('features', PatchFeatures, features.topic('patch_features'))):
        ros.node.create_subscription(msg_type, topic, received[key].append, 10)
    publisher = ros.node.create_publisher(Image, camera, qos_profile_sensor_data)
    yield SimpleNamespace(ros=ros, clip=clip, features=features, publisher=publisher, received=received)
    ros.close()
    clip.stop()
    features.stop()


def _outputs_for(graph, msg: Image, keys: tuple[str, ...], timeout_s: float = 30.0) -> dict:
    """Publish `msg` until every output in `keys` has one message with its stamp; return them by key."""
    stamp = msg.header.stamp.sec

    def found() -> dict:
        return {key: next((m for m in graph.received[key] if m.header.stamp.sec == stamp), None) for key in keys}

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and None in found().values():
        graph.publisher.publish(msg)
        graph.ros.spin_until(lambda: None not in found().values(), 0.3)
    outputs = found()
    missing = [key for key, value in outputs.items() if value is None]
    assert not missing, f'no {missing} for stamp {stamp}:\n{graph.clip.output()[-2000:]}\n' \
                        f'{graph.features.output()[-2000:]}'
    return outputs


def _activate(graph, process: PerceptionProcess) -> None:
    """Bring a node to active from whatever state an earlier test left it in."""
    transitions = {'unconfigured': ('configure', 'activate'), 'inactive': ('activate',), 'active': ()}
    for transition in transitions[get_state(graph.ros, process.node)]:
        assert change_state(graph.ros, process.node, transition), process.output()[-3000:]


def _reconfigure(graph, node: str, values: dict) -> None:
    """Deactivate, clean up, set (fixed parameters change only while unconfigured), configure and activate."""
    process = graph.clip if node.endswith('clip_perception') else graph.features
    assert change_state(graph.ros, node, 'deactivate') and change_state(graph.ros, node, 'cleanup')
    results = set_parameters(graph.ros, node, values)
    assert len(results) == len(values) and all(r.successful for r in results), [r.reason for r in results]
    assert change_state(graph.ros, node, 'configure'), process.output()[-3000:]
    assert change_state(graph.ros, node, 'activate')


def test_one_pass_features_equal_feature_extractors_then_siglip_after_cleanup(graph, tiny_siglip_dir, model_cache):
    for process in (graph.clip, graph.features):
        _activate(graph, process)
    image = structured_images(1, (48, 64), seed=5)[0]
    out = _outputs_for(graph, _frame(image, 301), ('labels', 'presence', 'clip_features', 'features'))
    one_pass, two_node = patch_features_to_numpy(out['clip_features']), patch_features_to_numpy(out['features'])
    assert (one_pass.grid_h, one_pass.grid_w, out['clip_features'].dim) == (8, 8, 64)
    assert out['clip_features'].model_id == out['features'].model_id
    # Both nodes run the same cached ONNX file in ONNX Runtime on this machine, one frame per batch: the same
    # kernels on the same input. 1e-6 leaves room for intra-op threading changing a reduction's order, which moves
    # these unit-scale values by float32 rounding only, on any x86 CPU.
    np.testing.assert_allclose(one_pass.features, two_node.features, atol=1e-6)
    np.testing.assert_allclose(one_pass.global_embedding, two_node.global_embedding, atol=1e-6)
    assert out['labels'].scoring == out['presence'].scoring == 'softmax'
    assert abs(sum(out['labels'].scores) - 1.0) < 1e-5
    for result in out['presence'].results:  # CLIP presence thresholds the cosine itself
        assert result.score == result.similarity and result.threshold == pytest.approx(0.25)

    # `ros2 param set /clip_perception model <siglip dir>` after cleanup: sigmoid scores, and the messages say so.
    node = graph.clip.node
    (refused,) = set_parameters(graph.ros, node, {'model': str(tiny_siglip_dir)})
    assert not refused.successful and 'cleanup' in refused.reason
    _reconfigure(graph, node, {'model': str(tiny_siglip_dir)})
    out = _outputs_for(graph, _frame(image, 302), ('labels', 'presence', 'clip_features'))
    labels, presence = out['labels'], out['presence']
    assert labels.scoring == presence.scoring == 'sigmoid' and labels.model_id == str(tiny_siglip_dir)
    from robovision_ros.encoder import PerceptionEncoder

    local = PerceptionEncoder(str(tiny_siglip_dir), 'onnxruntime', cache_dir=model_cache)
    vocabulary = local.build_vocabulary(LABELS, ['a photo of a {}.'], 1)
    queries = local.build_vocabulary(['red cup', 'green ball'], ['a photo of a {}.'], 1)
    (feature,), _ = local.encode_images([image])
    expected = local.score(feature, vocabulary, queries, threshold=0.5)
    local.close()
    # The node and this process run the same ONNX file on the same frame (the node decodes the rgb8 message to the
    # same array): float32 rounding only, well inside 1e-5 for probabilities.
    np.testing.assert_allclose(np.asarray(labels.scores), expected.scores, atol=1e-5)
    assert labels.best_label == expected.best_label
    for result, want in zip(presence.results, expected.presence):
        assert result.threshold == pytest.approx(0.5)  # presence_probability's default: a probability
        assert result.score == pytest.approx(want.score, abs=1e-5) and 0.0 <= result.score <= 1.0
        assert result.present == (result.score >= result.threshold)
        assert result.similarity == pytest.approx(want.similarity, abs=1e-5)
    assert out['clip_features'].dim == 64 and (out['clip_features'].grid_h, out['clip_features'].grid_w) == (8, 8)


def test_feature_extractor_runs_dino_with_registers_and_dinov3_full_field(graph, tiny_dino_dirs):
    node = graph.features.node
    _activate(graph, graph.features)
    _reconfigure(graph, node, {'model': str(tiny_dino_dirs['dinov2_with_registers'])})
    image = structured_images(1, (48, 64), seed=6)[0]
    out = _outputs_for(graph, _frame(image, 401), ('features',))['features']
    assert (out.grid_h, out.grid_w, out.dim, out.model_id) == (8, 8, 64, str(tiny_dino_dirs['dinov2_with_registers']))
    assert len(patch_features_to_numpy(out).features) == 64  # patch rows only: no CLS, no register
    # Full field needs a backend without a fixed input size: refused with the reason on onnxruntime.
    assert change_state(graph.ros, node, 'deactivate') and change_state(graph.ros, node, 'cleanup')
    (refused,) = set_parameters(graph.ros, node, {'input_mode': 'full_frame'})
    assert not refused.successful and 'input_mode full_frame needs a backend without a fixed input size' in \
        refused.reason
    assert change_state(graph.ros, node, 'configure') and change_state(graph.ros, node, 'activate')
    _reconfigure(graph, node, {'model': str(tiny_dino_dirs['dinov3_vit']), 'backend': 'torch',
                               'input_mode': 'full_frame'})
    out = _outputs_for(graph, _frame(image, 402), ('features',))['features']
    # 48x64 frame, 64-pixel native input, patch 8: the whole frame at 64x88, an 8x11 grid.
    assert (out.grid_h, out.grid_w, out.dim) == (8, 11, 64)
