# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""robovision_finetune as a user meets it: odd images, missing files, the output folder, checkpoints, Ctrl-C."""
from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest

from robovision_ros.tools.finetune import CHECKPOINT_FILE, DatasetError, FinetuneError, FinetuneOptions, finetune, \
    load_dataset, main
from test_finetune import make_folder, quick


def test_sixteen_bit_grey_png_trains_on_the_pixels_serving_decodes(tmp_path):
    import cv2

    from robovision_ros.image_codec import decode_compressed_image
    from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig
    from robovision_ros.synthetic.tiny_models import clip_preprocessor_config
    from robovision_ros.tools.finetune import PixelStore

    data = make_folder(tmp_path / 'data')
    ramp = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)  # 0 .. 64491
    path = data / 'red' / 'grey16.png'
    assert cv2.imwrite(str(path), ramp)
    dataset = load_dataset(data, val_fraction=0.0)
    (example,) = [e for e in dataset.train if e.path == str(path)]
    image = example.image()
    served = decode_compressed_image(path.read_bytes(), 'png')  # what clip_perception makes of the same bytes
    np.testing.assert_array_equal(image, served)
    np.testing.assert_array_equal(image, np.repeat((ramp >> 8).astype(np.uint8)[..., None], 3, axis=2))
    assert int(image.min()) == 0 and int(image.max()) == 251  # not saturated to white
    # The batches training reads are the preprocessor's output for those pixels.
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(clip_preprocessor_config(32)))
    store = PixelStore((e.image() for e in dataset.train), preprocessor, tmp_path)
    try:
        row = [e.path for e in dataset.train].index(str(path))
        np.testing.assert_array_equal(store[[row, 0]].numpy(), preprocessor([served, dataset.train[0].image()]))
        assert store.shape == (len(dataset.train), 3, 32, 32)
    finally:
        store.close()
    assert not list(tmp_path.glob('.pixels-*'))  # the file behind the store is gone


