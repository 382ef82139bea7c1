# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Where the TensorRT engine is cached, and under which key.

An engine is only valid for the exact ONNX graph, TensorRT version, GPU model and compute capability,
precision and input-shape profile it was built for, and is read as the outputs of one model family; all of them go
into the key, so a mismatch is a cache
miss (a rebuild), never a silently wrong engine. The key logic needs no TensorRT and is tested on its own.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path


class EngineCacheError(RuntimeError):
    """A cached engine that does not match what is asked for."""


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # e.g. "9.0"
    precision: str
    profile: tuple[tuple[str, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...]  # name, min, opt, max
    family: str  # the model family whose export the engine runs (ModelInfo.family)

    @property
    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def file_name(self, stem: str) -> str:
        return f'{stem}.{self.precision}.{self.digest}.engine'


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class EngineCache:
    """Serialised engines in a directory, each with a JSON sidecar holding its full key."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path_for(self, key: EngineKey, stem: str) -> Path:
        return self.directory / key.file_name(stem)

    def load(self, key: EngineKey, stem: str) -> bytes | None:
        """Return the engine bytes for `key`, or None on a miss; a sidecar that disagrees with `key` is an error."""
        path = self.path_for(key, stem)
        sidecar = path.with_suffix('.json')
        if not path.is_file():
            return None
        if not sidecar.is_file():
            raise EngineCacheError(f'{path} has no key sidecar {sidecar.name}; delete it or force a rebuild')
        stored = json.loads(sidecar.read_text())
        wanted = json.loads(json.dumps(asdict(key)))
        if stored != wanted:
            differing = sorted(k for k in wanted if stored.get(k) != wanted[k])
            raise EngineCacheError(f'{path} was built for a different {", ".join(differing)}; force a rebuild')
        return path.read_bytes()

    def store(self, key: EngineKey, stem: str, engine: bytes) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(key, stem)
        tmp = path.with_suffix('.tmp')
        tmp.write_bytes(engine)
        tmp.replace(path)
        path.with_suffix('.json').write_text(json.dumps(asdict(key), indent=2))
        return path
