"""conv2d: the convolution layer of a CNN (cross-correlation, as PyTorch's ``torch.nn.functional.conv2d``)."""

from __future__ import annotations

import numbers

import numpy as np

from . import _args, limits


def conv2d(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1) -> np.ndarray:
    """``out[n, o] = bias[o] + sum_c correlate(x[n, g*Cg + c], weight[o, c])`` with zero padding.

    Parameters
    ----------
    x : (C, H, W) or (N, C, H, W), integer or float.
    weight : (O, C / groups, kh, kw).
    bias : (O,) or None.
    stride, dilation : int or (rows, cols).
    padding : int, ``(ph, pw)``, ``((top, bottom), (left, right))``, ``"valid"``, ``"same"`` or ``"full"``
        (the rules of :func:`cnnfilter.correlate2d`); always zeros.
    groups : splits the input and output channels into this many independent groups.

    Returns
    -------
    (O, H', W') or (N, O, H', W'), float32 (float64 when ``x`` is float64), with
    ``H' = floor((H + top + bottom - dh*(kh-1) - 1) / sh) + 1``.
    """
    xa = np.asarray(x)
    if xa.dtype == bool:
        xa = xa.astype(np.uint8)
    if xa.ndim not in (3, 4) or xa.size == 0:
        msg = f"x has shape {xa.shape}; expected (C, H, W) or (N, C, H, W), not empty"
        raise ValueError(msg)
    if not (np.issubdtype(xa.dtype, np.integer) or np.issubdtype(xa.dtype, np.floating)):
        msg = f"x dtype {xa.dtype} is not an integer or float type"
        raise TypeError(msg)
    batched = xa.ndim == 4
    xb = xa if batched else xa[None]
    N, C, H, W = xb.shape
    if np.iscomplexobj(weight) or np.iscomplexobj(bias):
        msg = "weight and bias must be real, not complex"
        raise TypeError(msg)
    w = np.asarray(weight, dtype=np.float64)
    if w.ndim != 4 or w.size == 0:
        msg = f"weight has shape {w.shape}; expected (O, C/groups, kh, kw)"
        raise ValueError(msg)
    if not np.isfinite(w).all():
        msg = "weight contains NaN or infinite values"
        raise ValueError(msg)
    O, Cg, kh, kw = w.shape
    if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1 or C % groups or O % groups:
        msg = f"groups {groups!r} must be a positive int dividing the input channels ({C}) and the filters ({O})"
        raise ValueError(msg)
    if Cg * groups != C:
        msg = f"weight has shape {w.shape}: {Cg} input channels per group, but x has {C} channels in {groups} group(s)"
        raise ValueError(msg)
    dtype = _args.work_dtype(xa)
    if bias is None:
        b = np.zeros(O, dtype)
    else:
        b = np.asarray(bias, dtype=np.float64)
        if b.shape != (O,):
            msg = f"bias has shape {b.shape}; expected ({O},)"
            raise ValueError(msg)
        b = np.ascontiguousarray(b, dtype)
    sh, sw = _args.pair(stride, "stride")
    dh, dw = _args.pair(dilation, "dilation")
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    top, bottom, left, right = _args.resolve_padding(padding, span)
    Ho = _args.output_size(H, span[0], sh, top, bottom)
    Wo = _args.output_size(W, span[1], sw, left, right)
    if Ho < 1 or Wo < 1:
        msg = f"the output would be {max(Ho, 0)}x{max(Wo, 0)}: the kernel ({span[0]}x{span[1]} with dilation) does not fit the padded input ({H + top + bottom}x{W + left + right})"
        raise ValueError(msg)
    out = run(xb, np.ascontiguousarray(w, dtype), b, (sh, sw), (dh, dw), (top, bottom, left, right), groups)
    return out if batched else out[0]


