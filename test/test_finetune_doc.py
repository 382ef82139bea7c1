# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""docs/finetuning.md is what robovision_finetune_demo renders from the numbers it recorded next to it."""
from __future__ import annotations

import json
from pathlib import Path

from robovision_ros.tools.finetune_demo import render_doc, status

DOCS = Path(__file__).resolve().parents[1] / 'docs'


def test_the_doc_is_rendered_from_its_recorded_results():
    results = json.loads((DOCS / 'finetuning_results.json').read_text())
    assert status(results) == results['status']  # the targets checked again from the recorded numbers
    assert render_doc(results) == (DOCS / 'finetuning.md').read_text()
