"""correlate2d / convolve2d: check and normalise the arguments, pick the direct, separable or FFT path.

The compiled loops live in ``_loops`` and are imported on first use, so ``import cnnfilter`` stays free of
numba.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _args, config, limits
from .kernels import rank1_factors, validate_kernel

METHODS = ("auto", "direct", "separable", "fft")


def correlate2d(image, kernel, *, stride=1, padding="same", dilation=1, border="constant", cval=0.0,
                method="auto", out=None) -> np.ndarray:
    """Cross-correlate each channel of ``image`` with the 2-D ``kernel`` (the kernel is not flipped).

    ``out[i, j] = sum_{a,b} kernel[a, b] * padded[i*sh + a*dh, j*sw + b*dw]``, as OpenCV's ``filter2D`` and
    CNN layers compute it.

    Parameters
    ----------
    image : array (H, W) or channels-last (H, W, C), any integer or float dtype.
    kernel : 2-D finite array, any size up to 255x255 (1x1, 1xN, even, larger than the image).
    stride, dilation : int or (rows, cols), at least 1.
    padding : ``"same"`` (total pad ``d*(k-1)``, floor of half on the top/left, output ``ceil(H/stride)``),
        ``"valid"``, ``"full"``, an int, ``(ph, pw)`` or ``((top, bottom), (left, right))``.
    border : how padded pixels are made, as ``numpy.pad`` names it: ``constant`` (value ``cval``), ``edge``,
        ``reflect``, ``symmetric``, ``wrap`` (numpy.pad's results even when the pad is wider than the image).
    method : ``auto``, ``direct``, ``separable`` (rank-1 kernels only) or ``fft`` (NaN or inf in the image
        spreads over a whole FFT tile; ``auto`` never takes the FFT for such images).
    out : optional C-contiguous array of the result's shape and dtype to write into.

    Returns
    -------
    float32 array (float64 when ``image`` is float64) of shape ``(H', W')`` or ``(H', W', C)``
    with ``H' = floor((H + top + bottom - dh*(kh-1) - 1) / sh) + 1`` and the same rule for ``W'``.
    """
    return _filter(image, kernel, stride, padding, dilation, border, cval, method, out, flip=False)


def convolve2d(image, kernel, *, stride=1, padding="same", dilation=1, border="constant", cval=0.0,
               method="auto", out=None) -> np.ndarray:
    """True 2-D convolution: :func:`correlate2d` with the kernel flipped in both axes.

    ``out[i, j] = sum_{a,b} kernel[kh-1-a, kw-1-b] * padded[i*sh + a*dh, j*sw + b*dw]``; the same parameters,
    padding rule and output size ``H' = floor((H + top + bottom - dh*(kh-1) - 1) / sh) + 1`` as
    :func:`correlate2d`. For odd kernels this is ``scipy.ndimage.convolve``.
    """
    return _filter(image, kernel, stride, padding, dilation, border, cval, method, out, flip=True)


class Samples(NamedTuple):
    """How a float result becomes stored samples in the filter's own pass (``io.to_depth``'s rule): ``bias``
    added, then ``output_range`` (``clip``: as it is; ``abs``; ``offset``: plus mid-grey), rounded half-to-even
    and clipped to ``[0, 2**depth - 1]`` (NaN becomes 0)."""

    depth: int = 8
    output_range: str = "clip"
    bias: float = 0.0


POSTS = {"clip": 0, "abs": 1, "offset": 2}  # the output ranges a filter can finish in its own pass


class Plan(NamedTuple):
    """A filter's checked arguments and output size (:func:`plan`)."""

    k: np.ndarray
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pads: tuple[int, int, int, int]
    shape: tuple[int, int]  # output rows, columns
    mode: int
    cval: float
    what: str  # for limit messages


