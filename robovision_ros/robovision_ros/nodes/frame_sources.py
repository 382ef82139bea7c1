# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Frame sources for image_source: a folder of images, a video file, or the scene generator (RGB uint8)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np

from robovision_ros.synthetic.scenes import Scene, SceneGenerator

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')


class FrameSourceError(ValueError):
    """A source that cannot deliver frames (missing path, no images, unreadable video)."""


class FrameSource:
    """Yields RGB uint8 frames; `next_frame()` returns None at the end (unless looping)."""

    def __init__(self, loop: bool) -> None:
        self.loop = loop
        self.count = 0
        self.last_scene: Optional[Scene] = None  # ground truth, for generated frames

    def next_frame(self) -> Optional[np.ndarray]:
        frame = self._read()
        if frame is None and self.loop and self.count:
            self._rewind()
            frame = self._read()
        if frame is not None:
            self.count += 1
        return frame

    def _read(self) -> Optional[np.ndarray]:
        raise NotImplementedError

    def _rewind(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class FolderSource(FrameSource):
    def __init__(self, folder: Path, loop: bool) -> None:
        super().__init__(loop)
        self.paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise FrameSourceError(f'{folder} holds no images ({", ".join(IMAGE_SUFFIXES)})')
        self.position = 0

    def _read(self) -> Optional[np.ndarray]:
        import cv2

        if self.position >= len(self.paths):
            return None
        path = self.paths[self.position]
        self.position += 1
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FrameSourceError(f'cannot read image {path}')
        return image[..., ::-1]

    def _rewind(self) -> None:
        self.position = 0


class VideoSource(FrameSource):
    def __init__(self, path: Path, loop: bool) -> None:
        import cv2

        super().__init__(loop)
        self.path = path
        self.capture: Any = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise FrameSourceError(f'cannot open video {path}')

    def _read(self) -> Optional[np.ndarray]:
        ok, frame = self.capture.read()
        return frame[..., ::-1] if ok else None

    def _rewind(self) -> None:
        import cv2

        self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)

    def close(self) -> None:
        self.capture.release()


class GeneratorSource(FrameSource):
    """
    Endless generated scenes (`loop` is irrelevant); `last_scene` holds the ground truth.

    With `pregenerate` > 0, that many scenes are rendered up front and cycled, so that publishing costs no rendering
    (a camera that costs the robot nothing, for measurements).
    """

    def __init__(self, seed: int, height: int, width: int, pregenerate: int = 0) -> None:
        super().__init__(loop=False)
        self.generator = SceneGenerator(seed, height, width)
        self.cache = [self.generator.scene(i) for i in range(pregenerate)]

    def _read(self) -> Optional[np.ndarray]:
        if self.cache:
            self.last_scene = self.cache[self.count % len(self.cache)]
        else:
            self.last_scene = self.generator.scene(self.count)
        return self.last_scene.image

    def _rewind(self) -> None:
        pass


def open_source(source: str, loop: bool = True, seed: int = 0, height: int = 480, width: int = 640,
                pregenerate: int = 0) -> FrameSource:
    """Open a frame source: `generator`, a folder of images, or a video file."""
    if source == 'generator':
        return GeneratorSource(seed, height, width, pregenerate)
    path = Path(source).expanduser()
    if path.is_dir():
        return FolderSource(path, loop)
    if path.is_file():
        return VideoSource(path, loop)
    raise FrameSourceError(f"source '{source}' is neither 'generator', a folder of images, nor a video file")
