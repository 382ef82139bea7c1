# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The README's "A first session with ROS 2", command by command through the real `ros2` CLI, as a user runs it.

`ros2 launch ... camera:=true backend:=onnxruntime` runs in its own process group; every other command is the
README's line, run by bash, and its output is checked against what the README shows. The commands are read from
the README's block, so a README edit that this test does not follow fails here.

Two things differ from a terminal, neither in what the commands do: each ros2 verb gets `--no-daemon` (a daemon
would outlive the test run) and `--spin-time 3` (without a daemon the CLI discovers the graph itself; Fast DDS
takes up to about 3 s); and a command whose output says discovery missed its node or topic is run again until a
deadline (nothing was done by it). Ctrl-C is SIGINT to the launch's process group, with SIGINT reset to its
default in the child, as a script's `&` would leave it ignored.

Needs launch, launch_ros and the ros2 CLI (not on PyPI: CI installs them with ROBOVISION_ROS_SOURCES); skipped
with that reason where they are missing.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

NOT_ON_PYPI = 'not on PyPI; part of a ROS 2 install, or ROBOVISION_ROS_SOURCES=DIR scripts/setup.sh'
pytest.importorskip('launch_ros', reason=f'launch_ros is not installed ({NOT_ON_PYPI})')
pytest.importorskip('ros2lifecycle', reason=f'the ros2 CLI verbs are not installed ({NOT_ON_PYPI})')
if shutil.which('ros2') is None:
    pytest.skip(f'the ros2 command is not installed ({NOT_ON_PYPI})', allow_module_level=True)

README = Path(__file__).resolve().parent.parent / 'README.md'
LAUNCH = 'ros2 launch robovision_ros robovision.launch.py camera:=true backend:=onnxruntime'
CLI_OPTIONS = '--no-daemon --spin-time 3'
DISCOVERY_MISSES = ('Node not found', 'Could not determine the type for the passed topic',
                    'does not appear to be published yet')
DEFAULT_LABELS = ['red cup', 'blue cup', 'red bottle', 'blue bottle', 'green ball', 'yellow box']
NEW_LABELS = ['red cup', 'green ball', 'yellow box']
FIXED_WHILE_CONFIGURED = ('Setting parameter failed: precision cannot change while configured; '
                          'cleanup, set, then configure')


def readme_session() -> str:
    """Return the bash block of the README's "A first session with ROS 2"."""
    text = README.read_text()
    section = text[text.index('### A first session with ROS 2'):]
    match = re.search(r'```bash\n(.*?)```', section, re.S)
    assert match, 'README: no bash block in "A first session with ROS 2"'
    return match.group(1)


def commands_of(block: str) -> list[str]:
    """Return the block's commands: each line that is not a comment, without its trailing `# ...` comment."""
    commands = []
    for line in block.splitlines():
        line = line.strip()
        if line and not line.startswith('#'):
            commands.append(re.sub(r'\s+#\s.*$', '', line).strip())
    return commands


def with_cli_options(command: str) -> str:
    """Insert --no-daemon and --spin-time after `ros2 <verb> <subverb>` (no other change to the command)."""
    return re.sub(r'^ros2 (\w+) (\w+) ', rf'ros2 \1 \2 {CLI_OPTIONS} ', command)


