# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
clip_perception: camera images -> ZeroShotLabels (~/zero_shot_labels) and ObjectPresenceArray (~/object_presence).

The vocabulary changes live through `ros2 param set`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from sensor_msgs.msg import Image

from robovision_ros.clip_scoring import ClipFrameResult
from robovision_ros.debug_view import render_debug_image
from robovision_ros.encoder import ImageFeatures
from robovision_ros.image_codec import encode_raw_image
from robovision_ros.msg import ObjectPresenceArray, ZeroShotLabels
from robovision_ros.nodes.clip_messages import to_messages
from robovision_ros.nodes.perception_node import Frame, PerceptionNode, run_node, string_list
from robovision_ros.nodes.vocabulary_worker import Vocabularies, VocabularyRequest, VocabularyWorker
from robovision_ros.vocabulary import DEFAULT_LABELS, DEFAULT_PRESENCE_QUERIES, DEFAULT_TEMPLATES, MAX_LABEL_LENGTH, \
    MAX_LABELS, MAX_VOCABULARY_TEXTS, VocabularyError, validate_labels, validate_templates, \
    validate_vocabulary_size

VOCABULARY_PARAMETERS = ('labels', 'prompt_templates', 'presence_queries')
SHOWN_LABELS = 5  # a vocabulary change logs this many labels, then a count


def _describe(vocabularies: Vocabularies) -> str:
    labels = vocabularies.labels.labels
    shown = ', '.join(labels[:SHOWN_LABELS]) + (f', ... +{len(labels) - SHOWN_LABELS}' if len(labels) > SHOWN_LABELS
                                                else '')
    return (f'vocabulary v{vocabularies.version}: {len(labels)} labels ({shown}), '
            f'{len(vocabularies.labels.templates)} template(s), {len(vocabularies.queries.labels)} presence queries')


@dataclass(frozen=True)
class ClipSettings:
    """Live output settings, read once per frame batch and replaced whole after a set."""

    presence_threshold: float = 0.25
    localize: bool = True
    debug_image: bool = False


