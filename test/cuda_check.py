# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
One-shot check of the CUDA paths (run by hand on a machine with a GPU; pytest does not collect it).

    PYTHONPATH=. python test/cuda_check.py [OUT_DIR]

Builds a tiny CLIP and a ViT-B/32-sized CLIP (random weights), then compares torch CUDA fp32/fp16/bf16 (with
and without CUDA graphs, with GPU preprocessing) against CPU fp32, and times them. Prints one JSON report.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def structured(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        image = np.empty((480, 640, 3), np.uint8)
        image[:] = rng.integers(60, 200, 3)
        for _ in range(4):
            y, x = rng.integers(0, 400), rng.integers(0, 560)
            image[y:y + rng.integers(20, 200), x:x + rng.integers(20, 200)] = rng.integers(0, 256, 3)
        images.append(image)
    return images


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))).min())


def main() -> int:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from robovision_ros.encoder import PerceptionEncoder
    from robovision_ros.synthetic.tiny_models import make_tiny_clip

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    report: dict = {'torch': torch.__version__, 'gpu': torch.cuda.get_device_name()}
    tmp = Path(tempfile.mkdtemp())
    corpus = ['a photo of a red cup', 'a blue bottle', 'a green ball']
    tiny = make_tiny_clip(tmp / 'tiny', corpus, image_size=64, patch_size=8)
    torch.manual_seed(0)
    b32 = make_tiny_clip(tmp / 'b32', corpus, model=CLIPModel(CLIPConfig()), max_length=77)
    images = structured(4)
    for name, model_dir in (('tiny', tiny), ('clip_b32_random', b32)):
        reference = PerceptionEncoder(str(model_dir), 'torch', 'cpu', 'fp32')
        ref_feats, _ = reference.encode_images(images)
        ref_global = np.stack([f.global_embedding for f in ref_feats])
        ref_text = reference.encode_texts(corpus)
        for precision in ('fp32', 'fp16', 'bf16'):
            encoder = PerceptionEncoder(str(model_dir), 'torch', 'cuda', precision)
            for graphs in (False, True):
                encoder.backend.cuda_graphs = graphs
                feats, _ = encoder.encode_images(images)
                glob = np.stack([f.global_embedding for f in feats])
                times = []
                for _ in range(30):
                    torch.cuda.synchronize()
                    start = time.perf_counter()
                    _, timing = encoder.encode_images(images[:1])
                    times.append((time.perf_counter() - start) * 1e3)
                report[f'{name}/{precision}/graphs={graphs}'] = {
                    'image_cosine_vs_cpu_fp32': cosine(glob, ref_global),
                    'text_cosine_vs_cpu_fp32': cosine(encoder.encode_texts(corpus), ref_text),
                    'frame_ms_p50': float(np.median(times[5:])),
                    'gpu_preprocessing': encoder._device_preprocessing,
                }
            encoder.close()
        # GPU preprocessing (resize, crop, normalise on the device) against the PIL path.
        gpu = reference.preprocessor.torch_preprocess(images, 'cuda', torch.float32).cpu().numpy()
        difference = np.abs(gpu - reference.preprocessor(images))
        report[f'{name}/gpu_preprocess_abs_diff'] = {'mean': float(difference.mean()),
                                                     'p99': float(np.percentile(difference, 99))}
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / 'cuda_check.json').write_text(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
