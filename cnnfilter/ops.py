"""Whole-image operations on :class:`~cnnfilter.io.Picture` objects: what the CLI commands do, as functions.

Colour channels are filtered; alpha is carried through untouched (sampled at each window's anchor pixel when
the output size changes). Greyscale stays greyscale, RGB stays RGB, and the bit depth is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .chunked import is_lazy
from .filters import convolve2d, correlate2d
from .io import Picture, SaveSpec
from .kernels import Magnitude
from .pooling import pool2d


OUTPUT_RANGES = ("clip", "abs", "normalize", "offset")


ALPHA_MODES = ("keep", "filter")


def to_gray(pic: Picture) -> Picture:
    """Greyscale by ITU-R 601 luma (``0.299 R + 0.587 G + 0.114 B``, as Pillow's ``convert("L")``), unrounded
    float32, made a band of rows at a time (memory: the result, not a float copy of the colour image)."""
    if pic.pixels.ndim == 2:
        return pic
    px = pic.pixels
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    luma = np.empty(px.shape[:2], np.float32)
    band = max(1, (4 << 20) // max(1, 12 * px.shape[1]))  # rows of about 4 MiB of float32 colour
    for r in range(0, px.shape[0], band):
        np.matmul(px[r : r + band].astype(np.float32), weights, out=luma[r : r + band])
    return Picture(luma, pic.alpha, pic.depth, dict(pic.info))


def apply_kernel(values: np.ndarray, kernel, *, flip: bool = False, **options) -> np.ndarray:
    """One step of a pipeline: ``correlate2d`` (``convolve2d`` with ``flip``) with a 2-D kernel, or for a
    :class:`~cnnfilter.kernels.Magnitude` ``sqrt(gx² + gy²)``. ``options`` go to the filter."""
    op = convolve2d if flip else correlate2d
    if isinstance(kernel, Magnitude):
        return np.hypot(op(values, kernel.gx, **options), op(values, kernel.gy, **options))
    return op(values, kernel, **options)


@dataclass(frozen=True, eq=False)
class FilterSpec:
    """Everything ``convolve`` does to one picture, checked once when made; :func:`apply` applies it.

    ``steps`` are 2-D kernels or :class:`~cnnfilter.kernels.Magnitude` pairs applied in turn (a pipeline); the
    first uses ``stride``, ``padding`` and ``dilation``, later ones run at stride 1 with ``'same'`` padding, so a
    pipeline changes the size at most once. ``bias`` (a number or ``"P%"`` of full scale) is added to the result,
    then ``output_range`` decides how signed values become pixels (:func:`map_output`; default ``abs`` when the
    last kernel sums to 0, else ``clip``). ``alpha``: ``keep`` (carried through, sampled at each window's anchor
    when the size changes) or ``filter`` (premultiplied). ``depth``: 8 or 16 bits out (default: the input's).
    """

    steps: tuple
    flip: bool = False
    stride: int | tuple = 1
    padding: str | int | tuple = "same"
    dilation: int | tuple = 1
    border: str = "constant"
    cval: float = 0.0
    method: str = "auto"
    bias: float | str = 0.0
    output_range: str | None = None
    gray: bool = False
    alpha: str = "keep"
    depth: int | None = None

    def __post_init__(self):
        from . import _args
        from .filters import METHODS
        from .kernels import validate_kernel

        steps = tuple(self.steps) if isinstance(self.steps, (list, tuple)) else (self.steps,)
        if not steps:
            msg = "a filter needs at least one kernel"
            raise ValueError(msg)
        checked = []
        for k in steps:
            if isinstance(k, Magnitude):
                checked.append(Magnitude(validate_kernel(k.gx), validate_kernel(k.gy)))
            else:
                checked.append(validate_kernel(k))
        object.__setattr__(self, "steps", tuple(checked))
        _args.pair(self.stride, "stride")
        _args.pair(self.dilation, "dilation")
        _args.border_code(self.border)
        if self.method not in METHODS:
            msg = f"method {self.method!r} is not one of {', '.join(METHODS)}"
            raise ValueError(msg)
        if self.alpha not in ALPHA_MODES:
            msg = f"alpha {self.alpha!r} is not one of {', '.join(ALPHA_MODES)}"
            raise ValueError(msg)
        if self.output_range is not None and self.output_range not in OUTPUT_RANGES:
            msg = f"output_range {self.output_range!r} is not one of {', '.join(OUTPUT_RANGES)}"
            raise ValueError(msg)
        if self.depth not in (None, 8, 16):
            msg = f"depth {self.depth!r} is not 8 or 16"
            raise ValueError(msg)
        parse_bias(self.bias, 16)
        if self.alpha == "filter" and any(isinstance(k, Magnitude) or _sums_to_zero(k) for k in self.steps):
            msg = ("--alpha filter weights colour by alpha, which needs kernels that keep it (smoothing, sum not 0); "
                   "use --alpha keep with edge and derivative kernels")
            raise ValueError(msg)

    @property
    def exact(self) -> bool:
        """Whether every step is a kernel of integers (edge, sharpen, Laplacian, ...): the numpy engine filters
        8- and 16-bit images with it exactly, and nearly as fast as the compiled loops."""
        return all(not isinstance(k, Magnitude) and np.array_equal(k, np.round(k)) for k in self.steps)

    @property
    def range(self) -> str:
        """The output range that applies: as given, else ``abs`` for a last kernel summing to 0, else ``clip``."""
        return self.output_range or default_output_range(self.steps)

    def geometry(self, first: bool) -> dict:
        """The filter options of the first step (``first``) or of a later one."""
        common = {"border": self.border, "cval": self.cval, "method": self.method}
        if first:
            return {**common, "stride": self.stride, "padding": self.padding, "dilation": self.dilation}
        return common


@dataclass(frozen=True)
class PoolSpec:
    """Everything ``pool`` does to one picture: max, average or min over ``size`` windows stepping by
    ``stride`` (default: the window), with PyTorch's padding, ``ceil_mode`` and ``count_include_pad``."""

    size: int | tuple = 2
    stride: int | tuple | None = None
    padding: int | tuple = 0
    mode: str = "max"
    ceil_mode: bool = False
    count_include_pad: bool = True

    def __post_init__(self):
        from . import _args
        from .pooling import MODES

        _args.pair(self.size, "size")
        if self.stride is not None:
            _args.pair(self.stride, "stride")
        if self.mode not in MODES:
            msg = f"mode {self.mode!r} is not one of {', '.join(MODES)}"
            raise ValueError(msg)

    @property
    def label(self) -> str:
        """``max2``, ``avg3x2``: how outputs are named."""
        size = self.size if isinstance(self.size, int) else "x".join(map(str, self.size))
        return f"{self.mode}{size}"


def apply(spec: FilterSpec | PoolSpec, pic: Picture) -> Picture:
    """``pic`` filtered or pooled as ``spec`` says. Colour channels are processed; alpha is carried (or pooled,
    or filtered with ``alpha='filter'``); greyscale stays greyscale, RGB stays RGB, the depth is kept unless
    ``spec.depth`` says otherwise. 8- and 16-bit pictures filtered by one kernel with a ``clip``, ``abs`` or
    ``offset`` output range come back as stored samples (rounded and clipped in the filter's own pass); other
    results are float, rounded when written."""
    if isinstance(spec, PoolSpec):
        return _pool(spec, pic)
    if spec.depth is not None and spec.depth != pic.depth:
        pic = _redepth(pic, spec.depth)
    if spec.gray:
        pic = to_gray(pic)
    if spec.alpha == "filter" and pic.alpha is not None:
        return _filter_premultiplied(pic, spec)
    if (len(spec.steps) == 1 and not isinstance(spec.steps[0], Magnitude) and pic.depth in (8, 16)
            and pic.pixels.dtype.kind == "u" and not is_lazy(pic.pixels)):
        from .filters import POSTS

        if spec.range in POSTS:
            return _filter_samples(spec, pic)
    values = pic.pixels
    for n, k in enumerate(spec.steps):
        values = apply_kernel(values, k, flip=spec.flip, **spec.geometry(n == 0))
    bias = parse_bias(spec.bias, pic.depth)
    if bias:
        values = values + bias
    return Picture(map_output(values, spec.range, pic.depth), _alpha_for(spec, pic, values.shape[:2]), pic.depth,
                   dict(pic.info))


def _filter_samples(spec: FilterSpec, pic: Picture) -> Picture:
    """One kernel straight into stored samples, reading (and writing) Pillow's 4-byte layout where the picture
    has it."""
    from .filters import Samples, correlate_samples
    from .io import own_lanes

    samples = Samples(pic.depth, spec.range, parse_bias(spec.bias, pic.depth))
    options = {**spec.geometry(True), "flip": spec.flip}
    if own_lanes(pic):
        out = correlate_samples(pic.lanes, spec.steps[0], samples, channels=3, others=pic.alpha is not None,
                                **options)
        if pic.alpha is not None and out.shape[:2] != pic.alpha.shape:  # sampled at each window's anchor
            out[:, :, 3] = _alpha_for(spec, pic, out.shape[:2])
        return Picture(out[:, :, :3], None if pic.alpha is None else out[:, :, 3], pic.depth, dict(pic.info),
                       lanes=out)
    out = correlate_samples(pic.pixels, spec.steps[0], samples, **options)
    return Picture(out, _alpha_for(spec, pic, out.shape[:2]), pic.depth, dict(pic.info))


def _alpha_for(spec: FilterSpec, pic: Picture, shape) -> np.ndarray | None:
    """Alpha for a result of ``shape``: as it is, or sampled at each window's anchor pixel when the first step
    changed the size."""
    if pic.alpha is None or pic.alpha.shape == tuple(shape):
        return pic.alpha
    k = spec.steps[0]
    kshape = k.gx.shape if isinstance(k, Magnitude) else np.shape(k)
    anchor = np.zeros(kshape)
    anchor[(kshape[0] - 1) // 2, (kshape[1] - 1) // 2] = 1.0
    geometry = {"stride": spec.stride, "padding": spec.padding, "dilation": spec.dilation}
    alpha = correlate2d(pic.alpha, anchor, border="edge", **geometry)
    return alpha.astype(pic.alpha.dtype) if pic.alpha.dtype.kind == "u" else alpha


def _redepth(pic: Picture, depth: int) -> Picture:
    """8-bit samples to 16 (times 257: 255 becomes 65535) or 16 to 8 (to the nearest)."""
    if pic.depth not in (8, 16):
        msg = f"depth {depth} applies to 8- and 16-bit images; this one holds float samples"
        raise ValueError(msg)
    from .io import to8, to_depth

    def convert(a):
        if a is None:
            return None
        a = to_depth(a, pic.depth) if a.dtype.kind != "u" else a
        return a.astype(np.uint16) * np.uint16(257) if depth == 16 else to8(a)

    return Picture(convert(pic.pixels), convert(pic.alpha), depth, dict(pic.info))


def filter_picture(pic: Picture, kernels, **options) -> Picture:
    """:func:`apply` of ``FilterSpec(kernels, **options)``: a list of kernels and keywords instead of a spec."""
    return apply(FilterSpec(tuple(kernels), **options), pic)


def default_output_range(kernels) -> str:
    """``abs`` when the last kernel sums to 0 (edge and derivative kernels: responses of both signs), else
    ``clip``."""
    last = kernels[-1]
    return "abs" if not isinstance(last, Magnitude) and _sums_to_zero(last) else "clip"


def _sums_to_zero(k: np.ndarray) -> bool:
    """An edge or derivative kernel: its sum is 0 to within rounding of its largest weight."""
    return abs(float(np.sum(k))) <= 1e-9 * float(np.abs(k).max())


def _filter_premultiplied(pic: Picture, spec: FilterSpec) -> Picture:
    """Filter colour and alpha together, colour weighted by alpha (premultiplied), then divide the alpha back out:
    transparent pixels, whatever colour they hold, leave no dark or coloured halo around opaque ones."""
    from .limits import check_memory

    if not is_lazy(pic.alpha):  # a lazy picture is checked a block at a time
        check_memory(4.0 * 6 * pic.alpha.size * (1 + (pic.pixels.shape[2] if pic.pixels.ndim == 3 else 1)),
                     f"filtering a {pic.alpha.shape[0]}x{pic.alpha.shape[1]} image with its alpha (--alpha filter)")
    top = 65535.0 if pic.depth == 16 else 255.0
    a = pic.alpha.astype(np.float32) / np.float32(top)
    px = pic.pixels.astype(np.float32)
    colour = px * (a[:, :, None] if px.ndim == 3 else a)
    stacked = np.dstack([colour, pic.alpha.astype(np.float32)])
    inner = replace(spec, alpha="keep", bias=0.0, output_range="clip", gray=False, depth=None)
    values = stacked
    for n, k in enumerate(inner.steps):
        values = apply_kernel(values, k, flip=inner.flip, **inner.geometry(n == 0))
    new_alpha = np.clip(values[:, :, -1], 0, top)
    scale = np.where(new_alpha > 0, top / np.maximum(new_alpha, 1e-12), 0).astype(np.float32)
    colour = values[:, :, :-1] * scale[:, :, None]
    colour = map_output(colour + parse_bias(spec.bias, pic.depth), spec.output_range or "clip", pic.depth)
    return Picture(colour[:, :, 0] if px.ndim == 2 else colour, new_alpha, pic.depth, dict(pic.info))


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


def _pool(spec: PoolSpec, pic: Picture) -> Picture:
    kw = {"stride": spec.stride, "padding": spec.padding, "mode": spec.mode, "ceil_mode": spec.ceil_mode,
          "count_include_pad": spec.count_include_pad}
    values = pool2d(pic.pixels, spec.size, **kw)
    alpha = None if pic.alpha is None else pool2d(pic.alpha, spec.size, **kw)
    return Picture(values, alpha, pic.depth, dict(pic.info))


def pool_picture(pic: Picture, size, **options) -> Picture:
    """:func:`apply` of ``PoolSpec(size, **options)``."""
    return apply(PoolSpec(size, **options), pic)


def process_file(source, target, *, spec: FilterSpec | PoolSpec, save: SaveSpec = SaveSpec(), raw=None,
                 stream=None) -> None:
    """Read ``source``, :func:`apply` ``spec``, write ``target`` atomically (creating its folder) as ``save``
    says, and with ``raw`` also the unrounded float result (for a filter: the response before its output range).
    A TIFF that ``stream`` (a :class:`cnnfilter.stream.Streaming`) wants is streamed tile by tile instead
    (:func:`cnnfilter.stream.process`). The unit of work of a batch."""
    from .io import read_picture

    if stream is not None and stream.wants(source):
        from . import stream as streamed

        try:
            streamed.process(source, target, spec=spec, streaming=stream, raw=raw, fmt=save.fmt)
            return
        except streamed.Unstreamable:
            if stream.tile is not None:  # asked for: say why not
                raise
            # streaming was only the default for its size: read it in memory, as before (the pixel limit decides)

    pic = _readable_in_place(read_picture(source), source, target)
    if raw is None or isinstance(spec, PoolSpec):  # a pooled result is float already: raw is the result
        _write(apply(spec, pic), target, save=save, raw=raw)
        return
    # --raw is the response before --output-range ("clip" maps nothing, and a float result is not rounded); the
    # image is mapped from it
    response = apply(replace(spec, output_range="clip"), _as_float(pic))
    result = Picture(map_output(response.pixels, spec.range, response.depth), response.alpha, response.depth,
                     response.info)
    _write(result, target, save=save, raw=(raw, response))


def _as_float(pic: Picture) -> Picture:
    """``pic`` with float32 pixels, so that filtering it gives the unrounded response."""
    return Picture(pic.pixels.astype(np.float32), pic.alpha, pic.depth, dict(pic.info))


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


def _write(result: Picture, target, *, save: SaveSpec, raw) -> None:
    """Write ``result`` to ``target``; ``raw`` is a path (``result`` itself, unrounded, goes there) or a
    ``(path, picture)`` pair for a response that differs from the image (before --output-range)."""
    from pathlib import Path

    from .io import write_picture, write_raw

    if target != "-":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    if raw is not None:
        path, values = raw if isinstance(raw, tuple) else (raw, result)
        write_raw(values, path)
    write_picture(result, target, fmt=save.fmt, quality=save.quality, compress_level=save.compress_level)
