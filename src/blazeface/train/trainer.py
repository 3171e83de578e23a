"""The training loop: :class:`Trainer` (Python) and ``blazeface train`` (command line).

Writes into ``out``: ``last.safetensors`` (weights, loadable by ``FaceDetector(model, weights=...)`` and
``blazeface detect --weights``), ``last.ckpt`` (optimizer, schedule, epoch, history: for ``resume``),
``best.safetensors`` (best validation AP), ``log.csv`` (one row per epoch), ``losses.png`` and
``val_ap.png``, and ``config.json``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import ModelConfig
from ..nn.blazenet import BlazeNet
from ..registry import create_model, get_config, load_weights
from .augment import AugmentConfig, make_example
from .data import Sample
from .finetune import WeightEMA, backbone_parameters, l2sp_penalty, param_groups, start_weights
from .loss import DetectionLoss, LossConfig, MatchConfig
from .metrics import EvalReport, evaluate

LOG_COLUMNS = ("epoch", "step", "lr", "loss", "cls", "box", "keypoint", "l2sp", "keep", "positives", "images_per_s",
               "seconds", "val_ap", "val_ap_easy", "val_ap_medium", "val_ap_hard", "val_keypoint_error")


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved to ``config.json``)."""

    model: str = "paper"
    #: ``"pretrained"`` (the shipped weights), ``"scratch"``, or a ``.safetensors`` path.
    init: str = "scratch"
    epochs: int = 10
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.02
    grad_clip: float = 10.0
    #: learning rate of everything but the detection heads (the last 1×1 convolutions), as a fraction of ``lr``
    #: (0: frozen, only the heads are trained).
    backbone_lr: float = 1.0
    #: the first this many epochs train the heads only (the rest of the network is frozen).
    freeze_backbone_epochs: int = 0
    #: L2-SP: ``l2sp / 2 · Σ ||w − w₀||²`` over the trained weights is added to the loss (``w₀``: the
    #: starting weights), a pull back toward what the network started from (0: off).
    l2sp: float = 0.0
    #: decay of an exponential moving average of the weights (0: off). When on, the saved weights
    #: (``last``/``best.safetensors``) and validation are the average's.
    ema_decay: float = 0.0
    seed: int = 0
    device: str | None = None
    amp: bool = True
    #: CPU threads for torch during training (``None``: leave torch's setting). On a busy machine 1 is often
    #: much faster than several (OpenMP threads spin waiting for each other).
    threads: int | None = None
    workers: int = 0
    #: each epoch sees every training image this many times (differently augmented).
    repeats: int = 1
    #: faces smaller than this fraction of the input are ignored (``None``: 1.5 × the finest anchor cell).
    min_face: float | None = None
    #: face sizes zooms aim for (``None``: 2 × the finest cell to the anchors' ``max_scale``).
    face_range: tuple[float, float] | None = None
    val_min_score: float = 0.05
    #: validation runs the detector with this tiling (``"off"``: one whole-image letterbox, ``"auto"``: the
    #: multi-scale tiles of :mod:`blazeface.tiling`, for small faces in large images such as WIDER's).
    val_tiling: str = "off"
    val_every: int = 1
    cache_images: bool = False
    progress: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    #: ``None``: :func:`default_match` for the model.
    match: MatchConfig | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def fine_tune(cls, model: str, init: str = "pretrained", **overrides: Any) -> "TrainConfig":
        """The fine-tuning recipe (:data:`FINE_TUNE`, :data:`FINE_TUNE_NEG_IOU`, :data:`FINE_TUNE_KEEP_WEIGHT`) for
        trained weights (``--init pretrained`` or a file); ``overrides`` replace any field."""
        match = dataclasses.replace(default_match(get_config(model)), neg_iou=FINE_TUNE_NEG_IOU)
        loss = LossConfig(keep_weight=FINE_TUNE_KEEP_WEIGHT)
        return cls(**{"model": model, "init": init, **FINE_TUNE, "match": match, "loss": loss, **overrides})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        aug = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.pop("augment", {}).items()})
        loss = LossConfig(**d.pop("loss", {}))
        match = MatchConfig(**d["match"]) if d.get("match") else None
        d.pop("match", None)
        if d.get("face_range") is not None:
            d["face_range"] = tuple(d["face_range"])
        return cls(**d, augment=aug, loss=loss, match=match)


