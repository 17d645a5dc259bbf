"""Copy and shrink scikit-image's bundled public-domain / CC0 photographs into samples/ (run once, at dev time).

    pip install scikit-image && python scripts/make_samples.py

scikit-image is not a dependency of cnnfilter: the PNGs this writes are committed.
"""

from pathlib import Path

import skimage.data
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "samples"

SAMPLES = {
    # name: (loader, size to shrink to, or None to keep)
    "camera.png": (skimage.data.camera, None),  # 512x512 greyscale
    "astronaut.png": (skimage.data.astronaut, (320, 320)),  # RGB
    "coffee.png": (skimage.data.coffee, (360, 240)),  # RGB
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, (load, size) in SAMPLES.items():
        img = Image.fromarray(load())
        if size is not None:
            img = img.resize(size, Image.Resampling.LANCZOS)
        img.save(OUT / name, optimize=True)
        print(f"{name}: {img.size[0]}x{img.size[1]} {img.mode}, {(OUT / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
