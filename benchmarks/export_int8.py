"""int8 against float: speed in the same runtime, weight bytes, and accuracy on real photos (issue 6).

One command (from the project root, with the ``onnx`` and ``tflite-export`` extras installed):

    python benchmarks/export_int8.py                      # short range; add --models full_range_sparse
    python benchmarks/export_int8.py --write-results      # also writes the section of benchmarks/RESULTS.md

What it does, per model:
1. exports float and int8 files (ONNX QDQ for ONNX Runtime; TFLite through litert-torch, when installed;
   TorchScript: float channels-last and frozen, int8 PyTorch's FX int8) into a temporary folder, int8 calibrated
   on the bundled ``examples/`` (augmented);
2. speed: float and int8 in the same runtime, 1 and 2 threads, batch 1 and 64, runs interleaved,
   the median of ``--repeats`` timings each; the ratio float/int8 is reported (2 shared cores: noisy);
3. weight bytes of the int8 ONNX file (all initializers: int8 weights, int32 biases, scales, zero points)
   and of the int8 TFLite file (all constant buffers);
4. accuracy through ``FaceDetector(file)``: the same faces as float (matched IoU >= 0.9) on ``examples/``,
   the seed images and ``../shared/data/wider_val_dev``; WIDER AP easy/medium/hard at min score 0.1, with the
   minimal WIDER evaluation below (IoU >= 0.5; faces outside the setting or flagged invalid are ignored).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT / "src"))

from machine_info import machine  # noqa: E402

from blazeface import FaceDetector, get_config  # noqa: E402
from blazeface.export import export_model  # noqa: E402
from blazeface.ops import box_iou  # noqa: E402


# --------------------------------------------------------------------------------------------------
# minimal WIDER FACE evaluation (kept here so the benchmark runs without blazeface.eval)
# --------------------------------------------------------------------------------------------------
def wider_ap(annotations: dict, detections: dict[str, tuple[np.ndarray, np.ndarray]], setting: str) -> float:
    """AP for ``setting`` ('easy', 'medium', 'hard'): greedy matching by score at IoU >= 0.5; detections
    matching an ignored face (outside the setting or invalid) count neither way; VOC all-point AP."""
    scores, labels = [], []
    positives = 0
    for name, rec in annotations.items():
        faces = rec["faces"]
        gt = np.array([[f["xywh"][0], f["xywh"][1], f["xywh"][0] + f["xywh"][2], f["xywh"][1] + f["xywh"][3]]
                       for f in faces], np.float32).reshape(-1, 4)
        care = np.array([f[f"in_{setting}"] and not f["attrs"].get("invalid", 0) for f in faces], bool)
        positives += int(care.sum())
        boxes, sc = detections.get(name, (np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
        order = np.argsort(-sc, kind="stable")
        taken = np.zeros(len(gt), bool)
        ious = box_iou(torch.from_numpy(boxes[order]), torch.from_numpy(gt)).numpy() if len(gt) and len(boxes) else None
        for k, i in enumerate(order):
            if ious is None:
                scores.append(sc[i]); labels.append(0)
                continue
            cand = np.where(~taken, ious[k], -1.0)
            j = int(np.argmax(cand))
            if cand[j] >= 0.5:
                taken[j] = True
                if care[j]:
                    scores.append(sc[i]); labels.append(1)
                continue  # an ignored face: neither
            scores.append(sc[i]); labels.append(0)
    if positives == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(np.asarray(labels)[order])
    fp = np.cumsum(1 - np.asarray(labels)[order])
    recall = tp / positives
    precision = tp / np.maximum(tp + fp, 1e-9)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = max(mpre[i], mpre[i + 1])
    idx = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]))


def match(ref: list, other: list, threshold: float, iou_min: float = 0.9, near: float = 0.1) -> dict:
    """Same faces? A float face and an int8 face are the same face at IoU >= 0.5 (greedy, per image); a
    face of one without a counterpart in the other is a flip, ``near`` when its score is below
    ``threshold + near``. ``matched``: pairs at IoU >= ``iou_min``; ``min_iou``: the worst pair."""
    faces = pairs = same = flips = near_flips = 0
    worst = 1.0
    differing = 0
    for a, b in zip(ref, other):
        faces += len(a)
        iou = (box_iou(torch.from_numpy(a.xyxy), torch.from_numpy(b.xyxy)).numpy()
               if len(a) and len(b) else np.zeros((len(a), len(b))))
        used_a, used_b = np.zeros(len(a), bool), np.zeros(len(b), bool)
        bad = False
        for k in np.argsort(-iou, axis=None):
            i, j = divmod(int(k), len(b))
            if iou[i, j] < 0.5:
                break
            if used_a[i] or used_b[j]:
                continue
            used_a[i] = used_b[j] = True
            pairs += 1
            same += int(iou[i, j] >= iou_min)
            bad |= bool(iou[i, j] < iou_min)
            worst = min(worst, float(iou[i, j]))
        lone = np.concatenate([a.scores[~used_a], b.scores[~used_b]])
        flips += len(lone)
        near_flips += int((lone < threshold + near).sum())
        differing += int(bad or len(lone) > 0)
    return {"faces": faces, "int8_faces": int(sum(len(b) for b in other)), "pairs": pairs, "matched": same,
            "flips": flips, "near_threshold_flips": near_flips, "images_differing": differing,
            "min_iou": round(worst, 4)}


def flip_scores(ref: list, ref_low: list, other: list, other_low: list) -> dict[str, list]:
    """The faces of one detector (at its threshold) with no IoU >= 0.5 face in the other: per face
    ``[image index, its score, the other's score of its best IoU >= 0.5 box at min score 0.1 or None]``."""
    def lone(a_hi: list, b_low: list, b_hi: list) -> list:
        out = []
        for k, (a, bl, bh) in enumerate(zip(a_hi, b_low, b_hi)):
            for i in range(len(a)):
                box = torch.from_numpy(a.xyxy[i:i + 1])
                if len(bh) and float(box_iou(box, torch.from_numpy(bh.xyxy)).max()) >= 0.5:
                    continue
                iou = box_iou(box, torch.from_numpy(bl.xyxy))[0].numpy() if len(bl) else np.zeros(0)
                j = int(iou.argmax()) if len(iou) else -1
                out.append([k, round(float(a.scores[i]), 3), round(float(bl.scores[j]), 3) if j >= 0 and iou[j] >= 0.5 else None])
        return out

    return {"float_only": lone(ref, other_low, other), "int8_only": lone(other, ref_low, ref)}


# --------------------------------------------------------------------------------------------------
def interleaved_ms(runs: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of each callable in ``runs``, called in turn (interleaved) ``repeats`` times."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(2):
        for run in runs.values():
            run()
    for _ in range(repeats):
        for k, run in runs.items():
            t = time.perf_counter(); run(); times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _speed_row(float_ms: float, int8_ms: float) -> dict:
    return {"float_ms": round(float_ms, 3), "int8_ms": round(int8_ms, 3), "speedup": round(float_ms / int8_ms, 3)}


def ort_session(path: Path, threads: int, profile_prefix: str | None = None, optimized: Path | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    # no spinning: several sessions run interleaved here, and one's idle threads spinning would slow the next
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    if optimized:
        so.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _node_kind(node) -> str:
    """Op type, with convolutions split into depthwise, 1x1 and kxk (QLinearConv and Conv alike)."""
    import onnx

    if node.op_type not in ("Conv", "FusedConv", "QLinearConv"):
        return node.op_type
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    if a.get("group", 1) > 1:
        return "conv depthwise"
    k = list(a.get("kernel_shape", [1, 1]))
    return f"conv {k[0]}x{k[1]}"


def ort_profile(path: Path, size: int, runs: int = 100, batch: int = 1) -> dict[str, float]:
    """ONNX Runtime's own per-node profile, 1 thread: microseconds per run by kind of node (of the optimized graph)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        sess = ort_session(path, 1, str(Path(tmp) / "profile"), Path(tmp) / "opt.onnx")
        kinds = {n.name: _node_kind(n) for n in onnx.load(str(Path(tmp) / "opt.onnx")).graph.node}
        x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, size, size)).astype(np.float32)
        for _ in range(runs):
            sess.run(None, {"input": x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    by_op: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            kind = kinds.get(e["name"][:-len("_kernel_time")], e["args"]["op_name"])
            by_op[kind] = by_op.get(kind, 0.0) + e["dur"] / runs
    return {k: round(v, 1) for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])}


def onnx_weight_bytes(path: Path) -> int:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    return int(sum(numpy_helper.to_array(i).nbytes for i in m.graph.initializer))


def tflite_weight_bytes(path: Path) -> int:
    from blazeface.convert import TFLiteGraph

    g = TFLiteGraph.from_file(path)
    return int(sum(len(t.data) for t in g.tensors if t.data is not None))


def images_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


class WiderValDevCheck:
    """An exported file against its float model on wider_val_dev: the same faces (:func:`match`) and AP easy /
    medium at min score 0.1 (:func:`wider_ap`). ``float_ap``: the float model's own AP."""

    def __init__(self, model: str) -> None:
        self.images = images_of(SHARED / "wider_val_dev" / "images")
        self.annotations = json.loads((SHARED / "wider_val_dev" / "annotations.json").read_text())
        self.reference = FaceDetector(model, device="cpu")
        self.float_results = self.reference(self.images)
        self.float_ap = self.ap(FaceDetector(model, device="cpu", min_score=0.1)(self.images))
        self.commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip()

    def ap(self, results: list) -> dict[str, float]:
        dets = {p.name: (d.xyxy, d.scores) for p, d in zip(self.images, results)}
        return {st: round(wider_ap(self.annotations, dets, st), 4) for st in ("easy", "medium")}

    def compare(self, path: Path) -> dict:
        """``match`` counts and ``AP`` of the exported file at ``path``."""
        return {**match(self.float_results, FaceDetector(str(path), device="cpu")(self.images),
                        self.reference.min_score),
                "AP": self.ap(FaceDetector(str(path), device="cpu", min_score=0.1)(self.images))}

    def sweep(self, fmt: str, key: str, values: list, export_options: Callable[[Any], dict],
              speed_key: str, speed: Callable[[Path, Path, int], dict], json_path: str | None = None,
              extra: dict | None = None) -> list[dict]:
        """One int8 ``fmt`` export per value (``export_model(..., int8=True, **export_options(value))``), each
        compared with float (:meth:`compare`) and timed against the float export (``speed(float, int8, size)``
        under ``speed_key``). The first row is float's AP; every row is printed as one JSON line as it comes,
        and all of them written to ``json_path``. ``extra``: constant fields of every int8 row."""
        model = self.reference.config.name
        rows = [{"model": model, "commit": self.commit, key: "float", "AP": self.float_ap}]
        print(json.dumps(rows[0]), flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            float_path = export_model(model, fmt, Path(tmp) / f"float.{fmt}")
            for i, value in enumerate(values):
                t0 = time.perf_counter()
                path = export_model(model, fmt, Path(tmp) / f"int8_{i}.{fmt}", int8=True, **export_options(value))
                row = {"model": model, "commit": self.commit, key: value, **(extra or {}),
                       "export_seconds": round(time.perf_counter() - t0), **self.compare(path),
                       speed_key: speed(float_path, path, self.reference.config.input_size)}
                print(json.dumps(row), flush=True)
                rows.append(row)
        if json_path:
            Path(json_path).write_text(json.dumps(rows, indent=1))
        return rows


def raw_errors(q_reg: np.ndarray, q_log: np.ndarray, f_reg: np.ndarray, f_log: np.ndarray) -> dict:
    """int8 - float of the raw network's outputs: logits at anchors near faces (float logit > -2) and the
    regressors' mean absolute error in input pixels, weighted by the float score."""
    d = (q_log - f_log)[f_log > -2]
    w = 1 / (1 + np.exp(-f_log[..., 0].clip(-50, 50)))
    reg = float((np.abs(q_reg - f_reg).mean(-1) * w).sum() / w.sum())
    return {"anchors": int(d.size), "logit_error_mean": round(float(d.mean()), 4), "logit_error_std": round(float(d.std()), 4),
            "logit_error_abs": round(float(np.abs(d).mean()), 4), "regressor_error_px": round(reg, 4)}


def raw_logit_errors(path: Path, images: torch.Tensor, f_reg: np.ndarray, f_log: np.ndarray) -> dict:
    """:func:`raw_errors` of the ONNX file ``path`` on ``images``, against the float outputs ``f_reg``, ``f_log``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return raw_errors(*sess.run(None, {"input": images.numpy()}), f_reg, f_log)


def uniform_noise(levels: int) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
    """Adds integer noise drawn uniformly from ``[-levels, levels]`` to every channel of every pixel."""
    def apply(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        noisy = image.astype(np.int16) + rng.integers(-levels, levels + 1, image.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    return apply


def noise_floor(det: FaceDetector, files: list[Path], ref: list, seeds: int = 3) -> list[dict]:
    """What float itself changes under ±1 grey level of noise: ``match`` of the clean float faces against float's
    faces on the noisy images, per noise seed (how many near-threshold flips are no worse than invisible noise;
    more levels and JPEG re-saves: ``float_perturbation_floor.py``)."""
    from blazeface.io import read_image

    images, noise = [read_image(p) for p in files], uniform_noise(1)
    out = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        out.append(match(ref, det([noise(im, rng) for im in images]), det.min_score))
    return out


def bench_model(name: str, tmp: Path, repeats: int, with_tflite: bool, qat_steps: int = 0) -> dict:
    cfg = get_config(name)
    s = cfg.input_size
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    out: dict = {"model": name, "commit": commit, "date": datetime.date.today().isoformat(), "machine": machine(),
                 "threshold": cfg.min_score}
    files = {
        "onnx_float": export_model(name, "onnx", tmp / f"{name}.onnx"),
        "onnx_int8": export_model(name, "onnx", tmp / f"{name}_int8.onnx", int8=True, qat_steps=0),  # post-training
    }
    if qat_steps:  # the same graph after quantization-aware fine-tuning (blazeface.export.qat): same speed
        t0 = time.perf_counter()
        files["onnx_int8_qat"] = export_model(name, "onnx", tmp / f"{name}_int8_qat.onnx", int8=True, qat_steps=qat_steps)
        out["qat"] = {"steps": qat_steps, "seconds": round(time.perf_counter() - t0, 1)}
    # PyTorch: the channels-last frozen float file against the FX int8 one (what `--format torchscript` writes)
    files["torchscript_float"] = export_model(name, "torchscript", tmp / f"{name}.pt")
    files["torchscript_int8"] = export_model(name, "torchscript", tmp / f"{name}_int8.pt", int8=True)
    if with_tflite:
        files["tflite_float"] = export_model(name, "tflite", tmp / f"{name}.tflite")
        files["tflite_int8"] = export_model(name, "tflite", tmp / f"{name}_int8.tflite", int8=True)
    out["file_bytes"] = {k: v.stat().st_size for k, v in files.items()}
    out["int8_weight_bytes"] = {"onnx": onnx_weight_bytes(files["onnx_int8"]),
                                "onnx_float": onnx_weight_bytes(files["onnx_float"])}
    if with_tflite:
        out["int8_weight_bytes"]["tflite"] = tflite_weight_bytes(files["tflite_int8"])

    # ---- speed: same runtime, 1 and 2 threads, batch 1 and 64, interleaved ------------------------
    rng = np.random.default_rng(0)
    speed = {}
    # also timed: the float graph FaceDetector itself runs in onnxruntime (channels aligned to ORT's blocks)
    from blazeface import create_model
    from blazeface.inference import load_backend
    from blazeface.inference.backends import export_onnx
    from blazeface.inference.nchwc import align_channels, nchwc_block_size

    aligned = export_onnx(align_channels(create_model(name).eval(), nchwc_block_size()), tmp / f"{name}_aligned.onnx")
    for threads in (1, 2):
        fs, qs = ort_session(files["onnx_float"], threads), ort_session(files["onnx_int8"], threads)
        al = ort_session(aligned, threads)
        for bs in (1, 64):
            x = rng.uniform(-1, 1, (bs, 3, s, s)).astype(np.float32)
            ms = interleaved_ms({"f": lambda: fs.run(None, {"input": x}), "q": lambda: qs.run(None, {"input": x}),
                                 "a": lambda: al.run(None, {"input": x})},
                                repeats if bs == 1 else max(10, repeats // 3))
            speed[f"onnxruntime_t{threads}_b{bs}"] = {**_speed_row(ms["f"], ms["q"]),
                                                      "aligned_float_ms": round(ms["a"], 3)}
    if with_tflite:
        for threads in (1, 2):
            fb, qb = load_backend(files["tflite_float"], threads), load_backend(files["tflite_int8"], threads)
            for bs in (1, 64):  # batch-1 graphs (XNNPACK cannot resize them): a batch is bs invocations
                x = rng.uniform(-1, 1, (bs, 3, s, s)).astype(np.float32)
                ms = interleaved_ms({"f": lambda: fb.run(x), "q": lambda: qb.run(x)},
                                    repeats if bs == 1 else max(10, repeats // 3))
                speed[f"litert_t{threads}_b{bs}"] = _speed_row(ms["f"], ms["q"])
    out["onnxruntime_profile_us"] = {"float": ort_profile(files["onnx_float"], s), "int8": ort_profile(files["onnx_int8"], s)}
    fb, qb = load_backend(files["torchscript_float"]), load_backend(files["torchscript_int8"])
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for bs in (1, 64):
            x = rng.uniform(-1, 1, (bs, 3, s, s)).astype(np.float32)
            ms = interleaved_ms({"f": lambda: fb.run(x), "q": lambda: qb.run(x)},
                                repeats if bs == 1 else max(10, repeats // 3))
            speed[f"torchscript_t{threads}_b{bs}"] = _speed_row(ms["f"], ms["q"])
    torch.set_num_threads(1)
    out["speed"] = speed

    # ---- accuracy ----------------------------------------------------------------------------------
    sets = {"examples": images_of(ROOT / "examples"), "seed_images": images_of(SHARED / "seed_images"),
            "wider_val_dev": images_of(SHARED / "wider_val_dev" / "images")}
    ann = json.loads((SHARED / "wider_val_dev" / "annotations.json").read_text())
    acc: dict = {}
    ref_det = FaceDetector(name, device="cpu")
    ref_low = FaceDetector(name, device="cpu", min_score=0.1)
    ref = {k: ref_det(v) for k, v in sets.items()}
    ref_ap_det = ref_low(sets["wider_val_dev"])
    acc["float_pytorch_AP"] = {st: round(wider_ap(ann, {p.name: (d.xyxy, d.scores) for p, d in
                                                       zip(sets["wider_val_dev"], ref_ap_det)}, st), 4)
                               for st in ("easy", "medium", "hard")}
    for key, path in files.items():
        det = FaceDetector(str(path), device="cpu")
        got = {k: det(v) for k, v in sets.items()}
        res = {k: match(ref[k], got[k], ref_det.min_score) for k in sets}
        low = FaceDetector(str(path), device="cpu", min_score=0.1)(sets["wider_val_dev"])
        res["wider_val_dev_flips"] = flip_scores(ref["wider_val_dev"], ref_ap_det, got["wider_val_dev"], low)
        res["AP"] = {st: round(wider_ap(ann, {p.name: (d.xyxy, d.scores) for p, d in
                                             zip(sets["wider_val_dev"], low)}, st), 4)
                     for st in ("easy", "medium", "hard")}
        acc[key] = res
    from blazeface.export.quantize import calibration_images

    wider_inputs = calibration_images(SHARED / "wider_val_dev" / "images", s, augment=False)
    with torch.inference_mode():
        f_reg, f_log = [t.numpy() for t in create_model(name).eval()(wider_inputs)]
    acc["wider_val_dev_raw_errors"] = {k: raw_logit_errors(p, wider_inputs, f_reg, f_log) for k, p in files.items()
                                       if k.startswith("onnx_int8")}
    acc["float_noise_floor"] = noise_floor(ref_det, sets["wider_val_dev"], ref["wider_val_dev"])
    out["accuracy"] = acc
    return out


NOTES = """\
Notes (float and int8 run interleaved in one process, so the ratios are robust to the machine's drifting speed;
2-thread ratios swing most):

- **The tables above: one run on the Zen 4 EPYC (family 25 model 17, AVX-512 VNNI, no AMX), commit `f7757ce`,
  2026-12-07** (`--models short_range full_range full_range_sparse back --qat-steps 0`: ONNX and TFLite
  post-training, TorchScript int8 as `blazeface export` writes it, so short range with its 100 QAT steps;
  `benchmarks/results/export_int8_epyc_zen4.json`). A run of the same day on `aa373f2` (the same exports; its speed
  disturbed by tests run beside it) gave the same faces and AP in every cell. The most faces int8 keeps on
  wider_val_dev, per model: short range TorchScript 54 of 57 (float under +-1 grey level of noise: 55-56), full
  range ONNX 129 of 140 (134-138), full range sparse TFLite 141 of 161 (153-156), back TFLite 211 of 281
  (270-275); AP easy / medium within 0.01 of float in every cell but full range sparse TorchScript (AP easy
  **+0.0105**, above float). Every int8 file matches every example face at IoU >= 0.9 (min 0.94) and finds every
  seed-image face but short range TFLite (one near-threshold flip); at IoU >= 0.9 short range ONNX and TorchScript
  match 5 of 5 seed faces, back 8 of 8 in all three formats, the full range models 6-7 of 8 (min IoU 0.81-0.89).
  Speed for one image on 1 thread (this run and the `aa373f2` one): TorchScript 1.44-1.50x (short range),
  1.64-1.69x, 1.56-1.62x, 1.44-1.50x; onnxruntime 1.52-1.54x, 1.10-1.16x, 0.60x, 0.82x; LiteRT 1.39-1.40x,
  1.34-1.42x, 0.96x, 1.07-1.17x; at batch 64 (1 and 2 threads) TorchScript 1.81-2.80x, onnxruntime 1.84-2.13x for short and full
  range. The 2-thread one-image TorchScript ratios here (0.90-1.15x) come from the order of the runs: they follow
  batch-64 runs in the same process. A one-off script reproduced it (full range int8, 2 threads, one image: 3.1-3.5
  ms before a batch-64 run, 5.8-8.9 ms after; float 5.6 -> 6.4-10.8 ms; with glibc's default malloc too), while
  `int8_speed.py`, which times batches of 16, gives 1.47-1.93x for the same files: its rounds are the reference
  for 2 threads. Since `b1924c3` full range sparse's TorchScript int8 keeps `fpn.1.blocks.1` float too: 164 found /
  124 matched, AP +0.0032 / +0.0077, 1.54x for one image (*PyTorch int8 with quantization-aware fine-tuning* below).
- **The previous run: an AMD EPYC with AVX-512 VNNI and AVX-VNNI (no AMX), commit `d740e83`, 2026-12-04**
  (`--qat-steps 0`, `benchmarks/results/export_int8_epyc_vnni.json`). int8 / float, 1 thread, one image / batch
  64: short range onnxruntime 1.36x / 1.97x, LiteRT 1.44x / 1.44x, PyTorch FX 1.66x / 4.54x (its rounds in *int8
  speed over rounds*: LiteRT 1.45-1.56x, onnxruntime 1.28-1.40x for one image); full range onnxruntime 1.12x /
  1.80x, LiteRT 1.46x; full range sparse onnxruntime 0.50x / 0.67x, LiteRT 0.92x; back onnxruntime 0.69x / 0.95x,
  LiteRT 1.37x, FX 2.0x. On wider_val_dev (float faces / int8 found / matched at IoU >= 0.9 / flips; AP easy /
  medium minus float's): short range ONNX 57 / 53 / 48 / 4, AP equal to 4 decimals, TFLite 57 / 56 / 51 / 5,
  -0.0046 / -0.0020 (float under +-1 grey level of noise: 55-56 matched); full range ONNX 140 / 144 / 129 / 10,
  -0.0062 / -0.0046, TFLite 140 / 140 / 120 / 12, +0.0003 / +0.0018; full range sparse ONNX 161 / 150 / 121 / 27,
  **+0.0177** / +0.0083 (the same files gave +0.0069 / +0.0024 on the Xeon: the CPUs' kernels round differently,
  and at min score 0.1 low-score faces move AP; outside the +-0.01 band, above float), TFLite 161 / 161 / 141 / 16,
  +0.0059 / +0.0051; back ONNX 281 / 263 / 205 / 24, +0.0048 / +0.0062, TFLite 281 / 271 / 211 / 36, +0.0067 /
  +0.0044. On the 4 example photos every int8 file finds float's faces at IoU >= 0.9 (min 0.93); on the seed
  images every int8 file finds every face but short range TFLite (4 of 5: a near-threshold flip), and matches at
  IoU >= 0.9 all of them for short range ONNX and back, 7 of 8 (ONNX) and 6 of 8 (TFLite) for both full range
  models. Longer ONNX float tails for full range sparse on the EPYC (`benchmarks/results/int8_float_tail_full_range_sparse_epyc_vnni.json`;
  found / matched / flips, AP easy / medium, int8 convolutions of 91, speed for one image): 12 (default) 150 / 121 /
  27, 0.4075 / 0.2039, 68, 0.64x; 16: 152 / 125 / 27, 0.3869 / 0.1947, 58, 0.52x; 20: 147 / 120 / 24; 24: 158 /
  141 / 9, 27, 0.36x; 30: 156 / 150 / 7, 0.3901 / 0.1964, 7, 0.33x. More faces match only as the graph stops being
  int8 (at 30 it is float with int8-stored weights, at a third of float's speed), so 12 stays. 300 QAT steps on
  top of tail 12 (2.5 min): 143 / 122 / 22, AP 0.4159 / 0.2064: no better.
  On 2026-12-06 on the Zen 4 EPYC (family 25 model 17, `27c4d5d`,
  `benchmarks/results/int8_float_tail_full_range_sparse_epyc_zen4.json`) tails 12 and 16 gave these same faces and
  AP, and **16 became the default** (`1ab255e`): AP easy / medium -0.0029 / -0.0009, within the 0.01 band where 12
  is 0.018 above it, and 4 more faces matched (125 against 121), at 0.63x float speed for one image instead of
  0.75x; both are slower than float.
- **Speed on an Intel Xeon with AVX-512 VNNI (one run on commit `0d7ae15`, `benchmarks/results/export_int8_vnni.json`).** int8 / float in
  the same runtime: onnxruntime **1.90x at batch 64 on 1 thread, 1.75x on 2**, 1.19x / 1.32x for one image;
  PyTorch FX **1.70-1.76x at batch 8, 2.28-3.07x at batch 64**, 1.03-1.27x for one image; LiteRT int8 is no
  faster than float on this CPU (0.90-1.04x: XNNPACK's AVX-512 float kernels are fast here). Against the
  channel-aligned float graph `FaceDetector` runs, onnxruntime int8 is 1.05x at batch 64 and 0.74x for one
  image. A space-to-depth stem (the 5x5 stride-2 convolution on 3 channels rewritten as a 3x3 one on 12, the
  same function to 5e-5) was tried on this machine to speed up the int8 stem (ORT's profile: 400 us int8
  against 275 us float, the largest node): slower in both, 1 thread batch 1, aligned graphs: float 1.75 -> 2.24
  ms, int8 2.31 -> 2.47 ms. Not taken.
- **Speed on an AMD EPYC with AVX-512 + VNNI (commit `eca0519`).** int8 / float in the same runtime, 1 and 2 threads,
  ranges over that run and two others of the same export on the same day (the second on the same tree, the third `int8_ort_variants.py`) (the machine's speed drifts by up to
  2x between runs; within a run float and int8 alternate): onnxruntime **1.45-2.02x at batch 64 on 1 thread,
  1.79-2.08x on 2**, 1.27-1.41x at batch 1 on 1 thread and 1.42-1.74x on 2; PyTorch (FX int8, x86 kernels)
  **1.8-2.0x at batch 8 and 3.3-4.5x at batch 64**, 1.1-1.5x at batch 1; LiteRT (XNNPACK QS8) 1.28-1.50x. So
  the 1.5x target is met in onnxruntime and PyTorch for batches and in onnxruntime for one image on 2 threads
  in 2 of 3 runs, not for one image on 1 thread, and not in LiteRT (best 1.50x). Rounds on an AMD EPYC on
  2026-12-04 with the current exports (*int8 speed over rounds* below, `benchmarks/int8_speed.py`): one image on
  1 thread LiteRT 1.45-1.56x, PyTorch FX 1.51x, onnxruntime 1.28-1.40x; batch 16 onnxruntime 1.62-1.64x.
  What made onnxruntime's int8 fast: its symmetric u8 x s8 convolution kernels (`MlasConvSym*`, VNNI dot
  products) take a depthwise convolution only when its channel count is a multiple of 16 (BlazeFace's 24, 28,
  36, 42, 56, 72 and 88 are not: those ran in MLAS's generic uint8 depthwise kernel at 2.7x the float time),
  and a convolution only when its input channels come in 4s (the RGB stem does not). The int8 export now
  quantizes the channel-aligned graph (`blazeface.inference.nchwc`: the same function with every channel count
  zero-padded to a multiple of 16, the widening residuals split into two convolutions and a concatenation, so
  no channel `Pad`; `align_channels(..., input_channels=4)` appends a zero 4th input channel for the stem) and
  gives each concatenation's inputs its output's scale (`share_concat_scales`: one rounding, as in the network
  as trained). In `int8_ort_variants.py` (1 thread, batch 1 / 64): the previous export (`u8s8_qdq_rr`) 0.98x /
  1.61x, the aligned graph (`u8s8_qdq_rr_a16`) 1.29x / 2.02x, plus the 4-channel stem (`_rgb0`, the default)
  1.41x / 2.02x; per-node profile of the aligned graph: depthwise 268 us against 431 us, no channel pads
  (125 us before). Duplicate initializers (the quantizer's all-zero zero points and biases) are stored once,
  so the weights stay at 129 KB despite the padded channels.
  Absolute speed beside the ratio: the column *aligned float ms* is the float graph `FaceDetector` itself runs
  in onnxruntime (the same channel alignment, in float, for ORT's blocked NCHWc kernels). Against it int8 is
  1.04-1.25x faster at batch 64 and 0.73-1.06x at batch 1: for one image on this CPU the fastest short-range
  network is about equally that float graph. PyTorch's eager float is a slow baseline (4-5.6 ms per image at
  batch 1 against onnxruntime's 0.8-1.3 in the same runs).
  Leaving the depthwise convolutions in float instead (`quantize_onnx(..., float_depthwise=True)`, variant
  `u8s8_qdq_rr_fdw`) was measured no faster and less accurate (46 of 57 wider_val_dev faces matched).
  The ONNX int8 weights are symmetric int8 in 7 bits (`weight_type="int8"`, `reduce_range`, portable to AVX2
  CPUs without VNNI, where 8-bit u8 x s8 sums saturate): 1.0-1.14x / 1.34-1.53x at batch 1 / 64 in the
  unaligned graph against 0.84-0.97x / 0.91-1.24x for the asymmetric uint8 weights of the export up to 2cd7d7b.
  2-thread batch-1 ratios swing the most from run to run.
- **Speed on a CPU without VNNI** (the earlier machine: AMD EPYC, AVX2 only; commits `a3b1b34`, `b0155bd`): the
  1.5x target was out of reach in every runtime: LiteRT 1.00-1.05x, onnxruntime 0.68-0.74x at batch 1 and
  0.90-1.07x at batch 64, PyTorch FX 0.34x. There, u8 x s8 goes through vpmaddubsw (pairs summed in int16, which
  saturates with 8-bit weights: the 8-bit u8s8 variant found 14 of 57 faces at IoU >= 0.9, hence 7-bit weights)
  + vpmaddwd + vpaddd, about 2x the FMA peak at best for long reductions, and BlazeFace's layers are short
  reductions (K = 24-96) and depthwise convolutions, where int8 kernels widen to 16/32 bits and requantize every
  output. VNNI (vpdpbusd: u8 x s8 products summed into int32 in one instruction, no saturation) is what makes
  int8 pay off.
- **TFLite from the channel-aligned graph** (tried once, not taken): litert-torch converts it with 9 transposes
  instead of 38 (none around channel pads), and XNNPACK's int8 then ran 1.45-1.52x the float file, AP easy
  0.0825 (float 0.0844), min IoU 0.84, but 46 of 57 wider_val_dev faces matched at IoU >= 0.9 against 51 and
  one more near-threshold flip: the speed gain (<= 8%) did not pay for the lost matches.
- **Accuracy.** Activation ranges clip outliers: ONNX uses ORT's percentile calibrator (99.99th percentile of
  all calibration values per tensor), TFLite the 99.95th percentile per image (both chosen on wider_val_dev
  against min-max and 99.5-99.99; the calibration images are the bundled examples/ with augmentations, never
  wider_val_dev). On the fixtures every face matches at IoU >= 0.9 (min IoU 0.94 ONNX, 0.97 TFLite); on the seed
  images ONNX int8 matches all 5 faces and TFLite 4 (one face float scores within 0.1 of the threshold flips).
  On wider_val_dev, ONNX int8 keeps 48 of float's 57 faces at IoU >= 0.9 (52 found by both, min IoU 0.85),
  TFLite 51 (54 pairs, min IoU 0.62; 50 in the Xeon run of `0d7ae15`); the flips (scores listed above, threshold 0.5) are faces float scores
  within 0.1 of the threshold but one (ONNX: 5 of 6); AP easy / medium: ONNX within 0.0002 of float, TFLite
  0.0045 / 0.0020 lower (target: within 0.01, met). So the "same faces" target holds on the fixtures and the
  seed images (ONNX) and for the clear faces of wider_val_dev, not for every face there: 6-9 of 57 faces
  (small crowd faces near the threshold) move below IoU 0.9 or flip. The unaligned int8 graph flipped 3
  (`u8s8_qdq_rr` in `int8_ort_variants.py`), at 0.7x the speed.
  The mean shift int8 - float of the logits at anchors near faces (float logit > 0) is -0.05 on the calibration
  images and -0.06 on wider_val_dev, with a spread of 0.15-0.18 (ONNX): the flips come mostly from the spread.
  A bias correction measured on the calibration images (+0.049 on the classifier heads' biases) was tried once:
  wider_val_dev flips 6 -> 4 but faces matched at IoU >= 0.9 48 -> 45 (more near-threshold anchors enter the
  weighted blend): not taken.
  Calibrating on real crowd photos instead was worse: TFLite int8 calibrated on the even half of wider_val_dev
  (68 images) keeps 21-25 of the odd half's 33 float faces at IoU >= 0.9, against 30 with examples/.
- **Classifier weights stay float (commit `cf75ecf`).** The heads always computed in float, but their weights
  were stored int8 per output channel. For back that was most of its int8 error: rounding only the weights, in
  PyTorch on the equalized network (wider_val_dev, logits at anchors where float's logit > -2), the classifier
  heads alone moved logits by a spread of 0.39 and flipped 357 anchors across the threshold, the regressor heads
  none (0.06 px), and the whole body in 8 bits 41; fully int8 ONNX flipped 1,142 (spread 0.49), so no single
  activation was the culprit (each alone, beside the int8 classifier weights: 355-371). The cause is the spread of
  `classifiers.0`'s weights: in some channels the largest is 345x the median (other heads 5-10x), so the int8 step
  rounds most weights of that channel to 0-3 levels. Now the classifier weights are stored float16 in ONNX (a
  `Cast`, folded at load) and float32 in TFLite; short range's weights stay within the budget (ONNX 128,964 B,
  TFLite 110,418 B). `python benchmarks/int8_qat_accuracy.py MODEL --qat-steps 0 [--onnx-int8 '{"float_tail": N}']`
  and `python benchmarks/tflite_int8_tail.py MODEL --tails N` (`benchmarks/results/int8_classifier_float_vnni.json`;
  float faces / int8 faces / matched at IoU >= 0.9 / flips, AP easy / medium; before -> after):
  - back ONNX, float tail 45: 281 / 384 / 184 / - -> 281 / 262 / 202 / 25, AP 0.4551 / 0.2793 -> 0.4650 / 0.2850
    (float 0.4607 / 0.2791): the invented crowd faces are gone and all 25 flips are within 0.1 of the threshold.
    Shorter tails: 12 nodes 278 faces / 129 matched, AP 0.4551 / 0.2761; 20: 262 / 139, 0.4724 / 0.2870; 30: 262 /
    168, 0.4714 / 0.2939; none: 515 / 80, 0.3154 / 0.1776. 45 stays the default (most faces matched; the shorter
    tails' AP moves up to 0.015 from float, and none of them makes int8 back faster than float: 0.88-0.94x for one
    image at 12-20). The conclusion of the 8-bit-weights run below ("the activations, not the weights") was wrong:
    that run changed the body's weights, not the classifier's.
    300 QAT steps on top (`int8_qat_accuracy.py back --qat-steps 300`, commit `cbd5915`): 261 faces / 216 matched /
    26 flips, AP 0.4567 / 0.2761, but a 26-min export (beside another job): not the default. On the 4 example
    photos and the 8 seed-image faces int8 back now finds exactly float's faces in both runtimes (min IoU 0.94 ONNX,
    0.92 TFLite); full range sparse too, with one seed face below IoU 0.9 (ONNX 0.85) and two in TFLite (0.88).
  - back TFLite, float tail 20: 388 faces / 190 matched -> 274 / 213 (39 flips, 37 near the threshold), AP 0.4692 /
    0.2844; tail 6: 249 / 108, AP 0.4551 / 0.2767; none: 723 / 45.
  - full range sparse (tail 12 in both): ONNX 161 / 161 / 125 / 28 -> 161 / 150 / 121 / 25, AP 0.3872 / 0.1951 ->
    0.3967 / 0.1980 (float 0.3898 / 0.1956); TFLite 165 / 140 -> 160 / 138, AP 0.3954 / 0.2001. About even: its
    classifier weights have no such outliers. Shorter ONNX tails still lose faces (none: 101 faces, 39 matched;
    6: 115 / 59), so 12 stays.
  - short range: ONNX 53 int8 faces / 48 matched / 4 flips (6 before), AP 0.0845 / 0.0374 (float 0.0844 /
    0.0373); TFLite 56 / 50 / 5, AP 0.0798 / 0.0353. Full range ONNX unchanged: 141 / 127 / 9, AP 0.4424 / 0.2359.
  - full range TFLite (measured on `e50ae60`, AMD EPYC; `tflite_int8_tail.py full_range --tails 0 2 4 8`,
    `benchmarks/results/tflite_int8_tail_full_range_epyc_vnni.json`): without a tail AP easy fell 0.0117 below
    float (0.4330 / 0.2353; 143 faces, 117 matched, 11 flips); tails of 2, 4, 8 ops: AP 0.4450 / 0.2420, 0.4421 /
    0.2394, 0.4454 / 0.2406; matched 120, 121, 127; LiteRT speed 1.45x, 1.32x, 1.15x float (0: 1.50x). It now
    keeps 2 (`ModelConfig.int8_tflite_float_tail`).
- **Other models** (the Xeon run of commit `0d7ae15`, before the float classifier weights; float faces / int8
  faces / matched at IoU >= 0.9 / flips on wider_val_dev, AP easy / medium against float):
  - full range: ONNX 140 / 141 / 127 / 9, AP 0.4418 / 0.2362 (float 0.4447 / 0.2402); TFLite 140 / 140 / 115 / 12.
  - full range sparse: ONNX 161 / 161 / 125 / 28, AP 0.3872 / 0.1951 (float 0.3898 / 0.1956). Two changes made
    it so. (1) Its heads are a 1x1 convolution, a 3x3 depthwise one and a depth-to-space; `head_nodes` stopped
    at the depthwise one, so the 1x1 convolution ran int8 and its outputs (x4 regressors and logits) were rounded
    to one uint8 scale before the float depthwise. The whole head is now float: 33 -> 40 matched, AP easy
    0.322 -> 0.380 (full range gains too: 125 -> 127). (2) Fully int8 its logits near faces still drop by 0.42 on
    average (full range: 0.03; emulated and real agree) and it kept 103 of 161 faces. Keeping the nodes nearest
    the head in float (`int8_float_tail`): of 3, 6, 9, 12, 15 and 20 nodes, 115, 117, 154, 161, 156, 156 faces
    (matched 46, 59, 113, 125, 128, 124); 12 taken, chosen on wider_val_dev like back's 6. 99.999th-percentile
    ranges instead found 231 faces (27 matched), min-max 42 (8), and 600 QAT steps (before the float tail) 92.
    The price is speed: ONNX int8 is 0.55-0.76x float here (fully int8 it was 0.85x at batch 1 too). TFLite int8
    without a float tail found 143 faces (47 matched, AP easy 0.355); its own float tail
    (`ModelConfig.int8_tflite_float_tail = 12` arithmetic ops, `python benchmarks/tflite_int8_tail.py
    full_range_sparse --tails 0 3 6 9 12`, commit `94b7735` plus the change): of 0, 3, 6, 9, 12 ops, 143, 130, 161,
    166, 165 faces, matched 47, 74, 120, 130, 140; at 12, AP 0.3936 / 0.1987.
  - back: ONNX 281 / 358 / 110 / 123, AP 0.4363 / 0.2644 (float 0.4607 / 0.2791): still invents faces on crowds,
    and AP easy is 0.024 below float (target 0.01). Float tails of 12 and 20 nodes gave 408 and 379 faces
    (AP easy 0.442, 0.462; matched 118, 134): not taken (chosen on the same images). 300 QAT steps (stop 15's
    default, `python benchmarks/int8_qat_accuracy.py back`, Intel Xeon VNNI): 334 faces, 116 matched, 101 flips, AP
    0.4513 / 0.2774, both within 0.01 of float, but a 15-min export. Longer float tails, post-training, measured
    with `int8_qat_accuracy.py back --qat-steps 0 --onnx-int8 '{"float_tail": N}'` (code 7b48069; faces /
    matched, AP easy / medium, int8 / float onnxruntime speed at batch 1 and 16 on 1 thread):
    depth 30 (59 of 148 nodes float): 378 / 153, 0.4678 / 0.2911; depth 45 (87 nodes): 384 / 184, 0.4551 / 0.2793,
    0.66x / 1.07x; depth 60 (116 nodes): 390 / 204, 0.4587 / 0.2751, 0.46x / 0.74x; depth 6 in the same run:
    358 / 110, 0.85x / 1.14x (`benchmarks/results/int8_back_float_tails_vnni.json`). Depth 45 is the default now
    (`int8_float_tail = 45`, no QAT): more faces kept than QAT gave, AP within 0.006, a one-minute export; int8
    back was no faster than float at any depth. The extra faces stay (378-390 against 281 at every depth): most
    are crowd faces float scores within 0.1 of the threshold (109-112 of 123-127 flips), and the float noise
    floor keeps 270-275 of 281.
    Why int8 back is slow (onnxruntime's profile, 1 thread, one 256x256 image, `ort_profile`, commit ecdfb12):
    float 14.0 ms (channel-aligned float 10.3), int8 at depth 6 15.4 ms, of which the int8 depthwise convolutions
    7.7 ms against 3.8 float, QLinearAdd 1.8 ms against 0.9 for the float Add; only the 1x1 convolutions gain
    (3.3 ms against 5.5). Leaving the depthwise convolutions float (`float_depthwise`) did not pay: one image
    0.61x (depth 45) and 0.80x (depth 6) float, batch 16 0.83x and 1.24x, faces kept 185 and 109
    (`benchmarks/results/int8_back_float_depthwise_vnni.json`).
    8-bit instead of 7-bit weights (`--onnx-int8 '{"reduce_range": false}'`, post-training, VNNI) changed little:
    381 faces, 110 matched, AP easy 0.4418 (`benchmarks/results/int8_back_8bit_weights_vnni.json`): the
    activations, not the weights, are what int8 back loses.
    TFLite int8 without a float tail: 1,067 faces (44 on the 4 example photos), 46 matched, AP easy 0.3099. Its
    float tail (`ModelConfig.int8_tflite_float_tail = 20` arithmetic ops; a fused ADD + ReLU counts once;
    `python benchmarks/tflite_int8_tail.py back --tails 0 2 4 6 9 12 15 20`): of 0, 2, 4, 6, 9, 12, 15, 20 ops,
    1067, 351, 363, 352, 373, 364, 380, 388 faces, matched 46, 69, 95, 106, 120, 149, 163, 190; at 20 AP 0.4586 /
    0.2793 (float 0.4607 / 0.2791), chosen on wider_val_dev like the ONNX tails. LiteRT runs back's and full range
    sparse's int8 files at 0.74-0.93x float at every tail, 0 included (1 thread, batch 1, timed beside other
    jobs): the tail costs no measurable speed, and int8 brings these two models no speed in LiteRT.
    Short range needs none: with tails of 2, 4, 6 ops its TFLite int8 keeps 50, 51, 51 of 57 faces at IoU >= 0.9
    (no tail: 50), AP easy 0.0796-0.0829 (`benchmarks/results/tflite_int8_tail_short_range_vnni.json`).
  Fully int8, back found 25 faces on the 4 example photos (float: 4) and 22 on the seed images (float: 8),
  because in 8 bits its last residual sums turn background into faces; hence a float tail, first 6 (of 3, 6 and 9,
  6 flipped the fewest wider_val_dev faces at commit `64ec190`), now 45 (above).
- **Weights.** ONNX 128,964 B; TFLite 110,418 B (108,162 B from `7b48069`, which gives each convolution its own
  bias, to `cf75ecf`; 145 KB before): the head convolutions compute in float, the regressors' weights stored int8
  per output channel behind a constant DEQUANTIZE (evaluated once at load; same speed), the classifiers' float16
  (ONNX) or float32 (TFLite). Both meet the 130 KB target. The backbone runs int8 end to end in both files
  (TFLite: one XNNPACK partition; ONNX: the DequantizeLinear left are the 2 regressor head weights and the
  feature maps entering the float heads)."""


def summary_table(results: list[dict]) -> list[str]:
    """Markdown lines: per model and int8 file, wider_val_dev faces matched to float's, AP easy / medium minus
    float's, the example and seed faces matched, and int8's speed-up over float for one image on 1 thread."""
    lines = ["Summary, int8 against float: wider_val_dev faces matched at IoU >= 0.9 / float's faces (float under ±1 grey "
             "level of noise: its range over 3 seeds), AP easy / medium minus float's, example and seed-image faces "
             "matched, float / int8 time for one image on 1 thread in the same runtime (one run; `int8_speed.py` "
             "gives rounds).", "",
             "| model | file | wider_val_dev | AP easy / medium | examples | seed images | speed-up, 1 image |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        acc = r["accuracy"]
        floor = [m["matched"] for m in acc.get("float_noise_floor", [])]
        fap = acc["float_pytorch_AP"]
        for key, v in acc.items():
            if not key.endswith("_int8") and "_int8_" not in key:
                continue
            runtime = {"onnx": "onnxruntime", "tflite": "litert", "torchscript": "torchscript"}[key.split("_")[0]]
            speed = r["speed"].get(f"{runtime}_t1_b1", {}).get("speedup", "")
            wider = f"{v['wider_val_dev']['matched']} / {v['wider_val_dev']['faces']}"
            if floor:
                wider += f" (noise {min(floor)}-{max(floor)})"
            ap = f"{v['AP']['easy'] - fap['easy']:+.4f} / {v['AP']['medium'] - fap['medium']:+.4f}"
            lines.append(f"| {r['model']} | {key} | {wider} | {ap} | {v['examples']['matched']} / {v['examples']['faces']} | "
                         f"{v['seed_images']['matched']} / {v['seed_images']['faces']} | {speed} |")
    return lines + [""]


def write_results(results: list[dict], path: Path) -> None:
    import onnxruntime
    lines = ["## Export and int8 (issue 6)", "",
             f"Machine: {results[0].get('machine') or machine()}. Commit {results[0]['commit']}, {results[0]['date']}. torch {torch.__version__}, "
             f"onnxruntime {onnxruntime.__version__}. Command: `python benchmarks/export_int8.py --models short_range full_range "
             "full_range_sparse back --qat-steps 0 --write-results`.",
             "Speed: `runtime_t<threads>_b<batch>`, median of interleaved runs, float and int8 in the same runtime "
             "(2 shared cores: noisy; 2-thread figures are unreliable whenever another job runs).",
             "Accuracy: `FaceDetector(file)` against PyTorch float; faces matched at IoU >= 0.9; AP on wider_val_dev at min score 0.1.",
             ""]
    lines += summary_table(results)
    for r in results:
        lines.append(f"### {r['model']}")
        lines.append("")
        w = r["int8_weight_bytes"]
        lines.append(f"- int8 weight bytes: ONNX {w['onnx']:,} (float {w['onnx_float']:,})"
                     + (f", TFLite {w['tflite']:,}" if "tflite" in w else "") + "; target <= 130 KB for short range")
        lines.append("- file bytes: " + ", ".join(f"{k} {v:,}" for k, v in r["file_bytes"].items()))
        lines.append("")
        lines.append("| runtime | float ms | int8 ms | speed-up (target >= 1.5) | aligned float ms (FaceDetector's graph) |")
        lines.append("|---|---|---|---|---|")
        for k, v in r["speed"].items():
            if "error" in v:
                lines.append(f"| {k} | - | - | {v['error']} | |")
            else:
                lines.append(f"| {k} | {v['float_ms']} | {v['int8_ms']} | {v['speedup']} | {v.get('aligned_float_ms', '')} |")
        lines.append("")
        prof = r.get("onnxruntime_profile_us")
        if prof:
            ops = sorted(set(prof["float"]) | set(prof["int8"]), key=lambda k: -max(prof["float"].get(k, 0), prof["int8"].get(k, 0)))
            lines.append("ONNX Runtime's per-node profile (1 thread, batch 1, µs per run by op type; profiling adds overhead):")
            lines.append("")
            lines.append("| op | float µs | int8 µs |")
            lines.append("|---|---|---|")
            for op in ops:
                lines.append(f"| {op} | {prof['float'].get(op, '')} | {prof['int8'].get(op, '')} |")
            lines.append(f"| total | {round(sum(prof['float'].values()), 1)} | {round(sum(prof['int8'].values()), 1)} |")
            lines.append("")
        lines.append("Cells: float faces / int8 faces / pairs (IoU >= 0.5) / matched (IoU >= 0.9) / flips (of which within 0.1 "
                     "of the threshold) / images differing / min IoU of the pairs.")
        lines.append("")
        lines.append("| file | examples | seed images | wider_val_dev | AP easy / medium / hard |")
        lines.append("|---|---|---|---|---|")
        fap = r["accuracy"]["float_pytorch_AP"]
        lines.append(f"| PyTorch float | | | | {fap['easy']} / {fap['medium']} / {fap['hard']} |")
        extra = ("float_pytorch_AP", "wider_val_dev_raw_errors", "float_noise_floor")
        for k, v in r["accuracy"].items():
            if k in extra:
                continue
            cells = [f"{v[s]['faces']} / {v[s]['int8_faces']} / {v[s]['pairs']} / {v[s]['matched']} / "
                     f"{v[s]['flips']} ({v[s]['near_threshold_flips']}) / {v[s]['images_differing']} / {v[s]['min_iou']}"
                     for s in ("examples", "seed_images", "wider_val_dev")]
            ap = v["AP"]
            lines.append(f"| {k} | " + " | ".join(cells) + f" | {ap['easy']} / {ap['medium']} / {ap['hard']} |")
        for m in r["accuracy"].get("float_noise_floor", []):
            lines.append(f"| float, ±1 grey level noise | | | {m['faces']} / {m['int8_faces']} / {m['pairs']} / {m['matched']} / "
                         f"{m['flips']} ({m['near_threshold_flips']}) / {m['images_differing']} / {m['min_iou']} | |")
        raw = r["accuracy"].get("wider_val_dev_raw_errors")
        if raw:
            lines.append("")
            lines.append("Raw network on wider_val_dev (whole image letterboxed), int8 − float: logits at anchors near faces "
                         "(float logit > −2) and regressors weighted by the float score:")
            lines.append("")
            lines.append("| file | anchors | logit error mean | std | mean abs | regressors, px |")
            lines.append("|---|---|---|---|---|---|")
            for k, e in raw.items():
                lines.append(f"| {k} | {e['anchors']} | {e['logit_error_mean']:+} | {e['logit_error_std']} | "
                             f"{e['logit_error_abs']} | {e['regressor_error_px']} |")
        lines.append("")
        lines.append("wider_val_dev flips, `[image, score, the other's score at that face or None]` (threshold "
                     f"{r.get('threshold', 0.5)}):")
        lines.append("")
        for k, v in r["accuracy"].items():
            if "wider_val_dev_flips" in v and (v["wider_val_dev_flips"]["float_only"] or v["wider_val_dev_flips"]["int8_only"]):
                fl = v["wider_val_dev_flips"]
                lines.append(f"- {k}: float only {fl['float_only']}; int8 only {fl['int8_only']}")
        lines.append("")
    lines += [NOTES, ""]
    replace_section(path, "\n".join(lines))


def replace_section(path: Path, section: str) -> None:
    """Write ``section`` (a Markdown text starting with its ``## `` heading) into ``path`` in place of the section
    with that heading, up to the next ``## `` heading; appended when there is none."""
    heading = section.split("\n", 1)[0]
    text = path.read_text() if path.exists() else "# Benchmark results\n\n"
    start = text.find(heading)
    if start >= 0:
        end = text.find("\n## ", start + 5)
        text = text[:start] + section + ("\n" + text[end + 1:] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text.rstrip("\n") + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["short_range"])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--no-tflite", action="store_true", help="skip the litert-torch exports")
    ap.add_argument("--write-results", action="store_true", help="write the section of benchmarks/RESULTS.md")
    ap.add_argument("--json", help="also write the raw results here")
    ap.add_argument("--qat-steps", type=int, default=600,
                    help="also export int8 after this many steps of quantization-aware fine-tuning (0: skip)")
    ap.add_argument("--render", metavar="JSON", help="only write RESULTS.md from the raw results of an earlier run")
    args = ap.parse_args()
    if args.render:
        write_results(json.loads(Path(args.render).read_text()), ROOT / "benchmarks" / "RESULTS.md")
        return
    try:
        import litert_torch  # noqa: F401
        with_tflite = not args.no_tflite
    except ImportError:
        with_tflite = False
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            r = bench_model(name, Path(tmp), args.repeats, with_tflite, args.qat_steps)
            print(json.dumps(r, indent=1), flush=True)
            results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.write_results:
        write_results(results, ROOT / "benchmarks" / "RESULTS.md")


if __name__ == "__main__":
    main()