def run(x, w, b, stride, dilation, pads, groups=1) -> np.ndarray:
    """:func:`conv2d` on checked arguments (the engine an imported network calls with weights checked once):
    ``x (N, C, H, W)`` and ``w (O, C/groups, kh, kw)`` of one float type, ``b (O,)``, ``pads (top, bottom, left,
    right)`` whose output is at least 1x1.

    3x3 filters at stride 1 on planes of at least ``config.CONV_DIRECT_MIN_PLANE`` outputs, and grouped
    convolutions, run the direct compiled loops (two filters per task sharing each load); every other
    convolution is im2col (one compiled pass) and matrix products by BLAS (``numpy.matmul``): one per image, or
    one for a whole block of images when their planes are small (``config.CONV_WIDE_MAX_PLANE``), a block of
    images at a time so that the columns stay under ``config.CONV_COLUMNS_BYTES``."""
    from . import _loops, config

    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    (sh, sw), (dh, dw), (top, bottom, left, right) = stride, dilation, pads
    dtype = w.dtype
    Ho = _args.output_size(H, dh * (kh - 1) + 1, sh, top, bottom)
    Wo = _args.output_size(W, dw * (kw - 1) + 1, sw, left, right)
    itemsize = np.dtype(dtype).itemsize
    what = f"conv2d of {N}x{C}x{H}x{W} with {O}x{Cg}x{kh}x{kw} weights into {N}x{O}x{Ho}x{Wo}"
    direct3 = (kh, kw, sh, sw) == (3, 3, 1, 1) and Ho * Wo >= config.CONV_DIRECT_MIN_PLANE
    per_image = C * kh * kw * Ho * Wo * itemsize  # im2col's columns of one image
    block = max(1, min(N, config.CONV_COLUMNS_BYTES // max(per_image, 1)))
    columns = 0 if (groups != 1 or direct3 or (kh, kw, sh, sw) == (1, 1, 1, 1)) else block * per_image
    limits.check_memory(itemsize * (N * C * (H + top + bottom) * (W + left + right) + N * O * Ho * Wo) + columns,
                        what)
    limits.check_work(float(N) * O * Ho * Wo * Cg * kh * kw, what)
    if top or bottom or left or right:
        xp = np.zeros((N, C, H + top + bottom, W + left + right), dtype)
        xp[:, :, top : top + H, left : left + W] = x
    else:
        xp = np.ascontiguousarray(x, dtype)
    out = np.empty((N, O, Ho, Wo), dtype)
    if groups != 1 or direct3:
        if direct3:
            _loops.conv2d_3x3(xp, w, b, out, dh, dw, groups)
        else:
            _loops.conv2d_forward(xp, w, b, out, sh, sw, dh, dw, groups)
        return out
    w2 = w.reshape(O, -1)
    o3 = out.reshape(N, O, Ho * Wo)
    if (kh, kw, sh, sw) == (1, 1, 1, 1):  # the input is its own columns
        np.matmul(w2, xp.reshape(N, C, Ho * Wo), out=o3)
    elif Ho * Wo < config.CONV_WIDE_MAX_PLANE:  # small planes: one product for a block of images
        L = Ho * Wo
        cols = np.empty((C * kh * kw, block * L), dtype)
        for n in range(0, N, block):
            m = min(block, N - n)
            part = cols[:, : m * L]
            _loops.im2col_wide(xp[n : n + m], part, kh, kw, sh, sw, dh, dw, Ho, Wo)
            o3[n : n + m] = np.matmul(w2, part).reshape(O, m, L).transpose(1, 0, 2)
    else:
        cols = np.empty((block, C * kh * kw, Ho * Wo), dtype)
        for n in range(0, N, block):
            m = min(block, N - n)
            _loops.im2col(xp[n : n + m], cols[:m], kh, kw, sh, sw, dh, dw, Ho, Wo)
            np.matmul(w2, cols[:m], out=o3[n : n + m])
    o3 += b[None, :, None]
    return out
