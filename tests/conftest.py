"""Shared fixtures. Data under ``../shared`` is required in CI (missing data fails, never skips)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
EXAMPLES = ROOT / "examples"


def shared(*parts: str) -> Path:
    """A path under ``../shared/data``; fails the test in CI when it is missing, skips elsewhere."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        msg = f"shared test data missing: {path}"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def tflite_model(name: str) -> Path:
    return shared("models", f"face_detection_{name}.tflite")


def mediapipe_reference(dataset: str) -> dict:
    return json.loads(shared(dataset, "mediapipe_0.10.14.json").read_text())


def dataset_images(dataset: str) -> Path:
    return shared(dataset, "images") if dataset == "wider_val_dev" else shared(dataset)


def one_image_dataset(tmp_path: Path, example: str, box: list[int]) -> tuple[Path, Path]:
    """A folder holding one example photo and a JSONL label file with one face ``box`` (x1, y1, x2, y2) on it."""
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    name = Path(example).with_suffix(".png").name
    Image.open(EXAMPLES / example).convert("RGB").save(images / name)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"path": name, "faces": [{"box": box}]}) + "\n")
    return images, labels
