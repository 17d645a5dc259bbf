"""Drawing arrays for people: colormaps, value scaling, montages of feature maps, bar charts of dense layers,
and photo-sized maps reduced for display. Arrays in, Pillow images out; nothing here reads or writes files.

Montages and bar charts are palette images ("P"): the colormap's levels, the background and a few shades of
text are all the colours they hold, so a montage is one byte per pixel and its PNG is encoded about four times
faster than RGB, and is smaller. Text is drawn only on the background (labels above tiles, the colour bar's
values), where its anti-aliasing needs only shades between background and text.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFont

COLORMAPS = ("gray", "viridis", "magma", "inferno", "coolwarm")
NORMALIZE = ("map", "layer", "none")

GUTTER = 2  # pixels between tiles
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
ROBUST_PIXELS = 4096  # maps larger than this are scaled to their 0.5..99.5 percentiles: a few outliers do not
# wash out the rest (edge responses are mostly near 0 with rare strong peaks)
MAX_TILES = 1024  # tiles of one montage (bars of one chart): enough to see a layer, few enough to draw in bounded
# memory and time

_LEVELS = 240  # palette entries for the colormap's levels
_SHADES = 8  # text anti-aliasing: shades between background and text
_BG = 240  # palette index of the background; text shades follow it, then the bar chart's own colours
_SHADE0 = _BG + 1
_AXIS, _POS, _NEG = _SHADE0 + _SHADES, _SHADE0 + _SHADES + 1, _SHADE0 + _SHADES + 2


class Figure(NamedTuple):
    """A drawn picture and the sentence that explains its colours (for a report's caption)."""

    image: Image.Image
    caption: str


@functools.cache
def colormap(name: str) -> np.ndarray:
    """The 256 x 3 uint8 lookup table of ``name`` (data files in cnnfilter/colormaps)."""
    if name not in COLORMAPS:
        msg = f"colormap {name!r} is not one of {', '.join(COLORMAPS)}"
        raise ValueError(msg)
    text = (Path(__file__).resolve().parent / "colormaps" / f"{name}.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    return np.asarray(rows, np.uint8).reshape(256, 3)


@functools.cache
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


@functools.cache
def _palette(lut: str) -> bytes:
    """The 256-entry palette: ``_LEVELS`` levels of the colormap ``lut``, the background, the text shades, then
    the bar chart's axis and its positive and negative bars."""
    pal = np.zeros((256, 3), np.uint8)
    pal[:_LEVELS] = colormap(lut)[np.rint(np.linspace(0, 255, _LEVELS)).astype(int)]
    bg, fg = np.array(BACKGROUND, float), np.array(TEXT, float)
    pal[_BG] = BACKGROUND
    for j in range(_SHADES):
        pal[_SHADE0 + j] = np.rint(bg + (fg - bg) * (j + 1) / _SHADES)
    cool = colormap("coolwarm")
    pal[_AXIS], pal[_POS], pal[_NEG] = (110, 110, 110), cool[225], cool[30]
    return pal.tobytes()


@functools.lru_cache(maxsize=4096)  # labels repeat (channel numbers, class names); a bounded cache
def _text_mask(text: str, size: int) -> np.ndarray:
    """The text shade (0 = none, 1.._SHADES) of each pixel of ``text`` in the default font of ``size`` px."""
    font = _font(size)
    box = font.getbbox(text)
    im = Image.new("L", (max(1, box[2]) + 1, max(1, box[3]) + 1), 0)
    from PIL import ImageDraw

    ImageDraw.Draw(im).text((0, 0), text, fill=255, font=font)
    cover = np.asarray(im).astype(np.int32)
    return ((cover * _SHADES + 127) // 255).astype(np.uint8)


def text_width(text: str, size: int) -> int:
    return int(_text_mask(text, size).shape[1])


def _put_text(canvas: np.ndarray, x: int, y: int, text: str, size: int = 11, anchor: str = "left",
              limit: int | None = None) -> None:
    """Write ``text`` into the palette canvas at ``(x, y)`` (its left, right or middle there, by ``anchor``),
    cut at ``limit`` pixels wide; only on background pixels' indices (shades of the text colour)."""
    mask = _text_mask(text, size)
    if limit is not None:
        mask = mask[:, : max(0, limit)]
    h, w = mask.shape
    x = x - w if anchor == "right" else x - w // 2 if anchor == "middle" else x
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(canvas.shape[1], x + w), min(canvas.shape[0], y + h)
    if x1 <= x0 or y1 <= y0:
        return
    m = mask[y0 - y : y1 - y, x0 - x : x1 - x]
    region = canvas[y0:y1, x0:x1]
    np.copyto(region, (_SHADE0 - 1 + m).astype(np.uint8), where=m > 0)


def _image(canvas: np.ndarray, lut: str) -> Image.Image:
    img = Image.fromarray(canvas, "P")
    img.putpalette(_palette(lut))
    return img


def _grid(n: int, columns: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of a near-square grid for ``n`` tiles: 1 -> 1x1, 3 -> 2x2, 8 -> 3x3, 16 -> 4x4, 17 -> 4x5."""
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


def scale_maps(maps: np.ndarray, normalize: str = "map", signed=None):
    """Values -> 0..1 for the colormap, and whether each channel is signed (drawn with a diverging map).

    ``map``: each channel's own range; ``layer``: one range for all channels; ``none``: the raw values, clipped to
    0..1 (-1..1 when signed). A signed range is symmetric, -p..p, so that 0 stays in the middle. The range is
    min..max, or the 0.5..99.5 percentiles for maps over 4,096 pixels. ``signed`` None decides per channel (any
    negative value), ``map`` mode only; else one bool for all. A constant map gives 0.5 when signed, 1 when
    positive, 0 when zero: never a division by zero. Returns ``(scaled (C, H, W), (lo, hi) or None for map,
    signed per channel (C,) bool)``.
    """
    m = np.asarray(maps, np.float64)
    if m.ndim == 2:
        m = m[None]
    if normalize not in NORMALIZE:
        msg = f"normalize {normalize!r} is not one of {', '.join(NORMALIZE)}"
        raise ValueError(msg)
    if normalize == "map" and m.shape[1] * m.shape[2] == 1:  # one value per channel (a global pool, an SE gate):
        normalize = "layer"  # its own range would say nothing; one shared range compares the channels
    big = np.finfo(np.float32).max
    m = np.nan_to_num(m, nan=0.0, posinf=big, neginf=-big)
    C = m.shape[0]
    if signed is None:
        neg = (m < 0).reshape(C, -1).any(axis=1)
        sg = neg if normalize == "map" else np.full(C, bool(neg.any()))
    else:
        sg = np.full(C, bool(signed))
    if normalize == "none":
        lo = np.where(sg, -1.0, 0.0)[:, None, None]
        return np.clip((m - lo) / (1.0 - lo), 0, 1), (-1.0 if sg.any() else 0.0, 1.0), sg
    flat = m.reshape(C, -1) if normalize == "map" else m.reshape(1, -1)
    robust = flat.shape[1] > ROBUST_PIXELS
    lo = np.percentile(flat, 0.5, axis=1) if robust else flat.min(axis=1)
    hi = np.percentile(flat, 99.5, axis=1) if robust else flat.max(axis=1)
    peak = np.maximum(np.abs(lo), np.abs(hi))
    if normalize == "layer":
        lo, hi, peak = np.full(C, lo[0]), np.full(C, hi[0]), np.full(C, peak[0])
    lo = np.where(sg, -peak, lo)[:, None, None]
    hi = np.where(sg, peak, hi)[:, None, None]
    span = hi - lo
    const = np.where(sg[:, None, None], 0.5, np.where(hi > 0, 1.0, 0.0))
    out = np.where(span > 0, (m - lo) / np.where(span > 0, span, 1), const)
    rng = None if normalize == "map" else (float(lo.min()), float(hi.max()))
    return np.clip(out, 0, 1), rng, sg


def _caption(rng, signed: bool, normalize: str, lut: str) -> str:
    """How the colours of a montage map to values: the range (each tile's, the layer's, or raw) and the
    colormap; a layer with negative values is centred at 0 (each tile symmetric around it)."""
    if rng is None:
        text = "each tile scaled to its own range"
    elif normalize == "layer":
        text = f"one range for the layer: {rng[0]:.3g} to {rng[1]:.3g}"
    else:
        text = f"raw values, {rng[0]:.3g} to {rng[1]:.3g}"
    return text + (f"; {lut}, 0 in the middle" if signed and (rng is None or rng[0] < 0) else f"; {lut}")


def montage(maps, *, tile_size: int | None = None, normalize: str = "map", colormap_name: str | None = None,
            signed: bool | None = None, title: str | None = None, labels: list[str] | None = None,
            columns: int | None = None) -> Image.Image:
    """Draw ``maps`` (C, H, W) — or (H, W) — as a grid of tiles: see :func:`montage_figure`."""
    return montage_figure(maps, tile_size=tile_size, normalize=normalize, colormap_name=colormap_name,
                          signed=signed, title=title, labels=labels, columns=columns).image


def montage_figure(maps, *, tile_size: int | None = None, normalize: str = "map", colormap_name: str | None = None,
                   signed: bool | None = None, title: str | None = None, labels: list[str] | None = None,
                   columns: int | None = None) -> Figure:
    """Draw ``maps`` (C, H, W) — or (H, W); a vector (N,) becomes a bar chart (:func:`bars`) — as a grid of tiles.

    Each tile is the channel upscaled with nearest-neighbour by the integer factor that brings its longer side to
    at least ``tile_size`` (default 96 px, 64 above 16 channels, 48 above 64; maps larger than 4 * tile_size are
    subsampled), with the channel index (or ``labels``) above it; ``title`` (if given) goes on top and a colour
    bar with the range below. A layer with a negative value (``signed`` None: decided from the maps) gets the
    diverging ``coolwarm``, each tile centred at 0; others ``viridis``, unless ``colormap_name``. One value per
    channel (C, 1, 1) is a vector: a bar chart. The caption says how colours map to values.
    """
    m = np.asarray(maps, np.float32)
    if m.ndim == 1 or (m.ndim == 3 and m.shape[1] * m.shape[2] == 1 and m.shape[0] > 1):
        return bars(m.ravel(), labels=labels, title=title)  # a vector (a dense layer, a global pooling)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.size == 0:
        msg = f"maps have shape {np.shape(maps)}; expected (C, H, W), (H, W) or (N,)"
        raise ValueError(msg)
    if signed is None:  # one colormap for the layer: diverging when any of its values is negative
        signed = bool((m < 0).any())
    if m.shape[0] > MAX_TILES:  # a layer of 100,000 channels: its first tiles, and the caption says so
        more = f" (the first {MAX_TILES} of {m.shape[0]} channels)"
        m, labels = m[:MAX_TILES], None if labels is None else list(labels)[:MAX_TILES]
    else:
        more = ""
    C, H, W = m.shape
    target = tile_size or (96 if C <= 16 else 64 if C <= 64 else 48)  # big grids get smaller tiles
    factor = max(1, round(target / max(H, W))) if max(H, W) <= target else 1  # whole times, near the target
    shrink = max(1, math.ceil(max(H, W) / (4 * target))) if max(H, W) > 4 * target else 1
    th, tw = max(1, (H * factor) // shrink), max(1, (W * factor) // shrink)  # a 2x3000 map keeps a row
    if shrink > 1:  # subsample before scaling and colouring: memory and time follow the tiles, not the maps
        m, shrink = m[:, ::shrink, ::shrink], 1
    rows, cols = _grid(C, columns)
    from .limits import check_memory

    check_memory(2.0 * (rows * (th + 20) + 70) * max(cols * (tw + GUTTER), 260) + 24.0 * m.size,
                 f"a montage of {C} tiles of {th}x{tw} pixels")
    if normalize == "map" and H * W == 1:  # one value per channel: scale_maps compares the channels on one range
        normalize = "layer"
    scaled, rng, _ = scale_maps(m, normalize, signed)
    lut = colormap_name or ("coolwarm" if signed else "viridis")
    n = _LEVELS
    label_h = 14
    head = 24 if title else 4
    bar_h = 34
    width = max(cols * (tw + GUTTER) + GUTTER, 260)
    height = head + rows * (th + label_h + GUTTER) + GUTTER + bar_h
    idx = np.rint(scaled * (n - 1)).astype(np.uint8)
    if factor > 1:
        idx = idx.repeat(factor, axis=1).repeat(factor, axis=2)
    idx = idx[:, :th, :tw]
    cell_h, cell_w = th + label_h + GUTTER, tw + GUTTER
    cells = np.full((rows * cols, cell_h, cell_w), _BG, np.uint8)
    cells[:C, label_h : label_h + th, :tw] = idx
    grid = cells.reshape(rows, cols, cell_h, cell_w).transpose(0, 2, 1, 3).reshape(rows * cell_h, cols * cell_w)
    canvas = np.full((height, width), _BG, np.uint8)
    canvas[head : head + grid.shape[0], GUTTER : GUTTER + grid.shape[1]] = grid
    for c in range(C):
        r, k = divmod(c, cols)
        _put_text(canvas, GUTTER + k * cell_w + 1, head + r * cell_h + 1, labels[c] if labels else str(c),
                  limit=cell_w - 4)
    if title:
        _put_text(canvas, GUTTER + 2, 4, title, size=14, limit=width - 8)
    caption = _caption(rng, signed, normalize, lut) + more
    _colour_bar(canvas, n, rng, signed, y=height - bar_h + 6, width=width)
    return Figure(_image(canvas, lut), caption)


def _colour_bar(canvas: np.ndarray, n: int, rng, signed: bool, *, y: int, width: int) -> None:
    x0, x1 = 10, min(width - 10, 250)
    canvas[y : y + 10, x0:x1] = np.rint(np.linspace(0, n - 1, x1 - x0)).astype(np.uint8)
    if rng is None:
        left, right = ("-max|v|", "+max|v|") if signed else ("min", "max")
    else:
        left, right = f"{rng[0]:.3g}", f"{rng[1]:.3g}"
    _put_text(canvas, x0, y + 12, left)
    _put_text(canvas, x1, y + 12, right, anchor="right")
    if signed:
        _put_text(canvas, (x0 + x1) // 2, y + 12, "0", anchor="middle")


def colour_filters(weights, *, tile_size: int = 48) -> Figure:
    """A first convolution's filters over an RGB input ``(O, 3, kh, kw)``, each drawn as one colour tile (its
    three input channels as red, green and blue: what colour and orientation it responds to), on one range for
    the layer: mid-grey 0, +-max|w| the ends of each channel."""
    w = np.nan_to_num(np.asarray(weights, np.float32))[:MAX_TILES]
    O, _, kh, kw = w.shape
    peak = float(np.abs(w).max()) or 1.0
    rgb = np.rint(127.5 + 127.5 * np.clip(w / peak, -1, 1)).astype(np.uint8).transpose(0, 2, 3, 1)
    factor = max(1, tile_size // max(kh, kw))
    rgb = rgb.repeat(factor, axis=1).repeat(factor, axis=2)
    th, tw = rgb.shape[1:3]
    rows, cols = _grid(O)
    label_h, cell_h, cell_w = 14, th + 14 + GUTTER, tw + GUTTER
    width = max(cols * cell_w + GUTTER, 160)
    canvas = np.full((4 + rows * cell_h, width), _BG, np.uint8)  # the labels, drawn on the palette canvas
    for o in range(O):
        r, k = divmod(o, cols)
        _put_text(canvas, GUTTER + k * cell_w + 1, 4 + r * cell_h + 1, str(o), limit=cell_w - 4)
    img = np.asarray(_image(canvas, "coolwarm").convert("RGB")).copy()
    for o in range(O):
        r, k = divmod(o, cols)
        y, x = 4 + r * cell_h + label_h, GUTTER + k * cell_w
        img[y : y + th, x : x + tw] = rgb[o]
    caption = (f"each filter's three input channels as red, green and blue; mid-grey 0, one range for the "
               f"layer: +-{peak:.3g}" + (f" (the first {MAX_TILES} of {len(weights)})" if len(weights) > O else ""))
    return Figure(Image.fromarray(img), caption)


def nice_step(span: float, most: int = 6) -> float:
    """The smallest step of 1, 2 or 5 times a power of ten that cuts ``span`` into at most ``most`` intervals."""
    span = max(span, 1e-12)
    power = 10.0 ** math.floor(math.log10(span / most))
    for m in (1, 2, 5, 10):
        if span / (m * power) <= most + 1e-9:
            return m * power
    return 10 * power


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values (1-2-5 steps) covering ``lo..hi``: the first at or below ``lo``, the last at or above
    ``hi``."""
    step = nice_step(hi - lo, most)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks of a log axis from ``lo`` to ``hi`` (both > 0): 1, 2 and 5 times the powers of ten between (only the
    powers when they span more than three decades), with one tick beyond each end."""
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1,) if b - a > 3 else (1, 2, 5)
    ticks = [m * 10.0**e for e in range(a, b + 1) for m in mults]
    below = [t for t in ticks if t <= lo]
    above = [t for t in ticks if t >= hi]
    return [t for t in ticks if (below and t >= below[-1] or not below) and (above and t <= above[0] or not above)]


def bars(values, *, labels: list[str] | None = None, title: str | None = None) -> Figure:
    """A dense layer's values as a bar chart: up to 40 units as labelled horizontal bars (the value written at
    the end of each, class names as labels when given), more as a column chart with index ticks. Bars start at
    0: positive ones warm, negative ones cool. At most 1,024 units are drawn (the first)."""
    v = np.nan_to_num(np.asarray(values, np.float64).ravel(), nan=0.0, posinf=np.finfo(np.float32).max,
                      neginf=-np.finfo(np.float32).max)
    if v.size == 0:
        msg = "a bar chart needs at least one value"
        raise ValueError(msg)
    total = v.size
    best = int(np.argmax(v))  # over every unit, drawn or not
    best_name = str(labels[best])[:24] if labels is not None and best < len(labels) else str(best)
    best_text = f"largest: {best_name} ({v[best]:.3g})"
    if total > MAX_TILES:
        v = v[:MAX_TILES]
    names = [str(s)[:24] for s in labels][: v.size] if labels is not None else [str(i) for i in range(v.size)]
    names += [str(i) for i in range(len(names), v.size)]
    lo, hi = min(0.0, float(v.min())), max(0.0, float(v.max()))
    span = (hi - lo) or 1.0
    head = 24 if title else 6
    if v.size <= 40:
        row, size = 22, 13
        lab_w = min(170, max(text_width(s, size) for s in names) + 8)
        val_w = 64
        width = 440
        bar_w = width - lab_w - val_w - 16
        height = head + row * v.size + 8
        canvas = np.full((height, width), _BG, np.uint8)
        x_zero = lab_w + 8 + int(round((0 - lo) / span * bar_w))
        canvas[head - 2 : height - 4, x_zero] = _AXIS
        for i, (val, name) in enumerate(zip(v, names)):
            y = head + i * row
            end = lab_w + 8 + int(round((val - lo) / span * bar_w))
            a, b = sorted((x_zero, end))
            canvas[y + 4 : y + row - 4, a : max(b, a + 1)] = _POS if val >= 0 else _NEG
            _put_text(canvas, lab_w, y + 3, name, size, anchor="right", limit=lab_w - 2)
            _put_text(canvas, width - 4, y + 3, f"{val:.3g}", size, anchor="right")
        caption = f"{total} values; {best_text}"
    else:
        px = max(1, 720 // v.size)
        plot_w = px * v.size
        plot_h = 140
        y_zero = head + int(round(hi / span * plot_h))
        marks = [(head - 5, f"{hi:.3g}")]  # the value axis: the top, 0, the bottom; none over another
        for y, text in ((y_zero - 6, "0"), (head + plot_h - 8, f"{lo:.3g}" if lo < 0 else None)):
            if text is not None and all(abs(y - yy) >= 12 for yy, _ in marks):
                marks.append((y, text))
        x0 = max(text_width(t, 11) for _, t in marks) + 8
        width = max(x0 + plot_w + 10, 300)
        height = head + plot_h + 24
        canvas = np.full((height, width), _BG, np.uint8)
        cols = x0 + np.arange(v.size) * px
        tops = head + np.rint((hi - v) / span * plot_h).astype(int)
        for i in range(v.size):
            a, b = sorted((y_zero, int(tops[i])))
            canvas[a : max(b, a + 1), cols[i] : cols[i] + px] = _POS if v[i] >= 0 else _NEG
        canvas[y_zero, x0 : x0 + plot_w] = _AXIS
        for y, text in marks:
            _put_text(canvas, x0 - 4, y, text, anchor="right")
        for t in range(0, v.size, max(1, int(nice_step(v.size, 8)))):  # unit indices at a 1-2-5 step
            canvas[head + plot_h + 2 : head + plot_h + 6, x0 + t * px] = _AXIS
            _put_text(canvas, x0 + t * px, head + plot_h + 7, str(t), anchor="middle")
        caption = (f"{total} values" + (f" (the first {MAX_TILES} drawn)" if total > v.size else "")
                   + f"; {best_text}")
    if title:
        _put_text(canvas, 4, 4, title, size=14, limit=width - 8)
    return Figure(_image(canvas, "coolwarm"), caption)


def reduce_for_display(values: np.ndarray, factor: int, *, signed: bool) -> np.ndarray:
    """A 2-D map made ``factor`` times smaller, ``ceil(H / factor) x ceil(W / factor)`` (the size Pillow's
    ``reduce`` gives): each block's mean (an image), or, for a signed response, the block's value of largest
    magnitude (an edge one pixel wide survives: averaging would cancel it). The blocks of the last row and column
    may be partial: they take the pixels they have."""
    a = np.asarray(values)
    if factor <= 1:
        return a.astype(np.float32, copy=False)
    rows = np.arange(0, a.shape[0], factor)
    cols = np.arange(0, a.shape[1], factor)
    if not signed:
        sums = np.add.reduceat(np.add.reduceat(a, rows, axis=0, dtype=np.float64), cols, axis=1)
        counts = np.outer(np.diff(np.r_[rows, a.shape[0]]), np.diff(np.r_[cols, a.shape[1]]))
        return (sums / counts).astype(np.float32)
    top = np.maximum.reduceat(np.maximum.reduceat(a, rows, axis=0), cols, axis=1)
    bottom = np.minimum.reduceat(np.minimum.reduceat(a, rows, axis=0), cols, axis=1)
    return np.where(top >= -bottom, top, bottom).astype(np.float32)


def grey_picture(values: np.ndarray, *, signed: bool, peak: float = 1.0, colormap_name: str | None = None,
                 upscale: int = 1) -> Image.Image:
    """A photo-sized map drawn as a picture: an image-like map (identity, blur, sharpen) as grey 0..1, a signed
    response as mid-grey at 0, white at ``+peak`` and black at ``-peak``. ``colormap_name`` colours the same
    0..255 levels. ``upscale`` repeats pixels (a small image stays visible)."""
    v = np.nan_to_num(np.asarray(values, np.float32), nan=0.0)
    if signed:
        level = 127.5 + 127.5 * np.clip(v / (peak or 1.0), -1, 1)
    else:
        level = 255.0 * np.clip(v, 0, 1)
    idx = np.rint(level).astype(np.uint8)
    if upscale > 1:
        idx = idx.repeat(upscale, axis=0).repeat(upscale, axis=1)
    if colormap_name in (None, "gray"):
        return Image.fromarray(idx, "L")
    img = Image.fromarray(idx, "P")
    img.putpalette(colormap(colormap_name).tobytes())
    return img
