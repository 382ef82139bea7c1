# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""scripts/gpu_check.sh in its CPU mode: the GPU check's script, nodes and measurement run end to end through ROS."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_mode_runs_every_row_end_to_end(tmp_path):
    out = tmp_path / 'gpu_check.md'
    env = {k: v for k, v in os.environ.items() if k not in ('ROBOVISION_TORCH', 'ROBOVISION_WHEELS')}
    result = subprocess.run([str(ROOT / 'scripts' / 'gpu_check.sh'), '--device', 'cpu', '--seconds', '3',
                             '--out', str(out)], capture_output=True, text=True, timeout=1500, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.with_suffix('.json').read_text())
    keys = [row['key'] for row in report['rows']]
    assert keys == ['embedded clip fp32 minimal node', 'embedded clip fp32 eager',
                    'embedded clip fp32 eager (cuda_graphs needs cuda)',
                    'embedded vit features fp32 eager (cuda_graphs needs cuda)',
                    'embedded clip fp32 minimal node 4 cameras',
                    'embedded clip fp32 eager (cuda_graphs needs cuda) 4 cameras batched'], keys
    assert not report['failures'] and all(row['results'] > 0 for row in report['rows'])
    assert all(row['node_peak_rss_mb'] > 0 for row in report['rows'])
    text = out.read_text()
    assert 'CPU mode' in text and 'no GPU figure' in text and 'target' not in text
