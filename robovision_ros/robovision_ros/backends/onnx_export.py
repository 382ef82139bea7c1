# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Hugging Face model -> ONNX image and text encoders, fp16 and int8 variants, cached by model fingerprint.

Layout of an export directory:
    image_encoder.onnx          pixel_values [B,3,H,W] -> the family's image outputs (`ModelFamily.image_outputs`;
                                encoders: patch_tokens [B,N,D], global_embedding [B,Dg])
    text_encoder.onnx           input_ids, attention_mask [B,L] (L fixed) -> text_embedding [B,D]   (CLIP)
    *.fp16.onnx / *.int8.onnx   precision variants, made on demand (int8: the image encoder only, see text_precision)
    export.json                 model fingerprint, family, logit scale and bias, text length, input size
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from robovision_ros.families.base import ATTENTION_MASK, IMAGE_INPUTS, INPUT_IDS, MAX_IMAGE_SIZE, MAX_TEXT_LENGTH, \
    PIXEL_VALUES, TEXT_EMBEDDING, TEXT_INPUTS, TEXT_OUTPUTS, ModelInfo
from robovision_ros.model_dir import family_of, load_tokenizer, load_torch_model, logit_bias, logit_scale, \
    text_encoder_module, text_length, tokenize, vision_encoder_module
from robovision_ros.model_files import ModelLoadError, bounded_float, bounded_int, read_json

LOG = logging.getLogger(__name__)
OPSET = 17
IMAGE_FILE = 'image_encoder.onnx'
TEXT_FILE = 'text_encoder.onnx'
METADATA_FILE = 'export.json'
# A cached export is first written under this prefix and renamed into place once complete: an interrupted export
# (a signal during configure, a crash) never leaves a half-written entry that a later run would load.
PARTIAL_PREFIX = '.partial-'
_IN_PROGRESS: set[Path] = set()  # this process's partial export directories
_CHILDREN: set[Any] = set()  # this process's export child processes (subprocess.Popen)
_ABANDONING = threading.Event()  # set when the process abandons its exports (it is about to exit)
# How `*.int8.onnx` files are made, recorded in their ONNX metadata: a cached file of another recipe is remade.
INT8_RECIPE_KEY = 'robovision_ros.int8_recipe'
INT8_RECIPE = 'dynamic-s8-per-channel-7bit-v2'


class ExportError(RuntimeError):
    """Export or conversion of an ONNX model failed."""


@dataclass(frozen=True)
class ExportedModel:
    directory: Path
    image_path: Path
    text_path: Optional[Path]
    logit_scale: float
    text_length: int
    input_size: int
    logit_bias: float = 0.0  # SigLIP's; 0.0 for families without one (and exports that predate it)
    family: str = ''  # the family name the export was made for ('' in exports that predate it)

    def variant(self, path: Optional[Path], precision: str) -> Optional[Path]:
        """Return the path of `path`'s variant in `precision` (fp32: the file itself)."""
        if path is None or precision == 'fp32':
            return path
        return path.with_suffix(f'.{precision}.onnx')


def default_cache_dir() -> Path:
    import os

    return Path(os.environ.get('ROBOVISION_CACHE', Path.home() / '.cache' / 'robovision_ros'))


def export_onnx(info: ModelInfo, out_dir: Path, progress: Callable[[str], None] = LOG.info) -> ExportedModel:
    """Export the image (and text) encoder of `info` to ONNX in `out_dir`, checked with `onnx.checker`."""
    import onnx
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_torch_model(info)
    image_outputs = family_of(info).image_outputs
    size = info.image_size
    family_of(info).prepare_export(model, (size, size))  # the export runs this one input size
    image_path = out_dir / IMAGE_FILE
    progress(f'exporting image encoder ({size}x{size}) to {image_path}')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # tracer and deprecation chatter from the TorchScript exporter
        torch.onnx.export(
            vision_encoder_module(model, info), (torch.zeros(1, 3, size, size),), str(image_path),
            input_names=list(IMAGE_INPUTS), output_names=list(image_outputs),
            dynamic_axes={name: {0: 'batch'} for name in IMAGE_INPUTS + image_outputs},
            opset_version=OPSET, dynamo=False)
    onnx.checker.check_model(str(image_path))
    text_path = None
    length = 0
    scale, bias = 1.0, 0.0
    if info.has_text:
        tokenizer = load_tokenizer(info)
        length = text_length(tokenizer, model, info)
        tokens = tokenize(tokenizer, ['a photo'], length, 'pt')
        text_path = out_dir / TEXT_FILE
        progress(f'exporting text encoder (length {length}) to {text_path}')
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            torch.onnx.export(
                text_encoder_module(model, info), tokens, str(text_path),
                input_names=list(TEXT_INPUTS), output_names=list(TEXT_OUTPUTS),
                dynamic_axes={name: {0: 'batch'} for name in TEXT_INPUTS + TEXT_OUTPUTS},
                opset_version=OPSET, dynamo=False)
        onnx.checker.check_model(str(text_path))
        scale, bias = logit_scale(model, info), logit_bias(model, info)
    metadata = {'fingerprint': info.fingerprint, 'model_id': info.model_id, 'family': info.family,
                'logit_scale': scale, 'logit_bias': bias, 'text_length': length, 'input_size': size,
                'opset': OPSET}
    (out_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2))
    return load_export(out_dir)


