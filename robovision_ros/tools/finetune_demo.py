# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_finetune_demo: teach the embedded models colours and objects they never saw, and write docs/finetuning.md.

    robovision_finetune_demo [--work /tmp/robovision_finetune_demo] [--doc docs/finetuning.md]

Renders an image folder of single-object scenes over the old and new world (purple/orange, can/mug; see
`robovision_ros.synthetic.scenes`), fine-tunes tiny_clip and tiny_vit with LoRA and with bottleneck adapters through
`robovision_finetune`, evaluates on held-out scenes (other seeds), and writes the measured table.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from robovision_ros.synthetic.scenes import ALL_COLOURS, ALL_OBJECTS, COLOURS, OBJECTS, SceneGenerator
from robovision_ros.tools.finetune import FinetuneOptions, finetune

TRAIN_SEED = 7100
HELDOUT_SEED = 9300  # disjoint from training (seed*1000+{0,500}), evaluation (9001, 9002, 9100) and TRAIN_SEED
SCENE_HW = (240, 320)
ALL_LABELS = tuple(f'{c} {k}' for c in ALL_COLOURS for k in ALL_OBJECTS)
NEW_LABELS = tuple(label for label in ALL_LABELS if label.split()[0] not in COLOURS
                   or label.split()[1] not in OBJECTS)


