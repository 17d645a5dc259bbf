"""pool2d: max, average and min pooling over channels-last images, with PyTorch's padding and ceil_mode rules and
ONNX's dilations and padding of any size."""

from __future__ import annotations

import numpy as np

from . import _args, config, limits

MODES = ("max", "avg", "min")


def pool2d(image, size, *, stride=None, padding=0, dilation=1, mode="max", ceil_mode=False,
           count_include_pad=True) -> np.ndarray:
    """Pool each channel of ``image`` over ``size`` windows.

    Parameters
    ----------
    image : array (H, W) or channels-last (H, W, C), any integer or float dtype.
    size : int or (rows, cols), the window.
    stride : int or (rows, cols); defaults to ``size``.
    padding : int, ``(ph, pw)`` or ``((top, bottom), (left, right))``, any size (PyTorch allows at most half the
        window; ONNX more) as long as every window holds a pixel. Padding is implicit: max/min ignore it; avg
        counts it as zeros when ``count_include_pad``, else divides by the number of real pixels in the window.
    dilation : int or (rows, cols): the window's taps are this many pixels apart (PyTorch's max_pool2d, ONNX's
        MaxPool and AveragePool).
    mode : ``max``, ``avg`` or ``min``. NaN propagates through max and min.
    ceil_mode : round the output size up, as PyTorch does; a last window that would start in the bottom/right
        padding is dropped.

    Returns
    -------
    float32 array (float64 for float64 input) of shape ``(H', W')`` or ``(H', W', C)`` with
    ``H' = floor((H + top + bottom - dh*(kh-1) - 1) / sh) + 1`` (``ceil`` with ``ceil_mode``, less the dropped
    window).
    """
    img = _args.as_image(image)
    kh, kw = _args.pair(size, "size")
    sh, sw = (kh, kw) if stride is None else _args.pair(stride, "stride")
    if mode not in MODES:
        msg = f"mode {mode!r} is not one of {', '.join(MODES)}"
        raise ValueError(msg)
    if isinstance(padding, str):
        msg = f"padding {padding!r} is not an int, (ph, pw) or ((top, bottom), (left, right))"
        raise TypeError(msg)
    dh, dw = _args.pair(dilation, "dilation")
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    top, bottom, left, right = _args.resolve_padding(padding, span)
    H, W = img.shape[:2]
    C = img.shape[2] if img.ndim == 3 else 1
    Ho = _out(H, span[0], sh, top, bottom, ceil_mode)
    Wo = _out(W, span[1], sw, left, right, ceil_mode)
    if Ho < 1 or Wo < 1:
        msg = f"the window {kh}x{kw} does not fit in the image {H}x{W} with padding {padding!r}"
        raise ValueError(msg)
    from ._small import taps_inside

    if (taps_inside(Ho, sh, kh, dh, top, H, H + bottom, False).min() < 1
            or taps_inside(Wo, sw, kw, dw, left, W, W + right, False).min() < 1):
        msg = f"padding {padding!r}: a {kh}x{kw} window (dilation {dh}x{dw}) would hold no pixel of the image"
        raise ValueError(msg)
    dtype = _args.work_dtype(img)
    what = f"pooling a {H}x{W}x{C} image with {kh}x{kw} windows into {Ho}x{Wo}"
    padded = (H + top + bottom + sh) * (W + left + right + sw)  # the numpy engine's padded copy (ceil's extra too)
    limits.check_memory(np.dtype(dtype).itemsize * C * (H * W + padded + 2 * Ho * Wo), what)
    limits.check_work(limits.POOL_READ_COST * float(kh) * kw * Ho * Wo * C, what)
    x2 = np.ascontiguousarray(img, dtype).reshape(H, W * C)
    res = np.empty((Ho, Wo, C) if img.ndim == 3 else (Ho, Wo), dtype)
    o2 = res.reshape(Ho, Wo * C)
    code = MODES.index(mode)
    if config.numpy_engine(H * W) or (C >= config.POOL_NUMPY_MIN_LANES and config.ENGINE != "compiled"):
        from . import _small

        _small.pool(img if img.ndim == 3 else img[:, :, None], res.reshape(Ho, Wo, C), kh, kw, sh, sw, top, left,
                    H + bottom, W + right, code, bool(count_include_pad), dh, dw)
        return res
    from . import _loops

    if (kh, kw, sh, sw, dh, dw, top, bottom, left, right) == (2, 2, 2, 2, 1, 1, 0, 0, 0, 0) and 2 * Ho <= H \
            and 2 * Wo <= W:
        _loops.pool_2x2(x2, o2, C, code)
    else:
        _loops.pool_generic(x2, o2, C, kh, kw, sh, sw, dh, dw, top, left, H + bottom, W + right, code,
                            bool(count_include_pad))
    return res


def _out(n: int, k: int, s: int, before: int, after: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size."""
    span = n + before + after - k  # may be negative: PyTorch still gives one window in ceil_mode
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + before:
        out -= 1
    return out
