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


def test_a_target_met_by_one_method_is_listed_as_missed_by_the_other():
    from robovision_ros.tools.finetune_demo import status_line

    line = status_line({'status': {'clip training <= 5 min': {'lora': True, 'adapter': False},
                                   'clip LoRA adapter <= 5 % of the model': {'lora': True}, 'all': False}})
    assert 'not all of the issue\'s targets are met' in line
    met, missed = line.split('Not met:')
    assert 'clip training <= 5 min (lora only)' in met and 'clip LoRA adapter <= 5 % of the model' in met
    assert missed.strip() == 'clip training <= 5 min (adapter).'
