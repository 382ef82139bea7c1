# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
The perception nodes' parameters, declared once, and the typed settings built from them.

`perception_table(node_parameters, model_default)` is one node's whole table: the parameters every perception node
has (`COMMON_PARAMETERS`), those its backends contribute (each backend module's `BackendEntry.parameters`) and the
node's own (`CLIP_PARAMETERS`, `FEATURE_PARAMETERS`), with the rules that check them together. Validation is the
table's pure `validate`; the settings dataclasses below take their field defaults from the table and are built from
validated values with `build_settings`. No ROS needed (topic names are checked with rclpy's validators where rclpy
is installed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from robovision_ros.backends.accuracy_gate import DEFAULT_INT8_MIN_COSINE
from robovision_ros.backends.base import DEVICES, PRECISIONS
from robovision_ros.backends.registry import backend_capabilities, backend_choices, backend_parameters, \
    backend_rules, check_combination
from robovision_ros.clip_scoring import DEFAULT_PRESENCE_PROBABILITY, DEFAULT_PRESENCE_THRESHOLD, SIGMOID
from robovision_ros.detection import DEFAULT_MAX_DETECTIONS, DEFAULT_NMS_IOU, DEFAULT_SCORE_THRESHOLD
from robovision_ros.detection_queries import ImageQueryError, check_image_query_paths, query_set_problem, \
    read_example_image
from robovision_ros.image_codec import DECODER_LIMITS, DEFAULT_MAX_IMAGE_PIXELS
from robovision_ros.parameters import FIXED, LIVE, START, ParameterRule, ParameterSpec, ParameterTable, default_of
from robovision_ros.preprocessing import CROP, FULL_FRAME, INPUT_MODES
from robovision_ros.vocabulary import DEFAULT_LABELS, DEFAULT_PRESENCE_QUERIES, DEFAULT_TEMPLATES, MAX_LABEL_LENGTH, \
    MAX_LABELS, MAX_VOCABULARY_TEXTS, vocabulary_size_problem, validate_labels, validate_templates

EXECUTORS = ('multi', 'single')
QOS_PROFILES = ('sensor_data', 'reliable')
OUTPUT_DTYPES = ('float32', 'float16')
MAX_SCALES = 8  # each scale is one more inference per frame
MIN_RATE_HZ = 0.001  # max_rate_hz below this (but not 0) is refused: one frame per 17 minutes is no camera rate


def topic_names(topics: tuple[str, ...]) -> tuple[str, ...]:
    """Check camera topic names as ROS resolves them (rclpy's validators): unique, valid, substitutions known."""
    from rclpy.expand_topic_name import expand_topic_name
    from rclpy.validate_full_topic_name import validate_full_topic_name

    if len(set(topics)) != len(topics):
        raise ValueError(f'topics must be unique; got {list(topics)}')
    for topic in topics:
        try:
            # Any valid node name and namespace: whether a name is valid does not depend on them.
            validate_full_topic_name(expand_topic_name(topic, 'node', '/'))
        except Exception as error:  # noqa: BLE001 - rclpy raises several types; each means "not a topic name"
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise ValueError(f'{topic!r} is not a valid topic name ({reason})') from None
    return topics


def _rate(value: float) -> float:
    if 0.0 < value < MIN_RATE_HZ:
        raise ValueError(f'{value:g} Hz would serve one frame per {1.0 / value:.3g} s; use 0 (no limit) or at least '
                         f'{MIN_RATE_HZ} Hz')
    return value


COMMON_PARAMETERS = (
    ParameterSpec('backend', 'string', 'auto', 'Inference backend (auto: the fastest installed one for the device '
                  'and precision).', FIXED, choices=backend_choices()),
    ParameterSpec('device', 'string', 'cpu', 'Where inference runs; cuda fails to configure without a GPU (never a '
                  'silent fallback to cpu).', FIXED, choices=DEVICES),
    ParameterSpec('precision', 'string', 'fp32', 'Numeric precision of the image encoder.', FIXED,
                  choices=PRECISIONS),
    ParameterSpec('int8_min_cosine', 'double', DEFAULT_INT8_MIN_COSINE,
                  'int8 accuracy gate: configure fails when the int8 engine agrees with fp32 less than this (cosine on '
                  'built-in probe images).', FIXED, bounds=(0.0, 1.0)),
    ParameterSpec('engine_cache_dir', 'string', '', 'ONNX/TensorRT cache directory ("" = ~/.cache/robovision_ros).',
                  FIXED),
    ParameterSpec('image_topics', 'string_list', ('image_raw',),
                  'Camera topic, or a list of them (relative names resolve in the node\'s namespace); a name ending '
                  'in compressed is a CompressedImage.', FIXED, check=topic_names),
    ParameterSpec('qos', 'string', 'sensor_data', 'Image subscription QoS.', FIXED, choices=QOS_PROFILES),
    ParameterSpec('qos_depth', 'integer', 1, 'Image subscription depth.', FIXED, bounds=(1, 100)),
    ParameterSpec('batch', 'bool', False, 'Run the newest frame of every camera in one inference.', FIXED),
    ParameterSpec('executor', 'string', 'multi', 'multi: lifecycle and parameter services answer while the model '
                  'loads; single: one thread for all callbacks, which costs less CPU per frame (several cameras on a '
                  'small CPU: use it).', START, choices=EXECUTORS),
    ParameterSpec('max_rate_hz', 'double', 0.0, 'Process at most this many frames per second (0 = as fast as '
                  'possible).', LIVE, bounds=(0.0, 1000.0), check=_rate),
    ParameterSpec('max_frame_age_ms', 'double', 0.0, 'Drop frames whose header stamp is further than this from '
                  "the node's clock, in the past or the future (0 = off).", LIVE, bounds=(0.0, 60000.0)),
    ParameterSpec('max_image_pixels', 'integer', min(DEFAULT_MAX_IMAGE_PIXELS, DECODER_LIMITS.max_pixels),
                  'Reject frames with more pixels than this: raw frames before any copy, compressed frames as decoded '
                  '(the decoder itself refuses more than the process limit OPENCV_IO_MAX_IMAGE_PIXELS, the range\'s '
                  'top, before it allocates).', LIVE, bounds=(1, DECODER_LIMITS.max_pixels)),
    ParameterSpec('camera_timeout_s', 'double', 5.0, 'Warn (log and /diagnostics) when an active node got no frame '
                  'from a camera, or published nothing although frames arrived, for this long (0 = off).', LIVE,
                  bounds=(0.0, 3600.0)),
)

_TEXT_BOUNDS = (f' At most {MAX_LABELS} entries of {MAX_LABEL_LENGTH} characters; entries x prompt_templates at '
                f'most {MAX_VOCABULARY_TEXTS}.')

NORMALIZE = ParameterSpec('normalize', 'bool', False, 'L2-normalise patch and global features.', LIVE)
OUTPUT_DTYPE = ParameterSpec('output_dtype', 'string', 'float32', 'Element type of the feature tensors.', LIVE,
                             choices=OUTPUT_DTYPES)

# The encoder nodes' own (clip_perception, feature_extractor); a detector sees its model's own input only.
INPUT_MODE = ParameterSpec(
    'input_mode', 'string', CROP, "What the model sees of a frame: crop, the model's own preprocessing (a centre crop "
    'for most, as they were trained); full_frame, the whole frame with its aspect kept (short side at the native '
    'size, both sides patch multiples; the patch grid follows). full_frame needs a backend without a fixed input size '
    '(torch).', FIXED, choices=INPUT_MODES)


def input_mode_problem(input_mode: str, backend: str) -> Optional[str]:
    """Why `backend` cannot run `input_mode` (full_frame needs other input sizes); None if it can or is `auto`."""
    capabilities = backend_capabilities().get(backend)
    if input_mode == FULL_FRAME and capabilities is not None:
        return capabilities.input_size_problem('input_mode full_frame')
    return None


INPUT_MODE_RULE = ParameterRule(frozenset({'input_mode', 'backend'}),
                                lambda values: input_mode_problem(values['input_mode'], values['backend']))

CLIP_PARAMETERS = (
    INPUT_MODE,
    ParameterSpec('labels', 'string_list', DEFAULT_LABELS, 'Zero-shot label vocabulary.' + _TEXT_BOUNDS, LIVE,
                  check=lambda v: tuple(validate_labels(v))),
    ParameterSpec('prompt_templates', 'string_list', DEFAULT_TEMPLATES,
                  "Prompt templates, each with one '{}' and no other '{...}' field.", LIVE,
                  check=lambda v: tuple(validate_templates(v))),
    ParameterSpec('presence_queries', 'string_list', DEFAULT_PRESENCE_QUERIES,
                  'Object-presence text queries (may be empty: ros2 param set ... presence_queries "[]").'
                  + _TEXT_BOUNDS, LIVE, allow_empty=True,
                  check=lambda v: tuple(validate_labels(v, 'presence_queries', allow_empty=True))),
    ParameterSpec('presence_threshold', 'double', DEFAULT_PRESENCE_THRESHOLD,
                  'Presence threshold of families with softmax scoring (CLIP): on the cosine similarity of image and '
                  'query.', LIVE, bounds=(-1.0, 1.0)),
    ParameterSpec('presence_probability', 'double', DEFAULT_PRESENCE_PROBABILITY,
                  'Presence threshold of families with sigmoid scoring (SigLIP): on the probability '
                  'sigmoid(logit_scale * cosine + logit_bias).', LIVE, bounds=(0.0, 1.0)),
    ParameterSpec('localize', 'bool', True, 'Localise each presence query on the patch grid.', LIVE),
    ParameterSpec('debug_image', 'bool', False, 'Publish ~/debug_image (frame, best label, heatmap and box of the '
                  'top query) while someone subscribes.', LIVE),
    ParameterSpec('patch_features', 'bool', False, 'Also publish ~/patch_features (PatchFeatures, as feature_extractor '
                  'does at scale 1) from the same forward pass as the labels: one encoder per frame for both.', LIVE),
    NORMALIZE,
    OUTPUT_DTYPE,
)
VOCABULARY_PARAMETERS = ('labels', 'prompt_templates', 'presence_queries')


def _vocabulary_rule(values: Mapping[str, Any]) -> Optional[str]:
    return (vocabulary_size_problem(values['labels'], values['prompt_templates'])
            or vocabulary_size_problem(values['presence_queries'], values['prompt_templates'], 'presence_queries'))


CLIP_RULES = (INPUT_MODE_RULE, ParameterRule(frozenset(VOCABULARY_PARAMETERS), _vocabulary_rule))

FEATURE_PARAMETERS = (
    INPUT_MODE,
    ParameterSpec('scales', 'double_list', (1.0,), 'Input scales relative to the native size; one PatchFeatures '
                  f'per scale (at most {MAX_SCALES}; a backend with a fixed input size runs 1.0 only).', LIVE,
                  bounds=(0.1, 4.0), check=lambda v: _at_most(v, MAX_SCALES, 'scales')),
    NORMALIZE,
    OUTPUT_DTYPE,
)


def _at_most(values: tuple, count: int, what: str) -> tuple:
    if len(values) > count:
        raise ValueError(f'{len(values)} entries; at most {count}')
    return values


def scales_problem(scales: tuple[float, ...], backend: str) -> Optional[str]:
    """Why `backend` cannot run these scales (a fixed input size runs 1.0 only); None if it can or is `auto`."""
    capabilities = backend_capabilities().get(backend)
    if capabilities is not None and capabilities.fixed_input_size and any(s != 1.0 for s in scales):
        return (f'scales other than 1.0 need a backend without a fixed input size (torch); {backend} engines take '
                'the native size only')
    return None


FEATURE_RULES = (INPUT_MODE_RULE,
                 ParameterRule(frozenset({'scales', 'backend'}),
                               lambda values: scales_problem(values['scales'], values['backend'])))


def _combination_rule(values: Mapping[str, Any]) -> Optional[str]:
    return check_combination(values['backend'], values['device'], values['precision'])


COMMON_RULES = (ParameterRule(frozenset({'backend', 'device', 'precision'}), _combination_rule),)


def model_parameter(default: str) -> ParameterSpec:
    """Return the `model` parameter, whose default is each node's embedded model."""
    return ParameterSpec('model', 'string', default, 'Model directory, hub id, or embedded:<name>.', FIXED,
                         check=_non_blank)


def _non_blank(value: str) -> str:
    if not value.strip():
        raise ValueError('must name a model directory, hub id or embedded:<name>')
    return value


def perception_table(model_default: str, parameters: tuple[ParameterSpec, ...] = (),
                     rules: tuple[ParameterRule, ...] = ()) -> ParameterTable:
    """One perception node's table: `model`, the common parameters, the backends' and the node's own."""
    return ParameterTable((model_parameter(model_default),) + COMMON_PARAMETERS + backend_parameters() + parameters,
                          COMMON_RULES + backend_rules() + rules)


def clip_table() -> ParameterTable:
    return perception_table('embedded:tiny_clip', CLIP_PARAMETERS, CLIP_RULES)


def feature_table() -> ParameterTable:
    return perception_table('embedded:tiny_vit', FEATURE_PARAMETERS, FEATURE_RULES)


# --- typed settings, each built from validated values (build_settings); defaults read from the table ------------
def _default(specs: tuple[ParameterSpec, ...], name: str) -> Any:
    return field(default=default_of(specs, name))


@dataclass(frozen=True)
class WorkerSettings:
    """Live settings of the frame worker; replaced whole, never edited."""

    batch: bool = _default(COMMON_PARAMETERS, 'batch')
    max_rate_hz: float = _default(COMMON_PARAMETERS, 'max_rate_hz')
    max_frame_age_ms: float = _default(COMMON_PARAMETERS, 'max_frame_age_ms')
    max_image_pixels: int = _default(COMMON_PARAMETERS, 'max_image_pixels')


@dataclass(frozen=True)
class SubscriptionSettings:
    """The camera subscriptions an activation creates."""

    image_topics: tuple[str, ...]
    qos: str
    qos_depth: int


@dataclass(frozen=True)
class LoadSettings:
    """What configure loads: the model, where, how, and the chosen backend's own parameters."""

    model: str
    backend: str
    device: str
    precision: str
    int8_min_cosine: float
    engine_cache_dir: str
    backend_options: Mapping[str, Any]
    input_mode: Optional[str] = None  # None: the node has no input_mode parameter (open_vocab_detector)

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> 'LoadSettings':
        """Build from validated values; the backend options are every backend-contributed parameter."""
        options = {spec.name: values[spec.name] for spec in backend_parameters()}
        return cls(values['model'], values['backend'], values['device'], values['precision'],
                   values['int8_min_cosine'], values['engine_cache_dir'], options, values.get('input_mode'))


@dataclass(frozen=True)
class ClipSettings:
    """Live output settings of clip_perception, read once per frame batch and replaced whole after a set."""

    presence_threshold: float = _default(CLIP_PARAMETERS, 'presence_threshold')
    presence_probability: float = _default(CLIP_PARAMETERS, 'presence_probability')
    localize: bool = _default(CLIP_PARAMETERS, 'localize')
    debug_image: bool = _default(CLIP_PARAMETERS, 'debug_image')
    patch_features: bool = _default(CLIP_PARAMETERS, 'patch_features')
    normalize: bool = _default(CLIP_PARAMETERS, 'normalize')
    output_dtype: str = _default(CLIP_PARAMETERS, 'output_dtype')

    def threshold_for(self, scoring: str) -> float:
        """Return the presence threshold of a family's scoring: a probability for sigmoid, else a cosine."""
        return self.presence_probability if scoring == SIGMOID else self.presence_threshold


@dataclass(frozen=True)
class FeatureSettings:
    """Live output settings of feature_extractor, read once per frame batch and replaced whole after a set."""

    scales: tuple[float, ...] = _default(FEATURE_PARAMETERS, 'scales')
    normalize: bool = _default(FEATURE_PARAMETERS, 'normalize')
    output_dtype: str = _default(FEATURE_PARAMETERS, 'output_dtype')


# --- open_vocab_detector ----------------------------------------------------------------------------------------
DEFAULT_DETECTOR_QUERIES = ('red cup', 'blue bottle', 'green ball', 'yellow box')
DETECTOR_PARAMETERS = (
    ParameterSpec('queries', 'string_list', DEFAULT_DETECTOR_QUERIES,
                  'Text queries: every instance of each is detected (may be empty: ros2 param set ... queries "[]").'
                  + _TEXT_BOUNDS, LIVE, allow_empty=True,
                  check=lambda v: tuple(validate_labels(v, 'queries', allow_empty=True))),
    next(spec for spec in CLIP_PARAMETERS if spec.name == 'prompt_templates'),
    ParameterSpec('image_queries', 'string_list', (),
                  'Image queries: example image files (PNG, JPEG or TIFF crops of an object, at most 2048x2048 '
                  'pixels), each labelled by its file name without the extension; at most 8. The service '
                  '~/add_image_query adds a region of a recent frame.', LIVE, allow_empty=True,
                  check=check_image_query_paths),
    ParameterSpec('score_threshold', 'double', DEFAULT_SCORE_THRESHOLD,
                  'Keep detections scoring above this (sigmoid of the query logit).', LIVE, bounds=(0.0, 1.0)),
    ParameterSpec('nms_iou', 'double', DEFAULT_NMS_IOU, 'Non-maximum suppression within each query: a box '
                  'overlapping a better one of the same query by more than this IoU is dropped (1 = off).', LIVE,
                  bounds=(0.0, 1.0)),
    ParameterSpec('max_detections', 'integer', DEFAULT_MAX_DETECTIONS, 'At most this many detections per frame '
                  '(the best).', LIVE, bounds=(1, 1000)),
    ParameterSpec('debug_image', 'bool', False, 'Publish ~/debug_image (the frame with every detection\'s box, '
                  'label and score) while someone subscribes.', LIVE),
)
DETECTOR_QUERY_PARAMETERS = ('queries', 'prompt_templates', 'image_queries')


def _detector_queries_rule(values: Mapping[str, Any]) -> Optional[str]:
    return (vocabulary_size_problem(values['queries'], values['prompt_templates'], 'queries')
            or query_set_problem(values['queries'], values['image_queries']))


def _example_images_rule(values: Mapping[str, Any]) -> Optional[str]:
    """Read each example image when image_queries changes (a rule: checks run at every read of the values)."""
    for path in values['image_queries']:
        try:
            read_example_image(path)
        except ImageQueryError as error:
            return str(error)
    return None


DETECTOR_RULES = (ParameterRule(frozenset(DETECTOR_QUERY_PARAMETERS), _detector_queries_rule),
                  ParameterRule(frozenset({'image_queries'}), _example_images_rule))


def detector_table() -> ParameterTable:
    return perception_table('embedded:tiny_owl', DETECTOR_PARAMETERS, DETECTOR_RULES)


@dataclass(frozen=True)
class DetectorSettings:
    """Live output settings of open_vocab_detector, read once per frame batch and replaced whole after a set."""

    score_threshold: float = _default(DETECTOR_PARAMETERS, 'score_threshold')
    nms_iou: float = _default(DETECTOR_PARAMETERS, 'nms_iou')
    max_detections: int = _default(DETECTOR_PARAMETERS, 'max_detections')
    debug_image: bool = _default(DETECTOR_PARAMETERS, 'debug_image')