def load_export(out_dir: Path) -> ExportedModel:
    """
    Read an export directory's metadata, checked: values that size allocations must be in range.

    A cached export.json may come from an older version or be damaged; a bad value is an ExportError naming it.
    """
    metadata_path = out_dir / METADATA_FILE
    if not metadata_path.is_file():
        raise ExportError(f'{out_dir} holds no ONNX export ({METADATA_FILE} missing)')
    try:
        metadata = read_json(metadata_path)
        text_length = bounded_int(metadata, 'text_length', 0, 0, MAX_TEXT_LENGTH, metadata_path)
        input_size = bounded_int(metadata, 'input_size', 0, 8, MAX_IMAGE_SIZE, metadata_path)
        scale = bounded_float(metadata, 'logit_scale', 0.0, 1e6, metadata_path)
        bias = bounded_float(metadata, 'logit_bias', -1e6, 1e6, metadata_path) if 'logit_bias' in metadata else 0.0
    except ModelLoadError as error:
        raise ExportError(f'{error}; delete {out_dir} to export again') from None
    family = metadata.get('family', '')
    text_path = out_dir / TEXT_FILE
    return ExportedModel(out_dir, out_dir / IMAGE_FILE, text_path if text_path.is_file() else None,
                         scale, text_length, input_size, bias, family if isinstance(family, str) else '')


def cached_export(info: ModelInfo, cache_dir: Optional[Path] = None) -> ExportedModel:
    """
    Return the ONNX export of `info` from the cache, exported first if the model's fingerprint is new.

    A new export is written to a partial directory and renamed into place when complete; partial directories of
    processes that are gone are removed first.
    """
    root = (cache_dir or default_cache_dir()) / 'onnx'
    directory = root / info.fingerprint
    if (directory / METADATA_FILE).is_file():
        return load_export(directory)
    remove_stale_partials(root)
    partial = root / f'{PARTIAL_PREFIX}{info.fingerprint}-{os.getpid()}'
    shutil.rmtree(partial, ignore_errors=True)
    _IN_PROGRESS.add(partial)
    try:
        if 'torch' in sys.modules:
            export_onnx(info, partial)
        else:
            export_in_child(info, partial)
        try:
            partial.rename(directory)
        except OSError:
            if not (directory / METADATA_FILE).is_file():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        _IN_PROGRESS.discard(partial)
    return load_export(directory)


