"""Settings for a process that cnnfilter owns: the ``cnnfilter`` command calls :func:`tune` first thing, and so do
the benchmarks. A program that uses the library may call it too, before numpy and numba load; the library itself
never changes its host process.

Each setting is measured on the project's 2-vCPU VMs (``benchmarks/onnx_infer.py``, the forward pass of imported
networks, which alternates numba loops and BLAS products), and each yields to the user's own setting.
"""

from __future__ import annotations

import os
import sys

#: glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: blocks under this come from the heap and are reused, not mapped afresh (glibc's largest allowed value)
MMAP_THRESHOLD = 32 << 20
#: free memory at the top of the heap kept for the next allocation instead of given back at once
TRIM_THRESHOLD = 256 << 20


def tune() -> bool:
    """Make this process's idle threads sleep and its freed memory reusable; returns whether the allocator setting
    took effect (glibc only).

    - numba's OpenMP threads spin after each parallel loop by default, taking the cores from the BLAS threads that
      come next: ``OMP_WAIT_POLICY=PASSIVE`` (digits 8.1-8.8 -> 6.3-7.2 ms, a ResNet-18-style net 80-99 -> 59-66
      ms; train-tiny unchanged).
    - OpenBLAS's threads spin for about 2^28 cycles after each product (its THREAD_TIMEOUT) and take the cores
      from the numba loop that follows: ``OPENBLAS_THREAD_TIMEOUT=4`` lets them sleep at once (the ResNet 60-74 ->
      50-64 ms, digits 7.4 -> 5.5-5.8 ms). Both are read when numpy and numba load, so call this before.
    - glibc maps each block over a few MiB afresh and unmaps it when freed, so every new activation, padded copy
      and column buffer page-faults again: a ResNet stem (8x3x224x224, 7x7/2) took 2,600 faults and 17 ms per call,
      10-11 ms once freed blocks stay in the heap; a batch decoded and padded a 1024x768 photo in 8.2 ms with
      fresh pages, 3.3 ms reusing them. ``mallopt`` keeps blocks under 32 MiB in the heap and up to
      256 MiB of freed memory at its top (the ResNet 53-65 -> 40-53 ms). The process's memory stays at its own
      peak; nothing is counted twice. Skipped when ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` is set.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
    if not sys.platform.startswith("linux") or any(k in os.environ for k in ("MALLOC_MMAP_THRESHOLD_",
                                                                             "MALLOC_TRIM_THRESHOLD_")):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
