# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
A `ParameterTable` on a ROS node: declared from the table, changes validated by the table's pure validator.

Each parameter is declared with a descriptor made from its spec (description with choices, range and lifetime),
so `ros2 param describe` shows what the table says. A value given at start that
rclpy itself refuses (wrong type, out of range) no longer ends the process with a traceback: the parameter keeps its
default, the reason is kept, and configure fails naming it until the parameter is set to a valid value.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

from robovision_ros.parameters import FIXED, START, ParameterError, ParameterSpec, ParameterTable


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """Return the ROS descriptor of one parameter, as `ros2 param describe` shows it."""
    # Start-only parameters are not rclpy `read_only`: rclpy refuses a read-only set even to the value the parameter
    # has, and a `ros2 param dump` loaded back must succeed. NodeParameters refuses a change instead.
    result = ParameterDescriptor(description=spec.full_description,
                                 # A string list also takes one plain string, and "[]" arrives as an empty bool
                                 # array: the table's validator types these values, not rclpy.
                                 dynamic_typing=spec.kind == 'string_list')
    if spec.bounds is not None and spec.kind == 'double':
        result.floating_point_range = [FloatingPointRange(from_value=float(spec.bounds[0]),
                                                          to_value=float(spec.bounds[1]))]
    if spec.bounds is not None and spec.kind == 'integer':
        result.integer_range = [IntegerRange(from_value=int(spec.bounds[0]), to_value=int(spec.bounds[1]), step=1)]
    return result


class NodeParameters:
    """
    Declares a table's parameters on `node` and guards every change with the table.

    `locked()` says why fixed parameters cannot change now (configuring, configured) or None; a set of a fixed
    parameter to the value it has is accepted as a no-op (so a `ros2 param dump` loads back onto an active node).
    `apply(names, values)` runs after a successful set with the validated values of every parameter.
    """

    def __init__(self, node: Any, table: ParameterTable, locked: Callable[[], Optional[str]],
                 apply: Callable[[set[str], dict[str, Any]], None]) -> None:
        self.node = node
        self.table = table
        self._locked = locked
        self._apply = apply
        self.start_errors: dict[str, str] = {}  # parameter -> why its value given at start was refused
        for spec in table.specs.values():
            self._declare(spec)
        # Registered after every declaration: values given at start are validated by configure (a bad one fails
        # configure with the reason) instead of ending the process during declaration.
        node.add_on_set_parameters_callback(self._on_set)
        node.add_post_set_parameters_callback(self._after_set)

    def _declare(self, spec: ParameterSpec) -> None:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        try:
            self.node.declare_parameter(spec.name, default, descriptor(spec))
        except (InvalidParameterTypeException, InvalidParameterValueException) as error:
            reason = str(error).splitlines()[0]
            self.start_errors[spec.name] = f'{spec.name}: the value given at start was refused ({reason})'
            self.node.declare_parameter(spec.name, default, descriptor(spec), ignore_override=True)

    def raw(self) -> dict[str, Any]:
        """Every parameter's current value, as rclpy holds it."""
        return {name: self.node.get_parameter(name).value for name in self.table.specs}

    def validated(self) -> dict[str, Any]:
        """Every parameter's value, validated and normalised (configure); ParameterError with the first reason."""
        if self.start_errors:
            raise ParameterError(next(iter(self.start_errors.values())) + '; set it to a valid value')
        return self.table.validate(self.raw())

    def values(self) -> dict[str, Any]:
        """Every parameter's value normalised (all are valid once configured: checked then, and at every set since)."""
        return self.table.normalise_all(self.raw())

    def _on_set(self, params: list[Any]) -> SetParametersResult:
        try:
            reason = self._check(params)
        except ParameterError as error:
            reason = str(error)
        except Exception as error:  # noqa: BLE001 - a parameter callback must answer, never raise
            reason = f'could not validate: {type(error).__name__}: {error}'
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _check(self, params: list[Any]) -> Optional[str]:
        ours = [p for p in params if p.name in self.table]  # names we do not own are not ours to judge
        current = self.raw()
        changed = [p for p in ours if not self._same(p.name, p.value, current[p.name])]
        start_only = [p.name for p in changed if self.table[p.name].lifetime == START]
        if start_only:
            return f'{", ".join(start_only)} is read-only: set at start only (--ros-args -p {start_only[0]}:=...)'
        lock = self._locked()
        if lock:
            fixed = [p.name for p in changed if self.table[p.name].lifetime == FIXED]
            if fixed:
                return f'{", ".join(fixed)} cannot change while {lock}; cleanup, set, then configure'
        values = dict(current)
        values.update({p.name: p.value for p in ours})
        self.table.validate(values, {p.name for p in changed})
        return None

    def _same(self, name: str, new: Any, old: Any) -> bool:
        """Whether a set keeps the parameter's value (compared as the table types it)."""
        spec = self.table[name]
        try:
            return spec.normalise(new) == spec.normalise(old)
        except ParameterError:
            return False

    def _after_set(self, params: list[Any]) -> None:
        names = {p.name for p in params if p.name in self.table}
        for name in names:
            self.start_errors.pop(name, None)
        if names:
            self._apply(names, self.values())
