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
    itemsize = np.dtype(dtype).itemsize
    what = f"conv2d of {N}x{C}x{H}x{W} with {O}x{Cg}x{kh}x{kw} weights into {N}x{O}x{Ho}x{Wo}"
    limits.check_memory(itemsize * (N * C * (H + top + bottom) * (W + left + right) + N * O * Ho * Wo), what)
    limits.check_work(float(N) * O * Ho * Wo * Cg * kh * kw, what)
    xp = np.zeros((N, C, H + top + bottom, W + left + right), dtype)
    xp[:, :, top : top + H, left : left + W] = xb
    out = np.empty((N, O, Ho, Wo), dtype)
    from . import _loops

    wk = np.ascontiguousarray(w, dtype)
    if (kh, kw, sh, sw) == (3, 3, 1, 1):
        _loops.conv2d_3x3(xp, wk, b, out, dh, dw, groups)
    else:
        _loops.conv2d_forward(xp, wk, b, out, sh, sw, dh, dw, groups)
    return out if batched else out[0]
