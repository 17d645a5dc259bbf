"""The tiny CNN's compiled loops: im2col / col2im for convolution, max and average pooling forward and backward.

No validation, no ``raise``: the layers in ``layers.py`` pass contiguous float32 (or float64, in the gradient
tests) arrays of checked shapes. Every loop runs in parallel over (sample, channel) planes, and each task writes
only its own plane: the scatter-adds of the backward passes never share memory between threads.

Layout: activations are ``(N, C, H, W)``; ``cols`` is ``(N, C * kh * kw, Ho * Wo)``, row ``c * kh * kw + a * kw
+ b`` holding, for every output position, the input under tap ``(a, b)`` of channel ``c`` (0 in the padding).
"""

import numpy as np
from numba import njit, prange

_FM = {"contract", "nsz"}
# Sums of products may be reordered (vectorised reductions): training tolerates the last-bit differences.
_FMR = {"contract", "nsz", "reassoc"}


@njit(cache=True, fastmath=_FM)
def _im2col_one(x, n, cols, kh, kw, sh, sw, dh, dw, top, left, Ho, Wo):
    """``cols[(c, a, b), (i, j)] = x[n, c, i*sh + a*dh - top, j*sw + b*dw - left]``, 0 outside ``x``."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    for c in range(C):
        for a in range(kh):
            for b in range(kw):
                row = cols[(c * kh + a) * kw + b]
                off = b * dw - left
                # output columns j whose source column j*sw + off lies inside 0..W-1
                j0 = min(Wo, 0 if off >= 0 else (-off + sw - 1) // sw)
                j1 = 0 if W - 1 - off < 0 else min(Wo, (W - 1 - off) // sw + 1)
                j1 = max(j0, j1)
                for i in range(Ho):
                    r = i * sh + a * dh - top
                    dst = row[i * Wo : (i + 1) * Wo]
                    if r < 0 or r >= H:
                        dst[:] = 0
                        continue
                    src = x[n, c, r]
                    for j in range(j0):
                        dst[j] = 0
                    if sw == 1:
                        for j in range(j0, j1):
                            dst[j] = src[j + off]
                    else:
                        for j in range(j0, j1):
                            dst[j] = src[j * sw + off]
                    for j in range(j1, Wo):
                        dst[j] = 0


@njit(cache=True, fastmath=_FM)
def _col2im_one(cols, dx, n, kh, kw, sh, sw, dh, dw, top, left, Ho, Wo):
    """The adjoint of :func:`_im2col_one`: ``dx[n]`` is overwritten with the scatter-add of ``cols``."""
    C, H, W = dx.shape[1], dx.shape[2], dx.shape[3]
    dx[n] = 0
    for c in range(C):
        plane = dx[n, c]
        for a in range(kh):
            for b in range(kw):
                row = cols[(c * kh + a) * kw + b]
                off = b * dw - left
                j0 = min(Wo, 0 if off >= 0 else (-off + sw - 1) // sw)
                j1 = 0 if W - 1 - off < 0 else min(Wo, (W - 1 - off) // sw + 1)
                for i in range(Ho):
                    r = i * sh + a * dh - top
                    if r < 0 or r >= H:
                        continue
                    src = row[i * Wo : (i + 1) * Wo]
                    dst = plane[r]
                    if sw == 1:
                        for j in range(j0, j1):
                            dst[j + off] += src[j]
                    else:
                        for j in range(j0, j1):
                            dst[j * sw + off] += src[j]


@njit(cache=True, fastmath=_FM)
def _rows_combination(w, src, dst, bias, transpose):
    """``dst[o] = bias[o] + sum_k w[o, k] * src[k]`` (or with ``w.T`` when ``transpose``), for rows of equal
    length, four source rows per pass so that each destination row is loaded once per four products."""
    if transpose:
        O, K = w.shape[1], w.shape[0]
    else:
        O, K = w.shape[0], w.shape[1]
    L = src.shape[1]
    K4 = K - K % 4
    for o in range(O):
        r = dst[o]
        r[:] = bias[o] if bias.shape[0] > 0 else 0
        for k in range(0, K4, 4):
            if transpose:
                v0, v1, v2, v3 = w[k, o], w[k + 1, o], w[k + 2, o], w[k + 3, o]
            else:
                v0, v1, v2, v3 = w[o, k], w[o, k + 1], w[o, k + 2], w[o, k + 3]
            s0, s1, s2, s3 = src[k], src[k + 1], src[k + 2], src[k + 3]
            for p in range(L):
                r[p] += (v0 * s0[p] + v1 * s1[p]) + (v2 * s2[p] + v3 * s3[p])
        for k in range(K4, K):
            v = w[k, o] if transpose else w[o, k]
            s = src[k]
            for p in range(L):
                r[p] += v * s[p]


@njit(parallel=True, cache=True, fastmath=_FM)
def conv_forward(x, w2, bias, out, cols, keep, kh, kw, sh, sw, dh, dw, top, left, Ho, Wo):
    """``out[n] (O, Ho*Wo) = w2 (O, C*kh*kw) @ im2col(x[n]) + bias``, one sample per task. With ``keep`` the
    columns are left in ``cols[n]`` for the backward pass, else each task uses its own scratch."""
    N = x.shape[0]
    K = w2.shape[1]
    for n in prange(N):
        if keep:
            cn = cols[n]
        else:
            cn = np.empty((K, Ho * Wo), x.dtype)
        _im2col_one(x, n, cn, kh, kw, sh, sw, dh, dw, top, left, Ho, Wo)
        _rows_combination(w2, cn, out[n], bias, False)


@njit(parallel=True, cache=True, fastmath=_FMR)
def conv_backward_weight(cols, dy, dwp, dbp):
    """``dwp[t] = sum over samples n of task t of dy[n] @ cols[n].T`` and ``dbp[t]`` the matching bias sums:
    each task reduces its own share of the batch into its own buffer; the caller sums the tasks."""
    N, O, L = dy.shape
    K = cols.shape[1]
    T = dwp.shape[0]
    for t in prange(T):
        acc = dwp[t]
        acc[:, :] = 0
        dbp[t, :] = 0
        for n in range(t * N // T, (t + 1) * N // T):
            g = dy[n]
            cn = cols[n]
            for o in range(O):
                go = g[o]
                s = go[0] - go[0]
                for p in range(L):
                    s += go[p]
                dbp[t, o] += s
                for k in range(K):
                    ck = cn[k]
                    d = go[0] - go[0]
                    for p in range(L):
                        d += go[p] * ck[p]
                    acc[o, k] += d


@njit(parallel=True, cache=True, fastmath=_FM)
def conv_backward_input(w2, dy, dx, kh, kw, sh, sw, dh, dw, top, left, Ho, Wo):
    """``dx[n] = col2im(w2.T @ dy[n])``, one sample per task (each writes only its own ``dx[n]``)."""
    N = dy.shape[0]
    K = w2.shape[1]
    empty = np.empty(0, dy.dtype)
    for n in prange(N):
        dcols = np.empty((K, Ho * Wo), dy.dtype)
        _rows_combination(w2, dy[n], dcols, empty, True)
        _col2im_one(dcols, dx, n, kh, kw, sh, sw, dh, dw, top, left, Ho, Wo)


@njit(parallel=True, cache=True)
def maxpool_forward(x, out, arg, kh, kw, sh, sw, top, left):
    """Max over each window (padding ignored; NaN wins, as in PyTorch); ``arg`` keeps the flat index of the
    winner in its plane for the backward pass."""
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        plane = x[n, c]
        for i in range(Ho):
            r0 = max(i * sh - top, 0)
            r1 = min(i * sh - top + kh, H)
            for j in range(Wo):
                s0 = max(j * sw - left, 0)
                s1 = min(j * sw - left + kw, W)
                best = plane[r0, s0]
                where = r0 * W + s0
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        v = plane[r, s]
                        if v > best or (v != v and best == best):
                            best = v
                            where = r * W + s
                out[n, c, i, j] = best
                arg[n, c, i, j] = where


@njit(parallel=True, cache=True)
def maxpool2_forward(x, out, arg):
    """:func:`maxpool_forward` for 2x2 windows at stride 2 without padding, the common case, unrolled and
    branch-free. Training data is finite (the loss is checked), so NaN handling is left to the generic loop."""
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        for i in range(Ho):
            r0 = x[n, c, 2 * i]
            r1 = x[n, c, 2 * i + 1]
            o = out[n, c, i]
            g = arg[n, c, i]
            base = 2 * i * W
            for j in range(Wo):
                a, b = r0[2 * j], r0[2 * j + 1]
                d, e = r1[2 * j], r1[2 * j + 1]
                # branch-free selects (random data defeats branch prediction); NaN is not propagated here
                up = b > a
                top_v = b if up else a
                top_k = 1 if up else 0
                dn = e > d
                bot_v = e if dn else d
                bot_k = W + 1 if dn else W
                lower = bot_v > top_v
                o[j] = bot_v if lower else top_v
                k = bot_k if lower else top_k
                g[j] = base + 2 * j + k


@njit(parallel=True, cache=True)
def maxpool_backward(dy, arg, dx):
    """Each output gradient goes to its window's winner (``dx`` is overwritten)."""
    N, C, Ho, Wo = dy.shape
    W = dx.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        plane = dx[n, c]
        plane[:, :] = 0
        for i in range(Ho):
            for j in range(Wo):
                k = arg[n, c, i, j]
                r = k // W
                plane[r, k - r * W] += dy[n, c, i, j]


