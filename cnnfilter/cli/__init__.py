"""The ``cnnfilter`` command: a Click group (``base``) and its commands, each a thin layer over one library
call: ``image`` (convolve, pool, kernels) and ``nn`` (train-tiny, predict, featuremaps), loaded when they run."""

from .base import cli


def main() -> None:
    cli()


__all__ = ["cli", "main"]
