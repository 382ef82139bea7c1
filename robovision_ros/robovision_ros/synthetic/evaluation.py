# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_evaluate: quality of a CLIP or SigLIP model on held-out generated scenes, through the encoder engine.

    robovision_evaluate [MODEL] [--backend onnxruntime] [--scenes 200]

Metrics (all on scene seeds never used in training):
  zero_shot_top1     single-object scenes, argmax over the 20 colour+object labels equals the object's label;
  presence_precision / presence_recall   1-3 object scenes, each of the 20 labels present when its presence score
                     reaches the family's default threshold (CLIP: cosine 0.25; SigLIP: probability 0.5);
  localization_hit   each object's label query: the heatmap peak (source pixel) lies inside the object's box;
  rb_swap_colour_kept  single red/blue-object scenes with R and B swapped: fraction still given the original
                     colour (low means colour words really read the right channel).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

import numpy as np

from robovision_ros.encoder import PerceptionEncoder
from robovision_ros.synthetic.scenes import LABELS, SceneGenerator

EVAL_SEEDS = (9001, 9002)  # disjoint from training seeds (seed * 1000 + {0, 500})
DEFAULT_TEMPLATE = 'a photo of a {}.'


def evaluate_clip(model: str = 'embedded:tiny_clip', backend: str = 'onnxruntime', scenes: int = 200,
                  threshold: Optional[float] = None, height: int = 240, width: int = 320,
                  seeds: tuple[int, int] = EVAL_SEEDS) -> dict[str, float]:
    """
    Measure a model with text (CLIP, SigLIP) on held-out scenes; `threshold` None: its family's default.

    `seeds` are the generator seeds of the single- and the multi-object scenes.
    """
    encoder = PerceptionEncoder(model, backend, 'cpu', 'fp32')
    try:
        vocabulary = encoder.build_vocabulary(LABELS, [DEFAULT_TEMPLATE], 1)
        single = SceneGenerator(seeds[0], height, width, 1, 1)
        correct = kept = swapped_total = 0
        for i in range(scenes):
            scene = single.scene(i)
            features, _ = encoder.encode_images([scene.image])
            correct += encoder.score(features[0], vocabulary).best_label == scene.labels[0]
            colour = scene.objects[0].colour
            if colour in ('red', 'blue'):
                swapped, _ = encoder.encode_images([np.ascontiguousarray(scene.image[..., ::-1])])
                kept += encoder.score(swapped[0], vocabulary).best_label.split()[0] == colour
                swapped_total += 1
        multi = SceneGenerator(seeds[1], height, width, 1, 3)
        tp = fp = fn = hits = objects = 0
        for i in range(scenes):
            scene = multi.scene(i)
            features, _ = encoder.encode_images([scene.image])
            # every label is also a presence query; heatmaps kept to localise just the objects' labels
            result = encoder.score(features[0], vocabulary, vocabulary, threshold, heatmaps=True)
            truth = scene.multi_hot()
            tp += int(np.sum(result.present_mask & (truth > 0)))
            fp += int(np.sum(result.present_mask & (truth == 0)))
            fn += int(np.sum(~result.present_mask & (truth > 0)))
            for obj in scene.objects:
                hits += obj.contains(*result.locate(result.queries.index(obj.label)).peak_xy)
                objects += 1
        return {
            'zero_shot_top1': correct / scenes,
            'presence_precision': tp / max(tp + fp, 1),
            'presence_recall': tp / max(tp + fn, 1),
            'localization_hit': hits / max(objects, 1),
            'rb_swap_colour_kept': kept / max(swapped_total, 1),
            'scenes': float(scenes),
        }
    finally:
        encoder.close()


def evaluate_vit_colours(model: str = 'embedded:tiny_vit', backend: str = 'onnxruntime', scenes: int = 80,
                         seed: int = 9100) -> dict[str, float]:
    """
    Nearest-centroid colour classification on a ViT's CLS features of held-out single-object scenes.

    Centroids come from the first 60 % of the scenes, accuracy from the rest: how well the backbone's global
    embedding still separates the world it was trained on.
    """
    from robovision_ros.synthetic.scenes import COLOURS

    encoder = PerceptionEncoder(model, backend, 'cpu', 'fp32')
    try:
        generator = SceneGenerator(seed, min_objects=1, max_objects=1)
        items = [generator.scene(i) for i in range(scenes)]
        features, _ = encoder.encode_images([s.image for s in items], normalize=True)
    finally:
        encoder.close()
    embeddings = np.stack([f.global_embedding for f in features])
    colours = np.array([list(COLOURS).index(s.objects[0].colour) for s in items])
    split = int(scenes * 0.6)
    centroids = np.stack([embeddings[:split][colours[:split] == c].mean(0) for c in range(len(COLOURS))])
    predicted = np.argmax(embeddings[split:] @ centroids.T, axis=1)
    return {'colour_centroid_accuracy': float((predicted == colours[split:]).mean()), 'scenes': float(scenes)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_evaluate', description=__doc__.strip().split('\n')[0])
    parser.add_argument('model', nargs='?', default='embedded:tiny_clip')
    parser.add_argument('--backend', default='onnxruntime')
    parser.add_argument('--scenes', type=int, default=200)
    args = parser.parse_args(argv)
    print(json.dumps(evaluate_clip(args.model, args.backend, args.scenes), indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
