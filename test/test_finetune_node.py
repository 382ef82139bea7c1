# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""A fine-tuned ViT in the running feature_extractor: cleanup, set model, configure, activate -> its outputs."""
from __future__ import annotations

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from robovision_ros.image_codec import encode_raw_image
from robovision_msgs.msg import ClassScores, PatchFeatures
from robovision_ros.tools.finetune import FinetuneOptions, finetune
from ros_harness import NodeProcess, RosTestContext, change_state, set_parameters, unique_name
from test_finetune import make_folder


def test_feature_extractor_switches_to_a_fine_tuned_model(tiny_vit_dir, model_cache, tmp_path):
    tuned = tmp_path / 'vit_tuned'
    options = FinetuneOptions(method='lora', rank=4, alpha=8.0, steps=4, batch=4, heldout_scenes=0, lr=5e-3,
                              replay_scenes=4)
    finetune(str(tiny_vit_dir), make_folder(tmp_path / 'data'), tuned, options, progress=False, log=lambda _: None)

    namespace = unique_name('/rvft')
    topic = namespace + '/image'
    process = NodeProcess(['-m', 'robovision_ros.nodes.feature_extractor', '--ros-args', '-r', f'__ns:={namespace}',
                           '-p', f'model:={tiny_vit_dir}', '-p', 'backend:=onnxruntime',
                           '-p', f'image_topics:=["{topic}"]', '-p', f'engine_cache_dir:={model_cache}'],
                          tmp_path / 'node.log')
    ros = RosTestContext('ft_test')
    node = f'{namespace.lstrip("/")}/feature_extractor'
    features: list[PatchFeatures] = []
    scores: list[ClassScores] = []
    ros.node.create_subscription(PatchFeatures, f'{namespace}/feature_extractor/patch_features', features.append, 10)
    ros.node.create_subscription(ClassScores, f'{namespace}/feature_extractor/class_scores', scores.append, 10)
    publisher = ros.node.create_publisher(Image, topic, qos_profile_sensor_data)
    rgb = np.random.default_rng(4).integers(0, 255, (48, 64, 3), np.uint8)
    data, step = encode_raw_image(rgb, 'rgb8')
    msg = Image(height=48, width=64, encoding='rgb8', step=step, data=data)
    msg.header.frame_id = 'cam'

    def receive(model_id: str, want_scores: bool) -> PatchFeatures:
        for _ in range(100):
            mine = [m for m in features if m.model_id == model_id]
            if mine and (scores or not want_scores):
                return mine[-1]
            publisher.publish(msg)
            ros.spin_until(lambda: False, 0.2)
        raise AssertionError(f'no output from {model_id}:\n{process.output()}')

    try:
        assert change_state(ros, node, 'configure') and change_state(ros, node, 'activate'), process.output()
        base = receive(str(tiny_vit_dir), want_scores=False)
        assert not scores  # the base ViT has no head: no class scores topic output
        assert change_state(ros, node, 'deactivate') and change_state(ros, node, 'cleanup')
        (result,) = set_parameters(ros, node, {'model': str(tuned)})
        assert result.successful, result.reason
        assert change_state(ros, node, 'configure') and change_state(ros, node, 'activate'), process.output()
        after = receive(str(tuned), want_scores=True)
        assert not np.allclose(np.asarray(after.global_embedding), np.asarray(base.global_embedding), atol=1e-4)
        out = scores[-1]
        assert out.model_id == str(tuned) and out.header.frame_id == 'cam'
        assert list(out.labels) == ['blue', 'green', 'red']
        assert abs(sum(out.scores) - 1.0) < 1e-4 and out.best_label == out.labels[int(np.argmax(out.scores))]
        assert out.best_score == max(out.scores)  # exact: best_score is a copy of one of the float32 scores
    finally:
        ros.close()
        process.stop()
