"""Named kernels, kernel parsing and the one ``validate_kernel`` every kernel passes through.

Fixed kernels are data files in the project's ``kernels/`` folder (installed as ``cnnfilter._kerneldata``): a
``#`` comment line with the description, then the matrix, one row per line. Sized kernels (box, gaussian) are
small factories. Weights are laid out as they are applied by :func:`cnnfilter.correlate2d`: entry ``[a, b]``
multiplies the pixel ``a`` rows below and ``b`` columns right of the window's top-left corner.
"""

from __future__ import annotations

import math
import numbers
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .limits import LimitError, max_kernel_file, open_regular, read_file, shorten

MAX_KERNEL_SIDE = 255


@dataclass(frozen=True)
class KernelInfo:
    name: str
    description: str
    kind: str  # "fixed" (a data file), "sized" (a factory taking params) or "magnitude" (sqrt(gx² + gy²))
    params: tuple[str, ...] = ()

    @property
    def sized(self) -> bool:
        return self.kind == "sized"


@dataclass(frozen=True)
class Magnitude:
    """A gradient-magnitude operator: ``sqrt(correlate(x, gx)² + correlate(x, gy)²)``."""

    gx: np.ndarray
    gy: np.ndarray


def validate_kernel(kernel, name: str = "kernel") -> np.ndarray:
    """Check a kernel from any source and return it as a float64 2-D array.

    2-D, non-empty, real, every value finite and within float32's range (the dtype the filters run in), at most
    255 x 255.
    """
    if np.iscomplexobj(kernel):
        msg = f"{name} has complex values; a kernel must be real"
        raise TypeError(msg)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", np.exceptions.ComplexWarning)
            arr = np.array(kernel, dtype=np.float64)
    except (TypeError, ValueError, OverflowError, RecursionError, np.exceptions.ComplexWarning) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else shorten(str(exc), 60)
        msg = f"{name} is not a numeric matrix ({why})"
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
    if np.abs(arr).max() > _FLOAT32_MAX:
        msg = f"{name} has values beyond float32's range (±3.4e38), the precision the filters run in"
        raise ValueError(msg)
    return arr


_FLOAT32_MAX = float(np.finfo(np.float32).max)


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
        sigma = _sigma(sigma, None)
    if size is None:
        size = 3 if sigma is None else _odd_size(None, sigma)
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
    if not math.isfinite(float(value)):
        msg = f"{name} {value!r} must be a finite number"
        raise ValueError(msg)
    return float(value)


def _positive_int(value, name: str) -> int:
    if not _number(value, name).is_integer() or int(value) < 1:
        msg = f"{name} {value!r} must be a positive integer"
        raise ValueError(msg)
    if int(value) > MAX_KERNEL_SIDE:
        msg = f"{name} {value!r} is above the largest kernel side, {MAX_KERNEL_SIDE}"
        raise ValueError(msg)
    return int(value)


def _odd_size(size, sigma: float, default_per_sigma: float = 3.0) -> int:
    if size is None:
        if default_per_sigma * sigma > 1e9:  # no integer size to name
            msg = f"sigma {sigma:g} needs a kernel far wider than the largest, {MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE}"
            raise ValueError(msg)
        size = 2 * math.ceil(default_per_sigma * sigma) + 1
        if size > MAX_KERNEL_SIDE:
            msg = f"sigma {sigma:g} needs a {size}x{size} kernel; the largest is {MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE}"
            raise ValueError(msg)
    return _positive_int(size, "size")


def _sigma(sigma, default: float) -> float:
    if sigma is None:
        return default
    value = _number(sigma, "sigma")
    if not (math.isfinite(value) and value > 0):
        msg = f"sigma {sigma!r} must be a positive finite number"
        raise ValueError(msg)
    return value


def _zero_sum_unit(k: np.ndarray) -> np.ndarray:
    """ImageMagick's zero-summing: positive weights scaled to sum 1, negative ones to sum -1."""
    pos, neg = k.clip(min=0), k.clip(max=0)
    return pos / pos.sum() + (neg / -neg.sum() if neg.any() else 0)


