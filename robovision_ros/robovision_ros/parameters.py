# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
One declaration per parameter: a typed table, one pure validator, settings built from it, docs generated from it.

The idea of ROS's generate_parameter_library, in Python and without ROS: each `ParameterSpec` names a parameter's
type, default, description, bounds or choices and lifetime (live, fixed while configured, or set at start only);
`validate` checks a set of values against the table and the cross-parameter `ParameterRule`s and returns them
normalised; settings dataclasses read their fields from the normalised values (`build_settings`), and their
defaults come from the table (`default_of`). The nodes declare their ROS parameters from the same table
(nodes/ros_parameters.py) and docs/architecture.md's parameter table is rendered from it (`markdown_table`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

# Lifetimes: when a parameter may change.
LIVE = 'live'  # any time; applied to the next frame (or vocabulary) after the set
FIXED = 'fixed'  # only while unconfigured: cleanup, set, configure
START = 'start'  # at process start only (read-only afterwards)
LIFETIMES = (LIVE, FIXED, START)

# Value kinds, as ROS parameter types (string_list also takes one plain string, see `string_list`).
KINDS = ('string', 'bool', 'integer', 'double', 'string_list', 'double_list')


class ParameterError(ValueError):
    """A parameter value that the table refuses; the message names the parameter, what was expected and what arrived."""


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: its type, default, meaning, bounds and lifetime, declared once."""

    name: str
    kind: str
    default: Any
    description: str
    lifetime: str = LIVE
    choices: tuple[str, ...] = ()
    bounds: Optional[tuple[float, float]] = None  # inclusive, for integer/double and each double_list entry
    allow_empty: bool = False  # string_list/double_list: an empty list is valid
    check: Optional[Callable[[Any], Any]] = None  # further checks on the typed value; returns it (normalised)
    owner: str = ''  # who contributes it when not the node itself (a backend name), for docs and grouping

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f'{self.name}: kind {self.kind!r} not one of {KINDS}')
        if self.lifetime not in LIFETIMES:
            raise ValueError(f'{self.name}: lifetime {self.lifetime!r} not one of {LIFETIMES}')

    def normalise(self, value: Any) -> Any:
        """Return `value` typed and checked for this parameter; raise ParameterError with the reason."""
        try:
            typed = _KIND_CHECKS[self.kind](self, value)
            if self.choices and typed not in self.choices:
                raise ValueError(f"'{typed}' not supported; supported: {', '.join(self.choices)}")
            if self.check is not None:
                typed = self.check(typed)
        except ParameterError:
            raise
        except ValueError as error:
            raise ParameterError(f'{self.name}: {error}') from None
        return typed

    @property
    def full_description(self) -> str:
        """Return the description a user reads in `ros2 param describe`: choices, bounds and lifetime added."""
        parts = [self.description]
        if self.choices:
            parts.append(f"One of: {', '.join(self.choices)}.")
        if self.bounds is not None:
            parts.append(f'Range {_number(self.bounds[0])} .. {_number(self.bounds[1])}.')
        parts.append(_LIFETIME_TEXT[self.lifetime])
        return ' '.join(parts)


_LIFETIME_TEXT = {LIVE: 'Changes live.', FIXED: 'Fixed while configured: cleanup, set, configure to change.',
                  START: 'Set at start only.'}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f'{value:g}'


@dataclass(frozen=True)
class ParameterRule:
    """A check across parameters, run when any of `names` changes: returns the reason to refuse, or None."""

    names: frozenset[str]
    check: Callable[[Mapping[str, Any]], Optional[str]]


def _in_bounds(spec: ParameterSpec, value: float) -> None:
    if spec.bounds is not None and not spec.bounds[0] <= value <= spec.bounds[1]:
        raise ValueError(f'{_number(value) if math.isfinite(value) else value} is out of range '
                         f'{_number(spec.bounds[0])} .. {_number(spec.bounds[1])}')


def _as_string(spec: ParameterSpec, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f'expected a string; got {value!r}')
    return value


def _as_bool(spec: ParameterSpec, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'expected true or false; got {value!r}')
    return value


def _as_integer(spec: ParameterSpec, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'expected an integer; got {value!r}')
    _in_bounds(spec, value)
    return value


def _as_double(spec: ParameterSpec, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'expected a number; got {value!r}')
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f'must be a finite number; got {value}')
    _in_bounds(spec, number)
    return number


def string_list(value: Any, allow_empty: bool = False) -> tuple[str, ...]:
    """
    Return a parameter value as a tuple of strings.

    Accepted: a string array, one string (a single entry), or an empty array of any type (`ros2 param set ...
    "[]"` sends an empty bool array). Raises ValueError with the reason.
    """
    if isinstance(value, str):
        if value.strip().startswith('[') and value.strip().endswith(']'):
            # `ros2 param set ... "[y, no]"`: YAML read a mix of strings and booleans, so the CLI sent the text.
            raise ValueError(f'{value!r} looks like a list whose entries YAML read as booleans or numbers; '
                             f"quote each entry: \"['y', 'no']\"")
        values = [value]
    elif isinstance(value, (list, tuple)) or hasattr(value, 'tolist'):
        values = list(value)
        if any(not isinstance(v, str) for v in values) and values:
            raise ValueError(f"must be strings; got {values!r}. Quote words YAML reads as booleans or numbers: "
                             f"\"['y', 'no', '42']\"")
    else:
        raise ValueError(f'must be a string or a list of strings; got {value!r}')
    if not values and not allow_empty:
        raise ValueError('must not be empty')
    return tuple(values)


def _as_string_list(spec: ParameterSpec, value: Any) -> tuple[str, ...]:
    return string_list(value, spec.allow_empty)


def _as_double_list(spec: ParameterSpec, value: Any) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) and not hasattr(value, 'tolist'):
        raise ValueError(f'expected a list of numbers; got {value!r}')
    values = list(value)
    if not values and not spec.allow_empty:
        raise ValueError('must not be empty')
    return tuple(_as_double(spec, v) for v in values)


_KIND_CHECKS: dict[str, Callable[[ParameterSpec, Any], Any]] = {
    'string': _as_string, 'bool': _as_bool, 'integer': _as_integer, 'double': _as_double,
    'string_list': _as_string_list, 'double_list': _as_double_list,
}


class ParameterTable:
    """The parameters of one node (its own, the shared ones and those its backends contribute), and their rules."""

    def __init__(self, specs: Iterable[ParameterSpec], rules: Iterable[ParameterRule] = ()) -> None:
        self.specs: dict[str, ParameterSpec] = {}
        for spec in specs:
            if spec.name in self.specs:
                raise ValueError(f'parameter {spec.name} declared twice')
            self.specs[spec.name] = spec
        self.rules = tuple(rules)
        unknown = {name for rule in self.rules for name in rule.names} - set(self.specs)
        if unknown:
            raise ValueError(f'rules name undeclared parameters: {sorted(unknown)}')

    def __contains__(self, name: str) -> bool:
        return name in self.specs

    def __getitem__(self, name: str) -> ParameterSpec:
        return self.specs[name]

    def defaults(self) -> dict[str, Any]:
        """Every parameter's default, normalised."""
        return {name: spec.normalise(spec.default) for name, spec in self.specs.items()}

    def validate(self, values: Mapping[str, Any], changed: Optional[Iterable[str]] = None) -> dict[str, Any]:
        """
        Check `values` (every parameter, as it will be) where `changed` (default: all) changed; return them normalised.

        Each changed value is typed and checked on its own, then every rule that reads a changed parameter runs on
        the normalised values. A value that is wrong but not being changed does not block other changes (it is
        passed through as it is). Raises ParameterError with the first reason.
        """
        names = set(self.specs) if changed is None else set(changed) & set(self.specs)
        normalised = dict(values)
        for name in sorted(names):  # sorted: the same first reason whatever order the set listed them in
            normalised[name] = self.specs[name].normalise(values[name])
        for rule in self.rules:
            if rule.names & names:
                reason = rule.check(normalised)
                if reason:
                    raise ParameterError(reason)
        return normalised

    def normalise_all(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Every value normalised where it is valid (an invalid one, only possible from start, stays as it is)."""
        out = dict(values)
        for name, spec in self.specs.items():
            try:
                out[name] = spec.normalise(values[name])
            except ParameterError:
                pass
        return out

    def with_lifetime(self, lifetime: str) -> tuple[str, ...]:
        """Names of the parameters of one lifetime, in declaration order."""
        return tuple(name for name, spec in self.specs.items() if spec.lifetime == lifetime)


def default_of(specs: Sequence[ParameterSpec], name: str) -> Any:
    """Return the normalised default of parameter `name` among `specs` (for settings dataclass defaults)."""
    spec = next(s for s in specs if s.name == name)
    return spec.normalise(spec.default)


def build_settings(cls: type, values: Mapping[str, Any]) -> Any:
    """Return settings dataclass `cls` with each field read from the parameter of the same name."""
    return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


def markdown_table(specs: Iterable[ParameterSpec], used_by: Mapping[str, str]) -> str:
    """Render parameters as a Markdown table (name, type, default, lifetime, description, where it lands)."""
    rows = ['| Parameter | Type | Default | Changes | Meaning | Read by |', '|---|---|---|---|---|---|']
    for spec in specs:
        default = spec.normalise(spec.default)
        if isinstance(default, tuple):
            shown = '[' + ', '.join(repr(v) if isinstance(v, str) else _number(v) for v in default) + ']'
        elif isinstance(default, bool):
            shown = str(default).lower()
        elif isinstance(default, (int, float)):
            shown = _number(default)
        else:
            shown = repr(default)
        meaning = spec.description
        if spec.choices:
            meaning += ' (' + ' | '.join(spec.choices) + ')'
        if spec.bounds is not None:
            meaning += f' [{_number(spec.bounds[0])} .. {_number(spec.bounds[1])}]'
        lifetime = {LIVE: 'live', FIXED: 'while unconfigured', START: 'at start'}[spec.lifetime]
        meaning = meaning.replace('|', '\\|')
        rows.append(f'| `{spec.name}` | {spec.kind} | `{shown}` | {lifetime} | {meaning} | '
                    f'{used_by.get(spec.name, "")} |')
    return '\n'.join(rows)
