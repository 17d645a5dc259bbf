"""Folder batches on Dask (``--scheduler``) against the plain local batch, whole commands timed side by side.

    python benchmarks/cluster.py [--count 400] [--runs 2]

A folder of photo-like 1024x768 JPEGs (benchmarks/batch.py's), ``cnnfilter convolve DIR -k sharpen -o OUT``: the
local batch with 1 and 2 worker processes (``-j``) and the Dask batch on a LocalCluster of 1 and 2 worker
processes (``--scheduler local:N``), each command run ``--runs`` times with its outputs deleted between runs; the
best wall time as images/s. Prints the scaling (local:2 / local:1) and the Dask path's overhead against the local
batch with as many processes (target: within 15 %), whole commands, so the cluster's start-up is counted. Needs
``pip install -e '.[dask]'``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from batch import make_photos  # noqa: E402
from folder import best_of, machine  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=400)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    machine()
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "photos", Path(tmp) / "out"
        src.mkdir()
        make_photos(src, args.count, "jpg")
        base = [sys.executable, "-m", "cnnfilter", "convolve", str(src), "-k", "sharpen", "-o", str(out), "-q"]
        rate = {}
        for label, extra in (("local batch -j 1", ["-j", "1"]), ("local batch -j 2", ["-j", "2"]),
                             ("dask --scheduler local:1", ["--scheduler", "local:1"]),
                             ("dask --scheduler local:2", ["--scheduler", "local:2"])):
            t = best_of([*base, *extra], out, args.runs)
            rate[label] = args.count / t
            print(f"  {label:28s} {t:7.2f} s  {rate[label]:6.1f} img/s")
    print(f"# {args.count} JPEGs 1024x768, 3x3 sharpen, JPEG out; {os.cpu_count()} cores; best of {args.runs}")
    print(f"  scaling local:2 / local:1                {rate['dask --scheduler local:2'] / rate['dask --scheduler local:1']:5.2f}")
    for n in (1, 2):
        over = rate[f"local batch -j {n}"] / rate[f"dask --scheduler local:{n}"] - 1
        print(f"  dask overhead, {n} worker(s) (time / local - 1)  {100 * over:+6.1f} %  "
              f"{'PASS' if over <= 0.15 else 'FAIL'} (<= 15 %)")


if __name__ == "__main__":
    main()
