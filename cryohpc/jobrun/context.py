"""What a job type's ``run`` function gets: params, inputs as datasets, and the means to
log, report progress and save outputs. It is built from ``job.json`` alone."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..dataset import Dataset, text_of
from ..errors import DatasetError, InputFileError
from ..events import CACHE, OUTPUT, PROGRESS, RUNNING, WAITING, EventWriter
from ..jobfile import JobFile
from ..jobtypes.spec import JobTypeSpec


class RunContext:
    def __init__(self, jobfile: JobFile, spec: JobTypeSpec, events: EventWriter, comm=None):
        from .mpi import SingleRank
        from .stopping import StopWatch
        from .usage import UsageMeter

        self.jobfile = jobfile
        self.events = events
        self.comm = comm if comm is not None else SingleRank()
        self.rank, self.size = self.comm.rank, self.comm.size
        self.params: dict[str, Any] = dict(jobfile.params)
        self.job_dir = Path(jobfile.job_dir)
        self.project_dir = Path(jobfile.project_dir)
        self.spec = spec
        self._progress_t0: dict[str, tuple[float, int]] = {}
        self._versions: dict[str, int] = {}
        self.stop_watch = StopWatch(self.job_dir)
        self.usage = UsageMeter()
        self._held: list[Any] = []

    def hold(self, *objects: Any) -> None:
        """Keep ``objects`` alive until the worker has reported the job's end. Giving back
        gigabytes of grid takes the kernel a noticeable time (box 192: 0.37 s), which
        belongs after the report, not in the user's wait for it."""
        self._held.extend(objects)

    def stop_requested(self) -> bool:
        """Whether the job was asked to checkpoint and stop (its time limit is near): a job
        that checkpoints saves, then raises ``jobrun.stopping.StopRequested``."""
        return self.stop_watch.asked()

    # -- reporting ----------------------------------------------------------------------
    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def log(self, text: str, level: str = "info", all_ranks: bool = False) -> None:
        """Log from rank 0 (or from every rank, prefixed, with ``all_ranks``)."""
        if not self.is_root and not all_ranks:
            return
        if self.size > 1 and all_ranks:
            text = f"[rank {self.rank}] {text}"
        sys.stdout.write(text + "\n")  # one write a line: ranks of a warm worker share one log file
        sys.stdout.flush()
        self.events.log(text, level)

    def progress(self, done: int, total: int, what: str = "") -> None:
        t0, n0 = self._progress_t0.setdefault(what, (time.monotonic(), done))
        dt = time.monotonic() - t0
        rate = (done - n0) / dt if dt > 0 else None
        if self.is_root:
            self.events.emit(PROGRESS, what=what, done=done, total=total, rate=rate)

    def waiting(self, reason: str) -> None:
        """Say the job waits on something outside it (files locked by another job...)."""
        self.events.emit(WAITING, reason=reason)

    def running(self) -> None:
        self.events.emit(RUNNING)

    # -- SSD cache -----------------------------------------------------------------------
    @property
    def cache_enabled(self) -> bool:
        """The lane has an SSD cache and the job did not turn it off."""
        return self.jobfile.cache is not None and bool(self.params.get("compute_use_ssd", True))

    @contextlib.contextmanager
    def cached(self, sources: list[Path], subsets: dict[Path, object] | None = None) -> Iterator[dict[Path, Path]]:
        """Local copies of ``sources`` through the lane's SSD cache (the same paths when the
        lane has none or the job's ``compute_use_ssd`` is off), held until the block ends.
        ``subsets`` asks for compact copies of some stacks (see ``SsdCache.use``)."""
        settings = self.jobfile.cache
        if not self.cache_enabled:
            yield {Path(s).resolve(): Path(s).resolve() for s in sources}
            return
        from ..cache import CacheStats, SsdCache, resolve_cache_path

        root = resolve_cache_path(settings.path)
        cache = SsdCache(root, settings.quota_mb, settings.reserve_mb, settings.lifetime_days, settings.threads)
        stats = CacheStats()

        def on_wait(reason: str) -> None:
            self.log(reason, all_ranks=True)
            self.waiting(reason)

        with cache.use(sources, on_wait=on_wait, stats=stats, subsets=subsets) as mapping:
            self.usage.cache_copied_bytes += stats.copied_bytes
            self.events.emit(CACHE, path=str(cache.root), host=socket.gethostname(), copied_bytes=stats.copied_bytes,
                             hits=stats.hits, evicted=len(stats.evicted))
            self.log(f"SSD cache {cache.root}: {stats.copied_files} file(s) copied "
                     f"({stats.copied_bytes / 2**20:.1f} MB), {stats.hits} already there"
                     + (f"; {len(subsets)} as compact subsets" if subsets else ""), all_ranks=True)
            if stats.waited_s:
                self.running()
            yield mapping

    # -- paths --------------------------------------------------------------------------
    def project_path(self, rel: str | bytes, field: str = "blob/path") -> Path:
        """Absolute path of a project-relative path (``blob/path`` values are those, as
        the bytes a dataset holds or as text).

        Raises:
            DatasetError: the bytes are not UTF-8 (the field and value named).
        """
        return self.project_dir / (text_of(rel, field) if isinstance(rel, bytes) else rel)

    def relpath(self, path: Path) -> str:
        """Project-relative form of a path inside the project directory."""
        try:
            return str(Path(path).resolve().relative_to(self.project_dir.resolve()))
        except ValueError:
            raise InputFileError(f"{path} is outside project directory {self.project_dir}") from None

    # -- inputs ---------------------------------------------------------------------------
    def load_input(self, name: str, passthrough: bool = False) -> Dataset:
        """The input group's dataset: per connection the inner join of its slot files (and
        passthrough files when asked), appended over connections.

        Raises:
            DatasetError: a file cannot be read, or connections overlap where repeats are
                not allowed; the message names the input and the file.
        """
        ispec = self.spec.input(name)
        conns = self.jobfile.inputs.get(name, [])
        if ispec is None or not conns:
            raise DatasetError(f"job has no connected input {name!r}")
        parts = []
        for conn in conns:
            files = dict(conn.slots)
            if passthrough:
                files.update(conn.passthrough)
            datasets = []
            for result, path in files.items():
                ds = Dataset.load(path)
                # a slot brings its result's fields only: one file may hold several results,
                # and an override's other fields must not shadow the connection's
                datasets.append(ds.select_prefixes([result]) if ds.prefixes() != [result] else ds)
            parts.append(Dataset.innerjoin_many(datasets))
        try:
            return Dataset.append_many(parts, allow_duplicate_uids=ispec.repeat_allowed)
        except DatasetError as err:
            raise DatasetError(f"input {name!r}: {err}") from err

    # -- outputs --------------------------------------------------------------------------
    def save_output(self, group: str, dataset: Dataset, passthrough: bool = True,
                    summary: dict[str, Any] | None = None) -> list[str]:
        """Write an output group's results (one ``.cs`` per version) and report them.

        Results are the field prefixes of ``dataset``. When the group declares a
        passthrough input, results of that input not produced here are written beside it,
        restricted to the output's items. Returns the project-relative paths written.
        """
        ospec = self.spec.output(group)
        if ospec is None:
            raise DatasetError(f"job type {self.spec.name} declares no output group {group!r}")
        version = self._versions.get(group, 0)
        self._versions[group] = version + 1
        suffix = "" if version == 0 else f"_v{version}"
        uid = self.jobfile.job_uid
        produced = dataset.prefixes()
        results, written = [], []
        if produced:  # a group may hold passthrough results only
            path = self.job_dir / f"{uid}_{group}{suffix}.cs"
            dataset.save(path)
            rel = self.relpath(path)
            results = [{"name": p, "type": p, "path": rel} for p in produced]
            written = [rel]
        if passthrough and ospec.passthrough_input:
            source = self.load_input(ospec.passthrough_input, passthrough=True)
            keep = [p for p in source.prefixes() if p not in produced]
            if keep:
                pt = source.select_prefixes(keep).subset_uids(dataset["uid"])
                pt_path = self.job_dir / f"{uid}_passthrough_{group}{suffix}.cs"
                pt.save(pt_path)
                pt_rel = self.relpath(pt_path)
                written.append(pt_rel)
                results += [{"name": p, "type": p, "path": pt_rel, "passthrough": True} for p in keep]
        self.events.emit(OUTPUT, group=group, item_type=ospec.type, version=version,
                         num_items=len(dataset), results=results, summary=summary or {})
        return written