def make_scene_folder(out: Path, per_label: int, seed: int = TRAIN_SEED, labels: Sequence[str] = ALL_LABELS,
                      by_kind: bool = False) -> Path:
    """
    Render `per_label` single-object scenes per label (seeded) into an image folder.

    DIR/<colour>_<kind>/NNN.png, or with `by_kind` DIR/<kind>/<colour>_NNN.png (one class per object kind, every
    colour in it).
    """
    import cv2

    generator = SceneGenerator(seed, *SCENE_HW, 1, 1, colours=list(ALL_COLOURS), kinds=ALL_OBJECTS)
    index = 0
    for label in labels:
        colour, kind = label.split()
        folder = out / (kind if by_kind else label.replace(' ', '_'))
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_label):
            scene = generator.scene(index, [(colour, kind)])
            index += 1
            name = f'{colour}_{n:03d}.png' if by_kind else f'{n:03d}.png'
            cv2.imwrite(str(folder / name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return out


def heldout_scenes(labels: Sequence[str], per_label: int = 10, seed: int = HELDOUT_SEED) -> list[tuple[str, Any]]:
    """Return (label, RGB image) of held-out single-object scenes, `per_label` of each label."""
    generator = SceneGenerator(seed, *SCENE_HW, 1, 1, colours=list(ALL_COLOURS), kinds=ALL_OBJECTS)
    return [(label, generator.scene(i * 1000 + n, [tuple(label.split())]).image)
            for i, label in enumerate(labels) for n in range(per_label)]


def heldout_top1(model: str, labels: Sequence[str], vocabulary_labels: Sequence[str], per_label: int = 10,
                 seed: int = HELDOUT_SEED) -> float:
    """CLIP top-1 over `vocabulary_labels` on held-out single-object scenes of `labels` (encoder decode path)."""
    from robovision_ros.encoder import PerceptionEncoder
    from robovision_ros.synthetic.evaluation import DEFAULT_TEMPLATE

    encoder = PerceptionEncoder(model, 'onnxruntime', 'cpu', 'fp32')
    try:
        vocabulary = encoder.build_vocabulary(vocabulary_labels, [DEFAULT_TEMPLATE], 1)
        generator = SceneGenerator(seed, *SCENE_HW, 1, 1, colours=list(ALL_COLOURS), kinds=ALL_OBJECTS)
        correct = total = 0
        for i, label in enumerate(labels):
            for n in range(per_label):
                scene = generator.scene(i * 1000 + n, [tuple(label.split())])
                features, _ = encoder.encode_images([scene.image])
                correct += encoder.decode(features[0], vocabulary).best_label == label
                total += 1
        return correct / total
    finally:
        encoder.close()


def heldout_classification(model: str, labels: Sequence[str], per_label: int = 10, seed: int = HELDOUT_SEED,
                           by_kind: bool = False) -> float:
    """Return the ViT head's accuracy on held-out single-object scenes of `labels` (with `by_kind`: their kind)."""
    from robovision_ros.encoder import PerceptionEncoder

    encoder = PerceptionEncoder(model, 'onnxruntime', 'cpu', 'fp32')
    try:
        correct = 0
        scenes = heldout_scenes(labels, per_label, seed)
        for label, image in scenes:
            features, _ = encoder.encode_images([image])
            correct += encoder.classify(features[0]).best_label == (label.split()[1] if by_kind else label)
        return correct / len(scenes)
    finally:
        encoder.close()


def inference_ms(model: str, runs: int = 50) -> float:
    """Median onnxruntime image-encoder latency (one 240x320 frame, preprocessing included) after export."""
    from robovision_ros.encoder import PerceptionEncoder

    encoder = PerceptionEncoder(model, 'onnxruntime', 'cpu', 'fp32')
    try:
        image = SceneGenerator(1, *SCENE_HW).scene(0).image
        encoder.warm_up(3)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            encoder.encode_images([image])
            times.append((time.perf_counter() - start) * 1e3)
        return float(np.median(times))
    finally:
        encoder.close()


# The recipes the doc reports (robovision_finetune's defaults unless set here). The ViT learns the object KIND
# (7 classes) across all six colours: a task where a linear head on the frozen CLS feature falls short.
CLIP_RECIPES = {'lora': FinetuneOptions(method='lora'), 'adapter': FinetuneOptions(method='adapter')}
VIT_RECIPES = {'lora': FinetuneOptions(method='lora', target_modules=('q_proj', 'v_proj', 'fc1', 'fc2'), steps=2400,
                                       lr=5e-3),
               'adapter': FinetuneOptions(method='adapter', steps=2400, lr=5e-3)}
TARGETS = {'new_top1': 0.90, 'old_drop': 0.02, 'adapter_fraction': 0.05, 'training_s': 300.0, 'vit_top1': 0.90}


def run_demo(work: Path, doc: Optional[Path], per_label: int = 16, kind_per_label: int = 32,
             clip_steps: Optional[int] = None, vit_steps: Optional[int] = None) -> dict[str, Any]:
    """
    Measure everything the doc's tables report.

    Writes results.json in `work`, and with `doc` the doc and <doc>_results.json next to it.
    """
    from dataclasses import asdict, replace

    from robovision_ros.model_dir import read_model_info
    from robovision_ros.tools.finetune import linear_probe_accuracies, load_dataset

    data = make_scene_folder(work / 'data', per_label)
    kinds = make_scene_folder(work / 'kinds', kind_per_label, by_kind=True)
    import torch

    results: dict[str, Any] = {'torch_threads': min(torch.get_num_threads(), 2), 'per_label': per_label,
                               'kind_per_label': kind_per_label, 'labels': len(ALL_LABELS),
                               'new_labels': len(NEW_LABELS),
                               'kinds': len(ALL_OBJECTS), 'targets': TARGETS}
    old_labels = tuple(f'{c} {k}' for c in COLOURS for k in OBJECTS)
    base_clip, base_vit = 'embedded:tiny_clip', 'embedded:tiny_vit'
    results['clip_base'] = {'new_top1': heldout_top1(base_clip, NEW_LABELS, ALL_LABELS),
                            'old_top1_all_labels': heldout_top1(base_clip, old_labels, ALL_LABELS),
                            'latency_ms': inference_ms(base_clip)}
    kind_set = load_dataset(kinds)
    heldout = [(image, kind_set.labels.index(label.split()[1])) for label, image in heldout_scenes(ALL_LABELS)]
    probe = linear_probe_accuracies(read_model_info(base_vit), kind_set, heldout)
    results['vit_base'] = {'latency_ms': inference_ms(base_vit), 'linear_probe_val_accuracy': probe['val'],
                           'linear_probe_heldout_accuracy': probe['heldout']}
    for name, model, folder, recipes, steps in (('clip', base_clip, data, CLIP_RECIPES, clip_steps),
                                                ('vit', base_vit, kinds, VIT_RECIPES, vit_steps)):
        for method, recipe in recipes.items():
            out = work / f'{name}_{method}'
            options = replace(recipe, steps=steps or recipe.steps, heldout_scenes=120 if name == 'clip' else 80)
            report = finetune(model, folder, out, options, progress=False)
            entry = {key: report[key] for key in ('trainable_params', 'total_params', 'adapter_bytes',
                                                  'base_model_bytes', 'adapter_fraction_of_model', 'training_s',
                                                  'val_accuracy_after', 'heldout_before', 'heldout_after')}
            entry['options'] = asdict(options)
            entry['latency_ms'] = inference_ms(str(out))
            if name == 'clip':
                entry['new_top1'] = heldout_top1(str(out), NEW_LABELS, ALL_LABELS)
                entry['old_top1_all_labels'] = heldout_top1(str(out), old_labels, ALL_LABELS)
            else:
                entry['heldout_accuracy'] = heldout_classification(str(out), ALL_LABELS, by_kind=True)
            results[f'{name}_{method}'] = entry
    results['status'] = status(results)
    (work / 'results.json').write_text(json.dumps(results, indent=2))
    if doc is not None:
        doc.write_text(render_doc(results))
        doc.with_name(f'{doc.stem}_results.json').write_text(json.dumps(results, indent=2) + '\n')
    return results


def status(r: dict[str, Any]) -> dict[str, Any]:
    """Check each issue target against the measured results; return {target: {method: met}} and 'all'."""
    base = r['clip_base']
    met: dict[str, Any] = {}
    for method in ('lora', 'adapter'):
        clip, vit = r[f'clip_{method}'], r[f'vit_{method}']
        before, after = clip['heldout_before'], clip['heldout_after']
        old_drops = [base['old_top1_all_labels'] - clip['old_top1_all_labels']] + [
            before[key] - after[key] for key in ('zero_shot_top1', 'presence_precision', 'presence_recall')]
        checks = {
            'clip new concepts top-1 >= 90 %': clip['new_top1'] >= TARGETS['new_top1'],
            'clip old concepts within 2 points': max(old_drops) <= TARGETS['old_drop'] + 1e-9,
            'clip adapter <= 5 % of the model': clip['adapter_fraction_of_model'] <= TARGETS['adapter_fraction'],
            'clip training <= 5 min': clip['training_s'] <= TARGETS['training_s'],
            'vit held-out >= 90 % and above frozen + linear head': (
                vit['heldout_accuracy'] >= TARGETS['vit_top1']
                and vit['heldout_accuracy'] > r['vit_base']['linear_probe_heldout_accuracy']),
        }
        for target, ok in checks.items():
            met.setdefault(target, {})[method] = bool(ok)
    met['all'] = all(all(v.values()) for v in met.values())
    return met


def status_line(r: dict[str, Any]) -> str:
    """Say which of the issue's targets the measured results meet, per method."""
    met, missed = [], []
    for target, by_method in r['status'].items():
        if target == 'all':
            continue
        methods = [m for m in ('lora', 'adapter') if by_method[m]]
        if len(methods) == 2:
            met.append(f'{target} (both methods)')
        elif methods:
            met.append(f'{target} ({methods[0]} only)')
        else:
            missed.append(target)
    head = 'all of the issue\'s targets are met' if r['status']['all'] else 'not all of the issue\'s targets are met'
    return (f'**Status (measured by the run below): {head}.** Met: {"; ".join(met) or "none"}. '
            f'Not met: {"; ".join(missed) or "none"}.')


def render_doc(r: dict[str, Any]) -> str:
    """Render docs/finetuning.md from the measured results."""
    def pct(x: float) -> str:
        return f'{100 * x:.1f} %'

    def recipe(entry: dict[str, Any], default_targets: str) -> str:
        o = entry['options']
        targets = ', '.join(o['target_modules'] or [default_targets])
        shape = (f"LoRA rank {o['rank']} (alpha {o['alpha']:g}) on {targets}" if o['method'] == 'lora'
                 else f"bottleneck {o['bottleneck']} adapters")
        return f"{shape}, {o['steps']} steps, lr {o['lr']:g}, batch {o['batch']}"

    base = r['clip_base']
    lines = ['# Fine-tuning the embedded models on new objects', '',
             'Measured by `robovision_finetune_demo` (robovision_ros/tools/finetune_demo.py) on '
             f"{platform.machine()}, torch pinned to {r['torch_threads']} CPU thread(s). Training data: an image "
             'folder of '
             f"{r['per_label']} generated single-object scenes per label for {r['labels']} labels (colours red, "
             'green, blue, yellow + new purple, orange; objects cup, bottle, box, plate, ball + new can, mug; '
             f"{r['new_labels']} labels are new), 20 % held back for validation. Evaluation on held-out scenes "
             '(other seeds), through the encoder the nodes use (ONNX Runtime, after export). Training times are '
             'wall-clock on a machine shared with other jobs.', '',
             status_line(r), '',
             '## CLIP (tiny_clip)', '',
             f"Recipes: LoRA: {recipe(r['clip_lora'], 'fc1, fc2, token_embedding')}; adapters: "
             f"{recipe(r['clip_adapter'], '')}. Both with the "
             'preservation term and mirrored/shifted variants (robovision_finetune defaults).', '',
             '| | base | LoRA (merged) | bottleneck adapters |', '|---|---|---|---|']
    lora, adapter = r['clip_lora'], r['clip_adapter']

    def held(entry: dict[str, Any], key: str, when: str = 'after') -> str:
        return pct(entry[f'heldout_{when}'][key])

    lines += [
        f"| new concepts: top-1 among all {r['labels']} labels | {pct(base['new_top1'])} | "
        f"{pct(lora['new_top1'])} | {pct(adapter['new_top1'])} |",
        f"| old concepts: top-1 among all {r['labels']} labels | {pct(base['old_top1_all_labels'])} | "
        f"{pct(lora['old_top1_all_labels'])} | {pct(adapter['old_top1_all_labels'])} |",
        f"| old world, robovision_evaluate zero-shot top-1 (20 labels) | {held(lora, 'zero_shot_top1', 'before')} | "
        f"{held(lora, 'zero_shot_top1')} | {held(adapter, 'zero_shot_top1')} |",
        f"| old world, presence precision | {held(lora, 'presence_precision', 'before')} | "
        f"{held(lora, 'presence_precision')} | {held(adapter, 'presence_precision')} |",
        f"| old world, presence recall | {held(lora, 'presence_recall', 'before')} | "
        f"{held(lora, 'presence_recall')} | {held(adapter, 'presence_recall')} |",
        f"| old world, localisation hit | {held(lora, 'localization_hit', 'before')} | "
        f"{held(lora, 'localization_hit')} | {held(adapter, 'localization_hit')} |",
        f"| trainable parameters | - | {lora['trainable_params']:,} | {adapter['trainable_params']:,} |",
        f"| adapter bytes (share of the {lora['base_model_bytes']:,}-byte model) | - | {lora['adapter_bytes']:,} "
        f"({pct(lora['adapter_fraction_of_model'])}) | {adapter['adapter_bytes']:,} "
        f"({pct(adapter['adapter_fraction_of_model'])}) |",
        f"| training time | - | {lora['training_s']:.0f} s | {adapter['training_s']:.0f} s |",
        f"| image encoder latency after export (ms, median) | {base['latency_ms']:.2f} | {lora['latency_ms']:.2f} | "
        f"{adapter['latency_ms']:.2f} |", '',
        f"## ViT (tiny_vit): object kind ({r['kinds']} classes) across all six colours", '',
        'A classification head on the CLS token learns the object kind (cup, bottle, box, plate, ball, can, mug) '
        f"whatever its colour, from {r['kind_per_label']} scenes per colour and kind; the new colours and the new "
        'kinds are in it. The baseline is the frozen backbone with a linear head on its global embedding (trained on '
        'the same split). Recipes: LoRA: '
        f"{recipe(r['vit_lora'], 'the attention query, value')}; adapters: {recipe(r['vit_adapter'], '')}.", '',
        '| | frozen backbone + linear head | LoRA (merged) + head | bottleneck adapters + head |',
        '|---|---|---|---|']
    lora, adapter, vit_base = r['vit_lora'], r['vit_adapter'], r['vit_base']
    lines += [
        f"| validation accuracy ({r['kinds']} classes) | {pct(vit_base['linear_probe_val_accuracy'])} | "
        f"{pct(lora['val_accuracy_after'])} | {pct(adapter['val_accuracy_after'])} |",
        f"| held-out scenes accuracy ({r['labels']} colour-kind pairs x 10) | "
        f"{pct(vit_base['linear_probe_heldout_accuracy'])} | {pct(lora['heldout_accuracy'])} | "
        f"{pct(adapter['heldout_accuracy'])} |",
        f"| old world colour separation of the CLS feature (before: {held(lora, 'colour_centroid_accuracy', 'before')})"
        f" | - | {held(lora, 'colour_centroid_accuracy')} | {held(adapter, 'colour_centroid_accuracy')} |",
        f"| trainable parameters | - | {lora['trainable_params']:,} | {adapter['trainable_params']:,} |",
        f"| adapter bytes | - | {lora['adapter_bytes']:,} | {adapter['adapter_bytes']:,} |",
        f"| training time | - | {lora['training_s']:.0f} s | {adapter['training_s']:.0f} s |",
        f"| image encoder latency after export (ms, median; base {vit_base['latency_ms']:.2f}) | - | "
        f"{lora['latency_ms']:.2f} | {adapter['latency_ms']:.2f} |", '',
        'LoRA is merged into the weights, so the exported graph is the base graph: no latency is added. Bottleneck '
        'adapters add two small matmuls per transformer block. The LoRA adapter bytes count the adapter alone '
        '(`lora_adapter/`; for the ViT it includes the new head).', '']
    return '\n'.join(lines + list(EARLIER_RUNS))


# Settings tried before choosing the recipes above: measured in torch with robovision_finetune's Python API on held-out
# scenes (6 per colour-kind pair, HELDOUT_SEED), one torch thread on the shared 2-core machine; not rerun by the demo.
EARLIER_RUNS = (
    '## Other settings tried (earlier runs, not remeasured by this demo)', '',
    'Measured in torch (not through ONNX) on 6 held-out scenes per colour-kind pair, on the same shared machine.', '',
    '- CLIP, 16 scenes per label: LoRA rank 4 on fc1/fc2/token_embedding, 1500 steps at lr 3e-3 (instead of 600 at '
    '2e-3): new concepts 75.0 % (600 steps: 73.5 %), old concepts 95.8 %, old-world zero-shot 100 %, presence '
    'precision 95.9 % / recall 93.1 %, 92.7 % on its own training images, 315 s. More steps fit the training images '
    'better but barely move the held-out new concepts: the gap is generalisation, not optimisation; the 600-step '
    'default was kept. 19 scenes per label (798 images) at the default 600 steps: new concepts 73.5 %, old 95.0 %.',
    '- ViT kind task, 16 scenes per colour-kind: LoRA rank 4 on q/v, 600 steps: 82.5 % (lr 3e-3), 81.3 % (lr 1e-2); '
    'on q/v/fc1/fc2 at lr 5e-3: 84.1 %; adapters 600 steps: 81.7 % (lr 3e-3), 82.5 % (lr 1e-2); frozen backbone + '
    'linear head: 72.9 % on the validation split.',
    '- ViT kind task, 32 scenes per colour-kind: LoRA rank 4 on q/v/fc1/fc2, 1200 steps at lr 5e-3: 88.9 % held-out '
    '(validation 87.6 %); frozen backbone + linear head 81.6 % on the validation split; 2400 steps: 91.3 % held-out '
    '(validation 89.5 %), 255 s. More data and more steps helped most.', '')


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_finetune_demo', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--work', type=Path, default=Path('/tmp/robovision_finetune_demo'))
    parser.add_argument('--doc', type=Path, default=Path('docs/finetuning.md'))
    parser.add_argument('--per-label', type=int, default=16, help='CLIP: scenes per colour and kind')
    parser.add_argument('--kind-per-label', type=int, default=32, help='ViT: scenes per colour and kind')
    parser.add_argument('--clip-steps', type=int, default=None, help="override the CLIP recipes' steps")
    parser.add_argument('--vit-steps', type=int, default=None, help="override the ViT recipes' steps")
    args = parser.parse_args(argv)
    results = run_demo(args.work, args.doc, args.per_label, args.kind_per_label, args.clip_steps,
                       args.vit_steps)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
