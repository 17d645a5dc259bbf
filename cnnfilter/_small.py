"""The numpy engine: filters for small images while numba is not loaded (``config.numpy_engine``).

Importing numba and loading its cached loops costs a fresh process about 0.5 s, more than filtering a megapixel
photo in numpy. These functions give the compiled loops' results: bit for bit for integer kernels on integer
images whose every partial sum stays below 2**24 (float32 holds each exactly, in any order), and within float32
rounding otherwise (the sums are added in another order). ``filters`` decides when they run.
"""

from __future__ import annotations

import numpy as np

from .kernels import rank1_factors

BLOCK_BYTES = 1 << 20  # rows are filtered in blocks of about this many accumulator bytes (measured best: 1-2 MiB)


def correlate(img, k, out3, stride, dilation, pads, border, cval) -> None:
    """The float result into ``out3 (Ho, Wo, C)``: at stride 1 and dilation 1 by :func:`_blocks` (the same sums
    as :func:`samples`), otherwise by the definition, one tap at a time over strided views of the numpy.pad'ed
    image."""
    x = img if img.ndim == 3 else img[:, :, None]
    if stride == (1, 1) and dilation == (1, 1) and x.dtype.kind in "ui":
        for r0, A in _blocks(x, k, out3.shape[:2], pads, border, cval):
            np.copyto(out3[r0 : r0 + A.shape[0]].reshape(A.shape), A, casting="unsafe")
        return
    sh, sw = stride
    dh, dw = dilation
    top, bottom, left, right = pads
    H, W, S = x.shape
    rows = top + H + bottom
    p = _Padded(x, pads, border, cval, np.empty((rows, (left + W + right) * S), out3.dtype)).rows(0, rows)
    p = p.reshape(rows, -1, S)
    Ho, Wo = out3.shape[:2]
    out3[...] = 0
    for a in range(k.shape[0]):
        for b in range(k.shape[1]):
            if k[a, b]:
                r, c = a * dh, b * dw
                out3 += k[a, b] * p[r : r + (Ho - 1) * sh + 1 : sh, c : c + (Wo - 1) * sw + 1 : sw]


def finish(values: np.ndarray, post: int, bias: float, hi: int) -> np.ndarray:
    """Stored samples from float results, as ``_loops.finish``: ``bias`` added, then ``post`` (0 as it is, 1
    absolute value, 2 plus mid-grey), rounded half-to-even, clipped to ``[0, hi]`` with NaN as 0."""
    v = values.astype(np.float32, copy=True) if values.dtype != np.float64 else values.copy()
    _finish_float(v, post, bias, hi)
    return v.astype(np.uint8 if hi == 255 else np.uint16)


def _finish_float(v: np.ndarray, post: int, bias: float, hi: int) -> None:
    if bias:
        v += v.dtype.type(bias)
    if post == 1:
        np.abs(v, out=v)
    elif post == 2:
        v += v.dtype.type((hi + 1) / 2)
    np.rint(v, out=v)
    np.fmax(v, 0, out=v)  # NaN becomes 0, as in the compiled loops
    np.minimum(v, hi, out=v)


def samples(x3: np.ndarray, k: np.ndarray, out3: np.ndarray, pads, border: str, cval: float, post: int,
            bias: float, hi: int) -> None:
    """Stride 1, dilation 1: ``x3 (H, W, S)`` (8- or 16-bit, any strides) correlated with ``k`` straight into
    stored samples ``out3 (Ho, Wo, S)``, every lane filtered (the caller overwrites lanes it does not want), block
    by block (:func:`_blocks`), each block finished (bias, output range, rounding, clipping) while in cache."""
    Ho, Wo, S = out3.shape
    o2 = out3.reshape(Ho, Wo * S)
    acc_type = _accumulator(k, cval, x3.dtype)
    int_finish = acc_type != np.float32 and float(bias) == round(float(bias)) and (
        _bound(k, cval, x3.dtype) + abs(float(bias)) + hi + 1 < np.iinfo(acc_type).max)
    for r0, A in _blocks(x3, k, (Ho, Wo), pads, border, cval):
        m = A.shape[0]
        if int_finish:
            _finish_int(A, post, bias, hi, o2[r0 : r0 + m])
        else:
            A = A if A.dtype == np.float32 else A.astype(np.float32)
            _finish_float(A, post, bias, hi)
            np.copyto(o2[r0 : r0 + m], A, casting="unsafe")


