"""Text vocabulary: labels x prompt templates -> one normalised embedding per label, cached per text.

Each (model, template, label) text is encoded once; a vocabulary change encodes only texts not seen before.
A label's embedding is the normalised mean of its normalised template embeddings (CLIP prompt ensembling).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

MAX_LABELS = 256
MAX_LABEL_LENGTH = 128


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
    cleaned = validate_labels(templates, 'prompt_templates')
    for template in cleaned:
        if template.count('{}') != 1:
            raise VocabularyError(f"prompt template '{template}' must contain exactly one '{{}}'")
    return cleaned


@dataclass(frozen=True)
class VocabularyEmbeddings:
    """An immutable vocabulary snapshot: swapped in whole between frames, never half-updated."""

    labels: tuple[str, ...]
    templates: tuple[str, ...]
    embeddings: np.ndarray  # [len(labels), D], unit rows
    version: int


class TextVocabulary:
    """Builds `VocabularyEmbeddings`, encoding each distinct prompt text once per model."""

    def __init__(self, model_key: str, encode_texts: Callable[[list[str]], np.ndarray]) -> None:
        self.model_key = model_key
        self._encode_texts = encode_texts
        self._cache: dict[tuple[str, str, str], np.ndarray] = {}
        self.texts_encoded = 0  # how many texts went through the text encoder (for tests and diagnostics)

    def build(self, labels: Sequence[str], templates: Sequence[str], version: int,
              allow_empty: bool = False) -> VocabularyEmbeddings:
        labels = validate_labels(labels, allow_empty=allow_empty)
        templates = validate_templates(templates)
        missing = [(t, label) for label in labels for t in templates
                   if (self.model_key, t, label) not in self._cache]
        if missing:
            encoded = np.asarray(self._encode_texts([t.format(label) for t, label in missing]), np.float32)
            self.texts_encoded += len(missing)
            encoded /= np.linalg.norm(encoded, axis=1, keepdims=True) + 1e-12
            for (template, label), row in zip(missing, encoded):
                self._cache[(self.model_key, template, label)] = row
        dim = next(iter(self._cache.values())).shape[0] if self._cache else 0
        rows = np.zeros((len(labels), dim), np.float32)
        for i, label in enumerate(labels):
            mean = np.mean([self._cache[(self.model_key, t, label)] for t in templates], axis=0)
            rows[i] = mean / (np.linalg.norm(mean) + 1e-12)
        rows.setflags(write=False)
        return VocabularyEmbeddings(tuple(labels), tuple(templates), rows, version)
