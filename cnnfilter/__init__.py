"""cnnfilter: image convolution, pooling and CNN feature maps on Numba kernels.

Every public name loads its module on first use: ``import cnnfilter`` imports neither numpy nor numba, and the
numeric functions compile (or load their cached compiled loops) on first call.

    correlate2d, convolve2d, pool2d, conv2d      the array functions (numpy in, numpy out)
    get_kernel, list_kernels, validate_kernel    the kernel registry
    FilterSpec, PoolSpec, apply                  what a command does to one picture, as an object
    load_image, save_image                       Pillow <-> numpy
    featuremaps, montage                         activations and their pictures
"""

__version__ = "0.1.0"

_WHERE = {
    "conv2d": "conv", "convolve2d": "filters", "correlate2d": "filters", "pool2d": "pooling",
    "get_kernel": "kernels", "list_kernels": "kernels", "validate_kernel": "kernels",
    "FilterSpec": "ops", "PoolSpec": "ops", "apply": "ops",
    "load_image": "io", "save_image": "io", "featuremaps": "maps", "montage": "maps",
}

__all__ = ["__version__", *sorted(_WHERE)]


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        msg = f"module 'cnnfilter' has no attribute {name!r}"
        raise AttributeError(msg)
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(__all__)
