# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_train_detector: train the embedded tiny OWL-ViT-style detector on generated tabletop scenes.

    robovision_train_detector --out robovision_ros/embedded_models [--steps N] [--seed S] [--threads 1]

The model is a transformers OwlViTForObjectDetection (so it loads, exports and serves like google/owlvit-*),
small enough to train from scratch on one CPU thread in about ten minutes (3000 steps at 0.15-0.2 s on an idle
core; longer while other jobs share the cores): a 64x64 input (the whole frame squashed to a square, as OWL-ViT's
processor does), 8x8 patches, a 3-layer vision tower and a 1-layer text tower (a 2-layer one composed colour and
shape words it never saw together worse on the validation scenes: docs/detection.md). Seeded and reproducible for
the same versions and thread count.

What it learns from: scenes of 1-4 objects with every object's box (synthetic/scenes.py), a third of them with two
objects of the same label, and zoomed crops of scenes (so that a crop of one object, an image query, looks like
something seen). Four colour x shape pairs (`HELD_OUT_LABELS`) never appear in training, neither in an image nor as
a query: the evaluation (robovision_evaluate_detector) measures how far the model composes colour and shape words it
learnt apart.

Each object is the target of the patch under its centre (one positive per object, as CenterNet assigns them; OWL-ViT
itself matches predictions to objects by Hungarian matching, which a world of patch-sized objects does not need).
Loss: sigmoid focal loss of every patch against every training query (the 16 seen labels, and with
`--attribute-queries` the colours and shapes alone, whose targets are every object of that colour or shape), plus L1
and generalised-IoU losses of the positive patches' boxes, and with `--compose-weight` a term that pulls each label's
text embedding towards the sum of its colour's and its shape's.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from robovision_ros.model_dir import tokenize
from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig
from robovision_ros.synthetic.scenes import COLOURS, LABELS, OBJECTS, SceneGenerator
from robovision_ros.synthetic.tiny_models import init_owl_heads, make_tiny_owl, owl_config, \
    owl_preprocessor_config, write_clip_tokenizer

MODEL_NAME = 'tiny_owl'
HELD_OUT_LABELS = ('red plate', 'green box', 'blue ball', 'yellow cup')  # one per colour, four shapes
SEEN_LABELS = tuple(label for label in LABELS if label not in HELD_OUT_LABELS)
TEMPLATES = ('a photo of a {}.', 'a {}.', 'a {} on a table.', 'a photo of the {}.', 'there is a {}.')
ATTRIBUTE_QUERIES = tuple(f'{colour} object' for colour in COLOURS) + OBJECTS
IMAGE_SIZE = 64
PATCH_SIZE = 8
SCENE_HW = (120, 160)  # rendered for training; the objects' layout scales with the frame
TRAIN_SEED = 31000  # training scenes use seeds TRAIN_SEED + seed * 10 + {0, 1}; evaluation uses others
DUPLICATE_FRACTION = 1 / 3  # scenes with two objects of the same label


@dataclass
class DetectionData:
    """Training samples at the model's input size: pixels and, per sample, its objects."""

    pixels: np.ndarray  # float32 [N, 3, S, S]
    boxes: list[np.ndarray] = field(default_factory=list)  # per sample [T, 4] (cx, cy, w, h) relative to the input
    labels: list[np.ndarray] = field(default_factory=list)  # per sample [T] indices into LABELS


def random_objects(rng: np.random.Generator, labels: Sequence[str], min_objects: int = 1, max_objects: int = 4,
                   duplicate_fraction: float = DUPLICATE_FRACTION) -> list[tuple[str, str]]:
    """Return (colour, kind) pairs for one scene: 1-4 labels from `labels`, some scenes with a label twice."""
    count = int(rng.integers(min_objects, max_objects + 1))
    chosen = [str(labels[int(rng.integers(len(labels)))]) for _ in range(count)]
    if count >= 2 and rng.random() < duplicate_fraction:
        chosen[1] = chosen[0]
    return [tuple(label.split()) for label in chosen]  # type: ignore[misc]


