# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
robovision_finetune: teach a CLIP or ViT model new objects with LoRA or bottleneck adapters.

    robovision_finetune MODEL DATA --out DIR [--method lora|adapter] [--steps N] [--device cpu|cuda] [--resume]

DATA is an image folder (`DATA/<label>/*.jpg|png`) or a JSON Lines file of `{"image": path, "text": "a photo of
..."}` (paths relative to the file). CLIP is tuned contrastively (image and text towers) against each label's
prompt (`a photo of a {label}.` for a folder, the line's text for JSON Lines), plus the presence decision the
nodes make (cosine >= threshold), so zero-shot use with any vocabulary keeps working, and a preservation term
keeps what the base model already knew (the text and image embeddings of labels it already ranks first) where it
was; composites (two images of known labels side by side, `--mix`) keep what it did with several objects in view.
What the base model makes of those images comes from a pool drawn once before training (`--preserve-views`
augmentations of each known-label image, and composites of them), so it is not run again at every step.
Preservation that needs nothing from the user is on by default for both model types and both methods: a quarter of
each batch (`--replay`) is generated scenes of the base model's own world (robovision_ros.synthetic.scenes), kept
where the base model puts them (CLIP: image embedding, its zero-shot ranking among a reference vocabulary with the
new labels under it, and the new labels under the presence threshold; ViT: the CLS feature), and for CLIP the text
embeddings of that reference vocabulary (`--reference-labels`, default the 20 labels of that world) are kept too.
The report says what was kept.
Each training batch is randomly mirrored, zoomed and shifted. A ViT gets a classification head on its CLS token
while its backbone is adapted.

DIR is a model directory the nodes load with `model:=DIR`: LoRA writes the merged weights (no runtime cost) and
the adapter alone in `DIR/lora_adapter/`; bottleneck adapters are stored as `adapters.safetensors` plus a
`robovision_adapters` field in config.json, which `robovision_ros.model_dir.load_torch_model` inserts. A report
(report.json, report.md) compares the model before and after on the validation split and the base model's own
held-out evaluation. Training is seeded, checkpoints into DIR/checkpoints every N steps, and `--resume`
continues from there.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

# The codec the nodes decode CompressedImage with; imported here, before anything loads cv2 (the demo writes its
# images with cv2), so that OpenCV starts with the decoder limits image_codec sets.
from robovision_ros.image_codec import decode_compressed_image
from robovision_ros.model_dir import ADAPTERS_FILE, ADAPTERS_KEY, ModelInfo, ModelLoadError, text_length, \
    insert_adapters, load_tokenizer, load_torch_model, read_model_info
from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig
from robovision_ros.synthetic.scenes import LABELS as REFERENCE_LABELS

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')
CLIP_TEMPLATE = 'a photo of a {}.'
METHODS = ('lora', 'adapter')
# Attention query/value projections: HF CLIP and ViT (transformers >= 5) say q_proj/v_proj, older ViTs query/value.
LORA_TARGETS = (('q_proj', 'v_proj'), ('query', 'value'))
# CLIP: the MLPs of both towers and the token embedding (adding the attention query/value projections puts the tiny
# model's adapter over 5 % of its bytes). New words reach the text tower as characters of a BPE learned on the old
# corpus ('purple' -> p u r pl e); without a trainable embedding they cannot be told apart well.
CLIP_LORA_TARGETS = ('fc1', 'fc2', 'token_embedding')
# The presence decision the nodes make: sigmoid(sharpness * (cosine - threshold)), as the embedded CLIP was trained.
PRESENCE_THRESHOLD = 0.25
PRESENCE_SHARPNESS = 10.0
# Preservation loss scale: squared distances of unit embeddings are small next to the cross-entropies.
PRESERVE_SCALE = 10.0
CHECKPOINT_FILE = 'checkpoints/last.pt'
# Targets of the batch rows that have no label of the dataset: composites of two known-label images, and generated
# scenes of the base model's world (replay).
COMPOSITE = -1
REPLAY = -2
# Replay: scenes of robovision_ros.synthetic.scenes (the world the embedded models were trained on), from a seed
# that neither their training (seed*1000 + 0/500), robovision_evaluate (9001, 9002, 9100) nor the demo (7100, 9300,
# 9400..) uses; at the size robovision_evaluate renders.
REPLAY_SEED = 5100
# How strongly replayed scenes are kept, chosen on the new-labels-only selection set of robovision_finetune_demo: a
# ViT's unit CLS feature held at 1.0 barely moves (cosine 0.996 to the base) and learns the new labels less well
# (92.3 % against 96.3 % at 0.1, old world within a point either way).
DEFAULT_REPLAY_WEIGHT = {'clip': 1.0, 'vit': 0.1}
REPLAY_SCENE_HW = (240, 320)
COPIED_FILES = ('preprocessor_config.json', 'vocab.json', 'merges.txt', 'tokenizer.json', 'tokenizer_config.json',
                'special_tokens_map.json')


class DatasetError(ValueError):
    """Training data that cannot be used: the message says what was expected and what was found."""


class FinetuneError(RuntimeError):
    """A fine-tuning run that cannot start or continue (bad options, device, checkpoint)."""


# --- data -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Example:
    path: str
    label: int  # index into Dataset.labels

    def image(self) -> np.ndarray:
        """Read and decode this example's picture (RGB uint8 [H, W, 3]) from disk, as the nodes decode it."""
        return read_image(Path(self.path))


@dataclass
class Dataset:
    labels: tuple[str, ...]  # normalised
    prompts: tuple[str, ...]  # CLIP text per label
    train: list[Example]
    val: list[Example]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def normalise_label(text: str) -> str:
    """Case, underscores and runs of whitespace do not distinguish labels."""
    return ' '.join(text.replace('_', ' ').split()).casefold()


def read_image(path: Path) -> np.ndarray:
    """
    Decode an image file to RGB uint8 with the decoder the nodes use for `sensor_msgs/CompressedImage`.

    Training sees the pixels serving sees: OpenCV decodes the file's bytes (jpeg, png or tiff, found by their magic
    bytes), grey becomes RGB, alpha is dropped and 16-bit samples are scaled by 1/256. Raises OSError (unreadable
    file) or ValueError (not an image the nodes can decode).
    """
    return decode_compressed_image(np.fromfile(path, dtype=np.uint8), path.suffix.lstrip('.').lower() or 'image')


def _collect(source: Path) -> tuple[list[tuple[Path, str]], bool]:
    """(image path, raw label) pairs and whether labels are whole prompts (JSON Lines)."""
    if source.is_file() and source.suffix in ('.jsonl', '.json'):
        items = []
        for number, line in enumerate(source.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                items.append((source.parent / record['image'], str(record['text'])))
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DatasetError(f'{source}:{number}: expected {{"image": path, "text": "a photo of ..."}}; '
                                   f'got {line[:80]!r} ({error})') from error
        return items, True
    if not source.is_dir():
        raise DatasetError(f'{source}: expected an image folder DIR/<label>/*.jpg|png or a .jsonl file')
    items = [(path, folder.name) for folder in sorted(p for p in source.iterdir() if p.is_dir())
             for path in sorted(folder.iterdir()) if path.suffix.lower() in IMAGE_SUFFIXES]
    return items, False


def _unusable(label: str, skipped: Sequence[tuple[str, str]], shown: int = 3) -> DatasetError:
    """Make the error for a label none of whose images could be read: it names the first few files and why."""
    listed = '; '.join(f'{path} ({reason})' for path, reason in skipped[:shown])
    more = f' and {len(skipped) - shown} more' if len(skipped) > shown else ''
    return DatasetError(f"label '{label}': none of its {len(skipped)} images could be read: {listed}{more}; "
                        'expected at least one usable image')


def load_dataset(source: Path, val_fraction: float = 0.2, seed: int = 0,
                 template: str = CLIP_TEMPLATE) -> Dataset:
    """
    Read, check and split (seeded, per label) the training data.

    Every image is decoded once here to check it (unreadable ones are skipped and listed) and not kept: training
    reads the images from disk again as it needs them.
    """
    source = Path(source)
    items, are_prompts = _collect(source)
    if not items:
        raise DatasetError(f'{source}: no images found; expected DIR/<label>/*.jpg|png (at least two labels) or a '
                           f'.jsonl file of {{"image": path, "text": ...}}')
    raw_by_label: dict[str, str] = {}
    for _, raw in items:
        label = normalise_label(raw)
        if label in raw_by_label and raw_by_label[label] != raw:
            raise DatasetError(f"labels '{raw_by_label[label]}' and '{raw}' are the same after normalisation "
                               f"(case, '_', whitespace) as '{label}'; expected distinct labels -- merge or rename")
        raw_by_label[label] = raw
    labels = tuple(sorted(raw_by_label))
    if len(labels) < 2:
        raise DatasetError(f'{source}: found one label {labels}; expected at least two to train a classifier '
                           'or contrast prompts')
    index = {label: i for i, label in enumerate(labels)}
    examples: list[Example] = []
    skipped: list[tuple[str, str]] = []
    skipped_by_label: dict[int, list[tuple[str, str]]] = {}
    for path, raw in items:
        label = index[normalise_label(raw)]
        try:
            read_image(path)
        except (OSError, ValueError) as error:  # missing or unreadable file; bytes the decoder refuses
            reason = f'{type(error).__name__}: {error}'
            skipped.append((str(path), reason))
            skipped_by_label.setdefault(label, []).append((str(path), reason))
            continue
        examples.append(Example(str(path), label))
    rng = np.random.default_rng(seed)
    train: list[Example] = []
    val: list[Example] = []
    for i, label in enumerate(labels):
        mine = [e for e in examples if e.label == i]
        if not mine:
            raise _unusable(label, skipped_by_label.get(i, []))
        order = rng.permutation(len(mine))
        n_val = min(int(round(len(mine) * val_fraction)), len(mine) - 1)
        if val_fraction > 0 and len(mine) >= 2:
            n_val = max(n_val, 1)
        val += [mine[j] for j in order[:n_val]]
        train += [mine[j] for j in order[n_val:]]
    prompts = labels if are_prompts else tuple(template.format(label) for label in labels)
    return Dataset(labels, prompts, train, val, skipped)


# --- model ------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FinetuneOptions:
    method: str = 'lora'
    rank: int = 4
    alpha: float = 8.0
    dropout: float = 0.0
    target_modules: Optional[tuple[str, ...]] = None  # default: default_lora_targets(model)
    bottleneck: int = 16
    steps: int = 1200
    batch: int = 64
    lr: float = 5e-3
    seed: int = 0
    device: str = 'cpu'
    val_fraction: float = 0.2
    checkpoint_every: int = 100
    presence_weight: float = 1.0
    preserve_weight: float = 0.1
    shift: int = 6
    zoom: float = 0.15
    template: str = CLIP_TEMPLATE
    heldout_scenes: int = 120
    mix: float = 0.25
    mix_weight: float = 0.3
    preserve_views: int = 8
    mirror: bool = True
    reference_labels: Optional[tuple[str, ...]] = None  # default: REFERENCE_LABELS
    replay: float = 0.25
    replay_weight: Optional[float] = None  # default: DEFAULT_REPLAY_WEIGHT of the model type
    replay_scenes: int = 256
    replay_zero_shot_weight: float = 1.0
    reference_negatives: bool = True

    def identity(self) -> dict[str, Any]:
        """Return what a checkpoint must agree on to be resumed."""
        keys = ('method', 'rank', 'alpha', 'dropout', 'target_modules', 'bottleneck', 'steps', 'batch', 'lr', 'seed',
                'val_fraction', 'presence_weight', 'preserve_weight', 'shift', 'zoom', 'template', 'mix',
                'mix_weight', 'preserve_views', 'mirror', 'replay', 'replay_weight', 'replay_scenes',
                'reference_negatives', 'reference_labels', 'replay_zero_shot_weight')
        return {key: getattr(self, key) for key in keys}


def default_lora_targets(model: Any) -> tuple[str, ...]:
    """CLIP: the MLPs and the token embedding; otherwise the attention query/value projections."""
    names = {name.rsplit('.', 1)[-1] for name, _ in model.named_modules()}
    if set(CLIP_LORA_TARGETS) <= names and 'text_model' in names:
        return CLIP_LORA_TARGETS
    for pair in LORA_TARGETS:
        if set(pair) <= names:
            return pair
    raise FinetuneError(f'no attention projections named {LORA_TARGETS} found; pass --target-modules')


class TrainableModel:
    """The model being tuned: the plain HF module (`core`) with LoRA layers or adapters inside, and its losses."""

    def __init__(self, info: ModelInfo, dataset: Dataset, options: FinetuneOptions) -> None:
        import torch

        self.info = info
        self.options = options
        torch.manual_seed(options.seed)
        backbone = load_torch_model(info)
        self.label_count = len(dataset.labels)
        self.replay_weight = (options.replay_weight if options.replay_weight is not None
                              else DEFAULT_REPLAY_WEIGHT[info.model_type])
        self.reference_prompts: tuple[str, ...] = ()
        if info.model_type == 'clip':
            self.core = backbone
            tokenizer = load_tokenizer(info)
            if options.preserve_weight != 0 or options.replay != 0:
                reference = options.reference_labels if options.reference_labels is not None else REFERENCE_LABELS
                self.reference_prompts = tuple(dict.fromkeys(
                    prompt for prompt in (options.template.format(label) for label in reference)
                    if prompt not in dataset.prompts))
            # The dataset's prompts, then the reference vocabulary's (rows label_count and on).
            self.tokens = tokenizer(list(dataset.prompts + self.reference_prompts), padding='max_length',
                                    truncation=True, max_length=text_length(tokenizer, backbone, info),
                                    return_tensors='pt')
        else:
            from transformers import ViTConfig, ViTForImageClassification

            config = ViTConfig.from_dict(backbone.config.to_dict())
            config.num_labels = len(dataset.labels)
            config.id2label = {i: label for i, label in enumerate(dataset.labels)}
            config.label2id = {label: i for i, label in enumerate(dataset.labels)}
            config.architectures = ['ViTForImageClassification']
            self.core = ViTForImageClassification(config)
            self.core.vit = backbone
        self.peft_model: Any = None
        self.adapted_blocks = 0
        # Preservation: a frozen copy of the base model (what it makes of the images preservation compares), and
        # for CLIP the labels it already knows and the text embeddings it gives them and the reference vocabulary
        # (set by `remember_base`).
        self.base: Any = None
        self.known: Any = None  # bool [labels]
        self.base_text: Any = None  # [labels + reference prompts, D], unit length
        for parameter in self.core.parameters():
            parameter.requires_grad_(False)
        if (info.model_type == 'clip' and options.preserve_weight != 0) or options.replay != 0:
            import copy

            self.base = copy.deepcopy(backbone).eval().to(options.device)
            for parameter in self.base.parameters():
                parameter.requires_grad_(False)
        if options.method == 'lora':
            from peft import LoraConfig, get_peft_model

            targets = list(options.target_modules or default_lora_targets(self.core))
            config = LoraConfig(r=options.rank, lora_alpha=options.alpha, lora_dropout=options.dropout,
                                target_modules=targets,
                                modules_to_save=['classifier'] if info.model_type == 'vit' else None)
            try:
                self.peft_model = get_peft_model(self.core, config)
            except ValueError as error:
                raise FinetuneError(f'LoRA target modules {targets} not found in {info.model_id}: {error}') from error
        elif options.method == 'adapter':
            self.adapted_blocks = insert_adapters(self.backbone, options.bottleneck)
            if info.model_type == 'vit':
                self.core.classifier.requires_grad_(True)
        else:
            raise FinetuneError(f"method '{options.method}' not supported; supported: {', '.join(METHODS)}")
        self.core.to(options.device)
        if info.model_type == 'clip':
            self.tokens = {k: v.to(options.device) for k, v in self.tokens.items()}

    @property
    def backbone(self) -> Any:
        """Return the module `load_torch_model` returns for this model type (adapters are named relative to it)."""
        return self.core if self.info.model_type == 'clip' else self.core.vit

    def trainable(self) -> dict[str, Any]:
        return {name: p for name, p in self.core.named_parameters() if p.requires_grad}

    def image_embeddings(self, pixels: Any, model: Any = None) -> Any:
        """
        Return the unit-length global embeddings [B, D] of the model being tuned (or of the base `model`).

        CLIP: the projected pooled output (what zero-shot and presence compare with texts). ViT: the CLS token the
        feature_extractor publishes as global_embedding.
        """
        import torch.nn.functional as F

        if self.info.model_type == 'vit':
            backbone = self.backbone if model is None else model
            return F.normalize(backbone(pixel_values=pixels).last_hidden_state[:, 0], dim=-1)
        model = self.core if model is None else model
        return F.normalize(model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1)

    def text_embeddings(self, model: Any = None) -> Any:
        """CLIP: unit-length embeddings [labels + reference prompts, D] of the dataset's and reference prompts."""
        import torch.nn.functional as F

        model = self.core if model is None else model
        return F.normalize(model.text_projection(model.text_model(**self.tokens).pooler_output), dim=-1)

    def base_image_embeddings(self, pixels: Any, chunk: int = 256) -> Any:
        """CLIP with preservation: the base model's unit-length embeddings [B, D] of `pixels`, in chunks."""
        import torch

        with torch.no_grad():
            return torch.cat([self.image_embeddings(pixels[i:i + chunk].to(self.options.device), self.base)
                              for i in range(0, len(pixels), chunk)])

    def base_embeddings_of(self, count: int, images: Callable[[Any], Any], chunk: int = 64) -> Any:
        """
        CLIP with preservation: the base model's embeddings [count, D] (on the CPU) of `images(indices)`, by chunks.

        The result is allocated once and filled: a list of chunks concatenated at the end interleaves long-lived small
        blocks with each chunk's large temporary ones, which fragments the heap (measured: +500 MiB over 10,000
        images, against +30 MiB filled in place).
        """
        import torch

        width = self.base.visual_projection.out_features if self.info.model_type == 'clip' \
            else self.base.config.hidden_size
        result = torch.empty((count, width))
        for i in range(0, count, chunk):
            indices = torch.arange(i, min(i + chunk, count))
            result[indices] = self.base_image_embeddings(images(indices), chunk).cpu()
        return result

    def remember_base(self, pixels: Any, targets: Any, chunk: int = 64) -> None:
        """
        Record, for CLIP before training, what the base model knows.

        `known` gets the labels it already knows -- a label is known when the base model ranks it first (among the
        dataset's labels) for most of its training images -- and `base_text` the text embeddings of every prompt.
        """
        import torch

        if self.base is None or self.info.model_type != 'clip':
            return
        base = self.base_embeddings_of(len(pixels), lambda indices: pixels[indices], chunk).to(self.options.device)
        labels = self.label_count
        with torch.no_grad():
            self.base_text = self.text_embeddings(self.base)
            predicted = (base @ self.base_text[:labels].T).argmax(1).cpu()
        targets = targets.cpu()
        hits = torch.zeros(labels).index_add_(0, targets, (predicted == targets).float())
        counts = torch.zeros(labels).index_add_(0, targets, torch.ones(len(targets)))
        self.known = (hits > 0.5 * counts.clamp(min=1)).to(self.options.device)

    def known_images(self, targets: Any) -> Any:
        """CLIP with preservation: indices of the training images whose label the base model knows; else empty."""
        import torch

        if self.known is None:
            return torch.zeros(0, dtype=torch.long)
        return torch.nonzero(self.known.cpu()[targets]).flatten()

    def preserved_rows(self, targets: Any) -> Any:
        """Return which rows of a batch the preservation terms compare with the base model."""
        import torch

        known = self.known[targets.clamp(min=0)] if self.known is not None else torch.zeros_like(targets, dtype=bool)
        return (targets < 0) | known  # composites, replayed scenes, and images of labels it knows

    def loss(self, pixels: Any, targets: Any, base_image: Any = None) -> Any:
        """
        Compute the training loss of a batch.

        Targets >= 0 are the dataset's labels; COMPOSITE (-1) marks two known-label images side by side (see
        `composite`) and REPLAY (-2) a generated scene of the base model's world (see `ReplayPool`): those count only
        towards preservation. `base_image` holds the base model's embeddings of the rows preservation reads.

        ViT: cross-entropy of the head; replayed scenes keep their CLS embedding where the base model put it. CLIP:
        contrastive over the dataset's prompts (and the reference vocabulary's as negatives) + the nodes' presence
        decision + preservation: the reference vocabulary's and the known labels' text embeddings, the known
        labels' images, composites and replayed scenes stay where the base model put them, and replayed scenes stay
        under the presence threshold for the new labels.
        """
        import torch.nn.functional as F

        options = self.options
        labelled = targets >= 0
        replayed = targets == REPLAY
        if self.info.model_type == 'vit':
            hidden = self.backbone(pixel_values=pixels).last_hidden_state[:, 0]
            loss = F.cross_entropy(self.core.classifier(hidden[labelled]), targets[labelled])
            if base_image is not None and bool(replayed.any()):
                drift = ((F.normalize(hidden[replayed], dim=-1) - base_image[replayed]) ** 2).sum(1)
                loss = loss + self.replay_weight * PRESERVE_SCALE * drift.mean()
            return loss
        import torch

        image, text = self.image_embeddings(pixels), self.text_embeddings()
        labels = self.label_count
        candidates = text if options.reference_negatives else text[:labels]
        cosine = image[labelled] @ candidates.T
        loss = F.cross_entropy(self.core.logit_scale.exp().detach() * cosine, targets[labelled])
        if options.presence_weight != 0:
            one_hot = F.one_hot(targets[labelled], labels).float()
            presence = F.binary_cross_entropy_with_logits(
                PRESENCE_SHARPNESS * (cosine[:, :labels] - PRESENCE_THRESHOLD), one_hot,
                pos_weight=cosine.new_tensor(3.0))
            loss = loss + options.presence_weight * presence
        if base_image is None or self.base_text is None:
            return loss
        # Squared distance of unit vectors: 2 (1 - cosine) to where the base model put them.
        drift = ((image - base_image) ** 2).sum(1)
        kept_text = self.kept_text_rows()
        if bool(kept_text.any()):
            text_drift = ((text[kept_text] - self.base_text[kept_text]) ** 2).sum(1).mean()
            loss = loss + options.preserve_weight * PRESERVE_SCALE * text_drift
        known_images = self.preserved_rows(targets) & labelled
        if bool(known_images.any()):
            loss = loss + options.preserve_weight * PRESERVE_SCALE * drift[known_images].mean()
        composites = targets == COMPOSITE
        if bool(composites.any()):
            loss = loss + options.mix_weight * PRESERVE_SCALE * drift[composites].mean()
        if bool(replayed.any()):
            loss = loss + self.replay_weight * PRESERVE_SCALE * drift[replayed].mean()
            new = ~self.known
            if options.replay_zero_shot_weight != 0:
                # The base model's zero-shot ranking of the scene among the reference vocabulary (and the labels it
                # knows), which the new labels must not enter: soft targets over all prompts, none on new labels.
                scale = self.core.logit_scale.exp().detach()
                old = torch.cat([self.known, torch.ones(len(self.reference_prompts), dtype=torch.bool,
                                                        device=new.device)])
                teacher = (scale * base_image[replayed] @ self.base_text.T).masked_fill(~old, float('-inf'))
                student = F.log_softmax(scale * image[replayed] @ text.T, dim=1)
                ranking = -(F.softmax(teacher, dim=1) * student.masked_fill(~old, 0.0)).sum(1).mean()
                loss = loss + options.replay_zero_shot_weight * ranking
            if options.presence_weight != 0 and bool(new.any()):  # nothing the user taught is in the old world
                absent = image[replayed] @ text[:labels][new].T
                loss = loss + options.presence_weight * F.binary_cross_entropy_with_logits(
                    PRESENCE_SHARPNESS * (absent - PRESENCE_THRESHOLD), absent.new_zeros(absent.shape))
        return loss

    def preservation(self, dataset: Dataset) -> dict[str, Any]:
        """
        Say what this run kept where the base model put it (report.json's 'preservation').

        'known_labels': labels of the data the base model already knew (CLIP: their prompts and images kept);
        'reference_vocabulary': prompts whose text embeddings were kept (CLIP); 'replay': the generated scenes of
        the base model's world kept (None when off). Empty lists and None together: nothing was kept.
        """
        options = self.options
        kept_text = options.preserve_weight != 0 and self.known is not None
        replay = None
        if options.replay != 0:
            replay = {'share_of_batch': options.replay, 'scenes': options.replay_scenes,
                      'views_per_scene': options.preserve_views, 'weight': self.replay_weight,
                      'seed': REPLAY_SEED}
            if self.info.model_type == 'clip':
                replay['zero_shot_weight'] = options.replay_zero_shot_weight
        return {'known_labels': [label for label, known in zip(dataset.labels, self.known.tolist()) if known]
                if kept_text else [],
                'reference_vocabulary': list(self.reference_prompts) if kept_text else [],
                'replay': replay}

    def kept_text_rows(self) -> Any:
        """CLIP: the prompts whose text embeddings preservation keeps: known labels' and the reference vocabulary."""
        import torch

        reference = torch.ones(len(self.reference_prompts), dtype=torch.bool, device=self.known.device)
        kept = torch.cat([self.known, reference])
        return kept if self.options.preserve_weight != 0 else torch.zeros_like(kept)

    def save(self, out: Path, base: ModelInfo) -> dict[str, int]:
        """Write the loadable model directory; returns the sizes in bytes of what was added."""
        from safetensors.torch import save_file

        out.mkdir(parents=True, exist_ok=True)
        self.core.eval()
        sizes: dict[str, int] = {}
        if self.peft_model is not None:
            adapter_dir = out / 'lora_adapter'
            self.peft_model.save_pretrained(str(adapter_dir))
            sizes['adapter_bytes'] = sum(p.stat().st_size for p in adapter_dir.rglob('*.safetensors'))
            merged = self.peft_model.merge_and_unload()
            merged.to('cpu').save_pretrained(str(out))
        else:
            state = self.core.to('cpu').state_dict()
            self.core.save_pretrained(str(out), state_dict={k: v for k, v in state.items() if '.adapter.' not in k})
            adapters = {k: v.contiguous() for k, v in self.backbone.state_dict().items() if '.adapter.' in k}
            save_file(adapters, str(out / ADAPTERS_FILE))
            sizes['adapter_bytes'] = (out / ADAPTERS_FILE).stat().st_size
            config_path = out / 'config.json'
            config = json.loads(config_path.read_text())
            config[ADAPTERS_KEY] = {'bottleneck': self.options.bottleneck, 'blocks': self.adapted_blocks,
                                    'file': ADAPTERS_FILE}
            config_path.write_text(json.dumps(config, indent=2))
        for name in COPIED_FILES:
            if (base.path / name).is_file():
                shutil.copy2(base.path / name, out / name)
        return sizes


# --- training ---------------------------------------------------------------------------------------------------
class PixelStore:
    """
    The training images at the model's input size, read from disk batch by batch.

    Each image is decoded once, resized and cropped to the model input (uint8) and appended to an anonymous file in
    the output folder (deleted when closed, or by the OS if the process dies), so memory holds a batch, not the
    data set. Indexing with image numbers returns the normalised float32 [B, 3, S, S] batch, exactly what the
    preprocessor makes of the images.
    """

    def __init__(self, images: Iterable[np.ndarray], preprocessor: ImagePreprocessor, folder: Path) -> None:
        """Store `images` (RGB uint8 arrays, e.g. read from disk one by one as they are iterated)."""
        import tempfile

        self.preprocessor = preprocessor
        self.file = tempfile.TemporaryFile(dir=folder, prefix='.pixels-')
        self.count = 0
        self.row_shape: tuple[int, ...] = (0, 0, 3)
        for image in images:
            row = preprocessor.resize_and_crop(image)
            if self.row_shape != row.shape and self.count:
                raise FinetuneError(f'image {self.count}: the preprocessor made {row.shape}, before {self.row_shape}')
            self.count += 1
            self.row_shape = row.shape
            self.file.write(np.ascontiguousarray(row).tobytes())
        self.file.flush()
        self.row_bytes = int(np.prod(self.row_shape))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """[N, 3, S, S], as the batches come."""
        return (self.count, self.row_shape[2], self.row_shape[0], self.row_shape[1])

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: Any) -> Any:
        """Return the images `index` (a sequence or tensor of image numbers) as a float32 tensor [B, 3, S, S]."""
        import os

        import torch

        rows = np.empty((len(index), *self.row_shape), np.uint8)
        descriptor = self.file.fileno()
        for n, i in enumerate(np.asarray(index, dtype=np.int64).reshape(-1)):
            rows[n] = np.frombuffer(os.pread(descriptor, self.row_bytes, int(i) * self.row_bytes),
                                    np.uint8).reshape(self.row_shape)
        return torch.from_numpy(self.preprocessor.normalize(rows))

    def close(self) -> None:
        self.file.close()


def random_affine(count: int, size: int, shift: int, zoom: float, generator: Any, mirror: bool = True) -> Any:
    """
    Draw `count` random augmentations as affine_grid matrices [count, 2, 3] for square images of `size` pixels.

    Each is mirrored or not (never without `mirror`), zoomed by a factor in [1 - zoom, 1 + zoom] and moved by up to
    `shift` pixels in y and x. The same random numbers are drawn either way.
    """
    import torch

    draws = torch.rand((count, 4), generator=generator)
    scale = 1.0 / (1.0 + zoom * (2 * draws[:, 0] - 1))  # the grid samples the input: zooming in shrinks it
    flip = torch.where(draws[:, 1] < 0.5, -1.0, 1.0) if mirror else torch.ones(count)
    theta = torch.zeros((count, 2, 3))
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, 0, 2] = -2 * shift * (2 * draws[:, 2] - 1) / size
    theta[:, 1, 2] = -2 * shift * (2 * draws[:, 3] - 1) / size
    return theta


