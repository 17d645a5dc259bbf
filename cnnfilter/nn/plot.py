"""Loss and accuracy curves drawn with Pillow (no plotting library)."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

TRAIN = (31, 119, 180)  # blue
VAL = (255, 127, 14)  # orange


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _panel(draw: ImageDraw.ImageDraw, box, title: str, series: list[tuple[str, list, tuple]], percent: bool) -> None:
    """One chart; loss from 0 up, accuracy up to 100 %; the legend where the curves are not (top right for loss,
    which falls, bottom right for accuracy, which rises)."""
    x0, y0, x1, y1 = box
    font, small = _font(15), _font(12)
    draw.text((x0, y0), title, fill="black", font=font)
    left, top, right, bottom = x0 + 48, y0 + 26, x1 - 8, y1 - 30
    values = [v for _, ys, _ in series for v in ys if v is not None]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    if percent:
        lo, hi = min(lo, 1.0), 1.0
    else:
        lo = min(lo, 0.0)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    n = max((len(ys) for _, ys, _ in series), default=1)
    draw.rectangle((left, top, right, bottom), outline=(120, 120, 120))
    for k in range(5):  # horizontal grid with labels
        v = lo + (hi - lo) * k / 4
        y = bottom - (bottom - top) * k / 4
        draw.line((left, y, right, y), fill=(225, 225, 225))
        label = f"{100 * v:.0f}%" if percent else f"{v:.3g}"
        draw.text((left - 6, y), label, fill=(80, 80, 80), font=small, anchor="rm")
    for k in {1, max(n // 2, 1), n}:  # epoch ticks
        x = left + (right - left) * ((k - 1) / max(n - 1, 1))
        draw.text((x, bottom + 4), str(k), fill=(80, 80, 80), font=small, anchor="mt")
    draw.text(((left + right) / 2, bottom + 16), "epoch", fill=(80, 80, 80), font=small, anchor="mt")
    for i, (name, ys, colour) in enumerate(series):
        pts = [(left + (right - left) * (k / max(n - 1, 1)), bottom - (bottom - top) * (v - lo) / (hi - lo))
               for k, v in enumerate(ys) if v is not None]
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=2)
        for x, y in pts if len(pts) <= 40 else []:
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        lx = right - 150 + 75 * i
        ly = bottom - 14 if percent else top + 10
        draw.line((lx, ly, lx + 16, ly), fill=colour, width=3)
        draw.text((lx + 20, ly), name, fill="black", font=small, anchor="lm")


def plot_curves(history: list, path=None) -> Image.Image:
    """Two panels, loss and accuracy per epoch, training in blue and validation in orange. ``history`` holds
    :class:`~cnnfilter.nn.train.EpochEvent` s. Written atomically to ``path`` as PNG when given."""
    img = Image.new("RGB", (960, 380), "white")
    draw = ImageDraw.Draw(img)
    tl = [e.train_loss for e in history]
    vl = [e.val_loss for e in history]
    ta = [e.train_acc for e in history]
    va = [e.val_acc for e in history]
    _panel(draw, (10, 10, 475, 370), "loss (cross-entropy)", [("train", tl, TRAIN), ("val", vl, VAL)], False)
    _panel(draw, (485, 10, 950, 370), "accuracy", [("train", ta, TRAIN), ("val", va, VAL)], True)
    if path is not None:
        from ..io import atomic_file

        with atomic_file(path) as fh:
            img.save(fh, format="PNG")
    return img
