# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The detection part of the README's first session ("3. Detection"), command by command through the real `ros2` CLI.

The commands are read from the README's block (from its `detector:=true` launch on), so a README edit this test
does not follow fails here. `ros2 launch` runs in its own process group (Ctrl-C is SIGINT to the group); every
other line runs in bash as written, with `--no-daemon --spin-time 3` added to the topic, param and lifecycle verbs
(no daemon outlives the run; without one the CLI discovers the graph itself, which Fast DDS does within about 3 s);
a command whose output says discovery missed its node or topic is run again until a deadline. Example images the
service saves go to this test's folder (ROBOVISION_CACHE).

Needs launch, launch_ros and the ros2 CLI (not on PyPI: CI installs them with ROBOVISION_ROS_SOURCES); skipped with
that reason where they are missing.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import pytest

NOT_ON_PYPI = 'not on PyPI; part of a ROS 2 install, or ROBOVISION_ROS_SOURCES=DIR scripts/setup.sh'
pytest.importorskip('launch_ros', reason=f'launch_ros is not installed ({NOT_ON_PYPI})')
pytest.importorskip('ros2lifecycle', reason=f'the ros2 CLI verbs are not installed ({NOT_ON_PYPI})')
if shutil.which('ros2') is None:
    pytest.skip(f'the ros2 command is not installed ({NOT_ON_PYPI})', allow_module_level=True)

README = Path(__file__).resolve().parent.parent / 'README.md'
LAUNCH = 'ros2 launch robovision_ros robovision.launch.py camera:=true backend:=onnxruntime detector:=true'
DISCOVERY_MISSES = ('Node not found', 'Could not determine the type for the passed topic',
                    'does not appear to be published yet', 'waiting for service to become available')
DEFAULT_QUERIES = ['red cup', 'blue bottle', 'green ball', 'yellow box']


def detection_commands() -> list[str]:
    """Return the README session's commands from the detector launch on (comments and trailing comments dropped)."""
    text = README.read_text()
    section = text[text.index('### A first session with ROS 2'):]
    block = re.search(r'```bash\n(.*?)```', section, re.S).group(1)
    commands = [re.sub(r'\s+#\s.*$', '', line.strip()).strip() for line in block.splitlines()
                if line.strip() and not line.strip().startswith('#')]
    assert LAUNCH in commands, f'the README session has no `{LAUNCH}`'
    return commands[commands.index(LAUNCH):]


def with_cli_options(command: str) -> str:
    """Add --no-daemon and --spin-time to `ros2 topic|param|lifecycle <verb>` (the service verb has neither)."""
    return re.sub(r'^ros2 (topic|param|lifecycle) (\w+) ', r'ros2 \1 \2 --no-daemon --spin-time 3 ', command)


def run(command: str, folder: Path, env: dict, check: Callable[[str], bool], what: str, transcript: list[str],
        timeout_s: float = 90.0, wait: bool = False) -> str:
    """Run one README command until `check(output)` holds (repeating discovery misses, and with `wait` any miss)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            output = subprocess.run(['bash', '-c', with_cli_options(command)], cwd=folder, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    timeout=max(5.0, deadline - time.monotonic())).stdout
        except subprocess.TimeoutExpired:
            output = '(no result in time)'
        transcript.append(f'$ {command}\n{output.rstrip()}')
        if check(output):
            return output
        if time.monotonic() >= deadline or not (wait or any(miss in output for miss in DISCOVERY_MISSES)):
            raise AssertionError(f'{what}: `{command}` did not show it\n' + '\n'.join(transcript[-8:]))
        time.sleep(0.5)


def test_the_readme_detection_session_through_the_ros2_cli(tmp_path):
    commands = detection_commands()
    env = dict(os.environ, ROBOVISION_CACHE=str(tmp_path / 'cache'))
    log = open(tmp_path / 'launch.log', 'wb')
    launch = subprocess.Popen(LAUNCH.split(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp_path, env=env, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    transcript: list[str] = []

    def readme(command: str, check: Callable[[str], bool], what: str, **kwargs) -> str:
        assert command in commands, f'the README session no longer has: {command}'
        return run(command, tmp_path, env, check, what, transcript, **kwargs)

    try:
        readme('ros2 lifecycle get /open_vocab_detector', lambda out: out.strip().startswith('active [3]'),
               'open_vocab_detector reaches active', timeout_s=180.0, wait=True)
        first = readme('ros2 topic echo --once /open_vocab_detector/object_detections',
                       lambda out: 'model_id: embedded:tiny_owl' in out, 'one ObjectDetectionArray')
        assert re.search(r'^queries:\n' + ''.join(rf'- {q}\n' for q in DEFAULT_QUERIES), first, re.M), first
        labels = re.findall(r'^  label: (.*)$', first, re.M)
        assert all(label in DEFAULT_QUERIES for label in labels), first
        readme("ros2 param set /open_vocab_detector queries \"['green ball', 'yellow box']\"",
               lambda out: out.strip() == 'Set parameter successful', 'the queries set')
        readme('ros2 topic echo --once /open_vocab_detector/object_detections --field queries',
               lambda out: out.strip().splitlines()[0] == "['green ball', 'yellow box']" if out.strip() else False,
               'the new queries in the output', wait=True)
        service = next(c for c in commands if c.startswith('ros2 service call /open_vocab_detector/add_image_query'))
        answer = readme(service, lambda out: 'success=True' in out, 'the image query added')
        assert "image query 'that object' added" in answer, answer
        readme('ros2 topic echo --once /open_vocab_detector/object_detections --field queries',
               lambda out: out.strip().splitlines()[0] == "['green ball', 'yellow box', 'that object']"
               if out.strip() else False, 'the image query in the output', wait=True)
        readme('ros2 param get /open_vocab_detector image_queries',
               lambda out: '/image_queries/' in out and 'that object.png' in out, 'the example image listed')
        saved = list((tmp_path / 'cache' / 'image_queries').glob('*/that object.png'))
        assert len(saved) == 1
        os.killpg(launch.pid, signal.SIGINT)
        assert launch.wait(60) == 0
        output = (tmp_path / 'launch.log').read_text(errors='replace')
        for node in ('clip_perception', 'feature_extractor', 'open_vocab_detector', 'image_source'):
            assert re.search(rf'\[{node}-\d+\]: process has finished cleanly', output), output[-3000:]
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
        log.close()
