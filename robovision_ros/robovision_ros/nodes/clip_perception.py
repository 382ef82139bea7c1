# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
clip_perception: camera images -> ZeroShotLabels (~/zero_shot_labels) and ObjectPresenceArray (~/object_presence).

Any family with a text tower (CLIP, SigLIP): the messages say which scoring produced them. With `patch_features`
the same forward pass also gives PatchFeatures (~/patch_features), so labels, presence and features cost one
encoder per frame. The vocabulary changes live through `ros2 param set`: validated in the set (settings.py),
encoded on the vocabulary worker's thread, swapped in whole.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from robovision_ros.debug_view import render_debug_image
from robovision_ros.message_conversions import classification_message, image_message, label_info_message, \
    patch_features_message, presence_detections_message, zero_shot_messages
from robovision_msgs.msg import ObjectPresenceArray, PatchFeatures, ZeroShotLabels
from robovision_ros.nodes.frame_worker import Frame
from robovision_ros.nodes.node_process import run_node
from robovision_ros.nodes.perception_node import FrameOutputs, PerceptionNode
from robovision_ros.nodes.live_vocabulary import LiveVocabulary, Wording
from robovision_ros.parameters import ParameterTable, build_settings
from robovision_ros.settings import VOCABULARY_PARAMETERS, ClipSettings, clip_table
from robovision_ros.vocabulary import Vocabulary, VocabularySpec

SHOWN_LABELS = 5  # a vocabulary change logs this many labels, then a count


def describe_vocabulary(vocabulary: Vocabulary, texts: int, elapsed_ms: float) -> str:
    """Return the one log line of a vocabulary change (at configure and after each set)."""
    labels = vocabulary.labels.labels
    shown = ', '.join(labels[:SHOWN_LABELS]) + (f', ... +{len(labels) - SHOWN_LABELS}' if len(labels) > SHOWN_LABELS
                                                else '')
    queries = len(vocabulary.queries.labels)
    return (f'vocabulary v{vocabulary.version}: {len(labels)} labels ({shown}), '
            f'{len(vocabulary.labels.templates)} template(s), {queries} presence '
            f"{'query' if queries == 1 else 'queries'} ({texts} texts in {elapsed_ms:.0f} ms)")


def vocabulary_spec(values: dict[str, Any]) -> VocabularySpec:
    """Return the vocabulary that validated parameter values ask for."""
    return VocabularySpec(values['labels'], values['prompt_templates'], values['presence_queries'])


VOCABULARY_WORDING = Wording('vocabulary of {n} labels', 'the vocabulary set last is', 'scoring',
                             'retrying until it is')


