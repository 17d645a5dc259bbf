"""An image on dask (cnnfilter.chunked), and a TIFF streamed in tiles (cnnfilter.stream), against the same filter
in memory, in one run.

    python benchmarks/chunked.py [--size 8192] [--chunk 2048] [--tiff 20000] [--tile 1024]

1. A float32 image of size x size that fits in memory, a Gaussian (sigma 3, 19x19 separable, reflect border) and a
   3x3 max pooling at stride 2: the in-memory call, then the same call on the image as a dask array of chunk x
   chunk blocks computed with dask's threaded scheduler (``--workers``, default 2), and the ratio (dask / memory).
2. A synthetic 8-bit greyscale tiled BigTIFF of tiff x tiff pixels (``--tiff 0`` skips it), Gaussian sigma 2:
   read, filtered and written in memory (tifffile.imread, cnnfilter.ops.apply, tifffile.imwrite) against
   ``cnnfilter convolve big.tif -k gaussian --sigma 2 --tile N``, each a fresh process; wall time and peak
   resident memory of each, and the ratio (streamed / memory).

Needs ``pip install -e '.[dask]'``.
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
    ap.add_argument("--tiff", type=int, default=20000, help="edge of the streamed TIFF (0: skip)")
    ap.add_argument("--tile", type=int, default=1024, help="the streamed TIFF's --tile")
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
    if args.tiff:
        streamed_tiff(args.tiff, args.tile)


_PEAK = """
import sys, time
start = time.perf_counter()
if sys.argv[1] == "memory":
    from cnnfilter import runtime
    runtime.tune()
    import tifffile
    from cnnfilter import io, ops
    from cnnfilter.kernels import get_kernel
    img = tifffile.imread(sys.argv[2])
    res = ops.apply(ops.FilterSpec((get_kernel("gaussian", sigma=2),), border="reflect"), io.Picture(img, None, 8, {}))
    tifffile.imwrite(sys.argv[3], io.to_depth(res.pixels, 8), tile=(1024, 1024), bigtiff=True)
else:
    from cnnfilter.cli import main
    sys.argv = ["cnnfilter", "convolve", sys.argv[2], "-k", "gaussian", "--sigma", "2", "--tile", sys.argv[1],
                "-o", sys.argv[3], "-q", "--overwrite"]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
# the process's own high-water mark (ru_maxrss would report this benchmark's, inherited at fork, when larger)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(time.perf_counter() - start, int(hwm.split()[1]) * 1024)
"""


def streamed_tiff(n: int, tile: int) -> None:
    """A synthetic n x n 8-bit tiled TIFF, Gaussian sigma 2 in memory and streamed, each in a fresh process."""
    import subprocess
    import tempfile

    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "big.tif"
        t = 256
        y, x = np.mgrid[0:t, 0:t]
        tiles = ((((y + i) * 7 + (x + j) * 13) ^ ((y + i) * (x + j) >> 5)).astype(np.uint8)
                 for i in range(0, n, t) for j in range(0, n, t))
        tifffile.imwrite(src, tiles, shape=(n, n), dtype=np.uint8, tile=(t, t), bigtiff=True)
        runs = {}
        for how in ("memory", str(tile)):
            out = subprocess.run([sys.executable, "-c", _PEAK, how, str(src), str(Path(tmp) / f"{how}.tif")],
                                 capture_output=True, text=True, check=True).stdout.split()
            runs[how] = (float(out[0]), int(out[1]))
        same = np.array_equal(tifffile.imread(Path(tmp) / "memory.tif"), tifffile.imread(Path(tmp) / f"{tile}.tif"))
    (tm, pm), (ts, ps) = runs["memory"], runs[str(tile)]
    print(f"# {n}x{n} 8-bit TIFF ({n * n / 2**20:.0f} MiB of samples), Gaussian sigma 2, reflect; fresh processes")
    print(f"{'in memory (imread, apply, imwrite)':40s} {tm:6.2f} s  peak {pm / 2**20:6.0f} MiB")
    print(f"{f'streamed, --tile {tile}':40s} {ts:6.2f} s  peak {ps / 2**20:6.0f} MiB   ratio {ts / tm:5.2f}  "
          f"identical: {same}")


if __name__ == "__main__":
    main()