#: What :meth:`TrainConfig.fine_tune` changes from the defaults (chosen on a validation split carved out of
#: wider_val_dev's training events, see ``benchmarks/RESULTS.md``), so that a few dozen images refine a shipped
#: model instead of dragging it away: only the heads learn (``backbone_lr`` 0: the backbone learning rates
#: tried, 1e-4 and 3e-5, lowered AP on the validation event), an L2-SP pull toward the starting weights instead
#: of weight decay, an EMA of the weights, and faces below 6% of the input ignored (the shipped models score
#: WIDER's faces that small at a median of about 0.06–0.08: teaching them from a few images only miscalibrates).
FINE_TUNE: dict[str, Any] = {"lr": 3e-3, "backbone_lr": 0.0, "weight_decay": 0.0, "l2sp": 1.0, "ema_decay": 0.95,
                             "warmup_steps": 20, "freeze_backbone_epochs": 0, "epochs": 6, "repeats": 3,
                             "min_face": 0.06}
#: Fine-tuning's background: anchors whose face-sized box overlaps a face by less than this IoU (default
#: matching: 0.35 / 0.25). The shipped models fire on a face's neighbouring anchors too; calling those
#: background (hard negatives) would fight their calibration, so they are ignored.
FINE_TUNE_NEG_IOU = 0.1
#: Fine-tuning keeps the ignored anchors' scores (faces under ``min_face``, a face's neighbours) near the starting
#: model's (``LossConfig.keep_weight``): without it the scores of what it does not train drift (on wider_val_dev's
#: 52 training images, seed 2: detections ≥ 0.05 matching no face 1877 → 2396, faces of 2–4% of the input found
#: 6.6% → 3.9%; with it 1721 and 4.7%), which is what cost the medium and hard settings.
FINE_TUNE_KEEP_WEIGHT = 1.0


def default_face_range(config: ModelConfig) -> tuple[float, float]:
    finest = min(config.anchors.strides) / config.input_size
    return (2.0 * finest, config.anchors.max_scale)


def default_match(config: ModelConfig) -> MatchConfig:
    """Matching that agrees with how the shipped models fire: the full-range models (one fine 48×48 grid) fire
    on the 2–4 anchors nearest a face (offsets up to ~0.15 of its size, a face-sized-box IoU ≥ ~0.57; elsewhere
their regressors do not point at the face), the
    128/256-pixel models on anchors up to ~0.3–0.4 of the face's size away (IoU ≈ 0.3–0.4): fine-tuning with a
    broader positive set than the model's own would fight its calibration."""
    if config.anchors.num_layers == 1:
        return MatchConfig(pos_iou=0.6, neg_iou=0.35, max_per_face=3)
    return MatchConfig(pos_iou=0.35, neg_iou=0.25)


def default_min_face(config: ModelConfig) -> float:
    return 1.5 * min(config.anchors.strides) / config.input_size


class TrainDataset(Dataset):
    """Augmented training inputs: ``(float32[3, S, S], target dict)``; deterministic per ``(seed, epoch, index)``."""

    def __init__(self, samples: Sequence[Sample], size: int, augment: AugmentConfig, face_range: tuple[float, float],
                 min_face: float, seed: int = 0, repeats: int = 1, cache: bool = False) -> None:
        self.samples = list(samples)
        self.size = size
        self.augment = augment
        self.face_range = face_range
        self.min_face = min_face
        self.seed = seed
        self.repeats = max(1, int(repeats))
        self.epoch = 0
        self._cache: dict[str, np.ndarray] | None = {} if cache else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.samples) * self.repeats

    def image(self, path: str) -> np.ndarray:
        from ..io import load_image

        if self._cache is None:
            return load_image(path)
        if path not in self._cache:
            self._cache[path] = load_image(path)
        return self._cache[path]

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        sample = self.samples[index % len(self.samples)]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        tensor, target, _ = make_example(self.image(sample.path), sample, self.size, self.augment, rng,
                                         self.face_range, self.min_face)
        return tensor, dataclasses.asdict(target)


