# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Text vocabulary: labels x prompt templates -> one normalised embedding per label, cached per text.

Each (model, template, label) text is encoded once; a vocabulary change encodes only texts not seen before.
A label's embedding is the normalised mean of its normalised template embeddings (CLIP prompt ensembling).
"""
from __future__ import annotations

import string
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

MAX_LABELS = 256
MAX_LABEL_LENGTH = 128
# One vocabulary encodes labels x templates texts; this bounds the cost of one set (and of one configure).
MAX_VOCABULARY_TEXTS = 4096
# Texts are encoded in batches of this many, so peak memory does not grow with the vocabulary.
ENCODE_BATCH = 128
# Encoded texts kept for reuse (least recently used dropped first): two full vocabularies.
CACHE_TEXTS = 2 * MAX_VOCABULARY_TEXTS
PROBE_LABEL = 'probe'
# The nodes' default vocabulary (config/robovision.yaml leaves it to the node): the embedded model's world.
DEFAULT_LABELS = ('red cup', 'blue cup', 'red bottle', 'blue bottle', 'green ball', 'yellow box')
DEFAULT_TEMPLATES = ('a photo of a {}.',)
DEFAULT_PRESENCE_QUERIES = ('red cup', 'blue bottle')


class VocabularyError(ValueError):
    """Labels or templates that cannot form a vocabulary."""


def validate_labels(labels: Sequence[str], what: str = 'labels', allow_empty: bool = False) -> list[str]:
    """Non-empty (unless allowed), unique, not blank, bounded count and length; returns them stripped."""
    cleaned = [str(label).strip() for label in labels]
    if not cleaned and not allow_empty:
        raise VocabularyError(f'{what} must not be empty')
    if len(cleaned) > MAX_LABELS:
        raise VocabularyError(f'{what}: {len(cleaned)} entries, at most {MAX_LABELS}')
    for label in cleaned:
        if not label:
            raise VocabularyError(f'{what} must not contain blank entries')
        if len(label) > MAX_LABEL_LENGTH:
            raise VocabularyError(f"{what}: '{label[:20]}...' is longer than {MAX_LABEL_LENGTH} characters")
    duplicates = sorted({label for label in cleaned if cleaned.count(label) > 1})
    if duplicates:
        raise VocabularyError(f'{what} must be unique; repeated: {duplicates}')
    return cleaned


def validate_templates(templates: Sequence[str]) -> list[str]:
    """
    Check that each template has exactly one '{}' and no other format field, without formatting it first.

    The field takes no format spec and no conversion, so a template formats to at most its own length plus the
    label's (128 + 128 characters): a width or precision such as '{:999999999}' (a billion-character string) is
    refused from the parsed structure, never materialised.
    """
    cleaned = validate_labels(templates, 'prompt_templates')
    for template in cleaned:
        problem = _template_problem(template)
        if problem:
            raise VocabularyError(f"prompt template '{template}' {problem}")
    return cleaned


def _template_problem(template: str) -> Optional[str]:
    try:  # parsing costs the template's length (at most MAX_LABEL_LENGTH); nothing is formatted yet
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None or spec or conversion]
    except ValueError as error:
        return f"is not a valid format string ({error}); write literal braces as '{{{{' and '}}}}'"
    if fields != [('', '', None)] or template.count('{}') != 1:
        return ("must contain exactly one '{}' and no other '{...}' field, format spec or conversion (a width such "
                "as '{:99}' is not allowed)")
    template.format(PROBE_LABEL)  # now bounded: the field has no width, precision or conversion
    return None


def vocabulary_size_problem(labels: Sequence[str], templates: Sequence[str], what: str = 'labels') -> Optional[str]:
    """Why `labels` x `templates` is too many texts to encode in one vocabulary (None: it is not)."""
    texts = len(labels) * len(templates)
    if texts > MAX_VOCABULARY_TEXTS:
        return (f'{what} x prompt_templates = {len(labels)} x {len(templates)} = {texts} texts; '
                f'at most {MAX_VOCABULARY_TEXTS}')
    return None


def validate_vocabulary_size(labels: Sequence[str], templates: Sequence[str], what: str = 'labels') -> None:
    """Raise VocabularyError when `labels` x `templates` is too many texts."""
    problem = vocabulary_size_problem(labels, templates, what)
    if problem:
        raise VocabularyError(problem)


@dataclass(frozen=True)
class VocabularyEmbeddings:
    """One embedded list of a vocabulary (its labels, or its presence queries): names, templates, unit rows."""

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    embeddings: np.ndarray  # [len(labels), D], unit rows
    version: int


@dataclass(frozen=True)
class VocabularySpec:
    """What a vocabulary set asks for: labels, prompt templates and presence queries (validated)."""

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    queries: tuple[str, ...]

    @property
    def text_count(self) -> int:
        """Return how many texts the text encoder may have to encode for this vocabulary."""
        return (len(self.labels) + len(self.queries)) * len(self.templates)


@dataclass(frozen=True)
class Vocabulary:
    """What frames are scored against: label and presence-query embeddings, one immutable snapshot swapped in whole."""

    labels: VocabularyEmbeddings
    queries: VocabularyEmbeddings

    @property
    def version(self) -> int:
        return self.labels.version

    @property
    def spec(self) -> VocabularySpec:
        return VocabularySpec(self.labels.labels, self.labels.templates, self.queries.labels)


class VocabularyCancelled(Exception):
    """A build was abandoned between batches because a newer vocabulary superseded it."""


class TextEmbeddingCache:
    """
    Builds `VocabularyEmbeddings`, encoding each distinct prompt text once per model.

    Encoding runs in batches of `ENCODE_BATCH` texts (bounded peak memory) and the cache of encoded texts is
    bounded (`CACHE_TEXTS`, least recently used dropped first), so memory returns near its baseline after a
    large vocabulary is replaced by a small one.
    """

    def __init__(self, model_key: str, encode_texts: Callable[[list[str]], np.ndarray],
                 cache_texts: int = CACHE_TEXTS) -> None:
        self.model_key = model_key
        self._encode_texts = encode_texts
        self._cache: OrderedDict[tuple[str, str, str], np.ndarray] = OrderedDict()
        self._cache_texts = cache_texts
        self.texts_encoded = 0  # how many texts went through the text encoder (for tests and diagnostics)

    @property
    def cached_texts(self) -> int:
        return len(self._cache)

    def build(self, labels: Sequence[str], templates: Sequence[str], version: int, allow_empty: bool = False,
              cancelled: Callable[[], bool] = lambda: False) -> VocabularyEmbeddings:
        """Embeddings of `labels`; `cancelled()` is asked between batches and ends the build when true."""
        labels = validate_labels(labels, allow_empty=allow_empty)
        templates = validate_templates(templates)
        validate_vocabulary_size(labels, templates)
        keys = [(self.model_key, t, label) for label in labels for t in templates]
        found = {key: self._cache[key] for key in keys if key in self._cache}
        missing = [key for key in keys if key not in found]
        for start in range(0, len(missing), ENCODE_BATCH):
            if cancelled():
                raise VocabularyCancelled()
            chunk = missing[start:start + ENCODE_BATCH]
            encoded = np.asarray(self._encode_texts([t.format(label) for _, t, label in chunk]), np.float32)
            self.texts_encoded += len(chunk)
            encoded /= np.linalg.norm(encoded, axis=1, keepdims=True) + 1e-12
            for key, row in zip(chunk, encoded):
                found[key] = row.copy()  # not a view: the batch array is freed
        for key in keys:  # most recently used last; the oldest beyond the bound are dropped
            self._cache[key] = found[key]
            self._cache.move_to_end(key)
        while len(self._cache) > self._cache_texts:
            self._cache.popitem(last=False)
        sample = next(iter(found.values()), None) if found else next(iter(self._cache.values()), None)
        dim = sample.shape[0] if sample is not None else 0
        rows = np.zeros((len(labels), dim), np.float32)
        for i, label in enumerate(labels):
            mean = np.mean([found[(self.model_key, t, label)] for t in templates], axis=0)
            rows[i] = mean / (np.linalg.norm(mean) + 1e-12)
        rows.setflags(write=False)
        return VocabularyEmbeddings(tuple(labels), tuple(templates), rows, version)
