"""correlate2d / convolve2d: check and normalise the arguments, pick the direct, separable or FFT path.

The compiled loops live in ``_kernels`` and are imported on first use, so ``import cnnfilter`` stays free of
numba.
"""

from __future__ import annotations

import numpy as np

from . import _args, limits
from .kernels import validate_kernel

METHODS = ("auto", "direct", "separable", "fft")

# The ``auto`` rule, measured with benchmarks/methods.py (README, "Choosing the method").
FFT_MIN_TAPS = 225  # dense kernels of at least this many taps (15x15) go to the FFT at stride 1 ...
FFT_MIN_PIXELS = 128 * 128  # ... on images at least this large
SEPARABLE_MIN_TAPS = 25  # rank-1 kernels from 5x5 up (not 1xN) go to the separable path


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


def _filter(image, kernel, stride, padding, dilation, border, cval, method, out, *, flip):
    img = _args.as_image(image)
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
    H, W = img.shape[:2]
    C = img.shape[2] if img.ndim == 3 else 1
    Ho = _args.output_size(H, span[0], sh, top, bottom)
    Wo = _args.output_size(W, span[1], sw, left, right)
    if Ho < 1 or Wo < 1:
        if padding == "valid":
            msg = (f"padding 'valid' needs the kernel ({span[0]}x{span[1]} with dilation) to fit in the image "
                   f"({H}x{W}); use padding 'same' or 'full'")
        else:
            msg = f"the output would be {max(Ho, 0)}x{max(Wo, 0)} pixels: padding {padding!r} is too small"
        raise ValueError(msg)
    dtype = _args.work_dtype(img)
    what = (f"filtering a {H}x{W} image with a {kh}x{kw} kernel (dilation {dh},{dw}, padding "
            f"{top},{bottom},{left},{right}) into {Ho}x{Wo}")
    itemsize = np.dtype(dtype).itemsize
    limits.check_memory(itemsize * C * ((H + top + bottom) * (W + left + right) + 2 * Ho * Wo), what)
    cval = _args.check_value(cval, "cval", dtype)
    shape = (Ho, Wo, C) if img.ndim == 3 else (Ho, Wo)
    res = np.empty(shape, dtype) if out is None else _args.check_out(out, shape, dtype)
    if out is not None and _args.overlaps(out, img):
        msg = "out shares memory with image; the result would overwrite pixels still to be read"
        raise ValueError(msg)
    kd = np.ascontiguousarray(k, dtype)
    o2 = res.reshape(Ho, Wo * C)
    cv = dtype(cval)
    if method == "auto" and _exact_in_numpy(img, k, H * W, cval):
        _correlate_numpy(img, kd, res.reshape(Ho, Wo, C), (sh, sw), (dh, dw), (top, bottom, left, right), border,
                         cval)
        return res
    chosen, factors = _choose(method, kd, (sh, sw), H * W)
    if chosen == "fft" and method == "auto" and img.dtype.kind == "f" and not np.isfinite(img).all():
        chosen = "direct"  # an FFT would spread one NaN or inf over its whole tile; direct keeps it local
    if chosen != "fft":
        taps = (kh + kw) if chosen == "separable" else kh * kw
        limits.check_work(float(taps) * Ho * Wo * C, what)
    unrolled = chosen == "direct" and (sh, sw, dh, dw) == (1, 1, 1, 1) and kh == kw and kh in (3, 5)
    # The unrolled 3x3/5x5 loops also read 8-bit images as they are (a second specialisation, compiled only when
    # used): converting a photo to float32 first would cost more memory traffic than the filter itself.
    keep = unrolled and img.dtype == np.uint8
    x2 = np.ascontiguousarray(img, None if keep else dtype).reshape(H, W * C)

    if chosen == "fft":
        from ._fft import correlate_fft

        correlate_fft(x2.reshape(H, W, C), kd, o2.reshape(Ho, Wo, C), (sh, sw), (dh, dw), (top, bottom, left, right),
                      border, cval)
        return res
    from . import _kernels

    nchunks = _chunks(Ho)
    if chosen == "separable":
        u, v = factors
        _kernels.correlate_separable(x2, u, v, o2, C, sh, sw, dh, dw, top, left, mode, cv, nchunks)
    elif unrolled:
        fn = _kernels.correlate_3x3 if kh == 3 else _kernels.correlate_5x5
        fn(x2, kd, o2, C, top, left, mode, cv)
    else:
        _kernels.correlate_direct(x2, kd, o2, C, sh, sw, dh, dw, top, left, mode, cv, nchunks)
    return res


