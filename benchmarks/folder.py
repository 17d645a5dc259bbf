"""A folder of photo-like 1024x768 JPEGs (and a quarter as many PNGs), 3x3 sharpen: cnnfilter's CLI with its default
options against an OpenCV script, ImageMagick's mogrify and the JPEG codec floor, whole commands timed side by side.

    python benchmarks/folder.py [--count 200] [--jobs N] [--keep]

Each tool runs as a subprocess 3 times (outputs deleted between runs, so each run really writes); the best time is
reported as images/s, with the ratio cnnfilter img/s / tool img/s and the total output MiB. Printed first: the CPU,
core count and library versions; then the two tables, the target checks with PASS/FAIL (cnnfilter/OpenCV >= 1.5,
cnnfilter/mogrify >= 3, cnnfilter/floor >= 0.75, output size within 10 % of OpenCV's; PNG cnnfilter/OpenCV >= 1.0),
and a per-image cost breakdown (ms) of a batch worker's work on 40 of the JPEGs: Pillow's decode and encode,
cnnfilter's filter (rounding in the same pass), what cnnfilter adds around the codec, and the whole command's cost
per image and core beyond that. A tool that fails is reported and its checks print SKIP.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from batch import make_photos  # noqa: E402

SHARPEN = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
MOGRIFY = "/usr/bin/mogrify"
CONVERT = "/usr/bin/convert"

OPENCV_SCRIPT = """
import sys
from pathlib import Path
import cv2, numpy as np
src, dst, fmt = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
kernel = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
params = [cv2.IMWRITE_JPEG_QUALITY, 90] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
for f in sorted(src.iterdir()):
    img = cv2.imread(str(f))
    out = cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)
    cv2.imwrite(str(dst / f.name), out, params)
"""

FLOOR_SCRIPT = """
import multiprocessing as mp, sys
from pathlib import Path
from PIL import Image, JpegImagePlugin
src, dst, jobs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

def work(files):
    for f in files:
        im = Image.open(f)
        im.load()
        im.save(dst / f.name, "JPEG", qtables=im.quantization, subsampling=JpegImagePlugin.get_sampling(im))

