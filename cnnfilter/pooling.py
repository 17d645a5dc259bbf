"""pool2d: max, average and min pooling over channels-last images, with PyTorch's padding and ceil_mode rules and
ONNX's dilations and padding of any size."""

from __future__ import annotations

import math
from dataclasses import dataclass

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
    from .chunked import is_lazy

    if is_lazy(image):  # a dask array: a lazy result, chunk by chunk
        from .chunked import pool_lazy

        return pool_lazy(image, size, stride, padding, dilation, mode, ceil_mode, count_include_pad)
    img = _args.as_image(image)
    window, (Ho, Wo) = plan(img.shape, size, stride, padding, dilation, mode, ceil_mode, count_include_pad)
    kh, kw = window.size
    H, W = img.shape[:2]
    C = img.shape[2] if img.ndim == 3 else 1
    dtype = _args.work_dtype(img)
    what = f"pooling a {H}x{W}x{C} image with {kh}x{kw} windows into {Ho}x{Wo}"
    item = np.dtype(dtype).itemsize
    limits.check_memory(item * C * (H * W + 2 * Ho * Wo) + window.padded_bytes(H, W, C, item), what)
    limits.check_work(limits.POOL_READ_COST * float(kh) * kw * Ho * Wo * C, what)
    res = np.empty((Ho, Wo, C) if img.ndim == 3 else (Ho, Wo), dtype)
    region(img if img.ndim == 3 else img[:, :, None], res.reshape(Ho, Wo, C), window)
    return res


def plan(shape, size, stride=None, padding=0, dilation=1, mode="max", ceil_mode=False,
         count_include_pad=True) -> tuple[Window, tuple[int, int]]:
    """:func:`pool2d`'s arguments checked for an image of ``shape``: the window and the output size. Raises
    ValueError or TypeError as pool2d does."""
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
    H, W = shape[:2]
    Ho = _out(H, span[0], sh, top, bottom, ceil_mode)
    Wo = _out(W, span[1], sw, left, right, ceil_mode)
    if Ho < 1 or Wo < 1:
        msg = f"the window {kh}x{kw} does not fit in the image {H}x{W} with padding {padding!r}"
        raise ValueError(msg)
    if not (_axis_fits(H, kh, sh, dh, top, Ho) and _axis_fits(W, kw, sw, dw, left, Wo)):
        msg = f"padding {padding!r}: a {kh}x{kw} window (dilation {dh}x{dw}) would hold no pixel of the image"
        raise ValueError(msg)
    window = Window((kh, kw), (sh, sw), (top, bottom, left, right), (dh, dw), mode, bool(ceil_mode),
                    bool(count_include_pad))
    return window, (Ho, Wo)


def region(x3: np.ndarray, out3: np.ndarray, window: Window, top: int | None = None, left: int | None = None,
           hend: int | None = None, wend: int | None = None) -> None:
    """Pool the channels-last ``x3 (H, W, C)`` into the C-contiguous ``out3 (Ho, Wo, C)`` (float, the work dtype) on the numpy engine
    or the compiled loop, as pool2d chooses: window ``i`` takes the taps ``i*sh - top + a*dh``, inside the padded
    extent ``[-top, hend)`` (and the same for columns). The defaults are the window's own padding on ``x3``; a
    chunk of a larger image gives its own offsets (:mod:`cnnfilter.chunked`)."""
    H, W, C = x3.shape
    Ho, Wo = out3.shape[:2]
    (kh, kw), (sh, sw), (dh, dw) = window.size, window.stride, window.dilation
    top = window.pads[0] if top is None else top
    left = window.pads[2] if left is None else left
    hend = H + window.pads[1] if hend is None else hend
    wend = W + window.pads[3] if wend is None else wend
    code = MODES.index(window.mode)
    if config.numpy_engine(H * W) or (C >= config.POOL_NUMPY_MIN_LANES and config.ENGINE != "compiled"):
        from . import _small

        _small.pool(x3, out3, kh, kw, sh, sw, top, left, hend, wend, code, window.count_include_pad, dh, dw)
        return
    x2 = np.ascontiguousarray(x3, out3.dtype).reshape(H, W * C)
    _run(x2[None], out3.reshape(1, Ho, Wo * C), C, window, _NO_ARG, top, left, hend, wend)


