# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The queries of an open-vocabulary detector: texts (as clip_perception's labels) and example images.

A text query follows the vocabulary rules of `vocabulary.py` (unique, not blank, at most 256 entries of 128
characters, texts x prompt templates at most 4096) and is encoded through the same bounded text cache. An image
query is an example image file (a PNG, JPEG or TIFF crop of the object); its label is the file's name without the
extension. Example images are bounded before they are decoded (file size, then the decoder's own pixel limit) and
their embeddings are cached by file identity, so a change of the text queries never runs the image engine.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from robovision_ros.image_codec import ImageDecodeError, decode_compressed_image
from robovision_ros.vocabulary import MAX_LABEL_LENGTH, MAX_LABELS, VocabularyEmbeddings, VocabularyError

MAX_IMAGE_QUERIES = 8
MAX_IMAGE_QUERY_BYTES = 16 * 1024 * 1024
MAX_IMAGE_QUERY_PIXELS = 2048 * 2048  # an example is a crop of one object: a whole photo is refused
MIN_IMAGE_QUERY_SIDE = 4
IMAGE_QUERY_CACHE = 64  # example-image embeddings kept (least recently used dropped first)


class ImageQueryError(ValueError):
    """An example image that cannot be a query (missing, too large, not a decodable image, too many queries)."""


def image_query_label(path: str) -> str:
    """Return the label of an example image: its file name without the extension."""
    return Path(path.strip()).stem.strip()


def read_example_image(path: str) -> np.ndarray:
    """
    Read an example image file as RGB uint8, bounded: ImageQueryError with the reason if it cannot be a query.

    The file size is checked before it is read and the decoder refuses images over `MAX_IMAGE_QUERY_PIXELS` from
    their header, before allocating.
    """
    file = Path(path.strip()).expanduser()
    if file.exists() and not file.is_file():  # a directory, a FIFO (whose open would block), a device
        raise ImageQueryError(f"image query '{path}' is not a regular file")
    try:
        with open(file, 'rb') as stream:
            data = stream.read(MAX_IMAGE_QUERY_BYTES + 1)
    except FileNotFoundError:
        raise ImageQueryError(f"image query '{path}': no such file") from None
    except OSError as error:
        raise ImageQueryError(f"image query '{path}' cannot be read: {error.strerror or error}") from None
    if len(data) > MAX_IMAGE_QUERY_BYTES:
        raise ImageQueryError(f"image query '{path}' is larger than {MAX_IMAGE_QUERY_BYTES} bytes; an example image "
                              'is a crop of one object')
    try:
        image = decode_compressed_image(data, '', max_pixels=MAX_IMAGE_QUERY_PIXELS)
    except ImageDecodeError as error:
        raise ImageQueryError(f"image query '{path}' is not a usable image: {error}") from None
    if min(image.shape[:2]) < MIN_IMAGE_QUERY_SIDE:
        raise ImageQueryError(f"image query '{path}' is {image.shape[1]}x{image.shape[0]} pixels; at least "
                              f'{MIN_IMAGE_QUERY_SIDE}x{MIN_IMAGE_QUERY_SIDE}')
    return image


def check_image_query_paths(paths: Sequence[str]) -> tuple[str, ...]:
    """
    Check image-query paths without reading the files: count and labels (named, unique, bounded).

    Returns the paths stripped; raises ImageQueryError (count) or VocabularyError (labels).
    """
    cleaned = tuple(str(path).strip() for path in paths)
    if len(cleaned) > MAX_IMAGE_QUERIES:
        raise ImageQueryError(f'image_queries: {len(cleaned)} example images, at most {MAX_IMAGE_QUERIES}')
    labels = [image_query_label(path) for path in cleaned]
    for path, label in zip(cleaned, labels):
        if not path or not label:
            raise VocabularyError(f"image_queries: '{path}' names no file (the label is the file's name)")
        if len(label) > MAX_LABEL_LENGTH:
            raise VocabularyError(f"image_queries: the label of '{path}' is longer than {MAX_LABEL_LENGTH} "
                                  'characters')
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise VocabularyError(f'image_queries: labels (file names) must be unique; repeated: {duplicates}')
    return cleaned


def validate_image_queries(paths: Sequence[str]) -> tuple[str, ...]:
    """`check_image_query_paths`, then each file read and decoded as an example image (ImageQueryError if not)."""
    cleaned = check_image_query_paths(paths)
    for path in cleaned:
        read_example_image(path)
    return cleaned


def query_set_problem(texts: Sequence[str], images: Sequence[str]) -> str | None:
    """Why text and image queries cannot be one query set (too many, a label in both), or None."""
    if len(texts) + len(images) > MAX_LABELS:
        return f'queries + image_queries: {len(texts) + len(images)} queries, at most {MAX_LABELS}'
    shared = sorted(set(texts) & {image_query_label(path) for path in images})
    if shared:
        return f'an image query is named like a text query: {shared} (rename the example image file)'
    return None


@dataclass(frozen=True)
class DetectionQuerySpec:
    """What a query set asks for: text queries, prompt templates and example-image paths (validated)."""

    texts: tuple[str, ...]
    templates: tuple[str, ...]
    images: tuple[str, ...]

    @property
    def text_count(self) -> int:
        """Return how many texts the text encoder may have to encode for this set."""
        return len(self.texts) * len(self.templates)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.texts + tuple(image_query_label(path) for path in self.images)


@dataclass(frozen=True)
class ImageQueryEmbeddings:
    """The embedded example images of a query set."""

    labels: tuple[str, ...]
    paths: tuple[str, ...]
    embeddings: np.ndarray  # [K, D], unit rows


@dataclass(frozen=True)
class DetectionQueries:
    """What frames are decoded against: text and image query embeddings, one immutable snapshot swapped in whole."""

    texts: VocabularyEmbeddings
    images: ImageQueryEmbeddings
    version: int

    @property
    def spec(self) -> DetectionQuerySpec:
        return DetectionQuerySpec(self.texts.labels, self.texts.templates, self.images.paths)

    @property
    def labels(self) -> tuple[str, ...]:
        """Every query's label in query-index order: text queries, then image queries."""
        return self.texts.labels + self.images.labels

    @property
    def embeddings(self) -> np.ndarray:
        """Return the [Q, D] unit rows in query-index order."""
        if not len(self.images.labels):
            return self.texts.embeddings
        if not len(self.texts.labels):
            return self.images.embeddings
        return np.concatenate([self.texts.embeddings, self.images.embeddings])

    @property
    def is_image(self) -> tuple[bool, ...]:
        return (False,) * len(self.texts.labels) + (True,) * len(self.images.labels)


class ImageQueryCache:
    """
    Example-image embeddings by file identity (resolved path, size, modification time), bounded.

    A query set that keeps an example image reuses its embedding; a file replaced under the same name is read again.
    """

    def __init__(self, embed: Callable[[list[np.ndarray]], np.ndarray], capacity: int = IMAGE_QUERY_CACHE) -> None:
        self._embed = embed
        self._cache: OrderedDict[tuple[str, int, int], np.ndarray] = OrderedDict()
        self._capacity = capacity
        self.images_embedded = 0  # how many example images went through the image engine

    def build(self, paths: Sequence[str], dim: int) -> ImageQueryEmbeddings:
        """Return the embeddings of `paths`; those not cached are read, checked and embedded in one batch."""
        keys = []
        for path in paths:
            file = Path(path).expanduser()
            try:
                stat = file.stat()
            except OSError as error:
                raise ImageQueryError(f"image query '{path}' cannot be read: {error.strerror or error}") from None
            keys.append((str(file.resolve()), stat.st_size, stat.st_mtime_ns))
        missing = [(key, path) for key, path in zip(keys, paths) if key not in self._cache]
        if missing:
            embedded = self._embed([read_example_image(path) for _, path in missing])
            self.images_embedded += len(missing)
            for (key, _), row in zip(missing, embedded):
                self._cache[key] = row / (np.linalg.norm(row) + 1e-12)
        rows = np.zeros((len(paths), dim), np.float32)
        for i, key in enumerate(keys):
            self._cache.move_to_end(key)
            rows[i] = self._cache[key]
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        rows.setflags(write=False)
        return ImageQueryEmbeddings(tuple(image_query_label(p) for p in paths), tuple(paths), rows)
