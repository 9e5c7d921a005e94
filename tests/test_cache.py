"""The SSD cache: shared by concurrent jobs, atomic copies, quota, reserve, eviction."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from cryohpc.cache import MB, CacheStats, SsdCache, resolve_cache_path
from cryohpc.errors import UserError


def make_files(folder: Path, sizes_mb: list[float]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, size in enumerate(sizes_mb):
        p = folder / f"stack_{i:03d}.mrcs"
        p.write_bytes(os.urandom(int(size * MB)))
        out.append(p)
    return out


def _job(root: str, sources: list[str], hold_s: float, q) -> None:
    stats = CacheStats()
    waits: list[str] = []
    with SsdCache(root).use([Path(s) for s in sources], on_wait=waits.append, stats=stats) as mapping:
        same = all(Path(mapping[Path(s).resolve()]).read_bytes() == Path(s).read_bytes() for s in sources)
        time.sleep(hold_s)
    q.put((stats.copied_bytes, stats.hits, same, len(waits)))


def test_two_jobs_at_once_copy_each_byte_once(tmp_path):
    sources = [str(p) for p in make_files(tmp_path / "src", [20, 20, 5])]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_job, args=(str(tmp_path / "ssd"), sources, 0.5, q)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    copied = sum(r[0] for r in results)
    assert copied == sum(Path(s).stat().st_size for s in sources)  # each byte once
    assert all(r[2] for r in results)  # both read identical data
    assert sum(r[1] for r in results) == len(sources)  # the other job's files were hits


def test_partial_copy_of_a_killed_job_is_never_used(tmp_path):
    (src,) = make_files(tmp_path / "src", [3])
    cache = SsdCache(tmp_path / "ssd")
    key = cache.key(src)
    # what a copier killed midway leaves: a part file whose process is gone
    dead = 999999
    part = cache.root / f"{key}.part.{dead}"
    part.write_bytes(src.read_bytes()[: MB])
    stats = CacheStats()
    with cache.use([src], stats=stats) as mapping:
        assert mapping[src.resolve()].read_bytes() == src.read_bytes()
    assert stats.copied_files == 1 and not part.exists()


def test_quota_evicts_least_recently_used_but_never_files_in_use(tmp_path):
    a, b, c, d = make_files(tmp_path / "src", [1, 1, 1, 1])
    cache = SsdCache(tmp_path / "ssd", quota_mb=3.5)
    for f in (a, b, c):
        with cache.use([f]):
            pass
        time.sleep(0.01)
    stats = CacheStats()
    with cache.use([a]), cache.use([d], stats=stats):  # a is in use (and now the most recent)
        pass
    assert stats.evicted == [str(b.resolve())]  # the least recently used that is free
    cached = {e["source"] for e in cache.entries()}
    assert cached == {str(p.resolve()) for p in (a, c, d)}
    assert cache.used_bytes() <= 3.5 * MB
    big = make_files(tmp_path / "big", [5])[0]
    with pytest.raises(UserError, match="MB needed but only"), cache.use([big]):
        pass


def test_reserve_keeps_free_space(tmp_path):
    (src,) = make_files(tmp_path / "src", [1])
    free_mb = __import__("shutil").disk_usage(tmp_path).free / MB
    cache = SsdCache(tmp_path / "ssd", reserve_mb=free_mb + 1000)
    with pytest.raises(UserError, match="SSD cache"), cache.use([src]):
        pass


def test_expiry_and_foreign_files(tmp_path):
    a, b = make_files(tmp_path / "src", [1, 1])
    cache = SsdCache(tmp_path / "ssd", lifetime_days=1)
    with cache.use([a, b]):
        pass
    foreign = cache.root / "somebody-elses-file.txt"
    foreign.write_text("not ours")
    removed = cache.expire(now=time.time() + 2 * 86400)
    assert len(removed) == 2 and cache.entries() == []
    assert foreign.exists()
    assert cache.clear() == 0 and foreign.exists()


def test_changed_source_is_copied_again(tmp_path):
    (src,) = make_files(tmp_path / "src", [1])
    cache = SsdCache(tmp_path / "ssd")
    with cache.use([src]) as m1:
        first = m1[src.resolve()]
    src.write_bytes(os.urandom(MB))
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))
    with cache.use([src]) as m2:
        assert m2[src.resolve()] != first and m2[src.resolve()].read_bytes() == src.read_bytes()


def test_cache_path_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_TMPDIR", str(tmp_path))
    assert resolve_cache_path("$FAKE_TMPDIR/cryohpc") == tmp_path / "cryohpc"
    monkeypatch.delenv("FAKE_TMPDIR")
    with pytest.raises(UserError, match=r"names \$FAKE_TMPDIR, which is unset"):
        resolve_cache_path("$FAKE_TMPDIR/cryohpc")


def test_counts_are_exact_with_many_copy_threads(tmp_path):
    sources = make_files(tmp_path / "src", [0.05] * 200)
    stats = CacheStats()
    with SsdCache(tmp_path / "ssd", threads=8).use(sources, stats=stats) as mapping:
        assert len(mapping) == 200
    assert stats.copied_files == 200 and stats.copied_bytes == sum(p.stat().st_size for p in sources)


def test_subset_of_a_float16_stack_is_cached_compact_and_float16(tmp_path):
    import mrcfile
    import numpy as np

    src = tmp_path / "src" / "stack.mrcs"
    src.parent.mkdir()
    images = np.random.default_rng(0).normal(size=(50, 16, 16)).astype(np.float16)
    with mrcfile.new(src) as m:
        m.set_data(images)
        m.set_image_stack()
        m.voxel_size = 1.5
    wanted = np.array([3, 7, 41])
    stats = CacheStats()
    cache = SsdCache(tmp_path / "ssd")
    with cache.use([src], subsets={src: wanted}, stats=stats) as mapping, mrcfile.open(mapping[src.resolve()]) as m:
        assert m.data.dtype == np.float16 and m.data.shape == (3, 16, 16)
        assert np.array_equal(m.data, images[wanted])
        assert float(m.voxel_size.x) == 1.5
    assert stats.copied_bytes < src.stat().st_size / 10
