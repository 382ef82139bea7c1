# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
feature_extractor: camera images -> PatchFeatures (~/patch_features), one message per image and scale.

A model with a classification head (a ViT fine-tuned by robovision_finetune) also gets ~/class_scores
(ClassScores), one message per image at scale 1.0.
"""
from __future__ import annotations

import time
from typing import Any, Optional

import numpy as np

from robovision_ros.message_conversions import class_scores_message, classification_message, \
    patch_features_message
from robovision_msgs.msg import ClassScores, PatchFeatures
from robovision_ros.nodes.frame_worker import Frame
from robovision_ros.nodes.node_process import run_node
from robovision_ros.nodes.perception_node import FrameOutputs, PerceptionNode
from robovision_ros.parameters import ParameterError, ParameterTable, build_settings
from robovision_ros.settings import FeatureSettings, feature_table, scales_problem


class FeatureExtractorNode(PerceptionNode):
    OUTPUTS = {'features': (PatchFeatures, '~/patch_features', 10),
               'class_scores': (ClassScores, '~/class_scores', 10)}

    def __init__(self, **kwargs: Any) -> None:
        self._settings = FeatureSettings()
        super().__init__('feature_extractor', **kwargs)

    @classmethod
    def make_table(cls) -> ParameterTable:
        return feature_table()

    def outputs(self) -> dict[str, tuple[type, str, Any]]:
        outputs = dict(self.OUTPUTS)
        if self.encoder is None or self.encoder.head is None:
            del outputs['class_scores']  # only a model with a classification head has class scores
        elif self.standard_outputs:
            from vision_msgs.msg import Classification

            outputs['classification'] = (Classification, '~/classification', 10)
        return outputs

    def prepare(self, values: dict[str, Any]) -> None:
        assert self.encoder is not None
        # `auto` resolved to a backend only now: check the scales against the one that loaded.
        problem = scales_problem(values['scales'], self.encoder.backend.name)
        if problem:
            raise ParameterError(problem)
        self._settings = build_settings(FeatureSettings, values)

    def apply_live(self, names: set[str], values: dict[str, Any]) -> None:
        self._settings = build_settings(FeatureSettings, values)

    def infer(self, frames: list[Frame], images: list[np.ndarray]) -> FrameOutputs:
        assert self.encoder is not None
        settings = self._settings
        info = self.encoder.info
        outputs = FrameOutputs()
        for scale in settings.scales:
            features, timing = self.encoder.encode_images(images, scale=scale, normalize=settings.normalize)
            start = time.perf_counter()
            for frame, feature in zip(frames, features):
                outputs.messages.append(('features', patch_features_message(
                    feature, frame.msg.header, info.model_id, info.patch_size, settings.output_dtype, timing,
                    (time.monotonic() - frame.arrival) * 1e3)))
                if self.encoder.head is not None and scale == 1.0:
                    result = self.encoder.classify(feature)
                    outputs.messages.append(('class_scores', class_scores_message(result, frame.msg.header,
                                                                                  info.model_id)))
                    if self.standard_outputs:
                        outputs.messages.append(('classification', classification_message(
                            result.labels, result.scores, frame.msg.header)))
            outputs.preprocess_ms += timing.preprocess_ms
            outputs.inference_ms += timing.inference_ms
            outputs.postprocess_ms += (time.perf_counter() - start) * 1e3
        return outputs


def main(args: Optional[list[str]] = None) -> int:
    return run_node(FeatureExtractorNode, args)


if __name__ == '__main__':
    import sys

    sys.exit(main())
