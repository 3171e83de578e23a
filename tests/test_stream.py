"""Background decoding: order kept, errors in place, memory bounded."""

import shutil

import numpy as np

from blazeface import FaceDetector, ImageLoadError
from blazeface.stream import prefetch_map

from .conftest import EXAMPLES


def test_prefetch_map_keeps_order_and_bounds_read_ahead():
    pulled = []
    done = []

    def items():
        for i in range(50):
            pulled.append(i)
            assert len(pulled) - len(done) <= 6  # never more than `prefetch` (+ the one being handed out)
            yield str(i)

    def work(s):
        if s == "7":
            raise ImageLoadError("7: broken")
        return int(s) * 2

    out = []
    for item, value in prefetch_map(work, items(), workers=3, prefetch=5):
        done.append(item)
        out.append((item, value))
    assert [i for i, _ in out] == [str(i) for i in range(50)]
    assert all(v == int(i) * 2 for i, v in out if i != "7")
    assert isinstance(dict(out)["7"], ImageLoadError)


def test_detector_stream_matches_batch_api(tmp_path):
    files = []
    for i in range(7):
        src = sorted(EXAMPLES.iterdir())[i % 4]
        dst = tmp_path / f"{i:02d}{src.suffix}"
        shutil.copy(src, dst)
        files.append(dst)
    (tmp_path / "03.png").write_bytes(b"broken")
    detector = FaceDetector("short_range", device="cpu", batch_size=3)
    streamed = list(detector.stream(files, workers=2, prefetch=4))
    assert [p for p, _ in streamed] == [str(f) for f in files]
    assert isinstance(streamed[3][1], ImageLoadError)
    for (path, res), f in zip(streamed, files):
        if f.name == "03.png":
            continue
        ref = detector(f)
        assert np.allclose(res.boxes, ref.boxes) and res.path == str(f)