class ClipPerceptionNode(PerceptionNode):
    OUTPUTS = {'labels': (ZeroShotLabels, '~/zero_shot_labels', 10),
               'presence': (ObjectPresenceArray, '~/object_presence', 10),
               'debug': (Image, '~/debug_image', 1),
               'features': (PatchFeatures, '~/patch_features', 10)}

    def __init__(self, **kwargs: Any) -> None:
        self._vocabulary = LiveVocabulary(self._build, describe_vocabulary, VOCABULARY_WORDING,
                                          lambda line: self.get_logger().info(line),
                                          lambda line: self.get_logger().error(line))
        self._label_info_version = 0  # the vocabulary version the last LabelInfo described
        self._settings = ClipSettings()
        super().__init__('clip_perception', **kwargs)

    @classmethod
    def make_table(cls) -> ParameterTable:
        return clip_table()

    def outputs(self) -> dict[str, tuple[type, str, Any]]:
        outputs = dict(self.OUTPUTS)
        if self.standard_outputs:
            from vision_msgs.msg import Classification, Detection2DArray, LabelInfo

            outputs.update(classification=(Classification, '~/classification', 10),
                           detections=(Detection2DArray, '~/detections', 10),
                           # Latched, as vision_msgs recommends: a late subscriber gets the vocabulary in use.
                           label_info=(LabelInfo, '~/label_info', QoSProfile(
                               depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                               reliability=ReliabilityPolicy.RELIABLE)))
        return outputs

    # --- vocabulary -----------------------------------------------------------------------------------------
    def _build(self, request: VocabularySpec, version: int,
               cancelled: Callable[[], bool] = lambda: False) -> Vocabulary:
        assert self.encoder is not None
        return Vocabulary(
            self.encoder.build_vocabulary(request.labels, request.templates, version, cancelled=cancelled),
            self.encoder.build_vocabulary(request.queries, request.templates, version, allow_empty=True,
                                          cancelled=cancelled))

    def prepare(self, values: dict[str, Any]) -> None:
        self._settings = build_settings(ClipSettings, values)
        self._label_info_version = 0  # the publishers are new: LabelInfo goes out again with the next frame
        self._vocabulary.start(vocabulary_spec(values))
        # A set accepted while the model loaded asked for a vocabulary this one may predate.
        self._vocabulary.request(vocabulary_spec(self.parameters.values()))

    def release(self) -> None:
        self._vocabulary.stop()

    def apply_live(self, names: set[str], values: dict[str, Any]) -> None:
        self._settings = build_settings(ClipSettings, values)
        if names & set(VOCABULARY_PARAMETERS):
            self._vocabulary.request(vocabulary_spec(values))

    def vocabulary(self) -> Optional[Vocabulary]:
        """Return the (labels, presence queries) snapshot the next frame will be scored against."""
        return self._vocabulary.current

    def extra_diagnostics(self) -> dict[str, Any]:
        vocabulary = self._vocabulary.current
        return self._vocabulary.diagnostics({'vocabulary_labels': len(vocabulary.labels.labels) if vocabulary else 0})

    def health_warnings(self) -> list[str]:
        return self._vocabulary.warnings()

    # --- the frame hook (worker thread) ---------------------------------------------------------------------
    def infer(self, frames: list[Frame], images: list[np.ndarray]) -> FrameOutputs:
        assert self.encoder is not None
        vocabulary, settings = self._vocabulary.current, self._settings  # one consistent snapshot for the batch
        assert vocabulary is not None
        # One forward pass: the labels, presence and (when asked) the patch features all come from it. L2
        # normalisation changes no cosine, so the scores are the same with `normalize` on or off.
        features, timing = self.encoder.encode_images(images, normalize=settings.patch_features and settings.normalize)
        start = time.perf_counter()
        debug = settings.debug_image and self.output_wanted('debug')
        threshold = settings.threshold_for(self.encoder.family.scoring)
        results = self.encoder.score_batch(features, vocabulary.labels, vocabulary.queries, threshold,
                                           localize=settings.localize, heatmaps=debug)
        outputs = FrameOutputs(preprocess_ms=timing.preprocess_ms, inference_ms=timing.inference_ms)
        info = self.encoder.info
        model_id = info.model_id
        for frame, image, feature, result in zip(frames, images, features, results):
            total_ms = (time.monotonic() - frame.arrival) * 1e3
            labels_msg, presence_msg = zero_shot_messages(result, frame.msg.header, model_id, timing, total_ms)
            outputs.messages += [('labels', labels_msg), ('presence', presence_msg)]
            if settings.patch_features:
                outputs.messages.append(('features', patch_features_message(
                    feature, frame.msg.header, model_id, info.patch_size, settings.output_dtype, timing, total_ms)))
            if self.standard_outputs:
                outputs.messages += [('classification', classification_message(result.labels, result.scores,
                                                                               frame.msg.header)),
                                     ('detections', presence_detections_message(result, frame.msg.header))]
                if vocabulary.version != self._label_info_version:
                    self._label_info_version = vocabulary.version
                    outputs.messages.append(('label_info', label_info_message(result.labels, frame.msg.header)))
            if debug:
                outputs.messages.append(('debug', self._debug_image(frame, image, feature, result)))
        outputs.postprocess_ms = (time.perf_counter() - start) * 1e3
        return outputs

    def _debug_image(self, frame: Frame, image: np.ndarray, feature: Any, result: Any) -> Image:
        """Only computed when enabled and subscribed: the top query's heatmap and box over the frame."""
        assert self.encoder is not None
        title = f'{result.best_label} {result.best_score:.2f}'
        heatmap = roi = None
        query = ''
        top = result.top_query
        if top is not None and result.heatmaps is not None:
            query = f'{result.queries[top]} {result.similarities[top]:.2f}'
            heatmap = result.heatmaps[top]
            roi = result.locate(top).roi_xywh
        visible = feature.geometry.visible_box(self.encoder.preprocessor.input_hw(image.shape[:2]))
        overlay = render_debug_image(image, title, heatmap, roi, visible, query)
        return image_message(overlay, frame.msg.header)


def main(args: Optional[list[str]] = None) -> int:
    return run_node(ClipPerceptionNode, args)


if __name__ == '__main__':
    import sys

    sys.exit(main())
