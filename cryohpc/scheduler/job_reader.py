"""The master's view of the jobs it works on (queued and launched), kept between passes:
each pass asks the database for the revisions of those jobs (columns only) and parses
only documents whose revision moved. A pass's cost follows the jobs in flight, not the
jobs ever created."""

from __future__ import annotations

from ..model import Job
from ..status import JobStatus
from ..store import Tx


class JobReader:
    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], tuple[int, Job]] = {}

    def read(self, tx: Tx, statuses: list[JobStatus]) -> dict[JobStatus, list[Job]]:
        """Jobs in ``statuses`` as of ``tx``, grouped by status. The returned objects are
        shared with later passes: callers copy before changing one."""
        revisions = tx.job_revisions(statuses)
        stale = [k for k, rev in revisions.items() if self._cache.get(k, (None,))[0] != rev]
        if stale:
            self._cache.update(tx.jobs_by_key(stale))
        for key in [k for k in self._cache if k not in revisions]:
            del self._cache[key]
        out: dict[JobStatus, list[Job]] = {s: [] for s in statuses}
        for key in revisions:
            if key in self._cache:
                job = self._cache[key][1]
                out[job.status].append(job)
        return out
