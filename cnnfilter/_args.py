"""Argument checks shared by the public functions: one message style, naming the parameter, the value and what
is allowed."""

from __future__ import annotations

import numbers

import numpy as np

BORDERS = ("constant", "edge", "reflect", "symmetric", "wrap")


def pair(value, name: str, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each at least ``minimum``, as ``(rows, cols)``."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or not all(_is_int(v) for v in items):
        msg = f"{name} {value!r} is not an int or a pair of ints (rows, cols)"
        raise TypeError(msg)
    rows, cols = int(items[0]), int(items[1])
    if rows < minimum or cols < minimum:
        msg = f"{name} {value!r} must be at least {minimum}"
        raise ValueError(msg)
    if max(rows, cols) > MAX_INT:
        msg = f"{name} {value!r} is larger than {MAX_INT:,}"
        raise ValueError(msg)
    return rows, cols


MAX_INT = 2**31 - 1  # strides, dilations, sizes and paddings the compiled loops index with


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def resolve_padding(padding, span: tuple[int, int]):
    """``(top, bottom, left, right)`` for a padding spec, given the dilated kernel span ``d*(k-1)+1``.

    ``"same"``: total pad ``span - 1 = d*(k-1)``, ``floor`` of half on the top/left, the extra row/column on the
    bottom/right (as PyTorch and TensorFlow at stride 1); the output is ``ceil(n / stride)``, the stride-1 'same'
    result sampled at every ``stride``-th pixel. ``"valid"``: none. ``"full"``: ``span-1`` on
    every side. An int, ``(ph, pw)`` or ``((top, bottom), (left, right))`` of non-negative ints.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0, 0, 0
        if padding == "full":
            return span[0] - 1, span[0] - 1, span[1] - 1, span[1] - 1
        if padding == "same":
            (th, tw) = (span[0] - 1, span[1] - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        msg = f"padding {padding!r} is not one of 'same', 'valid', 'full', an int, (ph, pw) or ((top, bottom), (left, right))"
        raise ValueError(msg)
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(isinstance(p, (tuple, list)) for p in padding):
        (t, b), (l, r) = (pair(p, "padding", minimum=0) for p in padding)
        return t, b, l, r
    ph, pw = pair(padding, "padding", minimum=0)
    return ph, ph, pw, pw


def border_code(border: str) -> int:
    if border not in BORDERS:
        msg = f"border {border!r} is not one of {', '.join(BORDERS)}"
        raise ValueError(msg)
    return BORDERS.index(border)


def as_image(image, name: str = "image") -> np.ndarray:
    """A 2-D ``(H, W)`` or channels-last 3-D ``(H, W, C)`` array of integers or floats."""
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        msg = f"{name} dtype {arr.dtype} is not an integer or float type"
        raise TypeError(msg)
    if arr.ndim not in (2, 3):
        msg = f"{name} has shape {arr.shape}; expected (H, W) or channels-last (H, W, C)"
        raise ValueError(msg)
    if arr.size == 0:
        msg = f"{name} has shape {arr.shape}; it must not be empty"
        raise ValueError(msg)
    return arr


def work_dtype(image: np.ndarray) -> type:
    """float64 for a float64 (or wider, either byte order) image, float32 for every other: the dtype every
    compiled loop runs in."""
    return np.float64 if image.dtype.kind == "f" and image.dtype.itemsize >= 8 else np.float32


def output_size(n: int, span: int, stride: int, before: int, after: int) -> int:
    """``floor((n + before + after - span) / stride) + 1`` (``span = d*(k-1)+1``); may be <= 0."""
    return (n + before + after - span) // stride + 1


def check_value(value, name: str, dtype) -> float:
    """A finite number that the working dtype can hold."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        msg = f"{name} {value!r} is not a number"
        raise TypeError(msg) from None
    if not np.isfinite(f):
        msg = f"{name} {value!r} must be finite"
        raise ValueError(msg)
    if abs(f) > float(np.finfo(dtype).max):
        msg = f"{name} {value!r} is outside the range of the {np.dtype(dtype).name} result"
        raise ValueError(msg)
    return f


def overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two arrays may share memory (an exact answer unless it is too costly to work out)."""
    if not np.may_share_memory(a, b):
        return False
    try:
        return bool(np.shares_memory(a, b, max_work=10_000))
    except np.exceptions.TooHardError:
        return True


def check_out(out, shape: tuple, dtype) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        msg = f"out must be a numpy array, not {type(out).__name__}"
        raise TypeError(msg)
    if out.shape != tuple(shape) or out.dtype != dtype:
        msg = f"out has shape {out.shape} and dtype {out.dtype}; expected shape {tuple(shape)} and dtype {np.dtype(dtype)}"
        raise ValueError(msg)
    if not out.flags.c_contiguous or not out.flags.writeable:
        msg = "out must be a writeable C-contiguous array"
        raise ValueError(msg)
    return out
