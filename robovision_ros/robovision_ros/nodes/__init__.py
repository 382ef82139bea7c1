# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0
