# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The synthetic tabletop world: scene generator, tiny model factories, training and evaluation.

Training and evaluation are those of the embedded models. Runtime modules import nothing from here.
"""
