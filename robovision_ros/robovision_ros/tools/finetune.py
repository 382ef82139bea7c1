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
from typing import Any, Callable, Optional, Sequence

import numpy as np

from robovision_ros.model_dir import ADAPTERS_FILE, ADAPTERS_KEY, ModelInfo, ModelLoadError, text_length, \
    insert_adapters, load_tokenizer, load_torch_model, read_model_info
from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig

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
    image: np.ndarray  # RGB uint8 [H, W, 3]


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


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert('RGB'))


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


def load_dataset(source: Path, val_fraction: float = 0.2, seed: int = 0,
                 template: str = CLIP_TEMPLATE) -> Dataset:
    """Read, check and split (seeded, per label) the training data; unreadable images are skipped and listed."""
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
    for path, raw in items:
        try:
            image = _read_image(path)
        except (OSError, ValueError, SyntaxError) as error:  # PIL's ways of saying "not an image"
            skipped.append((str(path), f'{type(error).__name__}: {error}'))
            continue
        examples.append(Example(str(path), index[normalise_label(raw)], image))
    rng = np.random.default_rng(seed)
    train: list[Example] = []
    val: list[Example] = []
    for i, label in enumerate(labels):
        mine = [e for e in examples if e.label == i]
        if not mine:
            raise DatasetError(f"label '{label}': every image was unreadable; expected at least one usable image")
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

    def identity(self) -> dict[str, Any]:
        """Return what a checkpoint must agree on to be resumed."""
        keys = ('method', 'rank', 'alpha', 'dropout', 'target_modules', 'bottleneck', 'steps', 'batch', 'lr', 'seed',
                'val_fraction', 'presence_weight', 'preserve_weight', 'shift', 'zoom', 'template', 'mix',
                'mix_weight', 'preserve_views')
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
        if info.model_type == 'clip':
            self.core = backbone
            tokenizer = load_tokenizer(info)
            self.tokens = tokenizer(list(dataset.prompts), padding='max_length', truncation=True,
                                    max_length=text_length(tokenizer, backbone, info), return_tensors='pt')
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
        # CLIP preservation: a frozen copy of the base model (it embeds each augmented batch as the base model saw
        # it) and the labels it already knows with their text embeddings (set by `remember_base`).
        self.base: Any = None
        self.known: Any = None  # bool [labels]
        self.base_text: Any = None  # [labels, D], unit length
        for parameter in self.core.parameters():
            parameter.requires_grad_(False)
        if info.model_type == 'clip' and options.preserve_weight != 0:
            import copy

            self.base = copy.deepcopy(backbone).eval().to(options.device)
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
        """CLIP: unit-length image embeddings [B, D] (of the model being tuned, or of `model`)."""
        import torch.nn.functional as F

        model = self.core if model is None else model
        return F.normalize(model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output), dim=-1)

    def text_embeddings(self, model: Any = None) -> Any:
        """CLIP: unit-length embeddings [labels, D] of the dataset's prompts."""
        import torch.nn.functional as F

        model = self.core if model is None else model
        return F.normalize(model.text_projection(model.text_model(**self.tokens).pooler_output), dim=-1)

    def base_image_embeddings(self, pixels: Any, chunk: int = 256) -> Any:
        """CLIP with preservation: the base model's unit-length embeddings [B, D] of `pixels`, in chunks."""
        import torch

        with torch.no_grad():
            return torch.cat([self.image_embeddings(pixels[i:i + chunk].to(self.options.device), self.base)
                              for i in range(0, len(pixels), chunk)])

    def remember_base(self, pixels: Any, targets: Any, chunk: int = 256) -> None:
        """
        Record, for CLIP before training, what the base model knows.

        `known` gets the labels it already knows -- a label is known when the base model ranks it first (among the
        dataset's labels) for most of its training images -- and `base_text` their text embeddings.
        """
        import torch

        if self.base is None:
            return
        base = self.base_image_embeddings(pixels, chunk)
        with torch.no_grad():
            self.base_text = self.text_embeddings(self.base)
            predicted = (base @ self.base_text.T).argmax(1).cpu()
        targets = targets.cpu()
        labels = self.base_text.shape[0]
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
        """CLIP with preservation: which rows of a batch the preservation term compares with the base model."""
        return (targets < 0) | self.known[targets.clamp(min=0)]  # composites, and images of labels it knows

    def loss(self, pixels: Any, targets: Any, base_image: Any = None) -> Any:
        """
        Compute the training loss of a batch.

        ViT: cross-entropy of the head. CLIP: contrastive over the dataset's prompts + the nodes' presence
        decision + (with `base_image`, the base model's embeddings of these pixels) preservation of what the base
        model knew: the known labels' text embeddings and their images' embeddings stay where they were. A CLIP
        target of -1 marks an unlabelled image (a composite of two known ones, see `composite`): it only counts
        towards preservation.
        """
        import torch.nn.functional as F

        if self.info.model_type == 'vit':
            return F.cross_entropy(self.core(pixel_values=pixels).logits, targets)
        image, text = self.image_embeddings(pixels), self.text_embeddings()
        labelled = targets >= 0
        cosine = image[labelled] @ text.T
        loss = F.cross_entropy(self.core.logit_scale.exp().detach() * cosine, targets[labelled])
        if self.options.presence_weight != 0:
            one_hot = F.one_hot(targets[labelled], cosine.shape[1]).float()
            presence = F.binary_cross_entropy_with_logits(PRESENCE_SHARPNESS * (cosine - PRESENCE_THRESHOLD), one_hot,
                                                          pos_weight=cosine.new_tensor(3.0))
            loss = loss + self.options.presence_weight * presence
        if base_image is not None and self.known is not None and bool(self.known.any()):
            # Squared distance of unit vectors: 2 (1 - cosine) to where the base model put them.
            drift = ((image - base_image) ** 2).sum(1)
            known_images = self.preserved_rows(targets)[labelled].float()
            image_drift = (drift[labelled] * known_images).sum() / known_images.sum().clamp(min=1)
            text_drift = ((text[self.known] - self.base_text[self.known]) ** 2).sum(1).mean()
            loss = loss + self.options.preserve_weight * PRESERVE_SCALE * (text_drift + image_drift)
            if not bool(labelled.all()):
                loss = loss + self.options.mix_weight * PRESERVE_SCALE * drift[~labelled].mean()
        return loss

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
def _pixels(examples: Sequence[Example], preprocessor: ImagePreprocessor) -> np.ndarray:
    return np.concatenate([preprocessor([e.image]) for e in examples]) if examples else np.zeros((0, 3, 1, 1))


