# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Preservation that needs nothing from the user: replayed scenes of the base model's world, a reference vocabulary."""
from __future__ import annotations

import numpy as np
import pytest

from robovision_ros.tools.finetune import DEFAULT_REPLAY_WEIGHT, REPLAY, REPLAY_SEED, FinetuneOptions, finetune, \
    load_dataset
from test_finetune import make_folder, quick


def old_world_embeddings(model_dir: str, count: int = 16) -> np.ndarray:
    """Return unit global embeddings of generated scenes of the old world (seeds that replay does not use)."""
    from robovision_ros.encoder import PerceptionEncoder
    from robovision_ros.synthetic.scenes import SceneGenerator

    generator = SceneGenerator(77, 120, 160, 1, 3)
    encoder = PerceptionEncoder(model_dir, 'torch', 'cpu', 'fp32')
    try:
        features, _ = encoder.encode_images([generator.scene(i).image for i in range(count)], normalize=True)
    finally:
        encoder.close()
    return np.stack([f.global_embedding for f in features])


@pytest.mark.parametrize('kind', ['clip', 'vit'])
def test_new_labels_only_data_keeps_the_old_world_by_default(kind, tiny_clip_dir, tiny_vit_dir, tmp_path,
                                                             monkeypatch):
    from robovision_ros.tools.finetune import TrainableModel

    model_dir = str(tiny_clip_dir if kind == 'clip' else tiny_vit_dir)
    # The labels are new to the model: nothing of the user's data is preserved, only what replay brings.
    monkeypatch.setattr(TrainableModel, 'known_images', lambda self, targets: targets[:0])
    data = make_folder(tmp_path / 'data', labels=('red', 'blue', 'green'), per_label=6)
    seen = []
    original = TrainableModel.loss

    def spy(self, pixels, targets, base_image=None):
        seen.append(targets.tolist())
        return original(self, pixels, targets, base_image)

    monkeypatch.setattr(TrainableModel, 'loss', spy)
    tuned, kept = {}, {}
    for name, extra in (('default', {}), ('off', dict(replay=0.0, preserve_weight=0.0))):
        options = quick('adapter', steps=40, batch=8, lr=2e-2, replay_scenes=8, preserve_views=2, **extra)
        report = finetune(model_dir, data, tmp_path / name, options, progress=False, log=lambda _: None)
        tuned[name] = old_world_embeddings(str(tmp_path / name))
        kept[name] = report['preservation'], (tmp_path / name / 'report.md').read_text()
    base = old_world_embeddings(model_dir)
    # Every batch of the default run ends with two replayed scenes (25 % of 8); the run without has none.
    assert all(t[-2:] == [REPLAY, REPLAY] and min(t[:-2]) >= 0 for t in seen[:40])
    assert all(min(t) >= 0 for t in seen[40:])
    drift = {name: float(np.mean(1 - np.sum(e * base, axis=1))) for name, e in tuned.items()}
    assert drift['off'] > 0.01  # training moved the old world ...
    assert drift['default'] < 0.2 * drift['off'], drift  # ... and replay keeps it much closer to the base model
    # The report says what was kept, and says so when nothing was.
    (default, default_md), (off, off_md) = kept['default'], kept['off']
    assert default['replay'] == {'share_of_batch': 0.25, 'scenes': 8, 'views_per_scene': 2,
                                 'weight': DEFAULT_REPLAY_WEIGHT[kind], 'seed': REPLAY_SEED,
                                 **({'zero_shot_weight': 1.0} if kind == 'clip' else {})}
    assert len(default['reference_vocabulary']) == (20 if kind == 'clip' else 0)
    assert 'generated scenes of its world (8 x 2 views, 25 % of each batch' in default_md
    assert off == {'known_labels': [], 'reference_vocabulary': [], 'replay': None}
    assert 'nothing: what the base model knew may be lost' in off_md


