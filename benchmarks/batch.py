"""A folder of 100 photo-like 1024x768 RGB images, 3x3 sharpen, JPEG q90 and PNG: cnnfilter against OpenCV,
Pillow and ImageMagick's mogrify, in one run.

    python benchmarks/batch.py [--count 100] [--jobs 2]

Prints images/s and the total output size for each tool; OpenCV and Pillow run as plain loops in one process and
in ``--jobs`` processes; cnnfilter as its CLI (``-j``), so its start-up and compile-cache loading are counted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
SHARPEN = [0, -1, 0, -1, 5, -1, 0, -1, 0]


def make_photos(folder: Path, count: int, fmt: str) -> None:
    """Photo-like images: the bundled photographs at 1024x768, cropped and tinted differently each time."""
    rng = np.random.default_rng(0)
    bases = [Image.open(ROOT / "samples" / n).convert("RGB").resize((1280, 960)) for n in
             ("astronaut.png", "coffee.png", "camera.png")]
    for i in range(count):
        base = bases[i % len(bases)]
        x, y = int(rng.integers(0, 256)), int(rng.integers(0, 192))
        arr = np.asarray(base.crop((x, y, x + 1024, y + 768)), np.float32)
        arr = arr * rng.uniform(0.8, 1.2, 3) + rng.normal(0, 3, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
        if fmt == "jpg":
            img.save(folder / f"img{i:03d}.jpg", quality=90)
        else:
            img.save(folder / f"img{i:03d}.png", compress_level=1)


def _cv2_one(args):
    import cv2

    src, dst, fmt = args
    img = cv2.imread(src)
    out = cv2.filter2D(img, -1, np.array(SHARPEN, np.float32).reshape(3, 3))
    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    cv2.imwrite(dst, out, params)


def _pil_one(args):
    src, dst, fmt = args
    img = Image.open(src).filter(ImageFilter.Kernel((3, 3), SHARPEN, scale=1))
    img.save(dst, quality=90) if fmt == "jpg" else img.save(dst, compress_level=1)


def _loop(fn, files, out: Path, fmt: str, jobs: int) -> None:
    tasks = [(str(f), str(out / f.name), fmt) for f in files]
    if jobs == 1:
        for t in tasks:
            fn(t)
    else:
        with ProcessPoolExecutor(jobs) as pool:
            list(pool.map(fn, tasks, chunksize=4))


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def size_of(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnfilter-batch-"))
    try:
        for fmt in ("jpg", "png"):
            src = work / f"in-{fmt}"
            src.mkdir()
            make_photos(src, args.count, fmt)
            files = sorted(src.iterdir())
            print(f"# {args.count} images 1024x768 RGB, 3x3 sharpen, {fmt.upper()}"
                  f"{' q90' if fmt == 'jpg' else ' compression 1'}; images/s (total output size)")
            runs = {}
            for name, cmd in (("cnnfilter -j1", ["-j", "1"]), (f"cnnfilter -j{args.jobs}", ["-j", str(args.jobs)])):
                out = work / f"out-{fmt}-{name.replace(' ', '_')}"
                extra = ["-f", "jpeg", "--quality", "90"] if fmt == "jpg" else ["-f", "png", "--compress-level", "1"]
                t = timed(lambda: subprocess.run(  # noqa: B023
                    [sys.executable, "-m", "cnnfilter", "convolve", str(src), "-k", "sharpen", "--border", "edge",
                     "-o", str(out), "-q", *cmd, *extra], check=True))
                runs[name] = (t, out)
            try:
                import cv2  # noqa: F401

                for jobs in (1, args.jobs):
                    out = work / f"out-{fmt}-cv2-{jobs}"
                    out.mkdir()
                    runs[f"OpenCV x{jobs}"] = (timed(lambda: _loop(_cv2_one, files, out, fmt, jobs)), out)  # noqa: B023
            except ImportError:
                pass
            for jobs in (1, args.jobs):
                out = work / f"out-{fmt}-pil-{jobs}"
                out.mkdir()
                runs[f"Pillow x{jobs}"] = (timed(lambda: _loop(_pil_one, files, out, fmt, jobs)), out)  # noqa: B023
            mogrify = shutil.which("mogrify", path="/usr/bin")
            if mogrify:
                out = work / f"out-{fmt}-mogrify"
                out.mkdir()
                opts = ["-quality", "90"] if fmt == "jpg" else ["-define", "png:compression-level=1"]
                t = timed(lambda: subprocess.run(  # noqa: B023
                    [mogrify, "-path", str(out), "-morphology", "Convolve", "3x3: 0,-1,0 -1,5,-1 0,-1,0", *opts,
                     *map(str, files)], check=True))
                runs["mogrify"] = (t, out)
            for name, (t, out) in runs.items():
                print(f"  {name:<16} {args.count / t:7.1f} img/s  ({size_of(out) / 2**20:6.1f} MiB)", flush=True)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
