# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_evaluate_detector: the tiny detector's quality on held-out scenes, measured through the detection engine.

    robovision_evaluate_detector [MODEL] [--backend onnxruntime] [--split test|validation] [--scenes 300]
                                 [--out docs/detection_results.json] [--doc docs/detection.md]

Every frame goes through `DetectorEncoder.detect` (the node's code path) with all 20 colour x shape labels as text
queries ('a photo of a {}.'). Scene sets, each on seeds never used in training (`SPLITS`):
  seen         1-4 objects of the 16 labels seen in training: mAP over those labels;
  held_out     scenes with at least one object of a held-out colour x shape pair (never seen together in
               training): mAP over the 4 held-out labels;
  duplicates   two objects of the same label (and up to one other): per-instance recall of that label at the node's
               default score threshold, and the fraction of scenes where both instances are found.
mAP is COCO's: per label, precision interpolated at 101 recall points, averaged over labels; mAP@0.5 at IoU 0.5,
mAP@0.5:0.95 averaged over IoU 0.50, 0.55, ..., 0.95. Detections: score above MAP_THRESHOLD, class-aware NMS at the
node's default IoU, at most 100 per image.

The recipe (robovision_train_detector's defaults) was chosen on the validation split; the test split is evaluated
for the record only. `--doc` renders docs/detection.md from the results written by `--out`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from robovision_ros.detection import box_iou
from robovision_ros.synthetic.detector_training import HELD_OUT_LABELS, SEEN_LABELS, random_objects
from robovision_ros.synthetic.scenes import LABELS, Scene, SceneGenerator

SPLITS = {'validation': {'seen': 32001, 'held_out': 32002, 'duplicates': 32003},
          'test': {'seen': 33001, 'held_out': 33002, 'duplicates': 33003}}
TEMPLATE = 'a photo of a {}.'
MAP_THRESHOLD = 0.01  # detections kept for the precision-recall curves
MAX_DETECTIONS = 100
IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))
SCENE_HW = (240, 320)


@dataclass(frozen=True)
class FrameDetections:
    """One evaluated frame: its ground truth and what was detected (labels as indices into LABELS)."""

    truth_boxes: np.ndarray  # [T, 4] xyxy source pixels
    truth_labels: np.ndarray  # [T]
    boxes: np.ndarray  # [K, 4]
    scores: np.ndarray  # [K]
    labels: np.ndarray  # [K]


def average_precision(frames: Sequence[FrameDetections], label: int, iou_threshold: float) -> Optional[float]:
    """
    Return COCO's average precision of one label at one IoU threshold (None if no frame has that label).

    Detections of the label over all frames, best score first, each matched to the unmatched ground-truth box of the
    label it overlaps most in its frame (IoU >= threshold) or counted false; precision made monotone and read at
    101 recall points (0, 0.01, ..., 1).
    """
    total = sum(int(np.sum(f.truth_labels == label)) for f in frames)
    if total == 0:
        return None
    entries = []  # (score, frame index, detection index)
    for n, frame in enumerate(frames):
        for k in np.flatnonzero(frame.labels == label):
            entries.append((float(frame.scores[k]), n, int(k)))
    entries.sort(key=lambda e: (-e[0], e[1], e[2]))
    used = [np.zeros(len(f.truth_labels), bool) for f in frames]
    hits = np.zeros(len(entries), bool)
    for i, (_, n, k) in enumerate(entries):
        frame = frames[n]
        candidates = np.flatnonzero((frame.truth_labels == label) & ~used[n])
        if len(candidates) == 0:
            continue
        ious = box_iou(frame.boxes[k:k + 1], frame.truth_boxes[candidates])[0]
        best = int(np.argmax(ious))
        if ious[best] >= iou_threshold:
            used[n][candidates[best]] = True
            hits[i] = True
    true_positives = np.cumsum(hits)
    recall = true_positives / total
    precision = true_positives / np.arange(1, len(entries) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    points = np.linspace(0.0, 1.0, 101)
    index = np.searchsorted(recall, points, side='left')
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in index]))


def mean_average_precision(frames: Sequence[FrameDetections], labels: Sequence[int],
                           iou_thresholds: Sequence[float]) -> float:
    """Return the mean over `labels` (those with ground truth) and `iou_thresholds` of the average precision."""
    values = [[average_precision(frames, label, t) for t in iou_thresholds] for label in labels]
    values = [np.mean(v) for v in values if v[0] is not None]
    return float(np.mean(values)) if values else float('nan')


def instance_recall(frames: Sequence[FrameDetections], label_of: Sequence[int], threshold: float,
                    iou_threshold: float = 0.5) -> tuple[float, float]:
    """
    Return (recall of the instances of each frame's repeated label, fraction of frames where all are found).

    `label_of[n]` is frame n's repeated label; detections scoring at least `threshold` match greedily, best first.
    """
    found = total = complete = 0
    for frame, label in zip(frames, label_of):
        truth = np.flatnonzero(frame.truth_labels == label)
        order = [k for k in np.argsort(-frame.scores, kind='stable')
                 if frame.labels[k] == label and frame.scores[k] >= threshold]
        used = np.zeros(len(truth), bool)
        for k in order:
            ious = box_iou(frame.boxes[k:k + 1], frame.truth_boxes[truth])[0]
            ious[used] = -1.0
            best = int(np.argmax(ious))
            if ious[best] >= iou_threshold:
                used[best] = True
        found += int(used.sum())
        total += len(truth)
        complete += bool(used.all())
    return found / max(total, 1), complete / max(len(frames), 1)