def scene_targets(objects: Sequence, frame_hw: tuple[int, int],
                  window: Optional[tuple[int, int, int, int]] = None) -> tuple[np.ndarray, np.ndarray]:
    """
    Return the objects' boxes (cx, cy, w, h relative to the window) and label indices.

    `window` (x0, y0, x1, y1) is the part of the frame the model sees (the whole frame by default); an object less
    than half inside it is left out.
    """
    x0, y0, x1, y1 = window or (0, 0, frame_hw[1], frame_hw[0])
    boxes, labels = [], []
    for obj in objects:
        bx0, by0, bx1, by1 = obj.box
        cx0, cy0, cx1, cy1 = max(bx0, x0), max(by0, y0), min(bx1, x1), min(by1, y1)
        if cx1 <= cx0 or cy1 <= cy0 or (cx1 - cx0) * (cy1 - cy0) < 0.5 * (bx1 - bx0) * (by1 - by0):
            continue
        w, h = x1 - x0, y1 - y0
        boxes.append([((cx0 + cx1) / 2 - x0) / w, ((cy0 + cy1) / 2 - y0) / h, (cx1 - cx0) / w, (cy1 - cy0) / h])
        labels.append(LABELS.index(obj.label))
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64)


def make_detection_dataset(seed: int, count: int, preprocessor: ImagePreprocessor, labels: Sequence[str],
                           zoom_fraction: float = 0.3, scene_hw: tuple[int, int] = SCENE_HW) -> DetectionData:
    """Render `count` scenes of `labels`; a `zoom_fraction` of them is a crop around one object instead."""
    generator = SceneGenerator(seed, *scene_hw)
    rng = np.random.default_rng(seed)
    size = preprocessor.config.input_hw[0]
    data = DetectionData(np.empty((count, 3, size, size), np.float32))
    for n in range(count):
        scene = generator.scene(n, random_objects(rng, labels))
        window = None
        if scene.objects and rng.random() < zoom_fraction:
            target = scene.objects[int(rng.integers(len(scene.objects)))]
            bx0, by0, bx1, by1 = target.box
            side = max(bx1 - bx0, by1 - by0) * rng.uniform(1.1, 2.2)
            cx, cy = (bx0 + bx1) / 2 + rng.uniform(-0.2, 0.2) * side, (by0 + by1) / 2 + rng.uniform(-0.2, 0.2) * side
            x0 = int(np.clip(cx - side / 2, 0, scene_hw[1] - 8))
            y0 = int(np.clip(cy - side / 2, 0, scene_hw[0] - 8))
            window = (x0, y0, int(min(x0 + side, scene_hw[1])), int(min(y0 + side, scene_hw[0])))
            image = scene.image[window[1]:window[3], window[0]:window[2]]
        else:
            image = scene.image
        data.pixels[n] = preprocessor([image])[0]
        boxes, label_ids = scene_targets(scene.objects, scene_hw, window)
        data.boxes.append(boxes)
        data.labels.append(label_ids)
    return data


def corpus() -> list[str]:
    """Return the tokenizer's training text: every prompt of the seen labels and the attribute queries."""
    return [t.format(q) for t in TEMPLATES for q in SEEN_LABELS + ATTRIBUTE_QUERIES]


def query_targets(labels: np.ndarray, queries: Sequence[str]) -> np.ndarray:
    """[T, Q]: whether each object (label index) answers each query (a label, a colour + 'object', or a shape)."""
    targets = np.zeros((len(labels), len(queries)), np.float32)
    for t, label_index in enumerate(labels):
        colour, kind = LABELS[int(label_index)].split()
        for q, query in enumerate(queries):
            targets[t, q] = query in (f'{colour} {kind}', f'{colour} object', kind)
    return targets


def composition_loss(unit_queries, queries: Sequence[str]):  # noqa: ANN001, ANN201 (torch tensors)
    """
    Return the mean of 1 - cosine between each label's text embedding and the sum of its colour's and shape's.

    A text tower that composes a label from its words can embed a colour x shape pair it never saw; the attribute
    queries ('red object', 'cup') are the words' embeddings.
    """
    import torch.nn.functional as F

    index = {query: i for i, query in enumerate(queries)}
    rows, parts = [], []
    for query in queries:
        words = query.split()
        if len(words) == 2 and words[1] != 'object' and f'{words[0]} object' in index and words[1] in index:
            rows.append(index[query])
            parts.append((index[f'{words[0]} object'], index[words[1]]))
    labels = unit_queries[rows]
    composed = F.normalize(unit_queries[[a for a, _ in parts]] + unit_queries[[b for _, b in parts]], dim=-1)
    return (1 - (labels * composed).sum(-1)).mean()


