"""Whole-image operations on :class:`~cnnfilter.io.Picture` objects: what the CLI commands do, as functions.

Colour channels are filtered; alpha is carried through untouched (sampled at each window's anchor pixel when
the output size changes). Greyscale stays greyscale, RGB stays RGB, and the bit depth is kept.
"""

from __future__ import annotations

import numpy as np

from .filters import convolve2d, correlate2d
from .io import Picture
from .kernels import Magnitude
from .pooling import pool2d


OUTPUT_RANGES = ("clip", "abs", "normalize", "offset")


ALPHA_MODES = ("keep", "filter")


def to_gray(pic: Picture) -> Picture:
    """Greyscale by ITU-R 601 luma (``0.299 R + 0.587 G + 0.114 B``, as Pillow's ``convert("L")``), unrounded."""
    if pic.pixels.ndim == 2:
        return pic
    luma = pic.pixels.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return Picture(luma, pic.alpha, pic.depth, dict(pic.info))


def apply_kernel(values: np.ndarray, kernel, *, flip: bool = False, **options) -> np.ndarray:
    """One step of a pipeline: ``correlate2d`` (``convolve2d`` with ``flip``) with a 2-D kernel, or for a
    :class:`~cnnfilter.kernels.Magnitude` ``sqrt(gx² + gy²)``. ``options`` go to the filter."""
    op = convolve2d if flip else correlate2d
    if isinstance(kernel, Magnitude):
        return np.hypot(op(values, kernel.gx, **options), op(values, kernel.gy, **options))
    return op(values, kernel, **options)


