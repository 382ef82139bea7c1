# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
open_vocab_detector: camera images -> every instance of every query, boxed (~/object_detections).

An OWL-ViT / OWLv2 model (default: the embedded tiny detector) finds each instance of each text query
(`queries`, with `prompt_templates`) and each image query (`image_queries`: example image files; the service
~/add_image_query saves a region of a recent frame as one). The queries change live through `ros2 param set`:
validated in the set (settings.py), encoded on the vocabulary worker's thread (the text engine for texts not seen
before, the image engine once per new example image), swapped in whole with a new version. Frames are decoded
against the queries in use: per-query non-maximum suppression, `score_threshold`, `max_detections`, boxes in the
frame's pixels. Where vision_msgs is installed, also ~/detections (Detection2DArray, class_id = the label) and a
latched ~/label_info.
"""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from robovision_ros.backends.onnx_export import default_cache_dir
from robovision_ros.debug_view import render_detections
from robovision_ros.detection import DetectionResult
from robovision_ros.detection_queries import DetectionQueries, DetectionQuerySpec, image_query_label
from robovision_ros.detector import DetectorEncoder
from robovision_ros.message_conversions import detections_message, detections_vision_message, image_message, \
    label_info_message
from robovision_msgs.msg import ObjectDetectionArray
from robovision_ros.nodes.frame_worker import Frame
from robovision_ros.nodes.node_process import run_node
from robovision_ros.nodes.perception_node import FrameOutputs, PerceptionNode
from robovision_ros.nodes.live_vocabulary import LiveVocabulary, Wording
from robovision_ros.parameters import ParameterTable, build_settings
from robovision_ros.settings import DETECTOR_QUERY_PARAMETERS, DetectorSettings, detector_table
from robovision_msgs.srv import AddImageQuery

SHOWN_QUERIES = 5  # a query change logs this many labels, then a count
IMAGE_QUERY_DIR = 'image_queries'  # under the engine cache: example images saved by ~/add_image_query
MIN_REGION_SIDE = 4


def describe_queries(queries: DetectionQueries, texts: int, elapsed_ms: float) -> str:
    """Return the one log line of a query change (at configure and after each set)."""
    labels = queries.labels
    shown = ', '.join(labels[:SHOWN_QUERIES]) + (f', ... +{len(labels) - SHOWN_QUERIES}'
                                                 if len(labels) > SHOWN_QUERIES else '')
    return (f'queries v{queries.version}: {len(queries.texts.labels)} text, {len(queries.images.labels)} image '
            f'({shown}); {len(queries.texts.templates)} template(s) ({texts} texts in {elapsed_ms:.0f} ms)')


def query_spec(values: dict[str, Any]) -> DetectionQuerySpec:
    """Return the query set that validated parameter values ask for."""
    return DetectionQuerySpec(values['queries'], values['prompt_templates'], values['image_queries'])


QUERIES_WORDING = Wording('queries of {n} entries', 'the queries set last are', 'detecting', 'retrying until they are')


def label_problem(label: str) -> Optional[str]:
    """Why `label` cannot name an image query saved by the service (it becomes a file name), or None."""
    if not label.strip():
        return 'label must not be blank'
    if label != label.strip() or '/' in label or '\0' in label or label.startswith('.'):
        return f"label '{label}' must be a file name: no '/', no surrounding blanks, not starting with '.'"
    if len(label) > 128:
        return 'label is longer than 128 characters'
    return None


class OpenVocabDetectorNode(PerceptionNode):
    ENCODER = DetectorEncoder
    OUTPUTS = {'detections': (ObjectDetectionArray, '~/object_detections', 10),
               'debug': (Image, '~/debug_image', 1)}

    def __init__(self, **kwargs: Any) -> None:
        self._queries = LiveVocabulary(self._build, describe_queries, QUERIES_WORDING,
                                       lambda line: self.get_logger().info(line),
                                       lambda line: self.get_logger().error(line))
        self._label_info_version = 0  # the query-set version the last LabelInfo described
        self._settings = DetectorSettings()
        self._recent: dict[str, tuple[Any, np.ndarray]] = {}  # camera topic -> (header, RGB image) processed last
        self._last_camera = ''
        self._recent_lock = threading.Lock()
        self._service: Any = None
        super().__init__('open_vocab_detector', **kwargs)

    @classmethod
    def make_table(cls) -> ParameterTable:
        return detector_table()

    def outputs(self) -> dict[str, tuple[type, str, Any]]:
        outputs = dict(self.OUTPUTS)
        if self.standard_outputs:
            from vision_msgs.msg import Detection2DArray, LabelInfo

            outputs.update(standard=(Detection2DArray, '~/detections', 10),
                           # Latched, as vision_msgs recommends: a late subscriber gets the queries in use.
                           label_info=(LabelInfo, '~/label_info', QoSProfile(
                               depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL,
                               reliability=ReliabilityPolicy.RELIABLE)))
        return outputs

    # --- queries --------------------------------------------------------------------------------------------
    def _build(self, request: DetectionQuerySpec, version: int,
               cancelled: Callable[[], bool] = lambda: False) -> DetectionQueries:
        assert self.encoder is not None
        return self.encoder.build_queries(request, version, cancelled)

    def prepare(self, values: dict[str, Any]) -> None:
        self._settings = build_settings(DetectorSettings, values)
        self._label_info_version = 0  # the publishers are new: LabelInfo goes out again with the next frame
        self._queries.start(query_spec(values))
        # A set accepted while the model loaded asked for queries this set may predate.
        self._queries.request(query_spec(self.parameters.values()))
        self._service = self.create_service(AddImageQuery, '~/add_image_query', self._add_image_query)

    def release(self) -> None:
        if self._service is not None:
            self.destroy_service(self._service)
            self._service = None
        self._queries.stop()
        with self._recent_lock:
            self._recent.clear()

    def apply_live(self, names: set[str], values: dict[str, Any]) -> None:
        self._settings = build_settings(DetectorSettings, values)
        if names & set(DETECTOR_QUERY_PARAMETERS):
            self._queries.request(query_spec(values))

    def queries(self) -> Optional[DetectionQueries]:
        """Return the query snapshot the next frame will be decoded against."""
        return self._queries.current

    def extra_diagnostics(self) -> dict[str, Any]:
        queries = self._queries.current
        return self._queries.diagnostics({'text_queries': len(queries.texts.labels) if queries else 0,
                                          'image_queries': len(queries.images.labels) if queries else 0})

    def health_warnings(self) -> list[str]:
        return self._queries.warnings()

    # --- image queries from a recent frame (service, executor thread) ---------------------------------------
    def _add_image_query(self, request: Any, response: Any) -> Any:
        """Save a region of a recent frame as an example image and add it to image_queries."""
        response.success, response.message, response.path = False, '', ''
        problem = label_problem(request.label)
        if problem is None and request.label in self.parameters.values()['queries']:
            problem = f"label '{request.label}' is a text query; choose another name"
        with self._recent_lock:
            camera = request.camera or self._last_camera
            recent = self._recent.get(camera)
        if problem is None and recent is None:
            problem = (f"no frame from camera '{camera}' processed yet" if camera else 'no frame processed yet')
        if problem is None:
            header, image = recent
            roi = request.roi
            height, width = image.shape[:2]
            if (roi.width < MIN_REGION_SIDE or roi.height < MIN_REGION_SIDE or roi.x_offset + roi.width > width
                    or roi.y_offset + roi.height > height):
                problem = (f'roi x {roi.x_offset} y {roi.y_offset} width {roi.width} height {roi.height} is not a '
                           f'region of at least {MIN_REGION_SIDE}x{MIN_REGION_SIDE} pixels inside the '
                           f'{width}x{height} frame')
        if problem is not None:
            response.message = problem
            self.get_logger().warn(f'add_image_query refused: {problem}')
            return response
        crop = np.ascontiguousarray(image[roi.y_offset:roi.y_offset + roi.height,
                                          roi.x_offset:roi.x_offset + roi.width])
        try:
            path = self._save_example(request.label, crop)
        except OSError as error:
            response.message = f'could not save the example image: {error}'
            self.get_logger().warn(f'add_image_query refused: {response.message}')
            return response
        paths = [p for p in self.parameters.values()['image_queries'] if image_query_label(p) != request.label]
        result = self.set_parameters([_string_list_parameter('image_queries', paths + [str(path)])])[0]
        if not result.successful:
            response.message = f'image_queries refused the new query: {result.reason}'
            self.get_logger().warn(f'add_image_query refused: {result.reason}')
            return response
        stamp = header.stamp
        response.success, response.path = True, str(path)
        response.message = (f"image query '{request.label}' added: {roi.width}x{roi.height} pixels of the frame "
                            f'of {stamp.sec}.{stamp.nanosec:09d} from {camera}')
        self.get_logger().info(response.message)
        return response

    def _save_example(self, label: str, crop: np.ndarray) -> Path:
        """Write an example image as PNG in a directory of its own (the file name is the label)."""
        import cv2

        cache = self.parameters.values()['engine_cache_dir']
        directory = (Path(cache) if cache else default_cache_dir()) / IMAGE_QUERY_DIR / uuid.uuid4().hex[:12]
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f'{label}.png'
        if not cv2.imwrite(str(path), np.ascontiguousarray(crop[..., ::-1])):
            raise OSError(f'could not write {path}')
        return path

    # --- the frame hook (worker thread) ---------------------------------------------------------------------
    def infer(self, frames: list[Frame], images: list[np.ndarray]) -> FrameOutputs:
        assert self.encoder is not None
        queries, settings = self._queries.current, self._settings  # one consistent snapshot for the batch
        assert queries is not None
        outputs_, geometries, timing = self.encoder.encode_images(images)
        start = time.perf_counter()
        debug = settings.debug_image and self.output_wanted('debug')
        outputs = FrameOutputs(preprocess_ms=timing.preprocess_ms, inference_ms=timing.inference_ms)
        model_id = self.encoder.info.model_id
        for index, (frame, image, geometry) in enumerate(zip(frames, images, geometries)):
            result = self.encoder.decode(outputs_, index, geometry, queries, settings.score_threshold,
                                         settings.nms_iou, settings.max_detections)
            postprocess_ms = (time.perf_counter() - start) * 1e3
            outputs.messages.append(('detections', detections_message(
                result, queries.is_image, frame.msg.header, model_id, settings.score_threshold, settings.nms_iou,
                timing, postprocess_ms, (time.monotonic() - frame.arrival) * 1e3)))
            if self.standard_outputs:
                outputs.messages.append(('standard', detections_vision_message(result, frame.msg.header)))
                if queries.version != self._label_info_version:
                    self._label_info_version = queries.version
                    outputs.messages.append(('label_info', label_info_message(queries.labels, frame.msg.header,
                                                                              settings.score_threshold)))
            if debug:
                outputs.messages.append(('debug', self._debug_image(frame, image, result)))
            with self._recent_lock:
                self._recent[frame.topic] = (frame.msg.header, image)
                self._last_camera = frame.topic
        outputs.postprocess_ms = (time.perf_counter() - start) * 1e3
        return outputs

    @staticmethod
    def _debug_image(frame: Frame, image: np.ndarray, result: DetectionResult) -> Image:
        """Only computed when enabled and subscribed: every detection's box, label and score over the frame."""
        title = f'{len(result.detections)} detections, queries v{result.version}'
        overlay = render_detections(image, title, [d.box_xyxy for d in result.detections],
                                    [f'{d.label} {d.score:.2f}' for d in result.detections],
                                    [d.query_index for d in result.detections])
        return image_message(overlay, frame.msg.header)


def _string_list_parameter(name: str, values: list[str]) -> Any:
    from rclpy.parameter import Parameter

    return Parameter(name, Parameter.Type.STRING_ARRAY, values)


def main(args: Optional[list[str]] = None) -> int:
    return run_node(OpenVocabDetectorNode, args)


if __name__ == '__main__':
    import sys

    sys.exit(main())
