# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Image decoding beyond the basics.

Size bounds checked before decoding, image_transport format strings, the codec chosen by magic bytes, 16-bit and
grey compressed images, and the YUV 4:2:2 and Bayer encodings of camera drivers.

Images are compared exactly where that is exact on any CPU: uint8 pixels from lossless codecs (PNG, TIFF), raw
views, and OpenCV's YUV/Bayer conversions against the same OpenCV call (one code path); JPEG with a tolerance.
"""
from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest

from conftest import structured_images
from robovision_ros.image_codec import DEFAULT_MAX_IMAGE_PIXELS, MAX_ASPECT_RATIO, SUPPORTED_ENCODINGS, \
    ImageDecodeError, decode_compressed_image, decode_image_msg, decode_raw_image, encode_raw_image

RGB = structured_images(1, (48, 64), seed=3)[0]


def _encoded(ext: str, image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


def _png_claiming(width: int, height: int) -> bytes:
    """Make a real 2x2 PNG whose IHDR (CRC fixed up) claims `width` x `height`."""
    png = bytearray(_encoded('.png', np.zeros((2, 2, 3), np.uint8)))
    png[16:24] = width.to_bytes(4, 'big') + height.to_bytes(4, 'big')
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, 'big')
    return bytes(png)


def _jpeg_claiming(width: int, height: int) -> bytes:
    """Make a real 16x16 JPEG whose SOF0 frame header claims `width` x `height`."""
    jpeg = bytearray(_encoded('.jpg', np.zeros((16, 16, 3), np.uint8)))
    sof = jpeg.index(b'\xff\xc0')
    jpeg[sof + 5:sof + 9] = height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
    return bytes(jpeg)


def _tiff_claiming(width: int, height: int) -> bytes:
    """Make a real 4x4 TIFF (little-endian, as OpenCV writes it) whose first IFD claims `width` x `height`."""
    tiff = bytearray(_encoded('.tiff', np.zeros((4, 4, 3), np.uint8)))
    assert tiff[:4] == b'II*\0'
    ifd = int.from_bytes(tiff[4:8], 'little')
    for k in range(int.from_bytes(tiff[ifd:ifd + 2], 'little')):
        entry = ifd + 2 + 12 * k
        tag = int.from_bytes(tiff[entry:entry + 2], 'little')
        if tag in (256, 257):
            tiff[entry + 2:entry + 4] = (4).to_bytes(2, 'little')  # LONG
            tiff[entry + 8:entry + 12] = (width if tag == 256 else height).to_bytes(4, 'little')
    return bytes(tiff)


# --- bounds ---------------------------------------------------------------------------------------------------

def test_default_limit_holds_8k():
    assert 7680 * 4320 <= DEFAULT_MAX_IMAGE_PIXELS == 8192 * 8192 and MAX_ASPECT_RATIO == 16


@pytest.mark.parametrize('data,fmt', [(b'', 'jpeg'), (b'', 'png'), (b'', ''), (bytearray(), 'tiff')])
def test_empty_compressed_data_is_a_decode_error(data, fmt):
    with pytest.raises(ImageDecodeError):  # cv2.imdecode raises cv2.error on an empty buffer
        decode_compressed_image(data, fmt)


@pytest.mark.parametrize('make,fmt', [(_png_claiming, 'png'), (_jpeg_claiming, 'jpeg'), (_tiff_claiming, 'tiff')],
                         ids=['png', 'jpeg', 'tiff'])
@pytest.mark.parametrize('size,claim', [((20000, 20000), 'more than 67108864 pixels'),
                                        ((40000, 100), 'a width over 32768'), ((100, 40000), 'a height over 32768')])
def test_header_size_is_refused_by_the_decoder(make, fmt, size, claim):
    """
    A few hundred bytes claiming gigapixels are refused by OpenCV itself, before it allocates.

    OpenCV checks the size its codec (libpng, libjpeg, libtiff) reads from the header against the process-wide
    limits that image_codec sets: the pixel limit, and a side limit that the aspect-ratio bound implies.
    """
    data = make(*size)
    assert len(data) < 2000
    with pytest.raises(ImageDecodeError, match=f'{fmt} image refused by its decoder before decoding: the header '
                                               f'claims {claim}'):
        decode_compressed_image(data, fmt)


@pytest.mark.parametrize('ext', ['.png', '.jpg', '.tiff'])
def test_max_pixels_and_aspect_apply_to_compressed_images(ext):
    data = _encoded(ext, RGB[..., ::-1])
    assert decode_compressed_image(data, ext[1:], max_pixels=48 * 64).shape == (48, 64, 3)
    with pytest.raises(ImageDecodeError, match='64x48 = 3072 pixels exceeds the limit of 3071'):
        decode_compressed_image(data, ext[1:], max_pixels=48 * 64 - 1)
    with pytest.raises(ImageDecodeError, match='aspect ratio of 1.3; the limit is 1.2'):
        decode_compressed_image(data, ext[1:], max_aspect_ratio=1.2)


def test_raw_size_is_bounded_before_reading_the_data():
    with pytest.raises(ImageDecodeError, match='100000x100000 = 10000000000 pixels exceeds the limit'):
        decode_raw_image(b'', 'rgb8', 100000, 100000, 300000)
    with pytest.raises(ImageDecodeError, match='exceeds the limit of 99 pixels'):
        decode_raw_image(b'\0' * 300, 'rgb8', 10, 10, 30, max_pixels=99)
    assert decode_raw_image(b'\0' * 300, 'rgb8', 10, 10, 30, max_pixels=100).shape == (10, 10, 3)


def test_raw_aspect_ratio_is_bounded():
    with pytest.raises(ImageDecodeError, match='17x1 has an aspect ratio of 17.0; the limit is 16'):
        decode_raw_image(b'\0' * 51, 'rgb8', 17, 1, 51)
    assert decode_raw_image(b'\0' * 48, 'rgb8', 16, 1, 48).shape == (1, 16, 3)
    assert decode_raw_image(b'\0' * 51, 'rgb8', 17, 1, 51, max_aspect_ratio=None).shape == (1, 17, 3)


@pytest.mark.parametrize('width,height,step', [(0, 4, 12), (4, -1, 12), (4, 4, -12), (4, 4, 0), (4, 4, 2 ** 62)])
def test_empty_sizes_and_absurd_steps_are_decode_errors(width, height, step):
    with pytest.raises(ImageDecodeError):
        decode_raw_image(b'\0' * 48, 'rgb8', width, height, step)


def test_non_buffer_data_is_a_decode_error():
    with pytest.raises(ImageDecodeError, match='not a byte buffer'):
        decode_raw_image([0] * 12, 'rgb8', 2, 2, 6)
    with pytest.raises(ImageDecodeError, match='not a byte buffer'):
        decode_compressed_image(None, 'png')


def test_message_adapter_passes_the_bounds():
    from sensor_msgs.msg import CompressedImage, Image

    data, step = encode_raw_image(RGB, 'bgr8')
    raw = Image(height=48, width=64, encoding='bgr8', step=step, data=data)
    compressed = CompressedImage(format='png', data=_encoded('.png', RGB[..., ::-1]))
    for msg in (raw, compressed):
        np.testing.assert_array_equal(decode_image_msg(msg), RGB)
        with pytest.raises(ImageDecodeError, match='exceeds the limit of 1000 pixels'):
            decode_image_msg(msg, max_pixels=1000)


# --- compressed formats ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('fmt,ext', [
    ('png', '.png'), ('PNG', '.png'), ('bgr8; png compressed bgr8', '.png'), ('rgb8; png compressed bgr8', '.png'),
    ('tiff', '.tiff'), ('tif', '.tiff'), ('', '.png'), ('', '.tiff'),
    ('webp', '.png'),  # the bytes decide: a mislabelled PNG still decodes
    ('jpeg', '.jpg'), ('jpg', '.jpg'), ('bgra8; jpeg compressed bgr8', '.jpg'), ('', '.jpg'), ('png', '.jpg'),
])
def test_format_strings_as_image_transport_writes_them(fmt, ext):
    decoded = decode_compressed_image(_encoded(ext, RGB[..., ::-1]), fmt)
    assert decoded.shape == RGB.shape and decoded.dtype == np.uint8
    if ext == '.jpg':
        assert np.abs(decoded.astype(int) - RGB.astype(int)).mean() < 6
        assert np.abs(decoded[..., ::-1].astype(int) - RGB.astype(int)).mean() > 20
    else:
        np.testing.assert_array_equal(decoded, RGB)


@pytest.mark.parametrize('fmt', ['rgb8; png compressed rgb8', 'rgba8; png compressed rgba8'])
def test_compressed_rgb_target_keeps_decoded_channel_order(fmt):
    """
    'compressed rgb8': the publisher encoded RGB channels as they are.

    image_transport's subscriber then takes what OpenCV decodes as RGB, without the BGR swap.
    """
    image = RGB if 'rgb8' in fmt else np.concatenate([RGB, np.full((48, 64, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(decode_compressed_image(_encoded('.png', image), fmt), RGB)


@pytest.mark.parametrize('fmt,data', [('h264', b'\0\0\0\x01\x67\x42'), ('webp', b'RIFF\0\0\0\0WEBPVP8 '),
                                      ('bgr8; h265 compressed bgr8', b'\0' * 32)])
def test_unknown_codec_with_unknown_bytes_lists_supported_formats(fmt, data):
    with pytest.raises(ImageDecodeError, match=rf"format '{fmt}' not supported; supported: jpeg, png, tiff"):
        decode_compressed_image(data, fmt)


@pytest.mark.parametrize('fmt,match', [('jpeg', 'no jpeg signature'), ('', 'not jpeg, png, tiff by its first'),
                                       ('bgr8; png compressed bgr8', 'no png signature')])
def test_bytes_that_are_no_image(fmt, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_compressed_image(b'GIF89a' + b'\0' * 40, fmt)


@pytest.mark.parametrize('truncate', [4, 20, 40, 200])
def test_truncated_files_are_decode_errors(truncate):
    for ext in ('.jpg', '.png', '.tiff'):
        with pytest.raises(ImageDecodeError):
            decode_compressed_image(_encoded(ext, RGB)[:truncate], ext[1:])


def test_16bit_png_scales_to_8bit():
    grey16 = (np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) * 21).astype(np.uint16)
    decoded = decode_compressed_image(_encoded('.png', grey16), 'mono16; png compressed mono16')
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, axis=2))
    rgb16 = RGB.astype(np.uint16) * 257 + 100
    decoded = decode_compressed_image(_encoded('.png', rgb16[..., ::-1]), 'rgb16; png compressed bgr16')
    np.testing.assert_array_equal(decoded, (rgb16 >> 8).astype(np.uint8))


def test_grey_png_and_jpeg_become_rgb():
    grey = RGB[..., 1].copy()
    np.testing.assert_array_equal(decode_compressed_image(_encoded('.png', grey), 'mono8; png compressed mono8'),
                                  np.repeat(grey[..., None], 3, axis=2))
    decoded = decode_compressed_image(_encoded('.jpg', grey), 'mono8; jpeg compressed mono8')
    assert decoded.shape == (48, 64, 3) and (decoded[..., 0] == decoded[..., 2]).all()


# --- raw YUV 4:2:2 and Bayer ----------------------------------------------------------------------------------

def _yuv_bt601(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Limited-range BT.601 Y, U, V (what OpenCV's YUV2RGB_UYVY/YUY2 invert)."""
    r, g, b = (rgb[..., i].astype(float) / 255 for i in range(3))
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return tuple(np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v))


