#!/usr/bin/env python
"""Every file reader fuzzed longer than the test suite does: valid files cut, flipped,
spliced and zeroed at random, counted by outcome. "escaped" must stay 0: a reader may
accept a file or refuse it with cryohpc's own error, nothing else.

    python scripts/fuzz_readers.py --cases 2000 --seed 1
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_reader_fuzz import samples  # noqa: E402  (the same valid files the tests start from)

from cryohpc.compute.io_mrc import read_images, read_info, read_volume  # noqa: E402
from cryohpc.compute.io_star import read_particle_star  # noqa: E402
from cryohpc.dataset import Dataset  # noqa: E402
from cryohpc.errors import CryohpcError  # noqa: E402
from cryohpc.events import read_events  # noqa: E402
from cryohpc.jobfile import JobFile  # noqa: E402
from cryohpc.lanes.siteconfig import load_site_config  # noqa: E402


def mutate(rng: random.Random, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(max(1, len(data)))
        kind = rng.choice(["cut", "flip", "insert", "delete", "zero"])
        if kind == "cut":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= rng.randint(1, 255)
        elif kind == "insert":
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == "delete":
            del data[at:at + rng.randint(1, 64)]
        elif kind == "zero" and data:
            n = rng.randint(1, 16)
            data[at:at + n] = bytes(min(n, len(data) - at))
    return bytes(data)


READERS = {
    "cs (numpy)": ("cs", "f.cs", Dataset.load),
    "cs (CSDAT)": ("csdat", "f.cs", Dataset.load),
    "MRC volume": ("mrc", "v.mrc", lambda p: (read_info(p), read_volume(p))),
    "MRC stack": ("mrcs", "s.mrcs", lambda p: (read_info(p), read_images(p))),
    "STAR": ("star", "p.star", read_particle_star),
    "site config YAML": ("yaml", "lanes.yaml", load_site_config),
    "job.json": ("job.json", "job.json", lambda p: JobFile.read(p.parent)),
    "events.jsonl": ("events", "events.jsonl", lambda p: read_events(p.parent)),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000, help="mutated files per reader")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    escaped_any = False
    print(f"{'reader':18} {'cases':>6} {'accepted':>9} {'refused':>8} {'escaped':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (kind, name, read) in READERS.items():
            counts: Counter[str] = Counter()
            path = Path(tmp) / name
            for _ in range(args.cases):
                path.write_bytes(mutate(rng, samples()[kind]))
                try:
                    read(path)
                    counts["accepted"] += 1
                except CryohpcError:
                    counts["refused"] += 1
                except Exception:  # noqa: BLE001  (what this script exists to count)
                    counts["escaped"] += 1
                    if counts["escaped"] <= 3:
                        traceback.print_exc()
            escaped_any |= counts["escaped"] > 0
            print(f"{label:18} {args.cases:6d} {counts['accepted']:9d} {counts['refused']:8d} {counts['escaped']:8d}",
                  flush=True)
    return 1 if escaped_any else 0


if __name__ == "__main__":
    sys.exit(main())
