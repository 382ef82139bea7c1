# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""feature_extractor in its own process: PatchFeatures with the grid, dtype and header of each frame."""
from __future__ import annotations

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from conftest import structured_images
from robovision_ros.image_codec import encode_raw_image
from robovision_ros.message_conversions import patch_features_to_numpy
from robovision_msgs.msg import PatchFeatures
from ros_harness import PerceptionProcess, RosTestContext, change_state, get_state, set_parameters


def test_patch_features_multi_scale_fp16(tiny_vit_dir, model_cache, tmp_path):
    process = PerceptionProcess('feature_extractor', tmp_path / 'node.log', prefix='/rvfe', params={
        'model': tiny_vit_dir, 'backend': 'torch', 'image_topics': ['image'], 'engine_cache_dir': model_cache,
        'scales': [1.0, 1.5], 'output_dtype': 'float16', 'normalize': True})
    namespace, node = process.namespace, process.node
    topic = namespace + '/image'
    ros = RosTestContext('fe_test')
    received = []
    ros.node.create_subscription(PatchFeatures, f'{namespace}/feature_extractor/patch_features', received.append, 10)
    publisher = ros.node.create_publisher(Image, topic, qos_profile_sensor_data)
    rgb = structured_images(1, (48, 64))[0]
    data, step = encode_raw_image(rgb, 'rgb8')
    msg = Image(height=48, width=64, encoding='rgb8', step=step, data=data)
    msg.header.frame_id = 'cam_left'
    msg.header.stamp.sec = 42
    try:
        assert change_state(ros, node, 'configure'), process.output()
        (result,) = set_parameters(ros, node, {'model': '/elsewhere'})
        assert not result.successful and 'cleanup' in result.reason
        assert change_state(ros, node, 'activate')
        for _ in range(100):
            if len({m.scale for m in received}) >= 2:
                break
            publisher.publish(msg)
            ros.spin_until(lambda: False, 0.2)
        by_scale = {m.scale: m for m in received}
        assert set(by_scale) == {1.0, 1.5}, process.output()
        for scale, grid in ((1.0, 8), (1.5, 12)):
            out = by_scale[scale]
            assert (out.grid_h, out.grid_w, out.dim, out.dtype) == (grid, grid, 64, 'float16')
            assert out.header.frame_id == 'cam_left' and out.header.stamp.sec == 42
            assert out.normalized and out.patch_size == 8
            tensor = patch_features_to_numpy(out)
            assert tensor.features.shape == (grid * grid, 64)
            np.testing.assert_allclose(np.linalg.norm(tensor.features.astype(np.float32), axis=1), 1.0, atol=2e-3)
        assert change_state(ros, node, 'deactivate') and change_state(ros, node, 'cleanup')
        # Fixed-input engines cannot run other scales: the set is refused with the reason. `auto` resolves at
        # configure (to onnxruntime on this CPU): configure fails with the reason, and the node stays up.
        (result,) = set_parameters(ros, node, {'backend': 'onnxruntime'})
        assert not result.successful and 'scales other than 1.0' in result.reason
        (result,) = set_parameters(ros, node, {'backend': 'auto'})
        assert result.successful
        assert not change_state(ros, node, 'configure')
        assert ros.spin_until(lambda: 'scales other than 1.0 need a backend without a fixed input size'
                              in process.output(), 5.0)
        assert process.alive()
        # Shutdown works from active too (a different transition from the one out of unconfigured).
        set_parameters(ros, node, {'backend': 'torch'})
        assert change_state(ros, node, 'configure') and change_state(ros, node, 'activate')
        assert change_state(ros, node, 'shutdown')
        assert get_state(ros, node) == 'finalized'
    finally:
        ros.close()
        process.stop()
