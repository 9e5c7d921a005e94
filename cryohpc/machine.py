"""What this machine offers jobs: GPUs, cores, memory."""

from __future__ import annotations

import os
import shutil
import subprocess


def gpu_ids() -> list[int]:
    """GPU indices nvidia-smi lists; none without a driver."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [int(x) for x in out.split() if x.strip().isdigit()]


def ram_gb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError):
        return 4.0
