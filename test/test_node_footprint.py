# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""A node on OpenVINO or ONNX Runtime keeps no torch (nor the other framework) in its process after configure."""
from __future__ import annotations

from pathlib import Path

import pytest

from ros_harness import PerceptionProcess, RosTestContext, change_state

pytest.importorskip('openvino')


def _mapped(pid: int) -> str:
    return Path(f'/proc/{pid}/maps').read_text()


@pytest.mark.parametrize('backend,absent', [('openvino', ('libtorch', 'onnxruntime')),
                                            ('onnxruntime', ('libtorch', 'libopenvino'))])
def test_a_configured_int8_node_maps_no_torch(backend, absent, tmp_path):
    """
    Configure exports and converts in a child process and gates int8 without torch: the node maps no libtorch.

    A fresh engine cache, so that export, conversion and quantization all happen during this configure.
    """
    process = PerceptionProcess('clip_perception', tmp_path / 'node.log', prefix='/rvlean', params={
        'model': 'embedded:tiny_clip', 'backend': backend, 'precision': 'int8',
        'engine_cache_dir': tmp_path / 'cache'})
    ros = RosTestContext('footprint_test')
    try:
        assert change_state(ros, process.node, 'configure', 600.0), process.output()
        assert 'int8 accuracy gate passed' in process.output()
        maps = _mapped(process.process.process.pid)
        for library in absent:
            assert library not in maps, f'{library} mapped in a configured {backend} node'
    finally:
        ros.close()
        process.stop()
