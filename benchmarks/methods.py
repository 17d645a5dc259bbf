"""Where the ``auto`` rule's thresholds come from: direct vs separable vs FFT by kernel size, one run.

    python benchmarks/methods.py [--size 2048]

Prints the best-of-5 time of each path for square dense and rank-1 kernels; ``auto`` sends dense kernels to the
FFT from the first size where it wins (filters.FFT_MIN_TAPS) and rank-1 kernels to the separable path above 5x5.
"""

import argparse
import time

import numpy as np

import cnnfilter


def best(fn, n=5):
    fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.size, args.size), dtype=np.float32)
    print(f"# {args.size}x{args.size} float32, ms (best of 5)")
    print(f"{'kernel':>7} {'direct':>9} {'fft':>9} {'separable':>10} {'auto':>9}")
    for k in (3, 5, 7, 9, 11, 13, 15, 19, 25, 31):
        dense = rng.normal(size=(k, k)).astype(np.float32)
        rank1 = np.outer(rng.normal(size=k), rng.normal(size=k)).astype(np.float32)
        d = best(lambda: cnnfilter.correlate2d(x, dense, method="direct"))  # noqa: B023
        f = best(lambda: cnnfilter.correlate2d(x, dense, method="fft"))  # noqa: B023
        s = best(lambda: cnnfilter.correlate2d(x, rank1, method="separable"))  # noqa: B023
        a = best(lambda: cnnfilter.correlate2d(x, dense))  # noqa: B023
        print(f"{k:>4}x{k:<2} {d:9.1f} {f:9.1f} {s:10.1f} {a:9.1f}", flush=True)


if __name__ == "__main__":
    main()
