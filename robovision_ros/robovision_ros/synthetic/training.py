# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_train: train the embedded tiny CLIP, tiny SigLIP and tiny ViT on generated tabletop scenes (2 CPU cores).

    robovision_train --out robovision_ros/robovision_ros/embedded_models [--models clip siglip vit] [--clip-steps N]
                     [--siglip-steps N] [--vit-steps N] [--seed S]

Seeded and reproducible for the same versions and thread count (torch pinned to 2 threads for CLIP and ViT, 1 for
SigLIP). The CLIP is trained for what the nodes do with it:
  * zero-shot: softmax over the 20 colour+object labels of logit_scale * cosine (soft targets for several objects);
  * presence: sigmoid(10 * (cosine - 0.25)) against the multi-hot ground truth, so 0.25 is the decision threshold;
  * localisation: the same presence loss per patch token, against which patches lie on which object.
The SigLIP has the same towers' sizes and data, and SigLIP's own objective instead of the three CLIP terms:
  * the sigmoid loss: every (image, label text) pair is its own binary decision on sigmoid(logit_scale * cosine +
    logit_bias) against the multi-hot ground truth (Zhai et al., "Sigmoid Loss for Language Image Pre-Training"),
    with the trained scale and bias; zero-shot is its argmax and presence its probability >= 0.5;
  * localisation: the same sigmoid decision per patch token (each token pooled alone by the attention-pooling
    head, as the family publishes patch features) against which patches lie on which object.
The ViT is trained as a multi-label colour+object classifier on its CLS token; only the encoder is saved.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from robovision_ros.model_dir import tokenize
from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig
from robovision_ros.synthetic.scenes import LABELS, SceneGenerator
from robovision_ros.synthetic.tiny_models import clip_preprocessor_config, make_tiny_siglip, make_tiny_vit, \
    save_clip_model, vit_preprocessor_config, write_clip_tokenizer

TEMPLATES = ('a photo of a {}.', 'a {}.', 'a {} on a table.', 'a photo of the {}.', 'there is a {}.')
PRESENCE_THRESHOLD = 0.25
PRESENCE_SHARPNESS = 10.0
TRAIN_SEED_OFFSET = 0  # training scenes use generator seeds seed*1000 + k; evaluation uses other seeds
IMAGE_SIZE = 64
PATCH_SIZE = 8
SCENE_HW = (120, 160)


@dataclass
class SceneBatchData:
    pixels: np.ndarray  # float32 [N, 3, S, S]
    present: np.ndarray  # float32 [N, L]
    patch_targets: np.ndarray  # float32 [N, grid*grid, L]


def corpus() -> list[str]:
    """Every prompt the models are trained with, plus the bare words: the tokenizer's training text."""
    words = [part for label in LABELS for part in label.split()]
    return [t.format(label) for t in TEMPLATES for label in LABELS] + words


def make_dataset(seed: int, count: int, preprocessor: ImagePreprocessor, min_objects: int = 1,
                 max_objects: int = 3, labels: Sequence[str] = LABELS) -> SceneBatchData:
    """Render `count` scenes and their targets at the model's input size."""
    generator = SceneGenerator(seed, *SCENE_HW, min_objects=min_objects, max_objects=max_objects)
    grid = IMAGE_SIZE // PATCH_SIZE
    centres = (np.arange(grid) + 0.5) * PATCH_SIZE
    pixels = np.empty((count, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    present = np.zeros((count, len(labels)), np.float32)
    patch_targets = np.zeros((count, grid * grid, len(labels)), np.float32)
    index = {label: i for i, label in enumerate(labels)}
    for n in range(count):
        scene = generator.scene(n)
        pixels[n] = preprocessor([scene.image])[0]
        geometry = preprocessor.geometry(scene.image.shape[:2])
        for obj in scene.objects:
            present[n, index[obj.label]] = 1.0
            for gy, cy in enumerate(centres):
                for gx, cx in enumerate(centres):
                    sy, sx = geometry.to_source(cy, cx)
                    if obj.contains(sx, sy):
                        patch_targets[n, gy * grid + gx, index[obj.label]] = 1.0
    return SceneBatchData(pixels, present, patch_targets)


def _schedule(step: int, steps: int, base_lr: float, warmup: int = 100) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    return base_lr * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(steps - warmup, 1)))