def collate(batch: list[tuple[np.ndarray, dict]]) -> tuple[torch.Tensor, list[dict]]:
    return torch.from_numpy(np.stack([b[0] for b in batch])), [b[1] for b in batch]


def init_scratch(net: BlazeNet, scale: float, prior: float = 0.01) -> BlazeNet:
    """Initialise heads for training from scratch: a low face prior on the classifiers, regressors near
    zero offsets with a quarter-input face size."""
    for head in net.classifiers:
        conv = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        torch.nn.init.normal_(conv.weight, std=0.01)
        torch.nn.init.constant_(conv.bias, -math.log((1 - prior) / prior))
    for head in net.regressors:
        conv = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        torch.nn.init.normal_(conv.weight, std=0.01)
        bias = torch.zeros(16)
        bias[2:4] = 0.25 * scale
        torch.nn.init.zeros_(conv.bias)
        with torch.no_grad():
            conv.bias.copy_(bias.repeat(conv.bias.numel() // 16))
    return net


def build_model(config: TrainConfig) -> BlazeNet:
    """The network to train: shipped weights, random (scratch) or a ``.safetensors`` file."""
    mc = get_config(config.model)
    if config.init == "pretrained":
        if mc.weights is None:
            raise ValueError(f"model {mc.name!r} ships no weights: use --init scratch or --init PATH.safetensors")
        net = create_model(mc.name, pretrained=True)
    elif config.init == "scratch":
        torch.manual_seed(config.seed)
        net = init_scratch(create_model(mc.name, pretrained=False), mc.box_scale)
    else:
        net = load_weights(create_model(mc.name, pretrained=False), config.init)
    return net.train()


class Trainer:
    """Train or fine-tune a registered BlazeFace model on labelled samples.

    >>> trainer = Trainer(TrainConfig(model="full_range", init="pretrained", epochs=5), train, val, "runs/ft")
    >>> trainer.fit()            # writes runs/ft/last.safetensors, best.safetensors, log.csv, *.png
    >>> FaceDetector("full_range", weights="runs/ft/best.safetensors")
    """

    def __init__(self, config: TrainConfig, train: Sequence[Sample], val: Sequence[Sample] | None = None,
                 out: str | Path = "runs/train", log: TextIO | None = None) -> None:
        if not train:
            raise ValueError("no training samples")
        self.config = config
        self.model_config = get_config(config.model)
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.log = log if log is not None else sys.stderr
        self.device = torch.device(config.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.net = build_model(config).to(self.device)
        if self.device.type == "cpu":  # depthwise convolutions train ~1.5× faster channels-last on the CPU
            self.net = self.net.to(memory_format=torch.channels_last)
        mc = self.model_config
        self.face_range = config.face_range or default_face_range(mc)
        self.min_face = default_min_face(mc) if config.min_face is None else config.min_face
        self.dataset = TrainDataset(train, mc.input_size, config.augment, self.face_range, self.min_face,
                                    config.seed, config.repeats, config.cache_images)
        self.val = list(val) if val else []
        self.criterion = DetectionLoss(mc.anchors, mc.box_scale, config.loss,
                                       config.match or default_match(mc)).to(self.device)
        self.optimizer = torch.optim.AdamW(param_groups(self.net, config.lr, config.backbone_lr), lr=config.lr,
                                           weight_decay=config.weight_decay)
        #: the starting weights L2-SP pulls toward (``None`` when off).
        self.start_weights = start_weights(self.net) if config.l2sp > 0 else None
        self.ema = WeightEMA(self.net, config.ema_decay) if config.ema_decay > 0 else None
        #: a frozen copy of the starting network (for ``loss.keep_weight``; ``None`` when off).
        self.start_net = (copy.deepcopy(self.net).eval().requires_grad_(False) if config.loss.keep_weight > 0
                          else None)
        self.steps_per_epoch = math.ceil(len(self.dataset) / config.batch_size)
        total = max(1, self.steps_per_epoch * config.epochs)
        warm = min(config.warmup_steps, total // 4)

        def schedule(step: int) -> float:  # linear warm-up, then cosine to min_lr_ratio
            if step < warm:
                return (step + 1) / (warm + 1)
            t = min(1.0, (step - warm) / max(1, total - warm))
            return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.amp = bool(config.amp and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        self.epoch = 0
        self.step = 0
        self.history: list[dict[str, float]] = []
        self.best_ap = -1.0
        #: decoded validation images by path (filled as they are read when ``cache_images``).
        self.val_images: dict[str, np.ndarray] | None = {} if config.cache_images else None

    # --- checkpoints ------------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        """The weights to save and validate: the EMA's when on, else the network's."""
        state = dict(self.net.state_dict())
        if self.ema is not None:
            state.update(self.ema.state_dict())
        return state

    def save_weights(self, path: str | Path) -> Path:
        from ..convert.converter import save_weights

        state = {k: v.detach().float().cpu() for k, v in self.weights().items()}
        return save_weights(state, path, self.model_config.name)

    def save_checkpoint(self) -> Path:
        self.save_weights(self.out / "last.safetensors")
        state = {
            "epoch": self.epoch, "step": self.step, "history": self.history, "best_ap": self.best_ap,
            "config": self.config.to_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(), "model": self.net.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
        }
        tmp = self.out / "last.ckpt.tmp"
        torch.save(state, tmp)
        tmp.replace(self.out / "last.ckpt")
        return self.out / "last.ckpt"

    def resume(self, checkpoint: str | Path | None = None) -> "Trainer":
        """Continue from ``out/last.ckpt`` (or ``checkpoint``): weights, optimizer, schedule, epoch, history."""
        ckpt = Path(checkpoint) if checkpoint else self.out / "last.ckpt"
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state.get("model") is not None:  # the raw weights (last.safetensors holds the EMA's when on)
            self.net.load_state_dict(state["model"])
        else:
            load_weights(self.net, ckpt.with_name("last.safetensors") if ckpt.name == "last.ckpt"
                         else ckpt.with_suffix(".safetensors"))
        self.net.to(self.device)
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.history = list(state["history"])
        self.best_ap = float(state["best_ap"])
        return self

    # --- one epoch --------------------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        from tqdm import tqdm

        cfg = self.config
        self.net.train()
        frozen = self.epoch < cfg.freeze_backbone_epochs or cfg.backbone_lr == 0
        for p in backbone_parameters(self.net):
            p.requires_grad_(not frozen)
        self.dataset.set_epoch(self.epoch)
        g = torch.Generator()
        g.manual_seed(cfg.seed * 1000003 + self.epoch)
        loader = DataLoader(self.dataset, batch_size=cfg.batch_size, shuffle=True, generator=g,
                            num_workers=cfg.workers, collate_fn=collate, drop_last=False,
                            pin_memory=self.device.type == "cuda", persistent_workers=False)
        sums: dict[str, float] = {}
        seen = 0
        start = time.perf_counter()
        bar = tqdm(loader, desc=f"epoch {self.epoch + 1}/{cfg.epochs}", unit="batch", file=self.log,
                   disable=not cfg.progress, leave=False)
        for images, targets in bar:
            images = images.to(self.device, non_blocking=True)
            if self.device.type == "cpu":
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                feats = self.net.features(images)
                regressors, logits = self.net.heads(feats)
                start_logits = self.start_logits(images, feats, frozen)
            loss, parts = self.criterion(regressors.float(), logits.float(), targets, start_logits)
            if self.start_weights is not None:
                penalty = l2sp_penalty(self.net, self.start_weights)
                loss = loss + 0.5 * cfg.l2sp * penalty
                parts["l2sp"] = float(penalty.detach())
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {float(loss)} at step {self.step}; lower --lr")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(self.net)
            self.scheduler.step()
            self.step += 1
            n = len(targets)
            seen += n
            parts["loss"] = float(loss.detach())
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * n
            bar.set_postfix(loss=f"{parts['loss']:.3f}", cls=f"{parts['cls']:.3f}", box=f"{parts['box']:.3f}")
        bar.close()
        seconds = time.perf_counter() - start
        row = {k: v / max(seen, 1) for k, v in sums.items()}
        row.update(images_per_s=seen / max(seconds, 1e-9), seconds=seconds,
                   lr=self.scheduler.get_last_lr()[-1])  # the heads' (the last group)
        return row

    @torch.no_grad()
    def start_logits(self, images: torch.Tensor, feats: list[torch.Tensor], frozen: bool) -> torch.Tensor | None:
        """The starting network's logits on ``images`` (for ``LossConfig.keep_weight``; ``None`` when off): with
        the backbone frozen its heads run on the current features, which are the starting ones."""
        if self.start_net is None:
            return None
        if frozen:
            return self.start_net.heads([f.detach() for f in feats])[1]
        return self.start_net(images)[1]

    def validate(self, weights: str | Path | None = None, min_score: float | None = None) -> EvalReport:
        """AP of the current weights on the validation samples, through the real inference path
        (:class:`~blazeface.FaceDetector` with the saved ``.safetensors`` and ``config.val_tiling``)."""
        from ..detector import FaceDetector

        weights = weights or self.save_weights(self.out / "last.safetensors")
        det = FaceDetector(self.model_config.name, device=self.device, weights=weights, backend="torch",
                           min_score=self.config.val_min_score if min_score is None else min_score,
                           tiling=self.config.val_tiling)
        return evaluate(det, self.val, self.val_images, progress=False)

    def fit(self) -> list[dict[str, float]]:
        """Train for the remaining epochs; returns the history (one dict per epoch, as in ``log.csv``)."""
        cfg = self.config
        (self.out / "config.json").write_text(json.dumps(self.config.to_dict(), indent=1) + "\n")
        threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            self._fit()
        finally:
            torch.set_num_threads(threads)
        return self.history

    def _fit(self) -> None:
        cfg = self.config
        while self.epoch < cfg.epochs:
            row = self.train_epoch()
            self.epoch += 1
            row.update(epoch=self.epoch, step=self.step)
            self.save_checkpoint()
            if self.val and (self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs):
                report = self.validate(self.out / "last.safetensors")
                row.update({f"val_{k}": v for k, v in report.as_dict().items()})
                if report.ap > self.best_ap:
                    self.best_ap = report.ap
                    shutil.copyfile(self.out / "last.safetensors", self.out / "best.safetensors")
            elif not self.val:
                shutil.copyfile(self.out / "last.safetensors", self.out / "best.safetensors")
            self.history.append(row)
            self.save_checkpoint()  # with the row in the history
            self.write_log()
            msg = (f"epoch {self.epoch}/{cfg.epochs}: loss {row['loss']:.4f} (cls {row['cls']:.4f}, box "
                   f"{row['box']:.4f}, kp {row['keypoint']:.4f}), {row['images_per_s']:.1f} img/s")
            if "val_ap" in row:
                msg += f", val AP {row['val_ap']:.4f}"
            print(msg, file=self.log, flush=True)

    def write_log(self) -> None:
        """``log.csv`` and the two plots from the history."""
        from .plots import line_plot

        with open(self.out / "log.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(LOG_COLUMNS)
            for row in self.history:
                w.writerow(["" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                            for c in LOG_COLUMNS])
        ep = [r["epoch"] for r in self.history]
        line_plot({k: list(zip(ep, [r.get(k, float("nan")) for r in self.history]))
                   for k in ("loss", "cls", "box", "keypoint")},
                  self.out / "losses.png", f"training losses ({self.model_config.name})", ylabel="loss", log_y=True)
        aps = {k.replace("val_", ""): list(zip(ep, [r.get(k, float("nan")) for r in self.history]))
               for k in ("val_ap", "val_ap_easy", "val_ap_medium", "val_ap_hard")
               if any(k in r for r in self.history)}
        line_plot(aps or {"ap": []}, self.out / "val_ap.png", f"validation AP ({self.model_config.name})",
                  ylabel="AP")


# --- command line -----------------------------------------------------------------------------------
#: TrainConfig fields ``blazeface train`` sets from options of the same name (``None``: the recipe's value).
RECIPE_OPTIONS = ("epochs", "lr", "backbone_lr", "freeze_backbone_epochs", "l2sp", "ema_decay", "weight_decay",
                  "warmup_steps", "repeats")


def add_train_parser(sub: Any) -> None:
    """Register ``blazeface train`` on the CLI's subparsers."""
    from ..registry import list_models

    t = sub.add_parser("train", help="train or fine-tune a model on annotated images (WIDER txt, COCO, JSONL)")
    t.add_argument("--model", default="paper", choices=list_models() + ["front", "full"], help="architecture (default: paper)")
    t.add_argument("--init", default="scratch",
                   help="pretrained (shipped weights), scratch, or a .safetensors file (default: scratch)")
    t.add_argument("--data", help="annotations: WIDER txt, COCO json, JSONL (e.g. detect --jsonl) or wider_val_dev json")
    t.add_argument("--images", help="folder the annotation paths are relative to")
    t.add_argument("--teacher", help="no --data: pseudo-label --images with this model (distillation)")
    t.add_argument("--tiles", type=int, default=1, help="teacher also runs on an N×N grid of tiles (default: 1 = off)")
    t.add_argument("--val-data", help="validation annotations (any format)")
    t.add_argument("--val-images", help="folder for the validation annotations")
    t.add_argument("--split-events", action="store_true",
                   help="hold back every 2nd WIDER event (in numeric order) of --data for validation")
    ft = TrainConfig.fine_tune("paper")
    d = TrainConfig()
    both = lambda name: f"(default: {getattr(d, name):g} scratch, {getattr(ft, name):g} fine-tuning)"  # noqa: E731
    t.add_argument("--epochs", type=int, help=both("epochs"))
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--lr", type=float, help="peak learning rate of the heads " + both("lr"))
    t.add_argument("--backbone-lr", type=float,
                   help="learning rate of the rest of the network, as a fraction of --lr " + both("backbone_lr"))
    t.add_argument("--freeze-backbone-epochs", type=int,
                   help="train only the heads for the first N epochs " + both("freeze_backbone_epochs"))
    t.add_argument("--l2sp", type=float,
                   help="L2-SP weight: pull toward the starting weights, l2sp/2·Σ||w−w0||² " + both("l2sp"))
    t.add_argument("--ema-decay", type=float,
                   help="EMA of the weights, saved and validated (0: off) " + both("ema_decay"))
    t.add_argument("--weight-decay", type=float, help=both("weight_decay"))
    t.add_argument("--warmup-steps", type=int, help=both("warmup_steps"))
    t.add_argument("--box-weight", type=float, help=f"box regression loss weight (default: {d.loss.box_weight:g})")
    t.add_argument("--keep-weight", type=float,
                   help="pull keeping the scores of ignored anchors (tiny faces, a face's neighbours) at the starting "
                        f"model's (default: {d.loss.keep_weight:g} scratch, {ft.loss.keep_weight:g} fine-tuning)")
    t.add_argument("--loss", default="ohem", choices=["ohem", "focal"], help="classification loss (default: ohem)")
    t.add_argument("--repeats", type=int, help="passes over the images per epoch " + both("repeats"))
    t.add_argument("--no-augment", action="store_true", help="no augmentation (whole-image letterbox only)")
    t.add_argument("--zoom-prob", type=float, default=AugmentConfig.zoom_prob,
                   help="share of examples zoomed on one face, sized for the model; raise it (e.g. 0.9) when most "
                        "faces are far smaller than the input (default: %(default)g)")
    t.add_argument("--val-tiling", default="off", choices=["off", "auto"],
                   help="validate with tiled inference, for small faces in large images (default: off)")
    t.add_argument("--device", help="cpu, cuda, ... (default: cuda when available)")
    t.add_argument("--no-amp", action="store_true", help="no mixed precision on the GPU")
    t.add_argument("--workers", type=int, default=0, help="data loading processes (default: 0)")
    t.add_argument("--threads", type=int, help="torch CPU threads while training (default: torch's)")
    t.add_argument("--cache", action="store_true", help="keep decoded images in memory")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True, help="output folder (weights, checkpoint, log.csv, plots)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/last.ckpt")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(func=run_train)


def run_train(args: argparse.Namespace, stdout: TextIO) -> int:
    from .data import AnnotationError, load_annotations, pseudo_label, split_by_event, write_jsonl

    out = Path(args.out)
    try:
        if args.data:
            samples = load_annotations(args.data, args.images)
        elif args.teacher and args.images:
            from ..io import iter_image_files

            samples = pseudo_label(sorted(iter_image_files([args.images])), args.teacher, tiles=args.tiles,
                                   device=args.device, progress=not args.quiet)
            write_jsonl(samples, out / "pseudo_labels.jsonl")
        else:
            print("blazeface train: give --data, or --teacher with --images", file=sys.stderr)
            return 2
        val = load_annotations(args.val_data, args.val_images) if args.val_data else None
    except (AnnotationError, FileNotFoundError, ValueError) as exc:
        print(f"blazeface train: {exc}", file=sys.stderr)
        return 1
    if args.split_events:
        samples, held = split_by_event(samples)
        val = (val or []) + held
    model = get_config(args.model).name
    base = TrainConfig(model=model) if args.init == "scratch" else TrainConfig.fine_tune(model, args.init)
    given = {k: getattr(args, k) for k in RECIPE_OPTIONS if getattr(args, k) is not None}
    box_weight = base.loss.box_weight if args.box_weight is None else args.box_weight
    keep_weight = base.loss.keep_weight if args.keep_weight is None else args.keep_weight
    config = dataclasses.replace(
        base, init=args.init, batch_size=args.batch_size, seed=args.seed, device=args.device, amp=not args.no_amp,
        threads=args.threads, workers=args.workers, cache_images=args.cache, progress=not args.quiet,
        loss=dataclasses.replace(base.loss, classification=args.loss, box_weight=box_weight,
                                 keep_weight=keep_weight),
        augment=AugmentConfig.off() if args.no_augment else AugmentConfig(zoom_prob=args.zoom_prob),
        val_tiling=args.val_tiling, **given,
    )
    try:
        trainer = Trainer(config, samples, val, out)
        if args.resume:
            trainer.resume()
        history = trainer.fit()
    except (ValueError, FileNotFoundError, FloatingPointError) as exc:
        print(f"blazeface train: {exc}", file=sys.stderr)
        return 1
    last = history[-1] if history else {}
    print(json.dumps({"out": str(out), "weights": str(out / "best.safetensors"), "epochs": trainer.epoch,
                      **{k: last[k] for k in ("loss", "val_ap") if k in last}}), file=stdout)
    return 0
