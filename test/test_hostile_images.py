# Copyright 2026 The robovision_ros authors
# SPDX-License-Identifier: Apache-2.0

"""
Hostile compressed images: each is refused by the library that decodes it, at a bounded cost.

The files are the ones of issue 22, built here: a JPEG that hides a small frame header from a parser that skips
differently from libjpeg, an aspect ratio within the pixel limit, a TIFF that gives its size twice, a float64 TIFF, a
progressive JPEG with thousands of scans (also inside a TIFF). Each is decoded in a fresh process whose address
space is capped a little above what it needs: the cost is bounded by memory, not by a clock, and a regression fails
the test instead of the machine; a control image shows that the cap bites. Then: inherited OpenCV limits that
OpenCV itself could not parse, an OpenCV loaded before the limits were set, and what the C decoders print.
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from robovision_ros.image_codec import DECODER_LIMITS, DEFAULT_MAX_IMAGE_PIXELS, MAX_JPEG_SCANS, ImageDecodeError, \
    decode_compressed_image, decoder_limits_from_environment

SHORT, LONG = 3, 4


# --- hostile files --------------------------------------------------------------------------------------------

def _jpeg_segments(jpeg: bytes) -> list[tuple[int, bytes]]:
    """Split a well-formed JPEG into (marker, bytes) pieces: each segment, each scan's entropy-coded data after it."""
    pieces, i = [], 2
    while i < len(jpeg):
        marker = jpeg[i + 1]
        if marker == 0xD9:
            pieces.append((marker, jpeg[i:i + 2]))
            break
        end = i + 2 + int.from_bytes(jpeg[i + 2:i + 4], 'big')
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not FF00 or a restart
            while not (jpeg[end] == 0xFF and jpeg[end + 1] != 0 and not 0xD0 <= jpeg[end + 1] <= 0xD7):
                end += 1
        pieces.append((marker, jpeg[i:end]))
        i = end
    return pieces


def _with_frame_size(segment: bytes, width: int, height: int) -> bytes:
    return segment[:5] + height.to_bytes(2, 'big') + width.to_bytes(2, 'big') + segment[9:]


def jpeg_with_hidden_frame_header() -> bytes:
    """
    Make a JPEG whose real frame header says 20000x20000 and whose COM segment hides an 8x8 one.

    After SOI comes `FF 00 00 13`: libjpeg skips FF00 as stuffing and reads on, while a parser that takes it for a
    segment of length 0x13 jumps to byte 23, into the COM segment, where an 8x8 SOF0 waits.
    """
    ok, encoded = cv2.imencode('.jpg', np.zeros((16, 16), np.uint8))
    assert ok
    body = b''.join(_with_frame_size(piece, 20000, 20000) if marker == 0xC0 else piece
                    for marker, piece in _jpeg_segments(encoded.tobytes()))
    hidden_sof = b'\xff\xc0\x00\x0b\x08\x00\x08\x00\x08\x01\x01\x11\x00'
    comment = b'\xff\xfe' + (2 + 13 + len(hidden_sof)).to_bytes(2, 'big') + b'x' * 13 + hidden_sof
    data = b'\xff\xd8' + b'\xff\x00\x00\x13' + comment + body
    assert data[23:25] == b'\xff\xc0' and data.count(b'\xff\xc0') == 2
    return data


def jpeg_claiming(width: int, height: int) -> bytes:
    """Make a real 16x16 grey JPEG whose frame header claims `width` x `height` (the data ends early)."""
    ok, encoded = cv2.imencode('.jpg', np.zeros((16, 16), np.uint8))
    assert ok
    return b'\xff\xd8' + b''.join(_with_frame_size(piece, width, height) if marker == 0xC0 else piece
                                  for marker, piece in _jpeg_segments(encoded.tobytes()))


