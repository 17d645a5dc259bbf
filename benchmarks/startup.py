"""What the first (compiling) run and a cached run of the CLI cost, and ``--help``.

    python benchmarks/startup.py

Runs ``cnnfilter convolve samples/camera.png -k edge`` in fresh processes with the compiled loops
(``CNNFILTER_ENGINE=compiled``; on its own this small image would take the numpy engine): once with an empty numba
cache (every loop it uses compiles), then with the cache warm; and ``cnnfilter --help`` (which imports no numba). Also
ImageMagick's ``convert ... -morphology Convolve Laplacian:0`` on the same image when it is installed.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "camera.png"


def timed(cmd, env, n=5):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times) * 1e3


def main():
    out = Path(tempfile.mkdtemp())
    cache = Path(tempfile.mkdtemp())
    # the compiled loops, as a batch with many images per worker uses them (a one-off command on an image this
    # small takes the numpy engine and loads no numba: benchmarks/oneshot.py times that)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), CNNFILTER_ENGINE="compiled")
    cli = [sys.executable, "-m", "cnnfilter"]
    for name, kernel in (("3x3 edge", "edge"), ("gaussian sigma 3 (separable)", "gaussian")):
        extra = ["--sigma", "3"] if kernel == "gaussian" else []
        cmd = [*cli, "convolve", str(SAMPLE), "-k", kernel, *extra, "-o", str(out / "o.png"), "--overwrite", "-q"]
        shutil.rmtree(cache)
        cache.mkdir()
        cold = timed(cmd, env, n=1)
        warm = timed(cmd, env)
        print(f"convolve {name}: first run (compiling) {cold:7.0f} ms, cached {warm:6.0f} ms")
    print(f"cnnfilter --help: {timed([*cli, '--help'], env):.0f} ms")
    convert = shutil.which("convert", path="/usr/bin")
    if convert:
        t = timed([convert, str(SAMPLE), "-morphology", "Convolve", "Laplacian:0", str(out / "m.png")], env)
        print(f"ImageMagick convert -morphology Convolve Laplacian:0: {t:.0f} ms")
    shutil.rmtree(out)
    shutil.rmtree(cache)


if __name__ == "__main__":
    main()
