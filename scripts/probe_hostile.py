#!/usr/bin/env python
"""Bad input as a user or an attacker types it, class by class, through the command line
(in process), counted by outcome: refused (exit 2, one readable line, no traceback, the
database unchanged), accepted, or a traceback / a changed database on a refusal (must be 0).

    python scripts/probe_hostile.py --cases 40 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import sqlite3
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "plugins"))
os.environ.setdefault("CRYOHPC_PLUGINS", "cryohpc_testjobs")

from cryohpc.api import Api  # noqa: E402
from cryohpc.cli import main  # noqa: E402

BITS = ["\n", "\r", "\x00", "\x1b[2J", "\u2028", "\x85", "\t", "$(touch /tmp/pwned)", "`id`", "; touch x", "'", '"',
        "\\", "#SBATCH --wrap=x", "&&", "|", "*", "{{ 7*7 }}", "$HOME", "~", " ", "é", "x", "gpu", "-1", "1e400", "nan"]


def hostile(rng: random.Random) -> str:
    return "".join(rng.choice(BITS) for _ in range(rng.randint(1, 4)))


def snapshot(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def readable(err: str) -> bool:
    """One error line (ours: 'error: ...'; click's usage errors: 'Error: ...' after the usage)."""
    return sum(line.lower().startswith("error:") for line in err.splitlines()) == 1


def run(home: Path, *args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["--home", str(home), *args])
        except BaseException as exc:  # noqa: BLE001  (what this probe exists to count)
            return -1, f"{type(exc).__name__}: {exc}"
    return code, err.getvalue()


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        api = Api.init(home, Path(tmp) / "projects")
        project = api.create_project("probe")
        (api.instance.paths.site_configs / "slurm.yaml").write_text(
            "lanes:\n  - name: slurm\n    type: cluster\n    kind: slurm\n    script_template: slurm.sh.j2\n"
            "    custom_vars:\n      - {name: partition, type: str, default: debug}\n"
            "      - {name: nice, type: int, default: 0}\n")
        job = project.create_job("test_sleep")
        classes = {
            "custom variable value (job queue --var)":
                lambda v: ("job", "queue", project.uid, job.uid, "--lane", "slurm", "--var", f"partition={v}"),
            "custom int variable (--var nice=)":
                lambda v: ("job", "queue", project.uid, job.uid, "--lane", "slurm", "--var", f"nice={v}"),
            "project custom variable (project set-vars)": lambda v: ("project", "set-vars", project.uid, f"partition={v}"),
            "job title (job create --title)": lambda v: ("job", "create", project.uid, "test_sleep", "--title", v),
            "project title (project create --title)": lambda v: ("project", "create", "--title", v),
            "project directory (project create --dir)":
                lambda v: ("project", "create", "--title", "t", "--dir",
                           str(Path(tmp) / "dirs" / v.replace("/", "_").replace("\0", "_"))),
            "float param (-p seconds=)": lambda v: ("job", "create", project.uid, "test_sleep", "-p", f"seconds={v}"),
            "int param (-p ranks=)": lambda v: ("job", "create", project.uid, "test_sleep", "-p", f"ranks={v}"),
            "str param (-p particle_meta_path=)":
                lambda v: ("job", "create", project.uid, "import_particles", "-p", f"particle_meta_path={v}"),
            "priority (job queue --priority)": lambda v: ("job", "queue", project.uid, job.uid, "--priority", v),
        }
        print(f"{'class of input':44} {'cases':>5} {'refused':>8} {'accepted':>9} {'bad':>4}")
        bad_total = 0
        for label, make in classes.items():
            counts: Counter[str] = Counter()
            for _ in range(args.cases):
                value = hostile(rng) if "priority" not in label else rng.choice(
                    ["1e30", str(10**30), "-" + str(10**19), "x", "5", hostile(rng)])
                before = snapshot(api.instance.paths.db)
                code, err = run(home, *make(value))
                if code == 0:
                    counts["accepted"] += 1
                    with api.store.write() as tx:  # undo a successful queue so the next case can try
                        j = tx.get_job(project.uid, job.uid)
                        if j.status.value == "queued":
                            j.status = type(j.status)("building")
                            tx.put_job(j)
                elif code == 2 and "Traceback" not in err and readable(err) and snapshot(api.instance.paths.db) == before:
                    counts["refused"] += 1
                else:
                    counts["bad"] += 1
                    print(f"  BAD ({code}) for {value!r}: {err.strip()[:300]}")
            bad_total += counts["bad"]
            print(f"{label:44} {args.cases:5d} {counts['refused']:8d} {counts['accepted']:9d} {counts['bad']:4d}",
                  flush=True)
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main_())
