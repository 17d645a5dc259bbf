"""Evaluation sets for train-tiny's defaults, generated (seeded) in torchvision's ImageFolder layout.

    python benchmarks/datasets.py shapes OUT [--count 1000] [--seed 0]
    python benchmarks/datasets.py textures OUT [--count 800] [--seed 0]

- ``shapes``: 28x28 greyscale circles, squares, triangles and crosses, one per image, of random size, position and
  rotation, drawn in a random grey on a random background with Gaussian noise (antialiased: drawn at 4x and
  reduced).
- ``textures``: 32x32 RGB stripes, checks, dots and noise blobs in random colours, frequencies and orientations.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross")
TEXTURES = ("stripes", "checks", "dots", "blobs")


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        r *= 0.8
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
    else:  # a cross: 12 corners, arms a third of the width
        t = 1 / 3
        pts = [(-t, -1), (t, -1), (t, -t), (1, -t), (1, t), (t, t), (t, 1), (-t, 1), (-t, t), (-1, t), (-1, -t),
               (-t, -t)]
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts]


def shape_image(kind: str, rng: np.random.Generator, size: int = 28) -> Image.Image:
    scale = 4
    big = size * scale
    bg = int(rng.integers(0, 90))
    fg = int(rng.integers(150, 256))
    img = Image.new("L", (big, big), bg)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(5, 11) * scale
    cx, cy = (rng.uniform(r / scale + 1, size - r / scale - 1) * scale for _ in range(2))
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, rng.uniform(0, 2 * math.pi)), fill=fg)
    small = np.asarray(img.resize((size, size), Image.Resampling.BOX), np.float32)
    small += rng.normal(0, rng.uniform(10, 30), small.shape)
    return Image.fromarray(np.clip(np.rint(small), 0, 255).astype(np.uint8), "L")


def texture_image(kind: str, rng: np.random.Generator, size: int = 32) -> Image.Image:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    a = rng.uniform(0, math.pi)
    u = x * math.cos(a) + y * math.sin(a)
    v = -x * math.sin(a) + y * math.cos(a)
    period = rng.uniform(4, 10)
    phase = rng.uniform(0, period)
    if kind == "stripes":
        m = (np.sin(2 * math.pi * (u + phase) / period) > 0).astype(np.float32)
    elif kind == "checks":
        m = ((np.floor((u + phase) / period) + np.floor((v + phase) / period)) % 2).astype(np.float32)
    elif kind == "dots":
        cu = np.mod(u + phase, period) - period / 2
        cv = np.mod(v + phase, period) - period / 2
        m = (cu**2 + cv**2 < (period * rng.uniform(0.2, 0.35)) ** 2).astype(np.float32)
    else:  # smooth random blobs: low-frequency noise, thresholded
        noise = rng.normal(0, 1, (size // 4 + 2, size // 4 + 2)).astype(np.float32)
        up = np.asarray(Image.fromarray(noise, "F").resize((size, size), Image.Resampling.BICUBIC))
        m = (up > 0).astype(np.float32)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    rgb = m[..., None] * c1 + (1 - m[..., None]) * c0 + rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8), "RGB")


def generate(kind: str, out: Path, count: int, seed: int) -> Path:
    """``count`` images (classes in turn) under ``out/<class>/``; returns ``out``."""
    rng = np.random.default_rng(seed)
    classes, draw = (SHAPES, shape_image) if kind == "shapes" else (TEXTURES, texture_image)
    for c in classes:
        (out / c).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        c = classes[i % len(classes)]
        draw(c, rng).save(out / c / f"{i:05d}.png")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("shapes", "textures"))
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    generate(args.kind, args.out, args.count, args.seed)


if __name__ == "__main__":
    main()