_NO_ARG = np.empty((0, 0, 0), np.int64)


@dataclass(frozen=True)
class Window:
    """A pooling window: ``size``, ``stride`` and ``dilation`` as (rows, cols), implicit padding as ``pads = (top,
    bottom, left, right)``, the ``mode`` (max, avg, min) and PyTorch's ``ceil_mode`` and ``count_include_pad``.
    :func:`pool2d` makes one from its arguments; a network's pooling layers hold one."""

    size: tuple
    stride: tuple
    pads: tuple = (0, 0, 0, 0)
    dilation: tuple = (1, 1)
    mode: str = "max"
    ceil_mode: bool = False
    count_include_pad: bool = True

    def output(self, H: int, W: int) -> tuple[int, int]:
        """The output plane ``(Ho, Wo)`` of an ``H x W`` input (may be < 1)."""
        (kh, kw), (sh, sw), (dh, dw), (top, bottom, left, right) = self.size, self.stride, self.dilation, self.pads
        return (_out(H, dh * (kh - 1) + 1, sh, top, bottom, self.ceil_mode),
                _out(W, dw * (kw - 1) + 1, sw, left, right, self.ceil_mode))

    def fits(self, H: int, W: int) -> bool:
        """Whether the output is at least 1x1 and every window holds a pixel of an ``H x W`` input."""
        Ho, Wo = self.output(H, W)
        (kh, kw), (sh, sw), (dh, dw), (top, _, left, _) = self.size, self.stride, self.dilation, self.pads
        return _axis_fits(H, kh, sh, dh, top, Ho) and _axis_fits(W, kw, sw, dw, left, Wo)

    def padded_bytes(self, H: int, W: int, planes: int, itemsize: int = 4) -> int:
        """The bytes of the padded copy the numpy engine makes of ``planes`` planes of ``H x W`` (ceil_mode's extra
        row and column included)."""
        (sh, sw), (top, bottom, left, right) = self.stride, self.pads
        return itemsize * planes * (H + top + bottom + sh) * (W + left + right + sw)


def _run(x3, o3, C: int, window: Window, arg, top: int, left: int, hend: int, wend: int) -> None:
    """The compiled pooling of planes ``x3 (P, H, W*C)`` into ``o3 (P, Ho, Wo*C)`` (taps ``i*sh - top + a*dh`` in
    the padded extent ``[-top, hend)``); ``arg`` (the shape of ``o3``, or empty) receives the index of each
    window's winner for max and min."""
    from . import _loops

    (kh, kw), (sh, sw), (dh, dw) = window.size, window.stride, window.dilation
    H, W = x3.shape[1], x3.shape[2] // C
    Ho, Wo = o3.shape[1], o3.shape[2] // C
    code = MODES.index(window.mode)
    plain = (kh, kw, sh, sw, dh, dw, top, left) == (2, 2, 2, 2, 1, 1, 0, 0) and 2 * Ho <= H and 2 * Wo <= W
    if plain and arg.shape[0] and C == 1 and code == 0:
        _loops.maxpool_2x2_arg(x3, o3, arg)
    elif plain and not (arg.shape[0] and code != 1):
        _loops.pool_2x2(x3, o3, C, code)
    else:
        _loops.pool_generic(x3, o3, arg, C, kh, kw, sh, sw, dh, dw, top, left, hend, wend, code,
                            window.count_include_pad)