def log_kernel(size: int | None = None, sigma: float | None = None) -> np.ndarray:
    """Laplacian of Gaussian with a positive centre (ImageMagick's ``LoG:radius,sigma``): ``(1 - r²/2σ²)
    exp(-r²/2σ²)``, positive weights scaled to sum 1 and negative ones to -1. Default sigma 1.0, size
    ``2*ceil(3σ)+1``."""
    sigma = _sigma(sigma, 1.0)
    size = _odd_size(size, sigma)
    x = np.arange(size) - (size - 1) / 2
    with np.errstate(all="ignore"):  # a sigma so small that 2σ² underflows: refused below as not finite
        r2 = (x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma * sigma)
        return _zero_sum_unit((1 - r2) * np.exp(-r2))


def dog_kernel(size: int | None = None, sigma: float | None = None, sigma2: float | None = None) -> np.ndarray:
    """Difference of Gaussians ``G(sigma) - G(sigma2)`` (ImageMagick's ``DoG:radius,sigma,sigma2``; sigma2
    defaults to 1.6 sigma), zero-summing as :func:`log_kernel`. Default sigma 1.0."""
    sigma = _sigma(sigma, 1.0)
    sigma2 = _sigma(sigma2, 1.6 * sigma)
    size = _odd_size(size, max(sigma, sigma2))
    x = np.arange(size) - (size - 1) / 2
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    with np.errstate(all="ignore"):  # sigmas that under- or overflow: refused below as not finite
        g1 = np.exp(-r2 / (2 * sigma * sigma)) / (2 * np.pi * sigma * sigma)
        g2 = np.exp(-r2 / (2 * sigma2 * sigma2)) / (2 * np.pi * sigma2 * sigma2)
        return _zero_sum_unit(g1 - g2)