def train_clip(out_dir: Path, steps: int = 3000, seed: int = 0, scenes: int = 4000, batch: int = 64,
               lr: float = 1e-3, log: Callable[[str], None] = print) -> Path:
    import torch
    import torch.nn.functional as F
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(clip_preprocessor_config(IMAGE_SIZE)))
    start = time.monotonic()
    data = make_dataset(seed * 1000 + TRAIN_SEED_OFFSET, scenes, preprocessor)
    log(f'rendered {scenes} training scenes in {time.monotonic() - start:.0f} s')
    clip_dir = out_dir / 'tiny_clip'
    tokenizer = write_clip_tokenizer(clip_dir, corpus(), num_merges=300, max_length=16)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                           image_size=IMAGE_SIZE, patch_size=PATCH_SIZE),
        projection_dim=64)
    model = CLIPModel(config)
    tokens = [tokenize(tokenizer, [t.format(label) for label in LABELS], 16, 'pt') for t in TEMPLATES]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    pixels = torch.from_numpy(data.pixels)
    present = torch.from_numpy(data.present)
    patch_targets = torch.from_numpy(data.patch_targets)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.monotonic()
    for step in range(steps):
        for group in optimizer.param_groups:
            group['lr'] = _schedule(step, steps, lr)
        idx = torch.randint(0, len(pixels), (batch,), generator=generator)
        images, targets, patch_t = pixels[idx], present[idx], patch_targets[idx]
        flip = torch.rand(batch, generator=generator) < 0.5
        grid = IMAGE_SIZE // PATCH_SIZE
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        patch_t = torch.where(flip[:, None, None],
                              patch_t.view(batch, grid, grid, -1).flip(2).reshape(batch, grid * grid, -1), patch_t)
        images = images * (1 + 0.1 * (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5))
        template = int(torch.randint(0, len(TEMPLATES), (1,), generator=generator))
        vision = model.vision_model(pixel_values=images)
        image_emb = F.normalize(model.visual_projection(vision.pooler_output), dim=-1)
        patch_emb = F.normalize(model.visual_projection(model.vision_model.post_layernorm(
            vision.last_hidden_state[:, 1:])), dim=-1)
        ids, mask = tokens[template]
        text = model.text_model(input_ids=ids, attention_mask=mask)
        text_emb = F.normalize(model.text_projection(text.pooler_output), dim=-1)
        cosine = image_emb @ text_emb.T
        soft = targets / targets.sum(1, keepdim=True)
        zero_shot = -(soft * F.log_softmax(model.logit_scale.exp() * cosine, dim=1)).sum(1).mean()
        # Present labels are the minority (1-3 of 20): weight them so that recall at the threshold holds up in
        # scenes with several objects, where the image embedding sits between their texts.
        presence = F.binary_cross_entropy_with_logits(PRESENCE_SHARPNESS * (cosine - PRESENCE_THRESHOLD), targets,
                                                      pos_weight=torch.tensor(3.0))
        patch_cos = patch_emb @ text_emb.T
        # Few patches lie on an object: weight them up so that "nothing anywhere" is no cheap optimum.
        localisation = F.binary_cross_entropy_with_logits(
            PRESENCE_SHARPNESS * (patch_cos - PRESENCE_THRESHOLD), patch_t, pos_weight=torch.tensor(8.0))
        loss = zero_shot + 2.0 * presence + 0.5 * localisation
        _contrastive_step(model, optimizer, loss)
        if step % 100 == 0 or step == steps - 1:
            top1 = float((targets.gather(1, cosine.argmax(1, keepdim=True)) > 0).float().mean())
            log(f'clip step {step}/{steps} loss {loss.item():.3f} (zero-shot {zero_shot.item():.3f}, presence '
                f'{presence.item():.3f}, localisation {localisation.item():.3f}), batch top-1 {top1:.2f}, '
                f'{time.monotonic() - start:.0f} s')
    model.eval()
    return save_clip_model(clip_dir, model, IMAGE_SIZE)


