# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
OpenVINO backend: the project's ONNX export converted to OpenVINO IR; fp32, bf16 (CPUs with bf16) and int8 (NNCF).

Where the IR lives (under the engine cache, next to the ONNX export it is made from, same model fingerprint):

    <cache>/openvino/<fingerprint>/image.fp32/   model.xml + model.bin + meta.json   (converted ONNX, fp32 weights)
                                   text.fp32/    the text encoder (CLIP)
                                   image.int8/   NNCF post-training quantization of image.fp32 (calibrated)
                                   text.int8w/   text encoder with int8 weights (NNCF weight compression, data-free)

Each entry is written in a partial directory and renamed into place when complete (onnx_export.written_apart): an
interrupted conversion or quantization never leaves an entry a later run would load. `meta.json` records the recipe;
an entry of another recipe is remade.

Precisions: fp32 runs with inference precision f32 (OpenVINO's CPU default is bf16 where the CPU has it, which
would make "fp32" silently bf16); bf16 with inference precision bf16, refused on a CPU without bf16; int8 runs the
NNCF model (int8 MatMuls, the rest at the plugin's default precision) and passes the int8 accuracy gate at load.
The text tower runs fp32 for fp32, bf16 for bf16, and with int8 weights (f32 compute) for int8: it runs once per
vocabulary change, so int8 weights only save its memory.

OpenVINO devices: `openvino_device` CPU (default), GPU (Intel integrated/discrete GPU) or NPU (Intel NPU), as
OpenVINO lists them. The node's `device` stays cpu (where preprocessing runs). GPU and NPU are written against the
OpenVINO API and tested with a test double only: no Intel GPU or NPU was available to verify them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from robovision_ros.backends.base import INT8_STATIC_NNCF, BackendCapabilities, BackendEntry, BackendRequest, \
    BackendUnavailableError, EncoderBackend, StoredReference, store_reference
from robovision_ros.backends.onnx_export import ExportError, ExportedModel, cached_export, default_cache_dir, \
    export_child, remove_stale_partials, written_apart
from robovision_ros.families.base import ATTENTION_MASK, INPUT_IDS, PIXEL_VALUES, TEXT_EMBEDDING, ModelInfo
from robovision_ros.model_dir import family_of
from robovision_ros.parameters import FIXED, ParameterRule, ParameterSpec

LOG = logging.getLogger(__name__)

OPENVINO_DEVICES = ('CPU', 'GPU', 'NPU')
# auto: int8 on CPU before onnxruntime, measured faster there (CLIP-B/32 image encoder, one process, interleaved:
# 16.8 vs 27.8 ms in issue 26, 16.5 vs 28.2 ms best of 15 and 18.5 vs 26.1 ms per frame at batch 4 here; see
# docs/benchmarks.md for the same-run rows and the load they ran under). fp32 (f32 kernels) measured slower than
# onnxruntime and bf16 needs CPU support that not every CPU has: auto leaves those to onnxruntime and torch.
AUTO_BASIS = ('int8 on CPU: OpenVINO (NNCF int8) measured faster than ONNX Runtime dynamic int8 for the CLIP-B/32 '
              'image encoder (docs/benchmarks.md)')

CAPABILITIES = BackendCapabilities(
    name='openvino', module='openvino', precisions=(('cpu', ('fp32', 'bf16', 'int8')),),
    int8=INT8_STATIC_NNCF, fixed_input_size=True, auto_rank=(('cpu/int8', 5),), auto_basis=AUTO_BASIS)

PARAMETERS = (
    ParameterSpec('openvino_device', 'string', 'CPU',
                  'backend openvino: the OpenVINO device that runs the encoders (CPU; GPU: Intel GPU, NPU: Intel NPU, '
                  'where OpenVINO lists them: unverified, no such device was available to test). device stays cpu '
                  '(preprocessing).', FIXED, choices=OPENVINO_DEVICES, owner='openvino'),
)

# How the cached entries are made; an entry recorded with another recipe is remade.
IR_RECIPE = 'onnx-convert-fp32-v1'
INT8_RECIPE = 'nncf-ptq-transformer-mixed-nosmoothquant-v3'  # v2: fp32 reference outputs; v3: cards and scenes
TEXT_INT8W_RECIPE = 'nncf-compress-weights-int8-asym-v1'
MODEL_FILE = 'model.xml'
META_FILE = 'meta.json'
REFERENCE_FILE = 'fp32_reference.npz'  # int8 entries: the fp32 outputs on the gate's probe images
CALIBRATION_IMAGES = 32  # default calibration set: test cards (never the gate's own probe images)
CALIBRATION_SEED = 5150
MAX_CALIBRATION_IMAGES = 300


def _openvino_devices_rule(values: Mapping[str, Any]) -> Optional[str]:
    if values['openvino_device'] != 'CPU' and values['backend'] != 'openvino':
        return f"openvino_device {values['openvino_device']} needs backend openvino; got backend {values['backend']}"
    return None


# --- the IR cache -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class IrEntry:
    """One cached OpenVINO model: its directory and what made it."""

    directory: Path
    meta: dict

    @property
    def xml(self) -> Path:
        return self.directory / MODEL_FILE


def openvino_root(cache_dir: Optional[Path], info: ModelInfo) -> Path:
    """Return where the IR of `info` is cached."""
    return (cache_dir or default_cache_dir()) / 'openvino' / info.fingerprint


def _read_entry(directory: Path, recipe: str) -> Optional[IrEntry]:
    """Return the entry in `directory` if complete and made by `recipe`, else None."""
    meta_path = directory / META_FILE
    if not (directory / MODEL_FILE).is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get('recipe') != recipe:
        LOG.info('remaking %s: made by recipe %s, current is %s', directory, meta.get('recipe')
                 if isinstance(meta, dict) else None, recipe)
        return None
    return IrEntry(directory, meta)


def cached_ir(root: Path, name: str, recipe: str, make: Callable[[], Any], meta: Optional[dict] = None,
              replace: bool = False, extra: Optional[Callable[[Path], None]] = None) -> IrEntry:
    """
    Return the cached entry `root/name`, made by `make()` (an ov.Model) and saved if missing or of another recipe.

    Written apart and renamed into place; `replace` remakes an existing entry (new calibration images); `extra`
    writes further files into the entry before it is renamed into place.
    """
    import openvino as ov

    directory = root / name
    if not replace:
        entry = _read_entry(directory, recipe)
        if entry is not None:
            return entry
    remove_stale_partials(root)
    with written_apart(directory, replace=True) as partial:
        model = make()
        ov.save_model(model, str(partial / MODEL_FILE), compress_to_fp16=False)
        record = {'recipe': recipe, 'openvino': ov.get_version(), **(meta or {})}
        (partial / META_FILE).write_text(json.dumps(record, indent=2))
        del model
        if extra is not None:
            extra(partial)
    entry = _read_entry(directory, recipe)
    if entry is None:
        raise ExportError(f'{directory}: the OpenVINO model just written cannot be read back')
    return entry


def _convert(onnx_path: Path) -> Any:
    import openvino as ov

    return ov.convert_model(str(onnx_path))


def calibration_images(size: int, count: int = CALIBRATION_IMAGES) -> list[np.ndarray]:
    """
    Return the default calibration images: half test cards (another seed than the gate's probes), half scenes.

    A scene here is what a robot's camera sees, roughly: a shaded floor or table (a gradient with sensor noise) and
    a few objects of solid, shaded colours at different sizes. Calibrating on the cards alone set activation ranges
    that fit camera frames worse (embedded model: worst cosine to fp32 on the benchmark's scenes 0.986 against
    0.993 calibrated on scenes). Your own frames are better still: robovision_export --openvino int8
    --calibration-images DIR.
    """
    from robovision_ros.backends.accuracy_gate import probe_images

    cards = probe_images(size, count // 2, seed=CALIBRATION_SEED)
    rng = np.random.default_rng(CALIBRATION_SEED + 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    scenes = []
    for _ in range(count - len(cards)):
        top, bottom = rng.uniform(40, 230, 3), rng.uniform(20, 200, 3)
        angle = rng.uniform(0, np.pi)
        ramp = np.clip(np.cos(angle) * yy + np.sin(angle) * xx, 0, 1)[..., None]
        image = top * (1 - ramp) + bottom * ramp + rng.normal(0, 6, (size, size, 3))
        for _ in range(rng.integers(1, 5)):
            colour = rng.uniform(0, 255, 3)
            cy, cx = rng.uniform(0.15, 0.85, 2)
            ry, rx = rng.uniform(0.05, 0.3, 2)
            if rng.random() < 0.5:
                inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
            else:
                inside = (np.abs(yy - cy) < ry) & (np.abs(xx - cx) < rx)
            shade = 1.0 - 0.35 * np.clip((xx - cx) / (rx + 1e-6), -1, 1)[..., None]  # lit from one side
            image = np.where(inside[..., None], colour * shade, image)
        scenes.append(np.clip(image, 0, 255).astype(np.uint8))
    return cards + scenes


def _images_digest(images: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for image in images:
        digest.update(str(image.shape).encode())
        digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()[:16]


def image_int8_recipe(info: ModelInfo) -> str:
    """Return the recipe of `info`'s int8 image entry: `INT8_RECIPE` and the float scopes its family declares."""
    scopes = family_of(info).int8_float_scopes
    return INT8_RECIPE + (f"+float:{'|'.join(scopes)}" if scopes else '')


def quantize_image_int8(fp32: IrEntry, info: ModelInfo, images: Sequence[np.ndarray]) -> Any:
    """
    NNCF post-training quantization of the fp32 image encoder on `images` (RGB uint8, preprocessed as at run time).

    Transformer preset (MIXED: symmetric weights, asymmetric activations), fast bias correction. SmoothQuant is off:
    NNCF's SmoothQuant step fails on the CLIP graph this project exports. The nodes the family keeps in float
    (`ModelFamily.int8_float_scopes`) are NNCF's ignored scope, validated: a scope that names no node fails here.
    """
    import nncf
    import openvino as ov

    from robovision_ros.preprocessing import ImagePreprocessor

    if not images:
        raise ExportError('int8 calibration needs at least one image')
    preprocess = ImagePreprocessor(family_of(info).preprocess_config(info))
    feeds = [{PIXEL_VALUES: preprocess([image])} for image in images]
    advanced = nncf.AdvancedQuantizationParameters(
        smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1, convolution=-1))
    scopes = family_of(info).int8_float_scopes
    ignored = {'ignored_scope': nncf.IgnoredScope(patterns=list(scopes), validate=True)} if scopes else {}
    return nncf.quantize(ov.Core().read_model(str(fp32.xml)), nncf.Dataset(feeds), subset_size=len(feeds),
                         model_type=nncf.ModelType.TRANSFORMER, fast_bias_correction=True,
                         advanced_parameters=advanced, **ignored)


def write_fp32_reference(fp32: IrEntry, info: ModelInfo, directory: Path) -> None:
    """
    Store the fp32 model's outputs on the int8 gate's probe images beside the int8 model (REFERENCE_FILE).

    The gate at configure then runs only the int8 engine and compares with these, so a node never loads the fp32
    model (~500 MB resident for CLIP-B/32 while compiled). fp32 outputs differ between x86 CPUs by rounding only
    (~1e-6 relative), far below what the gate tolerates, so a cache copied to another machine stays valid.
    """
    from robovision_ros.backends.accuracy_gate import probe_pixels
    from robovision_ros.preprocessing import ImagePreprocessor

    pixels = probe_pixels(ImagePreprocessor(family_of(info).preprocess_config(info)), info.image_size)
    core = _make_core()
    compiled = core.compile_model(str(fp32.xml), 'CPU', compile_config('CPU', 'fp32', os.cpu_count() or 1))
    outputs = compiled.create_infer_request().infer({PIXEL_VALUES: pixels})
    store_reference(directory / REFERENCE_FILE, pixels,
                    {name: outputs[compiled.output(name)] for name in family_of(info).image_outputs})


def compress_text_int8(fp32: IrEntry) -> Any:
    """Int8 weights (asymmetric, per channel) for the text encoder, data-free."""
    import nncf
    import openvino as ov

    return nncf.compress_weights(ov.Core().read_model(str(fp32.xml)), mode=nncf.CompressWeightsMode.INT8_ASYM)


def ir_for(info: ModelInfo, cache_dir: Optional[Path], precision: str,
           calibration: Optional[Sequence[np.ndarray]] = None, calibration_source: str = '',
           replace: bool = False, exported: Optional[ExportedModel] = None) -> tuple[IrEntry, Optional[IrEntry]]:
    """
    Return the (image, text) IR entries for `precision`, converting and quantizing what the cache lacks.

    `calibration`: RGB uint8 images for int8 (default: `calibration_images`), described by `calibration_source`;
    `replace` remakes the int8 entry with them (the export CLI with a user's own frames).
    """
    exported = exported or cached_export(info, cache_dir)
    root = openvino_root(cache_dir, info)
    image = cached_ir(root, 'image.fp32', IR_RECIPE, lambda: _convert(exported.image_path),
                      {'input_size': exported.input_size})
    text = None
    if exported.text_path is not None:
        text = cached_ir(root, 'text.fp32', IR_RECIPE, lambda: _convert(exported.text_path),
                         {'text_length': exported.text_length})
    if precision != 'int8':
        return image, text
    images = list(calibration) if calibration is not None else calibration_images(info.image_size)
    if len(images) > MAX_CALIBRATION_IMAGES:
        raise ExportError(f'at most {MAX_CALIBRATION_IMAGES} calibration images; got {len(images)}')
    source = calibration_source or f'{len(images)} generated test cards and scenes (seed {CALIBRATION_SEED})'
    fp32_image = image
    image = cached_ir(root, 'image.int8', image_int8_recipe(info), lambda: quantize_image_int8(fp32_image, info, images),
                      {'calibration': source, 'calibration_images': len(images),
                       'calibration_digest': _images_digest(images)}, replace=replace,
                      extra=lambda directory: write_fp32_reference(fp32_image, info, directory))
    if text is not None:
        fp32_text = text
        text = cached_ir(root, 'text.int8w', TEXT_INT8W_RECIPE, lambda: compress_text_int8(fp32_text))
    return image, text


def _cached_entries(info: ModelInfo, cache_dir: Optional[Path], precision: str,
                    has_text: bool) -> Optional[tuple[IrEntry, Optional[IrEntry]]]:
    """Return the (image, text) entries for `precision` if the cache holds them all, else None."""
    root = openvino_root(cache_dir, info)
    if precision == 'int8':
        names = (('image.int8', image_int8_recipe(info)), ('text.int8w', TEXT_INT8W_RECIPE))
    else:
        names = (('image.fp32', IR_RECIPE), ('text.fp32', IR_RECIPE))
    image = _read_entry(root / names[0][0], names[0][1])
    text = _read_entry(root / names[1][0], names[1][1]) if has_text else None
    if image is None or (has_text and text is None):
        return None
    return image, text


def ensure_ir(info: ModelInfo, cache_dir: Optional[Path], precision: str,
              exported: ExportedModel) -> tuple[IrEntry, Optional[IrEntry]]:
    """
    Return the (image, text) IR entries for `precision`, made first where the cache lacks them.

    Made in a child process unless this one has imported torch already: conversion holds the fp32 graph (~750 MB for
    CLIP-B/32) and NNCF imports torch, neither of which a node should keep resident after configure.
    """
    entries = _cached_entries(info, cache_dir, precision, exported.text_path is not None)
    if entries is not None:
        return entries
    if 'torch' in sys.modules:
        return ir_for(info, cache_dir, precision, exported=exported)
    code = ('import sys; from pathlib import Path; from robovision_ros.model_dir import read_model_info; '
            'from robovision_ros.backends.openvino_backend import ir_for; '
            'ir_for(read_model_info(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])')
    root = cache_dir or default_cache_dir()
    child = subprocess.Popen([sys.executable, '-c', code, str(info.path), str(root), precision],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with export_child(child):
        _, errors = child.communicate()
    if child.returncode != 0:
        lines = [line for line in errors.strip().splitlines() if line.strip()]
        raise ExportError(f'OpenVINO conversion of {info.model_id} failed in its process (exit {child.returncode}): '
                          f"{lines[-1] if lines else 'no message'}")
    entries = _cached_entries(info, root, precision, exported.text_path is not None)
    if entries is None:
        raise ExportError(f'OpenVINO conversion of {info.model_id} left no complete entry in {root}')
    return entries


# --- the backend --------------------------------------------------------------------------------------------

def _make_core() -> Any:
    """Return an OpenVINO Core (a seam for the GPU/NPU test double)."""
    import openvino as ov

    return ov.Core()


def cpu_has_bf16(core: Any) -> bool:
    """Whether OpenVINO's CPU plugin runs bf16 natively here (AVX512-BF16 or AMX)."""
    return 'BF16' in core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')


def compile_config(ov_device: str, precision: str, threads: int) -> dict[str, Any]:
    """Return the compile properties for `precision` on an OpenVINO device."""
    config: dict[str, Any] = {'PERFORMANCE_HINT': 'LATENCY'}
    if ov_device == 'CPU':
        config['INFERENCE_NUM_THREADS'] = threads
        # No pinning of threads to cores: on a robot the node shares few cores with the camera driver and others.
        config['ENABLE_CPU_PINNING'] = False
    if precision == 'fp32':
        config['INFERENCE_PRECISION_HINT'] = 'f32'
    elif precision == 'bf16':
        config['INFERENCE_PRECISION_HINT'] = 'bf16'
    return config


def _device_present(available: Sequence[str], ov_device: str) -> bool:
    return any(name == ov_device or name.startswith(f'{ov_device}.') for name in available)


class OpenVinoBackend(EncoderBackend):
    name = 'openvino'
    capabilities = CAPABILITIES

    def __init__(self, info: ModelInfo, device: str, precision: str, cache_dir: Optional[Path] = None,
                 ov_device: str = 'CPU', threads: int = 0, text: bool = True) -> None:
        CAPABILITIES.require(device, precision)
        super().__init__(device, precision)
        if ov_device not in OPENVINO_DEVICES:
            raise BackendUnavailableError(f"openvino_device '{ov_device}' not supported; supported: "
                                          f"{', '.join(OPENVINO_DEVICES)}")
        core = _make_core()
        available = list(core.available_devices)
        if not _device_present(available, ov_device):
            raise BackendUnavailableError(f'openvino_device {ov_device} requested but OpenVINO finds no such device '
                                          f"here (available: {', '.join(available) or 'none'})")
        if precision == 'bf16' and (ov_device != 'CPU' or not cpu_has_bf16(core)):
            raise BackendUnavailableError(
                'precision bf16 needs an OpenVINO CPU with native bf16 (AVX512-BF16 or AMX); '
                + ('this CPU has none (OPTIMIZATION_CAPABILITIES: '
                   f"{', '.join(core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))}); use fp32 or int8"
                   if ov_device == 'CPU' else f'openvino_device {ov_device} runs fp32 or int8'))
        self.info = info
        self.output_names = family_of(info).image_outputs
        self.ov_device = ov_device
        exported = cached_export(info, cache_dir)
        self.logit_scale = exported.logit_scale
        self.logit_bias = exported.logit_bias
        self.text_length = exported.text_length
        self.input_size = exported.input_size
        image_ir, text_ir = ensure_ir(info, cache_dir, precision, exported)
        self.ir = image_ir
        threads = threads or (os.cpu_count() or 1)
        image_model: Any = str(image_ir.xml)
        if ov_device == 'NPU':  # the NPU compiles static shapes only: batch 1, frames of a batch run in turn
            image_model = core.read_model(str(image_ir.xml))
            image_model.reshape({PIXEL_VALUES: [1, 3, self.input_size, self.input_size]})
        self._image = core.compile_model(image_model, ov_device, compile_config(ov_device, precision, threads))
        self._image_request = self._image.create_infer_request()
        self._text_request: Any = None
        self._text: Any = None
        if text_ir is not None and text:
            # int8 weights, f32 compute; the NPU leaves text (once per vocabulary change) to the CPU.
            text_device = 'CPU' if ov_device == 'NPU' else ov_device
            text_precision = 'fp32' if precision == 'int8' else precision
            self._text = core.compile_model(str(text_ir.xml), text_device,
                                            compile_config(text_device, text_precision, threads))
            self._text_request = self._text.create_infer_request()
        self._batch_one = ov_device == 'NPU'
        LOG.info('openvino %s %s on %s from %s', device, precision, ov_device, image_ir.directory)

    def run_image(self, pixel_values: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if pixels.shape[-2:] != (self.input_size, self.input_size):
            raise BackendUnavailableError(
                f'openvino model takes {self.input_size}x{self.input_size} inputs; '
                f'got {pixels.shape[-2]}x{pixels.shape[-1]} (multi-scale runs on the torch backend)')
        if self._batch_one and pixels.shape[0] > 1:
            parts = [self.run_image(pixels[i:i + 1]) for i in range(pixels.shape[0])]
            return {name: np.concatenate([part[name] for part in parts]) for name in self.output_names}
        outputs = self._image_request.infer({PIXEL_VALUES: pixels})
        return {name: np.array(outputs[self._image.output(name)], np.float32) for name in self.output_names}

    def encode_text(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        if self._text_request is None:
            raise BackendUnavailableError(f'{self.info.model_id} has no text encoder')
        outputs = self._text_request.infer({INPUT_IDS: input_ids.astype(np.int64),
                                            ATTENTION_MASK: attention_mask.astype(np.int64)})
        return np.array(outputs[self._text.output(TEXT_EMBEDDING)], np.float32)

    def stored_fp32_reference(self, fallback: Callable[[], EncoderBackend]) -> Optional[EncoderBackend]:
        path = self.ir.directory / REFERENCE_FILE
        if self.precision != 'int8' or not path.is_file():
            return None
        return StoredReference.load(self.info, path, CAPABILITIES, fallback)

    def close(self) -> None:
        self._image_request = self._text_request = None
        self._image = self._text = None


def _load(request: BackendRequest) -> OpenVinoBackend:
    return OpenVinoBackend(request.info, request.device, request.precision, request.cache_dir,
                           ov_device=str(request.options.get('openvino_device', 'CPU')), text=request.text)


BACKEND = BackendEntry(CAPABILITIES, _load, PARAMETERS,
                       (ParameterRule(frozenset({'openvino_device', 'backend'}), _openvino_devices_rule),))