def random_affine(count: int, size: int, shift: int, zoom: float, generator: Any) -> Any:
    """
    Draw `count` random augmentations as affine_grid matrices [count, 2, 3] for square images of `size` pixels.

    Each is mirrored or not, zoomed by a factor in [1 - zoom, 1 + zoom] and moved by up to `shift` pixels in y and x.
    """
    import torch

    draws = torch.rand((count, 4), generator=generator)
    scale = 1.0 / (1.0 + zoom * (2 * draws[:, 0] - 1))  # the grid samples the input: zooming in shrinks it
    mirror = torch.where(draws[:, 1] < 0.5, -1.0, 1.0)
    theta = torch.zeros((count, 2, 3))
    theta[:, 0, 0] = scale * mirror
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
        self.views, self.shift, self.zoom = options.preserve_views, options.shift, options.zoom
        self.device = options.device
        self.slot = torch.full((len(pixels),), -1, dtype=torch.long)  # train image -> row of `theta`, or -1
        self.slot[known] = torch.arange(len(known))
        count = len(known) * self.views
        self.theta = random_affine(count, size, self.shift, self.zoom, generator).view(len(known), self.views, 2, 3)
        composites = max(count // 2, 1)
        self.pairs = known[torch.randint(0, len(known), (2, composites), generator=generator)]
        self.pair_theta = random_affine(2 * composites, size, self.shift, self.zoom, generator).view(
            2, composites, 2, 3)
        self.cuts = torch.randint(int(0.3 * size), int(0.7 * size) + 1, (composites,), generator=generator)
        views = self.theta.flatten(0, 1)
        sources = known.repeat_interleave(self.views)
        self.single = self._embed(model, lambda i: augment(pixels[sources[i]].to(self.device), views[i]), count)
        self.single = self.single.view(len(known), self.views, -1)
        self.mixed = self._embed(model, lambda i: self.composites(pixels, i), composites)

    @staticmethod
    def _embed(model: TrainableModel, images: Callable[[Any], Any], count: int, chunk: int = 256) -> Any:
        import torch

        return torch.cat([model.base_image_embeddings(images(torch.arange(i, min(i + chunk, count)))).cpu()
                          for i in range(0, count, chunk)])

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

        theta = random_affine(len(idx), pixels.shape[-1], self.shift, self.zoom, generator)
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


def _lr(step: int, steps: int, base: float) -> float:
    warmup = max(steps // 10, 1)
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(steps - warmup, 1)))


