# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""Test-wide setup: DDS isolation for this test run, and helpers shared by the ROS graph tests."""
from __future__ import annotations

import fcntl
import logging
import os
import random


def _claim_domain() -> str:
    """
    Return a ROS domain no other test run on this machine holds, and hold it for this run's lifetime.

    A random domain alone collided when several suites ran at once (one run then saw another's nodes): each run
    locks /tmp/robovision_test_domain_<id>.lock (released by the OS when the run ends, however it ends) and takes a
    domain whose lock it gets.
    """
    candidates = list(range(10, 101))
    random.SystemRandom().shuffle(candidates)
    for domain in candidates:
        handle = open(f'/tmp/robovision_test_domain_{domain}.lock', 'a')
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _HELD_DOMAIN_LOCKS.append(handle)  # kept open: the lock lasts as long as this process
        return str(domain)
    raise RuntimeError('every ROS domain 10..100 is held by another test run on this machine')


_HELD_DOMAIN_LOCKS: list = []
# Isolate DDS before anything initialises rclpy: one domain per test run, discovery limited to this host, so
# that parallel runs on the same machine (CI next to a developer's session) never see each other's topics.
# An explicitly set ROS_DOMAIN_ID wins, for debugging with `ros2 topic echo`.
if 'ROBOVISION_TEST_DOMAIN_ID' not in os.environ:
    os.environ['ROBOVISION_TEST_DOMAIN_ID'] = _claim_domain()
os.environ['ROS_DOMAIN_ID'] = os.environ['ROBOVISION_TEST_DOMAIN_ID']
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.pop('ROS_LOCALHOST_ONLY', None)
# Nodes run as the launch file and scripts/demo run them: with the shipped Fast DDS profile. Without it a camera-sized
# frame (480x640 bgr8 is 921,600 bytes) does not fit Fast DDS's default 512 KB shared-memory segment and goes over UDP
# fragments, which best-effort (sensor-data QoS) loses under load: on CI a 480x640 detector test went 30 s without a
# frame arriving. test_dds_profile.py measures the difference; an explicitly set profile (even empty) wins.
os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'robovision_ros', 'config', 'fastdds_profile.xml'))

# The image codec sets OpenCV's decoder limits in the environment, which OpenCV reads once when it loads: import it
# before any test module imports cv2 (a node process imports it before cv2 too).
import robovision_ros.image_codec  # noqa: E402, F401

# launch_testing's pytest plugin (where launch is installed, as in CI) imports launch, whose logging module makes
# every logger created afterwards a LaunchLogger with propagate=False: caplog, which listens on the root logger,
# would miss the records of every module a test imports. Loggers created from here on are plain ones again;
# launch's own loggers print through their own handlers as before.
if logging.getLoggerClass().__name__ == 'LaunchLogger':
    logging.setLoggerClass(logging.Logger)

import pytest  # noqa: E402

TINY_CORPUS = ['a photo of a red cup', 'a photo of a blue bottle', 'a green ball', 'a yellow box on a table',
               'a white plate']


@pytest.fixture(scope='session')
def tiny_clip_dir(tmp_path_factory):
    """Make a randomly initialised CLIP model directory (HF format, own tokenizer and preprocessor config)."""
    from robovision_ros.synthetic.tiny_models import make_tiny_clip

    return make_tiny_clip(tmp_path_factory.mktemp('tiny_clip'), TINY_CORPUS, image_size=64, patch_size=8)


@pytest.fixture(scope='session')
def tiny_vit_dir(tmp_path_factory):
    """Make a randomly initialised ViT model directory."""
    from robovision_ros.synthetic.tiny_models import make_tiny_vit

    return make_tiny_vit(tmp_path_factory.mktemp('tiny_vit'), image_size=64, patch_size=8)


@pytest.fixture(scope='session')
def tiny_siglip_dir(tmp_path_factory):
    """Make a randomly initialised SigLIP model directory (CLIP-format BPE tokenizer files)."""
    from robovision_ros.synthetic.tiny_models import make_tiny_siglip

    return make_tiny_siglip(tmp_path_factory.mktemp('tiny_siglip'), TINY_CORPUS, image_size=64, patch_size=8)


@pytest.fixture(scope='session')
def tiny_siglip2_dir(tmp_path_factory):
    """Make a random fixed-resolution SigLIP 2 layout: SiglipModel weights with a tokenizer.json alone."""
    from robovision_ros.synthetic.tiny_models import make_tiny_siglip

    return make_tiny_siglip(tmp_path_factory.mktemp('tiny_siglip2'), TINY_CORPUS, image_size=64, patch_size=8,
                            tokenizer='word', seed=1)


# DINO families by transformers model_type; each directory made once per run by `tiny_dino_dir`.
DINO_KINDS = ('dinov2', 'dinov2_with_registers', 'dinov3_vit')


@pytest.fixture(scope='session')
def tiny_dino_dirs(tmp_path_factory):
    """Make random DINOv2, DINOv2-with-registers and DINOv3 directories (4 registers each where the family has them)."""
    from robovision_ros.synthetic.tiny_models import make_tiny_dino

    return {kind: make_tiny_dino(tmp_path_factory.mktemp(kind), kind, image_size=64, patch_size=8)
            for kind in DINO_KINDS}


@pytest.fixture(scope='session')
def model_cache(tmp_path_factory):
    """ONNX/engine cache directory shared by the tests of one run."""
    return tmp_path_factory.mktemp('robovision_cache')


def structured_images(count: int, size: tuple[int, int] = (96, 128), seed: int = 0):
    """Images with shapes and colour regions (not noise), for accuracy checks of reduced precisions."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        h, w = size
        image = np.empty((h, w, 3), np.uint8)
        image[:] = rng.integers(60, 200, 3)
        for _ in range(3):
            y, x = rng.integers(0, h - 20), rng.integers(0, w - 20)
            dy, dx = rng.integers(10, h // 2), rng.integers(10, w // 2)
            image[y:y + dy, x:x + dx] = rng.integers(0, 256, 3)
        yy, xx = np.mgrid[0:h, 0:w]
        image[..., 2] = np.clip(image[..., 2].astype(int) + (xx * 40 // w), 0, 255)
        images.append(image)
    return images
