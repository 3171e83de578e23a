"""``blazeface.distributed``: the Ray Data pipeline on a local Ray instance with 2 CPUs.

2,000 images made from the fixtures with 20 corrupt files: every input once, identical to the single-process
``blazeface detect``; an actor killed mid-job; an interrupted job resumed; manifests, globs, filesystems,
blur and crops, the ``--engine ray`` command line.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from blazeface import FaceDetector
from blazeface.cli import main
from blazeface.align import aligned_crops
from blazeface.distributed import anonymize, detect_images, read_results
from blazeface.distributed.filesystem import fs_path, glob_to_regex, resolve
from blazeface.distributed.output import SCHEMA, digest, isin_sorted, list_parts, part_name
from blazeface.io import decode_image_bytes
from blazeface.io import ImageLoadError, iter_image_files, read_image

from .conftest import EXAMPLES

N_IMAGES, N_CORRUPT = 2000, 20


def make_images(folder, count: int, corrupt: int, seed: int = 0) -> list[str]:
    """``count`` images of 128–320 px made from the fixtures (crops, flips, JPEG and PNG) in sub-folders, and
    ``corrupt`` broken files mixed in (garbage, truncated JPEG, empty, random bytes). Returns the corrupt paths."""
    rng = np.random.default_rng(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted(EXAMPLES.iterdir())]
    for i in range(count):
        img = sources[i % len(sources)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.7, 1.0)), int(h * rng.uniform(0.7, 1.0))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x, y, x + cw, y + ch))
        side = int(rng.integers(128, 321))
        img = img.resize((side, max(1, round(side * ch / cw))), Image.BILINEAR)
        if rng.random() < 0.3:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        sub = folder / f"d{i % 7}"
        sub.mkdir(parents=True, exist_ok=True)
        img.save(sub / (f"img{i:05d}.png" if i % 5 == 0 else f"img{i:05d}.jpg"), quality=90)
    bad = []
    good_jpeg = (folder / "d1" / "img00001.jpg").read_bytes()
    for k in range(corrupt):
        p = folder / f"d{k % 7}" / f"bad{k:03d}{'.png' if k % 2 else '.jpg'}"
        kind = k % 4
        p.write_bytes(b"not an image" if kind == 0 else good_jpeg[: len(good_jpeg) // 3] if kind == 1 else b""
                      if kind == 2 else rng.bytes(2048))
        bad.append(str(p))
    return bad


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray") if not os.environ.get("CI") else __import__("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=256 * 2**20,
             logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ray_images")
    bad = make_images(folder, N_IMAGES, N_CORRUPT)
    return folder, bad


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    """The single-process ``blazeface detect`` of the whole folder: the reference for "identical results"."""
    folder, _ = dataset
    jsonl = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    assert main(["detect", str(folder), "--jsonl", str(jsonl), "--quiet"], stdout=io.StringIO()) == 0
    return {r["path"]: r for r in map(json.loads, jsonl.read_text().splitlines())}


def as_cli_record(row: dict) -> dict:
    """A Parquet row in the form of a ``blazeface detect`` JSON line (same rounding as ``Detections.to_dict``)."""
    faces = [{"score": round(float(np.float32(f["score"])), 5),
              "box": [round(float(np.float32(v)), 2) for v in f["box"]],
              "keypoints": [[round(float(np.float32(x)), 2), round(float(np.float32(y)), 2)] for x, y in f["keypoints"]]}
             for f in row["faces"]]
    return {"path": row["path"], "width": row["width"], "height": row["height"], "model": row["model"],
            "faces": faces, "error": row["error"]}


def raw_rows(out) -> pa.Table:
    return read_results(str(out), dedupe=False)


# --- pure helpers (no Ray) -------------------------------------------------------------------------
def test_decode_bytes_matches_read_image(tmp_path):
    for p in EXAMPLES.iterdir():
        np.testing.assert_array_equal(decode_image_bytes(p.read_bytes(), str(p)), read_image(p))
    for data in (b"", b"garbage", (EXAMPLES / "grace_hopper.jpg").read_bytes()[:3000]):
        f = tmp_path / "x.jpg"
        f.write_bytes(data)
        with pytest.raises(ImageLoadError) as a:
            read_image(f)
        with pytest.raises(ImageLoadError) as b:
            decode_image_bytes(data, str(f))
        assert str(a.value) == str(b.value)


def test_paths_globs_and_digests():
    rx = glob_to_regex("/data/**/*.jpg")
    assert rx.match("/data/a.jpg") and rx.match("/data/x/y/a.jpg") and not rx.match("/data/a.png")
    assert not glob_to_regex("/data/*.jpg").match("/data/x/a.jpg")
    assert fs_path("s3://bucket/a/b.jpg") == "bucket/a/b.jpg" and fs_path("file:///tmp/a.png") == "/tmp/a.png"
    fs, path, name = resolve("relative/dir")
    assert path == name == os.path.abspath("relative/dir")
    keys = np.unique(digest(["a", "b", "c"]))
    assert isin_sorted(digest(["b", "z", "a"]), keys).tolist() == [True, False, True]
    assert part_name(["x", "y"]) == part_name(["y", "x"]) != part_name(["x"])


def test_anonymize_and_crops():
    img = read_image(EXAMPLES / "astronaut.png")
    det = FaceDetector("short_range", device="cpu")(img)
    x1, y1, x2, y2 = det.boxes[0].astype(int)
    for mode in ("pixelate", "gaussian"):
        out = anonymize(img, det, mode)
        assert out.shape == img.shape
        face, orig = out[y1:y2, x1:x2].astype(int), img[y1:y2, x1:x2].astype(int)
        assert np.abs(face - orig).mean() > 5  # the face is changed
        np.testing.assert_array_equal(out[:, : max(0, x1 - 40)], img[:, : max(0, x1 - 40)])  # the rest is not
        detail = lambda a: np.abs(np.diff(a.astype(float), axis=1)).mean()  # noqa: E731
        assert detail(out[y1:y2, x1:x2]) < detail(img[y1:y2, x1:x2]) / 2  # the face's detail is gone
    pixelated = anonymize(img, det, "pixelate", blocks=6)[y1:y2, x1:x2].reshape(-1, 3)
    assert len(np.unique(pixelated, axis=0)) <= 7 * 7
    crops = aligned_crops(img, det, size=128)  # what --crops writes, with either engine
    assert len(crops) == 1 and crops.images[0].shape == (128, 128, 3)


# --- the Ray pipeline ------------------------------------------------------------------------------
def test_2000_images_identical_to_single_process(ray_local, dataset, reference, tmp_path):
    folder, bad = dataset
    out = tmp_path / "out"
    summary = detect_images(str(folder), str(out), actors=2, rows_per_file=100)
    assert summary.inputs == summary.processed == N_IMAGES + N_CORRUPT and summary.errors == N_CORRUPT
    rows = raw_rows(out)
    paths = rows.column("path").to_pylist()
    assert len(paths) == len(set(paths)) == N_IMAGES + N_CORRUPT  # every input exactly once
    assert set(paths) == {str(p) for p in iter_image_files([folder])} == set(reference)
    assert {r["path"] for r in rows.to_pylist() if r["error"]} == set(bad)
    for row in rows.to_pylist():
        assert as_cli_record(row) == reference[row["path"]], row["path"]
        assert row["error"] is not None or row["width"] > 0
    assert sum(len(r["faces"]) for r in reference.values()) == summary.faces > N_IMAGES // 2
    assert pq.read_schema(list_parts(*resolve(str(out))[:2])[0]).remove_metadata() == SCHEMA
    # a rerun finds everything done and changes nothing
    files = sorted(p.name for p in out.iterdir())
    again = detect_images(str(folder), str(out), actors=2, rows_per_file=100)
    assert (again.processed, again.skipped) == (0, N_IMAGES + N_CORRUPT)
    assert sorted(p.name for p in out.iterdir()) == files


def test_actor_killed_mid_job(ray_local, dataset, reference, tmp_path):
    """An actor dies (``os._exit``) right after writing a part file; Ray restarts it and retries the batch."""
    folder, _ = dataset
    marker = tmp_path / "kill-once"
    marker.write_text("")
    out = tmp_path / "out"
    inputs = [str(folder / "d2"), str(folder / "d3")]
    summary = detect_images(inputs, str(out), actors=2, rows_per_file=40, _fault_marker=str(marker))
    assert not marker.exists() and (tmp_path / "kill-once.fired").exists()  # the fault did fire
    expected = {str(p) for p in iter_image_files(inputs)}
    paths = raw_rows(out).column("path").to_pylist()
    assert len(paths) == len(set(paths)) and set(paths) == expected  # nothing lost, nothing duplicated
    assert summary.processed >= len(expected)  # the killed batch may be counted twice, never written twice
    assert all(as_cli_record(r) == reference[r["path"]] for r in raw_rows(out).to_pylist())


def test_interrupted_job_resumes(dataset, reference, tmp_path):
    """``blazeface detect --engine ray`` killed (SIGKILL, with its local Ray instance) part-way leaves whole part
    files only; the rerun does the rest, and every input ends up in the output exactly once."""
    folder, _ = dataset
    inputs = [str(folder / "d4"), str(folder / "d5")]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "blazeface.cli", "detect", "--engine", "ray", *inputs, "--output", str(out),
           "--actors", "2", "--rows-per-file", "20", "--quiet"]
    env = dict(os.environ, RAY_ADDRESS="")  # its own local instance, not the test's
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list(out.glob("part-*.parquet"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    # Its actors (own process groups) notice that their driver is gone and exit within seconds; a batch
    # in flight may still land meanwhile. Restart once the output is quiet.
    seen = -1
    while seen != len(list(out.glob("part-*.parquet"))):
        seen = len(list(out.glob("part-*.parquet")))
        time.sleep(2)
    partial = set(raw_rows(out).column("path").to_pylist())
    expected = {str(p) for p in iter_image_files(inputs)}
    assert 0 < len(partial) < len(expected)
    (out / "part-0123456789abcdef.parquet.tmp-dead").write_bytes(b"half a file")  # as a crash mid-write leaves
    summary = detect_images(inputs, str(out), actors=2, rows_per_file=20, num_cpus=2)
    assert summary.skipped == len(partial) and summary.processed == len(expected) - len(partial)
    rows = raw_rows(out).to_pylist()
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) and set(paths) == expected
    assert all(as_cli_record(r) == reference[r["path"]] for r in rows)


def test_manifests_globs_filesystems(ray_local, dataset, reference, tmp_path):
    """Parquet of paths (one missing) and of bytes, JSONL of paths, a glob and a file:// URI in one job; JSONL of
    base64 bytes under other column names through an fsspec filesystem in another."""
    folder, bad = dataset
    files = sorted(str(p) for p in iter_image_files([folder / "d5"])) + bad[:3]
    a, b, c, d = files[0:8] + [bad[0]], files[8:16] + [bad[1]], files[16:24] + [bad[2]], files[24:32]
    missing = str(tmp_path / "missing.jpg")
    pq.write_table(pa.table({"path": a + [missing]}), tmp_path / "paths.parquet", row_group_size=4)
    pq.write_table(pa.table({"path": b, "bytes": [open(f, "rb").read() for f in b]}), tmp_path / "bytes.parquet")
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"path": f}) + "\n" for f in c))
    (tmp_path / "b64.jsonl").write_text("".join(
        json.dumps({"key": f, "data": base64.b64encode(open(f, "rb").read()).decode()}) + "\n" for f in d))
    pattern = str(folder / "d6" / "img0*1.jpg")
    uri_file = sorted(str(p) for p in iter_image_files([folder / "d3"]))[0]
    import glob

    import fsspec

    jobs = [
        ([str(tmp_path / "paths.parquet"), str(tmp_path / "bytes.parquet"), str(tmp_path / "m.jsonl"), pattern,
          "file://" + uri_file], {}, set(a + b + c + glob.glob(pattern) + [missing, uri_file])),
        ([str(tmp_path / "b64.jsonl")], {"path_column": "key", "bytes_column": "data",
                                          "filesystem": fsspec.filesystem("file")}, set(d)),
    ]
    for k, (inputs, kwargs, expected) in enumerate(jobs):
        out = tmp_path / f"out{k}"
        detect_images(inputs, str(out), actors=2, rows_per_file=5, **kwargs)
        rows = raw_rows(out).to_pylist()
        got = [r["path"] for r in rows]
        assert len(got) == len(set(got)) and set(got) == expected
        for r in rows:
            if r["path"] == missing:
                assert r["error"] == f"{missing}: no such file"
            else:
                assert as_cli_record(r) == reference[r["path"]], r["path"]
    again = detect_images(jobs[0][0], str(tmp_path / "out0"), actors=2, rows_per_file=5)  # actors skip what is done
    assert (again.processed, again.skipped, again.files) == (0, len(jobs[0][2]), 0)


def test_blur_crops_and_command_line(ray_local, tmp_path):
    folder = tmp_path / "imgs"
    shutil.copytree(EXAMPLES, folder / "sub")
    (folder / "broken.jpg").write_text("nope")
    out, blur, crops = tmp_path / "out", tmp_path / "blur", tmp_path / "crops"
    stdout = io.StringIO()
    code = main(["detect", "--engine", "ray", str(folder), "--output", str(out), "--actors", "2",
                 "--blur", str(blur), "--crops", str(crops), "--crop-size", "96", "--quiet"], stdout=stdout)
    assert code == 0
    summary = json.loads(stdout.getvalue().splitlines()[-1])
    assert (summary["processed"], summary["errors"], summary["faces"]) == (5, 1, 4)
    rows = {os.path.basename(r["path"]): r for r in read_results(str(out)).to_pylist()}
    names = sorted(p.name for p in EXAMPLES.iterdir())
    assert sorted(p.name for p in (blur / "sub").iterdir()) == names  # every readable image, same names
    assert sorted(p.name for p in (crops / "sub").iterdir()) == [f"{n}.face0.jpg" for n in names]
    assert Image.open(crops / "sub" / "astronaut.png.face0.jpg").size == (96, 96)
    original, blurred = read_image(EXAMPLES / "astronaut.png"), read_image(blur / "sub" / "astronaut.png")
    x1, y1, x2, y2 = (int(v) for v in rows["astronaut.png"]["faces"][0]["box"])
    assert np.abs(original[y1:y2, x1:x2].astype(int) - blurred[y1:y2, x1:x2]).mean() > 5
    # usage errors
    assert main(["detect", "--engine", "ray", str(folder), "--quiet"], stdout=io.StringIO()) == 2  # no --output
    with pytest.raises(SystemExit):
        main(["detect", str(folder), "--output", str(out)])  # Ray options need --engine ray
    assert main(["detect", "--engine", "ray", str(folder), "--output", str(out), "--model", "back", "--quiet"],
                stdout=io.StringIO()) == 2  # another model into the same output is refused
