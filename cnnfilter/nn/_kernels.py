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
                s = 0.0
                for p in range(L):
                    s += go[p]
                dbp[t, o] += s
                for k in range(K):
                    ck = cn[k]
                    d = 0.0
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