def augment(pixels: Any, theta: Any) -> Any:
    """
    Resample a [B, 3, H, W] batch through per-image affine maps `theta` [B, 2, 3] (see `random_affine`).

    Edges are replicated. Identity maps return the pixels unchanged; a translation of -2 d / W in theta[:, 0, 2]
    moves the content d pixels to the right.
    """
    import torch.nn.functional as F

    grid = F.affine_grid(theta.to(pixels), list(pixels.shape), align_corners=False)
    return F.grid_sample(pixels, grid, mode='bilinear', padding_mode='border', align_corners=False)


def composite(left: Any, right: Any, cuts: Any) -> Any:
    """
    Join two [B, 3, H, W] batches side by side: columns before `cuts` [B] from `left`, the rest from `right`.

    What a camera sees is often several objects at once; the base model's embedding of such a composite of two
    known images is what preservation keeps (the training images themselves show one object each).
    """
    import torch

    columns = torch.arange(left.shape[-1], device=left.device)
    mask = (columns[None, :] < cuts.to(left.device)[:, None]).to(left.dtype)[:, None, None, :]
    return left * mask + right * (1 - mask)


class PreservationPool:
    """
    CLIP with preservation: augmented views drawn once, before training, with the base model's embeddings of them.

    Preservation compares the model being tuned with the frozen base model on every image of a known label and on
    every composite in a batch. The base model never changes, so instead of embedding each batch with it again, the
    pool holds `views` augmentations of each image of a known label and half as many composites (two known images
    side by side) per such image, and the base model's embeddings of them, computed once; batches draw from it.
    Images of new labels are augmented afresh at every step (the base model is not asked about them).
    """

    def __init__(self, model: TrainableModel, pixels: Any, known: Any, generator: Any) -> None:
        import torch

        options, size = model.options, pixels.shape[-1]
        self.views, self.shift, self.zoom, self.mirror = (options.preserve_views, options.shift, options.zoom,
                                                          options.mirror)
        self.device = options.device
        self.slot = torch.full((len(pixels),), -1, dtype=torch.long)  # train image -> row of `theta`, or -1
        self.slot[known] = torch.arange(len(known))
        count = len(known) * self.views
        self.theta = random_affine(count, size, self.shift, self.zoom, generator, self.mirror).view(
            len(known), self.views, 2, 3)
        composites = max(count // 2, 1)
        self.pairs = known[torch.randint(0, len(known), (2, composites), generator=generator)]
        self.pair_theta = random_affine(2 * composites, size, self.shift, self.zoom, generator, self.mirror).view(
            2, composites, 2, 3)
        self.cuts = torch.randint(int(0.3 * size), int(0.7 * size) + 1, (composites,), generator=generator)
        views = self.theta.flatten(0, 1)
        sources = known.repeat_interleave(self.views)
        self.single = model.base_embeddings_of(count, lambda i: augment(pixels[sources[i]].to(self.device), views[i]))
        self.single = self.single.view(len(known), self.views, -1)
        self.mixed = model.base_embeddings_of(composites, lambda i: self.composites(pixels, i))

    def composites(self, pixels: Any, which: Any) -> Any:
        """Return the pool's composites `which` [N] as images [N, 3, H, W]."""
        left, right = (augment(pixels[self.pairs[side, which]].to(self.device), self.pair_theta[side, which])
                       for side in (0, 1))
        return composite(left, right, self.cuts[which])

    def draw(self, pixels: Any, idx: Any, mixed: int, generator: Any) -> tuple[Any, Any]:
        """
        Make a batch: the training images `idx`, then `mixed` pooled composites.

        Images of known labels are one of their pooled views, the others are augmented afresh. Returns (images, the
        base model's embeddings of them: zero for the images of new labels), on the training device.
        """
        import torch

        theta = random_affine(len(idx), pixels.shape[-1], self.shift, self.zoom, generator, self.mirror)
        slot = self.slot[idx]
        pooled = slot >= 0
        view = torch.randint(0, self.views, (len(idx),), generator=generator)
        theta[pooled] = self.theta[slot[pooled], view[pooled]]
        base = torch.zeros(len(idx), self.single.shape[-1])
        base[pooled] = self.single[slot[pooled], view[pooled]]
        images = augment(pixels[idx].to(self.device), theta)
        if mixed:
            which = torch.randint(0, len(self.cuts), (mixed,), generator=generator)
            images = torch.cat([images, self.composites(pixels, which)])
            base = torch.cat([base, self.mixed[which]])
        return images, base.to(self.device)


def replay_scenes(count: int, seed: int = REPLAY_SEED) -> Iterable[np.ndarray]:
    """Render `count` scenes of the embedded models' world (1-3 objects on a table), one at a time."""
    from robovision_ros.synthetic.scenes import SceneGenerator

    generator = SceneGenerator(seed, *REPLAY_SCENE_HW, min_objects=1, max_objects=3)
    return (generator.scene(i).image for i in range(count))


class ReplayPool:
    """
    Generated scenes of the base model's world with the base model's embeddings of them, kept by preservation.

    Needs nothing from the user: `views` augmentations of each scene are drawn and embedded by the frozen base model
    once, before training; batches draw from them, and preservation keeps the tuned model's embeddings of those
    pixels where the base model put them (and, for CLIP, the new labels under the presence threshold on them).
    """

    def __init__(self, model: TrainableModel, pixels: PixelStore, generator: Any) -> None:
        import torch

        options, size = model.options, pixels.shape[-1]
        self.pixels, self.device, self.views = pixels, options.device, options.preserve_views
        count = len(pixels) * self.views
        self.theta = random_affine(count, size, options.shift, options.zoom, generator, options.mirror)
        sources = torch.arange(len(pixels)).repeat_interleave(self.views)
        self.base = model.base_embeddings_of(
            count, lambda i: augment(pixels[sources[i]].to(self.device), self.theta[i].to(self.device)))

    def draw(self, count: int, generator: Any) -> tuple[Any, Any]:
        """Return `count` pooled views (images, base embeddings) on the training device."""
        import torch

        which = torch.randint(0, len(self.theta), (count,), generator=generator)
        images = augment(self.pixels[which // self.views].to(self.device), self.theta[which].to(self.device))
        return images, self.base[which].to(self.device)


def _lr(step: int, steps: int, base: float) -> float:
    warmup = max(steps // 10, 1)
    if step < warmup:
        return base * (step + 1) / warmup
    return float(base * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(steps - warmup, 1))))


CHECKPOINT_KEYS = ('step', 'options', 'elapsed_s', 'trainable', 'optimizer', 'generator', 'torch_rng')


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """
    Write a checkpoint atomically: into a temporary file beside `path`, synced, then renamed over it.

    A kill at any moment leaves either the previous checkpoint or the new one, never a partial file.
    """
    import os
    import tempfile

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.partial')
    try:
        with os.fdopen(descriptor, 'wb') as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself reaches the disk
    finally:
        os.close(folder)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint `save_checkpoint` wrote; anything else (truncated, another file) is a one-line error."""
    import pickle

    import torch

    try:
        saved = torch.load(str(path), weights_only=True, map_location='cpu')
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else 'the file ends early'
        raise FinetuneError(f'{path}: not a readable checkpoint ({type(error).__name__}: {reason}); expected one '
                            'that robovision_finetune wrote -- start over with --overwrite') from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(saved, dict) or key not in saved]
    if missing:
        raise FinetuneError(f'{path}: a checkpoint without {missing}; expected one that robovision_finetune wrote '
                            '-- start over with --overwrite')
    return saved


class StopRequest:
    """
    Ctrl-C during training asks for a clean stop: the loop saves a checkpoint after the step under way and returns.

    A second Ctrl-C raises KeyboardInterrupt at once. Only the main thread can own the handler; elsewhere this
    does nothing (Ctrl-C then interrupts as usual).
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> 'StopRequest':
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(model: TrainableModel, dataset: Dataset, out: Path, resume: bool = False,
          stop_after: Optional[int] = None, progress: bool = True) -> dict[str, Any]:
    """
    Run the seeded training loop; checkpoints to out/checkpoints/last.pt.

    `stop_after` ends early (tests). Ctrl-C stops after the current step with a checkpoint ('interrupted' is then
    true in the result).
    """
    preprocessor = ImagePreprocessor(PreprocessConfig.from_model_dir(model.info.path))
    began = time.monotonic()  # training time counts preprocessing and the base model's passes (known labels, pool)
    cpu_began = time.process_time()  # and the CPU time this process spends on it, which other jobs do not inflate
    out.mkdir(parents=True, exist_ok=True)
    pixels = PixelStore((e.image() for e in dataset.train), preprocessor, out)
    replay = None
    try:
        if model.options.replay != 0:
            replay = PixelStore(replay_scenes(model.options.replay_scenes), preprocessor, out)
        return _train(model, dataset, pixels, replay, out, (began, cpu_began), resume, stop_after, progress)
    finally:
        pixels.close()
        if replay is not None:
            replay.close()


def _train(model: TrainableModel, dataset: Dataset, pixels: PixelStore, replay: Optional[PixelStore], out: Path,
           began: tuple[float, float], resume: bool, stop_after: Optional[int], progress: bool) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    options = model.options
    checkpoint = out / CHECKPOINT_FILE
    if resume and not checkpoint.is_file():
        raise FinetuneError(f'--resume: no checkpoint {checkpoint}')
    saved = load_checkpoint(checkpoint) if resume else None  # checked before the base model's passes
    if saved is not None and saved['options'] != options.identity():
        raise FinetuneError(f'{checkpoint} was made with other options {saved["options"]}; '
                            f'expected {options.identity()} (start without --resume, or match them)')
    targets = torch.tensor([e.label for e in dataset.train])
    model.remember_base(pixels, targets)
    known = model.known_images(targets)
    # Composites and replayed scenes take part of each batch (at least one image of the dataset stays in it).
    mixed = min(int(round(options.mix * options.batch)), options.batch - 1) if len(known) else 0
    replayed = min(int(round(options.replay * options.batch)), options.batch - 1 - mixed) if replay else 0
    params = model.trainable()
    optimizer = torch.optim.AdamW(list(params.values()), lr=options.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(options.seed)
    # Drawn from the seed before any checkpoint's generator state is restored: a resumed run has the same pool.
    pool = PreservationPool(model, pixels, known, generator) if len(known) else None
    replay_pool = ReplayPool(model, replay, generator) if replayed else None
    start_step, elapsed, cpu_elapsed = 0, 0.0, 0.0
    if saved is not None:
        with torch.no_grad():
            for name, value in saved['trainable'].items():
                params[name].copy_(value)
        optimizer.load_state_dict(saved['optimizer'])
        generator.set_state(saved['generator'])
        torch.set_rng_state(saved['torch_rng'])
        start_step, elapsed = saved['step'], saved['elapsed_s']
        cpu_elapsed = saved.get('cpu_s', 0.0)  # absent from checkpoints written before it was recorded
    model.core.train()
    started, cpu_started = began[0] - elapsed, began[1] - cpu_elapsed
    bar = tqdm(total=options.steps, initial=start_step, disable=not progress, desc=f'{options.method}',
               unit='step', dynamic_ncols=True)
    loss_value: Optional[float] = None
    end = options.steps if stop_after is None else min(options.steps, stop_after)
    done = start_step
    with StopRequest() as stop:
        for step in range(start_step, end):
            for group in optimizer.param_groups:
                group['lr'] = _lr(step, options.steps, options.lr)
            idx = torch.randint(0, len(pixels), (min(options.batch - mixed - replayed, len(pixels)),),
                                generator=generator)
            labels = torch.cat([targets[idx], torch.full((mixed,), COMPOSITE, dtype=targets.dtype),
                                torch.full((replayed,), REPLAY, dtype=targets.dtype)]).to(options.device)
            if pool is not None:
                images, base = pool.draw(pixels, idx, mixed, generator)
            else:
                images = augment(pixels[idx].to(options.device),
                                 random_affine(len(idx), pixels.shape[-1], options.shift, options.zoom, generator,
                                               options.mirror))
                base = None
            if replay_pool is not None:
                scenes, scenes_base = replay_pool.draw(replayed, generator)
                if base is None:
                    base = torch.zeros((len(images), scenes_base.shape[1]), device=options.device)
                images, base = torch.cat([images, scenes]), torch.cat([base, scenes_base])
            loss = model.loss(images, labels, base)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
            optimizer.step()
            loss_value = float(loss.item())
            bar.set_postfix(loss=f'{loss_value:.3f}')
            bar.update(1)
            done = step + 1
            if done % options.checkpoint_every == 0 or done == end or stop.requested:
                save_checkpoint({'step': done, 'options': options.identity(),
                                 'elapsed_s': time.monotonic() - started,
                                 'cpu_s': time.process_time() - cpu_started,
                                 'trainable': {k: v.detach().cpu() for k, v in params.items()},
                                 'optimizer': optimizer.state_dict(), 'generator': generator.get_state(),
                                 'torch_rng': torch.get_rng_state()}, checkpoint)
            if stop.requested:
                break
    bar.close()
    model.core.eval()
    return {'steps': done, 'final_loss': loss_value, 'training_s': time.monotonic() - started,
            'training_cpu_s': time.process_time() - cpu_started,
            'interrupted': stop.requested,
            'trainable_params': int(sum(p.numel() for p in params.values())),
            'total_params': int(sum(p.numel() for p in model.core.parameters()))}


# --- evaluation -------------------------------------------------------------------------------------------------
def validation_accuracy(model_dir: str, dataset: Dataset, backend: str = 'torch') -> Optional[float]:
    """Top-1 over the dataset's labels on the validation split, through the encoder the nodes use (None: no split)."""
    from robovision_ros.encoder import PerceptionEncoder

    if not dataset.val:
        return None
    encoder = PerceptionEncoder(model_dir, backend, 'cpu', 'fp32')
    try:
        correct = 0
        if encoder.info.model_type == 'clip':
            vocabulary = encoder.build_vocabulary(dataset.prompts, ['{}'], 1)
            for example in dataset.val:
                features, _ = encoder.encode_images([example.image()])
                correct += encoder.score(features[0], vocabulary).best_label == dataset.prompts[example.label]
        else:
            if encoder.head is None:
                raise FinetuneError(f'{model_dir} has no classification head to evaluate')
            for example in dataset.val:
                features, _ = encoder.encode_images([example.image()])
                correct += encoder.classify(features[0]).best_label == dataset.labels[example.label]
        return correct / len(dataset.val)
    finally:
        encoder.close()


def linear_probe_accuracy(info: ModelInfo, dataset: Dataset, steps: int = 300, seed: int = 0) -> float:
    """
    Fit a linear head on a frozen backbone's global embedding; return its validation top-1.

    The baseline a ViT fine-tune must beat.
    """
    return linear_probe_accuracies(info, dataset, steps=steps, seed=seed)['val']


def linear_probe_accuracies(info: ModelInfo, dataset: Dataset, heldout: Sequence[tuple[np.ndarray, int]] = (),
                            steps: int = 300, seed: int = 0) -> dict[str, float]:
    """
    Fit a linear head on the frozen backbone; return its top-1 on the validation split and on `heldout`.

    `heldout` is (RGB image, label index) pairs; 'heldout' is NaN without them.
    """
    import torch
    import torch.nn.functional as F

    from robovision_ros.encoder import PerceptionEncoder

    encoder = PerceptionEncoder(str(info.path), 'torch', 'cpu', 'fp32')
    try:
        def embed(images: Sequence[Any], chunk: int = 64) -> Any:
            """Global embeddings [N, D] of images (arrays, or Examples read from disk chunk by chunk)."""
            rows = [torch.zeros((0, info.global_dim))]
            for i in range(0, len(images), chunk):
                batch = [image.image() if isinstance(image, Example) else image for image in images[i:i + chunk]]
                features, _ = encoder.encode_images(batch)
                rows.append(torch.from_numpy(np.stack([f.global_embedding for f in features])))
            return torch.cat(rows)

        train_x, val_x = embed(dataset.train), embed(dataset.val)
        heldout_x = embed([image for image, _ in heldout])
    finally:
        encoder.close()
    train_y = torch.tensor([e.label for e in dataset.train])
    torch.manual_seed(seed)
    head = torch.nn.Linear(train_x.shape[1], len(dataset.labels))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(head(train_x), train_y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def top1(x: Any, labels: Sequence[int]) -> float:
        if not len(labels):
            return float('nan')
        with torch.no_grad():
            return float((head(x).argmax(1) == torch.tensor(list(labels))).float().mean())

    return {'val': top1(val_x, [e.label for e in dataset.val]), 'heldout': top1(heldout_x, [y for _, y in heldout])}


def heldout_evaluation(model_dir: str, model_type: str, scenes: int) -> dict[str, float]:
    """Run the base model's own held-out evaluation (generated scenes of the embedded models' world)."""
    from robovision_ros.synthetic.evaluation import evaluate_clip, evaluate_vit_colours

    if model_type == 'clip':
        return evaluate_clip(model_dir, 'onnxruntime', scenes=scenes)
    return evaluate_vit_colours(model_dir, 'onnxruntime', scenes=scenes)


# --- the tool ---------------------------------------------------------------------------------------------------
def prepare_output(out: Path, resume: bool, overwrite: bool, keep: Sequence[Path] = ()) -> None:
    """
    Check the output folder: new or empty; with `overwrite` cleared first; with `resume` left as it is.

    A folder holding files of an earlier run would mix them with this one's (another method's adapter files beside
    the new ones), so it is refused unless asked. `keep` (the training data, the base model) must not be inside
    a folder to clear, nor contain it.
    """
    if resume and overwrite:
        raise FinetuneError('--resume continues the checkpoint in --out and --overwrite deletes it; expected one')
    if out.exists() and not out.is_dir():
        raise FinetuneError(f'--out {out} is a file; expected a folder for the model (new or empty)')
    if resume or not out.exists():
        return
    entries = sorted(out.iterdir())
    if not entries:
        return
    if not overwrite:
        names = ', '.join(e.name for e in entries[:3]) + (f' and {len(entries) - 3} more' if len(entries) > 3 else '')
        raise FinetuneError(f'--out {out} is not empty ({names}); expected a new or empty folder -- pass '
                            '--overwrite to clear it, or --resume to continue its checkpoint')
    target = out.resolve()
    for path in keep:
        path = Path(path).resolve()
        if path == target or target in path.parents or path in target.parents:
            raise FinetuneError(f'--overwrite would delete {out}, which holds or lies inside {path}; expected an '
                                'output folder apart from the training data and the base model')
    for entry in entries:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def finetune(model_id: str, data: Path, out: Path, options: FinetuneOptions = FinetuneOptions(),
             resume: bool = False, stop_after: Optional[int] = None, progress: bool = True,
             log: Callable[[str], None] = print, overwrite: bool = False) -> dict[str, Any]:
    """
    Fine-tune `model_id` on `data` into the model directory `out`; returns the report (also written there).

    `out` must be new or empty (`overwrite` clears it; `resume` continues its checkpoint). A run that stops early
    (`stop_after`, or Ctrl-C) returns {'stopped_at': step, 'interrupted': ...} and leaves its checkpoint.
    """
    import torch

    if options.device == 'cuda' and not torch.cuda.is_available():
        raise FinetuneError('--device cuda: torch sees no CUDA device here')
    if not 0 <= options.zoom < 1 or options.shift < 0 or options.steps < 1 or options.batch < 1 \
            or not 0 <= options.mix < 1 or options.preserve_views < 1 or not 0 <= options.replay < 1 \
            or options.replay_scenes < 1:
        raise FinetuneError(f'expected 0 <= --zoom < 1, --shift >= 0, --steps >= 1, --batch >= 1, 0 <= --mix < 1, '
                            f'--preserve-views >= 1, 0 <= --replay < 1 and --replay-scenes >= 1; got zoom '
                            f'{options.zoom}, shift {options.shift}, steps {options.steps}, batch {options.batch}, mix '
                            f'{options.mix}, preserve views {options.preserve_views}, replay {options.replay}, replay '
                            f'scenes {options.replay_scenes}')
    weights = {'--presence-weight': options.presence_weight, '--preserve-weight': options.preserve_weight,
               '--mix-weight': options.mix_weight,
               '--replay-weight': 0.0 if options.replay_weight is None else options.replay_weight,
               '--replay-zero-shot-weight': options.replay_zero_shot_weight}
    if any(not value >= 0 for value in weights.values()):  # `not >=` also catches NaN
        raise FinetuneError('expected loss weights >= 0; got ' + ', '.join(f'{k} {v}' for k, v in weights.items()))
    torch.set_num_threads(min(torch.get_num_threads(), 2) if options.device == 'cpu' else torch.get_num_threads())
    info = read_model_info(model_id)
    prepare_output(Path(out), resume, overwrite, keep=(Path(data), info.path))
    dataset = load_dataset(data, options.val_fraction, options.seed, options.template)
    log(f'{len(dataset.labels)} labels, {len(dataset.train)} training / {len(dataset.val)} validation images'
        + (f', {len(dataset.skipped)} unreadable skipped' if dataset.skipped else ''))
    model = TrainableModel(info, dataset, options)
    training = train(model, dataset, out, resume, stop_after, progress)
    if training['interrupted'] or training['steps'] < options.steps:
        return {'stopped_at': training['steps'], 'interrupted': training['interrupted']}
    sizes = model.save(out, info)
    model_bytes = sum(p.stat().st_size for p in info.path.glob('*.safetensors'))
    log(f'wrote {out}; evaluating')
    report: dict[str, Any] = {
        'base_model': model_id, 'model_type': info.model_type, 'output': str(out), 'options': asdict(options),
        'labels': list(dataset.labels), 'train_images': len(dataset.train), 'val_images': len(dataset.val),
        'skipped_images': [{'path': p, 'reason': r} for p, r in dataset.skipped],
        **{k: v for k, v in training.items() if k != 'interrupted'}, **sizes, 'base_model_bytes': model_bytes,
        'adapter_fraction_of_model': sizes['adapter_bytes'] / max(model_bytes, 1),
        'val_accuracy_after': validation_accuracy(str(out), dataset),
        'preservation': model.preservation(dataset),
    }
    if info.model_type == 'clip':
        report['val_accuracy_before'] = validation_accuracy(model_id, dataset)
    elif dataset.val:  # the base ViT has no head for these labels: the frozen backbone + a linear head instead
        report['val_accuracy_linear_probe'] = linear_probe_accuracy(info, dataset, seed=options.seed)
    if options.heldout_scenes > 0:
        report['heldout_before'] = heldout_evaluation(model_id, info.model_type, options.heldout_scenes)
        report['heldout_after'] = heldout_evaluation(str(out), info.model_type, options.heldout_scenes)
    write_report(out, report)
    return report


def preservation_text(preservation: Optional[dict[str, Any]]) -> str:
    """Say in one line what a run kept where the base model put it (its report's 'preservation')."""
    if preservation is None:
        return 'not recorded'
    parts = []
    replay = preservation['replay']
    if replay is not None:
        parts.append(f"generated scenes of its world ({replay['scenes']} x {replay['views_per_scene']} views, "
                     f"{100 * replay['share_of_batch']:g} % of each batch, weight {replay['weight']:g}"
                     + (f", zero-shot ranking {replay['zero_shot_weight']:g}" if 'zero_shot_weight' in replay else '')
                     + ')')
    if preservation['reference_vocabulary']:
        parts.append(f"the text embeddings of {len(preservation['reference_vocabulary'])} reference prompts")
    if preservation['known_labels']:
        parts.append(f"the labels of your data it already knew ({', '.join(preservation['known_labels'])})")
    return '; '.join(parts) if parts else 'nothing: what the base model knew may be lost (--replay 0)'


def write_report(out: Path, report: dict[str, Any]) -> None:
    """report.json and a short report.md next to the model; what was not measured is left out, never 'nan'."""
    (out / 'report.json').write_text(json.dumps(report, indent=2, allow_nan=False))
    rows = [('validation top-1 before', report.get('val_accuracy_before')),
            ('validation top-1 after', report.get('val_accuracy_after')),
            ('frozen backbone + linear head (validation top-1)', report.get('val_accuracy_linear_probe')),
            ('trainable parameters', f"{report['trainable_params']:,} of {report['total_params']:,}"),
            ('adapter size', f"{report['adapter_bytes']:,} bytes ({100 * report['adapter_fraction_of_model']:.1f} % "
                             f"of the base model's {report['base_model_bytes']:,})"),
            ('training time', f"{report['training_s']:.0f} s wall-clock ({report['training_cpu_s']:.0f} s of CPU), "
                              f"{report['steps']} steps"),
            ('kept where the base model put them', preservation_text(report.get('preservation'))),
            ('skipped images', len(report['skipped_images']))]
    for key in ('heldout_before', 'heldout_after'):
        if key in report:
            rows.append((key.replace('_', ' '), ', '.join(f'{k} {v:.3f}' for k, v in report[key].items()
                                                          if k != 'scenes')))
    lines = [f"# Fine-tuning report: {report['options']['method']} on {report['base_model']}", '',
             f"Output: `{report['output']}` ({report['model_type']}, {len(report['labels'])} labels, "
             f"{report['train_images']} training / {report['val_images']} validation images)", '',
             '| | |', '|---|---|']
    lines += [f'| {name} | {value if not isinstance(value, float) else f"{value:.3f}"} |'
              for name, value in rows if value is not None]
    if report['model_type'] == 'vit':
        lines += ['', 'The base ViT has no classification head for these labels, so there is no "before" top-1; the '
                  'frozen backbone with a linear head fitted on the same split is the baseline.']
    if 'heldout_before' in report:
        lines += ['', "Held out before/after: the base model's own world (generated scenes of "
                  'robovision_ros.synthetic.scenes from seeds neither training nor replay uses, as robovision_evaluate '
                  'renders them), measured through the encoder the nodes use: what preservation is for.']
    lines += [''] + [f"- skipped {s['path']}: {s['reason']}" for s in report['skipped_images']]
    (out / 'report.md').write_text('\n'.join(lines).rstrip() + '\n')


def main(argv: Optional[Sequence[str]] = None) -> int:
    defaults = FinetuneOptions()
    parser = argparse.ArgumentParser(prog='robovision_finetune', description=__doc__.strip().split('\n')[0])
    parser.add_argument('model', help='base model: directory, hub id or embedded:<name>')
    parser.add_argument('data', type=Path, help='image folder DIR/<label>/*.jpg|png or a .jsonl file')
    parser.add_argument('--out', type=Path, required=True, help='output model directory')
    parser.add_argument('--method', choices=METHODS, default=defaults.method)
    parser.add_argument('--rank', type=int, default=defaults.rank, help='LoRA rank')
    parser.add_argument('--alpha', type=float, default=defaults.alpha, help='LoRA alpha')
    parser.add_argument('--dropout', type=float, default=defaults.dropout, help='LoRA dropout')
    parser.add_argument('--target-modules', nargs='+', default=None,
                        help='LoRA target module names (default CLIP: fc1 fc2 token_embedding; ViT: the '
                             'attention q_proj v_proj, or query value)')
    parser.add_argument('--bottleneck', type=int, default=defaults.bottleneck, help='adapter bottleneck width')
    parser.add_argument('--steps', type=int, default=defaults.steps)
    parser.add_argument('--batch', type=int, default=defaults.batch)
    parser.add_argument('--lr', type=float, default=defaults.lr)
    parser.add_argument('--seed', type=int, default=defaults.seed)
    parser.add_argument('--device', choices=('cpu', 'cuda'), default=defaults.device)
    parser.add_argument('--val-fraction', type=float, default=defaults.val_fraction)
    parser.add_argument('--checkpoint-every', type=int, default=defaults.checkpoint_every)
    parser.add_argument('--presence-weight', type=float, default=defaults.presence_weight,
                        help='CLIP: weight of the presence (cosine >= 0.25) loss next to the contrastive one')
    parser.add_argument('--preserve-weight', type=float, default=defaults.preserve_weight,
                        help='CLIP: weight of keeping the labels the base model already knows (their text and image '
                             'embeddings) where the base model put them (0: off)')
    parser.add_argument('--shift', type=int, default=defaults.shift,
                        help='augmentation: move images by up to N pixels of the model input (0: off)')
    parser.add_argument('--zoom', type=float, default=defaults.zoom,
                        help='augmentation: zoom images by a factor in [1 - Z, 1 + Z] (0: off)')
    parser.add_argument('--mirror', action=argparse.BooleanOptionalAction, default=defaults.mirror,
                        help='augmentation: mirror half of the images left-right at random (default: on; '
                             '--no-mirror for what a mirror changes: text, digits, arrows, left/right)')
    parser.add_argument('--mix', type=float, default=defaults.mix,
                        help='CLIP with preservation: share of each batch made of two images of known labels joined '
                             'side by side, kept where the base model puts them (several objects in view; 0: off)')
    parser.add_argument('--mix-weight', type=float, default=defaults.mix_weight,
                        help='CLIP: weight of keeping those composites where the base model puts them')
    parser.add_argument('--preserve-views', type=int, default=defaults.preserve_views,
                        help='CLIP with preservation: augmentations of each image of a known label (and half as many '
                             'composites per such image) drawn once, whose base-model embeddings are computed once '
                             'before training instead of at every step (also: views of each replayed scene)')
    parser.add_argument('--replay', type=float, default=defaults.replay,
                        help='share of each batch made of generated scenes of the base model\'s world '
                             '(robovision_ros.synthetic.scenes), kept where the base model puts them: preservation '
                             'that needs no images of old concepts from you (0: off)')
    parser.add_argument('--replay-weight', type=float, default=defaults.replay_weight,
                        help='weight of keeping the replayed scenes where the base model puts them (default: '
                             + ', '.join(f'{w:g} for {kind}' for kind, w in DEFAULT_REPLAY_WEIGHT.items()) + ')')
    parser.add_argument('--replay-zero-shot-weight', type=float, default=defaults.replay_zero_shot_weight,
                        help='CLIP: weight of keeping the base model\'s zero-shot ranking of the replayed scenes '
                             'among the reference vocabulary, with the new labels ranked below it')
    parser.add_argument('--replay-scenes', type=int, default=defaults.replay_scenes,
                        help='generated scenes to replay (rendered and embedded by the base model once)')
    parser.add_argument('--reference-labels', nargs='+', default=None,
                        help='CLIP: the reference vocabulary whose text embeddings preservation keeps and which new '
                             'images are contrasted against (default: the 20 labels of the embedded models\' world)')
    parser.add_argument('--reference-negatives', action=argparse.BooleanOptionalAction,
                        default=defaults.reference_negatives,
                        help='CLIP: contrast the training images against the reference vocabulary too (default: on)')
    parser.add_argument('--template', default=defaults.template, help='CLIP prompt for folder labels')
    parser.add_argument('--heldout-scenes', type=int, default=defaults.heldout_scenes,
                        help="scenes for the base model's own held-out evaluation before/after (0: skip)")
    parser.add_argument('--resume', action='store_true', help='continue from OUT/checkpoints/last.pt')
    parser.add_argument('--overwrite', action='store_true',
                        help='clear a non-empty --out first (without it such a folder is refused)')
    args = parser.parse_args(argv)
    # Every FinetuneOptions field is an option of the same name.
    values = {f.name: getattr(args, f.name) for f in fields(FinetuneOptions)}
    options = FinetuneOptions(**{**values, 'target_modules': tuple(args.target_modules or ()) or None,
                                 'reference_labels': None if args.reference_labels is None
                                 else tuple(args.reference_labels)})
    checkpoint = args.out / CHECKPOINT_FILE
    try:
        report = finetune(args.model, args.data, args.out, options, resume=args.resume, overwrite=args.overwrite)
    except (DatasetError, FinetuneError, ModelLoadError) as error:
        print(f'robovision_finetune: {error}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside the training loop (reading data, the base model's pass, evaluation)
        saved = f'the last checkpoint is {checkpoint}' if checkpoint.is_file() else 'no checkpoint was written'
        print(f'robovision_finetune: interrupted; {saved}', file=sys.stderr)
        return 130
    if report.get('interrupted'):
        print(f"robovision_finetune: interrupted at step {report['stopped_at']} of {options.steps}; checkpoint "
              f'saved in {checkpoint} (continue with --resume)', file=sys.stderr)
        return 130
    print((args.out / 'report.md').read_text())
    return 0 if report else 1


if __name__ == '__main__':
    sys.exit(main())