class ClipPerceptionNode(PerceptionNode):
    default_model = 'embedded:tiny_clip'

    def __init__(self, **kwargs: Any) -> None:
        self._vocabularies: Optional[Vocabularies] = None
        self._last_version = 0
        self._vocabulary_worker: Optional[VocabularyWorker] = None
        self._settings = ClipSettings()
        self._labels_pub: Any = None
        self._presence_pub: Any = None
        self._debug_pub: Any = None
        super().__init__('clip_perception', **kwargs)

    def _declare_parameters(self) -> None:
        live = ' Changes live.'
        texts = (f' At most {MAX_LABELS} entries of {MAX_LABEL_LENGTH} characters; entries x prompt_templates '
                 f'at most {MAX_VOCABULARY_TEXTS}.')
        self.declare_parameter('labels', list(DEFAULT_LABELS), ParameterDescriptor(
            description='Zero-shot label vocabulary.' + texts + live, dynamic_typing=True))
        self.declare_parameter('prompt_templates', list(DEFAULT_TEMPLATES), ParameterDescriptor(
            description="Prompt templates, each with one '{}' and no other '{...}' field." + live,
            dynamic_typing=True))
        self.declare_parameter('presence_queries', list(DEFAULT_PRESENCE_QUERIES), ParameterDescriptor(
            description='Object-presence text queries (may be empty: ros2 param set ... presence_queries "[]").'
                        + texts + live, dynamic_typing=True))
        self.declare_parameter('presence_threshold', 0.25, ParameterDescriptor(
            description='Cosine-similarity threshold for presence.' + live,
            floating_point_range=[FloatingPointRange(from_value=-1.0, to_value=1.0)]))
        self.declare_parameter('debug_image', False, ParameterDescriptor(
            description='Publish ~/debug_image (frame, best label, heatmap and box of the top query) while '
                        'someone subscribes.' + live))
        self.declare_parameter('localize', True,
                               ParameterDescriptor(description='Localise each presence query on the patch grid.'
                                                   + live))
        self._settings = self._read_settings()

    def _read_settings(self) -> ClipSettings:
        return ClipSettings(presence_threshold=float(self._param('presence_threshold')),
                            localize=bool(self._param('localize')), debug_image=bool(self._param('debug_image')))

    # --- vocabulary -----------------------------------------------------------------------------------------
    def _vocabulary_request(self, values: Optional[dict[str, Any]] = None) -> VocabularyRequest:
        """Return the vocabulary the parameters ask for (validated; raises VocabularyError or ValueError)."""
        value = (values or {}).get
        labels = validate_labels(string_list(value('labels', self._param('labels')), 'labels'))
        templates = validate_templates(string_list(value('prompt_templates', self._param('prompt_templates')),
                                                   'prompt_templates'))
        queries = validate_labels(string_list(value('presence_queries', self._param('presence_queries')),
                                              'presence_queries', allow_empty=True),
                                  'presence_queries', allow_empty=True)
        validate_vocabulary_size(labels, templates)
        validate_vocabulary_size(queries, templates, 'presence_queries')
        return VocabularyRequest(tuple(labels), tuple(templates), tuple(queries))

    def _build(self, request: VocabularyRequest, version: int,
               cancelled: Callable[[], bool] = lambda: False) -> Vocabularies:
        assert self.encoder is not None
        return Vocabularies(
            self.encoder.build_vocabulary(request.labels, request.templates, version, cancelled=cancelled),
            self.encoder.build_vocabulary(request.queries, request.templates, version, allow_empty=True,
                                          cancelled=cancelled))

    def _prepare(self) -> None:
        # Versions keep counting across cleanup/configure, so a consumer never sees a number reused.
        self._vocabularies = self._build(self._vocabulary_request(), self._last_version + 1)
        self._vocabulary_worker = VocabularyWorker(self._build, self._on_vocabulary_ready,
                                                   self._on_vocabulary_error, self.vocabularies)
        self.get_logger().info(_describe(self._vocabularies))
        # A set accepted while the model loaded asked for a vocabulary this one may predate.
        self._vocabulary_worker.request(self._vocabulary_request())

    def _release(self) -> None:
        if self._vocabulary_worker is not None:
            self._vocabulary_worker.stop()
            self._vocabulary_worker = None
        if self._vocabularies is not None:
            self._last_version = self._vocabularies.version
        self._vocabularies = None

    def _on_vocabulary_ready(self, vocabularies: Vocabularies, texts: int, elapsed_ms: float) -> None:
        self._vocabularies = vocabularies  # one reference swap: the next frame is scored against all of it
        self._last_version = vocabularies.version
        self.get_logger().info(f'{_describe(vocabularies)} ({texts} texts in {elapsed_ms:.0f} ms)')

    def _on_vocabulary_error(self, request: VocabularyRequest, error: BaseException, trace: str) -> None:
        version = self._vocabularies.version if self._vocabularies else 0
        self.get_logger().error(f'vocabulary of {len(request.labels)} labels not applied ({type(error).__name__}: '
                                f'{error}); still scoring with v{version}\n{trace}')

    def _validate_live(self, values: dict[str, Any], names: set[str]) -> Optional[str]:
        if not names & set(VOCABULARY_PARAMETERS):
            return None
        try:
            self._vocabulary_request(values)
        except (VocabularyError, ValueError) as error:
            return str(error)
        return None

    def _apply_live(self, names: set[str]) -> None:
        self._settings = self._read_settings()
        if self._vocabulary_worker is not None and names & set(VOCABULARY_PARAMETERS):
            self._vocabulary_worker.request(self._vocabulary_request())

    def vocabularies(self) -> Optional[Vocabularies]:
        """Return the (labels, presence queries) snapshot the next frame will be scored against."""
        return self._vocabularies

    def _extra_diagnostics(self) -> dict[str, Any]:
        vocabularies = self._vocabularies
        return {'vocabulary_version': vocabularies.version if vocabularies else 0,
                'vocabulary_labels': len(vocabularies.labels.labels) if vocabularies else 0,
                'vocabulary_pending': bool(self._vocabulary_worker and not self._vocabulary_worker.idle())}

    # --- outputs --------------------------------------------------------------------------------------------
    def _create_outputs(self) -> None:
        self._labels_pub = self.create_lifecycle_publisher(ZeroShotLabels, '~/zero_shot_labels', 10)
        self._presence_pub = self.create_lifecycle_publisher(ObjectPresenceArray, '~/object_presence', 10)
        self._debug_pub = self.create_lifecycle_publisher(Image, '~/debug_image', 1)

    def _destroy_outputs(self) -> None:
        for publisher in (self._labels_pub, self._presence_pub, self._debug_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._labels_pub = self._presence_pub = self._debug_pub = None

    def _process(self, frames: list[Frame], images: list[np.ndarray], received: list[float]) -> None:
        assert self.encoder is not None
        vocabularies, settings = self._vocabularies, self._settings  # one consistent snapshot for the batch
        assert vocabularies is not None
        labels_vocab, queries_vocab = vocabularies.labels, vocabularies.queries
        features, timing = self.encoder.encode_images(images)
        start = time.perf_counter()
        debug = settings.debug_image and self._debug_pub.get_subscription_count() > 0
        results = self.encoder.decode_batch(features, labels_vocab, queries_vocab, settings.presence_threshold,
                                            localize=settings.localize, heatmaps=debug)
        model_id = self.encoder.info.model_id
        for i, frame in enumerate(frames):
            labels_msg, presence_msg = to_messages(results[i], frame.msg.header, model_id, timing.preprocess_ms,
                                                   timing.inference_ms, (time.monotonic() - received[i]) * 1e3)
            self._labels_pub.publish(labels_msg)
            self._presence_pub.publish(presence_msg)
            if debug:
                self._publish_debug(frame, images[i], features[i], results[i])
        self.stages['preprocess_ms'].add(timing.preprocess_ms)
        self.stages['inference_ms'].add(timing.inference_ms)
        self.stages['postprocess_ms'].add((time.perf_counter() - start) * 1e3)

    def _publish_debug(self, frame: Frame, image: np.ndarray, feature: ImageFeatures,
                       result: ClipFrameResult) -> None:
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
        overlay = render_debug_image(image, title, heatmap, roi,
                                     feature.geometry.visible_box(self.encoder.preprocessor.config.input_hw), query)
        data, step = encode_raw_image(overlay, 'rgb8')
        self._debug_pub.publish(Image(header=frame.msg.header, height=overlay.shape[0], width=overlay.shape[1],
                                      encoding='rgb8', step=step, data=data))


def main(args: Optional[list[str]] = None) -> int:
    return run_node(ClipPerceptionNode, args)


if __name__ == '__main__':
    import sys

    sys.exit(main())
