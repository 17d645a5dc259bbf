"""An image on dask (cnnfilter.chunked) against the same filter in memory, in one run.

    python benchmarks/chunked.py [--size 8192] [--chunk 2048]

A float32 image of size x size that fits in memory, a Gaussian (sigma 3, 19x19 separable, reflect border) and a
3x3 max pooling at stride 2: the in-memory call, then the same call on the image as a dask array of chunk x chunk
blocks computed with dask's threaded scheduler (``--workers``, default 2), and the ratio (dask / in memory). Needs
``pip install -e '.[dask]'``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

# as the cnnfilter command does, before numpy and numba load: idle threads sleep, freed memory is reused
from cnnfilter import runtime  # noqa: E402

runtime.tune()

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench import best  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2, help="dask threads (each block uses numba's threads too)")
    args = ap.parse_args()
    import dask
    import dask.array as da

    import cnnfilter

    x = np.random.default_rng(0).random((args.size, args.size), dtype=np.float32)
    d = da.from_array(x, chunks=args.chunk)
    k = cnnfilter.get_kernel("gaussian", sigma=3)
    cases = {
        f"gaussian sigma 3 ({k.shape[0]}x{k.shape[1]}), reflect": (
            lambda a: cnnfilter.correlate2d(a, k, border="reflect")),
        "max pool 3x3 stride 2": lambda a: cnnfilter.pool2d(a, 3, stride=2),
    }
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; {args.size}x{args.size} float32, "
          f"chunks {args.chunk}; dask {dask.__version__}, threaded scheduler; best of 3")
    with dask.config.set(scheduler="threads", num_workers=args.workers):
        for name, fn in cases.items():
            mem = best(lambda: fn(x), 3)  # noqa: B023
            lazy = best(lambda: fn(d).compute(), 3)  # noqa: B023
            print(f"{name:40s} in memory {mem * 1e3:8.1f} ms   dask {lazy * 1e3:8.1f} ms   ratio {lazy / mem:5.2f}")


if __name__ == "__main__":
    main()