def _contrastive_step(model: Any, optimizer: Any, loss: Any) -> None:
    """One optimizer step of a two-tower model: gradients clipped to norm 1, the logit scale kept in [1, 100]."""
    import torch

    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, np.log(100))


def train_siglip(out_dir: Path, steps: int = 3000, seed: int = 0, scenes: int = 4000, batch: int = 32,
                 lr: float = 1e-3, threads: int = 1, log: Callable[[str], None] = print) -> Path:
    """
    Train the tiny SigLIP with the sigmoid loss on the tiny CLIP's scenes.

    One torch thread by default: on a machine shared with other jobs, two threads spent most of each step
    spin-waiting for each other (measured 4.6 s a step with two, 0.7 s with one, under a load of 10 on 2 cores).
    Reproducible for the same versions and thread count.
    """
    import torch
    import torch.nn.functional as F
    from transformers import SiglipConfig, SiglipModel

    from robovision_ros.families.siglip import pooled_per_token

    torch.manual_seed(seed + 2)
    torch.set_num_threads(threads)
    # SigLIP's processor squashes the frame to the square input (no crop); the scenes keep their objects central.
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(vit_preprocessor_config(IMAGE_SIZE)))
    start = time.monotonic()
    data = make_dataset(seed * 1000 + TRAIN_SEED_OFFSET, scenes, preprocessor)
    log(f'rendered {scenes} training scenes in {time.monotonic() - start:.0f} s')
    siglip_dir = out_dir / 'tiny_siglip'
    tokenizer = write_clip_tokenizer(siglip_dir, corpus(), num_merges=300, max_length=16)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, projection_size=96,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id),
        vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                           image_size=IMAGE_SIZE, patch_size=PATCH_SIZE))
    model = SiglipModel(config)
    present_fraction = float(data.present.mean())
    with torch.no_grad():
        # SigLIP's scale initialisation (t' = log 10); the bias at the log-odds of a label being present. The
        # paper's b = -10 is that prior for its batches of 32k texts with one match each; here about 2 of 20
        # labels are present, and -10 cost most of a short run to undo.
        model.logit_scale.fill_(float(np.log(10.0)))
        model.logit_bias.fill_(float(np.log(present_fraction / (1 - present_fraction))))
    tokens = [tokenize(tokenizer, [t.format(label) for label in LABELS], 16, 'pt') for t in TEMPLATES]
    # No weight decay on the scale and bias: decay would pull the scale towards exp(0) = 1.
    scalars = [model.logit_scale, model.logit_bias]
    weights = [p for p in model.parameters() if all(p is not s for s in scalars)]
    optimizer = torch.optim.AdamW([{'params': weights}, {'params': scalars, 'weight_decay': 0.0}], lr=lr,
                                  weight_decay=0.05)
    pixels = torch.from_numpy(data.pixels)
    present = torch.from_numpy(data.present)
    patch_targets = torch.from_numpy(data.patch_targets)
    generator = torch.Generator().manual_seed(seed + 2)
    grid = IMAGE_SIZE // PATCH_SIZE
    model.train()
    start = time.monotonic()
    for step in range(steps):
        for group in optimizer.param_groups:
            group['lr'] = _schedule(step, steps, lr)
        idx = torch.randint(0, len(pixels), (batch,), generator=generator)
        images, targets, patch_t = pixels[idx], present[idx], patch_targets[idx]
        flip = torch.rand(batch, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        patch_t = torch.where(flip[:, None, None],
                              patch_t.view(batch, grid, grid, -1).flip(2).reshape(batch, grid * grid, -1), patch_t)
        images = images * (1 + 0.1 * (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5))
        template = int(torch.randint(0, len(TEMPLATES), (1,), generator=generator))
        vision = model.vision_model(pixel_values=images)
        image_emb = F.normalize(vision.pooler_output, dim=-1)
        patch_emb = F.normalize(pooled_per_token(model.vision_model.head, vision.last_hidden_state), dim=-1)
        ids, mask = tokens[template]
        text_emb = F.normalize(model.text_model(input_ids=ids, attention_mask=mask).pooler_output, dim=-1)
        scale, bias = model.logit_scale.exp(), model.logit_bias
        logits = scale * (image_emb @ text_emb.T) + bias
        # The sigmoid loss over every (image, label) pair, summed over labels and averaged over images as SigLIP
        # does; present labels (1-3 of 20) weighted up so that recall holds in scenes with several objects.
        sigmoid = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=torch.tensor(3.0),
                                                     reduction='sum') / batch
        patch_logits = scale * (patch_emb @ text_emb.T) + bias
        localisation = F.binary_cross_entropy_with_logits(patch_logits, patch_t, pos_weight=torch.tensor(8.0))
        loss = sigmoid + 2.0 * localisation
        _contrastive_step(model, optimizer, loss)
        if step % 100 == 0 or step == steps - 1:
            top1 = float((targets.gather(1, logits.argmax(1, keepdim=True)) > 0).float().mean())
            log(f'siglip step {step}/{steps} loss {loss.item():.3f} (sigmoid {sigmoid.item():.3f}, localisation '
                f'{localisation.item():.3f}), scale {scale.item():.1f} bias {bias.item():.2f}, batch top-1 '
                f'{top1:.2f}, {time.monotonic() - start:.0f} s')
    model.eval()
    return make_tiny_siglip(siglip_dir, corpus(), image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_merges=300,
                            max_length=16, model=model)