def _pack_422(rgb: np.ndarray, order: str) -> bytes:
    """RGB (even width) -> UYVY or YUYV bytes, chroma taken from the left pixel of each pair."""
    y, u, v = _yuv_bt601(rgb)
    h, w = y.shape
    out = np.empty((h, w // 2, 4), np.uint8)
    lanes = {'uyvy': (u[:, ::2], y[:, ::2], v[:, ::2], y[:, 1::2]),
             'yuyv': (y[:, ::2], u[:, ::2], y[:, 1::2], v[:, ::2])}[order]
    for i, lane in enumerate(lanes):
        out[..., i] = lane
    return out.tobytes()


@pytest.mark.parametrize('encoding,order,code', [('yuv422', 'uyvy', cv2.COLOR_YUV2BGR_UYVY),
                                                 ('uyvy', 'uyvy', cv2.COLOR_YUV2BGR_UYVY),
                                                 ('yuv422_yuy2', 'yuyv', cv2.COLOR_YUV2BGR_YUY2),
                                                 ('yuyv', 'yuyv', cv2.COLOR_YUV2BGR_YUY2)])
def test_yuv422_matches_cv_bridge_and_keeps_colours(encoding, order, code):
    wire = np.random.default_rng(5).integers(0, 256, (6, 8 * 2), dtype=np.uint8)
    expected = cv2.cvtColor(wire.reshape(6, 8, 2), code)[..., ::-1]  # cv_bridge's conversion, to RGB
    np.testing.assert_array_equal(decode_raw_image(wire.tobytes(), encoding, 8, 6, 16), expected)
    for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 120, 40), (128, 128, 128)]:
        solid = np.empty((4, 6, 3), np.uint8)
        solid[:] = colour
        decoded = decode_raw_image(_pack_422(solid, order), encoding, 6, 4, 12)
        assert np.abs(decoded.astype(int) - solid.astype(int)).max() <= 3, (colour, decoded[0, 0])
    padded = np.concatenate([wire, np.zeros((6, 5), np.uint8)], axis=1)
    np.testing.assert_array_equal(decode_raw_image(padded.tobytes(), encoding, 8, 6, 21), expected)