@njit(parallel=True, cache=True, fastmath=_FM)
def avgpool_forward(x, out, kh, kw, sh, sw, top, left):
    """Mean over each window, padding counted as zeros (PyTorch's ``count_include_pad=True``)."""
    N, C, H, W = x.shape
    Ho, Wo = out.shape[2], out.shape[3]
    inv = 1.0 / (kh * kw)
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        plane = x[n, c]
        for i in range(Ho):
            r0 = max(i * sh - top, 0)
            r1 = min(i * sh - top + kh, H)
            for j in range(Wo):
                s0 = max(j * sw - left, 0)
                s1 = min(j * sw - left + kw, W)
                acc = 0.0
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        acc += plane[r, s]
                out[n, c, i, j] = acc * inv


@njit(parallel=True, cache=True, fastmath=_FM)
def avgpool_backward(dy, dx, kh, kw, sh, sw, top, left):
    """Each output gradient spread evenly over its window's ``kh * kw`` taps (``dx`` is overwritten)."""
    N, C, Ho, Wo = dy.shape
    H, W = dx.shape[2], dx.shape[3]
    inv = 1.0 / (kh * kw)
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        plane = dx[n, c]
        plane[:, :] = 0
        for i in range(Ho):
            r0 = max(i * sh - top, 0)
            r1 = min(i * sh - top + kh, H)
            for j in range(Wo):
                s0 = max(j * sw - left, 0)
                s1 = min(j * sw - left + kw, W)
                g = dy[n, c, i, j] * inv
                for r in range(r0, r1):
                    for s in range(s0, s1):
                        plane[r, s] += g