def test_the_reference_vocabulary_is_kept_and_contrasted(tiny_clip_dir, tmp_path):
    import torch

    from robovision_ros.model_dir import read_model_info
    from robovision_ros.synthetic.scenes import LABELS
    from robovision_ros.tools.finetune import TrainableModel

    dataset = load_dataset(make_folder(tmp_path / 'data'), val_fraction=0.25, seed=1)
    model = TrainableModel(read_model_info(str(tiny_clip_dir)), dataset, quick())
    assert model.reference_prompts == tuple(f'a photo of a {label}.' for label in LABELS)
    assert model.tokens['input_ids'].shape[0] == 3 + len(LABELS)
    pixels = torch.nn.functional.interpolate(torch.rand(5, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
                                             size=model.info.image_size)
    model.remember_base(pixels[:3], torch.tensor([0, 1, 2]))
    model.known = torch.tensor([False, False, False])  # new labels only
    assert model.kept_text_rows().tolist() == [False] * 3 + [True] * len(LABELS)
    labels = torch.tensor([0, 1, 2, REPLAY, REPLAY])
    with torch.no_grad():
        base = model.base_image_embeddings(pixels)
        plain = model.loss(pixels, labels, base)
        moved = base.clone()
        moved[3] = -moved[3]
        assert float(model.loss(pixels, labels, moved)) > float(plain) + 1  # a replayed scene drifting costs
        moved = base.clone()
        moved[:3] = -moved[:3]
        torch.testing.assert_close(model.loss(pixels, labels, moved), plain)  # new labels' images are free to move
    # A label the user brings that the reference vocabulary has is not a reference prompt twice.
    folder = make_folder(tmp_path / 'overlap', labels=('red cup', 'blue'))
    overlap = TrainableModel(read_model_info(str(tiny_clip_dir)), load_dataset(folder), quick())
    assert 'a photo of a red cup.' not in overlap.reference_prompts and len(overlap.reference_prompts) == 19
    custom = TrainableModel(read_model_info(str(tiny_clip_dir)), dataset, quick(reference_labels=('cat', 'dog')))
    assert custom.reference_prompts == ('a photo of a cat.', 'a photo of a dog.')


@pytest.mark.parametrize('kind', ['clip', 'vit'])
def test_replay_pool_holds_the_base_embeddings_of_what_it_draws(kind, tiny_clip_dir, tiny_vit_dir, tmp_path):
    import torch

    from robovision_ros.model_dir import read_model_info
    from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig
    from robovision_ros.tools.finetune import PixelStore, ReplayPool, TrainableModel, replay_scenes

    model_dir = tiny_clip_dir if kind == 'clip' else tiny_vit_dir
    dataset = load_dataset(make_folder(tmp_path / 'data'), val_fraction=0.25, seed=1)
    model = TrainableModel(read_model_info(str(model_dir)), dataset, quick(preserve_views=3))
    preprocessor = ImagePreprocessor(PreprocessConfig.from_model_dir(model_dir))
    scenes = list(replay_scenes(4))
    assert all(not np.array_equal(scenes[0], s) for s in scenes[1:])
    np.testing.assert_array_equal(scenes[2], list(replay_scenes(4))[2])  # seeded
    store = PixelStore(scenes, preprocessor, tmp_path)
    try:
        pool = ReplayPool(model, store, torch.Generator().manual_seed(0))
        assert pool.base.shape[0] == 12  # 4 scenes x 3 views
        images, base = pool.draw(5, torch.Generator().manual_seed(1))
        torch.testing.assert_close(base, model.base_image_embeddings(images), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(base.norm(dim=1), torch.ones(5))
    finally:
        store.close()


def test_replay_options_are_checked(tmp_path):
    from robovision_ros.tools.finetune import FinetuneError

    make_folder(tmp_path / 'ok')
    for bad in (dict(replay=1.0), dict(replay=-0.1), dict(replay_scenes=0)):
        with pytest.raises(FinetuneError, match='0 <= --replay < 1'):
            finetune('embedded:tiny_clip', tmp_path / 'ok', tmp_path / 'out', quick(**bad), progress=False)
    with pytest.raises(FinetuneError, match='expected loss weights >= 0'):
        finetune('embedded:tiny_clip', tmp_path / 'ok', tmp_path / 'out', quick(replay_weight=-1.0), progress=False)
    assert FinetuneOptions().replay > 0 and FinetuneOptions().preserve_weight > 0  # on by default
