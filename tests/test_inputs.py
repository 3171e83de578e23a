"""Every kind of input, good and bad: a clear error naming the input, or a correct result."""

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from blazeface import FaceDetector, ImageLoadError
from blazeface.io import iter_image_files, read_image

from .conftest import EXAMPLES


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("short_range", device="cpu")


@pytest.fixture(scope="module")
def astronaut():
    return read_image(EXAMPLES / "astronaut.png")


def _same_faces(a, b, tol=0.5):
    assert len(a) == len(b) > 0
    assert np.abs(a.boxes - b.boxes).max() <= tol
    assert np.abs(a.scores - b.scores).max() <= 0.01


def test_missing_file(detector, tmp_path):
    with pytest.raises(ImageLoadError, match="missing.jpg: no such file"):
        detector(tmp_path / "missing.jpg")


def test_text_file_named_jpg(detector, tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("hello, not an image")
    with pytest.raises(ImageLoadError, match="notes.jpg: not a recognized image"):
        detector(p)


def test_truncated_jpeg(detector, tmp_path):
    data = (EXAMPLES / "grace_hopper.jpg").read_bytes()
    p = tmp_path / "truncated.jpg"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="truncated.jpg"):
        detector(p)


def test_zero_byte_file(detector, tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.png: empty file"):
        detector(p)


def test_one_pixel_image_gives_empty_result(detector, tmp_path):
    p = tmp_path / "one.png"
    Image.new("RGB", (1, 1), (128, 64, 32)).save(p)
    result = detector(p)
    assert len(result) == 0 and result.image_size == (1, 1)
    assert result.boxes.shape == (0, 4) and result.keypoints.shape == (0, 6, 2)


def test_16_bit_png_equals_8_bit(detector, astronaut, tmp_path):
    grey8 = np.asarray(Image.fromarray(astronaut).convert("L"))
    p = tmp_path / "grey16.png"
    Image.fromarray((grey8.astype(np.uint16) * 257)).save(p)  # exact 16-bit version of the 8-bit image
    assert Image.open(p).mode.startswith("I")
    assert np.array_equal(read_image(p)[:, :, 0], grey8)
    _same_faces(detector(p), detector(grey8), tol=0.0)


def test_rgba_png_equals_rgb(detector, astronaut, tmp_path):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 200, np.uint8)])
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p)
    _same_faces(detector(p), detector(astronaut), tol=0.0)
    _same_faces(detector(rgba), detector(astronaut), tol=0.0)


def test_grayscale_image(detector):
    grey = read_image(EXAMPLES / "camera.png")  # a 'L' mode file
    assert Image.open(EXAMPLES / "camera.png").mode == "L"
    assert np.array_equal(grey[:, :, 0], grey[:, :, 2])
    _same_faces(detector(EXAMPLES / "camera.png"), detector(grey[:, :, 0]), tol=0.0)


def _png_with_size(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def test_decompression_bomb_header(detector, tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_with_size(100_000, 100_000))
    with pytest.raises(ImageLoadError, match="bomb.png.*decompression bomb"):
        detector(p)


def test_directory_with_no_images(tmp_path):
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ImageLoadError, match="contains no images"):
        list(iter_image_files([tmp_path]))


def test_folder_listing_is_recursive_and_sorted(tmp_path):
    (tmp_path / "b").mkdir()
    for name in ["z.png", "a.jpg", "b/c.PNG", "b/skip.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in iter_image_files([tmp_path])] == ["a.jpg", "b/c.PNG", "z.png"]


def test_empty_list(detector):
    assert detector([]) == []


def test_bad_arrays_and_tensors(detector):
    with pytest.raises(ImageLoadError, match="numpy array of shape \\(5, 5, 2\\)"):
        detector(np.zeros((5, 5, 2), np.uint8))
    with pytest.raises(ImageLoadError, match="in \\[0, 1\\]"):
        detector(np.full((8, 8, 3), 3.0, np.float32))
    with pytest.raises(ImageLoadError, match="float tensors must hold finite values"):
        detector(torch.full((3, 8, 8), float("nan")))
    with pytest.raises(ImageLoadError, match="unsupported input type"):
        detector(12345)
