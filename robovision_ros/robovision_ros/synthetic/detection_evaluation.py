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
The seen and held_out sets are also decoded with image queries instead of texts (image-guided detection): one
example crop per label, cut from scenes of their own (`EXAMPLE_SEED`), as the 20 queries.
mAP is COCO's: per label, precision interpolated at 101 recall points, averaged over labels; mAP@0.5 at IoU 0.5,
mAP@0.5:0.95 averaged over IoU 0.50, 0.55, ..., 0.95. Detections: score above MAP_THRESHOLD, class-aware NMS at the
node's default IoU, at most 100 per image.

The recipe (robovision_train_detector's defaults) was chosen on the validation split; the test split is evaluated
for the record only.

    robovision_evaluate_detector MODEL --split validation --record docs/detection_results.json --trial NAME
    robovision_evaluate_detector embedded:tiny_owl --split test --record docs/detection_results.json
    robovision_evaluate_detector --render docs/detection_results.json --doc docs/detection.md

`--record` merges the results into a JSON file (the shipped model's under its split, a trial model's under
`trials`); `--render` writes docs/detection.md from that file alone (test/test_detection_doc.py checks both).
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
EXAMPLE_SEED = 34001  # scenes the example images of image queries are cut from
EXAMPLE_MARGIN = 6  # pixels around the object's box in an example crop


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


def write_example_images(directory: Path, labels: Sequence[str] = LABELS) -> list[str]:
    """Cut one example image per label (the object alone on a scene of its own, with a margin); return the paths."""
    import cv2

    generator = SceneGenerator(EXAMPLE_SEED, *SCENE_HW)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, label in enumerate(labels):
        scene = generator.scene(index, [tuple(label.split())])
        x0, y0, x1, y1 = scene.objects[0].box
        margin = EXAMPLE_MARGIN
        crop = scene.image[max(y0 - margin, 0):y1 + margin, max(x0 - margin, 0):x1 + margin]
        path = directory / f'{label}.png'
        cv2.imwrite(str(path), np.ascontiguousarray(crop[..., ::-1]))
        paths.append(str(path))
    return paths


def evaluate_detector(model: str = 'embedded:tiny_owl', backend: str = 'onnxruntime', split: str = 'test',
                      scenes: int = 300, log: Callable[[str], None] = lambda message: None) -> dict:
    """Measure the detector on one split (see the module docstring); returns the metrics as a JSON-able dict."""
    import tempfile

    from robovision_ros.detection_queries import DetectionQueries, DetectionQuerySpec
    from robovision_ros.detector import DEFAULT_NMS_IOU, DEFAULT_SCORE_THRESHOLD, DetectorEncoder

    detector = DetectorEncoder(model, backend, 'cpu', 'fp32')
    examples = tempfile.TemporaryDirectory(prefix='robovision_examples_')
    try:
        queries = detector.build_queries(DetectionQuerySpec(LABELS, (TEMPLATE,), ()), 1)
        # 20 example images: more than a node takes (MAX_IMAGE_QUERIES), so the engine's image-query cache directly.
        no_texts = detector.build_queries(DetectionQuerySpec((), (TEMPLATE,), ()), 2).texts
        image_queries = DetectionQueries(no_texts, detector.images.build(
            write_example_images(Path(examples.name)), detector.info.global_dim), 2)
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
            frames = detect_scenes(detector, rendered, image_queries, MAP_THRESHOLD, DEFAULT_NMS_IOU)
            results[kind]['image_queries'] = {
                'map_50': mean_average_precision(frames, labels, (0.5,)),
                'map_50_95': mean_average_precision(frames, labels, IOU_THRESHOLDS)}
            log(f"{kind}: mAP@0.5 {results[kind]['map_50']:.3f}, mAP@0.5:0.95 {results[kind]['map_50_95']:.3f}; "
                f"with image queries {results[kind]['image_queries']['map_50']:.3f} "
                f"({time.monotonic() - start:.0f} s)")
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
        examples.cleanup()


def record(path: Path, results: dict, trial: Optional[str] = None) -> dict:
    """
    Merge `results` into the JSON record at `path`: under `trials`/`trial`, or under its split for the shipped model.

    The shipped model's training record (training.json next to its weights) and size are stored with its results.
    """
    from robovision_ros.model_dir import resolve_model_dir

    recorded = json.loads(path.read_text()) if path.is_file() else {}
    if trial:
        recorded.setdefault('trials', {})[trial] = results
    else:
        recorded[results['split']] = results
        directory = resolve_model_dir(results['model'])
        recorded['model'] = {'name': results['model'], 'bytes': sum(
            f.stat().st_size for f in directory.iterdir() if f.is_file()),
            'training': json.loads((directory / 'training.json').read_text())}
    path.write_text(json.dumps(recorded, indent=2) + '\n')
    return recorded


def _pct(value: Optional[float]) -> str:
    return 'n/a' if value is None else f'{100 * value:.1f}'


def render_doc(recorded: dict) -> str:
    """Return docs/detection.md for the recorded results (every number in it comes from `recorded`)."""
    test, validation, model = recorded['test'], recorded['validation'], recorded['model']
    recipe = model['training']['recipe']
    seen, held = test['seen'], test['held_out']
    lines = [
        '# Open-vocabulary detection: the embedded tiny detector', '',
        '<!-- Rendered by robovision_evaluate_detector --render docs/detection_results.json --doc docs/detection.md;'
        ' test/test_detection_doc.py checks it against the recorded results. -->', '',
        f"`embedded:tiny_owl` is a transformers OwlViTForObjectDetection ({model['bytes'] / 1e6:.1f} MB) trained by "
        'this project from scratch on generated tabletop scenes (`robovision_train_detector --out '
        'robovision_ros/embedded_models`, seeded: a second run of the command gave bit-identical weights; '
        f"{model['training']['train_seconds'] / 60:.0f} minutes of training at {recipe['threads']} thread while other "
        'jobs shared the 2 cores of this machine, about 10 on a free core): '
        f"{recipe['steps']} steps of {recipe['batch']} images from {recipe['scenes']} scenes, 64x64 input "
        '(the whole frame squashed, as OWL-ViT does), 8x8 patches. Four colour x shape pairs never appear in '
        'training, neither in an image nor as a query: '
        + ', '.join(f"'{label}'" for label in test['held_out_labels']) + '. It loads, exports and runs like '
        'google/owlvit-* (`model:=` any OWL-ViT or OWLv2 directory or hub id); it knows only this toy world.', '',
        '## Held-out test scenes', '',
        f"Measured by `robovision_evaluate_detector --split test` ({test['backend']}, the node's code path: "
        f"`DetectorEncoder.detect`), {test['scenes_per_set']} scenes per set on seeds never used in training or "
        'to choose the recipe; all 20 labels are the text queries (\'a photo of a {}.\'), NMS at IoU '
        f"{test['nms_iou']}. mAP as COCO computes it (101-point interpolated precision per label, mean over labels; "
        '@0.5:0.95 averages IoU 0.50 to 0.95).', '',
        '| Set | Scenes | Objects of the labels | mAP@0.5 | mAP@0.5:0.95 | with image queries: mAP@0.5 | '
        'mAP@0.5:0.95 |', '|---|---|---|---|---|---|---|',
        f"| seen labels (16), scenes of 1-4 objects | {seen['scenes']} | {seen['objects']} | "
        f"{_pct(seen['map_50'])} | {_pct(seen['map_50_95'])} | {_pct(seen['image_queries']['map_50'])} | "
        f"{_pct(seen['image_queries']['map_50_95'])} |",
        f"| held-out colour x shape pairs (4), each scene with one | {held['scenes']} | {held['objects']} | "
        f"{_pct(held['map_50'])} | {_pct(held['map_50_95'])} | {_pct(held['image_queries']['map_50'])} | "
        f"{_pct(held['image_queries']['map_50_95'])} |", '',
        'AP@0.5 of each held-out pair (text query): ' + ', '.join(
            f'{label} {_pct(ap)}' for label, ap in held['per_label_ap_50'].items()) + '.', '',
        '*With image queries*: the same scenes decoded against 20 example images instead of the texts, one crop per '
        'label cut from scenes of their own (image-guided detection: the node\'s `image_queries`). An example image '
        'needs no words, so it does not depend on the text tower having seen the pair: on the held-out pairs it does '
        f"about as well as their texts ({_pct(held['image_queries']['map_50'])} against {_pct(held['map_50'])}), "
        f"on the seen labels worse ({_pct(seen['image_queries']['map_50'])} against {_pct(seen['map_50'])}): one "
        'crop shows one instance\'s shade, size and view, where a text stands for all of them.', '',
        '## Two objects of the same label', '',
        f"Scenes with two objects of one label (and up to one other); at the node's default score threshold "
        f"({test['score_threshold']}) and NMS, the share of those instances found (a box of the label at IoU >= "
        '0.5, each instance once) and of scenes where both are found:', '',
        '| Repeated label | Scenes | Per-instance recall | Both found |', '|---|---|---|---|']
    for name, title in (('all', 'any of the 20'), ('seen', 'seen'), ('held_out', 'held-out pair')):
        entry = test['duplicates'][name]
        lines.append(f"| {title} | {entry['scenes']} | {_pct(entry['instance_recall'])} | "
                     f"{_pct(entry['both_found'])} |")
    lines += ['', '## How the recipe was chosen', '',
              f"On the validation split (other seeds, {validation['scenes_per_set']} scenes per set), by the same "
              'tool; the test split above was evaluated once, for the shipped model. Each trial is a full training '
              'run with the settings named:', '',
              '| Trial | seen mAP@0.5 | held-out mAP@0.5 | held-out, image queries | recall, repeated labels |',
              '|---|---|---|---|---|']
    for name, trial in list(recorded.get('trials', {}).items()) + [('shipped (the recipe above)', validation)]:
        lines.append(f"| {name} | {_pct(trial['seen']['map_50'])} | {_pct(trial['held_out']['map_50'])} | "
                     f"{_pct(trial['held_out']['image_queries']['map_50'])} | "
                     f"{_pct(trial['duplicates']['all']['instance_recall'])} |")
    reseeded = recorded.get('trials', {}).get('the shipped recipe with seed 1')
    if reseeded is not None:
        lines += ['', 'The seen labels are learnt alike by every run; how well the text tower composes a colour and a '
                  'shape it never saw together is not: the same recipe with another seed reaches '
                  f"{_pct(reseeded['held_out']['map_50'])} held-out mAP@0.5 where the shipped run reaches "
                  f"{_pct(validation['held_out']['map_50'])}. The recipe (a 1-layer text tower, no composition term) "
                  'rests on those few runs; the held-out numbers above are one run\'s, not a property of the '
                  'recipe. The repeated-label recall is lower on the held-out pairs for the same reason: their '
                  'texts score lower, and fewer instances pass the threshold.']
    lines += ['', '## Reproduce', '', '```bash', 'source scripts/env.sh',
              'robovision_train_detector --out robovision_ros/embedded_models   # about ten minutes on a free core',
              'robovision_evaluate_detector embedded:tiny_owl --split test --record docs/detection_results.json',
              'robovision_evaluate_detector embedded:tiny_owl --split validation --record docs/detection_results.json',
              'robovision_evaluate_detector --render docs/detection_results.json --doc docs/detection.md', '```', '']
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_evaluate_detector', description=__doc__.strip().split('\n')[0])
    parser.add_argument('model', nargs='?', default='embedded:tiny_owl')
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--split', choices=tuple(SPLITS), default='test')
    parser.add_argument('--scenes', type=int, default=300, help='scenes per set')
    parser.add_argument('--record', type=Path, help='merge the results into this JSON file')
    parser.add_argument('--trial', help='record the results as this trial (a model that is not shipped)')
    parser.add_argument('--render', type=Path, help='render --doc from this JSON record instead of evaluating')
    parser.add_argument('--doc', type=Path, default=Path('docs') / 'detection.md')
    args = parser.parse_args(argv)
    if args.render:
        args.doc.write_text(render_doc(json.loads(args.render.read_text())))
        print(f'wrote {args.doc}')
        return 0

    def log(message: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {message}', file=sys.stderr, flush=True)

    results = evaluate_detector(args.model, args.backend, args.split, args.scenes, log)
    if args.record:
        record(args.record, results, args.trial)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
