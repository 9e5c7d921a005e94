"""The node-local SSD cache of particle stacks, shared by all jobs on a node.

A cached file is named by (source path, size, mtime), so a changed source is never
served stale. Files are copied to a temporary name and renamed when complete, so a copy
killed midway leaves nothing a later job would read. Per-file ``flock`` locks coordinate
jobs: a copy lock held only while a file is copied (others wait for it, never copy
twice), and a use lock held shared by every job that needs the file from before its copy
until the job ends (eviction takes it exclusively, so it skips files in use). Space is made by evicting
least-recently-used unlocked files within a quota and above a reserve of free disk; files
unused for ``lifetime_days`` expire. Only files the cache wrote (``*.dat``/``*.json``/
``*.lock``/``*.part*`` in its own folder) are ever deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .envpath import expand_path_variables
from .errors import UserError

MARKER = ".cryohpc-cache"
MB = 1024 * 1024


@dataclass
class CacheStats:
    """What one use of the cache did; updated from several copy threads at once."""

    copied_bytes: int = 0
    copied_files: int = 0
    hits: int = 0
    waited_s: float = 0.0
    evicted: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, copied_bytes: int = 0, copied_files: int = 0, hits: int = 0, waited_s: float = 0.0) -> None:
        with self._lock:
            self.copied_bytes += copied_bytes
            self.copied_files += copied_files
            self.hits += hits
            self.waited_s += waited_s


def resolve_cache_path(path: str) -> Path:
    """The SSD cache folder as this node (at run time) names it: see ``expand_path_variables``.

    Raises:
        UserError: a variable without a default is unset.
    """
    return Path(expand_path_variables(path))


class SsdCache:
    def __init__(self, root: str | os.PathLike, quota_mb: float | None = None, reserve_mb: float = 0.0,
                 lifetime_days: float = 30.0, threads: int = 2):
        self.root = Path(root) / "cryohpc-cache"
        self.quota = None if quota_mb is None else int(quota_mb * MB)
        self.reserve = int(reserve_mb * MB)
        self.lifetime_s = lifetime_days * 86400
        self.threads = max(1, threads)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / MARKER).touch()

    # -- naming --------------------------------------------------------------------------
    @staticmethod
    def key(source: Path, subset: np.ndarray | None = None) -> str:
        st = source.stat()
        h = hashlib.sha256(f"{source.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
        if subset is not None:
            h.update(np.ascontiguousarray(subset, dtype=np.int64).tobytes())
        return h.hexdigest()[:32]

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        """Data, metadata, and use-lock files of an entry (the copy lock is ``.copylock``)."""
        return self.root / f"{key}.dat", self.root / f"{key}.json", self.root / f"{key}.lock"

    # -- accounting ----------------------------------------------------------------------
    def entries(self) -> list[dict]:
        """Cached files with their metadata (source, size, last_used)."""
        out = []
        for meta in self.root.glob("*.json"):
            try:
                info = json.loads(meta.read_text())
            except (OSError, ValueError):
                continue
            if (self.root / f"{meta.stem}.dat").exists():
                out.append({**info, "key": meta.stem})
        return out

    def used_bytes(self) -> int:
        return sum(e["size"] for e in self.entries())

    def _room(self) -> int:
        free_disk = shutil.disk_usage(self.root).free - self.reserve
        if self.quota is not None:
            return min(free_disk, self.quota - self.used_bytes())
        return free_disk

    # -- eviction ------------------------------------------------------------------------
    def _try_remove(self, key: str) -> bool:
        """Delete an entry if no job holds it (an exclusive lock is free)."""
        dat, meta, lock = self._paths(key)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # in use
            dat.unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            (self.root / f"{key}.copylock").unlink(missing_ok=True)
            return True
        finally:
            os.close(fd)

    def expire(self, now: float | None = None) -> list[str]:
        """Remove entries unused for longer than the lifetime, and stale partial copies."""
        now = now or time.time()
        removed = [e["key"] for e in self.entries()
                   if now - e.get("last_used", 0) > self.lifetime_s and self._try_remove(e["key"])]
        for part in self.root.glob("*.part.*"):
            pid = part.name.rsplit(".", 1)[-1]
            if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
                part.unlink(missing_ok=True)  # its copier died: never to be completed
        return removed

    def make_room(self, needed: int, stats: CacheStats, keep: set[str]) -> None:
        """Evict least-recently-used unlocked entries until ``needed`` bytes fit.

        Raises:
            UserError: not enough space even after evicting every unused file.
        """
        if self._room() >= needed:
            return
        for e in sorted(self.entries(), key=lambda e: e.get("last_used", 0)):
            if e["key"] in keep:
                continue
            if self._try_remove(e["key"]):
                stats.evicted.append(e["source"])
                if self._room() >= needed:
                    return
        if self._room() < needed:
            raise UserError(f"SSD cache {self.root}: {needed / MB:.0f} MB needed but only {self._room() / MB:.0f} MB "
                            "can be freed (quota, reserve, or files in use by other jobs)")

    # -- use -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def use(self, sources: list[Path], on_wait: Callable[[str], None] | None = None,
            stats: CacheStats | None = None,
            subsets: dict[Path, np.ndarray] | None = None) -> Iterator[dict[Path, Path]]:
        """Cached copies of ``sources`` (copied if missing, in path order), held with
        shared locks, so nobody evicts them, until the block ends.

        For a source in ``subsets`` (sorted unique image indices of an MRC stack) only
        those images are cached, as a compact stack in the source's own data type: image
        ``i`` of the copy is image ``subsets[source][i]`` of the source.
        """
        stats = stats if stats is not None else CacheStats()
        sources = sorted({Path(s).resolve() for s in sources})
        subsets = {Path(k).resolve(): np.asarray(v, dtype=np.int64) for k, v in (subsets or {}).items()}
        keys = {s: self.key(s, subsets.get(s)) for s in sources}
        self.expire()
        held: list[int] = []
        mapping: dict[Path, Path] = {}
        try:
            missing = []
            for s in sources:
                dat, _, lock = self._paths(keys[s])
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
                fcntl.flock(fd, fcntl.LOCK_SH)  # in use from now on: never evicted under us
                held.append(fd)
                if dat.exists():
                    stats.add(hits=1)
                    mapping[s] = dat
                else:
                    missing.append(s)
            if missing:
                need = sum(_subset_bytes(s, subsets[s]) if s in subsets else s.stat().st_size for s in missing)
                self.make_room(need, stats, set(keys.values()))
                with ThreadPoolExecutor(self.threads) as pool:
                    fill = lambda src: self._fill(src, keys[src], stats, on_wait, subsets.get(src))  # noqa: E731
                    for s, path in zip(missing, pool.map(fill, missing), strict=True):
                        mapping[s] = path
            now = time.time()
            for s in sources:
                self._touch(keys[s], s, now, mapping[s].stat().st_size)
            yield mapping
        finally:
            for fd in held:
                with contextlib.suppress(OSError):
                    fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _fill(self, source: Path, key: str, stats: CacheStats, on_wait: Callable[[str], None] | None,
              subset: np.ndarray | None = None) -> Path:
        """Copy one file (or the subset of its images) under its copy lock unless another
        job did meanwhile."""
        dat = self._paths(key)[0]
        fd = os.open(self.root / f"{key}.copylock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait:
                    on_wait(f"waiting for requested files to become unlocked: {source.name}")
                t0 = time.monotonic()
                fcntl.flock(fd, fcntl.LOCK_EX)
                stats.add(waited_s=time.monotonic() - t0)
            if dat.exists():
                stats.add(hits=1)
                return dat
            part = self.root / f"{key}.part.{os.getpid()}"
            if subset is not None:
                _write_subset(source, subset, part)
            else:
                shutil.copyfile(source, part)  # copy_file_range/sendfile where the kernel has them
            if subset is None and part.stat().st_size != source.stat().st_size:
                part.unlink(missing_ok=True)
                raise UserError(f"copying {source} to the SSD cache was cut short")
            os.replace(part, dat)  # complete, or not there at all
            stats.add(copied_bytes=dat.stat().st_size, copied_files=1)
            return dat
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _touch(self, key: str, source: Path, now: float, size: int) -> None:
        _, meta, _ = self._paths(key)
        info = {"source": str(source), "size": size, "last_used": now}
        tmp = meta.with_suffix(f".json.tmp{os.getpid()}")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, meta)

    def clear(self) -> int:
        """Remove every entry not in use; returns how many were removed."""
        return sum(self._try_remove(e["key"]) for e in self.entries())


def _subset_bytes(source: Path, subset: np.ndarray) -> int:
    import mrcfile

    with mrcfile.mmap(source, mode="r", permissive=True) as m:
        per_image = m.data[0].nbytes if m.data.ndim == 3 else m.data.nbytes
    return len(subset) * per_image + 1024


def _write_subset(source: Path, subset: np.ndarray, dest: Path) -> None:
    """A compact stack of the chosen images, in the source's data type (float16 stays)."""
    import mrcfile

    with mrcfile.mmap(source, mode="r", permissive=False) as m:
        data = m.data if m.data.ndim == 3 else m.data[None]
        images = np.ascontiguousarray(data[subset])
        voxel = m.voxel_size.copy()
    with mrcfile.new(dest, overwrite=True) as out:
        out.set_data(images)
        out.set_image_stack()
        out.voxel_size = voxel
