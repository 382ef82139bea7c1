# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Procedural tabletop scenes with ground truth: the project's own data for training and checking perception.

Each scene is a table (wood-grain or plain surface under a wall) with 1-3 objects -- cups, bottles, boxes,
plates and balls in red, green, blue or yellow -- and records every object's label ("red cup"), pixel box and
centre. `SceneGenerator(seed).scene(i)` is a pure function of (seed, i, size): the same call renders the same
pixels. Objects are kept inside the central square, which a CLIP-style centre crop keeps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import numpy as np

COLOURS: dict[str, tuple[int, int, int]] = {
    'red': (210, 35, 35),
    'green': (45, 160, 60),
    'blue': (40, 70, 210),
    'yellow': (230, 200, 40),
}
OBJECTS: tuple[str, ...] = ('cup', 'bottle', 'box', 'plate', 'ball')
LABELS: tuple[str, ...] = tuple(f'{colour} {kind}' for colour in COLOURS for kind in OBJECTS)
# Concepts the embedded models never saw, for fine-tuning demos; opt-in (`SceneGenerator(colours=, kinds=)`), so
# the default world -- and every image an existing seed renders -- stays as it was.
NEW_COLOURS: dict[str, tuple[int, int, int]] = {
    'purple': (125, 45, 165),
    'orange': (240, 125, 25),
}
NEW_OBJECTS: tuple[str, ...] = ('can', 'mug')
ALL_COLOURS: dict[str, tuple[int, int, int]] = {**COLOURS, **NEW_COLOURS}
ALL_OBJECTS: tuple[str, ...] = OBJECTS + NEW_OBJECTS
_ASPECTS = {'cup': (0.8, 1.0), 'bottle': (0.5, 1.0), 'box': (1.0, 0.85), 'plate': (1.0, 0.4), 'ball': (1.0, 1.0),
            'can': (0.55, 0.9), 'mug': (1.0, 0.8)}

# Muted surfaces and walls: none close to an object colour, so colour words stay about the objects.
_TABLES = ((150, 110, 75), (120, 90, 60), (170, 150, 120), (128, 128, 128), (95, 95, 100), (180, 175, 165),
           (140, 125, 110))
_WALLS = ((210, 205, 195), (175, 180, 185), (225, 220, 210), (150, 150, 145), (190, 185, 170))


@dataclass(frozen=True)
class SceneObject:
    colour: str
    kind: str
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels (x1, y1 exclusive)

    @property
    def label(self) -> str:
        return f'{self.colour} {self.kind}'

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    def contains(self, x: float, y: float) -> bool:
        x0, y0, x1, y1 = self.box
        return x0 <= x < x1 and y0 <= y < y1


@dataclass(frozen=True)
class Scene:
    image: np.ndarray  # RGB uint8 [H, W, 3]
    objects: tuple[SceneObject, ...]
    seed: int
    index: int

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(o.label for o in self.objects)

    def multi_hot(self, labels: Sequence[str] = LABELS) -> np.ndarray:
        present = set(self.labels)
        return np.array([label in present for label in labels], dtype=np.float32)


def _shade(colour: np.ndarray, factor: float) -> tuple[int, int, int]:
    return tuple(int(v) for v in np.clip(colour * factor, 0, 255))


