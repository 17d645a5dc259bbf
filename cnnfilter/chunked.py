"""Images larger than memory: :func:`~cnnfilter.correlate2d`, :func:`~cnnfilter.convolve2d` and
:func:`~cnnfilter.pool2d` on a ``dask.array.Array`` (2-D or channels-last 3-D, any chunking) return a lazy dask
array whose computed value is the in-memory function's on the same data.

How, and why not ``dask.array.map_overlap``: its ``reflect`` is numpy's ``symmetric`` and its chunked ``wrap`` has
been wrong (dask-image #242). Here the image's outer border is made once, for the whole image, exactly as the
in-memory function makes it: the strips that padding adds are gathered with the row and column indices
``numpy.pad`` itself gives for that mode (``constant`` with ``dask.array.pad``), then every block of the output is
the in-memory function with ``padding="valid"`` on exactly the padded rows and columns its windows read (its chunk
and a halo of ``span - stride`` pixels). Output blocks follow the input's chunk grid divided by the stride, so a
task holds about one chunk and its halo, never the image. Pooling's padding is implicit (never part of a max, and
counted or not in an average), so its blocks read only real pixels and run the pooling engine with the window's
offsets in the whole image (:func:`cnnfilter.pooling.region`).

dask is an optional dependency (``pip install 'cnnfilter[dask]'``), imported only when a dask array is given.
"""

from __future__ import annotations

import numpy as np

from . import _args


def is_lazy(a) -> bool:
    """Whether ``a`` is a dask array (without importing dask)."""
    return type(a).__module__.split(".")[0] == "dask" and hasattr(a, "chunks") and hasattr(a, "dask")


def _check(image):
    if image.ndim not in (2, 3):
        msg = f"image has shape {image.shape}; expected (H, W) or channels-last (H, W, C)"
        raise ValueError(msg)
    if any(n == 0 for n in image.shape) or any(isinstance(n, float) for n in image.shape):
        msg = f"image has shape {image.shape}; it must not be empty or of unknown size"
        raise ValueError(msg)
    if image.dtype == bool:
        image = image.astype(np.uint8)
    if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        msg = f"image dtype {image.dtype} is not an integer or float type"
        raise TypeError(msg)
    if image.ndim == 3 and len(image.chunks[2]) > 1:  # the channels of a pixel stay in one block
        image = image.rechunk({2: -1})
    return image


MAX_BLOCKS = 100_000  # output blocks of one call: beyond, the task graph itself is the problem (choose larger chunks)