@contextmanager
def written_apart(directory: Path, replace: bool = False) -> Iterator[Path]:
    """
    Yield a partial directory beside `directory`; when the block completes, rename it into place as `directory`.

    An exception (or the process ending: `abandon_partial_exports`) leaves no `directory` behind, only a partial
    that the next writer removes. `replace`: an existing `directory` is swapped out for the new one; else the first
    complete writer wins and later ones keep its entry.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = directory.parent / f'{PARTIAL_PREFIX}{directory.name}-{os.getpid()}'
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    _IN_PROGRESS.add(partial)
    try:
        yield partial
        if replace and directory.exists():
            retired = directory.parent / f'{PARTIAL_PREFIX}{directory.name}.old-{os.getpid()}'
            shutil.rmtree(retired, ignore_errors=True)
            directory.rename(retired)
            shutil.rmtree(retired, ignore_errors=True)
        try:
            partial.rename(directory)
        except OSError:
            if not directory.exists():  # not another process that finished first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        _IN_PROGRESS.discard(partial)


@contextmanager
def export_child(child: Any) -> Iterator[Any]:
    """Register a child process that writes a partial export, so that `abandon_partial_exports` stops it."""
    _CHILDREN.add(child)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        _CHILDREN.discard(child)
    if _ABANDONING.is_set():
        # The process is exiting (abandon_partial_exports killed this child): report nothing, the exit follows.
        threading.Event().wait()


def export_in_child(info: ModelInfo, out_dir: Path) -> None:
    """
    Run `export_onnx` in a child process, so that this process never imports torch for it.

    A node that runs ONNX Runtime or OpenVINO needs torch only to export, once per model: exported in the node's own
    process, torch and the model's fp32 weights (hundreds of MB) would stay resident for the node's lifetime.
    """
    code = ('import sys; from pathlib import Path; from robovision_ros.model_dir import read_model_info; '
            'from robovision_ros.backends.onnx_export import export_onnx; '
            'export_onnx(read_model_info(sys.argv[1]), Path(sys.argv[2]), progress=lambda m: None)')
    child = subprocess.Popen([sys.executable, '-c', code, str(info.path), str(out_dir)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    with export_child(child):
        _, errors = child.communicate()
    if child.returncode != 0:
        lines = [line for line in errors.strip().splitlines() if line.strip()]
        raise ExportError(f'ONNX export of {info.model_id} failed in its export process (exit {child.returncode}): '
                          f"{lines[-1] if lines else 'no message'}")


def abandon_partial_exports() -> None:
    """Stop this process's export children and remove its partial export directories (it is exiting mid-export)."""
    _ABANDONING.set()
    for child in list(_CHILDREN):
        child.kill()
    for partial in list(_IN_PROGRESS):
        shutil.rmtree(partial, ignore_errors=True)


def remove_stale_partials(root: Path) -> None:
    """Remove partial export directories whose process no longer runs (an export killed part-way)."""
    if not root.is_dir():
        return
    for entry in root.glob(f'{PARTIAL_PREFIX}*'):
        pid = entry.name.rsplit('-', 1)[-1]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def process_alive(pid: int) -> bool:
    """Whether process `pid` runs (the owner of a partial file or workspace named after it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def quantize_int8(fp32_path: Path, out_path: Path) -> Path:
    """
    Dynamic int8 quantization after ONNX Runtime's pre-processing, by recipe `INT8_RECIPE` (recorded in the file).

    Weights are signed, per channel and 7-bit (`reduce_range`): ONNX Runtime multiplies the uint8 activations by
    the int8 weights with U8S8 kernels, and on x86 without VNNI (AVX2, AVX-512 without VNNI) those sum each pair of
    products with VPMADDUBSW into a saturating int16. With 8-bit weights a pair reaches 2 * 255 * 127 = 64770 and is
    clipped to 32767, so accuracy depended on the CPU (cosine 0.97 on an AVX2 EPYC, 0.9998 with VNNI). With weights
    in [-64, 64] a pair is at most 2 * 255 * 64 = 32640: nothing saturates, and every x86 kernel (VNNI or not)
    computes the same exact integer sums. See ONNX Runtime's quantization guide (onnxruntime.ai/docs/performance/
    model-optimizations/quantization.html, "reduce_range") and the comment on `session.x64quantprecision` in
    onnxruntime_session_options_config_keys.h ("x64 SSE4.1/AVX2/AVX512 (with no VNNI) has overflow problem with
    quantized matrix multiplication with U8S8").
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_suffix('.prep.onnx')
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    quantize_dynamic(str(prepared), str(out_path), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    prepared.unlink(missing_ok=True)
    model = onnx.load(str(out_path))
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                        INT8_RECIPE_KEY: INT8_RECIPE})
    onnx.save(model, str(out_path))
    return out_path


def int8_recipe(path: Path) -> Optional[str]:
    """Return the int8 recipe recorded in an int8 ONNX file (None for files made before recipes were recorded)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((p.value for p in model.metadata_props if p.key == INT8_RECIPE_KEY), None)


def text_precision(precision: str) -> str:
    """
    Return the precision the text tower runs in for a run `precision`.

    Dynamic int8 keeps the text tower in fp32: it runs once per vocabulary change, not per frame, so int8 would save
    nothing on the hot path and only cost accuracy. Other precisions (fp16, Q/DQ) apply to both towers.
    """
    return 'fp32' if precision == 'int8' else precision


class _CalibrationReader:
    """Feeds calibration batches to onnxruntime's static quantizer."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = iter(feeds)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        return next(self._feeds, None)


