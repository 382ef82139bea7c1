# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Inference backends behind one interface (backends/base.py), one module each, found by the registry.

`registry` lists them, checks a backend/device/precision combination, picks `auto` and loads one. Heavy imports
(torch, onnxruntime, tensorrt, tritonclient) happen inside the backend that needs them.
"""
