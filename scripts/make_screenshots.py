"""Screenshots of featuremaps reports for the README, taken with headless Chromium (``apt-get install chromium``):

- docs/featuremaps-digits.png: the bundled digits model on samples/digits/3/0003.png, in a 1,400-px window;
- docs/featuremaps-bank.jpg: the default kernel bank on samples/camera.png.

    python scripts/make_screenshots.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def shoot(page: Path, target: Path, height: int) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("needs Chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "shot.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--screenshot={raw}", f"--window-size=1400,{height}", page.resolve().as_uri()],
                       check=True, capture_output=True)
        img = Image.open(raw).convert("RGB")
        if target.suffix == ".jpg":
            img.save(target, quality=82, optimize=True)
        else:
            img.quantize(256).save(target, optimize=True)
    print(f"wrote {target.relative_to(ROOT)}")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "maps"
        run = [sys.executable, "-m", "cnnfilter", "featuremaps", "-o", str(out), "-q"]
        subprocess.run([*run, str(ROOT / "samples" / "digits" / "3" / "0003.png"), "-m", "digits"], check=True)
        subprocess.run([*run, str(ROOT / "samples" / "camera.png")], check=True)
        shoot(out / "0003" / "index.html", ROOT / "docs" / "featuremaps-digits.png", 1180)
        shoot(out / "camera" / "index.html", ROOT / "docs" / "featuremaps-bank.jpg", 1000)


if __name__ == "__main__":
    main()