# Stride 1: no im2col. The padded input plane is seen flat (width Wp); the output is computed on the same
# width, so tap (c, a, b) is the flat input shifted by c*Hp*Wp + a*Wp + b: every product is one long
# multiply-add over contiguous memory. The last Wp - Wo columns of each output row are junk, dropped on the way
# out (forward) or zero on the way in (backward).


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
def conv1_forward(xp, w2, bias, offs, out):
    """Stride-1 convolution of the zero-padded batch ``xp (N, C, Hp, Wp)`` into ``out (N, O, Ho, Wo)``."""
    N, C, Hp, Wp = xp.shape
    O, Ho, Wo = out.shape[1], out.shape[2], out.shape[3]
    L = (Ho - 1) * Wp + Wo
    for n in prange(N):
        acc = np.empty((O, Ho * Wp), xp.dtype)
        _taps_combination(w2, xp[n].reshape(C * Hp * Wp), offs, acc, bias, L)
        for o in range(O):
            for i in range(Ho):
                out[n, o, i, :] = acc[o, i * Wp : i * Wp + Wo]


@njit(parallel=True, cache=True, fastmath=_FMR)
def conv1_weight(xp, dyp, offs, L, dwp, dbp):
    """``dwp[t, o, k] = sum over samples n of task t of dot(dyp[n, o, :L], xflat[n][offs[k]:][:L])`` (the junk
    columns of ``dyp`` are 0) and ``dbp[t, o]`` the bias sums; the caller sums over tasks."""
    N, C, Hp, Wp = xp.shape
    O = dyp.shape[1]
    K = offs.shape[0]
    K4 = K - K % 4
    T = dwp.shape[0]
    for t in prange(T):
        acc = dwp[t]
        acc[:, :] = 0
        dbp[t, :] = 0
        for n in range(t * N // T, (t + 1) * N // T):
            xf = xp[n].reshape(C * Hp * Wp)
            for o in range(O):
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
def conv1_input(w2, dyp, offs, L, dxp):
    """``dxp[n]`` (flat) ``[offs[k] + q] += sum_o w2[o, k] * dyp[n, o, q]``: the input gradient on the padded
    plane, one sample per task (each writes only its own ``dxp[n]``, which is overwritten)."""
    N, C, Hp, Wp = dxp.shape
    O = dyp.shape[1]
    K = offs.shape[0]
    O4 = O - O % 4
    for n in prange(N):
        df = dxp[n].reshape(C * Hp * Wp)
        df[:] = 0
        g = dyp[n]
        for k in range(K):
            dst = df[offs[k] :]
            for o in range(0, O4, 4):
                v0, v1, v2, v3 = w2[o, k], w2[o + 1, k], w2[o + 2, k], w2[o + 3, k]
                g0, g1, g2, g3 = g[o], g[o + 1], g[o + 2], g[o + 3]
                for p in range(L):
                    dst[p] += (v0 * g0[p] + v1 * g1[p]) + (v2 * g2[p] + v3 * g3[p])
            for o in range(O4, O):
                v = w2[o, k]
                go = g[o]
                for p in range(L):
                    dst[p] += v * go[p]