def plan(shape, kernel, stride, padding, dilation, border, cval, method, flip, dtype, *, whole: bool = True) -> Plan:
    """Check every argument and work out the output size for an image of ``shape``; refuse work over the memory
    limit (``whole``: the image is filtered in memory; a chunked image is checked chunk by chunk)."""
    k = validate_kernel(kernel)
    if flip:
        k = k[::-1, ::-1]
    sh, sw = _args.pair(stride, "stride")
    dh, dw = _args.pair(dilation, "dilation")
    mode = _args.border_code(border)
    if method not in METHODS:
        msg = f"method {method!r} is not one of {', '.join(METHODS)}"
        raise ValueError(msg)
    kh, kw = k.shape
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    top, bottom, left, right = _args.resolve_padding(padding, span)
    H, W = shape[:2]
    C = shape[2] if len(shape) == 3 else 1
    Ho = _args.output_size(H, span[0], sh, top, bottom)
    Wo = _args.output_size(W, span[1], sw, left, right)
    if Ho < 1 or Wo < 1:
        if padding == "valid":
            msg = (f"padding 'valid' needs the kernel ({span[0]}x{span[1]} with dilation) to fit in the image "
                   f"({H}x{W}); use padding 'same' or 'full'")
        else:
            msg = f"the output would be {max(Ho, 0)}x{max(Wo, 0)} pixels: padding {padding!r} is too small"
        raise ValueError(msg)
    what = (f"filtering a {H}x{W} image with a {kh}x{kw} kernel (dilation {dh},{dw}, padding "
            f"{top},{bottom},{left},{right}) into {Ho}x{Wo}")
    itemsize = np.dtype(dtype).itemsize
    if whole:
        limits.check_memory(itemsize * C * ((H + top + bottom) * (W + left + right) + 2 * Ho * Wo), what)
    cval = _args.check_value(cval, "cval", dtype)
    return Plan(k, (sh, sw), (dh, dw), (top, bottom, left, right), (Ho, Wo), mode, cval, what)


def _filter(image, kernel, stride, padding, dilation, border, cval, method, out, *, flip):
    from .chunked import is_lazy

    if is_lazy(image):  # a dask array: a lazy result, chunk by chunk
        from .chunked import filter_lazy

        if out is not None:
            msg = "out cannot be given for a dask array (the result is a lazy dask array)"
            raise ValueError(msg)
        return filter_lazy(image, kernel, stride, padding, dilation, border, cval, method, flip)
    img = _args.as_image(image)
    dtype = _args.work_dtype(img)
    g = plan(img.shape, kernel, stride, padding, dilation, border, cval, method, flip, dtype)
    Ho, Wo = g.shape
    shape = (Ho, Wo, img.shape[2]) if img.ndim == 3 else (Ho, Wo)
    res = np.empty(shape, dtype) if out is None else _args.check_out(out, shape, dtype)
    if out is not None and _args.overlaps(out, img):
        msg = "out shares memory with image; the result would overwrite pixels still to be read"
        raise ValueError(msg)
    _into(img, g, border, method, res.reshape(Ho, Wo, -1), dtype)
    return res


def _path(img, kd: np.ndarray, g: Plan, method: str):
    """``(path, rank-1 factors or None)``: ``numpy`` (the small-image engine), ``fft``, ``separable``, ``unrolled``
    (3x3/5x5 at stride 1) or ``direct``, by the documented rules. The float result and the stored samples choose
    here, so both add the same sums."""
    H, W = img.shape[:2]
    if method == "auto" and _numpy_engine(img, kd, H * W, g.cval):
        return "numpy", None
    chosen, factors = _choose(method, kd, g.stride, H * W)
    if chosen == "fft" and method == "auto" and img.dtype.kind == "f" and not np.isfinite(img).all():
        chosen = "direct"  # an FFT would spread one NaN or inf over its whole tile; direct keeps it local
    if chosen == "direct" and _unrolled(kd, g):
        chosen = "unrolled"
    return chosen, factors


