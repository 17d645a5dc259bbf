"""The ``cnnfilter`` command: a Click group (``base``) and its commands, each a thin layer over one library
call: ``image`` (convolve, pool, kernels) and ``nn`` (train-tiny, predict, featuremaps, export), loaded when they
run."""

import gc

from .. import runtime
from .base import cli


def main() -> None:
    # before numpy and numba load: idle threads sleep, freed memory is reused (cnnfilter/runtime.py, measured there)
    runtime.tune()
    # the cyclic garbage collector's passes over the objects that importing numpy and Pillow makes, and the
    # interpreter's last pass at exit, took 40-50 ms of CPU of a one-off command (a 512x512 PNG, 200-240 ms in
    # all; hyperfine, user time): collections wait for 100,000 new objects instead of 700 (mypy does the same),
    # and the last pass is skipped (every output is closed and renamed by then)
    gc.set_threshold(100_000, 20, 20)
    try:
        cli()
    finally:
        gc.freeze()


__all__ = ["cli", "main"]
