# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""robovision_bench's bookkeeping: the load record of a table, and the end-to-end table against the minimal node."""
from __future__ import annotations

import subprocess
import sys

from robovision_ros.tools.benchmark import LoadMonitor, MachineLoad, RosResult, ros_table


def test_load_monitor_counts_its_own_children_as_its_own():
    """CPU time of the benchmark's own (waited-for) children is not counted as other processes' load."""
    with LoadMonitor(limit_cores=0.5) as monitor:
        subprocess.run([sys.executable, '-c', 'import time\nend = time.process_time() + 0.5\n'
                        'while time.process_time() < end: pass'], check=True)
    load = monitor.result
    assert load.load_min <= load.load_max and load.foreign_cores >= 0.0 and load.limit == 0.5


def test_a_table_over_the_limit_is_marked_not_comparable():
    quiet = MachineLoad(0.4, 0.9, foreign_cores=0.1, limit=0.5)
    noisy = MachineLoad(3.0, 4.1, foreign_cores=1.2, limit=0.5)
    assert quiet.comparable and 'comparable.' in quiet.line() and 'NOT' not in quiet.line()
    assert not noisy.comparable and 'NOT comparable: other processes used more than 0.50 cores' in noisy.line()
    assert '1-minute load average 3.0-4.1' in noisy.line()


def test_ros_table_compares_each_row_with_the_floor_of_its_camera_count():
    runs = [RosResult('floor 1', [10.0] * 5, 10, 10, 1.0, 200.0, False, True, 1),
            RosResult('node 1', [11.0] * 5, 10, 10, 1.0, 250.0, False, False, 1, '0.9990'),
            RosResult('floor 4', [20.0] * 5, 40, 40, 1.0, 210.0, False, True, 4),
            RosResult('node 4', [30.0] * 5, 40, 39, 1.0, 300.0, True, False, 4)]
    rows = ros_table('m', runs, naive_p50=100.0).splitlines()[4:]
    assert '| node 1 | 11.0 / 11.0 | 10.0 | 10/10 (100%) | 9.1x | 1.10x | 250 | 1.25x | no | 0.9990 |' in rows
    assert '| node 4 | 30.0 / 30.0 | 39.0 | 39/40 (98%) | 3.3x | 1.50x | 300 | 1.43x | yes | - |' in rows
    assert rows[0].startswith('| floor 1 |') and '| - | 200 | - | no |' in rows[0]
