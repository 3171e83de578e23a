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
        fields: dict[str, str] = {}  # the first processor's "key : value" lines
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
        cpu = fields.get("model name", cpu)
        if "cpu family" in fields and "model" in fields:
            cpu += f" family {fields['cpu family']} model {fields['model']}"
        present = set(fields.get("flags", "").split())
        flags = [f for f in FLAGS if f in present]
    except OSError:
        pass
    return (f"{cpu} ({os.cpu_count()} cores, {', '.join(flags) or 'no AVX flags found'}), "
            f"{platform.system()} {platform.machine()}")
