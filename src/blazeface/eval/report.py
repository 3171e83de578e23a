"""Reports: a text table of AP per setting, JSON, and PR-curve plots (matplotlib, the ``[eval]`` extra)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .protocol import EvalResult


def format_table(results: Mapping[str, EvalResult], extra: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """A Markdown table: one row per named result, AP per setting (3 decimals), optional extra columns."""
    names = list(results)
    settings: list[str] = []
    for r in results.values():
        settings += [s for s in r.settings if s not in settings]
    extra_cols: list[str] = []
    for cols in (extra or {}).values():
        extra_cols += [c for c in cols if c not in extra_cols]
    head = ["detections"] + [f"AP {s}" for s in settings] + extra_cols
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for n in names:
        r = results[n]
        cells = [n] + [f"{r.settings[s].ap:.3f}" if s in r.settings else "" for s in settings]
        cells += [(extra or {}).get(n, {}).get(c, "") for c in extra_cols]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_json(path: str | Path, results: Mapping[str, EvalResult], curve: bool = True,
               extra: Mapping[str, Any] | None = None) -> None:
    """``{name: EvalResult.to_dict()}`` (plus ``extra``) as JSON."""
    out: dict[str, Any] = {n: r.to_dict(curve) for n, r in results.items()}
    if extra:
        out.update(extra)
    Path(path).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


def plot_pr(path: str | Path, results: Mapping[str, EvalResult], title: str = "") -> None:
    """PR curves, one panel per setting, one line per named result, AP in the legend (PNG; needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plotting needs matplotlib: pip install 'blazeface[eval]'") from exc
    settings: list[str] = []
    for r in results.values():
        settings += [s for s in r.settings if s not in settings]
    fig, axes = plt.subplots(1, len(settings), figsize=(4.2 * len(settings), 4.2), squeeze=False)
    for ax, s in zip(axes[0], settings):
        for name, r in results.items():
            if s not in r.settings:
                continue
            sr = r.settings[s]
            ok = np.isfinite(sr.precision)
            ax.plot(sr.recall[ok], sr.precision[ok], label=f"{name} ({sr.ap:.3f})", linewidth=1.3)
        ax.set_title(f"{s}" + (f" — {title}" if title else ""), fontsize=9)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper right")
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
