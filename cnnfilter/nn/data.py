"""Datasets in the ImageFolder layout (one sub-folder per class), loaded into one float32 array."""

from __future__ import annotations

import collections
import contextlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..batch import image_suffixes


class DataError(ValueError):
    """A dataset folder that cannot be used (no classes, an empty class, too large for memory)."""


@dataclass
class Dataset:
    """``x (N, C, H, W)`` float32 in 0..1, ``y (N,)`` class indices, ``classes`` their names."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    paths: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files and why


def scan(folder) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted sub-folder names) and ``(file, class index)`` for every image file under each."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{str(root)!r} is not a folder (expected one sub-folder of images per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    odd = [c for c in classes if not c.isprintable()]
    if odd:
        raise DataError(f"class folder {odd[0]!r} has control characters in its name; rename it")
    if not classes:
        raise DataError(f"{str(root)!r} has no class sub-folders (expected DATA/<class>/<image>)")
    suffixes = image_suffixes()
    items = []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*")
                       if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
        if not files:
            raise DataError(f"class folder {str(root / name)!r} has no images")
        items.extend((p, label) for p in files)
    return classes, items


def upright_size(img: Image.Image) -> tuple[int, int]:
    """``(height, width)`` of ``img`` as :func:`to_array` gives it, its EXIF orientation applied (5 to 8 turn it
    a quarter)."""
    try:
        turned = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001 - EXIF Pillow cannot parse: the image as stored, as to_array takes it
        turned = False
    return (img.width, img.height) if turned else (img.height, img.width)


def to_array(img: Image.Image, channels: int, size: tuple[int, int] | None) -> np.ndarray:
    """A Pillow image as ``(channels, H, W)`` float32 in 0..1: EXIF orientation applied, 16-bit greyscale
    scaled by 65535, everything else converted to L or RGB, resized (bilinear) to ``size = (H, W)``."""
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - EXIF Pillow cannot parse: the image as stored
        pass
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        scale = 65535.0 if img.mode != "F" else 1.0
        arr = np.asarray(img, np.float32) / scale
        if size is not None and arr.shape != tuple(size):
            arr = np.asarray(Image.fromarray(arr, "F").resize((size[1], size[0]), Image.Resampling.BILINEAR))
        arr = np.clip(arr, 0, 1)[None]
        return np.repeat(arr, channels, axis=0) if channels == 3 else arr
    img = img.convert("L" if channels == 1 else "RGB")
    if size is not None and (img.height, img.width) != tuple(size):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(img, np.float32) / 255.0
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def load_folder(folder, *, channels: int = 1, size: tuple[int, int] | None = None,
                max_memory: int = 2 << 30) -> Dataset:
    """Every image under ``folder/<class>/`` as one array. ``size`` defaults to the most common size; files
    Pillow cannot read are skipped and listed in ``skipped``. Raises DataError when the array would need more
    than ``max_memory`` bytes."""
    classes, items = scan(folder)
    sizes, readable, skipped = collections.Counter(), [], []
    for path, label in items:  # headers only: cheap
        try:
            with _open(path) as im:
                sizes[(im.height, im.width)] += 1
            readable.append((path, label))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is skipped and reported
            skipped.append((path, _reason(exc)))
    if not readable:
        first = f"; the first, {str(skipped[0][0])!r}: {skipped[0][1]}" if skipped else ""
        raise DataError(f"no readable images under {str(folder)!r} ({len(skipped)} skipped{first})")
    if size is None:
        size = sizes.most_common(1)[0][0]
    need = len(readable) * channels * size[0] * size[1] * 4
    if need > max_memory:
        msg = (f"{len(readable)} images of {channels}x{size[0]}x{size[1]} need {need / 2**20:.3g} MiB as float32, "
               f"over --max-memory {max_memory / 2**20:.3g} MiB; use a smaller --size or raise --max-memory")
        raise DataError(msg)
    x = np.empty((len(readable), channels, size[0], size[1]), np.float32)
    y, paths, n = [], [], 0
    for path, label in readable:
        try:
            with _open(path) as im:
                im.load()
                x[n] = to_array(im, channels, size)
        except Exception as exc:  # noqa: BLE001
            skipped.append((path, _reason(exc)))
            continue
        y.append(label)
        paths.append(path)
        n += 1
    present = set(y)
    for label, name in enumerate(classes):
        if label not in present:
            raise DataError(f"class folder {name!r} has no readable images")
    return Dataset(x[:n], np.asarray(y, np.int64), classes, paths, skipped)


@contextlib.contextmanager
def _open(path):
    """A Pillow image of a regular file (a FIFO or device is refused, never waited on), opened lazily; more pixels
    than Pillow's decompression-bomb limit (``--max-pixels``) is an error, not a warning."""
    from ..limits import open_regular

    with open_regular(path, "image") as fh, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(fh) as im:
            yield im


