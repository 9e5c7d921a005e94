"""``cryohpc-worker --job-dir DIR``: run one job from its ``job.json``.

Reports through ``events.jsonl`` only: started, heartbeats, the job's own log and
progress, outputs, then completed or failed (with the traceback). Exit status 0 means
completed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from pathlib import Path

from ..errors import UserError
from ..events import COMPLETED, FAILED, HEARTBEAT, EventWriter
from ..jobfile import JobFile


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so cleanup and the failure report still run."""


def _on_sigterm(signum, frame):
    raise Terminated(f"terminated by signal {signum}")


def _heartbeat(events: EventWriter, interval_s: float, stop: threading.Event) -> None:
    while not stop.wait(interval_s):
        events.emit(HEARTBEAT)


def run_job(job_dir: Path) -> int:
    from ..jobtypes import get_jobtype
    from .context import RunContext

    job_dir = job_dir.resolve()
    events = EventWriter(job_dir)
    stop = threading.Event()
    try:
        events.started()
        jobfile = JobFile.read(job_dir)
        beat = threading.Thread(target=_heartbeat, args=(events, jobfile.heartbeat_interval_s, stop), daemon=True)
        beat.start()
        ctx = RunContext(jobfile, events)
        run = get_jobtype(jobfile.type).load_run()
        ctx.running()
        run(ctx)
        events.emit(COMPLETED)
        return 0
    except UserError as err:
        # a problem with the job's input: the message says it all, the traceback is for us
        events.emit(FAILED, message=str(err), traceback="")
        print(f"ERROR: {err}", file=sys.stderr)
        traceback.print_exc()
        return 1
    except (Exception, Terminated) as err:
        events.emit(FAILED, message=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        traceback.print_exc()
        return 1
    finally:
        stop.set()
        events.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryohpc-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--job-dir", required=True, type=Path, help="job directory holding job.json")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    return run_job(args.job_dir)


if __name__ == "__main__":
    sys.exit(main())
