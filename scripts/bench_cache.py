#!/usr/bin/env python
"""SSD cache copy throughput against plain ``cp`` of the same files in the same run, and
homo_reconstruct with a cold vs a warm cache.

Sources are written fresh, then the kernel is asked to drop its page cache (when this
process may) so both copies read from disk; otherwise the note says they read from memory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from cryohpc.api import Api
from cryohpc.cache import MB, CacheStats, SsdCache
from cryohpc.master import master_in_thread


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(fn) -> float:
    dropped = drop_page_cache()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0, dropped


def files(folder: Path, n: int, size_mb: float) -> list[Path]:
    folder.mkdir(parents=True)
    block = os.urandom(int(size_mb * MB))
    out = []
    for i in range(n):
        p = folder / f"stack_{i:05d}.mrcs"
        p.write_bytes(block)
        out.append(p)
    return out


def copy_rates(tmp: Path, label: str, srcs: list[Path]) -> None:
    total = sum(p.stat().st_size for p in srcs) / MB
    dest = tmp / f"cp-{label}"
    dest.mkdir()
    cp_s, dropped = timed(lambda: subprocess.run(["cp", *map(str, srcs), str(dest)], check=True))
    for threads in (1, 4):
        cache = SsdCache(tmp / f"ssd-{label}-{threads}", threads=threads)
        stats = CacheStats()

        def fill(cache=cache, stats=stats):
            with cache.use(srcs, stats=stats):
                pass

        s, _ = timed(fill)
        assert stats.copied_bytes == total * MB
        print(f"{label:28s} cache, {threads} thread(s): {total / s:8.0f} MB/s   cp: {total / cp_s:8.0f} MB/s   "
              f"ratio {cp_s / s:5.2f}" + ("" if dropped else "   (page cache not dropped: reads from memory)"))
    shutil.rmtree(dest)


def reconstruct_cold_warm(tmp: Path) -> None:
    os.environ["BENCH_SSD"] = str(tmp / "ssd-recon")
    api = Api.init(tmp / "home", tmp / "projects", poll_interval_s=0.05)
    (api.instance.paths.site_configs / "ssd.yaml").write_text(
        "lanes:\n  - name: ssd\n    cache_path: $BENCH_SSD\n    cache_reserve_mb: 0\n")
    with master_in_thread(api.instance):
        project = api.create_project("cache-bench")
        sim = project.create_job("simulate_particles", params={"n_particles": 8000, "box": 128, "snr": 0.1,
                                                               "particles_per_stack": 500})
        sim.queue()
        assert sim.wait(1800).value == "completed"
        for label in ("cold", "warm"):
            drop_page_cache()
            job = project.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
            job.connect("particles", sim.uid, "particles")
            job.queue(lane="ssd")
            assert job.wait(1800).value == "completed", job.model.errors_run
            t = job.model.status_times
            copied = [ln for ln in job.log_lines() if "SSD cache" in ln]
            print(f"homo_reconstruct 8,000 particles box 128, {label} cache: {t['completed'] - t['started']:.1f} s  "
                  f"({copied[0].split('] ', 1)[1] if copied else ''})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--large-mb", type=float, default=256)
    parser.add_argument("--large-n", type=int, default=4)
    parser.add_argument("--small-n", type=int, default=400)
    parser.add_argument("--no-reconstruct", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        tmp = Path(tmp)
        copy_rates(tmp, f"{args.large_n} x {args.large_mb:.0f} MB", files(tmp / "large", args.large_n, args.large_mb))
        copy_rates(tmp, f"{args.small_n} x 1 MB", files(tmp / "small", args.small_n, 1))
        if not args.no_reconstruct:
            reconstruct_cold_warm(tmp)


if __name__ == "__main__":
    main()