if __name__ == "__main__":
    files = sorted(src.iterdir())
    size = max(1, min(8, -(-len(files) // (jobs * 4))))
    chunks = [files[i:i + size] for i in range(0, len(files), size)]
    with mp.get_context("fork").Pool(jobs) as pool:
        list(pool.imap_unordered(work, chunks))
"""


def best_of(cmd: list[str], out: Path, runs: int = 3) -> float:
    """Best wall time of ``runs`` runs of ``cmd``, ``out`` emptied (re-created) before each."""
    best = float("inf")
    for _ in range(runs):
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        t = time.perf_counter()
        subprocess.run(cmd, check=True)
        best = min(best, time.perf_counter() - t)
    return best


def mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def check(label: str, value: float | None, ok) -> None:
    """Print ``label``, ``value`` and PASS/FAIL from ``ok(value)``; SKIP when a tool did not run."""
    if value is None:
        print(f"  {label:<48} {'-':>7}  SKIP")
    else:
        print(f"  {label:<48} {value:7.3f}  {'PASS' if ok(value) else 'FAIL'}")


def machine() -> None:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), None)
    if cpu is None:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    import PIL

    try:
        import cv2
        cv = cv2.__version__
    except ImportError:
        cv = "not installed"
    im = "ImageMagick not installed"
    if os.path.exists(CONVERT):
        im = subprocess.run([CONVERT, "-version"], capture_output=True, text=True, check=False).stdout.split("\n")[0]
    print(f"# CPU: {cpu}, {os.cpu_count()} cores")
    print(f"# Pillow {PIL.__version__}, OpenCV {cv}, numpy {np.__version__}, {im}")


def breakdown(files: list[Path], tmp: Path, per_image: float | None, jobs: int) -> None:
    """ms per image of a batch worker's work, in this process as a worker runs it (the numpy engine, freed
    memory kept): Pillow's decode and encode, cnnfilter's filter (rounding in the same pass), and what cnnfilter
    adds around the codec when reading and writing; then what the whole command cost per image and core beyond
    that (start-up, planning, workers, messages)."""
    try:
        from PIL import Image

        from cnnfilter import config, runtime
        from cnnfilter.io import read_picture, write_picture
        from cnnfilter.kernels import resolve_kernel
        from cnnfilter.ops import FilterSpec, apply

        runtime.tune()
        config.ENGINE = "auto"
        spec = FilterSpec((resolve_kernel("sharpen")[1],), border="reflect")
        write_picture(apply(spec, read_picture(files[0])), tmp / "warm.jpg")
        t = dict.fromkeys(("decode", "read", "filter", "encode", "write"), 0.0)
        for f in files:
            t0 = time.perf_counter()
            im = Image.open(f)
            im.load()
            t1 = time.perf_counter()
            im.save(tmp / ("pil-" + f.name), "JPEG", qtables=im.quantization, subsampling=2)
            t2 = time.perf_counter()
            pic = read_picture(f)
            t3 = time.perf_counter()
            result = apply(spec, pic)
            t4 = time.perf_counter()
            write_picture(result, tmp / f.name)
            t5 = time.perf_counter()
            for k, v in (("decode", t1 - t0), ("encode", t2 - t1), ("read", t3 - t2), ("filter", t4 - t3),
                         ("write", t5 - t4)):
                t[k] += v
        n = len(files) / 1e3
        ms = {k: v / n for k, v in t.items()}
        rows = [("decode (Pillow)", ms["decode"]), ("filter + round (cnnfilter, one pass)", ms["filter"]),
                ("encode (Pillow, the input's tables)", ms["encode"]),
                ("reading around the codec (file, checks, EXIF)", ms["read"] - ms["decode"]),
                ("writing around the codec (temporary, rename)", ms["write"] - ms["encode"])]
        total = ms["read"] + ms["filter"] + ms["write"]
        print(f"# per-image cost of a worker, {len(files)} JPEGs, one process (ms/image)")
        for label, v in rows:
            print(f"  {label:<46} {v:7.2f}")
        print(f"  {'total in a worker':<46} {total:7.2f}")
        if per_image:
            whole = per_image * jobs * 1e3
            print(f"  {'whole command, per image and core':<46} {whole:7.2f}  (the rest, {whole - total:.2f}: "
                  "start-up, planning, workers, messages)")
    except Exception as exc:  # noqa: BLE001 - report, don't crash the benchmark
        print(f"# per-image breakdown failed: {type(exc).__name__}: {exc}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cnnfilter-folder-"))
    try:
        machine()
        (work / "opencv.py").write_text(OPENCV_SCRIPT)
        (work / "floor.py").write_text(FLOOR_SCRIPT)
        cli = [sys.executable, "-m", "cnnfilter", "convolve"]
        sizes = {"jpg": args.count, "png": max(1, args.count // 4)}
        for fmt, count in sizes.items():
            src = work / f"in-{fmt}"
            src.mkdir()
            make_photos(src, count, fmt)
        ips: dict[str, float] = {}
        size: dict[str, float] = {}

        def bench(fmt: str, name: str, cmd: list[str]) -> None:
            out = work / f"out-{fmt}-{name.split()[0]}"
            try:
                ips[f"{fmt} {name}"] = sizes[fmt] / best_of(cmd, out)
                size[f"{fmt} {name}"] = mib(out)
            except subprocess.CalledProcessError as exc:
                print(f"  {name} failed (exit {exc.returncode}); its checks are skipped")

        def ratio(fmt: str, tool: str, of=ips) -> float | None:
            a, b = of.get(f"{fmt} cnnfilter"), of.get(f"{fmt} {tool}")
            return None if a is None or b is None else a / b

        src = work / "in-jpg"
        bench("jpg", "cnnfilter", [*cli, str(src), "-k", "sharpen", "-o", str(work / "out-jpg-cnnfilter"), "-q"])
        bench("jpg", "opencv x1", [sys.executable, str(work / "opencv.py"), str(src), str(work / "out-jpg-opencv"),
                                   "jpg"])
        if os.path.exists(MOGRIFY):
            bench("jpg", "mogrify", [MOGRIFY, "-path", str(work / "out-jpg-mogrify"), "-morphology", "Convolve",
                                     "3x3: 0,-1,0 -1,5,-1 0,-1,0", "-quality", "90",
                                     *map(str, sorted(src.glob("*.jpg")))])
        floor = f"floor x{args.jobs}"
        bench("jpg", floor, [sys.executable, str(work / "floor.py"), str(src), str(work / "out-jpg-floor"),
                             str(args.jobs)])
        src = work / "in-png"
        bench("png", "cnnfilter", [*cli, str(src), "-k", "sharpen", "-o", str(work / "out-png-cnnfilter"), "-q"])
        bench("png", "opencv x1", [sys.executable, str(work / "opencv.py"), str(src), str(work / "out-png-opencv"),
                                   "png"])
        for fmt, what in (("jpg", "JPEGs 1024x768 RGB q90"), ("png", "PNGs 1024x768 RGB compression 1")):
            print(f"# {sizes[fmt]} {what}, 3x3 sharpen; best of 3; ratio = cnnfilter img/s / tool img/s")
            for key in (k for k in ips if k.startswith(fmt)):
                r = ratio(fmt, key[4:])
                print(f"  {key[4:]:<24} {ips[key]:8.1f} img/s  ratio {'-' if r is None else f'{r:.2f}':>6}"
                      f"  {size[key]:7.1f} MiB")
        print("# targets")
        check("JPEG cnnfilter / OpenCV script >= 1.5", ratio("jpg", "opencv x1"), lambda r: r >= 1.5)
        check("JPEG cnnfilter / mogrify >= 3", ratio("jpg", "mogrify"), lambda r: r >= 3)
        check("JPEG cnnfilter / floor >= 0.75", ratio("jpg", floor), lambda r: r >= 0.75)
        dev = ratio("jpg", "opencv x1", size)
        check("JPEG |cnnfilter size / OpenCV size - 1| <= 0.10", None if dev is None else abs(dev - 1),
              lambda d: d <= 0.10)
        check("PNG cnnfilter / OpenCV script >= 1.0", ratio("png", "opencv x1"), lambda r: r >= 1.0)

        tmp = work / "breakdown"
        tmp.mkdir()
        rate = ips.get("jpg cnnfilter")
        breakdown(sorted((work / "in-jpg").iterdir())[:40], tmp, 1 / rate if rate else None, args.jobs)
    finally:
        if args.keep:
            print(f"# work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
