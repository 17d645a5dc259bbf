"""The ``cnnfilter`` command: a Click group (``base``) and its commands, each a thin layer over one library
call: ``image`` (convolve, pool, kernels) and ``nn`` (train-tiny, predict, featuremaps, export), loaded when they
run."""

from .. import runtime
from .base import cli


def main() -> None:
    # before numpy and numba load: idle threads sleep, freed memory is reused (cnnfilter/runtime.py, measured there)
    runtime.tune()
    cli()


__all__ = ["cli", "main"]
