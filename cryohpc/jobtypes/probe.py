"""lane_probe: what a job sees where a lane runs it, for ``lane test --submit``.

Every rank reports its host, rank, GPUs and the SSD cache path as resolved there; rank 0
checks the cache folder can be made and written, and writes ``probe.json`` into the job
directory, which proves the job's outputs come back to the shared filesystem.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile

from ..jobrun.context import RunContext


def _cache_check(path: str | None) -> dict:
    if not path:
        return {"configured": False}
    from ..cache import resolve_cache_path
    from ..errors import UserError

    try:
        root = resolve_cache_path(path)
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".probe-"):
            pass
        free_mb = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize / 2**20
        return {"configured": True, "path": str(root), "writable": True, "free_mb": round(free_mb)}
    except (UserError, OSError) as err:
        return {"configured": True, "path": path, "writable": False, "error": str(err)}


def run_lane_probe(ctx: RunContext) -> None:
    mine = {"rank": ctx.rank, "host": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cache": _cache_check(ctx.jobfile.cache.path if ctx.jobfile.cache else None)}
    ranks = ctx.comm.gather(mine, root=0) if ctx.size > 1 else [mine]
    if not ctx.is_root:
        return
    for r in ranks:
        ctx.log(f"rank {r['rank']} on {r['host']}: GPUs {r['cuda_visible_devices'] or 'none'}, "
                f"cache {r['cache'].get('path', 'none')}"
                + ("" if r["cache"].get("writable", True) else f" NOT writable: {r['cache'].get('error')}"))
    (ctx.job_dir / "probe.json").write_text(json.dumps({"ranks": ranks, "size": ctx.size}, indent=2))
