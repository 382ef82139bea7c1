"""clip_perception: camera images -> ZeroShotLabels (~/zero_shot_labels) and ObjectPresenceArray
(~/object_presence), with a vocabulary that changes live through `ros2 param set`."""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

import numpy as np
from rcl_interfaces.msg import ParameterDescriptor
from sensor_msgs.msg import Image

from robovision_ros.clip_scoring import ClipFrameResult
from robovision_ros.debug_view import render_debug_image
from robovision_ros.encoder import ImageFeatures
from robovision_ros.msg import ObjectPresenceArray, ZeroShotLabels
from robovision_ros.nodes.clip_messages import to_messages
from robovision_ros.nodes.perception_node import Frame, PerceptionNode, run_node
from robovision_ros.preprocessing import encode_raw_image
from robovision_ros.vocabulary import VocabularyEmbeddings, VocabularyError, validate_labels, validate_templates

VOCABULARY_PARAMETERS = ('labels', 'prompt_templates', 'presence_queries')


class ClipPerceptionNode(PerceptionNode):
    default_model = 'embedded:tiny_clip'

    def __init__(self, **kwargs: Any) -> None:
        # Set before the parameters are declared: declaring runs the parameter callbacks, which use them.
        self._labels_vocab: Optional[VocabularyEmbeddings] = None
        self._queries_vocab: Optional[VocabularyEmbeddings] = None
        self._pending: Optional[tuple[VocabularyEmbeddings, VocabularyEmbeddings]] = None
        self._vocab_lock = threading.Lock()
        self.vocabulary_version = 0
        self._labels_pub: Any = None
        self._presence_pub: Any = None
        self._debug_pub: Any = None
        super().__init__('clip_perception', **kwargs)
        live = ' Changes live.'
        self.declare_parameter('labels', ['red cup', 'blue cup', 'red bottle', 'blue bottle', 'green ball',
                                          'yellow box'],
                               ParameterDescriptor(description='Zero-shot label vocabulary.' + live))
        self.declare_parameter('prompt_templates', ['a photo of a {}.'],
                               ParameterDescriptor(description="Prompt templates, each with one '{}'." + live))
        self.declare_parameter('presence_queries', ['red cup', 'blue bottle'],
                               ParameterDescriptor(description='Object-presence text queries (may be empty).'
                                                   + live))
        self.declare_parameter('presence_threshold', 0.25,
                               ParameterDescriptor(description='Cosine-similarity threshold for presence.' + live))
        self.declare_parameter('debug_image', False, ParameterDescriptor(
            description='Publish ~/debug_image (frame, best label, heatmap and box of the top query) while '
                        'someone subscribes.' + live))
        self.declare_parameter('localize', True,
                               ParameterDescriptor(description='Localise each presence query on the patch grid.'
                                                   + live))

    # --- vocabulary -----------------------------------------------------------------------------------------
    def _build(self, labels: list[str], templates: list[str], queries: list[str],
               version: int) -> tuple[VocabularyEmbeddings, VocabularyEmbeddings]:
        assert self.encoder is not None
        return (self.encoder.build_vocabulary(labels, templates, version),
                self.encoder.build_vocabulary(queries, templates, version, allow_empty=True))

    def _prepare(self) -> None:
        self.vocabulary_version += 1
        self._labels_vocab, self._queries_vocab = self._build(
            list(self._param('labels')), list(self._param('prompt_templates')),
            list(self._param('presence_queries')), self.vocabulary_version)

    def _current(self, params: dict[str, Any], name: str) -> Any:
        """The value `name` will have after this set (None while it is still being declared)."""
        if name in params:
            return params[name]
        return self.get_parameter(name).value if self.has_parameter(name) else None

    def _validate_live(self, params: dict[str, Any]) -> Optional[str]:
        values = {name: self._current(params, name) for name in VOCABULARY_PARAMETERS}
        try:
            labels = validate_labels(values['labels']) if values['labels'] is not None else None
            templates = validate_templates(values['prompt_templates']) \
                if values['prompt_templates'] is not None else None
            queries = validate_labels(values['presence_queries'], 'presence_queries', allow_empty=True) \
                if values['presence_queries'] is not None else None
        except VocabularyError as error:
            return str(error)
        except TypeError:
            return 'labels, prompt_templates and presence_queries must be string arrays'
        threshold = params.get('presence_threshold')
        if threshold is not None and not -1.0 <= float(threshold) <= 1.0:
            return 'presence_threshold must lie in [-1, 1]'
        if self.encoder is not None and any(name in params for name in VOCABULARY_PARAMETERS):
            assert labels is not None and templates is not None and queries is not None
            current_labels, current_queries = self.vocabularies()
            if current_labels is not None and current_queries is not None and (
                    (tuple(labels), tuple(templates), tuple(queries))
                    == (current_labels.labels, current_labels.templates, current_queries.labels)):
                return None  # the same vocabulary again: nothing to encode, no new version
            # Encoded here, in the parameter service, never on the inference thread; swapped in after the set.
            with self._vocab_lock:
                self._pending = self._build(labels, templates, queries, self.vocabulary_version + 1)
        return None

    def _apply_live(self, params: dict[str, Any]) -> None:
        with self._vocab_lock:
            if self._pending is not None and any(name in params for name in VOCABULARY_PARAMETERS):
                self._labels_vocab, self._queries_vocab = self._pending  # one reference swap per vocabulary
                self.vocabulary_version = self._pending[0].version
                self.get_logger().info(f'vocabulary v{self.vocabulary_version}: {list(self._pending[0].labels)}')
            self._pending = None

    def vocabularies(self) -> tuple[Optional[VocabularyEmbeddings], Optional[VocabularyEmbeddings]]:
        """The (labels, presence queries) snapshot the next frame will be scored against."""
        with self._vocab_lock:
            return self._labels_vocab, self._queries_vocab

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
        labels_vocab, queries_vocab = self.vocabularies()  # one consistent snapshot for the whole batch
        assert labels_vocab is not None and queries_vocab is not None
        features, timing = self.encoder.encode_images(images)
        start = time.perf_counter()
        debug = bool(self._param('debug_image')) and self._debug_pub.get_subscription_count() > 0
        results = self.encoder.decode_batch(features, labels_vocab, queries_vocab,
                                            float(self._param('presence_threshold')),
                                            localize=bool(self._param('localize')), heatmaps=debug)
        model_id = self._param('model')
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
