# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
feature_extractor: camera images -> PatchFeatures (~/patch_features), one message per image and scale.

A model with a classification head (a ViT fine-tuned by robovision_finetune) also gets ~/class_scores
(ClassScores), one message per image at scale 1.0.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor

from robovision_ros.message_conversions import fill_patch_features
from robovision_ros.msg import ClassScores, PatchFeatures
from robovision_ros.nodes.perception_node import Frame, PerceptionNode, run_node

OUTPUT_DTYPES = {'float32': np.float32, 'float16': np.float16}
MAX_SCALES = 8  # each scale is one more inference per frame


@dataclass(frozen=True)
class FeatureSettings:
    """Live output settings, read once per frame batch and replaced whole after a set."""

    scales: tuple[float, ...] = (1.0,)
    normalize: bool = False
    output_dtype: str = 'float32'


class FeatureExtractorNode(PerceptionNode):
    default_model = 'embedded:tiny_vit'

    def __init__(self, **kwargs: Any) -> None:
        self._publisher: Any = None
        self._class_publisher: Any = None
        self._settings = FeatureSettings()
        super().__init__('feature_extractor', **kwargs)

    def _declare_parameters(self) -> None:
        self.declare_parameter('scales', [1.0], ParameterDescriptor(
            description='Input scales relative to the native size, each in [0.1, 4.0]; one PatchFeatures per '
                        'scale (torch backend for scales other than 1.0). Changes live.'))
        self.declare_parameter('normalize', False,
                               ParameterDescriptor(description='L2-normalise patch and global features.'))
        self.declare_parameter('output_dtype', 'float32',
                               ParameterDescriptor(description='float32 or float16 feature tensors.'))
        self._settings = self._read_settings()

    def _read_settings(self) -> FeatureSettings:
        return FeatureSettings(tuple(float(s) for s in self._param('scales')), bool(self._param('normalize')),
                               str(self._param('output_dtype')))

    def _scales_problem(self, scales: list[float], backend: str) -> Optional[str]:
        if not scales or len(scales) > MAX_SCALES or any(not 0.1 <= s <= 4.0 for s in scales):
            return f'scales must be a list of 1 to {MAX_SCALES} values in [0.1, 4.0]; got {scales}'
        if backend != 'torch' and any(s != 1.0 for s in scales):
            return f'scales other than 1.0 need backend torch; {backend} engines have a fixed input'
        return None

    def _prepare(self) -> None:
        assert self.encoder is not None
        problem = self._scales_problem(list(self._param('scales')), self.encoder.backend.name)
        if problem:
            raise ValueError(problem)

    def _validate_live(self, values: dict[str, Any], names: set[str]) -> Optional[str]:
        if 'output_dtype' in names and values['output_dtype'] not in OUTPUT_DTYPES:
            return f"output_dtype '{values['output_dtype']}' not supported; supported: {', '.join(OUTPUT_DTYPES)}"
        if 'scales' not in names:
            return None
        backend = self.encoder.backend.name if self.encoder is not None else 'torch'
        return self._scales_problem(list(values['scales']), backend)

    def _apply_live(self, names: set[str]) -> None:
        self._settings = self._read_settings()

    def _create_outputs(self) -> None:
        self._publisher = self.create_lifecycle_publisher(PatchFeatures, '~/patch_features', 10)
        if self.encoder is not None and self.encoder.head is not None:
            self._class_publisher = self.create_lifecycle_publisher(ClassScores, '~/class_scores', 10)

    def _destroy_outputs(self) -> None:
        if self._publisher is not None:
            self.destroy_lifecycle_publisher(self._publisher)
        self._publisher = None
        if self._class_publisher is not None:
            self.destroy_lifecycle_publisher(self._class_publisher)
        self._class_publisher = None

    def _publish_class_scores(self, frame: Frame, feature: Any, model_id: str) -> None:
        """Publish the ClassScores of one image from the model's classification head."""
        assert self.encoder is not None
        result = self.encoder.classify(feature)
        msg = ClassScores(model_id=model_id, labels=list(result.labels), scores=result.scores.tolist(),
                          best_label=result.best_label, best_score=result.best_score)
        msg.header = frame.msg.header
        self._class_publisher.publish(msg)

    def _process(self, frames: list[Frame], images: list[np.ndarray], received: list[float]) -> None:
        assert self.encoder is not None
        settings = self._settings
        normalize = settings.normalize
        dtype = OUTPUT_DTYPES[settings.output_dtype]
        model_id = self.encoder.info.model_id
        for scale in settings.scales:
            features, timing = self.encoder.encode_images(images, scale=float(scale), normalize=normalize)
            start = time.perf_counter()
            for frame, feature, arrival in zip(frames, features, received):
                msg = fill_patch_features(PatchFeatures(), feature.patch_tokens.astype(dtype), *feature.grid_hw,
                                          feature.global_embedding)
                msg.header = frame.msg.header
                msg.model_id = model_id
                msg.patch_size = self.encoder.info.patch_size
                msg.scale = float(scale)
                msg.normalized = normalize
                msg.preprocess_ms, msg.inference_ms = timing.preprocess_ms, timing.inference_ms
                msg.total_ms = (time.monotonic() - arrival) * 1e3
                self._publisher.publish(msg)
                if self._class_publisher is not None and scale == 1.0:
                    self._publish_class_scores(frame, feature, model_id)
            self.stages['preprocess_ms'].add(timing.preprocess_ms)
            self.stages['inference_ms'].add(timing.inference_ms)
            self.stages['postprocess_ms'].add((time.perf_counter() - start) * 1e3)


def main(args: Optional[list[str]] = None) -> int:
    return run_node(FeatureExtractorNode, args)


if __name__ == '__main__':
    import sys

    sys.exit(main())