class SceneGenerator:
    """Deterministic scene renderer: `scene(i)` depends only on (seed, i) and the image size."""

    def __init__(self, seed: int = 0, height: int = 240, width: int = 320, min_objects: int = 1,
                 max_objects: int = 3, colours: Optional[Sequence[str]] = None,
                 kinds: Optional[Sequence[str]] = None) -> None:
        """`colours` / `kinds` choose from ALL_COLOURS / ALL_OBJECTS (default: the original COLOURS, OBJECTS)."""
        unknown = sorted(set(colours or ()) - set(ALL_COLOURS)) + sorted(set(kinds or ()) - set(ALL_OBJECTS))
        if unknown:
            raise ValueError(f'unknown scene colours/kinds {unknown}; known: {list(ALL_COLOURS)}, {list(ALL_OBJECTS)}')
        self.colours: list[str] = list(colours or COLOURS)
        self.kinds: tuple[str, ...] = tuple(kinds or OBJECTS)
        self.seed = seed
        self.height = height
        self.width = width
        self.min_objects = min_objects
        self.max_objects = max_objects

    def __iter__(self) -> Iterator[Scene]:
        index = 0
        while True:
            yield self.scene(index)
            index += 1

    def scene(self, index: int, objects: Sequence[tuple[str, str]] = ()) -> Scene:
        """Render scene `index`; `objects` ((colour, kind), ...) fixes what is on the table."""
        rng = np.random.default_rng([self.seed, index])
        image = self._background(rng)
        count = len(objects) or int(rng.integers(self.min_objects, self.max_objects + 1))
        wanted = list(objects) or [(str(rng.choice(self.colours)), str(rng.choice(self.kinds))) for _ in range(count)]
        placed: list[SceneObject] = []
        for colour, kind in wanted:
            box = self._place(rng, kind, [o.box for o in placed])
            if box is None:
                continue
            self._draw(image, rng, kind, np.array(ALL_COLOURS[colour], float), box)
            placed.append(SceneObject(colour, kind, box))
        noise = rng.normal(0, 4, image.shape)
        image = np.clip(image.astype(float) + noise, 0, 255).astype(np.uint8)
        return Scene(image, tuple(placed), self.seed, index)

    # --- rendering ----------------------------------------------------------------------------------------
    def _background(self, rng: np.random.Generator) -> np.ndarray:
        h, w = self.height, self.width
        image = np.empty((h, w, 3), float)
        horizon = int(h * rng.uniform(0.18, 0.38))
        wall = np.array(_WALLS[rng.integers(len(_WALLS))], float) + rng.uniform(-12, 12, 3)
        table = np.array(_TABLES[rng.integers(len(_TABLES))], float) + rng.uniform(-12, 12, 3)
        image[:horizon] = wall
        image[horizon:] = table
        if rng.random() < 0.6:  # wood grain
            yy, xx = np.mgrid[horizon:h, 0:w]
            grain = np.sin(yy * rng.uniform(0.15, 0.4) + 3 * np.sin(xx * rng.uniform(0.005, 0.02)))
            image[horizon:] += grain[..., None] * rng.uniform(4, 12)
        light = np.linspace(rng.uniform(0.85, 1.0), rng.uniform(1.0, 1.12), w)[None, :, None]
        return np.clip(image * light, 0, 255)

    def _place(self, rng: np.random.Generator, kind: str, taken: list[tuple[int, int, int, int]]):
        h, w = self.height, self.width
        side = min(h, w)
        left = (w - side) // 2  # keep objects inside the central square
        aspect = _ASPECTS[kind]
        for _ in range(50):
            size = rng.uniform(0.3, 0.42) * side
            bw, bh = int(size * aspect[0]), int(size * aspect[1])
            x0 = int(rng.integers(left + 4, left + side - bw - 4))
            y0 = int(rng.integers(int(h * 0.3), h - bh - 4))
            box = (x0, y0, x0 + bw, y0 + bh)
            if all(box[2] + 6 <= t[0] or t[2] + 6 <= box[0] or box[3] + 6 <= t[1] or t[3] + 6 <= box[1]
                   for t in taken):
                return box
        return None

    def _draw(self, image: np.ndarray, rng: np.random.Generator, kind: str, colour: np.ndarray,
              box: tuple[int, int, int, int]) -> None:
        import cv2

        colour = np.clip(colour + rng.uniform(-18, 18, 3), 0, 255) * rng.uniform(0.85, 1.1)
        base, dark, light = _shade(colour, 1.0), _shade(colour, 0.7), _shade(colour, 1.25)
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        cx = (x0 + x1) // 2
        # soft shadow on the table
        shadow = image.copy()
        cv2.ellipse(shadow, (cx + bw // 10, y1 - 2), (max(bw // 2, 2), max(bh // 10, 2)), 0, 0, 360,
                    (40, 40, 40), -1)
        image[:] = image * 0.6 + shadow * 0.4
        if kind == 'cup':
            body_w = int(bw * 0.72)
            bx0 = x0
            pts = np.array([[bx0, y0 + bh // 10], [bx0 + body_w, y0 + bh // 10], [bx0 + int(body_w * 0.88), y1 - 1],
                            [bx0 + int(body_w * 0.12), y1 - 1]], np.int32)
            cv2.ellipse(image, (bx0 + body_w, y0 + bh // 2), (max(bw - body_w, 3), bh // 4), 0, -90, 90, dark,
                        max(bw // 12, 2))
            cv2.fillPoly(image, [pts], base)
            cv2.ellipse(image, (bx0 + body_w // 2, y0 + bh // 10), (body_w // 2, max(bh // 10, 2)), 0, 0, 360, dark, -1)
            cv2.line(image, (bx0 + body_w // 5, y0 + bh // 5), (bx0 + body_w // 4, y1 - bh // 6), light, 2)
        elif kind == 'bottle':
            neck_w = max(bw // 3, 3)
            cv2.rectangle(image, (x0, y0 + int(bh * 0.38)), (x1 - 1, y1 - 1), base, -1)
            pts = np.array([[x0, y0 + int(bh * 0.38)], [x1 - 1, y0 + int(bh * 0.38)],
                            [cx + neck_w // 2, y0 + int(bh * 0.2)], [cx - neck_w // 2, y0 + int(bh * 0.2)]], np.int32)
            cv2.fillPoly(image, [pts], base)
            cv2.rectangle(image, (cx - neck_w // 2, y0 + int(bh * 0.06)), (cx + neck_w // 2, y0 + int(bh * 0.2)),
                          base, -1)
            cv2.rectangle(image, (cx - neck_w // 2 - 1, y0), (cx + neck_w // 2 + 1, y0 + int(bh * 0.07)), dark, -1)
            cv2.line(image, (x0 + bw // 4, y0 + int(bh * 0.45)), (x0 + bw // 4, y1 - bh // 8), light, 2)
        elif kind == 'box':
            depth = int(min(bw, bh) * 0.25)
            cv2.rectangle(image, (x0, y0 + depth), (x1 - depth - 1, y1 - 1), base, -1)
            top = np.array([[x0, y0 + depth], [x0 + depth, y0], [x1 - 1, y0], [x1 - depth - 1, y0 + depth]], np.int32)
            cv2.fillPoly(image, [top], light)
            side = np.array([[x1 - depth - 1, y0 + depth], [x1 - 1, y0], [x1 - 1, y1 - depth - 1],
                             [x1 - depth - 1, y1 - 1]], np.int32)
            cv2.fillPoly(image, [side], dark)
        elif kind == 'plate':
            cv2.ellipse(image, (cx, (y0 + y1) // 2), (bw // 2, bh // 2), 0, 0, 360, dark, -1)
            cv2.ellipse(image, (cx, (y0 + y1) // 2), (int(bw * 0.42), int(bh * 0.36)), 0, 0, 360, base, -1)
            cv2.ellipse(image, (cx, (y0 + y1) // 2), (int(bw * 0.25), int(bh * 0.2)), 0, 0, 360, light, -1)
        elif kind == 'can':  # upright cylinder: body, darker rim ellipse on top, light stripe
            cv2.rectangle(image, (x0, y0 + bh // 10), (x1 - 1, y1 - bh // 12), base, -1)
            cv2.ellipse(image, (cx, y1 - bh // 12), (bw // 2, max(bh // 12, 2)), 0, 0, 180, base, -1)
            cv2.ellipse(image, (cx, y0 + bh // 10), (bw // 2, max(bh // 10, 2)), 0, 0, 360, light, -1)
            cv2.ellipse(image, (cx, y0 + bh // 10), (int(bw * 0.4), max(bh // 14, 1)), 0, 0, 360, dark, 1)
            cv2.rectangle(image, (x0, y0 + int(bh * 0.45)), (x1 - 1, y0 + int(bh * 0.6)), light, -1)
        elif kind == 'mug':  # wide straight body with a big ring handle on the right
            body_w = int(bw * 0.68)
            cv2.circle(image, (x0 + body_w, (y0 + y1) // 2), max(int(bh * 0.28), 3), dark, max(bw // 10, 3))
            cv2.rectangle(image, (x0, y0 + bh // 8), (x0 + body_w, y1 - 1), base, -1)
            cv2.ellipse(image, (x0 + body_w // 2, y0 + bh // 8), (body_w // 2, max(bh // 9, 2)), 0, 0, 360, dark, -1)
        else:  # ball
            radius = min(bw, bh) // 2
            centre = (cx, (y0 + y1) // 2)
            cv2.circle(image, centre, radius, dark, -1)
            cv2.circle(image, (centre[0] - radius // 8, centre[1] - radius // 8), int(radius * 0.85), base, -1)
            cv2.circle(image, (centre[0] - radius // 3, centre[1] - radius // 3), max(radius // 4, 2), light, -1)