def train_vit(out_dir: Path, steps: int = 1500, seed: int = 0, scenes: int = 3000, batch: int = 64,
              log: Callable[[str], None] = print) -> Path:
    import torch
    import torch.nn.functional as F
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed + 1)
    torch.set_num_threads(2)
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(vit_preprocessor_config(IMAGE_SIZE)))
    data = make_dataset(seed * 1000 + 500, scenes, preprocessor)
    model = ViTModel(ViTConfig(hidden_size=96, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
                               image_size=IMAGE_SIZE, patch_size=PATCH_SIZE), add_pooling_layer=False)
    head = torch.nn.Linear(96, len(LABELS))
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=2e-3, weight_decay=0.05)
    pixels, present = torch.from_numpy(data.pixels), torch.from_numpy(data.present)
    generator = torch.Generator().manual_seed(seed + 1)
    start = time.monotonic()
    for step in range(steps):
        for group in optimizer.param_groups:
            group['lr'] = _schedule(step, steps, 2e-3)
        idx = torch.randint(0, len(pixels), (batch,), generator=generator)
        images = pixels[idx]
        flip = torch.rand(batch, generator=generator) < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        cls = model(pixel_values=images).last_hidden_state[:, 0]
        loss = F.binary_cross_entropy_with_logits(head(cls), present[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == steps - 1:
            log(f'vit step {step}/{steps} loss {loss.item():.4f} {time.monotonic() - start:.0f} s')
    model.eval()
    return make_tiny_vit(out_dir / 'tiny_vit', image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, model=model)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='robovision_train', description=__doc__.strip().split('\n')[0])
    parser.add_argument('--out', type=Path, required=True,
                        help='directory for tiny_clip/, tiny_siglip/ and tiny_vit/')
    parser.add_argument('--models', nargs='+', choices=('clip', 'siglip', 'vit'), default=['clip', 'siglip', 'vit'],
                        help='which models to train (default: all three)')
    parser.add_argument('--clip-steps', type=int, default=3000)
    parser.add_argument('--siglip-steps', type=int, default=3000)
    parser.add_argument('--vit-steps', type=int, default=1500)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)

    from robovision_ros.synthetic.evaluation import evaluate_clip

    written = []
    for name, train, steps in (('clip', train_clip, args.clip_steps), ('siglip', train_siglip, args.siglip_steps)):
        if name in args.models:
            model_dir = train(args.out, steps, args.seed, log=log)
            report = evaluate_clip(str(model_dir))
            (model_dir / 'quality.json').write_text(json.dumps(report, indent=2))
            log(f'tiny_{name} quality on held-out scenes: {json.dumps(report)}')
            written.append(model_dir)
    if 'vit' in args.models:
        written.append(train_vit(args.out, args.vit_steps, args.seed, log=log))
    log(f"wrote {', '.join(str(d) for d in written)}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