def unsharp_kernel(size: int | None = None, sigma: float | None = None, amount: float | None = None) -> np.ndarray:
    """Unsharp mask ``identity + amount * (identity - gaussian(size, sigma))``; default sigma 1.0, amount 1.0
    (sums to 1)."""
    g = gaussian_kernel(size, _sigma(sigma, 1.0))
    amt = 1.0 if amount is None else _number(amount, "amount")
    delta = np.zeros_like(g)
    delta[g.shape[0] // 2, g.shape[1] // 2] = 1.0
    return delta + amt * (delta - g)


def motion_kernel(size: int | None = None, angle: float | None = None) -> np.ndarray:
    """Motion blur: a line ``size`` pixels long (default 9) through the centre at ``angle`` degrees
    counter-clockwise from the x axis (default 0, horizontal), normalised to sum 1. The line is sampled 16 times
    per pixel of length and each sample lands on its nearest pixel, so a horizontal or vertical line is exactly
    uniform and a slanted one weighs each pixel by how much of the line crosses it."""
    n = _positive_int(9 if size is None else size, "size")
    theta = math.radians(0.0 if angle is None else _number(angle, "angle"))
    side = n if n % 2 else n + 1
    k = np.zeros((side, side))
    c = (side - 1) / 2
    steps = 16 * n
    t = (np.arange(steps) + 0.5) / steps * n - n / 2
    rows = np.clip(np.rint(c - t * math.sin(theta)), 0, side - 1).astype(int)  # image rows grow downwards
    cols = np.clip(np.rint(c + t * math.cos(theta)), 0, side - 1).astype(int)
    np.add.at(k, (rows, cols), 1.0)
    return k / k.sum()


def _box(size: int | None = None) -> np.ndarray:
    return box_kernel(3 if size is None else size)


_FACTORIES = {
    "box": (_box, "Box blur: the mean of a size x size window (default 3x3)."),
    "blur": (_box, "Alias of box."),
    "gaussian": (gaussian_kernel, "Gaussian blur (size, sigma as OpenCV's getGaussianKernel; default 3x3)."),
    "log": (log_kernel, "Laplacian of Gaussian, positive centre, zero sum (ImageMagick LoG; sigma 1, size 2*ceil(3σ)+1)."),
    "dog": (dog_kernel, "Difference of Gaussians G(sigma) - G(sigma2), zero sum (ImageMagick DoG; sigma2 = 1.6 sigma)."),
    "unsharp": (unsharp_kernel, "Unsharp mask: identity + amount * (identity - gaussian) (sigma 1, amount 1)."),
    "motion": (motion_kernel, "Motion blur: a line of size pixels at angle degrees (default 9, 0)."),
}

# Gradient-magnitude operators: sqrt(gx² + gy²) of a pair of fixed kernels.
MAGNITUDES = {
    "sobel": ("sobel-x", "sobel-y"),
    "scharr": ("scharr-x", "scharr-y"),
    "prewitt": ("prewitt-x", "prewitt-y"),
    "roberts": ("roberts-x", "roberts-y"),
}


def _data_files() -> dict[str, Path]:
    here = Path(__file__).resolve().parent
    root = here / "_kerneldata"  # installed: the project's kernels/ becomes the package cnnfilter._kerneldata
    if not root.is_dir():  # an editable install: read the checkout's kernels/ itself
        root = here.parent / "kernels"
    return {p.name[:-4]: p for p in root.iterdir() if p.name.endswith(".txt")}


def parse_matrix(text: str, name: str = "kernel") -> np.ndarray:
    """Rows separated by ``;`` or newlines, values by commas or whitespace; ``#`` starts a comment."""
    rows = []
    lines = (part for line in text.splitlines() for part in line.split("#", 1)[0].split(";"))
    for line in lines:
        line = line.replace(",", " ").split()
        if len(rows) >= 4 * MAX_KERNEL_SIDE and line or len(line) > 4 * MAX_KERNEL_SIDE:  # stop: far too large
            msg = f"{name} is larger than {MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE}, the largest kernel"
            raise ValueError(msg)
        if line:
            try:
                rows.append([float(v) for v in line])
            except ValueError:
                msg = f"{name} {shorten(text.strip(), 60)!r} is not a matrix of numbers (rows split by ';', values by ',')"
                raise ValueError(msg) from None
    if len({len(r) for r in rows}) > 1:
        lengths = [len(r) for r in rows]
        shown = str(lengths) if len(lengths) <= 10 else str(lengths[:10])[:-1] + ", ...]"
        msg = f"{name} {shorten(text.strip(), 60)!r} has rows of different lengths {shown}"
        raise ValueError(msg)
    return validate_kernel(rows, name)


def list_kernels() -> list[KernelInfo]:
    """Every named kernel, sorted by name."""
    infos = [KernelInfo(n, d, "sized", tuple(kernel_params(n))) for n, (_, d) in _FACTORIES.items()]
    for n, path in _data_files().items():
        first = path.read_text(encoding="utf-8").splitlines()[0]
        infos.append(KernelInfo(n, first.lstrip("# ").strip(), "fixed"))
    for n, (x, y) in MAGNITUDES.items():
        infos.append(KernelInfo(n, f"Gradient magnitude sqrt(gx² + gy²) of {x} and {y}.", "magnitude"))
    return sorted(infos, key=lambda i: i.name)


def get_kernel(name: str, **params) -> np.ndarray:
    """A named kernel as a float64 array.

    Sized kernels take keyword parameters (``size``, ``sigma``, ``sigma2``, ``amount``, ``angle``: see
    :func:`list_kernels`); ``None`` means the default. Fixed kernels take none.
    """
    key = name.strip().lower()
    given = {k: v for k, v in params.items() if v is not None}
    if key in _FACTORIES:
        factory = _FACTORIES[key][0]
        accepted = kernel_params(key)
        extra = sorted(set(given) - set(accepted))
        if extra:
            msg = f"kernel {name!r} takes {', '.join(accepted)}; not {', '.join(extra)}"
            raise ValueError(msg)
        return validate_kernel(factory(**given), f"kernel {name!r}")
    files = _data_files()
    if key in files:
        if given:
            msg = f"kernel {name!r} has a fixed size; it takes no {', '.join(sorted(given))}"
            raise ValueError(msg)
        return parse_matrix(files[key].read_text(encoding="utf-8"), f"kernel {name!r}")
    import difflib

    names = sorted([*_FACTORIES, *files, *MAGNITUDES])
    close = difflib.get_close_matches(key, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    msg = f"kernel {name!r} is not one of {', '.join(names)}{hint}"
    raise ValueError(msg)


def kernel_params(name: str) -> list[str]:
    """The keyword parameters a named kernel takes (empty for fixed ones)."""
    import inspect

    key = name.strip().lower()
    return list(inspect.signature(_FACTORIES[key][0]).parameters) if key in _FACTORIES else []


_IM_HEAD = re.compile(r"^\s*(\d+)(?:x(\d+))?(?:([+-]\d+)([+-]\d+))?\s*:(.*)$", re.S)


def parse_imagemagick(text: str) -> np.ndarray:
    """ImageMagick's kernel string ``"WxH[+X+Y]: v v v ..."`` (values by commas or spaces, row by row).

    An origin ``+X+Y`` other than the centre is honoured by padding the kernel with zeros so that the origin
    becomes its centre (the result is then the same as ImageMagick's for 'same' padding).
    """
    m = _IM_HEAD.match(text)
    if m is None:
        msg = f"kernel {shorten(text.strip(), 60)!r} is not ImageMagick's 'WxH[+X+Y]: values' form"
        raise ValueError(msg)
    w = int(m.group(1))
    h = int(m.group(2) or w)
    values = m.group(5).replace(",", " ").replace(";", " ").split()
    if len(values) != w * h:
        msg = f"kernel {shorten(text.strip(), 60)!r} declares {w}x{h} = {w * h} values but has {len(values)}"
        raise ValueError(msg)
    try:
        flat = [float(v) for v in values]
    except ValueError:
        msg = f"kernel {shorten(text.strip(), 60)!r} has values that are not numbers"
        raise ValueError(msg) from None
    k = validate_kernel(np.array(flat).reshape(h, w))
    if m.group(3) is None:
        return k
    ox, oy = int(m.group(3)), int(m.group(4))
    if not (0 <= ox < w and 0 <= oy < h):
        msg = f"kernel {shorten(text.strip(), 60)!r} has its origin +{ox}+{oy} outside the {w}x{h} kernel"
        raise ValueError(msg)
    return _recentre(k, oy, ox)


def _recentre(k: np.ndarray, oy: int, ox: int) -> np.ndarray:
    """Zero-pad ``k`` so that entry ``(oy, ox)`` is its centre ``((kh-1)//2, (kw-1)//2)``."""
    h, w = k.shape
    up, down = oy, h - 1 - oy
    left, right = ox, w - 1 - ox
    ch, cw = max(up, down), max(left, right)
    out = np.zeros((2 * ch + 1, 2 * cw + 1))
    out[ch - up : ch - up + h, cw - left : cw - left + w] = k
    return out


KERNEL_FILE_SUFFIXES = (".txt", ".csv", ".npy", ".json")


def load_kernel_file(path) -> np.ndarray:
    """A kernel from a file: ``.txt``/``.csv`` (a matrix, values by spaces or commas, ``#`` comments), ``.npy``
    (read with ``allow_pickle=False``) or ``.json`` (a list of rows). Data only: nothing is unpickled or
    evaluated."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in KERNEL_FILE_SUFFIXES:
        msg = f"kernel file {str(p)!r} has suffix {suffix or '(none)'!r}; use one of {', '.join(KERNEL_FILE_SUFFIXES)}"
        raise ValueError(msg)
    import json

    name = f"kernel file {shorten(str(p), 200)!r}"
    try:
        if suffix == ".npy":
            return validate_kernel(_read_npy(p, name), name)
        text = read_file(p, max_kernel_file(), name).decode("utf-8")
        if suffix == ".json":
            return validate_kernel(json.loads(text), name)
        return parse_matrix(text, name)
    except FileNotFoundError:
        raise ValueError(f"{name} does not exist") from None
    except LimitError as exc:
        raise ValueError(str(exc)) from None
    except RecursionError:
        raise ValueError(f"{name} is nested too deeply to be a matrix") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} cannot be read: not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or shorten(str(exc), 80)
        raise ValueError(f"{name} cannot be read: {why}") from None


def _read_npy(path: Path, name: str) -> np.ndarray:
    """A plain 2-D numeric ``.npy`` array, its header checked (shape, dtype) before any data is read."""
    fmt = np.lib.format
    with open_regular(path, name) as fh:
        try:
            version = fmt.read_magic(fh)
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran, dtype = read_header(fh, max_header_size=10_000)
        except (ValueError, OSError, SyntaxError, TypeError) as exc:
            raise ValueError(f"{name} is not a plain .npy array: {shorten(str(exc), 80)}") from None
        if dtype.kind not in "biuf" or dtype.hasobject:
            kind = "complex" if dtype.kind == "c" else str(dtype)
            raise ValueError(f"{name} is not a plain .npy array of real numbers (it holds {kind} values)")
        if len(shape) != 2 or max(shape, default=0) > MAX_KERNEL_SIDE or 0 in shape:
            raise ValueError(f"{name} has shape {shape}; a kernel is 2-D, non-empty, at most "
                             f"{MAX_KERNEL_SIDE}x{MAX_KERNEL_SIDE}")
        data = fh.read(int(np.prod(shape)) * dtype.itemsize + 1)
    count = int(np.prod(shape))
    if len(data) != count * dtype.itemsize:
        raise ValueError(f"{name} is truncated or has extra data")
    arr = np.frombuffer(data, dtype, count)
    return arr.reshape(shape, order="F" if fortran else "C")


_STEP = re.compile(r"([A-Za-z][A-Za-z0-9_-]*):(.*)", re.S)
_PARAM_TYPES = {"size": int, "sigma": float, "sigma2": float, "amount": float, "angle": float}


def split_step(spec: str) -> tuple[str, dict] | None:
    """``(name, options)`` for a kernel step with its own options, or None for any other spec.

    Two forms: ``NAME:KEY=VALUE,...`` (``gaussian:sigma=1.5``, ``motion:size=9,angle=30``) and ImageMagick's
    geometry ``Gaussian:RADIUSxSIGMA`` (``Gaussian:0x2``, ``Blur:0x3`` — a Gaussian, as ImageMagick's Blur kernel
    and ``-blur`` are —, ``LoG:0x1.4``, ``DoG:RADIUS,SIGMA1,SIGMA2``); a radius of 0 lets the sigma choose the
    size, another gives ``2 * RADIUS + 1``.
    """
    text = spec.strip()
    m = _STEP.fullmatch(text)
    if m is None or _IM_HEAD.match(text) is not None:
        return None
    name, rest = m.group(1).lower(), m.group(2).strip()
    if name not in (*_FACTORIES, *_data_files(), *MAGNITUDES):
        return None
    if "=" in rest or not rest:
        options = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, _, value = item.partition("=")
            key = key.strip().lower()
            if key not in _PARAM_TYPES:
                msg = f"kernel step {shorten(text, 60)!r}: {key!r} is not one of {', '.join(_PARAM_TYPES)}"
                raise ValueError(msg)
            options[key] = _step_number(value, key, text)
        return name, options
    numbers = [_step_number(v, "geometry", text, float) for v in re.split(r"[x,]", rest)]
    if name in ("gaussian", "blur", "log") and 1 <= len(numbers) <= 2:
        options = {"sigma": numbers[1]} if len(numbers) == 2 else {}
        target = "log" if name == "log" else "gaussian"
    elif name == "dog" and len(numbers) == 3:
        options, target = {"sigma": numbers[1], "sigma2": numbers[2]}, "dog"
    else:
        msg = (f"kernel step {shorten(text, 60)!r}: ImageMagick's geometry is RADIUSxSIGMA for Gaussian, Blur and "
               "LoG, RADIUS,SIGMA1,SIGMA2 for DoG; use NAME:KEY=VALUE for the others")
        raise ValueError(msg)
    if numbers[0] != int(numbers[0]) or numbers[0] < 0:
        msg = f"kernel step {shorten(text, 60)!r}: the radius must be a whole number of at least 0"
        raise ValueError(msg)
    if numbers[0] > 0:
        options["size"] = 2 * int(numbers[0]) + 1
    return target, options


def _step_number(value: str, key: str, text: str, kind=None):
    kind = kind or _PARAM_TYPES[key]
    try:
        number = float(value)
    except ValueError:
        msg = f"kernel step {shorten(text, 60)!r}: {key} {value.strip()!r} is not a number"
        raise ValueError(msg) from None
    if kind is int:
        if not number.is_integer():
            msg = f"kernel step {shorten(text, 60)!r}: {key} {value.strip()!r} is not a whole number"
            raise ValueError(msg)
        return int(number)
    return number


def resolve_steps(specs, **defaults) -> list[tuple[str, np.ndarray | Magnitude]]:
    """``(label, kernel)`` for each step of a pipeline. A step's own options (:func:`split_step`) are its own;
    ``defaults`` (the command line's ``--size``, ``--sigma``, ...) go to a single kernel as :func:`resolve_kernel`
    takes them, and in a chain to each sized kernel that takes them and has no options of its own; an option that no
    kernel of a chain takes is an error."""
    given = {k: v for k, v in defaults.items() if v is not None}
    specs = list(specs)
    if len(specs) == 1 and split_step(specs[0]) is None:
        return [resolve_kernel(specs[0], **given)]
    used, out = set(), []
    for spec in specs:
        step = split_step(spec)
        if step is not None:
            name, options = step
            out.append((name, resolve_kernel(name, **options)[1]))
            continue
        accepted = kernel_params(spec) if spec.strip().lower() in _FACTORIES else []
        mine = {k: v for k, v in given.items() if k in accepted}
        used |= set(mine)
        out.append(resolve_kernel(spec, **mine))
    unused = sorted(set(given) - used)
    if unused:
        msg = f"--{unused[0]} is taken by no kernel of the chain (give each step its own: -k gaussian:sigma=2)"
        raise ValueError(msg)
    return out


def kernel_file(spec: str) -> Path | None:
    """The file a kernel spec names (one ending in ``.txt``, ``.csv``, ``.npy`` or ``.json``), or None."""
    text = spec.strip()
    return Path(text) if Path(text).suffix.lower() in KERNEL_FILE_SUFFIXES and _IM_HEAD.match(text) is None else None


def resolve_kernel(spec: str, **params) -> tuple[str, np.ndarray | Magnitude]:
    """``(label, kernel)`` for any kernel a user can name: a registered name (with ``params`` for sized ones), a
    gradient-magnitude operator (a :class:`Magnitude`), ImageMagick's ``"3x3: 0,-1,0 -1,5,-1 0,-1,0"``, an inline
    matrix ``"0,-1,0;-1,5,-1;0,-1,0"`` or a kernel file (``.txt``, ``.csv``, ``.npy``, ``.json``)."""
    text = spec.strip()
    given = {k: v for k, v in params.items() if v is not None}
    key = text.lower()
    if key in MAGNITUDES:
        if given:
            msg = f"kernel {text!r} takes no {', '.join(sorted(given))}"
            raise ValueError(msg)
        x, y = MAGNITUDES[key]
        return key, Magnitude(get_kernel(x), get_kernel(y))
    imagemagick = _IM_HEAD.match(text) is not None
    from_file = kernel_file(text) is not None
    inline = bool(text) and (text[0].isdigit() or text[0] in "-+.;,") and any(ch.isdigit() for ch in text)
    if (imagemagick or from_file or inline) and given:
        msg = f"options {', '.join(sorted(given))} are for named sized kernels, not for {text!r}"
        raise ValueError(msg)
    if imagemagick:
        return "custom", parse_imagemagick(text)
    if from_file:
        return Path(text).stem, load_kernel_file(text)
    if inline:
        return "custom", parse_matrix(text)
    return key, get_kernel(text, **params)


def adjust_kernel(kernel, *, normalize: bool = False, scale: float | None = None):
    """``kernel / kernel.sum()`` when ``normalize`` (an error for kernels that sum to 0), then ``* scale``.

    A :class:`Magnitude` can be scaled, not normalised."""
    if isinstance(kernel, Magnitude):
        if normalize:
            msg = "a gradient-magnitude operator sums to 0 and cannot be normalised"
            raise ValueError(msg)
        if scale is None:
            return kernel
        s = _number(scale, "scale")
        with np.errstate(over="ignore", invalid="ignore"):
            return Magnitude(validate_kernel(kernel.gx * s), validate_kernel(kernel.gy * s))
    k = np.asarray(kernel, dtype=np.float64)
    if normalize:
        total = k.sum()
        if abs(total) <= 1e-12 * np.abs(k).max():
            msg = "--normalize: the kernel sums to 0 (an edge or derivative kernel); use --scale instead"
            raise ValueError(msg)
        k = k / total
    if scale is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            k = k * _number(scale, "scale")
    return validate_kernel(k)


def _fmt(v: float) -> str:
    return f"{v:.6g}" if v != int(v) else str(int(v))


def kernel_table() -> str:
    """The registry as aligned text: name, size, sum, description (sized kernels at their defaults)."""
    rows = []
    for info in list_kernels():
        if info.kind == "magnitude":
            gx = get_kernel(MAGNITUDES[info.name][0])
            size, total = f"{gx.shape[1]}x{gx.shape[0]}", "-"
        else:
            k = get_kernel(info.name)
            size = f"{k.shape[1]}x{k.shape[0]}" + ("*" if info.sized else "")
            total = _fmt(round(float(k.sum()), 6))
        rows.append((info.name, size, total, info.description))
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    w2 = max(len(r[2]) for r in rows)
    lines = [f"{'name':<{w0}}  {'size':<{w1}}  {'sum':>{w2}}  description"]
    lines += [f"{a:<{w0}}  {b:<{w1}}  {c:>{w2}}  {d}" for a, b, c, d in rows]
    lines.append("* sized: the default size; set --size, --sigma, ... (cnnfilter kernels NAME --help)")
    return "\n".join(lines)


def describe_kernel(name: str, **params) -> str:
    """One kernel as text: a header (name, size, sum) and its matrix, as ``cnnfilter kernels NAME`` prints it."""
    [(label, k)] = resolve_steps([name], **params)
    parts = [("x", k.gx), ("y", k.gy)] if isinstance(k, Magnitude) else [("", k)]
    out = []
    for suffix, m in parts:
        title = f"{label}{'-' + suffix if suffix else ''}"
        out.append(f"# {title}: {m.shape[1]}x{m.shape[0]}, sum {_fmt(round(float(m.sum()), 6))}")
        cells = [[_fmt(round(float(v), 6)) for v in row] for row in m]
        width = max(len(c) for row in cells for c in row)
        out += [" ".join(c.rjust(width) for c in row) for row in cells]
    return "\n".join(out)


def rank1_factors(k: np.ndarray):
    """``(u, v)`` with ``outer(u, v) == k`` to ``k``'s precision (float32 or float64), or None when ``k`` is not
    rank 1: a kernel the separable paths filter as a column pass and a row pass (Gaussian, box)."""
    k64 = k.astype(np.float64)
    if not k64.any():
        return np.zeros(k.shape[0], k.dtype), np.zeros(k.shape[1], k.dtype)
    U, s, Vt = np.linalg.svd(k64)
    u = U[:, 0] * np.sqrt(s[0])
    v = Vt[0] * np.sqrt(s[0])
    err = np.abs(np.outer(u, v) - k64).max()
    if err > (1e-7 if k.dtype == np.float32 else 1e-14) * np.abs(k64).max():
        return None
    return np.ascontiguousarray(u, k.dtype), np.ascontiguousarray(v, k.dtype)
