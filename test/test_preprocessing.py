"""Image decoding by sensor_msgs encoding semantics, and preprocessing that matches the HF image processor."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import structured_images
from robovision_ros.preprocessing import SUPPORTED_ENCODINGS, ImageDecodeError, ImagePreprocessor, \
    PreprocessConfig, decode_compressed_image, decode_image_msg, decode_raw_image, encode_raw_image
from robovision_ros.tiny_models import clip_preprocessor_config, vit_preprocessor_config

RED = (255, 0, 0)


def _red_patch(h=6, w=8):
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[1:4, 2:5] = RED
    return rgb


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'rgba8', 'bgra8', '8UC3'])
def test_colour_encodings_arrive_in_rgb_order(encoding):
    rgb = _red_patch()
    data, step = encode_raw_image(rgb, encoding)
    decoded = decode_raw_image(data, encoding, 8, 6, step)
    np.testing.assert_array_equal(decoded, rgb)
    assert tuple(decoded[2, 3]) == RED  # pure red lands in channel 0 whatever the wire order


def test_pure_red_as_rgb8_and_bgr8_reaches_model_in_same_channel_order():
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:] = RED
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(vit_preprocessor_config(32)))
    inputs = []
    for encoding in ('rgb8', 'bgr8'):
        data, step = encode_raw_image(rgb, encoding)
        inputs.append(preprocessor([decode_raw_image(data, encoding, 64, 64, step)]))
    np.testing.assert_array_equal(inputs[0], inputs[1])
    assert inputs[0][0, 0].mean() == pytest.approx(1.0) and inputs[0][0, 2].mean() == pytest.approx(-1.0)


def test_rgb8_decoding_is_a_view_of_the_buffer():
    data = bytearray(np.arange(6 * 8 * 3, dtype=np.uint8).tobytes())
    decoded = decode_raw_image(data, 'rgb8', 8, 6, 24)
    assert np.shares_memory(decoded, np.frombuffer(data, np.uint8))


@pytest.mark.parametrize('encoding', ['mono8', '8UC1'])
def test_grey_8bit(encoding):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    decoded = decode_raw_image(grey.tobytes(), encoding, 4, 3, 4)
    assert decoded.shape == (3, 4, 3)
    np.testing.assert_array_equal(decoded[..., 1], grey)


@pytest.mark.parametrize('encoding', ['mono16', '16UC1'])
@pytest.mark.parametrize('big_endian', [False, True])
def test_grey_16bit_honours_endianness(encoding, big_endian):
    values = np.array([[0, 256, 65535], [1024, 32768, 512]], np.uint16)
    wire = values.astype('>u2' if big_endian else '<u2').tobytes()
    decoded = decode_raw_image(wire, encoding, 3, 2, 6, is_bigendian=big_endian)
    np.testing.assert_array_equal(decoded[..., 0], (values >> 8).astype(np.uint8))


@pytest.mark.parametrize('encoding,channels', [('rgb8', 3), ('bgra8', 4), ('mono8', 1), ('mono16', 2)])
def test_padded_rows(encoding, channels):
    width, height, pad = 5, 4, 7
    row = width * channels
    rows = np.random.default_rng(1).integers(0, 255, (height, row + pad), dtype=np.uint8)
    padded = decode_raw_image(rows.tobytes(), encoding, width, height, row + pad)
    unpadded = decode_raw_image(np.ascontiguousarray(rows[:, :row]).tobytes(), encoding, width, height, row)
    np.testing.assert_array_equal(padded, unpadded)


def test_unsupported_encoding_names_supported_list():
    with pytest.raises(ImageDecodeError, match=r"encoding 'nv12' not supported; supported: rgb8, bgr8"):
        decode_raw_image(b'\0' * 16, 'nv12', 2, 2, 8)
    assert 'mono16' in SUPPORTED_ENCODINGS


def test_short_data_and_short_step_are_rejected():
    with pytest.raises(ImageDecodeError, match='need 24'):
        decode_raw_image(b'\0' * 20, 'rgb8', 4, 2, 12)
    with pytest.raises(ImageDecodeError, match='shorter than a row'):
        decode_raw_image(b'\0' * 24, 'rgb8', 4, 2, 10)


@pytest.mark.parametrize('fmt,ext', [('png', '.png'), ('jpeg', '.jpg'), ('bgr8; jpeg compressed bgr8', '.jpg')])
def test_compressed_images(fmt, ext):
    rgb = structured_images(1, (48, 64))[0]
    ok, encoded = cv2.imencode(ext, rgb[..., ::-1])
    assert ok
    decoded = decode_compressed_image(encoded.tobytes(), fmt)
    if ext == '.png':
        np.testing.assert_array_equal(decoded, rgb)
    else:  # lossy, but in RGB order: a channel swap would differ by far more
        assert np.abs(decoded.astype(int) - rgb.astype(int)).mean() < 6
        assert np.abs(decoded[..., ::-1].astype(int) - rgb.astype(int)).mean() > 20


def test_compressed_errors():
    with pytest.raises(ImageDecodeError, match="format 'webp' not supported; supported: jpeg, png, tiff"):
        decode_compressed_image(b'xx', 'webp')
    with pytest.raises(ImageDecodeError, match='could not decode'):
        decode_compressed_image(b'not a png', 'png')


def test_ros_message_adapter():
    from sensor_msgs.msg import CompressedImage, Image

    rgb = _red_patch()
    data, step = encode_raw_image(rgb, 'bgr8')
    msg = Image(height=6, width=8, encoding='bgr8', step=step, data=data)
    np.testing.assert_array_equal(decode_image_msg(msg), rgb)
    ok, png = cv2.imencode('.png', rgb[..., ::-1])
    np.testing.assert_array_equal(decode_image_msg(CompressedImage(format='png', data=png.tobytes())), rgb)


@pytest.mark.parametrize('config', [clip_preprocessor_config(64, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)),
                                    vit_preprocessor_config(48)], ids=['clip', 'vit'])
def test_matches_hf_image_processor(tmp_path, config):
    """Same pixels as the HF processor of the same directory: max abs diff <= 1e-5 (float rounding only)."""
    import json

    from transformers import AutoImageProcessor

    (tmp_path / 'preprocessor_config.json').write_text(json.dumps(config))
    hf = AutoImageProcessor.from_pretrained(str(tmp_path))
    ours = ImagePreprocessor(PreprocessConfig.from_model_dir(tmp_path))
    for image in structured_images(3, (120, 160)) + structured_images(1, (160, 90)):
        expected = hf(images=image, return_tensors='np')['pixel_values']
        got = ours([image])
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5


def test_geometry_maps_model_pixels_back_to_source():
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(clip_preprocessor_config(64)))
    geometry = preprocessor.geometry((480, 640))  # resized to 64x85, centre crop of 64 from x=10
    assert geometry.crop_x == 10 and geometry.crop_y == 0
    y, x = geometry.to_source(32, 32)
    assert y == pytest.approx(240, abs=1) and x == pytest.approx(320, abs=4)


@pytest.mark.parametrize('config', [clip_preprocessor_config(64, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)),
                                    vit_preprocessor_config(48)], ids=['clip', 'vit'])
def test_device_path_matches_pil_path(config):
    """The GPU path (run here on the CPU device) resizes with torch's antialiased filter instead of PIL's."""
    preprocessor = ImagePreprocessor(PreprocessConfig.from_dict(config))
    import torch

    bgr_view = decode_raw_image(encode_raw_image(structured_images(1, (96, 128), seed=4)[0], 'bgr8')[0], 'bgr8',
                                128, 96, 384)  # channel-reversed view of a message buffer
    for image in structured_images(2, (480, 640)) + structured_images(1, (120, 90)) + [bgr_view]:
        expected = preprocessor([image])
        got = preprocessor.torch_preprocess([image], 'cpu', torch.float32).numpy()
        assert got.shape == expected.shape
        difference = np.abs(got - expected)
        assert difference.mean() <= 0.02 and np.percentile(difference, 99) <= 0.1, \
            (difference.mean(), difference.max())
