"""Tuning values, in one place, read at call time (as stumpy's ``config``): which engine and which path a
filter takes. Measured on the project's 2-vCPU VMs; ``benchmarks/methods.py`` and ``benchmarks/oneshot.py``
show the figures behind them. Change them for a process, never another module's globals.
"""

from __future__ import annotations

import os
import sys

# The compiled ``auto`` rule (README, "Choosing the method").
FFT_MIN_TAPS = 225  # dense kernels of at least this many taps (15x15) go to the FFT at stride 1 ...
FFT_MIN_PIXELS = 128 * 128  # ... on images at least this large
SEPARABLE_MIN_TAPS = 25  # rank-1 kernels from 5x5 up (not 1xN) go to the separable path

# The numpy engine: images up to NUMPY_MAX_PIXELS and kernels up to NUMPY_MAX_TAPS taps are filtered (and pooled)
# with numpy while numba is not loaded, because importing numba and loading its cached loops costs a fresh
# process about 0.5 s, more than filtering a megapixel in numpy. Integer kernels on 8/16-bit images give the
# compiled result to the bit; float kernels (NUMPY_FLOAT) agree within float32 rounding.
NUMPY_MAX_PIXELS = 1 << 20
NUMPY_MAX_TAPS = 121
NUMPY_FLOAT = True

# "numpy": the numpy engine where it applies; "compiled": always the compiled loops (a batch whose workers each
# have many images sets this: loading numba once is then cheaper than numpy's slower loops);
# "auto": numpy unless numba is already loaded in this process. CNNFILTER_ENGINE sets it for a whole run.
ENGINE = os.environ.get("CNNFILTER_ENGINE", "auto").strip().lower()
if ENGINE not in ("auto", "numpy", "compiled"):
    ENGINE = "auto"


def numpy_engine(pixels: int) -> bool:
    """Whether an image of ``pixels`` pixels may take the numpy engine now."""
    if ENGINE == "compiled" or pixels > NUMPY_MAX_PIXELS:
        return False
    return ENGINE == "numpy" or "numba" not in sys.modules

# pool2d: images of at least this many channels pool with numpy whatever the engine (each tap one vectorised pass
# over rows of W*C values beat the compiled loop's per-window walk: 112x112x128 3x3/2 max 1.6 against 5.5 ms; with
# 1 to 3 channels the compiled 2x2 loop wins)
POOL_NUMPY_MIN_LANES = 8

# A batch's workers use the compiled loops when each has at least this many images (batch.engine_for): loading
# numba costs a worker about 0.5 s, which integer kernels (exact in int16 numpy, about 3 ms for a 1024x768 photo
# against 2 ms compiled) repay after some 300 photos and float kernels and pooling (numpy 5-9 ms) after some 60.
COMPILED_MIN_JOBS = 60
COMPILED_MIN_JOBS_EXACT = 300

# conv2d (conv.run): 3x3 filters at stride 1 run the direct compiled loop on planes of at least this many outputs
# (from 14x14 up it beat im2col + BLAS on the project's VMs; on 7x7 and smaller planes BLAS won, see
# benchmarks/onnx_infer.py); im2col's columns are made in chunks of at most this many bytes (a band of output rows
# of one image, or a block of images), each one matrix product: a ResNet stem (8x3x224x224, 7x7/2) took 24 ms with
# 32 MiB chunks (page faults of a fresh buffer, columns out of cache) and 10-12 ms from 2 to 8 MiB; at 8 MiB one of
# its images (7.4 MB of columns) is one product written straight into the output (5.8 against 6.8 ms at 4 MiB)
CONV_DIRECT_MIN_PLANE = 100
CONV_COLUMNS_BYTES = 8 << 20