class LaunchProcess:
    """`ros2 launch` in its own session and process group, output to a file, SIGINT at its default."""

    def __init__(self, command: str, log_path: Path) -> None:
        self.log_path = log_path
        self._log = open(log_path, 'wb')
        self.process = subprocess.Popen(
            command.split(), stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            cwd=log_path.parent, start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors='replace')

    def ctrl_c(self, timeout_s: float) -> Optional[int]:
        """SIGINT to the whole process group, as Ctrl-C in its terminal; return the exit code (None: still running)."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()


class Session:
    """Runs the README's commands in one folder and keeps a transcript for failure messages."""

    def __init__(self, folder: Path, launch: LaunchProcess, readme_commands: list[str]) -> None:
        self.folder = folder
        self.launch = launch
        self.readme_commands = readme_commands
        self.transcript: list[str] = []

    def context(self) -> str:
        tail = '\n'.join(self.launch.output().splitlines()[-20:])
        return '\n'.join(self.transcript[-12:]) + f'\n--- launch output (tail) ---\n{tail}'

    def run(self, command: str, check: Callable[[str], bool], what: str, timeout_s: float = 90.0,
            wait: bool = False, from_readme: bool = True) -> str:
        """
        Run a README command until `check(output)` holds or `timeout_s` passes; return the last output.

        A run is repeated when the output says discovery missed the node or topic (the command did nothing), and
        with `wait` also while `check` waits for something that comes in its own time (a state, a new vocabulary).
        """
        assert not from_readme or command in self.readme_commands, f'the README session no longer has: {command}'
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = max(5.0, deadline - time.monotonic())
            try:
                result = subprocess.run(['bash', '-c', with_cli_options(command)], cwd=self.folder, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=remaining,
                                        stdin=subprocess.DEVNULL)
                output = result.stdout
            except subprocess.TimeoutExpired as error:
                output = (error.stdout or b'').decode(errors='replace') if isinstance(error.stdout, bytes) \
                    else (error.stdout or '')
                output += f'\n(no result within {remaining:.0f} s)'
            self.transcript.append(f'$ {command}\n{output.rstrip()}')
            if check(output):
                return output
            missed = any(miss in output for miss in DISCOVERY_MISSES)
            if time.monotonic() >= deadline or not (missed or wait):
                raise AssertionError(f'{what}: README command `{command}` did not show it\n{self.context()}')
            time.sleep(0.5)

    def wait_for_launch_output(self, text: str, what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while text not in self.launch.output():
            assert time.monotonic() < deadline, f'{what}: no "{text}" in the launch output\n{self.context()}'
            time.sleep(0.5)


def _yaml_list(output: str, key: str) -> Optional[list[str]]:
    """Read `key:` followed by `- item` lines from `ros2 topic echo` output."""
    match = re.search(rf'^{key}:\n((?:- .*\n)+)', output, re.M)
    return [line[2:] for line in match.group(1).splitlines()] if match else None


def _first_line(output: str) -> str:
    return output.strip().splitlines()[0] if output.strip() else ''


def test_the_readme_first_session_through_the_ros2_cli(tmp_path):
    block = readme_session()
    commands = commands_of(block)
    assert commands[0] == LAUNCH, f'the README session starts with {commands[0]!r}, not the launch'
    launch = LaunchProcess(LAUNCH, tmp_path / 'launch.log')
    session = Session(tmp_path, launch, commands)
    try:
        session.run('ros2 lifecycle get /clip_perception', lambda out: _first_line(out) == 'active [3]',
                    'clip_perception reaches active', timeout_s=120.0, wait=True)

        first = session.run('ros2 topic echo --once /clip_perception/zero_shot_labels',
                            lambda out: _yaml_list(out, 'labels') is not None, 'one ZeroShotLabels message')
        assert _yaml_list(first, 'labels') == DEFAULT_LABELS, session.context()
        best = re.search(r'^best_label: (.*)$', first, re.M)
        assert best and best.group(1) in DEFAULT_LABELS, session.context()

        labels_set = "ros2 param set /clip_perception labels \"['red cup', 'green ball', 'yellow box']\""
        session.run(labels_set, lambda out: out.strip() == 'Set parameter successful', 'the labels set')
        # The new vocabulary is encoded in the background: a message or two may still carry the old one.
        session.run('ros2 topic echo --once /clip_perception/zero_shot_labels --field labels',
                    lambda out: _first_line(out) == str(NEW_LABELS), 'the new labels in the output', wait=True)
        get_labels = 'ros2 param get /clip_perception labels'
        session.run(get_labels, lambda out: out.strip() == f'String values are: {NEW_LABELS}', 'param get')

        session.run('ros2 param dump /clip_perception > clip_perception.yaml',
                    lambda out: (tmp_path / 'clip_perception.yaml').exists() and not any(
                        miss in out for miss in DISCOVERY_MISSES), 'param dump')
        dump = (tmp_path / 'clip_perception.yaml').read_text()
        assert dump.startswith('/clip_perception:\n  ros__parameters:\n'), dump
        assert '    labels:\n    - red cup\n    - green ball\n    - yellow box\n' in dump, dump
        session.run("ros2 param set /clip_perception labels \"['cat', 'dog']\"",
                    lambda out: out.strip() == 'Set parameter successful', 'labels set before the load')
        # The upstream bug the README names: a dump does not load as written. If this fails, ros2cli fixed it:
        # the README's workaround note can go.
        session.run('ros2 param load /clip_perception clip_perception.yaml',
                    lambda out: 'Param file does not contain any valid parameters' in out,
                    "ros2cli 0.36.1's failure to load a dump as written", from_readme=False)
        assert 'ros2 param load /clip_perception clip_perception.yaml' in block
        session.run("sed 's#^/clip_perception:#/**:#' clip_perception.yaml > clip_any.yaml",
                    lambda out: (tmp_path / 'clip_any.yaml').exists(), 'the /** copy')
        loaded = session.run('ros2 param load /clip_perception clip_any.yaml',
                             lambda out: 'Set parameter labels successful' in out, 'param load of the /** copy')
        # A dump loads back onto the active node: fixed parameters keep their value, which is no change (issue 22).
        assert 'Set parameter model successful' in loaded and 'Set parameter precision successful' in loaded, loaded
        failed = [line for line in loaded.splitlines() if 'failed' in line]
        assert all('start_type_description_service' in line for line in failed), failed
        session.run(get_labels, lambda out: out.strip() == f'String values are: {NEW_LABELS}',
                    'the loaded labels')

        precision_set = 'ros2 param set /clip_perception precision int8'
        session.run(precision_set, lambda out: out.strip() == FIXED_WHILE_CONFIGURED, 'precision refused')

        get_state = 'ros2 lifecycle get /clip_perception'
        for transition, state in (('deactivate', 'inactive [2]'), ('cleanup', 'unconfigured [1]')):
            session.run(f'ros2 lifecycle set /clip_perception {transition}',
                        lambda out: out.strip() == 'Transitioning successful', transition)
            session.run(get_state, lambda out: out.strip() == state, f'{state} after {transition}')
        session.run(precision_set, lambda out: out.strip() == 'Set parameter successful', 'precision set')
        session.run('ros2 lifecycle set /clip_perception configure',
                    lambda out: out.strip() == 'Transitioning successful', 'configure')
        session.wait_for_launch_output("configured clip model 'embedded:tiny_clip' on onnxruntime cpu int8",
                                       'the configure log line')
        session.run('ros2 lifecycle set /clip_perception activate',
                    lambda out: out.strip() == 'Transitioning successful', 'activate')
        session.run(get_state, lambda out: out.strip() == 'active [3]', 'active again')
        session.run('ros2 topic echo --once /clip_perception/zero_shot_labels --field best_label',
                    lambda out: _first_line(out) in NEW_LABELS, 'a best label of the loaded vocabulary')

        summary = session.run('ros2 topic echo --once --no-arr /feature_extractor/patch_features',
                              lambda out: 'model_id:' in out, 'the PatchFeatures summary')
        for line in ('model_id: embedded:tiny_vit', 'grid_h: 8', 'dtype: float32',
                     "shape: '<sequence type: uint32, length: 2>'", "data: '<sequence type: uint8, length: "):
            assert line in summary, f'{line!r} not in\n{summary}'

        code = launch.ctrl_c(timeout_s=30.0)
        output = launch.output()
        tail = '\n'.join(output.splitlines()[-15:])
        assert code == 0, f'ros2 launch did not exit 0 after Ctrl-C (code {code}):\n{tail}'
        assert 'process has died' not in output, tail
        for name in ('clip_perception', 'feature_extractor', 'image_source'):
            assert re.search(rf'\[{name}-\d+\]: process has finished cleanly', output), tail
        assert 'every process "has finished cleanly"' in block
    finally:
        launch.kill()