def _blocks(x3: np.ndarray, k: np.ndarray, shape, pads, border: str, cval: float):
    """Yield ``(first row, block)``: the stride-1 correlation of ``x3 (H, W, S)`` with ``k`` in blocks of rows
    ``(m, Wo*S)`` that stay in cache (one buffer, reused: use each block before the next). Each block's rows are
    first copied, padded as ``numpy.pad(mode=border)`` would pad them (:class:`_Padded`), into the accumulator's
    type, so that every
    tap is one multiply-add between arrays of one type. Integer kernels accumulate in int16 or int32 when every
    sum fits (exact, as the compiled loops under the same 2**24 condition), rank-1 float kernels (gaussian) in two
    1-D passes, others tap by tap in float32."""
    Ho, Wo = shape
    S = x3.shape[2]
    kh, kw = k.shape
    acc_type = _accumulator(k, cval, x3.dtype)
    n = Wo * S
    rows = max(1, BLOCK_BYTES // (np.dtype(acc_type).itemsize * n))
    # float kernels only: an integer kernel's factors would not be exact
    factors = rank1_factors(k.astype(np.float32)) if acc_type == np.float32 and min(k.shape) > 1 else None
    acc = np.empty((rows, n), acc_type)
    tmp = np.empty((rows + kh - 1, n), acc_type)  # the separable pass's rows, or a tap's product
    scratch = np.empty((rows + kh - 1, n), acc_type) if factors is not None else None
    padded = _Padded(x3, pads, border, cval, np.empty((rows + kh - 1, (Wo + kw - 1) * S), acc_type))
    taps = [(a, b, k[a, b]) for a in range(kh) for b in range(kw) if k[a, b]]
    if acc_type != np.float32:  # exact sums in any order: a tap of weight other than +-1 first (it sets the
        # accumulator by one multiply), so that every +-1 tap after it is a single add or subtract
        taps.sort(key=lambda t: abs(t[2]) == 1)
    for r0 in range(0, Ho, rows):
        m = min(rows, Ho - r0)
        A = acc[:m]
        p2 = padded.rows(r0, m + kh - 1)
        if factors is not None:
            u, v = factors
            h = tmp[: m + len(u) - 1]
            _taps(h, [(0, b, v[b]) for b in range(len(v)) if v[b]], p2, S, n, acc_type, scratch=scratch[: len(h)])
            _taps(A, [(a, 0, u[a]) for a in range(len(u)) if u[a]], h, 0, n, acc_type, scratch=scratch[:m])
        else:
            _taps(A, taps, p2, S, n, acc_type, scratch=tmp[:m])
        yield r0, A


class _Padded:
    """Rows of ``x3 (H, W, S)`` padded by ``pads (top, bottom, left, right)`` as ``numpy.pad(mode=border,
    constant_values=cval)`` pads them, made on demand into ``buffer`` (a 2-D array of the padded width times S,
    in the accumulator's type): the whole padded image is never made."""

    def __init__(self, x3, pads, border, cval, buffer):
        H, W, S = x3.shape
        top, bottom, left, right = pads
        self.x3, self.top, self.left, self.cval, self.buffer = x3, top, left, cval, buffer
        self.row_of = source_index(H, top, bottom, border)
        self.col_of = source_index(W, left, right, border)

    def rows(self, first: int, count: int) -> np.ndarray:
        """Padded rows ``first .. first+count-1`` as ``(count, padded width * S)``."""
        x3, top, left = self.x3, self.top, self.left
        H, W, S = x3.shape
        P = self.buffer[:count]
        P3 = P.reshape(count, -1, S)
        inner = P3[:, left : left + W]
        lo, hi = max(first, top), min(first + count, top + H)
        if lo < hi:  # the image's own rows, in one copy
            np.copyto(inner[lo - first : hi - first], x3[lo - top : hi - top], casting="unsafe")
        for r in (*range(min(lo, first + count) - first), *range(max(hi, first) - first, count)):
            src = self.row_of[first + r]  # a row above or below the image
            if src < 0:
                inner[r] = self.cval
            else:
                np.copyto(inner[r], x3[src], casting="unsafe")
        for j in (*range(left), *range(left + W, P3.shape[1])):  # a column left or right of it, from the
            src = self.col_of[j]  # padded rows' own samples
            if src < 0:
                P3[:, j] = self.cval
            else:
                P3[:, j] = P3[:, left + src]
        return P


def source_index(n: int, before: int, after: int, border: str) -> np.ndarray:
    """Which of ``n`` samples each of the ``before + n + after`` padded ones is, as ``numpy.pad(np.arange(n),
    (before, after), mode=border)`` gives it (-1: ``constant``'s value), without importing numpy.pad (about
    20 ms of a one-off command's start-up: it imports numpy.linalg)."""
    i = np.arange(-before, n + after)
    if border == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    if border == "edge":
        return np.clip(i, 0, n - 1)
    if border == "wrap":
        return i % n
    if border == "reflect":  # mirrored about the end samples: period 2n - 2
        if n == 1:
            return np.zeros_like(i)
        j = i % (2 * n - 2)
        return np.where(j < n, j, 2 * n - 2 - j)
    if border == "symmetric":  # mirrored about the ends: period 2n
        j = i % (2 * n)
        return np.where(j < n, j, 2 * n - 1 - j)
    msg = f"unknown border {border!r}"
    raise ValueError(msg)


def _taps(A, taps, src, S, n, acc_type, *, scratch) -> None:
    """``A = sum over taps (a, b, w) of w * src[a : a + rows, b*S : b*S + n]``, one multiply-add per tap."""
    m = A.shape[0]
    if not taps:
        A[...] = 0
        return
    for i, (a, b, w) in enumerate(taps):
        v = src[a : a + m, b * S : b * S + n]
        if acc_type == np.float32:
            w = np.float32(w)
        else:
            w = acc_type(int(w))
        if i == 0:
            np.multiply(v, w, out=A)
        elif w == 1:
            np.add(A, v, out=A)
        elif w == -1:
            np.subtract(A, v, out=A)
        else:
            np.multiply(v, w, out=scratch)
            A += scratch


def _finish_int(A: np.ndarray, post: int, bias: float, hi: int, out: np.ndarray) -> None:
    """:func:`_finish_float` on exact integer sums and an integer ``bias`` that fits with them, clipped straight
    into ``out``."""
    if bias:
        A += A.dtype.type(int(bias))
    if post == 1:
        np.abs(A, out=A)
    elif post == 2:
        A += A.dtype.type((hi + 1) // 2)
    np.clip(A, 0, hi, out=A)
    np.copyto(out, A, casting="unsafe")


def _bound(k: np.ndarray, cval: float, dtype) -> float:
    """The largest magnitude any partial sum can reach: the image type's range (or cval) times sum |k|."""
    info = np.iinfo(dtype)
    return max(abs(int(info.min)), int(info.max), abs(cval)) * float(np.abs(k).sum())


def _accumulator(k: np.ndarray, cval: float, dtype):
    """int16 or int32 when the kernel and cval are integers and every sum over an image of ``dtype`` fits in it,
    below 2**24, where the compiled loops' float32 sums are exact too; else float32. (A bias or mid-grey is added
    in the accumulator only when the total still fits: see ``samples``.)"""
    if not (np.array_equal(k, np.round(k)) and cval == round(cval)):
        return np.float32
    bound = _bound(k, cval, dtype)
    if bound >= 2**24:
        return np.float32
    return np.int16 if bound < 2**15 else np.int32


def pool(x3: np.ndarray, out3: np.ndarray, kh: int, kw: int, sh: int, sw: int, top: int, left: int, hend: int,
         wend: int, mode: int, include_pad: bool, dh: int = 1, dw: int = 1) -> None:
    """``_loops.pool_generic`` (and ``pool_2x2``) in numpy, to the bit, over the first two axes of ``x3`` (any
    number of lane axes after them: channels, or a batch's images and channels): a window's taps are
    ``i*sh - top + a*dh``;
    max (mode 0) and min (2) over real pixels only, NaN propagating; avg (1) adds the real pixels in row-major
    order (padding adds zeros, which changes no float sum) and divides in float64 by the taps inside the padded
    extent ``[-top, hend) x [-left, wend)`` (``include_pad``) or on real pixels, as the compiled loop does."""
    H, W = x3.shape[:2]
    Ho, Wo = out3.shape[:2]
    dtype = out3.dtype
    bottom = max(0, (Ho - 1) * sh + (kh - 1) * dh + 1 - top - H)
    right = max(0, (Wo - 1) * sw + (kw - 1) * dw + 1 - left - W)
    fill = {0: -np.inf, 1: 0.0, 2: np.inf}[mode]
    p = np.full((top + H + bottom, left + W + right, *x3.shape[2:]), fill, dtype)
    p[top : top + H, left : left + W] = x3
    acc = None
    for a in range(kh):
        for b in range(kw):
            r, c = a * dh, b * dw
            v = p[r : r + (Ho - 1) * sh + 1 : sh, c : c + (Wo - 1) * sw + 1 : sw]
            if acc is None:
                acc = v.copy()
            elif mode == 1:
                acc += v
            elif mode == 0:
                np.maximum(acc, v, out=acc)
            else:
                np.minimum(acc, v, out=acc)
    if mode != 1:
        out3[...] = acc
        return
    rows = taps_inside(Ho, sh, kh, dh, top, H, hend, include_pad)
    cols = taps_inside(Wo, sw, kw, dw, left, W, wend, include_pad)
    out3[...] = acc.astype(np.float64) / np.multiply.outer(rows, cols).reshape(Ho, Wo, *[1] * (x3.ndim - 2))


def taps_inside(n_out: int, stride: int, k: int, dilation: int, before: int, n: int, end: int,
                include_pad: bool) -> np.ndarray:
    """Per output row (or column): its window's taps inside the padded extent ``[-before, end)``
    (``include_pad``) or on real pixels ``[0, n)``, as float64; counted, not listed (one number per window)."""
    start = np.arange(n_out, dtype=np.int64) * stride - before
    last = np.minimum(k - 1, (np.int64(end if include_pad else n) - 1 - start) // dilation)
    first = np.zeros_like(start) if include_pad else np.maximum(0, -(start // dilation))
    return np.maximum(last - first + 1, 0).astype(np.float64)
