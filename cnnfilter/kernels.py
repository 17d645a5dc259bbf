"""Named kernels, kernel parsing and the one ``validate_kernel`` every kernel passes through.

Fixed kernels are data files in the project's ``kernels/`` folder (installed as ``cnnfilter._kerneldata``): a
``#`` comment line with the description, then the matrix, one row per line. Sized kernels (box, gaussian) are
small factories. Weights are laid out as they are applied by :func:`cnnfilter.correlate2d`: entry ``[a, b]``
multiplies the pixel ``a`` rows below and ``b`` columns right of the window's top-left corner.
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

MAX_KERNEL_SIDE = 255


@dataclass(frozen=True)
class KernelInfo:
    name: str
    description: str
    sized: bool  # takes size / sigma


def validate_kernel(kernel, name: str = "kernel") -> np.ndarray:
    """Check a kernel from any source and return it as a float64 2-D array.

    2-D, non-empty, numeric, every value finite, at most 255 x 255.
    """
    try:
        arr = np.array(kernel, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        msg = f"{name} is not a numeric matrix ({exc})"
        raise TypeError(msg) from None
    if arr.ndim != 2:
        msg = f"{name} has shape {arr.shape}; a kernel must be 2-D (rows, cols)"
        raise ValueError(msg)
    if arr.size == 0:
        msg = f"{name} has shape {arr.shape}; it must not be empty"
        raise ValueError(msg)
    if max(arr.shape) > MAX_KERNEL_SIDE:
        msg = f"{name} is {arr.shape[0]}x{arr.shape[1]}; at most {MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE} is allowed"
        raise ValueError(msg)
    if not np.isfinite(arr).all():
        msg = f"{name} contains NaN or infinite values"
        raise ValueError(msg)
    return arr


# cv2.getGaussianKernel's tables for odd sizes up to 7 when no sigma is given
_SMALL_GAUSSIANS = {
    1: [1.0],
    3: [0.25, 0.5, 0.25],
    5: [0.0625, 0.25, 0.375, 0.25, 0.0625],
    7: [0.03125, 0.109375, 0.21875, 0.28125, 0.21875, 0.109375, 0.03125],
}


def box_kernel(size: int = 3) -> np.ndarray:
    """The mean over a ``size x size`` window."""
    size = _positive_int(size, "size")
    return np.full((size, size), 1.0 / (size * size))


def gaussian_kernel(size: int | None = None, sigma: float | None = None) -> np.ndarray:
    """Normalised 2-D Gaussian, the outer product of OpenCV's ``getGaussianKernel(size, sigma)``.

    With only ``sigma``, ``size = 2 * ceil(3 * sigma) + 1``; with only ``size``, OpenCV's
    ``sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8`` (and its fixed tables for sizes 1, 3, 5, 7); with neither,
    size 3: ``[1, 2, 1] / 4`` in each axis.
    """
    if sigma is not None:
        given, sigma = sigma, _number(sigma, "sigma")
        if not (math.isfinite(sigma) and sigma > 0):
            msg = f"sigma {given!r} must be a positive finite number"
            raise ValueError(msg)
    if size is None:
        size = 3 if sigma is None else 2 * math.ceil(3 * sigma) + 1
        if size > MAX_KERNEL_SIDE:
            msg = f"sigma {given!r} needs a {size}x{size} kernel; the largest is {MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE}"
            raise ValueError(msg)
    size = _positive_int(size, "size")
    if sigma is None and size in _SMALL_GAUSSIANS:  # OpenCV's fixed binomial-like tables
        g = np.array(_SMALL_GAUSSIANS[size])
        return np.outer(g, g)
    if sigma is None:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    x = np.arange(size) - (size - 1) / 2
    with np.errstate(divide="ignore", over="ignore", under="ignore", invalid="ignore"):
        g = np.exp(-(x * x) / (2 * sigma * sigma))
    g = np.nan_to_num(g, nan=1.0)  # sigma so small that 2*sigma^2 underflows: the limit, a delta at the centre
    g /= g.sum()
    return np.outer(g, g)


def _number(value, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        msg = f"{name} {value!r} is not a number"
        raise TypeError(msg)
    return float(value)


def _positive_int(value, name: str) -> int:
    if not _number(value, name).is_integer() or int(value) < 1:
        msg = f"{name} {value!r} must be a positive integer"
        raise ValueError(msg)
    if int(value) > MAX_KERNEL_SIDE:
        msg = f"{name} {value!r} is above the largest kernel side, {MAX_KERNEL_SIDE}"
        raise ValueError(msg)
    return int(value)


_FACTORIES = {
    "box": (box_kernel, "Box blur: the mean of a size x size window (default 3x3)."),
    "blur": (box_kernel, "Alias of box."),
    "gaussian": (gaussian_kernel, "Gaussian blur (size, sigma as OpenCV's getGaussianKernel; default 3x3)."),
}


def _data_files() -> dict:
    try:
        root = resources.files("cnnfilter._kerneldata")
    except ModuleNotFoundError:  # an editable install maps no sub-package: read the checkout's kernels/
        root = Path(__file__).resolve().parent.parent / "kernels"
    return {p.name[:-4]: p for p in root.iterdir() if p.name.endswith(".txt")}


def parse_matrix(text: str, name: str = "kernel") -> np.ndarray:
    """Rows separated by ``;`` or newlines, values by commas or whitespace; ``#`` starts a comment."""
    rows = []
    for line in text.replace(";", "\n").splitlines():
        line = line.split("#", 1)[0].replace(",", " ").split()
        if line:
            try:
                rows.append([float(v) for v in line])
            except ValueError:
                msg = f"{name} {text.strip()!r} is not a matrix of numbers (rows split by ';', values by ',')"
                raise ValueError(msg) from None
    if len({len(r) for r in rows}) > 1:
        msg = f"{name} {text.strip()!r} has rows of different lengths {[len(r) for r in rows]}"
        raise ValueError(msg)
    return validate_kernel(rows, name)


