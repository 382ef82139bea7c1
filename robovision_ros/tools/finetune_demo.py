"""robovision_finetune_demo: teach the embedded models colours and objects they never saw, and write docs/finetuning.md.

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


def make_scene_folder(out: Path, per_label: int, seed: int = TRAIN_SEED,
                      labels: Sequence[str] = ALL_LABELS) -> Path:
    """DIR/<colour>_<kind>/NNN.png: `per_label` single-object scenes per label (seeded)."""
    import cv2

    generator = SceneGenerator(seed, *SCENE_HW, 1, 1, colours=list(ALL_COLOURS), kinds=ALL_OBJECTS)
    index = 0
    for label in labels:
        folder = out / label.replace(' ', '_')
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_label):
            scene = generator.scene(index, [tuple(label.split())])
            index += 1
            cv2.imwrite(str(folder / f'{n:03d}.png'), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    return out


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


def heldout_classification(model: str, labels: Sequence[str], per_label: int = 10,
                           seed: int = HELDOUT_SEED) -> float:
    """ViT head accuracy on held-out single-object scenes of `labels`."""
    from robovision_ros.encoder import PerceptionEncoder

    encoder = PerceptionEncoder(model, 'onnxruntime', 'cpu', 'fp32')
    try:
        generator = SceneGenerator(seed, *SCENE_HW, 1, 1, colours=list(ALL_COLOURS), kinds=ALL_OBJECTS)
        correct = total = 0
        for i, label in enumerate(labels):
            for n in range(per_label):
                features, _ = encoder.encode_images([generator.scene(i * 1000 + n, [tuple(label.split())]).image])
                correct += encoder.classify(features[0]).best_label == label
                total += 1
        return correct / total
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


def run_demo(work: Path, doc: Optional[Path], per_label: int = 16, clip_steps: int = 600, vit_steps: int = 600,
             lora_rank: int = 4) -> dict[str, Any]:
    """Everything the doc's table reports, measured now."""
    data = make_scene_folder(work / 'data', per_label)
    results: dict[str, Any] = {'per_label': per_label, 'labels': len(ALL_LABELS), 'new_labels': len(NEW_LABELS)}
    old_labels = tuple(f'{c} {k}' for c in COLOURS for k in OBJECTS)
    base_clip, base_vit = 'embedded:tiny_clip', 'embedded:tiny_vit'
    results['clip_base'] = {'new_top1': heldout_top1(base_clip, NEW_LABELS, ALL_LABELS),
                            'old_top1_all_labels': heldout_top1(base_clip, old_labels, ALL_LABELS),
                            'latency_ms': inference_ms(base_clip)}
    results['vit_base'] = {'latency_ms': inference_ms(base_vit)}
    for name, model, steps in (('clip', base_clip, clip_steps), ('vit', base_vit, vit_steps)):
        for method in ('lora', 'adapter'):
            out = work / f'{name}_{method}'
            options = FinetuneOptions(method=method, rank=lora_rank, alpha=2.0 * lora_rank, steps=steps, seed=0,
                                      heldout_scenes=120 if name == 'clip' else 80)
            report = finetune(model, data, out, options, progress=False)
            entry = {key: report[key] for key in ('trainable_params', 'total_params', 'adapter_bytes',
                                                  'base_model_bytes', 'adapter_fraction_of_model', 'training_s',
                                                  'val_accuracy_after', 'heldout_before', 'heldout_after')}
            entry['latency_ms'] = inference_ms(str(out))
            if name == 'clip':
                entry['new_top1'] = heldout_top1(str(out), NEW_LABELS, ALL_LABELS)
                entry['old_top1_all_labels'] = heldout_top1(str(out), old_labels, ALL_LABELS)
            else:
                entry['heldout_accuracy'] = heldout_classification(str(out), ALL_LABELS)
                entry['linear_probe_val_accuracy'] = report['val_accuracy_linear_probe']
            results[f'{name}_{method}'] = entry
    (work / 'results.json').write_text(json.dumps(results, indent=2))
    if doc is not None:
        doc.write_text(render_doc(results))
    return results


def render_doc(r: dict[str, Any]) -> str:
    """docs/finetuning.md from the measured results."""
    def pct(x: float) -> str:
        return f'{100 * x:.1f} %'

    base = r['clip_base']
    lines = ['# Fine-tuning the embedded models on new objects', '',
             'Measured by `robovision_finetune_demo` (robovision_ros/tools/finetune_demo.py) on '
             f'{platform.machine()}, torch pinned to 2 CPU threads. Training data: an image folder of '
             f"{r['per_label']} generated single-object scenes per label for {r['labels']} labels (colours red, "
             'green, blue, yellow + new purple, orange; objects cup, bottle, box, plate, ball + new can, mug; '
             f"{r['new_labels']} labels are new), 20 % held back for validation. Evaluation on held-out scenes "
             '(other seeds), through the encoder the nodes use (ONNX Runtime, after export).', '',
             '## CLIP (tiny_clip)', '',
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
        '## ViT (tiny_vit): classification head on the CLS token', '',
        '| | frozen backbone + linear head | LoRA (merged) + head | bottleneck adapters + head |',
        '|---|---|---|---|']
    lora, adapter = r['vit_lora'], r['vit_adapter']
    lines += [
        f"| validation accuracy ({r['labels']} classes) | {pct(lora['linear_probe_val_accuracy'])} | "
        f"{pct(lora['val_accuracy_after'])} | {pct(adapter['val_accuracy_after'])} |",
        f"| held-out scenes accuracy | - | {pct(lora['heldout_accuracy'])} | {pct(adapter['heldout_accuracy'])} |",
        f"| old world colour separation of the CLS feature (before: {held(lora, 'colour_centroid_accuracy', 'before')})"
        f" | - | {held(lora, 'colour_centroid_accuracy')} | {held(adapter, 'colour_centroid_accuracy')} |",
        f"| trainable parameters | - | {lora['trainable_params']:,} | {adapter['trainable_params']:,} |",
        f"| adapter bytes | - | {lora['adapter_bytes']:,} | {adapter['adapter_bytes']:,} |",
        f"| training time | - | {lora['training_s']:.0f} s | {adapter['training_s']:.0f} s |",
        f"| image encoder latency after export (ms, median; base {r['vit_base']['latency_ms']:.2f}) | - | "
        f"{lora['latency_ms']:.2f} | {adapter['latency_ms']:.2f} |", '',
        'LoRA is merged into the weights, so the exported graph is the base graph: no latency is added. Bottleneck '
        'adapters add two small matmuls per transformer block. The LoRA adapter bytes count the adapter alone '
        '(`lora_adapter/`; for the ViT it includes the new head).', '']
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_finetune_demo', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--work', type=Path, default=Path('/tmp/robovision_finetune_demo'))
    parser.add_argument('--doc', type=Path, default=Path('docs/finetuning.md'))
    parser.add_argument('--per-label', type=int, default=16)
    parser.add_argument('--clip-steps', type=int, default=600)
    parser.add_argument('--vit-steps', type=int, default=600)
    parser.add_argument('--lora-rank', type=int, default=4)
    args = parser.parse_args(argv)
    results = run_demo(args.work, args.doc, args.per_label, args.clip_steps, args.vit_steps, args.lora_rank)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