def _schedule(step: int, steps: int, base_lr: float, warmup: int = 150) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(steps - warmup, 1)))


def focal_loss(logits, targets, alpha: float = 0.25, gamma: float = 2.0):  # noqa: ANN001, ANN201 (torch tensors)
    """Sigmoid focal loss (RetinaNet, as OWL-ViT trains its class logits), summed over every patch and query."""
    import torch.nn.functional as F

    probability = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction='none')
    p_t = probability * targets + (1 - probability) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.sum()


def generalized_iou_loss(predicted, target):  # noqa: ANN001, ANN201 (torch tensors)
    """Return the mean of 1 - GIoU of matched (cx, cy, w, h) boxes [K, 4]."""
    import torch

    def corners(b):  # noqa: ANN001, ANN202
        return torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], dim=1)

    p, t = corners(predicted), corners(target)
    area_p = (p[:, 2] - p[:, 0]).clamp(min=0) * (p[:, 3] - p[:, 1]).clamp(min=0)
    area_t = (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])
    inter = ((torch.min(p[:, 2:], t[:, 2:]) - torch.max(p[:, :2], t[:, :2])).clamp(min=0)).prod(1)
    union = area_p + area_t - inter
    enclosing = ((torch.max(p[:, 2:], t[:, 2:]) - torch.min(p[:, :2], t[:, :2])).clamp(min=0)).prod(1)
    giou = inter / union.clamp(min=1e-7) - (enclosing - union) / enclosing.clamp(min=1e-7)
    return (1 - giou).mean()


@dataclass(frozen=True)
class DetectorRecipe:
    """The training settings (recorded with the model in training.json)."""

    steps: int = 3000
    batch: int = 48
    lr: float = 1e-3
    scenes: int = 6000
    zoom_fraction: float = 0.3
    attribute_queries: bool = True
    text_layers: int = 1
    compose_weight: float = 0.0  # pull each label's text embedding towards its colour's plus its shape's
    box_weight: float = 5.0
    giou_weight: float = 2.0
    seed: int = 0
    threads: int = 1