def _check_blocks(x, pads, stride, span, out_hw, dtype, what: str) -> None:
    """Refuse, before any graph is built, a call whose padding strips or one task's piece (a chunk and its halo,
    and its output) would exceed the memory limit, or that would make more than MAX_BLOCKS blocks."""
    from . import limits

    (sh, sw), (span_h, span_w) = stride, span
    rh, rw = max(1, -(-max(x.chunks[0]) // sh)), max(1, -(-max(x.chunks[1]) // sw))
    lanes = int(np.prod(x.shape[2:])) if x.ndim == 3 else 1
    item = np.dtype(dtype).itemsize
    piece = ((rh - 1) * sh + span_h) * ((rw - 1) * sw + span_w) + rh * rw
    top, bottom, left, right = pads
    strips = (top + bottom) * (x.shape[1] + left + right) + (left + right) * x.shape[0]
    limits.check_memory(float(item) * lanes * max(piece, strips), f"{what}, a chunk with its halo")
    blocks = -(-out_hw[0] // rh) * -(-out_hw[1] // rw)
    if blocks > MAX_BLOCKS:
        msg = f"{what}: {blocks:,} blocks of output, over {MAX_BLOCKS:,}; give the dask array larger chunks"
        raise ValueError(msg)


def _ranges(n_out: int, step: int) -> list[tuple[int, int]]:
    return [(i, min(i + step, n_out)) for i in range(0, n_out, step)]


def _pad(x, pads, border: str, cval: float):
    """``x`` padded as ``numpy.pad(x, pads, border)`` pads it, lazily."""
    import dask.array as da

    top, bottom, left, right = pads
    if not any(pads):
        return x
    if border == "constant":
        widths = ((top, bottom), (left, right)) + ((0, 0),) * (x.ndim - 2)
        return da.pad(x, widths, mode="constant", constant_values=cval)
    for axis, (before, after) in ((0, (top, bottom)), (1, (left, right))):
        if not (before or after):
            continue
        n = x.shape[axis]
        src = np.pad(np.arange(n), (before, after), mode=border)  # numpy's own rule, even for pads wider than n
        parts = ([da.take(x, src[:before], axis=axis)] if before else []) + [x] + (
            [da.take(x, src[before + n :], axis=axis)] if after else [])
        x = da.concatenate(parts, axis=axis)
    return x


def _assemble(x, out_hw, stride, span, dtype, block):
    """The lazy output of ``block(piece, (i0, i1, j0, j1))`` for each output block: ``piece`` the padded rows and
    columns its windows read, output rows following the input's chunks divided by the stride."""
    (sh, sw), (span_h, span_w) = stride, span
    rh = max(1, -(-max(x.chunks[0]) // sh))
    rw = max(1, -(-max(x.chunks[1]) // sw))
    rows = [(i0, i1, i0 * sh, (i1 - 1) * sh + span_h) for i0, i1 in _ranges(out_hw[0], rh)]
    cols = [(j0, j1, j0 * sw, (j1 - 1) * sw + span_w) for j0, j1 in _ranges(out_hw[1], rw)]
    return _blocks(x, rows, cols, dtype, block)


def _blocks(x, rows, cols, dtype, block):
    """One graph layer: output block ``(bi, bj)`` is ``block(piece, (i0, i1, j0, j1))`` with ``rows[bi] = (i0, i1,
    r0, r1)`` and ``cols[bj] = (j0, j1, c0, c1)``, ``piece = x[r0:r1, c0:c1]`` made from slices of the chunks it
    overlaps. Each chunk of ``x`` is a task of its own, computed once and read by every block whose piece
    overlaps it (a piece passed to ``dask.delayed`` would be optimised on its own, reading its chunks afresh for
    every neighbour's halo), and the graph grows linearly with the number of blocks."""
    import operator

    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    bounds = [np.cumsum((0, *c)) for c in x.chunks[:2]]
    lanes = x.shape[2:]
    tail = (0,) if x.ndim == 3 else ()
    name = "cnnfilter-" + tokenize(x.name, rows, cols, np.dtype(dtype).str, block)

    def overlaps(b, lo, hi):
        first = int(np.searchsorted(b, lo, side="right")) - 1
        return [(k, max(lo, b[k]) - b[k], min(hi, b[k + 1]) - b[k]) for k in range(first, len(b) - 1) if b[k] < hi]

    layer = {}
    for bi, (i0, i1, r0, r1) in enumerate(rows):
        row_parts = overlaps(bounds[0], r0, r1)
        for bj, (j0, j1, c0, c1) in enumerate(cols):
            parts = [[(operator.getitem, (x.name, ci, cj, *tail), (slice(a0, a1), slice(b0, b1)))
                      for cj, b0, b1 in overlaps(bounds[1], c0, c1)] for ci, a0, a1 in row_parts]
            layer[(name, bi, bj, *tail)] = (_run_block, parts, block, (i0, i1, j0, j1))
    graph = HighLevelGraph.from_collections(name, layer, dependencies=[x])
    chunks = (tuple(i1 - i0 for i0, i1, _, _ in rows), tuple(j1 - j0 for j0, j1, _, _ in cols),
              *((n,) for n in lanes))
    return da.Array(graph, name, chunks, dtype=dtype)


def _run_block(parts, block, where):
    rows = [row[0] if len(row) == 1 else np.concatenate(row, axis=1) for row in parts]
    return block(rows[0] if len(rows) == 1 else np.concatenate(rows, axis=0), where)


def filter_lazy(image, kernel, stride, padding, dilation, border, cval, method, flip):
    """:func:`cnnfilter.correlate2d` (``convolve2d`` with ``flip``) of a dask array, lazily."""
    from . import filters

    x = _check(image)
    dtype = _args.work_dtype(x)
    p = filters.plan(x.shape, kernel, stride, padding, dilation, border, cval, method, flip, dtype, whole=False)
    kd = np.ascontiguousarray(p.k, dtype)  # already flipped for a convolution
    (dh, dw), (kh, kw) = p.dilation, kd.shape
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    _check_blocks(x, p.pads, p.stride, span, p.shape, dtype, p.what)
    # the samples keep their type until a block reads them (a conversion between the reads and the slices would
    # make dask read every neighbouring chunk whole for its halo); a constant border the type cannot hold converts
    # first
    keeps = border != "constant" or np.asarray(p.cval).astype(x.dtype) == p.cval
    xp = _pad(x if keeps else x.astype(dtype), p.pads, border, p.cval)

    def block(piece, where):
        return filters.correlate2d(piece.astype(dtype, copy=False), kd, stride=p.stride, padding="valid",
                                   dilation=p.dilation, method=method)

    return _assemble(xp, p.shape, p.stride, span, dtype, block)


def pool_lazy(image, size, stride, padding, dilation, mode, ceil_mode, count_include_pad):
    """:func:`cnnfilter.pool2d` of a dask array, lazily: each block reads the real pixels under its windows and
    pools them with the window's offsets in the whole image, so padding, ``ceil_mode`` and
    ``count_include_pad`` act exactly as on the whole image."""
    from . import pooling

    x = _check(image)
    dtype = _args.work_dtype(x)
    window, (Ho, Wo) = pooling.plan(x.shape, size, stride, padding, dilation, mode, ceil_mode, count_include_pad)
    (kh, kw), (sh, sw), (dh, dw), (top, bottom, left, right) = window.size, window.stride, window.dilation, window.pads
    H, W = x.shape[:2]
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    _check_blocks(x, (0, 0, 0, 0), (sh, sw), span, (Ho, Wo), dtype, f"pooling a {H}x{W} dask array")
    xf = x  # converted in each block, after its reads (see filter_lazy)
    rh = max(1, -(-max(x.chunks[0]) // sh))
    rw = max(1, -(-max(x.chunks[1]) // sw))

    rows = [(i0, i1, max(0, i0 * sh - top), min(H, (i1 - 1) * sh - top + span[0])) for i0, i1 in _ranges(Ho, rh)]
    cols = [(j0, j1, max(0, j0 * sw - left), min(W, (j1 - 1) * sw - left + span[1])) for j0, j1 in _ranges(Wo, rw)]

    def block(piece, where):  # the window's offsets of this block's first output in the whole image
        i0, i1, j0, j1 = where
        r0, c0 = max(0, i0 * sh - top), max(0, j0 * sw - left)
        offsets = (r0 - (i0 * sh - top), c0 - (j0 * sw - left), H + bottom - r0, W + right - c0)
        return _pool_block(piece, window, offsets, (i1 - i0, j1 - j0))

    return _blocks(xf, rows, cols, dtype, block)


def _pool_block(piece, window, offsets, out_hw):
    from . import pooling

    top, left, hend, wend = offsets
    x3 = piece if piece.ndim == 3 else piece[:, :, None]
    dtype = _args.work_dtype(piece)
    x3 = x3.astype(dtype, copy=False)
    out = np.empty((*out_hw, x3.shape[2]), dtype)
    pooling.region(x3, out, window, top, left, hend, wend)
    return out if piece.ndim == 3 else out[:, :, 0]
