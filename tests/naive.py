"""Slow, obvious references: plain Python loops over numpy.pad. Written independently of cnnfilter's code."""

import math

import numpy as np


def pads(padding, span):
    """(top, bottom, left, right) for a padding spec and the dilated kernel span (rows, cols)."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "full":
        return span[0] - 1, span[0] - 1, span[1] - 1, span[1] - 1
    if padding == "same":
        th, tw = span[0] - 1, span[1] - 1
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    if isinstance(padding, int):
        return padding, padding, padding, padding
    if isinstance(padding[0], int):
        return padding[0], padding[0], padding[1], padding[1]
    return padding[0][0], padding[0][1], padding[1][0], padding[1][1]


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def correlate(image, kernel, stride=1, padding="same", dilation=1, border="constant", cval=0.0):
    """float64 cross-correlation of each channel, by the definition."""
    img = np.asarray(image, dtype=np.float64)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    k = np.asarray(kernel, dtype=np.float64)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    kh, kw = k.shape
    t, b, l, r = pads(padding, ((kh - 1) * dh + 1, (kw - 1) * dw + 1))
    extra = {"constant_values": cval} if border == "constant" else {}
    p = np.pad(img, ((t, b), (l, r), (0, 0)), mode=border, **extra)
    Ho = (p.shape[0] - (kh - 1) * dh - 1) // sh + 1
    Wo = (p.shape[1] - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((max(Ho, 0), max(Wo, 0), img.shape[2]))
    if Ho > 0 and Wo > 0:
        # out[i, j] += k[a, b] * p[i*sh + a*dh, j*sw + b*dw], one tap (a, b) at a time over all (i, j)
        for a in range(kh):
            for bb in range(kw):
                r, c = a * dh, bb * dw
                out += k[a, bb] * p[r : r + (Ho - 1) * sh + 1 : sh, c : c + (Wo - 1) * sw + 1 : sw]
    return out[:, :, 0] if squeeze else out


def pool(image, size, stride=None, padding=0, mode="max", ceil_mode=False, count_include_pad=True, dilation=1):
    """Pooling as PyTorch defines it (max_pool2d / avg_pool2d), with ONNX's dilations, tap by tap. Raises
    ValueError when a window holds no pixel of the image."""
    img = np.asarray(image, dtype=np.float64)
    squeeze = img.ndim == 2
    if squeeze:
        img = img[:, :, None]
    kh, kw = _pair(size)
    sh, sw = (kh, kw) if stride is None else _pair(stride)
    dh, dw = _pair(dilation)
    t, b, l, r = pads(padding, ((kh - 1) * dh + 1, (kw - 1) * dw + 1))
    H, W = img.shape[:2]

    def osize(n, k, s, p0, p1):
        if ceil_mode:
            o = math.ceil((n + p0 + p1 - k) / s) + 1
            if (o - 1) * s >= n + p0:
                o -= 1
            return o
        return (n + p0 + p1 - k) // s + 1

    Ho, Wo = osize(H, (kh - 1) * dh + 1, sh, t, b), osize(W, (kw - 1) * dw + 1, sw, l, r)
    out = np.zeros((max(Ho, 0), max(Wo, 0), img.shape[2]))
    for i in range(Ho):
        for j in range(Wo):
            rows = [i * sh - t + a * dh for a in range(kh)]
            cols = [j * sw - l + c * dw for c in range(kw)]
            inside = [(y, x) for y in rows for x in cols if y < H + b and x < W + r]  # the padded extent
            real = [(y, x) for y, x in inside if 0 <= y < H and 0 <= x < W]
            if not real:
                raise ValueError("a window holds no pixel of the image")
            win = np.array([img[y, x] for y, x in real])
            if mode == "max":
                out[i, j] = win.max(axis=0)
            elif mode == "min":
                out[i, j] = win.min(axis=0)
            else:
                out[i, j] = win.sum(axis=0) / (len(inside) if count_include_pad else len(real))
    return out[:, :, 0] if squeeze else out


def conv2d(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """A CNN layer, channel by channel, through :func:`correlate` with zero padding."""
    x = np.asarray(x, dtype=np.float64)
    batched = x.ndim == 4
    if not batched:
        x = x[None]
    w = np.asarray(w, dtype=np.float64)
    O, Cg = w.shape[:2]
    Og = O // groups
    outs = []
    for n in range(x.shape[0]):
        planes = []
        for o in range(O):
            g = o // Og
            acc = sum(
                correlate(x[n, g * Cg + c], w[o, c], stride, padding, dilation, "constant", 0.0) for c in range(Cg)
            )
            planes.append(acc + (0.0 if bias is None else bias[o]))
        outs.append(np.stack(planes))
    out = np.stack(outs)
    return out if batched else out[0]
