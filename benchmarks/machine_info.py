"""One line naming the CPU a benchmark ran on: model, cores and the vector extensions that change the results."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# int8 speed depends on VNNI (u8 x s8 dot products into int32), float speed on the vector width
FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")


def machine() -> str:
    """E.g. ``'AMD EPYC family 25 model 17 (2 cores, avx2, avx512f, avx512_vnni), Linux x86_64'``.

    The family and model tell apart CPUs sold under one name (two "AMD EPYC" machines here differed 2x in speed)."""
    cpu, flags = platform.processor() or "unknown CPU", []
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), cpu)
        present = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
        flags = [f for f in FLAGS if f in present]
        ids = {k: ln.split(":", 1)[1].strip() for ln in info.splitlines() if ":" in ln
               for k in ("cpu family", "model") if ln.split(":", 1)[0].strip() == k}
        if len(ids) == 2:
            cpu += f" family {ids['cpu family']} model {ids['model']}"
    except OSError:
        pass
    return (f"{cpu} ({os.cpu_count()} cores, {', '.join(flags) or 'no AVX flags found'}), "
            f"{platform.system()} {platform.machine()}")