def scene_set(kind: str, seed: int, count: int) -> tuple[list[Scene], list[int]]:
    """Render one evaluation set; returns its scenes and, for `duplicates`, each scene's repeated label."""
    generator = SceneGenerator(seed, *SCENE_HW)
    rng = np.random.default_rng(seed)
    scenes, repeated = [], []
    for i in range(count):
        if kind == 'seen':
            objects = random_objects(rng, SEEN_LABELS, 1, 4, duplicate_fraction=0.2)
        elif kind == 'held_out':
            first = HELD_OUT_LABELS[i % len(HELD_OUT_LABELS)]
            objects = [tuple(first.split())] + random_objects(rng, LABELS, 0, 2, duplicate_fraction=0.0)
        else:
            label = LABELS[int(rng.integers(len(LABELS)))]
            objects = [tuple(label.split())] * 2 + random_objects(rng, LABELS, 0, 1, duplicate_fraction=0.0)
            repeated.append(LABELS.index(label))
        scene = generator.scene(i, objects)
        if kind == 'duplicates' and sum(o.label == LABELS[repeated[-1]] for o in scene.objects) < 2:
            repeated.pop()  # the table had no room for both: not a duplicate scene
            continue
        scenes.append(scene)
    return scenes, repeated


def detect_scenes(detector: 'object', scenes: Sequence[Scene], queries: 'object', threshold: float,
                  nms_iou: float) -> list[FrameDetections]:
    """Run the detector on each scene and collect ground truth and detections by label index."""
    frames = []
    for scene in scenes:
        (result,), _ = detector.detect([scene.image], queries, threshold, nms_iou, MAX_DETECTIONS)
        frames.append(FrameDetections(
            np.array([o.box for o in scene.objects], np.float64).reshape(-1, 4),
            np.array([LABELS.index(o.label) for o in scene.objects], np.int64),
            np.array([d.box_xyxy for d in result.detections], np.float64).reshape(-1, 4),
            np.array([d.score for d in result.detections], np.float64),
            np.array([LABELS.index(d.label) for d in result.detections], np.int64)))
    return frames


def evaluate_detector(model: str = 'embedded:tiny_owl', backend: str = 'onnxruntime', split: str = 'test',
                      scenes: int = 300, log: Callable[[str], None] = lambda message: None) -> dict:
    """Measure the detector on one split (see the module docstring); returns the metrics as a JSON-able dict."""
    from robovision_ros.detection_queries import DetectionQuerySpec
    from robovision_ros.detector import DEFAULT_NMS_IOU, DEFAULT_SCORE_THRESHOLD, DetectorEncoder

    detector = DetectorEncoder(model, backend, 'cpu', 'fp32')
    try:
        queries = detector.build_queries(DetectionQuerySpec(LABELS, (TEMPLATE,), ()), 1)
        seeds = SPLITS[split]
        seen = [LABELS.index(label) for label in SEEN_LABELS]
        held_out = [LABELS.index(label) for label in HELD_OUT_LABELS]
        results: dict = {'model': model, 'backend': backend, 'split': split, 'scenes_per_set': scenes,
                         'score_threshold': DEFAULT_SCORE_THRESHOLD, 'nms_iou': DEFAULT_NMS_IOU,
                         'held_out_labels': list(HELD_OUT_LABELS)}
        start = time.monotonic()
        for kind in ('seen', 'held_out'):
            rendered, _ = scene_set(kind, seeds[kind], scenes)
            frames = detect_scenes(detector, rendered, queries, MAP_THRESHOLD, DEFAULT_NMS_IOU)
            labels = seen if kind == 'seen' else held_out
            results[kind] = {
                'map_50': mean_average_precision(frames, labels, (0.5,)),
                'map_50_95': mean_average_precision(frames, labels, IOU_THRESHOLDS),
                'per_label_ap_50': {LABELS[label]: average_precision(frames, label, 0.5) for label in labels},
                'objects': int(sum(np.isin(f.truth_labels, labels).sum() for f in frames)),
                'scenes': len(frames)}
            log(f"{kind}: mAP@0.5 {results[kind]['map_50']:.3f}, mAP@0.5:0.95 {results[kind]['map_50_95']:.3f} "
                f'({time.monotonic() - start:.0f} s)')
        rendered, repeated = scene_set('duplicates', seeds['duplicates'], scenes)
        frames = detect_scenes(detector, rendered, queries, DEFAULT_SCORE_THRESHOLD, DEFAULT_NMS_IOU)
        results['duplicates'] = {}
        for name, group in (('all', LABELS), ('seen', SEEN_LABELS), ('held_out', HELD_OUT_LABELS)):
            members = [n for n, label in enumerate(repeated) if LABELS[label] in group]
            recall, complete = instance_recall([frames[n] for n in members], [repeated[n] for n in members],
                                               DEFAULT_SCORE_THRESHOLD)
            results['duplicates'][name] = {'instance_recall': recall, 'both_found': complete,
                                           'scenes': len(members)}
        log(f"duplicates: instance recall {results['duplicates']['all']['instance_recall']:.3f}, both found "
            f"{results['duplicates']['all']['both_found']:.3f} ({time.monotonic() - start:.0f} s)")
        results['seconds'] = round(time.monotonic() - start, 1)
        return results
    finally:
        detector.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_evaluate_detector', description=__doc__.strip().split('\n')[0])
    parser.add_argument('model', nargs='?', default='embedded:tiny_owl')
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--split', choices=tuple(SPLITS), default='test')
    parser.add_argument('--scenes', type=int, default=300, help='scenes per set')
    parser.add_argument('--out', type=Path, help='write the results (JSON) here')
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)

    results = evaluate_detector(args.model, args.backend, args.split, args.scenes, log)
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.write_text(text + '\n')
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
