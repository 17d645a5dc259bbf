"""Every compiled loop of cnnfilter, and nothing else.

No validation, no ``raise``, no I/O: the public functions in ``filters``, ``pooling`` and ``conv`` check and
normalise every argument (contiguous float32 or float64 arrays, positive ints, in-range offsets) before they
call in here. Each function compiles lazily on its first call, once per dtype, and is cached on disk
(``cache=True``). Helpers that call each other stay in this one file: numba's cache does not notice changes
made in other files.

Layout: an image of ``C`` channels (channels-last) is seen as a 2-D array ``x`` of shape ``(H, W * C)``;
pixel ``(r, s)``, channel ``c`` is ``x[r, s * C + c]``. Output arrays use the same layout.

Border modes, as integers: 0 constant, 1 edge, 2 reflect, 3 symmetric, 4 wrap (numpy.pad's meanings).
"""

import numpy as np
from numba import njit, prange

# Let LLVM fuse multiply-adds and ignore the sign of zero; NaN and inf keep their IEEE meaning.
_FM = {"contract", "nsz"}
# Sums of products may be reordered (vectorised reductions): a network's training tolerates the last-bit differences.
_FMR = {"contract", "nsz", "reassoc"}


@njit(cache=True)
def _src(p, n, mode):
    """Index into ``range(n)`` that numpy.pad copies to padded position ``p`` (``-1``: the constant)."""
    if p >= 0 and p < n:
        return p
    if mode == 0:
        return -1
    if mode == 1:
        return 0 if p < 0 else n - 1
    if mode == 4:
        return p % n
    if mode == 3:
        m = p % (2 * n)
        return m if m < n else 2 * n - 1 - m
    if n == 1:  # reflect of a single sample repeats it
        return 0
    m = p % (2 * n - 2)
    return m if m < n else 2 * n - 2 - m


@njit(cache=True)
def _fill_row(x, r, buf, C, left, mode, cval):
    """``buf[jp * C + c]`` = padded row ``r`` at padded column ``jp`` (source column ``jp - left``)."""
    W = x.shape[1] // C
    n = buf.shape[0] // C
    if r < 0:
        buf[:] = cval
        return
    row = x[r]
    lo = min(left, n)
    hi = min(left + W, n)
    for jp in range(lo):
        s = _src(jp - left, W, mode)
        for c in range(C):
            buf[jp * C + c] = cval if s < 0 else row[s * C + c]
    buf[lo * C : hi * C] = row[(lo - left) * C : (hi - left) * C]
    for jp in range(hi, n):
        s = _src(jp - left, W, mode)
        for c in range(C):
            buf[jp * C + c] = cval if s < 0 else row[s * C + c]


@njit(cache=True)
def _pixel(x, k, S, c, r0, s0, dh, dw, mode, cval, acc):
    """One output value: the kernel's window whose top-left source pixel is ``(r0, s0)``, channel ``c`` of pixels
    ``S`` samples apart. ``acc`` is a zero of the accumulation type."""
    H = x.shape[0]
    W = x.shape[1] // S
    for a in range(k.shape[0]):
        r = _src(r0 + a * dh, H, mode)
        for b in range(k.shape[1]):
            s = _src(s0 + b * dw, W, mode)
            v = cval if (r < 0 or s < 0) else x[r, s * S + c]
            acc += k[a, b] * v
    return acc


@njit(cache=True, fastmath=_FM)
def _row3x3(x, k, acc, S, rs, start, m):
    """``acc[:m]`` = the unrolled 3x3 sum over source rows ``rs .. rs+2`` from sample ``start``: one sub-sum per
    kernel row, so the multiply-adds form short independent chains. Each tap reads its own view of the source
    row, so every index is the loop counter itself: numba drops its negative-index checks and LLVM vectorises."""
    k00, k01, k02 = k[0, 0], k[0, 1], k[0, 2]
    k10, k11, k12 = k[1, 0], k[1, 1], k[1, 2]
    k20, k21, k22 = k[2, 0], k[2, 1], k[2, 2]
    row = x[rs, start:]
    x00, x01, x02 = row[0:], row[S:], row[2 * S:]
    row = x[rs + 1, start:]
    x10, x11, x12 = row[0:], row[S:], row[2 * S:]
    row = x[rs + 2, start:]
    x20, x21, x22 = row[0:], row[S:], row[2 * S:]
    for j in range(m):
        acc[j] = (((k00 * x00[j] + k01 * x01[j] + k02 * x02[j])
                   + (k10 * x10[j] + k11 * x11[j] + k12 * x12[j]))
                  + (k20 * x20[j] + k21 * x21[j] + k22 * x22[j]))


