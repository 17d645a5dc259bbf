"""cnnfilter side by side with OpenCV, scipy, PyTorch CPU and Pillow, in one run, with ratios and floors.

    pip install -e '.[bench]'
    python benchmarks/bench.py            # all cases, 4096x4096 float32
    python benchmarks/bench.py --quick    # 1024x1024, fewer repeats

Times are the best of n runs after a warm-up (which also compiles cnnfilter's kernels). A ratio is cnnfilter's time
over the peer's: below 1 means cnnfilter is faster. Peers that are not installed are skipped. Floors: a parallel
copy of the plane (into a fresh array for the 'fresh' cases: allocation and page faults included, as for any
function returning a new array), and for pooling a pass that reads the plane and writes a quarter of it.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import cnnfilter


def _floors():
    """Memory-bandwidth floors on every thread: a plain copy, and a 2x2 'pick' that moves exactly the bytes 2x2
    pooling must move (touches every cache line of the input once, writes a quarter) with no arithmetic."""
    from numba import njit, prange

    @njit(parallel=True, cache=True)
    def copy(src, dst):
        for i in prange(dst.shape[0]):
            a = src[i]
            o = dst[i]
            for j in range(o.shape[0]):
                o[j] = a[j]

    @njit(parallel=True, cache=True)
    def pick(src, dst):
        for i in prange(dst.shape[0]):
            a = src[2 * i]
            b = src[2 * i + 1]
            o = dst[i]
            for j in range(o.shape[0]):
                o[j] = a[2 * j] + b[2 * j + 1]

    return copy, pick


def best(fn, repeat: int) -> float:
    fn()  # warm-up: compiles, fills caches
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _try_import(name):
    try:
        return __import__(name)
    except ImportError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1024x1024 planes and fewer repeats")
    ap.add_argument("--only", help="run only cases whose name contains this")
    args = ap.parse_args()
    n = 1024 if args.quick else 4096
    rep = 3 if args.quick else 7
    cv2 = _try_import("cv2")
    torch = _try_import("torch")
    ndimage = _try_import("scipy.ndimage") and __import__("scipy.ndimage").ndimage
    signal = _try_import("scipy.signal") and __import__("scipy.signal").signal
    sfft = _try_import("scipy.fft") and __import__("scipy.fft").fft
    from PIL import Image, ImageFilter

    from numba import get_num_threads

    rng = np.random.default_rng(0)
    x = rng.random((n, n), dtype=np.float32)
    rgb = rng.integers(0, 256, (n, n, 3), dtype=np.uint8)
    print(f"# {n}x{n} float32 plane; cnnfilter {cnnfilter.__version__}, numba threads {get_num_threads()}, "
          f"cpus {os.cpu_count()}; best of {rep}")
    if cv2 is not None:
        print(f"# OpenCV {cv2.__version__} threads {cv2.getNumThreads()}", end="")
    if torch is not None:
        print(f"; torch {torch.__version__} threads {torch.get_num_threads()}", end="")
    print()

    rows = []

    def case(name, ours, peers, floor=None):
        if args.only and args.only not in name:
            return
        t_ours = best(ours, rep)
        line = [f"{name:<28} cnnfilter {t_ours * 1e3:8.2f} ms"]
        for peer, fn in peers.items():
            if fn is None:
                continue
            try:
                t = best(fn, rep if peer not in ("scipy.ndimage", "torch", "Pillow") else max(1, rep // 3))
            except Exception as exc:  # a peer that cannot do this case
                line.append(f"| {peer}: n/a ({type(exc).__name__})")
                continue
            line.append(f"| {peer} {t * 1e3:8.2f} ms  ratio {t_ours / t:5.2f}")
        if floor is not None:
            t = best(floor, rep)
            line.append(f"| floor {t * 1e3:6.2f} ms  ratio {t_ours / t:5.2f}")
        print("  ".join(line), flush=True)
        rows.append(line)

    dst = np.empty_like(x)
    copy, pick = _floors()
    copy_floor = lambda: copy(x, dst)  # noqa: E731 - read 64 MiB, write 64 MiB
    small = np.empty((n // 2, n // 2), np.float32)
    pool_floor = lambda: pick(x, small)  # noqa: E731 - read 64 MiB, write 16 MiB

    def torch_conv(img, k):
        if torch is None:
            return None
        t_img = torch.from_numpy(img)[None, None]
        t_k = torch.from_numpy(np.ascontiguousarray(k, np.float32))[None, None]
        pad = (k.shape[0] // 2, k.shape[1] // 2)
        return lambda: torch.nn.functional.conv2d(t_img, t_k, padding=pad)

    fresh_floor = lambda: copy(x, np.empty_like(x))  # noqa: E731 - the same copy into a freshly allocated output
    for size in (3, 5):
        k = rng.normal(size=(size, size)).astype(np.float32)
        case(f"{size}x{size} dense", lambda k=k: cnnfilter.correlate2d(x, k), {
            "cv2.filter2D": cv2 and (lambda k=k: cv2.filter2D(x, -1, k, borderType=cv2.BORDER_CONSTANT)),
            "scipy.ndimage": ndimage and (lambda k=k: ndimage.correlate(x, k, mode="constant")),
            "torch": torch_conv(x, k),
        }, floor=fresh_floor)
    k3 = rng.normal(size=(3, 3)).astype(np.float32)
    out = np.empty_like(x)
    case("3x3 dense, out=", lambda: cnnfilter.correlate2d(x, k3, out=out), {
        "cv2.filter2D dst=": cv2 and (lambda: cv2.filter2D(x, -1, k3, dst=dst, borderType=cv2.BORDER_CONSTANT)),
    }, floor=copy_floor)

    k31 = rng.normal(size=(31, 31)).astype(np.float32)

    def fftconvolve():
        with sfft.set_workers(os.cpu_count()):
            return signal.fftconvolve(x, k31[::-1, ::-1], mode="same")

    case("31x31 dense", lambda: cnnfilter.correlate2d(x, k31), {
        "cv2.filter2D": cv2 and (lambda: cv2.filter2D(x, -1, k31, borderType=cv2.BORDER_CONSTANT)),
        "scipy.signal.fftconvolve": signal and fftconvolve,
    })

    g = cnnfilter.get_kernel("gaussian", sigma=5)
    case("gaussian sigma=5 (31 taps)", lambda: cnnfilter.correlate2d(x, g), {
        "cv2.GaussianBlur": cv2 and (lambda: cv2.GaussianBlur(x, (31, 31), 5, borderType=cv2.BORDER_CONSTANT)),
        "scipy.ndimage": ndimage and (lambda: ndimage.gaussian_filter(x, 5, mode="constant", truncate=3.0)),
    })

    pil_rgb = Image.fromarray(rgb)
    case("RGB uint8 3x3", lambda: cnnfilter.correlate2d(rgb, k3), {
        "cv2.filter2D": cv2 and (lambda: cv2.filter2D(rgb, -1, k3, borderType=cv2.BORDER_CONSTANT)),
        "Pillow": lambda: pil_rgb.filter(ImageFilter.Kernel((3, 3), k3.ravel().tolist(), scale=1)),
    })

    t_x = torch.from_numpy(x)[None, None] if torch is not None else None
    case("2x2 max pool", lambda: cnnfilter.pool2d(x, 2), {
        "torch.max_pool2d": torch and (lambda: torch.nn.functional.max_pool2d(t_x, 2)),
    }, floor=pool_floor)
    case("2x2 avg pool", lambda: cnnfilter.pool2d(x, 2, mode="avg"), {
        "cv2.resize AREA": cv2 and (lambda: cv2.resize(x, (n // 2, n // 2), interpolation=cv2.INTER_AREA)),
        "torch.avg_pool2d": torch and (lambda: torch.nn.functional.avg_pool2d(t_x, 2)),
    }, floor=pool_floor)

    xb = rng.normal(size=(64, 8, 28, 28)).astype(np.float32)
    wb = rng.normal(size=(16, 8, 3, 3)).astype(np.float32)
    bb = rng.normal(size=16).astype(np.float32)
    tx, tw, tb = (torch.from_numpy(a) for a in (xb, wb, bb)) if torch is not None else (None, None, None)
    case("conv2d N64 8->16 28x28 3x3", lambda: cnnfilter.conv2d(xb, wb, bb, padding=1), {
        "torch conv2d": torch and (lambda: torch.nn.functional.conv2d(tx, tw, tb, padding=1)),
    })


if __name__ == "__main__":
    main()