def _into(img, g: Plan, border: str, method: str, res3: np.ndarray, dtype) -> None:
    """The float result of ``g`` over ``img`` into ``res3 (Ho, Wo, C)``, by the path :func:`_path` chooses."""
    H, W = img.shape[:2]
    C = res3.shape[2]
    Ho, Wo = g.shape
    kd = np.ascontiguousarray(g.k, dtype)
    (sh, sw), (dh, dw), (top, _, left, _) = g.stride, g.dilation, g.pads
    chosen, factors = _path(img, kd, g, method)
    if chosen == "numpy":
        from . import _small

        _small.correlate(img, kd, res3, g.stride, g.dilation, g.pads, border, g.cval)
        return
    if chosen != "fft":
        taps = (kd.shape[0] + kd.shape[1]) if chosen == "separable" else kd.size
        limits.check_work(float(taps) * Ho * Wo * C, g.what)
    cv = dtype(g.cval)
    o2 = res3.reshape(Ho, Wo * C)
    if chosen == "fft":
        from ._fft import correlate_fft

        x3 = np.ascontiguousarray(img, dtype).reshape(H, W, C)
        correlate_fft(x3, kd, res3, g.stride, g.dilation, g.pads, border, g.cval)
        return
    from . import _loops

    if chosen == "unrolled":
        # the unrolled loops read 8- and 16-bit samples as they are: converting a photo to float first would
        # cost more memory traffic than the filter itself
        keep = img.dtype in (np.dtype(np.uint8), np.dtype(np.uint16))  # native byte order only
        x2 = np.ascontiguousarray(img, img.dtype if keep else dtype).reshape(H, W * C)
        scratch = np.empty((_chunks(Ho), Wo * C), dtype)
        _loops.correlate_small(x2, kd, o2, C, C, top, left, g.mode, cv, scratch, -1, 0.0, 0, 0)
        return
    x2 = np.ascontiguousarray(img, dtype).reshape(H, W * C)
    if chosen == "separable":
        u, v = factors
        _loops.correlate_separable(x2, u, v, o2, C, sh, sw, dh, dw, top, left, g.mode, cv, _chunks(Ho))
    else:
        _loops.correlate_direct(x2, kd, o2, C, sh, sw, dh, dw, top, left, g.mode, cv, _chunks(Ho))


def _unrolled(k: np.ndarray, g: Plan) -> bool:
    return g.stride == (1, 1) and g.dilation == (1, 1) and k.shape[0] == k.shape[1] and k.shape[0] in (3, 5)


def correlate_samples(image, kernel, samples: Samples, *, channels: int | None = None, others: bool = True,
                      stride=1, padding="same", dilation=1, border="constant", cval=0.0, method="auto",
                      flip=False) -> np.ndarray:
    """:func:`correlate2d` (``convolve2d`` with ``flip``) straight into stored samples, as ``samples`` says:
    bias, output range, rounding and clipping in the filter's own pass where the kernel allows it (3x3 and 5x5 at
    stride 1), so no full-image float result is made; the same values as filtering into float and then
    rounding with ``io.to_depth``.

    ``image`` is ``(H, W)`` or ``(H, W, S)`` of which the first ``channels`` (default all) are filtered; the other
    lanes (alpha, or Pillow's padding byte) are copied from the same pixel when the size is unchanged, else set
    to full scale; with ``others`` False they are left undefined (a padding byte nobody reads). ``image`` may be
    a view with pixels ``S`` samples apart (Pillow's own 4-byte RGB buffer). Returns ``uint8`` (``samples.depth`` 8) or ``uint16`` (16) of shape ``(Ho, Wo)`` or ``(Ho, Wo, S)``.
    """
    img = _args.as_image(image)
    if samples.depth not in (8, 16) or samples.output_range not in POSTS:
        msg = f"samples {samples!r}: depth must be 8 or 16 and output_range one of {', '.join(POSTS)}"
        raise ValueError(msg)
    S = img.shape[2] if img.ndim == 3 else 1
    C = S if channels is None else channels
    if not 1 <= C <= S:
        msg = f"channels {channels!r} must be between 1 and {S}"
        raise ValueError(msg)
    dtype = _args.work_dtype(img)
    g = plan(img.shape, kernel, stride, padding, dilation, border, cval, method, flip, dtype)
    Ho, Wo = g.shape
    H, W = img.shape[:2]
    hi = 255 if samples.depth == 8 else 65535
    out = np.empty((Ho, Wo, S), np.uint8 if samples.depth == 8 else np.uint16)
    post, bias = POSTS[samples.output_range], float(samples.bias)
    kd = np.ascontiguousarray(g.k, dtype)
    lanes = _lanes(img, S) if img.dtype in (np.dtype(np.uint8), np.dtype(np.uint16)) else None
    chosen, _ = _path(img, kd, g, method)
    compiled = chosen != "numpy"
    if chosen == "unrolled" and lanes is not None:  # fused: no float image at all
        limits.check_work(float(kd.size) * Ho * Wo * C, g.what)
        from . import _loops

        (top, _, left, _) = g.pads
        scratch = np.empty((_chunks(Ho), Wo * S), dtype)
        _loops.correlate_small(lanes, kd, out.reshape(Ho, Wo * S), S, C, top, left, g.mode, dtype(g.cval),
                               scratch, post, bias, hi, 1 if others else 0)
        return out if img.ndim == 3 else out[:, :, 0]
    if not compiled and g.stride == (1, 1) and g.dilation == (1, 1):
        from . import _small

        _small.samples(img if img.ndim == 3 else img[:, :, None], kd, out, g.pads, border, g.cval, post, bias, hi)
    else:
        values = np.empty((Ho, Wo, C), dtype)
        _into(img[:, :, :C] if img.ndim == 3 else img, g, border, method, values, dtype)
        if compiled:
            from . import _loops

            _loops.finish(values.reshape(Ho, Wo * C), out.reshape(Ho, Wo * S), S, C, post, bias, hi)
        else:
            from . import _small

            out[:, :, :C] = _small.finish(values, post, bias, hi)
    if S > C and others:
        out[:, :, C:] = img[:, :, C:] if (Ho, Wo) == (H, W) else hi
    return out if img.ndim == 3 else out[:, :, 0]