def filter_picture(pic: Picture, kernels, *, flip: bool = False, stride=1, padding="same", dilation=1,
                   border: str = "constant", cval: float = 0.0, method: str = "auto", bias: float = 0.0,
                   output_range: str | None = None, gray: bool = False, alpha: str = "keep") -> Picture:
    """Apply each step of ``kernels`` in turn (a pipeline) to the colour channels of ``pic``.

    A step is a 2-D kernel or a :class:`~cnnfilter.kernels.Magnitude` (``sqrt(gx² + gy²)``). The first step uses
    ``stride``, ``padding`` and ``dilation``; later ones run at stride 1 with ``'same'`` padding, so a pipeline
    changes the size at most once. ``bias`` is added to the result, then ``output_range`` decides how signed values
    become pixels (:func:`map_output`); by default ``abs`` when the last kernel sums to 0 (edge and derivative
    kernels), ``clip`` otherwise.
    """
    if alpha not in ALPHA_MODES:
        msg = f"alpha {alpha!r} is not one of {', '.join(ALPHA_MODES)}"
        raise ValueError(msg)
    if gray:
        pic = to_gray(pic)
    if alpha == "filter" and pic.alpha is not None:
        if any(isinstance(k, Magnitude) or abs(float(np.sum(k))) <= 1e-9 * float(np.abs(k).max()) for k in kernels):
            msg = ("--alpha filter weights colour by alpha, which needs kernels that keep it (smoothing, sum not 0); "
                   "use --alpha keep with edge and derivative kernels")
            raise ValueError(msg)
        return _filter_premultiplied(pic, kernels, flip=flip, stride=stride, padding=padding, dilation=dilation,
                                     border=border, cval=cval, method=method, bias=bias, output_range=output_range)
    values = pic.pixels
    alpha = pic.alpha
    for n, k in enumerate(kernels):
        geometry = {"stride": stride, "padding": padding, "dilation": dilation} if n == 0 else {}
        common = {"border": border, "cval": cval, "method": method, **geometry}
        values = apply_kernel(values, k, flip=flip, **common)
        if n == 0 and alpha is not None and values.shape[:2] != alpha.shape:
            shape = k.gx.shape if isinstance(k, Magnitude) else np.shape(k)
            anchor = np.zeros(shape)
            anchor[(shape[0] - 1) // 2, (shape[1] - 1) // 2] = 1.0
            alpha = correlate2d(alpha, anchor, border="edge", **geometry)
    bias = parse_bias(bias, pic.depth)
    if bias:
        values = values + bias
    output_range = output_range or default_output_range(kernels)
    return Picture(map_output(values, output_range, pic.depth), alpha, pic.depth, dict(pic.info))


def default_output_range(kernels) -> str:
    """``abs`` when the last kernel sums to 0 (edge and derivative kernels: responses of both signs), else
    ``clip``."""
    last = kernels[-1]
    zero_sum = not isinstance(last, Magnitude) and abs(last.sum()) <= 1e-9 * np.abs(last).max()
    return "abs" if zero_sum else "clip"


def _filter_premultiplied(pic: Picture, kernels, **options) -> Picture:
    """Filter colour and alpha together, colour weighted by alpha (premultiplied), then divide the alpha back out:
    transparent pixels, whatever colour they hold, leave no dark or coloured halo around opaque ones."""
    from .limits import check_memory

    check_memory(4.0 * 6 * pic.alpha.size * (1 + (pic.pixels.shape[2] if pic.pixels.ndim == 3 else 1)),
                 f"filtering a {pic.alpha.shape[0]}x{pic.alpha.shape[1]} image with its alpha (--alpha filter)")
    top = 65535.0 if pic.depth == 16 else 255.0
    a = pic.alpha.astype(np.float32) / np.float32(top)
    px = pic.pixels.astype(np.float32)
    colour = px * (a[:, :, None] if px.ndim == 3 else a)
    stacked = np.dstack([colour, pic.alpha.astype(np.float32)])
    bias, output_range = options.pop("bias", 0.0), options.pop("output_range", None)
    out = filter_picture(Picture(stacked, None, pic.depth, dict(pic.info)), kernels, output_range="clip", **options)
    values = out.pixels
    new_alpha = np.clip(values[:, :, -1], 0, top)
    scale = np.where(new_alpha > 0, top / np.maximum(new_alpha, 1e-12), 0).astype(np.float32)
    colour = values[:, :, :-1] * scale[:, :, None]
    colour = map_output(colour + parse_bias(bias, pic.depth), output_range or "clip", pic.depth)
    return Picture(colour[:, :, 0] if px.ndim == 2 else colour, new_alpha, pic.depth, out.info)


def parse_bias(bias, depth: int) -> float:
    """A bias as a number, or ``"P%"``: P percent of the full range of ``depth`` (``50%`` of 8-bit is 127.5)."""
    text = str(bias).strip()
    try:
        value = (float(text[:-1]) / 100 * (65535.0 if depth == 16 else 255.0) if text.endswith("%")
                 else float(text))
    except ValueError:
        msg = f"bias {bias!r} is not a number or a percentage such as 50%"
        raise ValueError(msg) from None
    if not np.isfinite(value) or abs(value) > 1e30:
        msg = f"bias {bias!r} must be a finite number of at most 1e30"
        raise ValueError(msg)
    return value


def map_output(values: np.ndarray, output_range: str, depth: int) -> np.ndarray:
    """How signed filter results become pixels of ``depth`` bits (rounding and clipping come at writing).

    ``clip``: as they are (clipped to the range when written); ``abs``: absolute value (edge strength of either
    sign); ``normalize``: min..max stretched to the full range (all channels together; a constant result gives 0);
    ``offset``: mid-grey added, so 0 is grey and negative values are darker (ImageMagick's ``-bias 50%``).
    """
    if output_range not in OUTPUT_RANGES:
        msg = f"output_range {output_range!r} is not one of {', '.join(OUTPUT_RANGES)}"
        raise ValueError(msg)
    top = 65535.0 if depth == 16 else 255.0
    if output_range == "abs":
        return np.abs(values)
    if output_range == "offset":
        return values + (top + 1) / 2
    if output_range == "normalize":
        lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
        if hi <= lo:
            return np.zeros_like(values)
        return (values - lo) * (top / (hi - lo))
    return values


def pool_picture(pic: Picture, size, *, stride=None, padding=0, mode: str = "max", ceil_mode: bool = False,
                 count_include_pad: bool = True) -> Picture:
    """Pool the colour channels of ``pic``; alpha is pooled with the same window and mode."""
    kw = {"stride": stride, "padding": padding, "mode": mode, "ceil_mode": ceil_mode,
          "count_include_pad": count_include_pad}
    values = pool2d(pic.pixels, size, **kw)
    alpha = None if pic.alpha is None else pool2d(pic.alpha, size, **kw)
    return Picture(values, alpha, pic.depth, dict(pic.info))


def convolve_file(source, target, *, steps, fmt=None, quality=None, compress_level=None, raw=None,
                  **options) -> None:
    """Read ``source``, :func:`filter_picture` it with ``steps`` and ``options``, write ``target`` atomically
    (creating its folder), and with ``raw`` also the unrounded float result. The unit of work of a batch."""
    from .io import read_picture

    pic = _readable_in_place(read_picture(source), source, target)
    if raw is None:
        result = filter_picture(pic, steps, **options)
        _write(result, target, fmt=fmt, quality=quality, compress_level=compress_level, raw=None)
        return
    # --raw is the response before --output-range ("clip" maps nothing); the image is mapped from it
    output_range = options.pop("output_range", None) or default_output_range(steps)
    response = filter_picture(pic, steps, output_range="clip", **options)
    result = Picture(map_output(response.pixels, output_range, response.depth), response.alpha, response.depth,
                     response.info)
    _write(result, target, fmt=fmt, quality=quality, compress_level=compress_level, raw=(raw, response))


def pool_file(source, target, *, size, fmt=None, quality=None, compress_level=None, raw=None, **options) -> None:
    """:func:`pool_picture` from file to file, as :func:`convolve_file`."""
    from .io import read_picture

    result = pool_picture(_readable_in_place(read_picture(source), source, target), size, **options)
    _write(result, target, fmt=fmt, quality=quality, compress_level=compress_level, raw=raw)


def _readable_in_place(pic: Picture, source, target) -> Picture:
    """``pic``, unless writing ``target`` would replace ``source``'s other frames (an animated GIF, a multi-page
    TIFF: only the first frame is filtered)."""
    from pathlib import Path

    from .io import ImageWriteError

    frames = pic.info.get("frames", 1)
    if frames > 1 and source != "-" and target != "-" and Path(source).resolve() == Path(target).resolve():
        msg = f"{str(source)!r} has {frames} frames and only the first is filtered: --in-place would lose the others"
        raise ImageWriteError(msg)
    return pic


def _write(result: Picture, target, *, raw, **save) -> None:
    """Write ``result`` to ``target``; ``raw`` is a path (``result`` itself, unrounded, goes there) or a
    ``(path, picture)`` pair for a response that differs from the image (before --output-range)."""
    from pathlib import Path

    from .io import write_picture, write_raw

    if target != "-":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path, values = raw if isinstance(raw, tuple) else (raw, result)
        write_raw(values, path)
    write_picture(result, target, **save)
