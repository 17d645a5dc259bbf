"""One 512x512 RGB PNG, one command at a time: what a single cnnfilter call costs next to ImageMagick's convert,
and what ``cnnfilter --help`` costs next to importing its dependencies.

    python benchmarks/oneshot.py

Each command runs once first (warm page and compile caches), then with hyperfine (``-N --warmup 2 --runs 10``) when
it is installed, else 10 runs timed with time.perf_counter. Prints a table of mean and best ms per command, the ratio
of each cnnfilter kernel to ``convert -morphology Convolve Laplacian:0`` (target <= 2) and of ``cnnfilter --help``
to ``python -c "import numpy, PIL.Image, click"`` (target <= 1.2), with PASS/FAIL.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CONVERT = "/usr/bin/convert"
KERNELS = ("laplacian", "edge", "sharpen", "blur", "gaussian")
RUNS = 10


def make_image(path: Path) -> None:
    """samples/astronaut.png (else camera.png), centre-cropped square and resized to 512x512 RGB."""
    name = "astronaut.png" if (ROOT / "samples" / "astronaut.png").exists() else "camera.png"
    img = Image.open(ROOT / "samples" / name).convert("RGB")
    side = min(img.size)
    left, top = (img.width - side) // 2, (img.height - side) // 2
    img.crop((left, top, left + side, top + side)).resize((512, 512), Image.Resampling.LANCZOS).save(path)


def commands(img: Path, out: Path) -> dict[str, list[str]]:
    cli = str(Path(sys.executable).parent / "cnnfilter")
    cmds = {f"cnnfilter {k}": [cli, "convolve", str(img), "-k", k, "-o", str(out / f"cnn-{k}.png"), "--overwrite",
                               "-q"] for k in KERNELS}
    cmds["cnnfilter pool"] = [cli, "pool", str(img), "-o", str(out / "cnn-pool.png"), "--overwrite", "-q"]
    if os.path.exists(CONVERT):
        cmds["convert Laplacian:0"] = [CONVERT, str(img), "-morphology", "Convolve", "Laplacian:0",
                                       str(out / "im-laplacian.png")]
        cmds["convert -blur 0x1"] = [CONVERT, str(img), "-blur", "0x1", str(out / "im-blur.png")]
        cmds["convert -gaussian-blur 0x1"] = [CONVERT, str(img), "-gaussian-blur", "0x1", str(out / "im-gauss.png")]
    cmds["cnnfilter --help"] = [cli, "--help"]
    cmds["python import numpy,PIL,click"] = [sys.executable, "-c", "import numpy, PIL.Image, click"]
    return cmds


def time_one(hyperfine: str | None, cmd: list[str], report: Path) -> tuple[float, float]:
    """(mean, best) ms of ``cmd``: hyperfine when given, else a perf_counter loop. Raises CalledProcessError."""
    if hyperfine:
        subprocess.run([hyperfine, "-N", "--warmup", "2", "--runs", str(RUNS), "--export-json", str(report),
                        "--style", "none", shlex.join(cmd)], check=True, capture_output=True)
        result = json.loads(report.read_text())["results"][0]
        return result["mean"] * 1e3, result["min"] * 1e3
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append((time.perf_counter() - t) * 1e3)
    return sum(times) / len(times), min(times)


def verdict(ratio: float, limit: float) -> str:
    return f"{ratio:5.2f} (<= {limit}) {'PASS' if ratio <= limit else 'FAIL'}"


def main() -> None:
    # as installed by pip: bytecode compiled once (this environment may set PYTHONDONTWRITEBYTECODE, which would
    # make every run compile cnnfilter's sources again)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[1] / "cnnfilter")],
                   check=True)
    work = Path(tempfile.mkdtemp(prefix="cnnfilter-oneshot-"))
    try:
        img = work / "in.png"
        make_image(img)
        cmds = commands(img, work)
        failed = []
        for name, cmd in list(cmds.items()):  # warm caches; a command that fails is reported and left out
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                failed.append(name)
                last = (done.stderr.strip().splitlines() or [""])[-1]
                print(f"# {name} failed (exit {done.returncode}): {last[:200]}")
                del cmds[name]
        hyperfine = shutil.which("hyperfine")
        how = f"hyperfine -N --warmup 2 --runs {RUNS}" if hyperfine else f"perf_counter, {RUNS} runs"
        stats = {}
        for name, cmd in cmds.items():  # one hyperfine per command, so one failing command loses only its own row
            try:
                stats[name] = time_one(hyperfine, cmd, work / "hyperfine.json")
            except subprocess.CalledProcessError:
                failed.append(name)
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)  # once more, for the message
                last = (done.stderr.strip().splitlines() or [""])[-1]
                print(f"# {name} failed while timed; run again: exit {done.returncode} {last[:200]}")
        print(f"# one 512x512 RGB PNG, warm caches; {how}")
        print(f"  {'command':<30} {'mean ms':>9} {'best ms':>9}  ratio to convert Laplacian:0")
        ref = stats.get("convert Laplacian:0")
        for name, (mean, best) in stats.items():
            extra = ""
            if ref and name.startswith("cnnfilter") and name.split()[1] in (*KERNELS, "pool"):
                extra = verdict(mean / ref[0], 2)
            print(f"  {name:<30} {mean:9.1f} {best:9.1f}  {extra}")
        print("# targets")
        if ref is None:
            print("  cnnfilter kernel / convert Laplacian:0: SKIP (no convert)")
        help_, imp = stats.get("cnnfilter --help"), stats.get("python import numpy,PIL,click")
        if help_ and imp:
            print(f"  cnnfilter --help / python import line: {verdict(help_[0] / imp[0], 1.2)}")
        else:
            print("  cnnfilter --help / python import line: SKIP (a command failed)")
        if ref:
            ratios = [(stats[f"cnnfilter {k}"][0] / ref[0], k) for k in KERNELS if f"cnnfilter {k}" in stats]
            if ratios:
                worst = max(ratios)
                print(f"  slowest cnnfilter kernel / convert Laplacian:0 ({worst[1]}): {verdict(worst[0], 2)}")
        if failed:
            print(f"  commands that failed: {', '.join(failed)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
