# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Reading the files of a model directory with bounded cost, and the error every model-loading failure raises.

A model directory may come from anywhere (a download, a user's folder, a cache written by an older version), so
nothing in it is trusted before it is read: only regular files are opened (a FIFO would block the reader forever,
a link to /dev/zero would read until memory runs out), each file's size is checked against a bound for its kind
before reading, and JSON values that decide allocations are range-checked (`bounded_int`).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import stat
from pathlib import Path
from typing import Any, Mapping

# Size bounds by file kind. A Hugging Face config or preprocessor config is a few KB; a BPE tokenizer a few MB.
MAX_JSON_BYTES = 1 << 20
MAX_TOKENIZER_BYTES = 64 << 20
MAX_WEIGHTS_BYTES = 64 << 30  # larger than any vision encoder this package runs (ViT-G fp32 is ~7 GB)
# The file kinds a model directory's reader opens, by suffix, with their bounds.
READ_SUFFIXES = {'.json': MAX_TOKENIZER_BYTES, '.txt': MAX_TOKENIZER_BYTES, '.model': MAX_TOKENIZER_BYTES,
                 '.safetensors': MAX_WEIGHTS_BYTES, '.bin': MAX_WEIGHTS_BYTES}


class ModelLoadError(RuntimeError):
    """A model that cannot be found or loaded; the message names the path or hub id and the cause."""


def check_regular_file(path: Path, max_bytes: int) -> int:
    """Return the size of `path`; raise ModelLoadError unless it is a regular file of at most `max_bytes`."""
    try:
        info = os.stat(path)  # follows links: a link to /dev/zero is a character device
    except OSError as error:
        raise ModelLoadError(f'{path}: cannot be read ({error.strerror})') from None
    if not stat.S_ISREG(info.st_mode):
        raise ModelLoadError(f'{path} is not a regular file (a FIFO, device or directory); refusing to read it')
    if info.st_size > max_bytes:
        raise ModelLoadError(f'{path} holds {info.st_size} bytes; a file of its kind is at most {max_bytes}')
    return info.st_size


def check_model_files(directory: Path) -> None:
    """Check every file a loader may open in `directory` (by suffix) before anything is read."""
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        raise ModelLoadError(f'{directory}: cannot list the model directory ({error.strerror})') from None
    for entry in entries:
        bound = READ_SUFFIXES.get(entry.suffix)
        if bound is not None:
            check_regular_file(entry, bound)


def read_json(path: Path, max_bytes: int = MAX_JSON_BYTES) -> dict[str, Any]:
    """Read a JSON object from a regular file of bounded size; ModelLoadError names the file and the cause."""
    check_regular_file(path, max_bytes)
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ModelLoadError(f'{path}: not readable JSON ({type(error).__name__}: {error})') from None
    if not isinstance(value, dict):
        raise ModelLoadError(f'{path}: expected a JSON object; got {type(value).__name__}')
    return value


def bounded_int(config: Mapping[str, Any], key: str, default: int, low: int, high: int, where: Path) -> int:
    """Return integer `config[key]` (or `default`) if within [low, high]; else ModelLoadError naming it."""
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or int(value) != value:
        raise ModelLoadError(f'{where}: {key} must be an integer; got {value!r}')
    if not low <= int(value) <= high:
        raise ModelLoadError(f'{where}: {key} = {int(value)} is outside the supported range {low} .. {high}')
    return int(value)


def bounded_float(config: Mapping[str, Any], key: str, low: float, high: float, where: Path) -> float:
    """Return the finite number `config[key]` if within [low, high]; else ModelLoadError naming it."""
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ModelLoadError(f'{where}: {key} = {value!r} must be a number in {low} .. {high}')
    return float(value)


def files_digest(directory: Path, suffixes: tuple[str, ...] = ('.json', '.safetensors', '.bin')) -> str:
    """Hash of the names and contents of a directory's files with `suffixes`, read in blocks (bounded memory)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.iterdir() if p.suffix in suffixes):
        check_regular_file(path, READ_SUFFIXES.get(path.suffix, MAX_WEIGHTS_BYTES))
        digest.update(path.name.encode())
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 20), b''):
                digest.update(block)
    return digest.hexdigest()[:16]
