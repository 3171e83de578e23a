"""Held-back AP (tiled) against training samples seen, for several ``train_distill.py`` runs.

    python benchmarks/plot_distill.py OUT.png NAME=RUN_DIR [NAME=RUN_DIR ...]

Reads each ``RUN_DIR/log.csv`` and ``RUN_DIR/config.json`` (samples seen = epoch × repeats × training images,
from ``RUN_DIR/report.json``).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from blazeface.train.plots import line_plot

    args = sys.argv[1:] if argv is None else argv
    series: dict[str, list[tuple[float, float]]] = {}
    for spec in args[1:]:
        name, run = spec.split("=", 1)
        report = json.loads((Path(run) / "report.json").read_text())
        per_epoch = report["repeats"] * report["train_images"]
        rows = list(csv.DictReader(open(Path(run) / "log.csv", encoding="utf-8")))
        series[name] = [(int(r["epoch"]) * per_epoch / 1000, float(r["val_ap"])) for r in rows if r["val_ap"]]
    line_plot(series, args[0], "held-back AP vs teacher (student tiled)", xlabel="training samples (thousands)",
              ylabel="AP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
