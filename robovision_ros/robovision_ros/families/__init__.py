# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Model families, one module each; this registry finds them.

A module of this package that defines `FAMILY` (a `ModelFamily`) registers that family: adding a family is one new
module. Nothing here imports a framework.
"""
from __future__ import annotations

import functools
import importlib
import pkgutil

from robovision_ros.families.base import ModelFamily
from robovision_ros.model_files import ModelLoadError


@functools.lru_cache(maxsize=None)
def families() -> dict[str, ModelFamily]:
    """Every registered family by name, in module-name order."""
    found: dict[str, ModelFamily] = {}
    for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if module_info.name == 'base':
            continue
        family = getattr(importlib.import_module(f'{__name__}.{module_info.name}'), 'FAMILY', None)
        if isinstance(family, ModelFamily):
            found[family.name] = family
    return found


def family_named(name: str) -> ModelFamily:
    """Return the family called `name` (as `ModelInfo.family` holds it)."""
    try:
        return families()[name]
    except KeyError:
        raise ModelLoadError(f"model family '{name}' not supported; supported: {', '.join(families())}") from None


def family_for_model_type(model_type: object, where: str) -> ModelFamily:
    """Return the family that reads configs of this Hugging Face `model_type`."""
    for family in families().values():
        if model_type in family.model_types:
            return family
    supported = ', '.join(t for f in families().values() for t in f.model_types)
    raise ModelLoadError(f"{where}: model_type '{model_type}' not supported; supported: {supported}")