def list_kernels() -> list[KernelInfo]:
    """Every named kernel, sorted by name."""
    infos = [KernelInfo(n, d, True) for n, (_, d) in _FACTORIES.items()]
    for n, path in _data_files().items():
        first = path.read_text(encoding="utf-8").splitlines()[0]
        infos.append(KernelInfo(n, first.lstrip("# ").strip(), False))
    return sorted(infos, key=lambda i: i.name)


def get_kernel(name: str, *, size: int | None = None, sigma: float | None = None) -> np.ndarray:
    """A named kernel as a float64 array; ``size``/``sigma`` only for the sized ones (box, gaussian)."""
    key = name.strip().lower()
    if key in _FACTORIES:
        factory = _FACTORIES[key][0]
        if factory is box_kernel:
            if sigma is not None:
                msg = f"kernel {name!r} takes no sigma"
                raise ValueError(msg)
            return box_kernel(3 if size is None else size)
        return factory(size, sigma)
    files = _data_files()
    if key in files:
        if size is not None or sigma is not None:
            msg = f"kernel {name!r} has a fixed size; size and sigma are for box and gaussian"
            raise ValueError(msg)
        return parse_matrix(files[key].read_text(encoding="utf-8"), f"kernel {name!r}")
    names = sorted([*_FACTORIES, *files])
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    msg = f"kernel {name!r} is not one of {', '.join(names)}{hint}"
    raise ValueError(msg)


def resolve_kernel(spec: str, *, size: int | None = None, sigma: float | None = None) -> tuple[str, np.ndarray]:
    """``(label, kernel)`` for a name or an inline matrix such as ``"0,-1,0;-1,5,-1;0,-1,0"``."""
    text = spec.strip()
    if text and (text[0].isdigit() or text[0] in "-+.;,") and any(ch.isdigit() for ch in text):
        return "custom", parse_matrix(text)
    return text.lower(), get_kernel(text, size=size, sigma=sigma)
