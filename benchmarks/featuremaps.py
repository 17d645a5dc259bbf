"""Feature maps of a folder of 100 28x28 digit images through the bundled model, with montages: images/s and
where the time goes (forward pass, drawing montages, writing files).

    python benchmarks/featuremaps.py [--count 100]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=100)
    args = ap.parse_args()
    from click.testing import CliRunner

    from cnnfilter.cli import cli

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        files = sorted((ROOT / "samples" / "digits").glob("*/*.png"))[: args.count]
        for f in files:
            Image.open(f).resize((28, 28), Image.Resampling.BILINEAR).save(src / f.name)
        CliRunner().invoke(cli, ["featuremaps", str(files[0]), "-m", "digits", "-o", str(Path(tmp) / "warm")])
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        res = CliRunner().invoke(cli, ["featuremaps", str(src), "-m", "digits", "-o", str(Path(tmp) / "out"), "-q"])
        prof.disable()
        wall = time.perf_counter() - t
        assert res.exit_code == 0, res.output
        stats = pstats.Stats(prof)
        parts = {"forward pass": ("arch.py", "activations"), "montages": ("maps.py", "montage"),
                 "PNG encoding + atomic writes": ("maps.py", "_png"), "reading + resizing": ("maps.py", "prepare_input")}
        print(f"# featuremaps: {args.count} 28x28 images, bundled digits model, montages of every layer")
        print(f"  {args.count / wall:.1f} images/s ({wall:.2f} s)")
        for label, (fname, func) in parts.items():
            cum = sum(v[3] for k, v in stats.stats.items() if k[0].endswith(fname) and k[2] == func)
            print(f"  {label:30s} {cum:6.2f} s  {100 * cum / wall:4.0f} %")


if __name__ == "__main__":
    main()