def quantize_qdq_int8(fp32_path: Path, out_path: Path, calibration: Sequence[dict[str, np.ndarray]]) -> Path:
    """
    Quantize to static int8 in Q/DQ form (symmetric int8 activations and per-channel weights).

    This is the explicit quantization TensorRT builds int8 engines from. `calibration` holds representative input
    feeds.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ExportError('int8 Q/DQ quantization needs calibration inputs')
    prepared = out_path.with_suffix('.prep.onnx')
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    quantize_static(str(prepared), str(out_path), _CalibrationReader(calibration), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.MinMax, op_types_to_quantize=['MatMul', 'Gemm', 'Conv'],
                    extra_options={'ActivationSymmetric': True, 'WeightSymmetric': True})
    prepared.unlink(missing_ok=True)
    return out_path


def calibration_feeds(info: ModelInfo, exported: ExportedModel, images: Sequence[np.ndarray],
                      texts: Sequence[str], batch: int = 8) -> tuple[list[dict[str, np.ndarray]],
                                                                     list[dict[str, np.ndarray]]]:
    """Image and text feeds for calibration, preprocessed exactly as at run time."""
    from robovision_ros.preprocessing import ImagePreprocessor

    preprocessor = ImagePreprocessor(family_of(info).preprocess_config(info))
    image_feeds = [{PIXEL_VALUES: preprocessor(images[i:i + batch])} for i in range(0, len(images), batch)]
    text_feeds: list[dict[str, np.ndarray]] = []
    if exported.text_path is not None and texts:
        tokenizer = load_tokenizer(info)
        for i in range(0, len(texts), batch):
            ids, mask = tokenize(tokenizer, texts[i:i + batch], exported.text_length)
            text_feeds.append({INPUT_IDS: ids, ATTENTION_MASK: mask})
    return image_feeds, text_feeds


def convert_fp16(fp32_path: Path, out_path: Path) -> Path:
    """fp16 weights and compute, fp32 inputs and outputs (for the CUDA and TensorRT providers)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
    onnx.save(model, str(out_path))
    return out_path


def precision_variant(exported: ExportedModel, path: Optional[Path], precision: str) -> Optional[Path]:
    """
    Return the path of the ONNX file for `precision`, made from the fp32 file if needed.

    The file is made if it does not exist yet or, for int8, was made by another recipe than `INT8_RECIPE`.
    """
    target = exported.variant(path, precision)
    if path is None or target is None:
        return target
    if target.is_file():
        if precision != 'int8':
            return target
        recipe = int8_recipe(target)
        if recipe == INT8_RECIPE:
            return target
        LOG.info('remaking %s: made by int8 recipe %s, current is %s', target.name, recipe, INT8_RECIPE)
    if precision == 'int8':
        return quantize_int8(path, target)
    if precision == 'fp16':
        return convert_fp16(path, target)
    if precision == 'qdq':
        raise ExportError(f'{target} missing: make the int8 Q/DQ model with calibration images first '
                          '(robovision_export MODEL --out DIR --int8-qdq [--calibration-images DIR])')
    raise ExportError(f"no ONNX variant for precision '{precision}'; supported: fp32, fp16, int8, qdq")


def parity_check(info: ModelInfo, exported: ExportedModel, precision: str = 'fp32', seed: int = 0) -> dict[str, float]:
    """Max abs difference between ONNX Runtime (CPU) and PyTorch fp32 on random inputs, per output."""
    import onnxruntime as ort
    import torch

    model = load_torch_model(info)
    rng = np.random.default_rng(seed)
    pixels = rng.standard_normal((2, 3, exported.input_size, exported.input_size)).astype(np.float32)
    image_path = precision_variant(exported, exported.image_path, precision)
    session = ort.InferenceSession(str(image_path), providers=['CPUExecutionProvider'])
    names = family_of(info).image_outputs
    outputs = session.run(list(names), {PIXEL_VALUES: pixels})
    with torch.inference_mode():
        references = vision_encoder_module(model, info)(torch.from_numpy(pixels))
    result = {name: float(np.abs(ours - reference.numpy()).max())
              for name, ours, reference in zip(names, outputs, references)}
    if exported.text_path is not None:
        tokenizer = load_tokenizer(info)
        ids, mask = tokenize(tokenizer, ['a photo of a red cup', 'blue bottle'], exported.text_length)
        text_path = precision_variant(exported, exported.text_path, text_precision(precision))
        session = ort.InferenceSession(str(text_path), providers=['CPUExecutionProvider'])
        (text,) = session.run([TEXT_EMBEDDING], {INPUT_IDS: ids, ATTENTION_MASK: mask})
        with torch.inference_mode():
            ref_text = text_encoder_module(model, info)(torch.from_numpy(ids), torch.from_numpy(mask))
        result[TEXT_EMBEDDING] = float(np.abs(text - ref_text.numpy()).max())
    return result
