"""conv2d: the convolution layer of a CNN (cross-correlation, as PyTorch's ``torch.nn.functional.conv2d``)."""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import _args, limits


@dataclass(frozen=True)
class Geometry:
    """How a convolution's window walks its input: ``stride`` and ``dilation`` as (rows, cols), zero padding as
    ``pads = (top, bottom, left, right)``, and ``groups``. A network's layer and an imported Conv node hold one."""

    stride: tuple = (1, 1)
    dilation: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)
    groups: int = 1

    def output(self, H: int, W: int, kh: int, kw: int) -> tuple[int, int]:
        """The output plane ``(Ho, Wo)`` for an ``H x W`` input and a ``kh x kw`` kernel (may be < 1)."""
        (sh, sw), (dh, dw), (top, bottom, left, right) = self.stride, self.dilation, self.pads
        return (_args.output_size(H, dh * (kh - 1) + 1, sh, top, bottom),
                _args.output_size(W, dw * (kw - 1) + 1, sw, left, right))


class Saved(NamedTuple):
    """What :func:`forward` keeps for :func:`backward`: the zero-padded input and the input's shape."""

    xp: np.ndarray
    shape: tuple
    geometry: Geometry


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
    out = run(xb, np.ascontiguousarray(w, dtype), b, Geometry((sh, sw), (dh, dw), (top, bottom, left, right), groups))
    return out if batched else out[0]


def _path(x_shape, w_shape, g: Geometry) -> str:
    """Which loop a convolution takes (measured on the project's VMs: ``benchmarks/bench.py``, ``onnx_infer.py``):
    grouped ones the direct loop; 3x3 at stride 1 on planes of at least ``config.CONV_DIRECT_MIN_PLANE`` outputs the
    direct loop with two filters per task; other stride-1 filters on such planes the tap-shift loop (each tap one
    long multiply-add over the flattened plane: LeNet's 5x5 layers 1.5 against 2.6 ms with im2col); 1x1 at stride 1
    one product; everything else im2col and BLAS, one product per block of images on small planes."""
    from . import config

    N, C, H, W = x_shape
    O, Cg, kh, kw = w_shape
    Ho, Wo = g.output(H, W, kh, kw)
    big = Ho * Wo >= config.CONV_DIRECT_MIN_PLANE
    if g.stride == (1, 1) and (kh, kw) == (3, 3) and (big or g.groups != 1):
        return "direct3"
    if g.groups != 1:
        return "taps" if g.stride == (1, 1) else "direct"
    if g.stride == (1, 1) and (kh, kw, *g.dilation) == (1, 1, 1, 1):
        return "1x1"
    if g.stride == (1, 1) and big:
        return "taps"
    return "im2col"


def run(x, w, b, geometry: Geometry, *, out=None, xp=None, relu: bool = False) -> np.ndarray:
    """:func:`conv2d` on checked arguments, the one convolution engine (an imported network's Conv nodes and the
    network's Conv2d layers call it): ``x (N, C, H, W)`` and ``w (O, C/groups, kh, kw)`` of one float type, ``b
    (O,)``, a geometry whose output is at least 1x1. ``out`` and ``xp`` may be given as buffers (``xp`` zero in the
    padding: only its interior is written). The loop is :func:`_path`'s choice; im2col's columns are made a block
    of images at a time, under ``config.CONV_COLUMNS_BYTES``. ``relu``: negative outputs become 0 (NaN stays;
    an imported Conv followed by its Relu), in the pass that stores the result (direct 3x3) or adds the bias
    (1x1 and im2col), or in one more pass (the other direct loops)."""
    _check(x.shape, w, geometry)
    return _compute(pad(x, geometry, w.dtype, xp), w, b, geometry, out, relu)


def _check(x_shape, w, geometry: Geometry) -> None:
    """Refuse a convolution whose arrays (and im2col's columns) would exceed the memory limit, or whose work the
    work limit."""
    from . import config

    N, C, H, W = x_shape
    O, Cg, kh, kw = w.shape
    top, bottom, left, right = geometry.pads
    Ho, Wo = geometry.output(H, W, kh, kw)
    itemsize = w.dtype.itemsize
    what = f"conv2d of {N}x{C}x{H}x{W} with {O}x{Cg}x{kh}x{kw} weights into {N}x{O}x{Ho}x{Wo}"
    per_row = C * kh * kw * Wo * itemsize  # im2col's columns of one output row
    columns = min(N * Ho * per_row, max(per_row, config.CONV_COLUMNS_BYTES))
    columns = columns if _path(x_shape, w.shape, geometry) == "im2col" else 0
    limits.check_memory(itemsize * (N * C * (H + top + bottom) * (W + left + right) + N * O * Ho * Wo) + columns,
                        what)
    limits.check_work(float(N) * O * Ho * Wo * Cg * kh * kw, what)