@njit(cache=True, fastmath=_FM)
def _row5x5(x, k, acc, S, rs, start, m):
    """``acc[:m]`` = the unrolled 5x5 sum over source rows ``rs .. rs+4``, as :func:`_row3x3`."""
    k00, k01, k02, k03, k04 = k[0, 0], k[0, 1], k[0, 2], k[0, 3], k[0, 4]
    k10, k11, k12, k13, k14 = k[1, 0], k[1, 1], k[1, 2], k[1, 3], k[1, 4]
    k20, k21, k22, k23, k24 = k[2, 0], k[2, 1], k[2, 2], k[2, 3], k[2, 4]
    k30, k31, k32, k33, k34 = k[3, 0], k[3, 1], k[3, 2], k[3, 3], k[3, 4]
    k40, k41, k42, k43, k44 = k[4, 0], k[4, 1], k[4, 2], k[4, 3], k[4, 4]
    row = x[rs, start:]
    x00, x01, x02, x03, x04 = row[0:], row[S:], row[2 * S:], row[3 * S:], row[4 * S:]
    row = x[rs + 1, start:]
    x10, x11, x12, x13, x14 = row[0:], row[S:], row[2 * S:], row[3 * S:], row[4 * S:]
    row = x[rs + 2, start:]
    x20, x21, x22, x23, x24 = row[0:], row[S:], row[2 * S:], row[3 * S:], row[4 * S:]
    row = x[rs + 3, start:]
    x30, x31, x32, x33, x34 = row[0:], row[S:], row[2 * S:], row[3 * S:], row[4 * S:]
    row = x[rs + 4, start:]
    x40, x41, x42, x43, x44 = row[0:], row[S:], row[2 * S:], row[3 * S:], row[4 * S:]
    for j in range(m):
        acc[j] = ((((k00 * x00[j] + k01 * x01[j] + k02 * x02[j] + k03 * x03[j] + k04 * x04[j])
                    + (k10 * x10[j] + k11 * x11[j] + k12 * x12[j] + k13 * x13[j] + k14 * x14[j]))
                   + ((k20 * x20[j] + k21 * x21[j] + k22 * x22[j] + k23 * x23[j] + k24 * x24[j])
                      + (k30 * x30[j] + k31 * x31[j] + k32 * x32[j] + k33 * x33[j] + k34 * x34[j])))
                  + (k40 * x40[j] + k41 * x41[j] + k42 * x42[j] + k43 * x43[j] + k44 * x44[j]))


@njit(cache=True)
def _interior_rect(H, W, kh, kw, Ho, Wo, top, left):
    """Output rows ``[r0, r1)`` and columns ``[c0, c1)`` whose stride-1 windows lie inside the image."""
    r0 = min(top, Ho)
    r1 = min(max(H - kh + 1 + top, r0), Ho)
    c0 = min(left, Wo)
    c1 = min(max(W - kw + 1 + left, c0), Wo)
    if c1 == c0:
        r1 = r0
    return r0, r1, c0, c1


@njit(cache=True, fastmath={"nsz"})
def _finish_row(acc, o, n, post, bias, hi):
    """Samples from float results, in one pass: ``post`` -1 stores ``acc`` as it is (a float output); otherwise
    ``bias`` is added, then 0 keeps the value, 1 takes its absolute value, 2 adds mid-grey ``(hi + 1) / 2``;
    the result is rounded half-to-even and clipped to ``[0, hi]`` (NaN becomes 0), as ``io.to_depth`` does."""
    if post < 0:
        for q in range(n):
            o[q] = acc[q]
        return
    half = acc.dtype.type((hi + 1) / 2)
    top = acc.dtype.type(hi)
    b = acc.dtype.type(bias)
    for q in range(n):
        v = acc[q] + b
        if post == 1:
            v = abs(v)
        elif post == 2:
            v = v + half
        v = np.rint(v)
        if v != v or v < 0:
            v = 0
        elif v > top:
            v = top
        o[q] = v


@njit(cache=True)
def _other_lanes(x, o, S, C, wo, extra, hi):
    """Lanes ``C .. S-1`` of each output pixel (alpha, or Pillow's padding byte): 1 copies them from the same
    pixel of ``x``'s row, 2 sets them to ``hi`` (opaque), 0 leaves them."""
    if extra == 0 or C == S:
        return
    for j in range(wo):
        for c in range(C, S):
            o[j * S + c] = x[j * S + c] if extra == 1 else hi


@njit(cache=True)
def _border_pixels(x, k, acc, S, C, r0, left, mode, cval, j0, j1):
    """``acc`` for output columns ``[j0, j1)`` of the row whose windows start at source row ``r0``, pixel by
    pixel through the border rule."""
    zero = acc.dtype.type(0)
    for j in range(j0, j1):
        for c in range(C):
            acc[j * S + c] = _pixel(x, k, S, c, r0, j - left, 1, 1, mode, cval, zero)