def train_detector(out_dir: Path, recipe: DetectorRecipe = DetectorRecipe(),
                   log: Callable[[str], None] = print) -> Path:
    """Train the tiny detector and write it as `out_dir`/tiny_owl (a Hugging Face OWL-ViT directory)."""
    import torch
    import torch.nn.functional as F
    from transformers import OwlViTForObjectDetection

    torch.manual_seed(recipe.seed)
    torch.set_num_threads(recipe.threads)
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(owl_preprocessor_config('owlvit', IMAGE_SIZE)))
    start = time.monotonic()
    data = make_detection_dataset(TRAIN_SEED + recipe.seed * 10, recipe.scenes, preprocessor, SEEN_LABELS,
                                  recipe.zoom_fraction)
    log(f'rendered {recipe.scenes} training scenes in {time.monotonic() - start:.0f} s')
    model_dir = out_dir / MODEL_NAME
    tokenizer = write_clip_tokenizer(model_dir, corpus(), num_merges=300, max_length=16)
    config = owl_config('owlvit', len(tokenizer), IMAGE_SIZE, PATCH_SIZE, vision_width=96, text_width=64,
                        layers=3, heads=4, max_length=16,
                        special_tokens=dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                            pad_token_id=tokenizer.pad_token_id))
    config.text_config.num_hidden_layers = recipe.text_layers
    model = init_owl_heads(OwlViTForObjectDetection(config), prior=0.01, seed=recipe.seed)
    queries = SEEN_LABELS + (ATTRIBUTE_QUERIES if recipe.attribute_queries else ())
    tokens = [tokenize(tokenizer, [t.format(q) for q in queries], 16, 'pt') for t in TEMPLATES]
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.05, fused=True)
    pixels = torch.from_numpy(data.pixels)
    grid = IMAGE_SIZE // PATCH_SIZE
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    start = time.monotonic()
    for step in range(recipe.steps):
        for group in optimizer.param_groups:
            group['lr'] = _schedule(step, recipe.steps, recipe.lr)
        idx = torch.randint(0, len(pixels), (recipe.batch,), generator=generator).tolist()
        flip = (torch.rand(recipe.batch, generator=generator) < 0.5).tolist()
        images = pixels[idx]
        images = torch.stack([img.flip(-1) if f else img for img, f in zip(images, flip)])
        images = images * (1 + 0.15 * (torch.rand(recipe.batch, 1, 1, 1, generator=generator) - 0.5))
        class_targets = torch.zeros(recipe.batch, grid * grid, len(queries))
        box_rows, box_targets = [], []
        for b, (i, flipped) in enumerate(zip(idx, flip)):
            boxes = data.boxes[i].copy()
            if flipped:
                boxes[:, 0] = 1.0 - boxes[:, 0]
            cells = (np.clip((boxes[:, 1] * grid).astype(int), 0, grid - 1) * grid
                     + np.clip((boxes[:, 0] * grid).astype(int), 0, grid - 1))
            targets = query_targets(data.labels[i], queries)
            for cell, box, target in zip(cells, boxes, targets):
                class_targets[b, cell] = torch.maximum(class_targets[b, cell], torch.from_numpy(target))
                box_rows.append(b * grid * grid + int(cell))
                box_targets.append(box)
        template = int(torch.randint(0, len(TEMPLATES), (1,), generator=generator))
        ids, mask = tokens[template]
        feature_map = model.image_embedder(pixel_values=images)[0]
        features = feature_map.reshape(recipe.batch, grid * grid, -1)
        query_embeds = model.owlvit.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        compose = torch.zeros(())
        if recipe.compose_weight and recipe.attribute_queries:
            compose = composition_loss(F.normalize(query_embeds, dim=-1), queries)
        logits, _ = model.class_predictor(features, query_embeds[None].expand(recipe.batch, -1, -1))
        boxes = model.box_predictor(features, feature_map).reshape(-1, 4)
        classification = focal_loss(logits, class_targets) / max(len(box_rows), 1)
        matched = boxes[torch.tensor(box_rows)]
        wanted = torch.from_numpy(np.stack(box_targets))
        l1 = F.l1_loss(matched, wanted)
        giou = generalized_iou_loss(matched, wanted)
        loss = classification + recipe.box_weight * l1 + recipe.giou_weight * giou + recipe.compose_weight * compose
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 100 == 0 or step == recipe.steps - 1:
            log(f'detector step {step}/{recipe.steps} loss {loss.item():.3f} (class {classification.item():.3f}, '
                f'L1 {l1.item():.3f}, GIoU {giou.item():.3f}, compose {compose.item():.3f}), '
                f'{time.monotonic() - start:.0f} s')
    model.eval()
    make_tiny_owl(model_dir, corpus(), model=model, preprocessor=owl_preprocessor_config('owlvit', IMAGE_SIZE))
    (model_dir / 'training.json').write_text(json.dumps(
        {'recipe': recipe.__dict__, 'held_out_labels': list(HELD_OUT_LABELS), 'seen_labels': list(SEEN_LABELS),
         'train_seconds': round(time.monotonic() - start, 1)}, indent=2))
    return model_dir


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_train_detector', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--out', type=Path, required=True, help='directory for tiny_owl/')
    defaults = DetectorRecipe()
    parser.add_argument('--steps', type=int, default=defaults.steps)
    parser.add_argument('--batch', type=int, default=defaults.batch)
    parser.add_argument('--lr', type=float, default=defaults.lr)
    parser.add_argument('--scenes', type=int, default=defaults.scenes)
    parser.add_argument('--zoom-fraction', type=float, default=defaults.zoom_fraction)
    parser.add_argument('--attribute-queries', action=argparse.BooleanOptionalAction,
                        default=defaults.attribute_queries)
    parser.add_argument('--text-layers', type=int, default=defaults.text_layers)
    parser.add_argument('--compose-weight', type=float, default=defaults.compose_weight)
    parser.add_argument('--seed', type=int, default=defaults.seed)
    parser.add_argument('--threads', type=int, default=defaults.threads)
    args = parser.parse_args(argv)
    recipe = DetectorRecipe(steps=args.steps, batch=args.batch, lr=args.lr, scenes=args.scenes,
                            zoom_fraction=args.zoom_fraction, attribute_queries=args.attribute_queries,
                            text_layers=args.text_layers, compose_weight=args.compose_weight, seed=args.seed,
                            threads=args.threads)

    def log(message: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)

    model_dir = train_detector(args.out, recipe, log)
    log(f'wrote {model_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
