"""Loss and accuracy curves drawn with Pillow (no plotting library)."""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from ..pictures import log_ticks, nice_ticks

TRAIN = (31, 119, 180)  # blue
VAL = (255, 127, 14)  # orange


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _panel(draw: ImageDraw.ImageDraw, box, title: str, series: list[tuple[str, list, tuple]], percent: bool,
           log: bool = False) -> None:
    """One chart; loss from 0 up (or on a log axis), accuracy up to 100 %, ticks at round values; the legend where
    the curves are not (top right for loss, which falls, bottom right for accuracy, which rises)."""
    x0, y0, x1, y1 = box
    font, small = _font(15), _font(12)
    draw.text((x0, y0), title, fill="black", font=font)
    left, top, right, bottom = x0 + 48, y0 + 26, x1 - 8, y1 - 30
    values = [v for _, ys, _ in series for v in ys if v is not None and math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    log = log and not percent and lo > 0
    if percent:
        lo, hi = min(lo, 1.0), 1.0
    elif not log:
        lo = min(lo, 0.0)
    if hi - lo < 1e-9:
        lo, hi = (lo / 2, hi * 2) if log else (lo - 0.5, hi + 0.5)
    ticks = log_ticks(lo, hi) if log else nice_ticks(lo, hi)
    lo, hi = ticks[0], ticks[-1]
    if percent:
        hi = min(hi, 1.0)
        ticks = [t for t in ticks if t <= 1.0]

    def ypos(v):
        f = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) if log else (v - lo) / (hi - lo)
        return bottom - (bottom - top) * f

    n = max((len(ys) for _, ys, _ in series), default=1)
    draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for v in ticks:  # horizontal grid with labels
        y = ypos(v)
        draw.line((left, y, right, y), fill=(225, 225, 225))
        if percent:
            digits = max(0, -math.floor(math.log10(100 * step) + 1e-9))
            label = f"{100 * v:.{digits}f}%"
        else:
            label = f"{v:g}"
        draw.text((left - 6, y), label, fill=(80, 80, 80), font=small, anchor="rm")
    for k in nice_ticks(1, n, 8) if n > 1 else [1]:  # epoch ticks at round epochs, whole ones only
        if 1 <= k <= n and k == int(k):
            x = left + (right - left) * ((k - 1) / max(n - 1, 1))
            draw.text((x, bottom + 4), f"{k:g}", fill=(80, 80, 80), font=small, anchor="mt")
    draw.text(((left + right) / 2, bottom + 16), "epoch" + ("   (loss on a log scale)" if log else ""),
              fill=(80, 80, 80), font=small, anchor="mt")
    for i, (name, ys, colour) in enumerate(series):
        pts = [(left + (right - left) * (k / max(n - 1, 1)), ypos(v))
               for k, v in enumerate(ys) if v is not None and math.isfinite(v) and (v > 0 or not log)]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts if len(pts) <= 40 else []:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        lx = right - 150 + 75 * i
        ly = bottom - 14 if percent else top + 10
        draw.line((lx, ly, lx + 16, ly), fill=colour, width=3)
        draw.text((lx + 20, ly), name, fill="black", font=small, anchor="lm")


def plot_curves(history: list, path=None, *, log: bool = False) -> Image.Image:
    """Two panels, loss and accuracy per epoch, training in blue and validation in orange, ticks at round values
    (1-2-5 steps); ``log`` draws the loss on a log axis. ``history`` holds
    :class:`~cnnfilter.nn.train.EpochEvent` s. Written atomically to ``path`` as PNG when given."""
    img = Image.new("RGB", (960, 380), "white")
    draw = ImageDraw.Draw(img)
    tl = [e.train_loss for e in history]
    vl = [e.val_loss for e in history]
    ta = [e.train_acc for e in history]
    va = [e.val_acc for e in history]
    _panel(draw, (10, 10, 475, 370), "loss (cross-entropy)", [("train", tl, TRAIN), ("val", vl, VAL)], False, log)
    _panel(draw, (485, 10, 950, 370), "accuracy", [("train", ta, TRAIN), ("val", va, VAL)], True)
    if path is not None:
        from ..io import atomic_file

        with atomic_file(path) as fh:
            img.save(fh, format="PNG")
    return img
