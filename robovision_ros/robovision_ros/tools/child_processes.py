# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""The benchmarks' child processes (cameras, nodes, servers): how they are stopped."""
from __future__ import annotations

import subprocess
from typing import Any, Sequence


def stop_processes(processes: Sequence[Any]) -> None:
    """Terminate benchmark child processes (cameras, nodes), killing those that do not end within 20 s."""
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
