"""Write the UCI optical-recognition handwritten digits (scikit-learn's ``load_digits``: 1,797 8x8 images) as
PNGs under samples/digits/<label>/<index>.png (run once, at dev time).

    pip install scikit-learn && python scripts/make_digits.py

Each pixel is the dataset's 0..16 ink count scaled to 0..255 (``round(v * 255 / 16)``): white ink on black, as in
MNIST. ``<index>`` is the sample's position in ``load_digits()``. scikit-learn is not a dependency of cnnfilter:
the PNGs this writes are committed.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

OUT = Path(__file__).resolve().parent.parent / "samples" / "digits"


def main() -> None:
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    for index, (img, label) in enumerate(zip(pixels, digits.target)):
        folder = OUT / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(folder / f"{index:04d}.png", optimize=True)
    counts = np.bincount(digits.target)
    print(f"{len(pixels)} images in {OUT}: " + ", ".join(f"{d}: {c}" for d, c in enumerate(counts)))


if __name__ == "__main__":
    main()