def train(model: TrainableModel, dataset: Dataset, out: Path, resume: bool = False,
          stop_after: Optional[int] = None, progress: bool = True) -> dict[str, Any]:
    """Run the seeded training loop; checkpoints to out/checkpoints/last.pt. `stop_after` ends early (tests)."""
    import torch
    from tqdm import tqdm

    options = model.options
    began = time.monotonic()  # training time counts preprocessing and the base model's passes (known labels, pool)
    preprocessor = ImagePreprocessor(PreprocessConfig.from_model_dir(model.info.path))
    pixels = torch.from_numpy(_pixels(dataset.train, preprocessor))
    targets = torch.tensor([e.label for e in dataset.train])
    model.remember_base(pixels, targets)
    known = model.known_images(targets)
    # Composites take part of each batch (at least one real image stays in it).
    mixed = min(int(round(options.mix * options.batch)), options.batch - 1) if len(known) else 0
    params = model.trainable()
    optimizer = torch.optim.AdamW(list(params.values()), lr=options.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(options.seed)
    # Drawn from the seed before any checkpoint's generator state is restored: a resumed run has the same pool.
    pool = PreservationPool(model, pixels, known, generator) if len(known) else None
    checkpoint = out / CHECKPOINT_FILE
    start_step, elapsed = 0, 0.0
    if resume and checkpoint.is_file():
        saved = torch.load(str(checkpoint), weights_only=False)
        if saved['options'] != options.identity():
            raise FinetuneError(f'{checkpoint} was made with other options {saved["options"]}; '
                                f'expected {options.identity()} (start without --resume, or match them)')
        with torch.no_grad():
            for name, value in saved['trainable'].items():
                params[name].copy_(value)
        optimizer.load_state_dict(saved['optimizer'])
        generator.set_state(saved['generator'])
        torch.set_rng_state(saved['torch_rng'])
        start_step, elapsed = saved['step'], saved['elapsed_s']
    elif resume:
        raise FinetuneError(f'--resume: no checkpoint {checkpoint}')
    model.core.train()
    started = began - elapsed
    bar = tqdm(total=options.steps, initial=start_step, disable=not progress, desc=f'{options.method}',
               unit='step', dynamic_ncols=True)
    loss_value = float('nan')
    end = options.steps if stop_after is None else min(options.steps, stop_after)
    for step in range(start_step, end):
        for group in optimizer.param_groups:
            group['lr'] = _lr(step, options.steps, options.lr)
        idx = torch.randint(0, len(pixels), (min(options.batch - mixed, len(pixels)),), generator=generator)
        labels = torch.cat([targets[idx], torch.full((mixed,), -1, dtype=targets.dtype)]).to(options.device)
        if pool is not None:
            images, base = pool.draw(pixels, idx, mixed, generator)
        else:
            images = augment(pixels[idx].to(options.device),
                             random_affine(len(idx), pixels.shape[-1], options.shift, options.zoom, generator))
            base = None
        loss = model.loss(images, labels, base)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        optimizer.step()
        loss_value = float(loss.item())
        bar.set_postfix(loss=f'{loss_value:.3f}')
        bar.update(1)
        done = step + 1
        if done % options.checkpoint_every == 0 or done == end:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save({'step': done, 'options': options.identity(), 'elapsed_s': time.monotonic() - started,
                        'trainable': {k: v.detach().cpu() for k, v in params.items()},
                        'optimizer': optimizer.state_dict(), 'generator': generator.get_state(),
                        'torch_rng': torch.get_rng_state()}, str(checkpoint))
    bar.close()
    model.core.eval()
    return {'steps': end, 'final_loss': loss_value, 'training_s': time.monotonic() - started,
            'trainable_params': int(sum(p.numel() for p in params.values())),
            'total_params': int(sum(p.numel() for p in model.core.parameters()))}


# --- evaluation -------------------------------------------------------------------------------------------------
def validation_accuracy(model_dir: str, dataset: Dataset, backend: str = 'torch') -> float:
    """Top-1 over the dataset's labels on the validation split, through the encoder the nodes use."""
    from robovision_ros.encoder import PerceptionEncoder

    if not dataset.val:
        return float('nan')
    encoder = PerceptionEncoder(model_dir, backend, 'cpu', 'fp32')
    try:
        correct = 0
        if encoder.info.model_type == 'clip':
            vocabulary = encoder.build_vocabulary(dataset.prompts, ['{}'], 1)
            for example in dataset.val:
                features, _ = encoder.encode_images([example.image])
                correct += encoder.score(features[0], vocabulary).best_label == dataset.prompts[example.label]
        else:
            if encoder.head is None:
                raise FinetuneError(f'{model_dir} has no classification head to evaluate')
            for example in dataset.val:
                features, _ = encoder.encode_images([example.image])
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
        def embed(images: Sequence[np.ndarray]) -> Any:
            if not images:
                return torch.zeros((0, info.global_dim))
            features, _ = encoder.encode_images(list(images))
            return torch.from_numpy(np.stack([f.global_embedding for f in features]))

        train_x, val_x = embed([e.image for e in dataset.train]), embed([e.image for e in dataset.val])
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
def finetune(model_id: str, data: Path, out: Path, options: FinetuneOptions = FinetuneOptions(),
             resume: bool = False, stop_after: Optional[int] = None, progress: bool = True,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fine-tune `model_id` on `data` into the model directory `out`; returns the report (also written there)."""
    import torch

    if options.device == 'cuda' and not torch.cuda.is_available():
        raise FinetuneError('--device cuda: torch sees no CUDA device here')
    if not 0 <= options.zoom < 1 or options.shift < 0 or options.steps < 1 or options.batch < 1 \
            or not 0 <= options.mix < 1 or options.preserve_views < 1:
        raise FinetuneError(f'expected 0 <= --zoom < 1, --shift >= 0, --steps >= 1, --batch >= 1, 0 <= --mix < 1 and '
                            f'--preserve-views >= 1; got zoom {options.zoom}, shift {options.shift}, steps '
                            f'{options.steps}, batch {options.batch}, mix {options.mix}, preserve views '
                            f'{options.preserve_views}')
    weights = {'--presence-weight': options.presence_weight, '--preserve-weight': options.preserve_weight,
               '--mix-weight': options.mix_weight}
    if any(not value >= 0 for value in weights.values()):  # `not >=` also catches NaN
        raise FinetuneError('expected loss weights >= 0; got ' + ', '.join(f'{k} {v}' for k, v in weights.items()))
    torch.set_num_threads(min(torch.get_num_threads(), 2) if options.device == 'cpu' else torch.get_num_threads())
    info = read_model_info(model_id)
    dataset = load_dataset(data, options.val_fraction, options.seed, options.template)
    log(f'{len(dataset.labels)} labels, {len(dataset.train)} training / {len(dataset.val)} validation images'
        + (f', {len(dataset.skipped)} unreadable skipped' if dataset.skipped else ''))
    model = TrainableModel(info, dataset, options)
    training = train(model, dataset, out, resume, stop_after, progress)
    if stop_after is not None and training['steps'] < options.steps:
        return {'stopped_at': training['steps']}
    sizes = model.save(out, info)
    model_bytes = sum(p.stat().st_size for p in info.path.glob('*.safetensors'))
    log(f'wrote {out}; evaluating')
    report: dict[str, Any] = {
        'base_model': model_id, 'model_type': info.model_type, 'output': str(out), 'options': asdict(options),
        'labels': list(dataset.labels), 'train_images': len(dataset.train), 'val_images': len(dataset.val),
        'skipped_images': [{'path': p, 'reason': r} for p, r in dataset.skipped],
        **training, **sizes, 'base_model_bytes': model_bytes,
        'adapter_fraction_of_model': sizes['adapter_bytes'] / max(model_bytes, 1),
        'val_accuracy_after': validation_accuracy(str(out), dataset),
    }
    if info.model_type == 'clip':
        report['val_accuracy_before'] = validation_accuracy(model_id, dataset)
    else:
        report['val_accuracy_before'] = float('nan')  # the base has no head for these labels
        report['val_accuracy_linear_probe'] = linear_probe_accuracy(info, dataset, seed=options.seed)
    if options.heldout_scenes > 0:
        report['heldout_before'] = heldout_evaluation(model_id, info.model_type, options.heldout_scenes)
        report['heldout_after'] = heldout_evaluation(str(out), info.model_type, options.heldout_scenes)
    write_report(out, report)
    return report


def write_report(out: Path, report: dict[str, Any]) -> None:
    """report.json and a short report.md next to the model."""
    (out / 'report.json').write_text(json.dumps(report, indent=2))
    rows = [('validation top-1 before', report.get('val_accuracy_before')),
            ('validation top-1 after', report.get('val_accuracy_after')),
            ('frozen backbone + linear head', report.get('val_accuracy_linear_probe')),
            ('trainable parameters', f"{report['trainable_params']:,} of {report['total_params']:,}"),
            ('adapter size', f"{report['adapter_bytes']:,} bytes ({100 * report['adapter_fraction_of_model']:.1f} % "
                             f"of the base model's {report['base_model_bytes']:,})"),
            ('training time', f"{report['training_s']:.0f} s, {report['steps']} steps"),
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
                        help='augmentation: zoom images by a factor in [1 - Z, 1 + Z] (0: off); images are also '
                             'mirrored at random')
    parser.add_argument('--mix', type=float, default=defaults.mix,
                        help='CLIP with preservation: share of each batch made of two images of known labels joined '
                             'side by side, kept where the base model puts them (several objects in view; 0: off)')
    parser.add_argument('--mix-weight', type=float, default=defaults.mix_weight,
                        help='CLIP: weight of keeping those composites where the base model puts them')
    parser.add_argument('--preserve-views', type=int, default=defaults.preserve_views,
                        help='CLIP with preservation: augmentations of each image of a known label (and half as many '
                             'composites per such image) drawn once, whose base-model embeddings are computed once '
                             'before training instead of at every step')
    parser.add_argument('--template', default=defaults.template, help='CLIP prompt for folder labels')
    parser.add_argument('--heldout-scenes', type=int, default=defaults.heldout_scenes,
                        help="scenes for the base model's own held-out evaluation before/after (0: skip)")
    parser.add_argument('--resume', action='store_true', help='continue from OUT/checkpoints/last.pt')
    args = parser.parse_args(argv)
    # Every FinetuneOptions field is an option of the same name.
    values = {f.name: getattr(args, f.name) for f in fields(FinetuneOptions)}
    options = FinetuneOptions(**{**values, 'target_modules': tuple(args.target_modules or ()) or None})
    try:
        report = finetune(args.model, args.data, args.out, options, resume=args.resume)
    except (DatasetError, FinetuneError, ModelLoadError) as error:
        print(f'robovision_finetune: {error}', file=sys.stderr)
        return 2
    print((args.out / 'report.md').read_text())
    return 0 if report else 1


if __name__ == '__main__':
    sys.exit(main())