@njit(parallel=True, cache=True, fastmath=_FM)
def correlate_small(x, k, out, S, C, top, left, mode, cval, scratch, post, bias, hi, extra):
    """Stride 1, dilation 1, a 3x3 or 5x5 kernel, straight into stored samples.

    ``x (H, W*S)`` and ``out (Ho, Wo*S)`` hold pixels ``S`` samples apart of which the first ``C`` are filtered
    (Pillow's 4-byte RGB and RGBA: ``S`` 4, ``C`` 3). Per output row: the unrolled interior into a float row of
    ``scratch`` (one row per chunk of rows), the border pixels one by one, then :func:`_finish_row` (bias, output
    range, rounding, clipping) into ``out`` and :func:`_other_lanes` for lanes ``C..S-1``.
    """
    H = x.shape[0]
    W = x.shape[1] // S
    kh = k.shape[0]
    Ho = out.shape[0]
    Wo = out.shape[1] // S
    r0, r1, c0, c1 = _interior_rect(H, W, kh, kh, Ho, Wo, top, left)
    if extra and (Ho != H or Wo != W):
        extra = 2  # no pixel of the input lies under each output pixel: opaque
    nchunks = scratch.shape[0]
    for t in prange(nchunks):
        acc = scratch[t]
        for i in range((t * Ho) // nchunks, ((t + 1) * Ho) // nchunks):
            if i >= r0 and i < r1:  # the unrolled interior, then the border columns
                m = (c1 - c0) * S
                if kh == 3:
                    _row3x3(x, k, acc[c0 * S:], S, i - top, (c0 - left) * S, m)
                else:
                    _row5x5(x, k, acc[c0 * S:], S, i - top, (c0 - left) * S, m)
                _border_pixels(x, k, acc, S, C, i - top, left, mode, cval, 0, c0)
                _border_pixels(x, k, acc, S, C, i - top, left, mode, cval, c1, Wo)
            else:
                _border_pixels(x, k, acc, S, C, i - top, left, mode, cval, 0, Wo)
            _finish_row(acc, out[i], Wo * S, post, bias, hi)
            _other_lanes(x[min(i, H - 1)], out[i], S, C, Wo, extra, hi)


@njit(parallel=True, cache=True)
def finish(values, out, S, C, post, bias, hi):
    """Stored samples from a float result ``values (Ho, Wo*C)`` into ``out (Ho, Wo*S)`` (lanes ``C..S-1`` left
    as they are), as :func:`_finish_row`: for the paths that filter into float first (separable, direct, FFT)."""
    Ho = values.shape[0]
    Wo = values.shape[1] // C
    for i in prange(Ho):
        if S == C:
            _finish_row(values[i], out[i], Wo * C, post, bias, hi)
        else:
            row = np.empty(Wo * C, out.dtype)
            _finish_row(values[i], row, Wo * C, post, bias, hi)
            for j in range(Wo):
                for c in range(C):
                    out[i, j * S + c] = row[j * C + c]


@njit(cache=True, fastmath=_FM)
def _axpy4(o, n, t0, t1, t2, t3, k0, k1, k2, k3):
    """``o[:n] += k0*t0 + k1*t1 + k2*t2 + k3*t3``: four taps per pass over ``o``, a quarter of the loads/stores."""
    for q in range(n):
        o[q] += (k0 * t0[q] + k1 * t1[q]) + (k2 * t2[q] + k3 * t3[q])


@njit(cache=True, fastmath=_FM)
def _axpy1(o, n, t0, k0):
    for q in range(n):
        o[q] += k0 * t0[q]


@njit(cache=True, fastmath=_FM)
def _taps_row(o, n, buf, w, step):
    """``o[:n] += sum_b w[b] * buf[b*step : b*step + n]``, taps four at a time."""
    kw = w.shape[0]
    b = 0
    while b + 4 <= kw:
        _axpy4(o, n, buf[b * step :], buf[(b + 1) * step :], buf[(b + 2) * step :], buf[(b + 3) * step :],
               w[b], w[b + 1], w[b + 2], w[b + 3])
        b += 4
    while b < kw:
        _axpy1(o, n, buf[b * step :], w[b])
        b += 1


@njit(parallel=True, cache=True, fastmath=_FM)
def correlate_direct(x, k, out, C, sh, sw, dh, dw, top, left, mode, cval, nchunks):
    """Any kernel, stride and dilation: per output row, pad the kh source rows into a buffer, then one
    vectorised multiply-add over the row per tap."""
    H = x.shape[0]
    kh, kw = k.shape
    Ho = out.shape[0]
    Wo = out.shape[1] // C
    span = (Wo - 1) * sw + (kw - 1) * dw + 1
    n = Wo * C
    for t in prange(nchunks):
        i0 = t * Ho // nchunks
        i1 = (t + 1) * Ho // nchunks
        buf = np.empty(span * C, x.dtype)
        for i in range(i0, i1):
            o = out[i]
            o[:] = 0
            for a in range(kh):
                _fill_row(x, _src(i * sh + a * dh - top, H, mode), buf, C, left, mode, cval)
                if sw == 1:
                    _taps_row(o, n, buf, k[a], dw * C)
                    continue
                for b in range(kw):
                    kv = k[a, b]
                    tap = buf[b * dw * C :]  # a view: every index below is non-negative by construction
                    for j in range(Wo):
                        for c in range(C):
                            o[j * C + c] += kv * tap[j * sw * C + c]


@njit(cache=True, fastmath=_FM)
def _hpass(x, s, v, buf, hrow, C, sw, dw, left, mode, cval):
    """Horizontal pass of the separable path: padded source row ``s`` correlated with ``v`` into ``hrow``."""
    H = x.shape[0]
    r = _src(s, H, mode)
    n = hrow.shape[0]
    Wo = n // C
    if r < 0:
        total = v.sum()
        hrow[:] = cval * total
        return
    _fill_row(x, r, buf, C, left, mode, cval)
    hrow[:] = 0
    if sw == 1:
        _taps_row(hrow, n, buf, v, dw * C)
        return
    for b in range(v.shape[0]):
        kv = v[b]
        tap = buf[b * dw * C :]
        for j in range(Wo):
            for c in range(C):
                hrow[j * C + c] += kv * tap[j * sw * C + c]


@njit(parallel=True, cache=True, fastmath=_FM)
def correlate_separable(x, u, v, out, C, sh, sw, dh, dw, top, left, mode, cval, nchunks):
    """Rank-1 kernel ``outer(u, v)``: each chunk of output rows keeps a ring of horizontally filtered rows,
    so every source row is filtered once per chunk, then combined vertically."""
    kh = u.shape[0]
    kw = v.shape[0]
    Ho = out.shape[0]
    Wo = out.shape[1] // C
    n = Wo * C
    span = (Wo - 1) * sw + (kw - 1) * dw + 1
    rspan = (kh - 1) * dh + 1
    for t in prange(nchunks):
        i0 = t * Ho // nchunks
        i1 = (t + 1) * Ho // nchunks
        buf = np.empty(span * C, x.dtype)
        ring = np.empty((rspan, n), x.dtype)
        last = -(1 << 62)
        for i in range(i0, i1):
            s0 = i * sh - top
            for s in range(max(last + 1, s0), s0 + rspan):
                _hpass(x, s, v, buf, ring[s % rspan], C, sw, dw, left, mode, cval)
            last = s0 + rspan - 1
            o = out[i]
            o[:] = 0
            a = 0
            while a + 4 <= kh:
                _axpy4(o, n, ring[(s0 + a * dh) % rspan], ring[(s0 + (a + 1) * dh) % rspan],
                       ring[(s0 + (a + 2) * dh) % rspan], ring[(s0 + (a + 3) * dh) % rspan],
                       u[a], u[a + 1], u[a + 2], u[a + 3])
                a += 4
            while a < kh:
                _axpy1(o, n, ring[(s0 + a * dh) % rspan], u[a])
                a += 1


# ---------------------------------------------------------------------------------------------- pooling
# modes: 0 max, 1 avg, 2 min. NaN propagates through max and min, as in numpy and PyTorch.


@njit(cache=True, inline="always")
def _window_taps(start, k, d, n, end, found):
    """A window's taps ``start + a*d``: those on real pixels (``[0, n)``) into ``found``; returns their count and
    the count inside the padded extent (below ``end``)."""
    real = 0
    padded = 0
    for a in range(k):
        t = start + a * d
        if t < end:
            padded += 1
        if 0 <= t < n:
            found[real] = t
            real += 1
    return real, padded


@njit(parallel=True, cache=True)
def pool_generic(x, out, arg, C, kh, kw, sh, sw, dh, dw, top, left, hend, wend, mode, include_pad):
    """Pool each plane ``x[q]`` (``(H, W * C)``, ``C`` channels-last lanes) into ``out[q]``: an image is one plane of
    C lanes, a network's ``(N, C, H, W)`` batch is ``N * C`` planes of one lane. PyTorch's rule, with ONNX's
    dilations: a window's taps are ``i*sh - top + a*dh``; avg divides by the number of taps inside the padded extent
    ``[-top, hend)`` (``include_pad``) or by the number on real pixels; padding never takes part in max/min; NaN
    propagates (the first one met wins). Every window holds a real pixel (the callers check). When ``arg`` is not
    empty, max (and min) record the flat index in its plane of the value taken (the first in row-major order on
    ties), for the backward pass."""
    P, H = x.shape[0], x.shape[1]
    W = x.shape[2] // C
    Ho = out.shape[1]
    Wo = out.shape[2] // C
    keep = arg.shape[0] > 0
    for t in prange(P * Ho):
        q = t // Ho
        i = t - q * Ho
        plane = x[q]
        rows = np.empty(kh, np.int64)
        nr, pr = _window_taps(i * sh - top, kh, dh, H, hend, rows)
        cols = np.empty(kw, np.int64)
        for j in range(Wo):
            nc, pc = _window_taps(j * sw - left, kw, dw, W, wend, cols)
            div = pr * pc if include_pad else nr * nc
            for c in range(C):
                if mode == 1:
                    acc = x.dtype.type(0)
                    for u in range(nr):
                        for v in range(nc):
                            acc += plane[rows[u], cols[v] * C + c]
                    out[q, i, j * C + c] = acc / div
                else:
                    m = plane[rows[0], cols[0] * C + c]
                    where = rows[0] * W * C + cols[0] * C + c
                    for u in range(nr):
                        for v in range(nc):
                            val = plane[rows[u], cols[v] * C + c]
                            if val != val or (val > m if mode == 0 else val < m):
                                m = val
                                where = rows[u] * W * C + cols[v] * C + c
                            if m != m:
                                break
                        if m != m:
                            break
                    out[q, i, j * C + c] = m
                    if keep:
                        arg[q, i, j * C + c] = where


@njit(cache=True, inline="always")
def _pick(a, b, mode):
    """The winner of ``a`` (met first) and ``b``: the larger (max, ``mode`` 0) or smaller (min), the first on a
    tie (+0.0 and -0.0 keep their order, as in :func:`pool_generic`), NaN whichever comes first."""
    if mode == 0:
        return a if (a >= b or a != a) else b
    return a if (a <= b or a != a) else b


@njit(parallel=True, cache=True, fastmath=_FM)
def pool_2x2(x, out, C, mode):
    """2x2 windows at stride 2, no padding, every window whole; planes as in :func:`pool_generic`."""
    P = x.shape[0]
    Ho = out.shape[1]
    Wo = out.shape[2] // C
    for t in prange(P * Ho):
        q = t // Ho
        i = t - q * Ho
        a = x[q, 2 * i]
        b = x[q, 2 * i + 1]
        o = out[q, i]
        if C == 1:
            if mode == 1:
                for j in range(Wo):
                    o[j] = (a[2 * j] + a[2 * j + 1] + b[2 * j] + b[2 * j + 1]) * 0.25
            else:
                for j in range(Wo):
                    o[j] = _pick(_pick(a[2 * j], a[2 * j + 1], mode), _pick(b[2 * j], b[2 * j + 1], mode), mode)
        else:
            for j in range(Wo):
                for c in range(C):
                    p = 2 * j * C + c
                    if mode == 1:
                        o[j * C + c] = (a[p] + a[p + C] + b[p] + b[p + C]) * 0.25
                    else:
                        o[j * C + c] = _pick(_pick(a[p], a[p + C], mode), _pick(b[p], b[p + C], mode), mode)


@njit(cache=True, inline="always")
def _beats(v, m):
    """Whether ``v`` replaces the running maximum ``m``: larger, or the first NaN (branch-free)."""
    return (v > m) | ((v != v) & (m == m))


@njit(parallel=True, cache=True)
def maxpool_2x2_arg(x, out, arg):
    """:func:`pool_generic`'s max with ``arg`` on one-lane planes, 2x2 windows at stride 2 without padding (a
    network's common case): unrolled, with selects rather than branches (training data defeats branch prediction);
    the same values and indices (NaN first, then the first maximum in row-major order). One task per plane."""
    P = x.shape[0]
    Ho, Wo = out.shape[1], out.shape[2]
    W = x.shape[2]
    for q in prange(P):
        for i in range(Ho):
            r0 = x[q, 2 * i]
            r1 = x[q, 2 * i + 1]
            o = out[q, i]
            g = arg[q, i]
            base = 2 * i * W
            for j in range(Wo):
                m = r0[2 * j]
                k = 0
                v = r0[2 * j + 1]
                up = _beats(v, m)
                m = v if up else m
                k = 1 if up else k
                v = r1[2 * j]
                up = _beats(v, m)
                m = v if up else m
                k = W if up else k
                v = r1[2 * j + 1]
                up = _beats(v, m)
                m = v if up else m
                k = W + 1 if up else k
                o[j] = m
                g[j] = base + 2 * j + k


@njit(cache=True)
def _first_taps(n_out, stride, k, d, before, n, end):
    """For each of ``n_out`` windows along an axis (:func:`_window_taps`' rule): its first tap on a real pixel and
    how many of its taps are (they are consecutive taps, ``d`` apart)."""
    first = np.empty(n_out, np.int64)
    count = np.empty(n_out, np.int64)
    found = np.empty(k, np.int64)
    for i in range(n_out):
        real, _ = _window_taps(i * stride - before, k, d, n, end, found)
        first[i] = found[0]
        count[i] = real
    return first, count


@njit(parallel=True, cache=True)
def pool_separable(x, out, kh, kw, sh, sw, dh, dw, top, left, hend, wend, mode, bands):
    """:func:`pool_generic`'s max (``mode`` 0) or min (2) of one-lane planes ``x (P, H, W)`` into ``out (P, Ho,
    Wo)``, without winners' indices: max and min are separable, so the rows some window reads are first pooled
    along the row, then the results across rows, each pass one vectorised sweep per tap (a network's 3x3 windows
    at stride 2). The same values, to the bit: NaN propagates and ties keep the first in row-major order, as there.
    One task per band of output rows of a plane (``bands`` per plane: more than one when there are fewer planes
    than threads); the work is at most the windows' own taps, whatever the stride."""
    P, H, W = x.shape
    Ho, Wo = out.shape[1], out.shape[2]
    r0, rn = _first_taps(Ho, sh, kh, dh, top, H, hend)
    c0, cn = _first_taps(Wo, sw, kw, dw, left, W, wend)
    used = np.zeros(H, np.bool_)  # rows that some window reads
    for i in range(Ho):
        for u in range(rn[i]):
            used[r0[i] + u * dh] = True
    j0 = 0  # the columns [j0, j1) whose windows lie wholly on the image
    while j0 < Wo and cn[j0] < kw:
        j0 += 1
    j1 = Wo
    while j1 > j0 and cn[j1 - 1] < kw:
        j1 -= 1
    per = (Ho + bands - 1) // bands
    for t in prange(P * bands):
        q = t // bands
        i0 = (t - q * bands) * per
        i1 = min(Ho, i0 + per)
        if i0 < i1:
            lo = H  # the rows this band's windows read lie in [lo, hi) (with dilation a window's first row on
            hi = 0  # the image may lie above the previous window's)
            for i in range(i0, i1):
                lo = min(lo, r0[i])
                hi = max(hi, r0[i] + (rn[i] - 1) * dh + 1)
            h = np.empty((hi - lo, Wo), x.dtype)
            plane = x[q]
            for r in range(lo, hi):
                if used[r]:
                    row = plane[r]
                    hr = h[r - lo]
                    for j in range(Wo):  # windows cut by the edge: tap by tap
                        if j < j0 or j >= j1:
                            m = row[c0[j]]
                            for v in range(1, cn[j]):
                                m = _pick(m, row[c0[j] + v * dw], mode)
                            hr[j] = m
                    if j1 > j0:
                        s = c0[j0]
                        for j in range(j1 - j0):
                            hr[j0 + j] = row[s + j * sw]
                        for v in range(1, kw):
                            for j in range(j1 - j0):
                                hr[j0 + j] = _pick(hr[j0 + j], row[s + j * sw + v * dw], mode)
            for i in range(i0, i1):
                o = out[q, i]
                first = h[r0[i] - lo]
                for j in range(Wo):
                    o[j] = first[j]
                for u in range(1, rn[i]):
                    hu = h[r0[i] + u * dh - lo]
                    for j in range(Wo):
                        o[j] = _pick(o[j], hu[j], mode)


@njit(parallel=True, cache=True)
def pool_arg_backward(dy, arg, dx):
    """Each output gradient goes to the tap its window took (``arg``); every plane of ``dx`` is overwritten."""
    P = dy.shape[0]
    Ho, Wo = dy.shape[1], dy.shape[2]
    for q in prange(P):
        plane = dx[q].reshape(dx.shape[1] * dx.shape[2])
        plane[:] = 0
        for i in range(Ho):
            for j in range(Wo):
                plane[arg[q, i, j]] += dy[q, i, j]


@njit(parallel=True, cache=True, fastmath=_FM)
def pool_avg_backward(dy, dx, C, kh, kw, sh, sw, dh, dw, top, left, hend, wend, include_pad):
    """The adjoint of :func:`pool_generic`'s average: each output gradient divided as the forward divided, spread
    over its window's real pixels; every plane of ``dx`` is overwritten, one plane per task."""
    P, H = dx.shape[0], dx.shape[1]
    W = dx.shape[2] // C
    Ho = dy.shape[1]
    Wo = dy.shape[2] // C
    for q in prange(P):
        plane = dx[q]
        plane[:, :] = 0
        rows = np.empty(kh, np.int64)
        cols = np.empty(kw, np.int64)
        for i in range(Ho):
            nr, pr = _window_taps(i * sh - top, kh, dh, H, hend, rows)
            for j in range(Wo):
                nc, pc = _window_taps(j * sw - left, kw, dw, W, wend, cols)
                div = pr * pc if include_pad else nr * nc
                for c in range(C):
                    g = dy[q, i, j * C + c] / div
                    for u in range(nr):
                        for v in range(nc):
                            plane[rows[u], cols[v] * C + c] += g


# ---------------------------------------------------------------------------------------------- conv2d


@njit(parallel=True, cache=True, fastmath=_FM)
def conv2d_forward(xp, w, bias, out, sh, sw, dh, dw, groups):
    """CNN layer on a zero-padded batch ``xp (N, Cin, Hp, Wp)``, ``w (O, Cin/groups, kh, kw)``.

    Each (sample, filter) plane is one task. At stride 1 the plane is computed on the padded width, so every tap
    is a single long multiply-add over the flattened plane; the extra columns are dropped when copied out.
    """
    N, Cin, Hp, Wp = xp.shape
    O, Cg, kh, kw = w.shape
    Ho = out.shape[2]
    Wo = out.shape[3]
    Og = O // groups
    L = (Ho - 1) * Wp * sh + (Wo - 1) * sw + 1
    for t in prange(N * O):
        n = t // O
        o = t - n * O
        g = o // Og
        if sh == 1 and sw == 1:
            acc = np.empty(L, xp.dtype)
            acc[:] = bias[o]
            for c in range(Cg):
                xf = xp[n, g * Cg + c].reshape(Hp * Wp)
                for a in range(kh):
                    for b in range(kw):
                        kv = w[o, c, a, b]
                        tap = xf[a * dh * Wp + b * dw :]
                        for p in range(L):
                            acc[p] += kv * tap[p]
            for i in range(Ho):
                out[n, o, i, :] = acc[i * Wp : i * Wp + Wo]
        else:
            plane = out[n, o]
            plane[:, :] = bias[o]
            for i in range(Ho):
                orow = plane[i]
                for c in range(Cg):
                    for a in range(kh):
                        xrow = xp[n, g * Cg + c, i * sh + a * dh]
                        for b in range(kw):
                            kv = w[o, c, a, b]
                            tap = xrow[b * dw :]
                            for j in range(Wo):
                                orow[j] += kv * tap[j * sw]


@njit(cache=True, fastmath=_FM)
def _conv3x3_pair(acc0, acc1, xf, w, o0, o1, c, rows, cols, L):
    """``acc0 += w[o0, c] * xf``, ``acc1 += w[o1, c] * xf`` (3x3 taps on the flattened plane): each source
    vector is loaded once for both filters."""
    r1, r2 = rows, 2 * rows
    d1, d2 = cols, 2 * cols
    a00, a01, a02 = xf, xf[d1:], xf[d2:]
    a10, a11, a12 = xf[r1:], xf[r1 + d1 :], xf[r1 + d2 :]
    a20, a21, a22 = xf[r2:], xf[r2 + d1 :], xf[r2 + d2 :]
    u00, u01, u02 = w[o0, c, 0, 0], w[o0, c, 0, 1], w[o0, c, 0, 2]
    u10, u11, u12 = w[o0, c, 1, 0], w[o0, c, 1, 1], w[o0, c, 1, 2]
    u20, u21, u22 = w[o0, c, 2, 0], w[o0, c, 2, 1], w[o0, c, 2, 2]
    v00, v01, v02 = w[o1, c, 0, 0], w[o1, c, 0, 1], w[o1, c, 0, 2]
    v10, v11, v12 = w[o1, c, 1, 0], w[o1, c, 1, 1], w[o1, c, 1, 2]
    v20, v21, v22 = w[o1, c, 2, 0], w[o1, c, 2, 1], w[o1, c, 2, 2]
    for p in range(L):
        x00, x01, x02 = a00[p], a01[p], a02[p]
        x10, x11, x12 = a10[p], a11[p], a12[p]
        x20, x21, x22 = a20[p], a21[p], a22[p]
        acc0[p] += ((u00 * x00 + u01 * x01 + u02 * x02) + (u10 * x10 + u11 * x11 + u12 * x12)) + (
            u20 * x20 + u21 * x21 + u22 * x22)
        acc1[p] += ((v00 * x00 + v01 * x01 + v02 * x02) + (v10 * x10 + v11 * x11 + v12 * x12)) + (
            v20 * x20 + v21 * x21 + v22 * x22)


@njit(cache=True, inline="always")
def _relu(v):
    """``v``, or 0 when negative; NaN stays NaN (as numpy.maximum(v, 0))."""
    return v if (v > 0.0 or v != v) else 0.0


@njit(parallel=True, cache=True, fastmath=_FM)
def conv2d_3x3(xp, w, bias, out, dh, dw, groups, relu):
    """conv2d_forward for 3x3 kernels at stride 1, two filters per task sharing every load of the input; with
    ``relu``, negative outputs become 0 as they are stored (NaN stays NaN)."""
    N, Cin, Hp, Wp = xp.shape
    O, Cg = w.shape[0], w.shape[1]
    Ho = out.shape[2]
    Wo = out.shape[3]
    Og = O // groups
    pairs = (O + 1) // 2
    L = (Ho - 1) * Wp + Wo
    for t in prange(N * pairs):
        n = t // pairs
        o0 = 2 * (t - n * pairs)
        o1 = min(o0 + 1, O - 1)  # an odd last filter is computed twice, harmlessly
        g0 = o0 // Og
        g1 = o1 // Og
        acc0 = np.empty(L, xp.dtype)
        acc1 = np.empty(L, xp.dtype)
        acc0[:] = bias[o0]
        acc1[:] = bias[o1]
        for c in range(Cg):
            x0 = xp[n, g0 * Cg + c].reshape(Hp * Wp)
            if g0 == g1:
                _conv3x3_pair(acc0, acc1, x0, w, o0, o1, c, dh * Wp, dw, L)
            else:  # the pair straddles two groups: one filter at a time, the other half into scratch
                scratch = np.zeros(L, xp.dtype)
                _conv3x3_pair(acc0, scratch, x0, w, o0, o0, c, dh * Wp, dw, L)
                x1 = xp[n, g1 * Cg + c].reshape(Hp * Wp)
                _conv3x3_pair(scratch, acc1, x1, w, o1, o1, c, dh * Wp, dw, L)
        for i in range(Ho):
            if relu:
                for j in range(Wo):
                    out[n, o0, i, j] = _relu(acc0[i * Wp + j])
                    out[n, o1, i, j] = _relu(acc1[i * Wp + j])
            else:
                out[n, o0, i, :] = acc0[i * Wp : i * Wp + Wo]
                out[n, o1, i, :] = acc1[i * Wp : i * Wp + Wo]


@njit(parallel=True, cache=True, fastmath=_FM)
def bias_relu(o3, bias, relu):
    """``o3[n, o] += bias[o]`` on a convolution's output ``(N, O, L)``, then, with ``relu``, negatives to 0 (NaN
    stays NaN, as numpy.maximum leaves it), in one pass over each plane."""
    N, O, L = o3.shape
    for t in prange(N * O):
        n = t // O
        o = t - n * O
        row = o3[n, o]
        b = bias[o]
        if relu:
            for j in range(L):
                row[j] = _relu(row[j] + b)
        else:
            for j in range(L):
                row[j] += b


@njit(parallel=True, cache=True, fastmath=_FM)
def im2col(xp, cols, kh, kw, sh, sw, dh, dw, Ho, Wo):
    """``cols[n, (c, a, b), i * Wo + j] = xp[n, c, i*sh + a*dh, j*sw + b*dw]`` from a zero-padded batch: the
    columns a convolution is one matrix product with (done by BLAS, after this loop). One task per row of columns."""
    N, C = xp.shape[0], xp.shape[1]
    K = C * kh * kw
    for t in prange(N * K):
        n = t // K
        r = t - n * K
        c = r // (kh * kw)
        a = (r // kw) % kh
        b = r % kw
        row = cols[n, r]
        off = b * dw
        for i in range(Ho):
            src = xp[n, c, i * sh + a * dh]
            dst = row[i * Wo : (i + 1) * Wo]
            if sw == 1:
                dst[:] = src[off : off + Wo]
            else:
                for j in range(Wo):
                    dst[j] = src[off + j * sw]


@njit(parallel=True, cache=True, fastmath=_FM)
def im2col_wide(xq, cols, kh, kw, dh, dw, i0, i1, Wo):
    """:func:`im2col` of output rows ``i0 <= i < i1`` laid out for one matrix product over a whole block of images,
    ``cols[(c, a, b), (n * (i1 - i0) + i - i0) * Wo + j]``, from the padded batch split into its stride phases:
    ``xq[n, c, u, v, y, z] = xp[n, c, y*sh + u, z*sw + v]`` (``xq.shape[2:4] == (sh, sw)``), so that every tap's
    row of outputs is a contiguous slice of one phase, copied rather than gathered. One task per row of columns."""
    N, C, sh, sw = xq.shape[0], xq.shape[1], xq.shape[2], xq.shape[3]
    for r in prange(C * kh * kw):
        c = r // (kh * kw)
        a = (r // kw) % kh
        b = r % kw
        u, y0 = (a * dh) % sh, (a * dh) // sh
        v, z0 = (b * dw) % sw, (b * dw) // sw
        row = cols[r]
        p = 0
        for n in range(N):
            plane = xq[n, c, u, v]
            for i in range(i0, i1):
                if Wo >= 16:  # a slice copy (vectorised)
                    row[p : p + Wo] = plane[i + y0, z0 : z0 + Wo]
                else:  # a few values: element by element, without making views
                    for j in range(Wo):
                        row[p + j] = plane[i + y0, z0 + j]
                p += Wo


# Stride 1 on the flattened plane, for training: the padded input plane is seen flat (width Wp) and the output is
# computed on the same width, so tap (c, a, b) is the flat input shifted by ``offs[k] = c*Hp*Wp + a*dh*Wp + b*dw``
# and every product is one long multiply-add over contiguous memory. The last Wp - Wo columns of each output row
# are junk, dropped on the way out (forward) or zero on the way in (backward). With groups, filter ``o`` reads the
# channels of its group ``g = o // (O / groups)``: the same offsets from ``g * Cg * Hp * Wp``.


@njit(cache=True, fastmath=_FM)
def _taps_combination(w2, xf, offs, dst, bias, L):
    """``dst[o, :L] = bias[o] + sum_k w2[o, k] * xf[offs[k] : offs[k] + L]``, four taps per pass."""
    O, K = w2.shape
    K4 = K - K % 4
    for o in range(O):
        r = dst[o]
        r[:L] = bias[o]
        for k in range(0, K4, 4):
            v0, v1, v2, v3 = w2[o, k], w2[o, k + 1], w2[o, k + 2], w2[o, k + 3]
            s0 = xf[offs[k] :]
            s1 = xf[offs[k + 1] :]
            s2 = xf[offs[k + 2] :]
            s3 = xf[offs[k + 3] :]
            for p in range(L):
                r[p] += (v0 * s0[p] + v1 * s1[p]) + (v2 * s2[p] + v3 * s3[p])
        for k in range(K4, K):
            v = w2[o, k]
            s = xf[offs[k] :]
            for p in range(L):
                r[p] += v * s[p]


@njit(parallel=True, cache=True, fastmath=_FM)
def conv1_forward(xp, w2, bias, offs, out, groups):
    """Stride-1 convolution of the zero-padded batch ``xp (N, C, Hp, Wp)`` into ``out (N, O, Ho, Wo)``, one sample
    per task (filters of any size and dilation, as ``offs`` says)."""
    N, C, Hp, Wp = xp.shape
    O, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    Og = O // groups
    plane = (C // groups) * Hp * Wp
    L = (Ho - 1) * Wp + Wo
    for n in prange(N):
        acc = np.empty((O, Ho * Wp), xp.dtype)
        xf = xp[n].reshape(C * Hp * Wp)
        for g in range(groups):
            _taps_combination(w2[g * Og : (g + 1) * Og], xf[g * plane :], offs, acc[g * Og : (g + 1) * Og],
                              bias[g * Og : (g + 1) * Og], L)
        for o in range(O):
            for i in range(Ho):
                out[n, o, i, :] = acc[o, i * Wp : i * Wp + Wo]


@njit(parallel=True, cache=True, fastmath=_FMR)
def conv1_weight(xp, dyp, offs, L, dwp, dbp, groups):
    """``dwp[t, o, k] = sum over samples n of task t of dot(dyp[n, o, :L], xflat[n][g*plane + offs[k]:][:L])``
    (the junk columns of ``dyp`` are 0) and ``dbp[t, o]`` the bias sums; the caller sums over tasks."""
    N, C, Hp, Wp = xp.shape
    O = dyp.shape[1]
    Og = O // groups
    plane = (C // groups) * Hp * Wp
    K = offs.shape[0]
    K4 = K - K % 4
    T = dwp.shape[0]
    for t in prange(T):
        acc = dwp[t]
        acc[:, :] = 0
        dbp[t, :] = 0
        for n in range(t * N // T, (t + 1) * N // T):
            for o in range(O):
                xf = xp[n].reshape(C * Hp * Wp)[(o // Og) * plane :]
                g = dyp[n, o]
                s = g[0] - g[0]
                for p in range(L):
                    s += g[p]
                dbp[t, o] += s
                for k in range(0, K4, 4):
                    s0 = xf[offs[k] :]
                    s1 = xf[offs[k + 1] :]
                    s2 = xf[offs[k + 2] :]
                    s3 = xf[offs[k + 3] :]
                    zero = g[0] - g[0]  # 0 in the arrays' dtype (g[0] * 0 would be float64: no float32 vectors)
                    d0 = d1 = d2 = d3 = zero
                    for p in range(L):
                        gp = g[p]
                        d0 += gp * s0[p]
                        d1 += gp * s1[p]
                        d2 += gp * s2[p]
                        d3 += gp * s3[p]
                    acc[o, k] += d0
                    acc[o, k + 1] += d1
                    acc[o, k + 2] += d2
                    acc[o, k + 3] += d3
                for k in range(K4, K):
                    sk = xf[offs[k] :]
                    d = g[0] - g[0]
                    for p in range(L):
                        d += g[p] * sk[p]
                    acc[o, k] += d


@njit(parallel=True, cache=True, fastmath=_FM)
def conv1_input(w2, dyp, offs, L, dxp, groups):
    """``dxp[n]`` (flat) ``[g*plane + offs[k] + q] += sum_{o in group g} w2[o, k] * dyp[n, o, q]``: the input
    gradient on the padded plane, one sample per task (each writes only its own ``dxp[n]``, overwritten)."""
    N, C, Hp, Wp = dxp.shape
    O = dyp.shape[1]
    Og = O // groups
    plane = (C // groups) * Hp * Wp
    K = offs.shape[0]
    for n in prange(N):
        df = dxp[n].reshape(C * Hp * Wp)
        df[:] = 0
        g = dyp[n]
        for grp in range(groups):
            o0 = grp * Og
            O4 = o0 + Og - Og % 4
            for k in range(K):
                dst = df[grp * plane + offs[k] :]
                for o in range(o0, O4, 4):
                    v0, v1, v2, v3 = w2[o, k], w2[o + 1, k], w2[o + 2, k], w2[o + 3, k]
                    g0, g1, g2, g3 = g[o], g[o + 1], g[o + 2], g[o + 3]
                    for p in range(L):
                        dst[p] += (v0 * g0[p] + v1 * g1[p]) + (v2 * g2[p] + v3 * g3[p])
                for o in range(O4, o0 + Og):
                    v = w2[o, k]
                    go = g[o]
                    for p in range(L):
                        dst[p] += v * go[p]


@njit(parallel=True, cache=True, fastmath=_FM)
def col2im(cols, dxp, kh, kw, sh, sw, dh, dw, Ho, Wo):
    """The adjoint of :func:`im2col`: ``dxp[n]`` (the padded input's gradient, overwritten) is the scatter-add of
    ``cols[n]``, one sample per task."""
    N, C = dxp.shape[0], dxp.shape[1]
    for n in prange(N):
        dxp[n] = 0
        for c in range(C):
            for a in range(kh):
                for b in range(kw):
                    row = cols[n, (c * kh + a) * kw + b]
                    off = b * dw
                    for i in range(Ho):
                        dst = dxp[n, c, i * sh + a * dh]
                        src = row[i * Wo : (i + 1) * Wo]
                        if sw == 1:
                            for j in range(Wo):
                                dst[off + j] += src[j]
                        else:
                            for j in range(Wo):
                                dst[off + j * sw] += src[j]
