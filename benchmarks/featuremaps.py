"""featuremaps as a user runs it, whole commands in fresh processes (start-up, numba's cache, reading, drawing,
writing included), against the targets of issue 14:

- the bundled digits model on a folder of 100 28x28 digit images: images/s (target >= 20), and where the time of
  an in-process run goes (forward pass, drawing, PNG encoding);
- the kernel bank on a 512x512 photo (samples/camera.png): seconds (target <= 2);
- the kernel bank on a 24-megapixel photo (6000x4000 JPEG made from samples/astronaut.png): seconds and peak
  memory, VmHWM of the command's process (target <= 10 s and 2 GB).

    python benchmarks/featuremaps.py [--count 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [sys.executable, "-m", "cnnfilter"]


def _run(args: list[str]) -> tuple[float, float]:
    """Wall seconds and the peak resident memory (MiB) of one command, read from /proc while it runs."""
    t = time.perf_counter()
    proc = subprocess.Popen([*COMMAND, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {proc.stderr.read().decode()}")
    return wall, peak / 1024


def _times(label: str, args_for, runs: int) -> list[float]:
    walls, peaks = [], []
    for i in range(runs):
        w, p = _run(args_for(i))
        walls.append(w)
        peaks.append(p)
    print(f"  {label:44s} median {statistics.median(walls):6.2f} s  (runs {', '.join(f'{w:.2f}' for w in walls)});"
          f" peak {max(peaks):,.0f} MiB")
    return walls


def _profile(src: Path, out: Path, count: int) -> None:
    from click.testing import CliRunner

    from cnnfilter.cli import cli

    prof = cProfile.Profile()
    t = time.perf_counter()
    prof.enable()
    res = CliRunner().invoke(cli, ["featuremaps", str(src), "-m", "digits", "-o", str(out), "-q"])
    prof.disable()
    wall = time.perf_counter() - t
    assert res.exit_code == 0, res.output
    stats = pstats.Stats(prof)
    parts = {"forward pass": ("arch.py", "activations"), "montages and bar charts": ("pictures.py", "montage_figure"),
             "PNG encoding + atomic writes": ("maps.py", "_png"), "reading + resizing": ("maps.py", "prepare_input")}
    print(f"  in one process (warm): {count / wall:.1f} images/s ({wall:.2f} s), of which")
    for label, (fname, func) in parts.items():
        cum = sum(v[3] for k, v in stats.stats.items() if k[0].endswith(fname) and k[2] == func)
        print(f"    {label:30s} {cum:6.2f} s  {100 * cum / wall:4.0f} %")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = tmp / "digits"
        src.mkdir()
        files = sorted((ROOT / "samples" / "digits").glob("*/*.png"))[: args.count]
        for f in files:
            Image.open(f).resize((28, 28), Image.Resampling.BILINEAR).save(src / f.name)
        big = tmp / "big24.jpg"
        Image.open(ROOT / "samples" / "astronaut.png").convert("RGB").resize((6000, 4000), Image.Resampling.BICUBIC) \
            .save(big, quality=90)
        camera = ROOT / "samples" / "camera.png"
        _run(["featuremaps", str(camera), "-o", str(tmp / "warm"), "-q"])  # numba's cache, the page cache
        _run(["featuremaps", str(files[0]), "-m", "digits", "-o", str(tmp / "warm2"), "-q"])
        print(f"# featuremaps, whole commands ({args.runs} runs each)")
        walls = _times(f"digits model, folder of {len(files)} 28x28 images",
                       lambda i: ["featuremaps", str(src), "-m", "digits", "-o", str(tmp / f"d{i}"), "-q"], args.runs)
        print(f"    = {len(files) / statistics.median(walls):.1f} images/s (target >= 20)")
        _times("kernel bank, 512x512 photo (camera.png)",
               lambda i: ["featuremaps", str(camera), "-o", str(tmp / f"c{i}"), "-q"], args.runs)
        print("    (target <= 2 s)")
        _times("kernel bank, 24-megapixel JPEG (6000x4000)",
               lambda i: ["featuremaps", str(big), "-o", str(tmp / f"b{i}"), "-q"], args.runs)
        print("    (target <= 10 s and 2 GB)")
        _profile(src, tmp / "prof", len(files))


if __name__ == "__main__":
    main()
