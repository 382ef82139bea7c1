# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""robovision_finetune on the tiny random models: data checks, LoRA and adapter outputs that load like any model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robovision_ros.tools.finetune import DatasetError, FinetuneError, FinetuneOptions, finetune, load_dataset

COLOURS = {'red': (200, 30, 30), 'blue': (30, 40, 200), 'green': (40, 170, 50)}


def make_folder(root: Path, labels=('red', 'blue', 'green'), per_label: int = 4, corrupt: bool = False) -> Path:
    """DIR/<label>/*.png of noisy colour patches on a grey background."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in labels:
        (root / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_label):
            image = np.full((48, 64, 3), 128, np.uint8)
            y, x = rng.integers(0, 24), rng.integers(0, 32)
            image[y:y + 24, x:x + 32] = COLOURS.get(label, (90, 90, 90))
            image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / label / f'{n}.png')
    if corrupt:
        (root / labels[0] / 'broken.png').write_bytes(b'not a png at all')
    return root


def quick(method: str = 'lora', **kwargs) -> FinetuneOptions:
    values = dict(method=method, rank=4, alpha=8.0, bottleneck=8, steps=4, batch=4, checkpoint_every=2,
                  heldout_scenes=0, seed=3, replay_scenes=4)
    values.update(kwargs)
    return FinetuneOptions(**values)


def test_data_errors_say_what_was_expected(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DatasetError, match='no images found'):
        load_dataset(tmp_path / 'empty')
    with pytest.raises(DatasetError, match='at least two'):
        load_dataset(make_folder(tmp_path / 'one', labels=('red',)))
    with pytest.raises(DatasetError, match='same after normalisation'):
        load_dataset(make_folder(tmp_path / 'clash', labels=('Red_Cup', 'red  cup')))
    data = load_dataset(make_folder(tmp_path / 'ok', corrupt=True), val_fraction=0.25, seed=1)
    assert data.labels == ('blue', 'green', 'red') and data.prompts[0] == 'a photo of a blue.'
    assert [Path(p).name for p, _ in data.skipped] == ['broken.png']
    assert len(data.train) == 9 and len(data.val) == 3 and {e.label for e in data.val} == {0, 1, 2}
    again = load_dataset(tmp_path / 'ok', val_fraction=0.25, seed=1)
    assert [e.path for e in again.val] == [e.path for e in data.val]  # seeded split
    lines = [json.dumps({'image': f'ok/{c}/{n}.png', 'text': f'a photo of a {c} patch.'})
             for c in COLOURS for n in range(4)]
    (tmp_path / 'data.jsonl').write_text('\n'.join(lines))
    data = load_dataset(tmp_path / 'data.jsonl')
    assert data.prompts == data.labels == ('a photo of a blue patch.', 'a photo of a green patch.',
                                           'a photo of a red patch.')
    for bad in (dict(zoom=1.0), dict(shift=-1), dict(steps=0), dict(mix=1.0), dict(mix=-0.1),
                dict(preserve_views=0)):
        with pytest.raises(FinetuneError, match='expected 0 <= --zoom < 1'):
            finetune('embedded:tiny_clip', tmp_path / 'ok', tmp_path / 'out', quick(**bad), progress=False)
    for bad in (dict(preserve_weight=-0.1), dict(mix_weight=float('nan')), dict(presence_weight=-1.0)):
        with pytest.raises(FinetuneError, match='expected loss weights >= 0'):
            finetune('embedded:tiny_clip', tmp_path / 'ok', tmp_path / 'out', quick(**bad), progress=False)


def test_lora_clip_output_loads_like_any_model(tiny_clip_dir, model_cache, tmp_path):
    from safetensors.numpy import load_file

    from robovision_ros.encoder import PerceptionEncoder
    from robovision_ros.model_dir import read_model_info

    out = tmp_path / 'clip_lora'
    report = finetune(str(tiny_clip_dir), make_folder(tmp_path / 'data', corrupt=True), out, quick(lr=5e-3),
                      progress=False, log=lambda _: None)
    assert (out / 'lora_adapter' / 'adapter_config.json').is_file()
    assert [Path(s['path']).name for s in report['skipped_images']] == ['broken.png']
    assert report['trainable_params'] < report['total_params'] / 10 and report['adapter_bytes'] > 0
    assert 0 <= report['val_accuracy_after'] <= 1 and (out / 'report.md').is_file()
    assert report['training_cpu_s'] > 0
    assert f"({report['training_cpu_s']:.0f} s of CPU)" in (out / 'report.md').read_text()
    info = read_model_info(str(out))
    assert info.model_type == 'clip' and info.fingerprint != read_model_info(str(tiny_clip_dir)).fingerprint
    base, tuned = load_file(str(tiny_clip_dir / 'model.safetensors')), load_file(str(out / 'model.safetensors'))
    assert base.keys() == tuned.keys()  # merged: plain CLIP weights, no LoRA names
    for name in ('vision_model.encoder.layers.0.mlp.fc1.weight', 'text_model.embeddings.token_embedding.weight'):
        assert not np.allclose(base[name], tuned[name]), name  # the default CLIP LoRA targets, merged
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    outputs = {}
    for backend in ('torch', 'onnxruntime'):
        encoder = PerceptionEncoder(str(out), backend, 'cpu', 'fp32', cache_dir=model_cache)
        outputs[backend] = encoder.encode_images([image])[0][0].global_embedding
        assert encoder.encode_texts(['a photo of a red.']).shape == (1, info.global_dim)
        encoder.close()
    np.testing.assert_allclose(outputs['onnxruntime'], outputs['torch'], atol=1e-4)


def test_adapters_are_inserted_by_the_loader_and_exported(tiny_clip_dir, model_cache, tmp_path):
    from robovision_ros.encoder import PerceptionEncoder
    from robovision_ros.model_dir import ADAPTERS_KEY, load_torch_model, read_model_info

    out = tmp_path / 'clip_adapter'
    report = finetune(str(tiny_clip_dir), make_folder(tmp_path / 'data'), out, quick('adapter', lr=5e-3),
                      progress=False, log=lambda _: None)
    config = json.loads((out / 'config.json').read_text())
    assert config[ADAPTERS_KEY]['blocks'] == 4 and config[ADAPTERS_KEY]['bottleneck'] == 8  # 2 vision + 2 text
    assert report['adapter_bytes'] == (out / 'adapters.safetensors').stat().st_size
    model = load_torch_model(read_model_info(str(out)))
    ups = [m.up.weight for name, m in model.named_modules() if name.endswith('.adapter')]
    assert len(ups) == 4 and any(float(w.detach().abs().max()) > 0 for w in ups)  # trained, not the zero init
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8)
    embeddings = {}
    for name, model_dir, backend in (('base', tiny_clip_dir, 'onnxruntime'), ('torch', out, 'torch'),
                                     ('onnxruntime', out, 'onnxruntime')):
        encoder = PerceptionEncoder(str(model_dir), backend, 'cpu', 'fp32', cache_dir=model_cache)
        features = encoder.encode_images([image])[0][0]
        embeddings[name] = np.concatenate([features.global_embedding, features.patch_tokens.ravel()])
        encoder.close()
    np.testing.assert_allclose(embeddings['onnxruntime'], embeddings['torch'], atol=1e-4)
    assert np.abs(embeddings['torch'] - embeddings['base']).max() > 1e-4  # the adapters are in the graph


def test_vit_class_scores_equal_hf_logits_softmax(tiny_vit_dir, model_cache, tmp_path):
    import torch
    from transformers import ViTForImageClassification

    from robovision_ros.encoder import PerceptionEncoder

    out = tmp_path / 'vit_lora'
    report = finetune(str(tiny_vit_dir), make_folder(tmp_path / 'data'), out, quick(lr=5e-3), progress=False,
                      log=lambda _: None)
    assert 'val_accuracy_linear_probe' in report and 'val_accuracy_before' not in report  # no head before
    text = (out / 'report.md').read_text()
    assert 'nan' not in text.lower() and 'validation top-1 before' not in text
    assert '| frozen backbone + linear head (validation top-1) |' in text
    json.loads((out / 'report.json').read_text(), parse_constant=lambda name: pytest.fail(f'{name} in report.json'))
    image = np.random.default_rng(2).integers(0, 255, (48, 64, 3), np.uint8)
    hf = ViTForImageClassification.from_pretrained(str(out)).eval()
    for backend in ('torch', 'onnxruntime'):
        encoder = PerceptionEncoder(str(out), backend, 'cpu', 'fp32', cache_dir=model_cache)
        features = encoder.encode_images([image], normalize=True)[0][0]  # logits come from the raw embedding
        result = encoder.classify(features)
        with torch.no_grad():
            expected = torch.softmax(hf(pixel_values=torch.from_numpy(encoder.prepare([image]))).logits, -1)[0]
        encoder.close()
        assert result.labels == ('blue', 'green', 'red')
        np.testing.assert_allclose(result.scores, expected.numpy(), atol=1e-5)
        assert result.best_label == result.labels[int(expected.argmax())]


def knows_everything(self, pixels, targets, chunk=256):
    """Stands in for TrainableModel.remember_base: the random tiny CLIP knows no label; say it knows them all."""
    import torch

    self.base_text = self.text_embeddings(self.base).detach()
    self.known = torch.ones(self.label_count, dtype=torch.bool)


@pytest.mark.parametrize('kind', ['vit', 'clip'])
def test_resume_continues_to_the_same_weights(kind, tiny_vit_dir, tiny_clip_dir, tmp_path, monkeypatch):
    from safetensors.numpy import load_file

    from robovision_ros.tools.finetune import TrainableModel

    if kind == 'clip':  # CLIP resumes with the same preservation pool and composites
        monkeypatch.setattr(TrainableModel, 'remember_base', knows_everything)
    model_dir = str(tiny_vit_dir if kind == 'vit' else tiny_clip_dir)
    data = make_folder(tmp_path / 'data')
    options = quick('adapter', steps=6, checkpoint_every=3, batch=8, mix=0.25, preserve_views=2)
    finetune(model_dir, data, tmp_path / 'straight', options, progress=False, log=lambda _: None)
    stopped = finetune(model_dir, data, tmp_path / 'resumed', options, stop_after=3, progress=False,
                       log=lambda _: None)
    assert stopped == {'stopped_at': 3, 'interrupted': False} and not (tmp_path / 'resumed' / 'config.json').exists()
    report = finetune(model_dir, data, tmp_path / 'resumed', options, resume=True, progress=False,
                      log=lambda _: None)
    assert report['steps'] == 6
    for name in ('adapters.safetensors', 'model.safetensors'):
        straight = load_file(str(tmp_path / 'straight' / name))
        resumed = load_file(str(tmp_path / 'resumed' / name))
        for key in straight:  # exact: the same seeded steps on the same machine, resumed or not (no second path)
            np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)


def test_augment_mirrors_shifts_and_zooms_as_drawn():
    import torch

    from robovision_ros.tools.finetune import augment, random_affine

    pixels = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    identity = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    torch.testing.assert_close(augment(pixels, identity), pixels)
    mirror = torch.tensor([[-1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    torch.testing.assert_close(augment(pixels, mirror), pixels.flip(-1))
    right = torch.tensor([[1.0, 0, -2 * 2 / 8], [0, 1.0, 0]]).expand(2, 2, 3)  # content 2 px right, edge replicated
    shifted = augment(pixels, right)
    torch.testing.assert_close(shifted[..., 2:], pixels[..., :-2])
    torch.testing.assert_close(shifted[..., 0], pixels[..., 0])
    # Draws stay within their bounds, are seeded, and include both mirrored and plain images.
    theta = random_affine(400, 64, 6, 0.15, torch.Generator().manual_seed(0))
    scale = theta[:, 1, 1]
    assert float(scale.min()) >= 1 / 1.15 - 1e-6 and float(scale.max()) <= 1 / 0.85 + 1e-6
    # exact: the x scale is the y scale's value, copied with its sign flipped or not
    assert bool((theta[:, 0, 0].abs() == scale).all()) and 0 < int((theta[:, 0, 0] < 0).sum()) < 400
    assert float(theta[:, :, 2].abs().max()) <= 2 * 6 / 64 + 1e-6
    torch.testing.assert_close(theta, random_affine(400, 64, 6, 0.15, torch.Generator().manual_seed(0)))
    plain = random_affine(5, 64, 0, 0.0, torch.Generator().manual_seed(0))
    assert bool((plain[:, :, 2] == 0).all()) and bool((plain[:, 1, 1] == 1).all())  # constants: exact


def test_composite_joins_two_images_at_the_cut():
    import torch

    from robovision_ros.tools.finetune import composite

    left, right = torch.zeros(2, 3, 4, 8), torch.ones(2, 3, 4, 8)
    joined = composite(left, right, torch.tensor([3, 6]))  # copies of 0 and 1: compared exactly
    assert bool((joined[0, ..., :3] == 0).all()) and bool((joined[0, ..., 3:] == 1).all())
    assert bool((joined[1, ..., :6] == 0).all()) and bool((joined[1, ..., 6:] == 1).all())


def test_composites_count_only_towards_preservation(tiny_clip_dir, tmp_path, monkeypatch):
    from dataclasses import replace

    import torch

    from robovision_ros.model_dir import read_model_info
    from robovision_ros.tools.finetune import TrainableModel

    dataset = load_dataset(make_folder(tmp_path / 'data'), val_fraction=0.25, seed=1)
    model = TrainableModel(read_model_info(str(tiny_clip_dir)), dataset, quick(preserve_weight=1.0))
    pixels = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    pixels = torch.nn.functional.interpolate(pixels, size=model.info.image_size)
    model.remember_base(pixels[:3], torch.tensor([0, 1, 2]))
    model.known = torch.tensor([True, False, True])  # the random tiny model knows nothing; say it knows two labels
    labels = torch.tensor([0, 1, 2, 0, -1, -1])  # two composites at the end
    with torch.no_grad():
        base = model.base_image_embeddings(pixels)  # LoRA starts at zero: the tuned model equals the base
        plain = model.loss(pixels[:4], labels[:4], base[:4])
        with_composites = model.loss(pixels, labels, base)
        torch.testing.assert_close(with_composites, plain)  # no drift yet, and composites have no label
        moved = base.clone()
        moved[5] = -moved[5]
        assert float(model.loss(pixels, labels, moved)) > float(plain) + 1  # a composite drifting is penalised
        model.options = replace(model.options, mix_weight=0.0)
        torch.testing.assert_close(model.loss(pixels, labels, moved), plain)  # ... by --mix-weight
        moved = base.clone()
        moved[1] = -moved[1]
        torch.testing.assert_close(model.loss(pixels, labels, moved), plain)  # an unknown label's image is free
        unread = base.clone()
        unread[1] = 0  # the preservation pool leaves new labels' rows zero: never read
        torch.testing.assert_close(model.loss(pixels, labels, unread), model.loss(pixels, labels, base))

    seen = []
    original = TrainableModel.loss

    def spy(self, pixels, targets, base_image=None):
        seen.append(targets.tolist())
        return original(self, pixels, targets, base_image)

    monkeypatch.setattr(TrainableModel, 'loss', spy)
    monkeypatch.setattr(TrainableModel, 'remember_base', knows_everything)
    finetune(str(tiny_clip_dir), tmp_path / 'data', tmp_path / 'out', quick(batch=8, mix=0.25, steps=2, replay=0),
             progress=False, log=lambda _: None)
    assert len(seen) == 2 and all(len(t) == 8 and t[-2:] == [-1, -1] and min(t[:6]) >= 0 for t in seen)


def test_preservation_pool_holds_the_base_embeddings_of_what_it_draws(tiny_clip_dir, tmp_path):
    import torch

    from robovision_ros.model_dir import read_model_info
    from robovision_ros.tools.finetune import PreservationPool, TrainableModel, augment

    dataset = load_dataset(make_folder(tmp_path / 'data'), val_fraction=0.25, seed=1)
    model = TrainableModel(read_model_info(str(tiny_clip_dir)), dataset, quick(preserve_views=3))
    size = model.info.image_size
    pixels = torch.nn.functional.interpolate(torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
                                             size=size)
    known = torch.tensor([0, 2, 3])  # images 1, 4 and 5 are of new labels
    pool = PreservationPool(model, pixels, known, torch.Generator().manual_seed(0))
    assert pool.single.shape[:2] == (3, 3) and len(pool.cuts) == 4  # 3 views each, half as many composites
    assert set(pool.pairs.flatten().tolist()) <= {0, 2, 3}
    idx = torch.tensor([0, 1, 2, 3, 4, 5, 0, 0])
    images, base = pool.draw(pixels, idx, 3, torch.Generator().manual_seed(1))
    assert images.shape == (11, 3, size, size) and base.shape == (11, model.base.visual_projection.out_features)
    read = torch.tensor([0, 2, 3, 6, 7, 8, 9, 10])  # known labels' images and the composites
    torch.testing.assert_close(base[read], model.base_image_embeddings(images[read]), atol=1e-5, rtol=1e-4)
    assert bool((base[[1, 4, 5]] == 0).all())  # rows left at zero: exact
    # A known image is one of its pooled views; an image of a new label is augmented afresh at each draw.
    views = [augment(pixels[[0]], pool.theta[0, v:v + 1]) for v in range(3)]
    assert any(torch.equal(images[0], view[0]) for view in views)  # the same augment call on the same input: exact
    again, _ = pool.draw(pixels, idx, 3, torch.Generator().manual_seed(2))
    assert not torch.equal(images[1], again[1])


def test_cli_options_are_the_tools_options(tmp_path, monkeypatch, capsys):
    from robovision_ros.tools import finetune as tool

    seen = []

    def fake_finetune(model_id, data, out, options, resume=False, overwrite=False):
        seen.append((model_id, data, options, resume))
        out.mkdir(parents=True, exist_ok=True)
        (out / 'report.md').write_text('# report\n')
        return {'ok': True}

    monkeypatch.setattr(tool, 'finetune', fake_finetune)
    out = tmp_path / 'out'
    assert tool.main(['embedded:tiny_clip', 'data', '--out', str(out)]) == 0
    assert seen[-1] == ('embedded:tiny_clip', Path('data'), FinetuneOptions(), False)  # defaults: the Python API's
    assert tool.main(['embedded:tiny_clip', 'data', '--out', str(out), '--method', 'adapter', '--bottleneck', '128',
                      '--steps', '2000', '--mix-weight', '0.4', '--preserve-views', '4', '--target-modules', 'fc1',
                      'fc2', '--resume']) == 0
    assert seen[-1][2:] == (FinetuneOptions(method='adapter', bottleneck=128, steps=2000, mix_weight=0.4,
                                            preserve_views=4, target_modules=('fc1', 'fc2')), True)
    assert '# report' in capsys.readouterr().out
    monkeypatch.undo()
    assert tool.main(['embedded:tiny_clip', str(tmp_path), '--out', str(out), '--mix', '1.5']) == 2
    error = capsys.readouterr().err
    assert error.startswith('robovision_finetune: expected 0 <= --zoom < 1') and error.count('\n') == 1
