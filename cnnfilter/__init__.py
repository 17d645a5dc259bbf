"""cnnfilter: image convolution, pooling and CNN feature maps on Numba kernels.

The numeric functions compile on first use; importing the package compiles and imports nothing from numba.
"""

from .conv import conv2d
from .filters import convolve2d, correlate2d
from .kernels import get_kernel, list_kernels, validate_kernel
from .pooling import pool2d

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "conv2d",
    "convolve2d",
    "correlate2d",
    "featuremaps",
    "get_kernel",
    "list_kernels",
    "load_image",
    "montage",
    "pool2d",
    "save_image",
    "validate_kernel",
]


def __getattr__(name):  # io and maps pull in Pillow: load them only when asked for
    if name in ("load_image", "save_image"):
        from . import io

        return getattr(io, name)
    if name in ("featuremaps", "montage"):  # cnnfilter.maps: activations and montages
        from . import maps

        return getattr(maps, name)
    msg = f"module 'cnnfilter' has no attribute {name!r}"
    raise AttributeError(msg)
