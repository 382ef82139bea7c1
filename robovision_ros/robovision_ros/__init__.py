# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""robovision_ros: camera images to ViT patch features, CLIP zero-shot labels and CLIP object presence."""

__version__ = '0.1.0'
