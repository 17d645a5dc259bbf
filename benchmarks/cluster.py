"""Folder batches on Dask (``--scheduler``) against the plain local batch, whole commands timed side by side.

    python benchmarks/cluster.py [--count 400] [--runs 2]

Folders of photo-like 1024x768 JPEGs (benchmarks/batch.py's) of ``count`` and ``4 * count`` images, ``cnnfilter
convolve DIR -k sharpen -o OUT``: the local batch with 1 and 2 worker processes (``-j``) and the Dask batch on a
LocalCluster of 1 and 2 worker processes (``--scheduler local:N``), each command run ``--runs`` times with its
outputs deleted between runs, best wall time. From the two sizes: each command's cost per image (the slope) and
its fixed cost (start-up: the intercept). Prints images/s, the scaling local:2 / local:1, and the Dask path's
overhead against the local batch with as many processes: per image (target: within 15 %) and whole commands on
the larger folder, start-up included. Needs ``pip install -e '.[dask]'``.
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
    modes = {"local batch -j 1": ["-j", "1"], "local batch -j 2": ["-j", "2"],
             "dask --scheduler local:1": ["--scheduler", "local:1"],
             "dask --scheduler local:2": ["--scheduler", "local:2"]}
    sizes = (args.count, 4 * args.count)
    times: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            src, out = Path(tmp) / f"photos{n}", Path(tmp) / "out"
            src.mkdir()
            make_photos(src, n, "jpg")
            base = [sys.executable, "-m", "cnnfilter", "convolve", str(src), "-k", "sharpen", "-o", str(out), "-q"]
            for label, extra in modes.items():
                times[label, n] = t = best_of([*base, *extra], out, args.runs)
                print(f"  {n:5d} images  {label:28s} {t:7.2f} s  {n / t:6.1f} img/s")
    small, large = sizes
    slope = {m: (times[m, large] - times[m, small]) / (large - small) for m in modes}
    fixed = {m: times[m, small] - slope[m] * small for m in modes}
    print(f"# JPEGs 1024x768, 3x3 sharpen, JPEG out; {os.cpu_count()} cores; best of {args.runs}")
    for m in modes:
        print(f"  {m:28s} {1e3 * slope[m]:6.2f} ms per image, {fixed[m]:5.2f} s fixed")
    print(f"  scaling local:2 / local:1 (per image)    "
          f"{slope['dask --scheduler local:1'] / slope['dask --scheduler local:2']:5.2f}")
    for n in (1, 2):
        local, dask = f"local batch -j {n}", f"dask --scheduler local:{n}"
        per = slope[dask] / slope[local] - 1
        whole = times[dask, large] / times[local, large] - 1
        print(f"  dask overhead, {n} worker(s): per image {100 * per:+6.1f} % "
              f"{'PASS' if per <= 0.15 else 'FAIL'} (<= 15 %); whole command on {large} images {100 * whole:+6.1f} %")


if __name__ == "__main__":
    main()
