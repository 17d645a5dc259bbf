"""Write the colormaps featuremaps uses as data: cnnfilter/colormaps/<name>.txt, 256 lines of 'r g b' (0..255).

    pip install matplotlib && python scripts/make_colormaps.py

viridis, magma and inferno are matplotlib's perceptually uniform maps (CC0, by Stéfan van der Walt, Nathaniel
Smith and Eric Firing); coolwarm is Kenneth Moreland's diverging map (public domain, as shipped by matplotlib);
gray is a plain ramp. matplotlib is not a dependency of cnnfilter: the tables this writes are committed.
"""

from pathlib import Path

import numpy as np
from matplotlib import colormaps

OUT = Path(__file__).resolve().parent.parent / "cnnfilter" / "colormaps"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name in ("viridis", "magma", "inferno", "coolwarm", "gray"):
        lut = np.rint(colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(int)
        lines = [f"# {name}: 256 entries, r g b, from matplotlib (see scripts/make_colormaps.py)"]
        lines += [f"{r} {g} {b}" for r, g, b in lut]
        (OUT / f"{name}.txt").write_text("\n".join(lines) + "\n")
        print(name, lut[0], lut[128], lut[255])


if __name__ == "__main__":
    main()
