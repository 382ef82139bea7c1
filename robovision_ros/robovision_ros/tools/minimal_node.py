# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The benchmark's floor: a minimal hand-written rclpy node, subscribe -> preprocess -> model -> publish.

It runs the same backend session (loaded from the same cache, no accuracy gate), the same preprocessing and the
same zero-shot scoring as clip_perception, with nothing else: no lifecycle, no parameters, no worker thread, no
diagnostics; inference runs in the subscription callback of a single-threaded executor. robovision_bench measures
clip_perception's end-to-end latency and peak RSS against it in the same run.

    python -m robovision_ros.tools.minimal_node MODEL BACKEND PRECISION TOPIC [TOPIC ...] --labels L [L ...]
                                                [--device cpu|cuda]

The node is named clip_perception and publishes ~/zero_shot_labels, so the benchmark's receiver reads both alike;
its publisher appears once the model is loaded.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

import numpy as np


def main(argv: Optional[Sequence[str]] = None) -> int:
    import rclpy
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from robovision_ros.backends.base import BackendRequest
    from robovision_ros.backends.registry import backend_entries
    from robovision_ros.clip_scoring import l2_normalize
    from robovision_ros.image_codec import decode_image_msg
    from robovision_ros.model_dir import family_of, load_tokenizer, read_model_info, tokenize
    from robovision_msgs.msg import ZeroShotLabels
    from robovision_ros.preprocessing import ImagePreprocessor

    parser = argparse.ArgumentParser(prog='minimal_node', description=__doc__.strip().split('\n')[0])
    parser.add_argument('model')
    parser.add_argument('backend')
    parser.add_argument('precision')
    parser.add_argument('topics', nargs='+')
    parser.add_argument('--labels', nargs='+', required=True)
    parser.add_argument('--template', default='a photo of a {}.')
    parser.add_argument('--device', default='cpu', help='cpu, or cuda (preprocessing on the GPU, as clip_perception)')
    args, ros_args = parser.parse_known_args(argv)

    info = read_model_info(args.model)
    preprocess = ImagePreprocessor(family_of(info).preprocess_config(info))
    backend = backend_entries()[args.backend].load(BackendRequest(info, args.device, args.precision))
    if args.device == 'cuda' and backend.capabilities.device_tensors:
        import torch

        def prepare(images: list) -> Any:
            return preprocess.torch_preprocess(images, 'cuda', torch.float32)
    else:
        prepare = preprocess
    ids, mask = tokenize(load_tokenizer(info), [args.template.format(label) for label in args.labels],
                         backend.text_length)
    text = l2_normalize(backend.encode_text(ids, mask))
    labels = list(args.labels)
    scale = backend.logit_scale

    rclpy.init(args=['minimal_node', *ros_args])
    node = rclpy.create_node('clip_perception')
    publisher = node.create_publisher(ZeroShotLabels, '~/zero_shot_labels', 10)

    def on_image(msg: Any) -> None:
        pixels = prepare([decode_image_msg(msg)])
        embedding = l2_normalize(backend.encode_image(pixels).global_embedding)[0]
        logits = scale * (text @ embedding)
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        best = int(np.argmax(scores))
        publisher.publish(ZeroShotLabels(header=msg.header, model_id=args.model, labels=labels,
                                         scores=scores.astype(np.float32).tolist(), best_label=labels[best],
                                         best_score=float(scores[best])))

    # What clip_perception does before its first frame: warm the model up, subscribe with depth 1 (newest frame).
    for _ in range(2):
        backend.encode_image(prepare([np.zeros((info.image_size, info.image_size, 3), np.uint8)]))
    qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability,
                     durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
    for topic in args.topics:
        node.create_subscription(Image, topic, on_image, qos)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == '__main__':
    sys.exit(main())