@pytest.mark.parametrize('encoding', ['yuv422', 'yuv422_yuy2'])
def test_yuv422_odd_width_is_a_decode_error(encoding):
    with pytest.raises(ImageDecodeError, match='width 5 must be even'):
        decode_raw_image(b'\0' * 40, encoding, 5, 4, 10)


# cv_bridge's Bayer -> BGR codes (OpenCV names the pattern by the second row, so they look shifted).
CV_BRIDGE_BAYER = {'rggb': cv2.COLOR_BayerBG2BGR, 'bggr': cv2.COLOR_BayerRG2BGR,
                   'gbrg': cv2.COLOR_BayerGR2BGR, 'grbg': cv2.COLOR_BayerGB2BGR}


def _mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image through the colour filter array `pattern` (2x2, row-major, e.g. 'rggb')."""
    mosaic = np.empty(rgb.shape[:2], rgb.dtype)
    for k, colour in enumerate(pattern):
        dy, dx = divmod(k, 2)
        mosaic[dy::2, dx::2] = rgb[dy::2, dx::2, 'rgb'.index(colour)]
    return mosaic


@pytest.mark.parametrize('pattern', list(CV_BRIDGE_BAYER))
def test_bayer8_solid_colours_and_cv_bridge_parity(pattern):
    for colour in [(255, 0, 0), (0, 255, 0), (0, 0, 255), (30, 140, 220)]:
        solid = np.empty((8, 10, 3), np.uint8)
        solid[:] = colour
        decoded = decode_raw_image(_mosaic(solid, pattern).tobytes(), f'bayer_{pattern}8', 10, 8, 10)
        np.testing.assert_array_equal(decoded[1:-1, 1:-1], solid[1:-1, 1:-1])  # pure red decodes to red
    mosaic = _mosaic(structured_images(1, (32, 40), seed=7)[0], pattern)
    expected = cv2.cvtColor(mosaic, CV_BRIDGE_BAYER[pattern])[..., ::-1]
    np.testing.assert_array_equal(decode_raw_image(mosaic.tobytes(), f'bayer_{pattern}8', 40, 32, 40), expected)
    padded = np.concatenate([mosaic, np.zeros((32, 3), np.uint8)], axis=1)
    np.testing.assert_array_equal(decode_raw_image(padded.tobytes(), f'bayer_{pattern}8', 40, 32, 43), expected)


@pytest.mark.parametrize('pattern', list(CV_BRIDGE_BAYER))
@pytest.mark.parametrize('big_endian', [False, True])
def test_bayer16_honours_endianness_and_scales_like_mono16(pattern, big_endian):
    solid = np.empty((8, 10, 3), np.uint16)
    solid[:] = (65535, 0, 0)
    wire = _mosaic(solid, pattern).astype('>u2' if big_endian else '<u2').tobytes()
    decoded = decode_raw_image(wire, f'bayer_{pattern}16', 10, 8, 20, is_bigendian=big_endian)
    assert decoded.dtype == np.uint8 and (decoded[1:-1, 1:-1] == (255, 0, 0)).all()
    mosaic = _mosaic(structured_images(1, (24, 32), seed=8)[0].astype(np.uint16) * 257 + 77, pattern)
    expected = (cv2.cvtColor(mosaic, CV_BRIDGE_BAYER[pattern])[..., ::-1] >> 8).astype(np.uint8)
    wire = mosaic.astype('>u2' if big_endian else '<u2').tobytes()
    np.testing.assert_array_equal(decode_raw_image(wire, f'bayer_{pattern}16', 32, 24, 64, big_endian), expected)


def test_new_encodings_are_listed_and_colour_fast_paths_stay_views():
    for encoding in ('yuv422', 'yuv422_yuy2', 'bayer_rggb8', 'bayer_grbg16'):
        assert encoding in SUPPORTED_ENCODINGS
    for encoding in ('rgb8', 'bgr8'):
        data = bytearray(encode_raw_image(RGB, encoding)[0])
        decoded = decode_raw_image(data, encoding, 64, 48, 192)
        np.testing.assert_array_equal(decoded, RGB)
        assert np.shares_memory(decoded, np.frombuffer(data, np.uint8))