def planes(x: np.ndarray, window: Window, *, out=None, arg=None) -> np.ndarray:
    """Pool every ``(H, W)`` plane of a contiguous float ``(N, C, H, W)`` batch (a network's layer; the window
    fits: the caller checked) on :func:`pool2d`'s engine. ``out`` may be a buffer; ``arg`` (int32 or int64, the
    output's shape) receives, for max and min, the flat index in its plane of each window's winner, for
    :func:`planes_backward`."""
    N, C, H, W = x.shape
    Ho, Wo = window.output(H, W)
    if out is None:
        out = np.empty((N, C, Ho, Wo), x.dtype)
    (kh, kw), (sh, sw), (dh, dw), (top, bottom, left, right) = window.size, window.stride, window.dilation, window.pads
    plain = (kh, kw, sh, sw, dh, dw, top, bottom, left, right) == (2, 2, 2, 2, 1, 1, 0, 0, 0, 0)
    if arg is None and not plain and window.mode != "avg" and not config.numpy_engine(H * W):
        # max and min without winners: rows pooled along, then across (8x16x112x112, 3x3/2: 0.85 against 4 ms
        # for the numpy engine below and 10 ms for the compiled loop's walk of each window)
        import numba

        from . import _loops

        threads = numba.get_num_threads()
        bands = 1 if N * C >= 2 * threads else max(1, min(Ho, -(-2 * threads // max(N * C, 1))))  # a task per band
        _loops.pool_separable(x.reshape(N * C, H, W), out.reshape(N * C, Ho, Wo), kh, kw, sh, sw, dh, dw, top,
                              left, H + bottom, W + right, MODES.index(window.mode), bands)
        return out
    if arg is None and not plain and N * C >= config.POOL_NUMPY_MIN_LANES:
        # numpy, a tap at a time over every plane at once (8x16x112x112, 3x3/2 avg: 4 against 10 ms for the
        # compiled loop's walk of each window); the compiled loop keeps 2x2 windows and the winners' indices of
        # training
        from . import _small

        _small.pool(np.moveaxis(x, (2, 3), (0, 1)), np.moveaxis(out, (2, 3), (0, 1)), kh, kw, sh, sw, top, left,
                    H + bottom, W + right, MODES.index(window.mode), window.count_include_pad, dh, dw)
        return out
    _run(x.reshape(N * C, H, W), out.reshape(N * C, Ho, Wo), 1, window,
         _NO_ARG if arg is None else arg.reshape(N * C, Ho, Wo), top, left, H + bottom, W + right)
    return out


def planes_backward(dy: np.ndarray, window: Window, dx: np.ndarray, arg=None) -> np.ndarray:
    """The gradient of :func:`planes` with respect to its input, written into ``dx`` (the input's shape, overwritten):
    max and min send each output's gradient to its window's winner (``arg``), avg spreads it as it divided."""
    from . import _loops

    N, C, H, W = dx.shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    d3 = np.ascontiguousarray(dy, dx.dtype).reshape(N * C, Ho, Wo)
    if window.mode == "avg":
        (kh, kw), (sh, sw), (dh, dw), (top, bottom, left, right) = (window.size, window.stride, window.dilation,
                                                                    window.pads)
        _loops.pool_avg_backward(d3, dx.reshape(N * C, H, W), 1, kh, kw, sh, sw, dh, dw, top, left, H + bottom,
                                 W + right, window.count_include_pad)
    else:
        _loops.pool_arg_backward(d3, arg.reshape(N * C, Ho, Wo), dx.reshape(N * C, H, W))
    return dx


def _axis_fits(n: int, k: int, s: int, d: int, before: int, out: int) -> bool:
    """Whether each of ``out`` windows along an axis of ``n`` pixels (``k`` taps ``d`` apart, window ``i`` starting
    at ``i*s - before``) holds a pixel: computed from the first and last windows and, only when the taps are further
    apart than the axis is long, from the windows that start in the padding, never by listing every tap (a hostile
    padding or window would make that list any size)."""
    if out < 1 or (out - 1) * s - before >= n:  # the last window starts past the image
        return False
    if (k - 1) * d < before:  # the first window lies in the padding
        return False
    if d <= n:  # from here a window starting before the image has a tap within d pixels of its start
        return True
    count = min(out, -(-before // s))  # windows starting in the padding: their first tap inside is (start mod d)
    period = d // math.gcd(s, d)
    m = min(count, period)
    if m > 1 << 20:  # a geometry no network has: refused rather than walked
        return False
    starts = np.arange(m, dtype=np.int64) * s - before
    return bool((np.mod(starts, d) < n).all())


def _out(n: int, k: int, s: int, before: int, after: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size."""
    span = n + before + after - k  # may be negative: PyTorch still gives one window in ceil_mode
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + before:
        out -= 1
    return out