def _lanes(img: np.ndarray, S: int):
    """``img`` as a 2-D ``(H, W*S)`` array of its samples without copying, or None when its rows or pixels are
    not laid out evenly (a crop, a transposed view)."""
    H, W = img.shape[:2]
    z = img.itemsize
    if img.ndim == 2:
        return img if img.strides == (W * z, z) else None
    if img.strides == (W * S * z, S * z, z):
        return np.lib.stride_tricks.as_strided(img, (H, W * S), (W * S * z, z), writeable=False)
    return None


def _numpy_engine(img: np.ndarray, k: np.ndarray, pixels: int, cval: float) -> bool:
    """Whether this image takes the numpy engine (``config.numpy_engine``): a small image, and either a float
    kernel on an 8- or 16-bit image (``config.NUMPY_FLOAT``: within float32 rounding of the compiled loops) or an
    integer image and an integer kernel whose every partial sum is an integer below 2**24, so float32 holds each
    one exactly in any order (the compiled result to the bit). It spares a one-off command the ~0.5 s of
    importing numba and loading its cached loops."""
    if not config.numpy_engine(pixels) or k.size > config.NUMPY_MAX_TAPS:
        return False
    if img.dtype.kind not in "biu":
        return False
    if config.NUMPY_FLOAT:
        return True
    if not np.array_equal(k, np.round(k)):
        return False
    if cval != round(cval):
        return False
    top = float(np.iinfo(img.dtype).max) if img.dtype.kind != "b" else 1.0
    low = float(np.iinfo(img.dtype).min) if img.dtype.kind != "b" else 0.0
    return max(abs(top), abs(low), abs(cval)) * float(np.abs(k).sum()) < 2**24


def _choose(method: str, k: np.ndarray, stride, pixels: int):
    """``(path, rank-1 factors or None)`` by the documented ``auto`` rule, or as asked."""
    taps = k.size
    if method == "separable":
        factors = rank1_factors(k)
        if factors is None:
            msg = "method 'separable' needs a rank-1 kernel (an outer product of a column and a row)"
            raise ValueError(msg)
        return method, factors
    if method != "auto":
        return method, None
    if taps >= config.SEPARABLE_MIN_TAPS and min(k.shape) > 1:
        factors = rank1_factors(k)
        if factors is not None:
            return "separable", factors
    if taps >= config.FFT_MIN_TAPS and stride == (1, 1) and pixels >= config.FFT_MIN_PIXELS:
        return "fft", None
    return "direct", None


def _chunks(rows: int) -> int:
    from numba import get_num_threads

    return max(1, min(rows, 4 * get_num_threads()))