def progressive_jpeg(side: int, extra_scans: int) -> bytes:
    """Make a progressive grey JPEG of `side` x `side` with `extra_scans` more (empty) AC scans before its end."""
    ok, encoded = cv2.imencode('.jpg', np.zeros((16, 16), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    pieces = _jpeg_segments(encoded.tobytes())
    out, ac_scan = bytearray(b'\xff\xd8'), b''
    for k, (marker, piece) in enumerate(pieces):
        if marker == 0xD9:
            break
        out += _with_frame_size(piece, side, side) if marker == 0xC2 else piece
        if marker == 0xDA and not ac_scan and piece[7] > 0:  # the first AC scan (Ss > 0), with its Huffman table
            header = piece[:2 + int.from_bytes(piece[2:4], 'big')]
            ac_scan = (pieces[k - 1][1] if pieces[k - 1][0] == 0xC4 else b'') + header
    return bytes(out) + ac_scan * extra_scans + b'\xff\xd9'


def tiff(entries: list[tuple[int, int, list[int]]], strips: list[bytes]) -> bytes:
    """Make a little-endian TIFF: the strips, then one IFD of `entries` in the order given (StripOffsets filled in)."""
    out = bytearray(b'II*\0\0\0\0\0')
    offsets = []
    for strip in strips:
        offsets.append(len(out))
        out += strip
    out += b'\0' * (len(out) % 2)
    ifd_at = len(out)
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd, extra = bytearray(struct.pack('<H', len(entries))), bytearray()
    for tag, kind, values in entries:
        values = offsets if tag == 273 else values
        raw = struct.pack('<' + {SHORT: 'H', LONG: 'I'}[kind] * len(values), *values)
        if len(raw) <= 4:
            ifd += struct.pack('<HHI', tag, kind, len(values)) + raw.ljust(4, b'\0')
        else:
            ifd += struct.pack('<HHII', tag, kind, len(values), extra_at + len(extra))
            extra += raw
    out += ifd + b'\0\0\0\0' + extra
    out[4:8] = struct.pack('<I', ifd_at)
    return bytes(out)


def tiff_with_duplicate_size() -> bytes:
    """Make a 16x16 RGB TIFF whose IFD gives ImageWidth/ImageLength twice: LONG 20000 first, SHORT 16 last."""
    pixels = bytes(16 * 16 * 3)
    return tiff([(256, LONG, [20000]), (257, LONG, [20000]), (258, SHORT, [8, 8, 8]), (259, SHORT, [1]),
                 (262, SHORT, [2]), (273, LONG, [0]), (277, SHORT, [3]), (278, LONG, [1 << 30]),
                 (279, LONG, [len(pixels)]), (256, SHORT, [16]), (257, SHORT, [16])], [pixels])


def float64_tiff(side: int = 8192, rows_per_strip: int = 64) -> bytes:
    """Make a `side` x `side` float64 RGBA TIFF of zeros, deflate-compressed (2 MB at 8192)."""
    strip = zlib.compress(bytes(side * rows_per_strip * 4 * 8), 9)
    count = side // rows_per_strip
    return tiff([(256, LONG, [side]), (257, LONG, [side]), (258, SHORT, [64] * 4), (259, SHORT, [8]),
                 (262, SHORT, [2]), (273, LONG, [0] * count), (277, SHORT, [4]), (278, LONG, [rows_per_strip]),
                 (279, LONG, [len(strip)] * count), (338, SHORT, [2]), (339, SHORT, [3] * 4)], [strip] * count)


def jpeg_in_tiff(jpeg: bytes, side: int) -> bytes:
    """Make a `side` x `side` grey TIFF whose one strip is `jpeg` (Compression 7, JPEG)."""
    return tiff([(256, LONG, [side]), (257, LONG, [side]), (258, SHORT, [8]), (259, SHORT, [7]), (262, SHORT, [1]),
                 (273, LONG, [0]), (277, SHORT, [1]), (278, LONG, [side]), (279, LONG, [len(jpeg)])], [jpeg])


# --- decoded in a fresh process, within a memory cap -----------------------------------------------------------

_DECODE_CAPPED = textwrap.dedent('''
    import json, resource, sys
    import numpy as np
    from robovision_ros.image_codec import ImageDecodeError, decode_compressed_image

    import cv2  # after image_codec, which sets OpenCV's limits
    for ext in ('.jpg', '.png', '.tiff'):  # load every codec before capping
        decode_compressed_image(cv2.imencode(ext, np.zeros((64, 64, 3), np.uint8))[1], ext[1:])
    with open('/proc/self/status') as status:
        vm_kib = next(int(line.split()[1]) for line in status if line.startswith('VmSize:'))
    cap = (vm_kib << 10) + (int(sys.argv[3]) << 20)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    data = open(sys.argv[1], 'rb').read()
    try:
        shape, error = list(decode_compressed_image(data, sys.argv[2]).shape), None
    except ImageDecodeError as failure:
        shape, error = None, str(failure)
    print(json.dumps({'shape': shape, 'error': error}))
''')


def _decode_capped(tmp_path: Path, data: bytes, fmt: str, headroom_mib: int) -> dict:
    """
    Decode `data` in a new process that may map at most `headroom_mib` MiB more than it has once its codecs loaded.

    Any allocation beyond the cap fails, so a decode that gets further than it should is an error here, not a
    slow machine; unlike a peak-RSS reading, the cap also counts memory that is freed again before the end.
    """
    path = tmp_path / 'image.bin'
    path.write_bytes(data)
    result = subprocess.run([sys.executable, '-c', _DECODE_CAPPED, str(path), fmt, str(headroom_mib)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


HEADROOM_MIB = 256  # what a refused image may make the process map; the images the attacks claim are 1 to 4 GiB


def test_the_memory_cap_bites(tmp_path):
    """Control: a 4096x4096 JPEG (its data ends early; libjpeg fills the rest) needs its 48 MiB, and gets them."""
    data = jpeg_claiming(4096, 4096)
    assert _decode_capped(tmp_path, data, 'jpeg', HEADROOM_MIB) == {'shape': [4096, 4096, 3], 'error': None}
    refused = _decode_capped(tmp_path, data, 'jpeg', 32)
    assert refused['shape'] is None and 'Failed to allocate' in refused['error'], refused


ATTACKS = {
    # issue 22 item 1: libjpeg reads 20000x20000, a parser that skips FF00 as a segment reads 8x8.
    'jpeg hidden frame header': (jpeg_with_hidden_frame_header, 'jpeg', 'header claims more than 67108864 pixels'),
    # item 1: 65 Mpx, within the pixel limit, at an aspect ratio of 65.
    'jpeg 65000x1000': (lambda: jpeg_claiming(65000, 1000), 'jpeg', 'header claims a width over 32768'),
    # item 2: libtiff takes the first ImageWidth/ImageLength (20000), a parser that keeps the last reads 16.
    'tiff duplicate size tags': (tiff_with_duplicate_size, 'tiff', 'header claims more than 67108864 pixels'),
    # item 3: 8192x8192 passes the pixel limit; float64 RGBA would be 2 GiB decoded as it is. libtiff refuses.
    'tiff float64 8192x8192': (float64_tiff, 'tiff', 'can not handle images with 64-bit samples'),
    # item 4: 5000 empty AC scans at 8192x8192 (81 s of decoding before): counted before decoding.
    'jpeg 5000 scans': (lambda: progressive_jpeg(8192, 5000), 'jpeg', '5006 start-of-scan markers; at most 100'),
    # item 4, inside a TIFF: libtiff stops at its own scan limit.
    'jpeg-in-tiff 200 scans': (lambda: jpeg_in_tiff(progressive_jpeg(4096, 200), 4096), 'tiff',
                               'exceeds maximum scans'),
}


@pytest.mark.parametrize('name', list(ATTACKS))
def test_hostile_image_is_refused_by_its_decoder_at_bounded_cost(tmp_path, name):
    """Refused for the decoder's own reason within a 256 MiB memory cap (a decode that got further would fail it)."""
    make, fmt, reason = ATTACKS[name]
    data = make()
    assert len(data) < 3_000_000
    result = _decode_capped(tmp_path, data, fmt, HEADROOM_MIB)
    assert result['shape'] is None and reason in result['error'], result


def test_attack_files_are_what_they_claim():
    """The hostile files hold what the tests say (so that a refusal is for the stated reason)."""
    hidden = jpeg_with_hidden_frame_header()
    assert hidden[2:6] == b'\xff\x00\x00\x13' and b'\xff\xc0\x00\x0b\x08\x4e\x20\x4e\x20' in hidden  # 20000x20000
    duplicate = tiff_with_duplicate_size()
    ifd = int.from_bytes(duplicate[4:8], 'little')
    tags = [struct.unpack_from('<HH', duplicate, ifd + 2 + 12 * k) for k in range(duplicate[ifd])]
    assert tags[:2] == [(256, LONG), (257, LONG)] and tags[-2:] == [(256, SHORT), (257, SHORT)]
    assert progressive_jpeg(64, 0).count(b'\xff\xda') == 6 and progressive_jpeg(64, 10).count(b'\xff\xda') == 16
    decoded = decode_compressed_image(progressive_jpeg(64, 10), 'jpeg')  # a few extra empty scans are fine
    assert decoded.shape == (64, 64, 3)
    assert decode_compressed_image(jpeg_in_tiff(progressive_jpeg(64, 50), 64), 'tiff').shape == (64, 64, 3)


def test_scan_limit_counts_start_of_scan_markers():
    assert MAX_JPEG_SCANS == 100
    decode_compressed_image(progressive_jpeg(64, MAX_JPEG_SCANS - 6), 'jpeg')
    with pytest.raises(ImageDecodeError, match='101 start-of-scan markers; at most 100 scans'):
        decode_compressed_image(progressive_jpeg(64, MAX_JPEG_SCANS - 5), 'jpeg')


# --- OpenCV's limits in the environment -----------------------------------------------------------------------

def test_limits_default_to_the_pixel_bound_and_the_sides_it_allows():
    assert (DECODER_LIMITS.max_pixels, DECODER_LIMITS.max_width, DECODER_LIMITS.max_height) == \
        (DEFAULT_MAX_IMAGE_PIXELS, 32768, 32768)  # 32768 x 2048: the widest image of 8192^2 pixels at 16:1
    for name, value in zip(('PIXELS', 'WIDTH', 'HEIGHT'), ('67108864', '32768', '32768')):
        assert os.environ[f'OPENCV_IO_MAX_IMAGE_{name}'] == value


@pytest.mark.parametrize('inherited,pixels,replaced', [
    ('', DEFAULT_MAX_IMAGE_PIXELS, True),  # OpenCV aborts the process on this (std::invalid_argument: stoull)
    ('abc', DEFAULT_MAX_IMAGE_PIXELS, True), (' 100', DEFAULT_MAX_IMAGE_PIXELS, True),
    ('0', DEFAULT_MAX_IMAGE_PIXELS, True), ('12GB', DEFAULT_MAX_IMAGE_PIXELS, True),
    ('99999999999999999999', DEFAULT_MAX_IMAGE_PIXELS, True),
    ('1000000', 1000000, False), ('16MB', 16 << 20, False), ('64kb', 64 << 10, False),
])
def test_inherited_limits_are_validated(inherited, pixels, replaced):
    environ = {'OPENCV_IO_MAX_IMAGE_PIXELS': inherited}
    limits = decoder_limits_from_environment(environ)
    assert limits.max_pixels == pixels and bool(limits.replaced) == replaced
    assert environ['OPENCV_IO_MAX_IMAGE_PIXELS'] == str(pixels)  # what OpenCV will read: digits only
    assert environ['OPENCV_IO_MAX_IMAGE_WIDTH'] == environ['OPENCV_IO_MAX_IMAGE_HEIGHT'] == str(limits.max_width)
    assert limits.max_width ** 2 <= 16 * pixels < (limits.max_width + 1) ** 2


def _run_python(code: str, env: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_an_empty_inherited_limit_does_not_abort_the_process(tmp_path):
    env = dict(os.environ, OPENCV_IO_MAX_IMAGE_PIXELS='', OPENCV_IO_MAX_IMAGE_WIDTH='wide')
    result = _run_python('''
        from robovision_ros.image_codec import decode_compressed_image
        import cv2, numpy as np
        print(decode_compressed_image(cv2.imencode('.png', np.zeros((4, 8, 3), np.uint8))[1], 'png').shape)
    ''', env, tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == '(4, 8, 3)', result.stderr
    assert "OPENCV_IO_MAX_IMAGE_PIXELS='' is not a whole number" in result.stderr
    assert "OPENCV_IO_MAX_IMAGE_WIDTH='wide' is not a whole number" in result.stderr


def test_opencv_loaded_before_the_limits_refuses_compressed_images(tmp_path):
    """No silent fallback to OpenCV's defaults (2^30 pixels): every compressed image is refused, saying why."""
    env = {name: value for name, value in os.environ.items() if not name.startswith('OPENCV_IO_MAX_IMAGE_')}
    result = _run_python('''
        import cv2, numpy as np
        from robovision_ros.image_codec import ImageDecodeError, decode_compressed_image, decode_raw_image
        try:
            decode_compressed_image(cv2.imencode('.png', np.zeros((4, 8, 3), np.uint8))[1], 'png')
        except ImageDecodeError as error:
            print(error)
        print(decode_raw_image(bytes(96), 'rgb8', 8, 4, 24).shape)  # raw frames need no OpenCV limits
    ''', env, tmp_path)
    assert result.returncode == 0, result.stderr
    refusal, raw = result.stdout.strip().splitlines()
    assert 'refused: OpenCV was loaded before robovision_ros.image_codec set its decoder limits' in refusal
    assert raw == '(4, 8, 3)'


# --- what the C decoders print --------------------------------------------------------------------------------

def test_decoder_messages_do_not_reach_stderr(tmp_path):
    """
    100 bad TIFFs, 100 corrupt JPEGs and 100 PNGs with a bad chunk print nothing on stderr (600 lines before).

    Their messages are in the errors (so the node logs them once per cause) or, for images that did decode, kept for
    `take_decoder_messages`; a line that no decoder wrote is passed on to stderr.
    """
    result = _run_python(f'''
        import json, os, struct, sys
        import robovision_ros.image_codec as codec
        import cv2, numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_hostile_images import tiff_with_duplicate_size, float64_tiff, jpeg_claiming

        png = cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8))[1].tobytes()
        bad_chunk = struct.pack('>I', 3) + b'tEXtk\\0v' + struct.pack('>I', 1)  # ancillary chunk, CRC wrong
        png = png[:33] + bad_chunk + png[33:]
        errors = set()
        for k in range(100):
            for data, fmt in ((tiff_with_duplicate_size()[:-4 - k % 7], 'tiff'), (float64_tiff(64, 8), 'tiff'),
                              (jpeg_claiming(64, 64 + k), 'jpeg'), (png, 'png')):
                try:
                    codec.decode_compressed_image(data, fmt)
                except codec.ImageDecodeError as error:
                    errors.add(str(error))
        warnings = codec.take_decoder_messages()
        with codec._decoder_output() as messages:
            os.write(2, b'libpng warning: pretend\\n')
            os.write(2, b'a line from another thread\\n')
        print(json.dumps({{'errors': sorted(errors), 'warnings': warnings, 'captured': messages}}))
    ''', dict(os.environ), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == ['a line from another thread'], result.stderr
    report = json.loads(result.stdout)
    assert 1 <= len(report['errors']) <= 20 and any('64-bit samples' in e for e in report['errors']), report
    assert len(report['warnings']) == 8, report  # kept for the caller, at most 8
    assert all('Corrupt JPEG data' in w or 'CRC error' in w for w in report['warnings']), report
    assert report['captured'] == ['libpng warning: pretend']