def test_the_training_images_are_streamed_from_disk(tmp_path):
    """
    A data set is paths until training reads a batch: memory holds a batch, not the data set (issue 27 defect 7).

    Measured with tracemalloc (numpy reports its buffers to it): storing 2,000 images of 64x64 (24 MB decoded)
    allocates less than 2 MB at its peak, and the batches still read after every source file is deleted.
    """
    import dataclasses
    import tracemalloc

    from robovision_ros.preprocessing import ImagePreprocessor, PreprocessConfig
    from robovision_ros.synthetic.tiny_models import clip_preprocessor_config
    from robovision_ros.tools.finetune import Example, PixelStore

    assert [f.name for f in dataclasses.fields(Example)] == ['path', 'label']  # no decoded pixels kept per example
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(clip_preprocessor_config(32)))
    rng = np.random.default_rng(3)
    first = rng.integers(0, 256, (64, 64, 3), np.uint8)

    def images():
        yield first
        for _ in range(1999):
            yield rng.integers(0, 256, (64, 64, 3), np.uint8)

    tracemalloc.start()
    try:
        store = PixelStore(images(), preprocessor, tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    try:
        assert store.shape == (2000, 3, 32, 32)
        assert peak < 2 * 1024 * 1024, f'{peak} bytes at the peak while storing 24 MB of images'
        np.testing.assert_array_equal(store[[0]].numpy(), preprocessor([first]))
    finally:
        store.close()
    data = make_folder(tmp_path / 'data')
    dataset = load_dataset(data, val_fraction=0.0)
    store = PixelStore((e.image() for e in dataset.train), preprocessor, tmp_path)
    try:
        want = preprocessor([dataset.train[-1].image()])
        for example in dataset.train:
            os.remove(example.path)
        np.testing.assert_array_equal(store[[len(dataset.train) - 1]].numpy(), want)
    finally:
        store.close()


def test_a_label_whose_every_image_is_missing_names_the_files(tmp_path):
    make_folder(tmp_path / 'ok', labels=('red',))
    lines = [{'image': f'ok/red/{n}.png', 'text': 'a photo of a red patch.'} for n in range(4)]
    lines += [{'image': f'gone/blue_{n}.png', 'text': 'a photo of a blue patch.'} for n in range(5)]
    (tmp_path / 'data.jsonl').write_text('\n'.join(json.dumps(line) for line in lines))
    with pytest.raises(DatasetError) as error:
        load_dataset(tmp_path / 'data.jsonl')
    message = str(error.value)
    assert message.startswith("label 'a photo of a blue patch.': none of its 5 images could be read: ")
    for n in range(3):
        assert str(tmp_path / 'gone' / f'blue_{n}.png') in message
    assert 'blue_3.png' not in message and 'and 2 more' in message and 'FileNotFoundError' in message
    assert '\n' not in message


def test_mirroring_can_be_turned_off(tmp_path, monkeypatch):
    import torch

    from robovision_ros.tools import finetune as tool
    from robovision_ros.tools.finetune import random_affine

    mirrored = random_affine(200, 64, 6, 0.15, torch.Generator().manual_seed(0))
    plain = random_affine(200, 64, 6, 0.15, torch.Generator().manual_seed(0), mirror=False)
    assert bool((mirrored[:, 0, 0] < 0).any()) and bool((plain[:, 0, 0] > 0).all())
    torch.testing.assert_close(plain[:, 0, 0], mirrored[:, 0, 0].abs())  # the same draws, never mirrored
    torch.testing.assert_close(plain[:, 1:], mirrored[:, 1:])
    torch.testing.assert_close(plain[:, 0, 1:], mirrored[:, 0, 1:])
    assert FinetuneOptions().mirror and 'mirror' in FinetuneOptions().identity()
    seen = []

    def fake_finetune(model_id, data, out, options, resume=False, overwrite=False):
        seen.append(options)
        out.mkdir(parents=True, exist_ok=True)
        (out / 'report.md').write_text('# report\n')
        return {'ok': True}

    monkeypatch.setattr(tool, 'finetune', fake_finetune)
    tool.main(['embedded:tiny_clip', 'data', '--out', str(tmp_path / 'out'), '--no-mirror'])
    tool.main(['embedded:tiny_clip', 'data', '--out', str(tmp_path / 'out')])
    assert [o.mirror for o in seen] == [False, True]


def test_a_non_empty_output_folder_is_refused_unless_overwritten(tiny_clip_dir, tmp_path, capsys):
    from robovision_ros.tools.finetune import prepare_output

    data = make_folder(tmp_path / 'data')
    out = tmp_path / 'out'
    finetune(str(tiny_clip_dir), data, out, quick('adapter', steps=2), progress=False, log=lambda _: None)
    assert (out / 'adapters.safetensors').is_file()
    with pytest.raises(FinetuneError, match=r'--out .* is not empty \(adapters.safetensors, .*--overwrite'):
        finetune(str(tiny_clip_dir), data, out, quick('lora', steps=2), progress=False, log=lambda _: None)
    capsys.readouterr()
    assert main([str(tiny_clip_dir), str(data), '--out', str(out), '--steps', '2', '--heldout-scenes', '0']) == 2
    error = capsys.readouterr().err
    assert error.startswith(f'robovision_finetune: --out {out} is not empty') and error.count('\n') == 1  # no load
    finetune(str(tiny_clip_dir), data, out, quick('lora', steps=2), progress=False, log=lambda _: None,
             overwrite=True)
    assert (out / 'lora_adapter').is_dir() and not (out / 'adapters.safetensors').exists()  # the old run is gone
    with pytest.raises(FinetuneError, match='--overwrite would delete'):
        prepare_output(tmp_path, resume=False, overwrite=True, keep=(data,))
    assert (data / 'red' / '0.png').is_file()
    with pytest.raises(FinetuneError, match='--resume .* --overwrite'):
        prepare_output(out, resume=True, overwrite=True)
    (tmp_path / 'file').write_text('x')
    with pytest.raises(FinetuneError, match='is a file'):
        prepare_output(tmp_path / 'file', resume=False, overwrite=False)
    empty = tmp_path / 'empty'
    empty.mkdir()
    prepare_output(empty, resume=False, overwrite=False)  # an empty folder is fine


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    import torch

    from robovision_ros.tools.finetune import load_checkpoint, save_checkpoint

    path = tmp_path / 'checkpoints' / 'last.pt'
    state = {key: 1 for key in ('step', 'options', 'elapsed_s', 'trainable', 'optimizer', 'generator', 'torch_rng')}
    save_checkpoint(state, path)
    assert load_checkpoint(path) == state

    def dies_halfway(obj, file):
        file.write(b'PK\x03\x04 half a checkpoint')
        raise KeyboardInterrupt  # killed in the middle of the write

    monkeypatch.setattr(torch, 'save', dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({**state, 'step': 2}, path)
    assert load_checkpoint(path) == state  # the previous checkpoint is whole
    assert [p.name for p in path.parent.iterdir()] == ['last.pt']  # and no partial file is left beside it


def test_a_truncated_checkpoint_is_one_line(tiny_vit_dir, tmp_path, capsys):
    data = make_folder(tmp_path / 'data')
    out = tmp_path / 'out'
    options = quick('adapter', steps=6, checkpoint_every=3)
    assert finetune(str(tiny_vit_dir), data, out, options, stop_after=3, progress=False,
                    log=lambda _: None)['stopped_at'] == 3
    checkpoint = out / CHECKPOINT_FILE
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    with pytest.raises(FinetuneError, match='not a readable checkpoint'):
        finetune(str(tiny_vit_dir), data, out, options, resume=True, progress=False, log=lambda _: None)
    checkpoint.write_bytes(b'')
    capsys.readouterr()
    assert main([str(tiny_vit_dir), str(data), '--out', str(out), '--method', 'adapter', '--bottleneck', '8',
                 '--steps', '6', '--batch', '4', '--checkpoint-every', '3', '--seed', '3', '--heldout-scenes', '0',
                 '--replay-scenes', '4', '--resume']) == 2
    error = capsys.readouterr().err  # after the model loader's progress bar
    assert error.splitlines()[-1].startswith(f'robovision_finetune: {checkpoint}: not a readable checkpoint '
                                             '(EOFError: the file ends early)')
    assert 'Traceback' not in error


def interrupt_at_call(monkeypatch, call: int) -> None:
    """Send this process SIGINT (what Ctrl-C does) from inside the `call`-th training step."""
    from robovision_ros.tools.finetune import TrainableModel

    calls = []
    original = TrainableModel.loss

    def loss(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TrainableModel, 'loss', loss)


def test_ctrl_c_saves_a_checkpoint_that_resumes_to_the_same_weights(tiny_vit_dir, tmp_path, monkeypatch, capsys):
    from safetensors.numpy import load_file

    data = make_folder(tmp_path / 'data')
    options = quick('adapter', steps=6, checkpoint_every=100, batch=8)
    finetune(str(tiny_vit_dir), data, tmp_path / 'straight', options, progress=False, log=lambda _: None)
    with monkeypatch.context() as patch:
        interrupt_at_call(patch, 3)
        stopped = finetune(str(tiny_vit_dir), data, tmp_path / 'resumed', options, progress=False,
                           log=lambda _: None)
    assert stopped == {'stopped_at': 3, 'interrupted': True}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    report = finetune(str(tiny_vit_dir), data, tmp_path / 'resumed', options, resume=True, progress=False,
                      log=lambda _: None)
    assert report['steps'] == 6
    for name in ('adapters.safetensors', 'model.safetensors'):
        straight = load_file(str(tmp_path / 'straight' / name))
        resumed = load_file(str(tmp_path / 'resumed' / name))
        for key in straight:
            np.testing.assert_array_equal(straight[key], resumed[key], err_msg=key)
    # The command line: one line, no traceback, exit status 130 as for any Ctrl-C.
    interrupt_at_call(monkeypatch, 2)
    out = tmp_path / 'cli'
    capsys.readouterr()
    assert main([str(tiny_vit_dir), str(data), '--out', str(out), '--steps', '6', '--batch', '4',
                 '--heldout-scenes', '0', '--replay-scenes', '4']) == 130
    error = capsys.readouterr().err  # after the model loader's progress bar
    assert error.splitlines()[-1] == (f'robovision_finetune: interrupted at step 2 of 6; checkpoint saved in '
                                      f'{out / CHECKPOINT_FILE} (continue with --resume)')
    assert 'Traceback' not in error and 'KeyboardInterrupt' not in error
