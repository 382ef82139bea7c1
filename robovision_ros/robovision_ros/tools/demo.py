# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_demo, the main job: the nodes on generated tabletop scenes, with a live view of what the robot sees.

Generated tabletop scenes -> image_source -> clip_perception, feature_extractor and open_vocab_detector on the
embedded models, over real DDS.

    robovision_demo [--frames N] [--rate HZ] [--backend onnxruntime] [--clip-model embedded:tiny_siglip] [--out DIR]

Prints one line per frame (ground truth, best label and score, presence per query, feature grid, the detector's
boxes, latency) and saves DIR/robovision_debug.png (the last frame with the best label and the heatmap and box of
the top query) and DIR/robovision_detections.png (the detector's last debug image: every box with its label and
score). Ends after --frames frames (0: run until Ctrl-C).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence


PRESENCE_QUERIES = ['red cup', 'blue bottle', 'green ball', 'yellow box']


def _use_shipped_dds_profile() -> None:
    """Large camera frames need the shipped Fast DDS profile (see config/fastdds_profile.xml)."""
    if 'FASTDDS_DEFAULT_PROFILES_FILE' in os.environ:
        return
    from ament_index_python.packages import get_package_share_directory

    profile = Path(get_package_share_directory('robovision_ros')) / 'config' / 'fastdds_profile.xml'
    os.environ['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from robovision_ros.backends.registry import backend_choices

    parser = argparse.ArgumentParser(prog='robovision_demo', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--frames', type=int, default=20, help='frames to process (0: until Ctrl-C)')
    parser.add_argument('--rate', type=float, default=5.0, help='camera rate in Hz')
    parser.add_argument('--backend', default='onnxruntime', choices=backend_choices(),
                        help='inference backend of both nodes (default: onnxruntime)')
    parser.add_argument('--clip-model', default='embedded:tiny_clip',
                        help="clip_perception's model: embedded:tiny_clip (softmax scores), embedded:tiny_siglip "
                             '(sigmoid scores), or any CLIP/SigLIP directory (default: embedded:tiny_clip)')
    parser.add_argument('--out', type=Path, default=Path('out'), help='where the debug image is saved')
    parser.add_argument('--seed', type=int, default=7, help='scene generator seed')
    args = parser.parse_args(argv)
    _use_shipped_dds_profile()

    import rclpy
    from rclpy.executors import MultiThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from sensor_msgs.msg import Image

    from robovision_msgs.msg import ObjectDetectionArray, ObjectPresenceArray, PatchFeatures, ZeroShotLabels
    from robovision_ros.nodes.clip_perception import ClipPerceptionNode
    from robovision_ros.nodes.feature_extractor import FeatureExtractorNode
    from robovision_ros.nodes.image_source import ImageSourceNode
    from robovision_ros.nodes.open_vocab_detector import OpenVocabDetectorNode
    from robovision_ros.synthetic.scenes import LABELS

    rclpy.init()
    topic = '/camera/image_raw'
    source = ImageSourceNode(parameter_overrides=[
        Parameter('source', value='generator'), Parameter('rate_hz', value=args.rate),
        Parameter('seed', value=args.seed), Parameter('max_frames', value=args.frames),
        Parameter('wait_for_subscribers', value=2)],
        cli_args=['--ros-args', '-r', f'image_raw:={topic}'])
    common = [Parameter('image_topics', value=[topic]), Parameter('backend', value=args.backend)]
    clip = ClipPerceptionNode(parameter_overrides=common + [
        Parameter('model', value=args.clip_model), Parameter('labels', value=list(LABELS)),
        Parameter('presence_queries', value=PRESENCE_QUERIES)])
    features = FeatureExtractorNode(parameter_overrides=common)
    detector = OpenVocabDetectorNode(parameter_overrides=common + [
        Parameter('queries', value=list(LABELS)), Parameter('debug_image', value=True)])
    perception = (clip, features, detector)
    viewer = Node('robovision_viewer')
    last_detection_view: list[Any] = [None]
    results: dict[int, dict[str, Any]] = {}
    lock = threading.Lock()
    shown = [0]
    done = threading.Event()

    def stamp_ns(msg: Any) -> int:
        return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

    newest_detection = [-1]  # stamp of the detector's newest result: it serves the newest frame and may skip one

    def collect(kind: str, msg: Any) -> None:
        with lock:
            entry = results.setdefault(stamp_ns(msg), {})
            entry[kind] = msg
            if kind == 'detections':
                newest_detection[0] = max(newest_detection[0], stamp_ns(msg))
            for stamp in sorted(results):
                entry = results[stamp]
                complete = {'labels', 'presence', 'features'} <= set(entry) and (
                    'detections' in entry or stamp < newest_detection[0])
                if not complete:
                    continue
                _print_frame(shown[0] + 1, source.ground_truth.get(stamp, ()), entry)
                del results[stamp]
                shown[0] += 1
                if args.frames and shown[0] >= args.frames:
                    done.set()

    viewer.create_subscription(ZeroShotLabels, '/clip_perception/zero_shot_labels',
                               lambda m: collect('labels', m), 10)
    viewer.create_subscription(ObjectPresenceArray, '/clip_perception/object_presence',
                               lambda m: collect('presence', m), 10)
    viewer.create_subscription(PatchFeatures, '/feature_extractor/patch_features',
                               lambda m: collect('features', m), 10)
    viewer.create_subscription(ObjectDetectionArray, '/open_vocab_detector/object_detections',
                               lambda m: collect('detections', m), 10)
    viewer.create_subscription(Image, '/open_vocab_detector/debug_image',
                               lambda m: last_detection_view.__setitem__(0, m), 1)
    executor = MultiThreadedExecutor(num_threads=4)
    for node in (source, *perception, viewer):
        executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    status = 0
    try:
        for node in perception:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS or \
                    node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                print(f'robovision_demo: {node.get_name()} did not become active (see its log above)',
                      file=sys.stderr)
                return 1
        print(f'robovision_demo: clip_perception ({clip.encoder.info.model_id}, {clip.encoder.family.scoring} '
              f'scores), feature_extractor ({features.encoder.info.model_id}) and open_vocab_detector '
              f'({detector.encoder.info.model_id}) active on {clip.encoder.backend.name}; camera {topic} at '
              f'{args.rate} Hz', flush=True)
        finished_at = None
        while not done.wait(0.2):
            if source.finished and finished_at is None:
                finished_at = time.monotonic()
            if finished_at is not None and time.monotonic() - finished_at > 5.0:
                break  # the source stopped and the last outputs had time to arrive
        status = 0 if shown[0] else 1
        _save_debug_image(args.out, source, clip)
        _save_detection_view(args.out, last_detection_view[0])
    finally:
        done.set()
        for node in perception:
            node.stop()
        executor.shutdown()
        spinner.join(timeout=10.0)
        for node in (source, *perception, viewer):
            node.destroy_node()
        rclpy.try_shutdown()
    print(f'robovision_demo: {shown[0]} frames processed')
    return status


def _print_frame(number: int, truth: Sequence[str], entry: dict[str, Any]) -> None:
    labels, presence, feats = entry['labels'], entry['presence'], entry['features']
    if 'detections' in entry:
        boxes = ', '.join(f'{d.label} {d.score:.2f} [{d.x_min:.0f},{d.y_min:.0f},{d.x_max:.0f},{d.y_max:.0f}]'
                          for d in entry['detections'].detections) or 'none'
    else:
        boxes = 'skipped (the detector served a newer frame)'  # newest frame only, as every node
    # The value presence thresholds: the cosine for CLIP, the sigmoid probability for SigLIP.
    flags = '  '.join(f"{r.query} {'YES' if r.present else 'no '} {r.score:+.2f}"
                      + (f' @({r.peak_x},{r.peak_y})' if r.present and r.has_location else '')
                      for r in presence.results)
    print(f'frame {number:3d} | truth: {", ".join(truth) or "?":40s} | best: {labels.best_label} '
          f'{labels.best_score:.2f} | {flags} | features {feats.grid_h}x{feats.grid_w}x{feats.dim} | '
          f'boxes: {boxes} | {labels.total_ms:.1f} ms', flush=True)


def _save_debug_image(out_dir: Path, source: Any, clip: Any) -> None:
    """Render the last generated frame through the clip node's encoder and save the overlay as PNG."""
    import cv2

    from robovision_ros.debug_view import render_debug_image

    scene = source.source.last_scene
    encoder = clip.encoder
    if scene is None or encoder is None:
        return
    vocabulary = clip.vocabulary()
    if vocabulary is None:
        return
    (feature,), _ = encoder.encode_images([scene.image])
    result = encoder.score(feature, vocabulary.labels, vocabulary.queries, heatmaps=True)
    top = result.top_query
    heatmap = result.heatmaps[top] if top is not None else None
    roi = result.locate(top).roi_xywh if top is not None else None
    overlay = render_debug_image(
        scene.image, f'best: {result.best_label} {result.best_score:.2f}   truth: {", ".join(scene.labels)}',
        heatmap, roi, feature.geometry.visible_box(encoder.preprocessor.input_hw(scene.image.shape[:2])),
        f'{result.queries[top]} {result.similarities[top]:.2f}' if top is not None else '')
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / 'robovision_debug.png'
    cv2.imwrite(str(path), overlay[..., ::-1])
    print(f'robovision_demo: debug image saved to {path}')


def _save_detection_view(out_dir: Path, msg: Any) -> None:
    """Save the detector's last debug image (every box, label and score over the frame) as PNG."""
    import cv2

    from robovision_ros.image_codec import decode_image_msg

    if msg is None:
        print('robovision_demo: no detection view arrived', file=sys.stderr)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / 'robovision_detections.png'
    cv2.imwrite(str(path), decode_image_msg(msg)[..., ::-1])
    print(f'robovision_demo: detection view saved to {path}')


if __name__ == '__main__':
    sys.exit(main())