def _reason(exc: Exception) -> str:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"more pixels than the decompression-bomb limit ({Image.MAX_IMAGE_PIXELS}; --max-pixels)"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode it"
    text = str(exc) or type(exc).__name__
    if "cannot identify image file" in text:
        return "not an image (or a format Pillow cannot decode)"
    return text.splitlines()[0]


def split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: ``round(fraction * n_c)`` of each class's indices (at least one when ``n_c >= 2``, never
    all of them) go to validation. Returns ``(train indices, validation indices)``, each sorted."""
    train, val = [], []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        k = min(int(round(fraction * len(idx))), len(idx) - 1)  # training always sees every class
        if fraction > 0 and len(idx) >= 2:
            k = max(k, 1)
        val.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.asarray(train, np.int64)), np.sort(np.asarray(val, np.int64))


def shift_batch(x: np.ndarray, rng: np.random.Generator, fill: np.ndarray, max_shift: int) -> np.ndarray:
    """Each image translated by a random ``(dy, dx)`` in ``-max_shift..max_shift``; uncovered pixels get ``fill``
    (per channel: the standardised value of black)."""
    out = np.empty_like(x)
    out[:] = fill.reshape(1, -1, 1, 1)
    N, C, H, W = x.shape
    shifts = rng.integers(-max_shift, max_shift + 1, size=(N, 2))
    for n, (dy, dx) in enumerate(shifts):
        ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
        xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
        out[n, :, yd, xd] = x[n, :, ys, xs]
    return out


def affine_batch(x: np.ndarray, rng: np.random.Generator, fill: np.ndarray, *, shift: float = 0.1,
                 rotate: float = 15.0, scale: float = 0.1, flip: bool = False) -> np.ndarray:
    """Each image moved by its own random affine map, sampled bilinearly: a translation of up to ``shift`` of the
    size, a rotation of up to ``rotate`` degrees and a zoom of up to ``scale`` either way about the centre, and with
    ``flip`` a mirror image half the time; pixels from outside get ``fill`` (per channel: the standardised value of
    black)."""
    N, C, H, W = x.shape
    angle = np.deg2rad(rng.uniform(-rotate, rotate, N))
    zoom = rng.uniform(1 - scale, 1 + scale, N)
    ty = rng.uniform(-shift, shift, N) * H
    tx = rng.uniform(-shift, shift, N) * W
    mirror = np.where(rng.random(N) < 0.5, -1.0, 1.0) if flip else np.ones(N)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    # where each output pixel comes from: the inverse map, (out - centre - t) rotated back and unzoomed
    dy = yy[None] - cy - ty[:, None, None]
    dx = xx[None] - cx - tx[:, None, None]
    cos, sin = (np.cos(angle) / zoom)[:, None, None], (np.sin(angle) / zoom)[:, None, None]
    sy = cos * dy - sin * dx + cy
    sx = (sin * dy + cos * dx) * mirror[:, None, None] + cx
    y0, x0 = np.floor(sy).astype(np.int64), np.floor(sx).astype(np.int64)
    fy, fx = (sy - y0).astype(np.float32), (sx - x0).astype(np.float32)
    out = np.zeros_like(x)
    idx = np.arange(N)[:, None, None]
    for oy, ox, w in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yi, xi = y0 + oy, x0 + ox
        inside = (yi >= 0) & (yi < H) & (xi >= 0) & (xi < W)
        vals = x[idx, :, np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1)]  # (N, H, W, C)
        vals = np.where(inside[..., None], vals, fill.reshape(1, 1, 1, -1))
        out += (w[..., None] * vals).transpose(0, 3, 1, 2)
    return out