def _compute(xp, w, b, geometry: Geometry, out=None, relu: bool = False) -> np.ndarray:
    """The convolution of the zero-padded batch ``xp`` (then ReLU with ``relu``)."""
    from . import _loops, config

    N, C, Hp, Wp = xp.shape
    O, Cg, kh, kw = w.shape
    (sh, sw), (dh, dw), groups = geometry.stride, geometry.dilation, geometry.groups
    dtype = w.dtype
    inner = Geometry(geometry.stride, geometry.dilation, (0, 0, 0, 0), groups)  # the padding is in xp
    Ho, Wo = inner.output(Hp, Wp, kh, kw)
    path = _path(xp.shape, w.shape, inner)
    if out is None:
        out = np.empty((N, O, Ho, Wo), dtype)
    if path == "direct3":
        _loops.conv2d_3x3(xp, w, b, out, dh, dw, groups, relu)
        return out
    if path in ("direct", "taps"):
        if path == "direct":
            _loops.conv2d_forward(xp, w, b, out, sh, sw, dh, dw, groups)
        else:
            _loops.conv1_forward(xp, w.reshape(O, -1), b, offsets(xp.shape, w.shape, geometry), out, groups)
        if relu:
            np.maximum(out, 0, out=out)
        return out
    w2 = w.reshape(O, -1)
    o3 = out.reshape(N, O, Ho * Wo)
    if path == "1x1":  # the input is its own columns
        np.matmul(w2, xp.reshape(N, C, Ho * Wo), out=o3)
    else:  # im2col: columns for a block of images, or a band of output rows of one image, in cache-sized chunks
        K = C * kh * kw
        per_row = K * Wo * w.itemsize
        rows = Ho if Ho * per_row <= config.CONV_COLUMNS_BYTES else max(1, config.CONV_COLUMNS_BYTES // per_row)
        images = max(1, min(N, config.CONV_COLUMNS_BYTES // (Ho * per_row))) if rows == Ho else 1
        cols = np.empty((K, images * rows * Wo), dtype)
        xq = phases(xp, sh, sw)
        for n in range(0, N, images):
            m = min(images, N - n)
            for i in range(0, Ho, rows):
                r = min(rows, Ho - i)
                part = cols[:, : m * r * Wo]
                _loops.im2col_wide(xq[n : n + m], part, kh, kw, dh, dw, i, i + r, Wo)
                if m == 1 and r == Ho:  # one whole image: the product is its output
                    np.matmul(w2, part, out=o3[n])
                else:
                    res = np.matmul(w2, part).reshape(O, m, r, Wo)
                    out[n : n + m, :, i : i + r] = res.transpose(1, 0, 2, 3)
    _loops.bias_relu(o3, b, relu)
    return out


def phases(xp: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """``xq[n, c, u, v, y, z] = xp[n, c, y*sh + u, z*sw + v]`` (zeros past the edge): a strided convolution's taps
    become contiguous slices of one phase (``_loops.im2col_wide``). At stride 1, a view of ``xp``."""
    N, C, Hp, Wp = xp.shape
    if (sh, sw) == (1, 1):
        return xp.reshape(N, C, 1, 1, Hp, Wp)
    Hq, Wq = -(-Hp // sh), -(-Wp // sw)
    whole = np.zeros((N, C, Hq * sh, Wq * sw), xp.dtype) if (Hq * sh, Wq * sw) != (Hp, Wp) else xp
    if whole is not xp:
        whole[:, :, :Hp, :Wp] = xp
    return np.ascontiguousarray(whole.reshape(N, C, Hq, sh, Wq, sw).transpose(0, 1, 3, 5, 2, 4))


def pad(x: np.ndarray, geometry: Geometry, dtype, buffer=None) -> np.ndarray:
    """``x`` as ``dtype`` with the geometry's zero padding, written into ``buffer`` (zero in the padding) when
    given."""
    top, bottom, left, right = geometry.pads
    if not (top or bottom or left or right):
        return np.ascontiguousarray(x, dtype)
    N, C, H, W = x.shape
    xp = buffer if buffer is not None else np.zeros((N, C, H + top + bottom, W + left + right), dtype)
    xp[:, :, top : top + H, left : left + W] = x
    return xp


def offsets(xp_shape, w_shape, geometry: Geometry) -> np.ndarray:
    """Flat offset of tap ``(c, a, b)`` of one group in a padded sample, in the order of ``w.reshape(O, -1)``."""
    _, _, Hp, Wp = xp_shape
    _, Cg, kh, kw = w_shape
    dh, dw = geometry.dilation
    c, a, b = np.meshgrid(np.arange(Cg), np.arange(kh), np.arange(kw), indexing="ij")
    return (c * Hp * Wp + a * dh * Wp + b * dw).reshape(-1).astype(np.int64)


def forward(x, w, b, geometry: Geometry, buffer=None) -> tuple[np.ndarray, Saved]:
    """:func:`run` for training: also returns what :func:`backward` needs. ``buffer(key, shape, dtype)`` may supply
    zero-initialised arrays kept between calls (a layer's; only their interiors are written)."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    top, bottom, left, right = geometry.pads
    Ho, Wo = geometry.output(H, W, kh, kw)
    _check(x.shape, w, geometry)
    xp = out = None
    if buffer is not None:
        out = buffer("out", (N, O, Ho, Wo), w.dtype)
        if top or bottom or left or right:
            xp = buffer("xp", (N, C, H + top + bottom, W + left + right), w.dtype)
    xp = pad(x, geometry, w.dtype, xp)
    return _compute(xp, w, b, geometry, out), Saved(xp, x.shape, geometry)


def backward(saved: Saved, w, dy, dweight, dbias, *, input_grad: bool = True, buffer=None, tasks: int = 1):
    """The gradients of :func:`forward`: fills ``dweight`` and ``dbias`` (shapes of ``w`` and ``b``) and returns
    ``dL/dx`` (None without ``input_grad``). Stride 1: products over the flattened padded plane (no columns);
    otherwise im2col again, BLAS products and :func:`~cnnfilter._loops.col2im`, a block of images at a time.
    ``tasks``: how many partial weight sums the compiled loops reduce in parallel."""
    from . import _loops, config

    xp, (N, C, H, W), g = saved
    O, Cg, kh, kw = w.shape
    Ho, Wo = dy.shape[2], dy.shape[3]
    top, left = g.pads[0], g.pads[2]
    (sh, sw), (dh, dw), groups = g.stride, g.dilation, g.groups
    Og, K = O // groups, Cg * kh * kw
    dy = np.ascontiguousarray(dy, w.dtype)
    w2 = w.reshape(O, K)
    take = buffer if buffer is not None else (lambda key, shape, dtype: np.zeros(shape, dtype))
    dxp = take("dxp", xp.shape, w.dtype) if input_grad else None
    if (sh, sw) == (1, 1):
        Wp = xp.shape[3]
        dyp = take("dyp", (N, O, Ho, Wp), w.dtype)  # on the padded width, junk columns 0
        dyp[:, :, :, :Wo] = dy
        dyp = dyp.reshape(N, O, Ho * Wp)
        offs = offsets(xp.shape, w.shape, g)
        L = (Ho - 1) * Wp + Wo
        dwp = np.empty((tasks, O, K), w.dtype)
        dbp = np.empty((tasks, O), w.dtype)
        _loops.conv1_weight(xp, dyp, offs, L, dwp, dbp, groups)
        np.sum(dwp, axis=0, out=dweight.reshape(O, K))
        np.sum(dbp, axis=0, out=dbias)
        if input_grad:
            _loops.conv1_input(w2, dyp, offs, L, dxp, groups)
    else:
        L = Ho * Wo
        dy3 = dy.reshape(N, O, L)
        np.sum(dy3, axis=(0, 2), out=dbias)
        dw2 = dweight.reshape(O, K)
        dw2[...] = 0
        block = max(1, min(N, config.CONV_COLUMNS_BYTES // max(C * kh * kw * L * w.itemsize, 1)))
        cols = np.empty((block, C * kh * kw, L), w.dtype)
        for n in range(0, N, block):
            m = min(block, N - n)
            c = cols[:m]
            _loops.im2col(xp[n : n + m], c, kh, kw, sh, sw, dh, dw, Ho, Wo)
            for grp in range(groups):
                rows, outs = slice(grp * K, (grp + 1) * K), slice(grp * Og, (grp + 1) * Og)
                d = dy3[n : n + m, outs]
                dw2[outs] += np.matmul(d, c[:, rows].transpose(0, 2, 1)).sum(axis=0)
                if input_grad:
                    c[:, rows] = np.matmul(w2[outs].T, d)
            if input_grad:
                _loops.col2im(c, dxp[n : n + m], kh, kw, sh, sw, dh, dw, Ho, Wo)
    if not input_grad:
        return None
    return dxp[:, :, top : top + H, left : left + W]