SMALL_PIXELS = 1 << 20  # images up to 1 MP may take the numpy path below


def _exact_in_numpy(img: np.ndarray, k: np.ndarray, pixels: int, cval: float) -> bool:
    """Whether the small-image numpy path gives exactly the compiled result: an integer image and an integer kernel
    whose every partial sum is an integer below 2**24, so float32 holds each one exactly in any order. It spares
    a one-off command the ~0.8 s of importing numba and loading its cached kernels."""
    if pixels > SMALL_PIXELS or img.dtype.kind not in "biu" or k.size > 49:
        return False
    if not np.array_equal(k, np.round(k)):
        return False
    if cval != round(cval):
        return False
    top = float(np.iinfo(img.dtype).max) if img.dtype.kind != "b" else 1.0
    low = float(np.iinfo(img.dtype).min) if img.dtype.kind != "b" else 0.0
    return max(abs(top), abs(low), abs(cval)) * float(np.abs(k).sum()) < 2**24


def _correlate_numpy(img, k, out3, stride, dilation, pads, border, cval) -> None:
    """The definition, one tap at a time over strided views of the numpy.pad'ed image (small images only)."""
    sh, sw = stride
    dh, dw = dilation
    top, bottom, left, right = pads
    x = img if img.ndim == 3 else img[:, :, None]
    extra = {"constant_values": cval} if border == "constant" else {}
    p = np.pad(x.astype(out3.dtype), ((top, bottom), (left, right), (0, 0)), mode=border, **extra)
    Ho, Wo = out3.shape[:2]
    out3[...] = 0
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            if k[a, b]:
                r, c = a * dh, b * dw
                out3 += k[a, b] * p[r : r + (Ho - 1) * sh + 1 : sh, c : c + (Wo - 1) * sw + 1 : sw]


def _choose(method: str, k: np.ndarray, stride, pixels: int):
    """``(path, rank-1 factors or None)`` by the documented ``auto`` rule, or as asked."""
    taps = k.size
    if method == "separable":
        factors = _rank1(k)
        if factors is None:
            msg = "method 'separable' needs a rank-1 kernel (an outer product of a column and a row)"
            raise ValueError(msg)
        return method, factors
    if method != "auto":
        return method, None
    if taps >= SEPARABLE_MIN_TAPS and min(k.shape) > 1:
        factors = _rank1(k)
        if factors is not None:
            return "separable", factors
    if taps >= FFT_MIN_TAPS and stride == (1, 1) and pixels >= FFT_MIN_PIXELS:
        return "fft", None
    return "direct", None


def _rank1(k: np.ndarray):
    """``(u, v)`` with ``outer(u, v) == k`` to float32 precision, or None when ``k`` is not rank 1."""
    k64 = k.astype(np.float64)
    if not k64.any():
        return np.zeros(k.shape[0], k.dtype), np.zeros(k.shape[1], k.dtype)
    U, s, Vt = np.linalg.svd(k64)
    u = U[:, 0] * np.sqrt(s[0])
    v = Vt[0] * np.sqrt(s[0])
    err = np.abs(np.outer(u, v) - k64).max()
    if err > (1e-7 if k.dtype == np.float32 else 1e-14) * np.abs(k64).max():
        return None
    return np.ascontiguousarray(u, k.dtype), np.ascontiguousarray(v, k.dtype)


def _chunks(rows: int) -> int:
    from numba import get_num_threads

    return max(1, min(rows, 4 * get_num_threads()))


