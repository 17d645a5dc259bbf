"""The ``cnnfilter`` command: a Click group (``base``) and its commands, each a thin layer over one library
call: ``image`` (convolve, pool, kernels) and ``nn`` (train-tiny, predict, featuremaps, export), loaded when they
run."""

import os

from .base import cli


def main() -> None:
    # numba's OpenMP threads spin after each parallel loop by default, taking the cores from the BLAS threads
    # that come next (an imported network alternates the two): this process is the command's own, so they wait
    # passively (measured, forward of ONNX graphs: digits 8.1-8.8 -> 6.3-7.2 ms, a ResNet-18-style net 80-99 ->
    # 59-66 ms; train-tiny unchanged). The user's setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # OpenBLAS's threads, in turn, spin for about 2^28 cycles after each product (its THREAD_TIMEOUT) and take the
    # cores from the numba loop that follows (an im2col, a pooling): 2^4 cycles lets them sleep at once (measured,
    # benchmarks/onnx_infer.py: the ResNet-18-style net 60-74 -> 50-64 ms, digits 7.4 -> 5.5-5.8 ms; train-tiny
    # unchanged). Read when numpy loads, which is after this line.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    cli()


__all__ = ["cli", "main"]
