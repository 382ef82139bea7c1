# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Command-line tools: export, benchmark, the demo (main job), fine-tuning, serving. The runtime never imports them."""
