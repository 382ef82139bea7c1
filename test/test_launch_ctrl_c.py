# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
launch_testing test: Ctrl-C on `ros2 launch` while frames flow ends every process cleanly.

The launch is `ros2 launch robovision_ros robovision.launch.py camera:=true`; cleanly means no "process has died"
and `ros2 launch` exits 0.

What a node receives (launch 3.7.1, ExecuteProcess; the nodes share the process group of `ros2 launch`):
- Ctrl-C in a terminal (stdin a tty, `ros2 launch` interactive): one SIGINT, from the terminal to the whole
  foreground group; launch sends none of its own. SIGTERM follows after sigterm_timeout (5 s), SIGKILL after
  another sigkill_timeout (5 s) if the process is still there.
- stdin not a tty (`--noninteractive` is then the default: scripts, IDEs, containers without -t) and the whole
  group interrupted (Ctrl-C in the terminal, `kill -INT -PGID`): two SIGINTs within milliseconds, the group's and
  then launch's own. `kill -INT` of `ros2 launch` alone: launch's one SIGINT.
The second case needs the node to ignore a second SIGINT once its shutdown has begun (perception_node.run_node).

Needs launch, launch_ros, launch_testing and the `ros2` command (a ROS 2 install); skipped where they are
missing, as in CI. Run with `launch_test test/test_launch_ctrl_c.py`.
"""
import os
import pty
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest
from typing import Optional

import pytest

launch_testing = pytest.importorskip(
    'launch_testing', reason='launch_testing is not installed (not on PyPI; part of a ROS 2 install)')
pytest.importorskip('launch_ros', reason='launch_ros is not installed (part of a ROS 2 install)')
if shutil.which('ros2') is None:
    pytest.skip('the ros2 command (ros2launch) is not installed', allow_module_level=True)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # launch_test does not add test/ itself

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402

from launch_harness import LabelsRecorder, isolate_dds, wait_for_state  # noqa: E402
from ros_harness import RosTestContext  # noqa: E402

LAUNCH = ['ros2', 'launch', 'robovision_ros', 'robovision.launch.py', 'camera:=true', 'backend:=onnxruntime']
isolate_dds()


@pytest.mark.launch_test
def generate_test_description():
    # Each test starts its own `ros2 launch`, so that it can interrupt it the way a user does; the timer only keeps
    # this launch open while they run (launch_testing ends it when the tests are done).
    return launch.LaunchDescription([launch.actions.TimerAction(period=900.0, actions=[]),
                                     launch_testing.actions.ReadyToTest()])


class LaunchInterrupt:
    """`ros2 launch` in its own session, in a pseudo-terminal (`terminal`) or with stdin not a tty."""

    def __init__(self, terminal: bool) -> None:
        self.terminal = terminal
        self.output = b''

        def own_session() -> None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)  # a test runner may have started us ignoring it
            os.setsid()
            if terminal:
                import fcntl
                import termios

                fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        if terminal:
            self.fd, child = pty.openpty()
            self.process = subprocess.Popen(LAUNCH, stdin=child, stdout=child, stderr=child, preexec_fn=own_session)
            os.close(child)
        else:
            self.process = subprocess.Popen(LAUNCH, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, preexec_fn=own_session)
            self.fd = self.process.stdout.fileno()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        """Read the output as it comes (a full pseudo-terminal would block `ros2 launch`)."""
        while True:
            try:
                data = os.read(self.fd, 65536)
            except OSError:  # the pseudo-terminal's other side closed
                return
            if not data:
                return
            self.output += data

    def ctrl_c(self) -> None:
        """Do what Ctrl-C in the terminal does: SIGINT to the terminal's foreground process group."""
        if self.terminal:
            os.write(self.fd, b'\x03')
        else:
            os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout_s: float) -> Optional[int]:
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None
        self.reader.join(5.0)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.terminal:
            os.close(self.fd)


class TestCtrlC(unittest.TestCase):

    def setUp(self):
        self.ros = RosTestContext('robovision_ctrl_c_probe')
        self.labels = LabelsRecorder(self.ros)

    def tearDown(self):
        self.ros.close()

    def _interrupt_while_frames_flow(self, terminal: bool) -> None:
        run = LaunchInterrupt(terminal)
        try:
            for name in ('clip_perception', 'feature_extractor'):
                self.assertTrue(wait_for_state(self.ros, name, 'active'), f'{name} did not reach active')
            self.assertIsNotNone(self.labels.next_after(time.monotonic()), 'no ZeroShotLabels before Ctrl-C')
            run.ctrl_c()
            # Shorter than launch's SIGINT -> SIGTERM escalation (5 s) plus margin: a clean exit needs none.
            code = run.wait(15.0)
        finally:
            run.kill()
        text = run.output.decode(errors='replace')
        tail = '\n'.join(text.splitlines()[-15:])
        self.assertEqual(code, 0, f'ros2 launch did not exit 0 after Ctrl-C:\n{tail}')
        self.assertNotIn('process has died', text, tail)
        self.assertNotIn('escalating to', text, tail)
        for name in ('clip_perception', 'feature_extractor', 'image_source'):
            self.assertRegex(text, rf'\[{name}-\d+\]: process has finished cleanly', tail)

    def test_ctrl_c_in_a_terminal(self):
        self._interrupt_while_frames_flow(terminal=True)

    def test_ctrl_c_without_a_tty_two_sigints(self):
        self._interrupt_while_frames_flow(terminal=False)
