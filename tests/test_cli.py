"""``blazeface detect`` / ``convert`` / ``models``: one JSON line per input, errors recorded, runs go on."""

import io
import json
import shutil

import pytest
from PIL import Image

from blazeface.cli import main
from blazeface.registry import create_model

from .conftest import EXAMPLES, tflite_model


def _run(argv):
    out = io.StringIO()
    code = main(argv, stdout=out)
    return code, [json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{")]


def test_detect_folder_with_bad_inputs(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLES / "astronaut.png", folder / "sub" / "astronaut.png")
    shutil.copy(EXAMPLES / "pillow_hopper.png", folder / "hopper.png")
    (folder / "broken.jpg").write_text("not an image")
    (folder / "zero.png").write_bytes(b"")
    empty = tmp_path / "empty"
    empty.mkdir()
    jsonl = tmp_path / "new_dir" / "out.jsonl"  # parent folders are created
    annotated = tmp_path / "annotated"
    code, _ = _run(["detect", str(folder), str(tmp_path / "missing.png"), str(empty),
                    "--jsonl", str(jsonl), "--annotate", str(annotated), "--quiet"])
    assert code == 0
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    by_name = {r["path"].split("/")[-1]: r for r in lines}
    assert len(lines) == 6  # 4 files in the folder, the missing file, the empty folder
    assert set(by_name) == {"broken.jpg", "hopper.png", "zero.png", "astronaut.png", "missing.png", "empty"}
    good = by_name["astronaut.png"]
    assert good["error"] is None and (good["width"], good["height"]) == (512, 512) and good["model"] == "short_range"
    assert len(good["faces"]) == 1 and len(good["faces"][0]["keypoints"]) == 6 and len(good["faces"][0]["box"]) == 4
    for bad in ["broken.jpg", "zero.png", "missing.png", "empty"]:
        assert by_name[bad]["faces"] == [] and by_name[bad]["error"]
    assert "contains no images" in by_name["empty"]["error"]
    assert sorted(p.name for p in annotated.iterdir()) == ["astronaut.jpg", "hopper.jpg"]
    assert Image.open(annotated / "astronaut.jpg").size == (512, 512)


def test_detect_exit_status_when_everything_fails(tmp_path):
    code, lines = _run(["detect", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--quiet"])
    assert code == 1 and len(lines) == 2 and all(r["error"] for r in lines)


def test_detect_usage_errors():
    with pytest.raises(SystemExit) as exc:
        main(["detect", str(EXAMPLES), "--min-score", "1.5"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit):
        main(["detect", str(EXAMPLES), "--model", "nope"])


def test_detect_min_score_and_model(tmp_path):
    code, lines = _run(["detect", str(EXAMPLES / "grace_hopper.jpg"), "--model", "full_range_sparse",
                        "--min-score", "0.99", "--quiet"])
    assert code == 0 and lines[0]["model"] == "full_range_sparse" and lines[0]["faces"] == []


def test_convert_command(tmp_path):
    out = tmp_path / "front_2019.safetensors"
    code = main(["convert", str(tflite_model("front_2019")), "-o", str(out), "--check"], stdout=io.StringIO())
    assert code == 0
    create_model("front_2019", weights=out)
    bad = tmp_path / "bad.tflite"
    bad.write_text("nope")
    assert main(["convert", str(bad), "-o", str(tmp_path / "x.safetensors")], stdout=io.StringIO()) == 1


def test_models_command():
    out = io.StringIO()
    assert main(["models"], stdout=out) == 0
    assert "short_range" in out.getvalue() and "full_range_sparse" in out.getvalue()


def test_detect_works_without_any_extra():
    """The core install (torch, numpy, Pillow, safetensors, tqdm) runs `blazeface detect`: no extra is imported."""
    import subprocess
    import sys

    blocked = ["pyarrow", "ray", "cv2", "av", "onnx", "onnxruntime", "onnxscript", "matplotlib", "scipy", "tflite",
               "ai_edge_litert", "litert_torch", "fsspec"]
    code = ("import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in blocked) +
            "from blazeface.cli import main\n"
            f"sys.exit(main(['detect', {str(EXAMPLES / 'astronaut.png')!r}, '--quiet']))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    record = json.loads(res.stdout.splitlines()[-1])
    assert record["error"] is None and len(record["faces"]) == 1
