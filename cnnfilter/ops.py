"""Whole-image operations on :class:`~cnnfilter.io.Picture` objects: what the CLI commands do, as functions.

Colour channels are filtered; alpha is carried through untouched (sampled at each window's anchor pixel when
the output size changes). Greyscale stays greyscale, RGB stays RGB, and the bit depth is kept.
"""

from __future__ import annotations

import numpy as np

from .filters import convolve2d, correlate2d
from .io import Picture
from .pooling import pool2d


def filter_picture(pic: Picture, kernels, *, flip: bool = False, stride=1, padding="same", dilation=1,
                   border: str = "constant", cval: float = 0.0, method: str = "auto") -> Picture:
    """Apply each kernel of ``kernels`` in turn (a pipeline) to the colour channels of ``pic``.

    The first kernel uses ``stride``, ``padding`` and ``dilation``; later ones are applied at stride 1 with
    ``'same'`` padding, so a pipeline changes the size at most once.
    """
    op = convolve2d if flip else correlate2d
    values = pic.pixels
    alpha = pic.alpha
    for n, k in enumerate(kernels):
        geometry = {"stride": stride, "padding": padding, "dilation": dilation} if n == 0 else {}
        values = op(values, k, border=border, cval=cval, method=method, **geometry)
        if n == 0 and alpha is not None and values.shape[:2] != alpha.shape:
            anchor = np.zeros(np.shape(k))
            anchor[(anchor.shape[0] - 1) // 2, (anchor.shape[1] - 1) // 2] = 1.0
            alpha = correlate2d(alpha, anchor, border="edge", **geometry)
    return Picture(values, alpha, pic.depth, dict(pic.info))


def pool_picture(pic: Picture, size, *, stride=None, padding=0, mode: str = "max", ceil_mode: bool = False,
                 count_include_pad: bool = True) -> Picture:
    """Pool the colour channels of ``pic``; alpha is pooled with the same window and mode."""
    kw = {"stride": stride, "padding": padding, "mode": mode, "ceil_mode": ceil_mode,
          "count_include_pad": count_include_pad}
    values = pool2d(pic.pixels, size, **kw)
    alpha = None if pic.alpha is None else pool2d(pic.alpha, size, **kw)
    return Picture(values, alpha, pic.depth, dict(pic.info))
