"""Classifying images with a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .data import to_array, upright_size
from .model import Model


def prepare(model: Model, image) -> np.ndarray:
    """One image (a path, a Pillow image, or an array in 0..1 / uint8 / uint16) as the model's input
    ``(C, H, W)`` float32 in 0..1: converted to its channels and resized (bilinear) to its size (a ``free_size``
    model's input keeps the image's own size)."""
    C, H, W = model.input_shape
    if isinstance(image, (str, Path)):
        image = load_input(image)
    if model.free_size:
        if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[0] == C and image.shape[2] not in (3, 4):
            H, W = image.shape[1:]  # already (C, H, W): scaled below like any array
        else:
            H, W = upright_size(image) if isinstance(image, Image.Image) else np.shape(image)[:2]
    if isinstance(image, Image.Image):
        return to_array(image, C, (H, W))
    arr = np.asarray(image)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535
    arr = np.asarray(arr, np.float32)
    if arr.ndim == 3 and arr.shape[0] == C and arr.shape[1:] == (H, W):
        return arr
    if arr.ndim == 2:
        img = Image.fromarray(arr, "F")
        return to_array(img, C, (H, W))
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        rgb = Image.fromarray(np.clip(np.rint(arr[:, :, :3] * 255), 0, 255).astype(np.uint8), "RGB")
        return to_array(rgb, C, (H, W))
    msg = f"image has shape {arr.shape}; expected (H, W), (H, W, 3|4) or the model's input {model.input_shape}"
    raise ValueError(msg)


def load_input(path) -> Image.Image | np.ndarray:
    """An image file as a Pillow image, or for a 16-bit colour PNG (which Pillow cannot hold) an (H, W, 3) float32
    array in 0..1 (alpha dropped, as for every other image a model reads)."""
    from ..io import Picture, open_image

    img = open_image(path)
    if isinstance(img, Picture):
        return img.pixels.astype(np.float32) / np.float32(65535)
    return img


def predict(model: Model, images) -> np.ndarray:
    """Class probabilities ``(N, classes)`` for a list of images (paths, Pillow images or arrays; see
    :func:`prepare`) or an array ``(N, C, H, W)`` in 0..1."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        x = np.asarray(images, np.float32)
        return model.for_size(*x.shape[2:]).probabilities(x)
    if not len(images):
        return model.probabilities(np.empty((0, *model.input_shape), np.float32))
    arrays = [prepare(model, im) for im in images]
    out = [None] * len(arrays)
    for shape in dict.fromkeys(a.shape for a in arrays):  # one batch per size (one size unless free_size)
        idx = [i for i, a in enumerate(arrays) if a.shape == shape]
        for i, p in zip(idx, model.for_size(*shape[1:]).probabilities(np.stack([arrays[i] for i in idx]))):
            out[i] = p
    return np.stack(out)


def probability_text(p: float, digits: int = 3) -> str:
    """A probability for people: ``0.972``, or ``<0.001`` where the digits would show 0."""
    floor = 10.0 ** -digits
    return f"<{floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


def fit_note(model: Model, image, resize: str = "stretch") -> str | None:
    """What :func:`prepare` does to ``image`` (a Pillow image or an array) to meet the model's input, in words
    (``"640x480 RGB, the model takes 8x8 greyscale: converted to greyscale, resized to 8x8 (bilinear)"``), or None
    when it takes the image as it is. ``resize``: as ``featuremaps --resize`` meets a fixed size (``stretch``,
    ``fit`` or ``pad``)."""
    C, H, W = model.input_shape
    if isinstance(image, Image.Image):
        h, w = upright_size(image)
        grey = image.mode in ("1", "L", "LA", "I", "F") or image.mode.startswith("I;16")
        what = "greyscale" if grey else "RGB" if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr") else image.mode
    else:
        arr = np.asarray(image)
        if arr.ndim == 3 and arr.shape[0] == C and arr.shape[2] not in (3, 4):
            return None  # already the model's layout
        h, w = arr.shape[:2]
        grey = arr.ndim == 2
        what = "greyscale" if grey else "RGB"
    if model.free_size:
        H, W = h, w
    done = []
    if grey != (C == 1):
        done.append("converted to " + ("greyscale" if C == 1 else "RGB"))
    if (h, w) != (H, W):
        done.append({"fit": f"fitted into {W}x{H} (bilinear, aspect ratio kept, black borders)",
                     "pad": f"centred on a {W}x{H} black canvas (not scaled, cropped where larger)"}.get(
                         resize, f"resized to {W}x{H} (bilinear)"))
    if not done:
        return None
    takes = f"{W}x{H} " if not model.free_size else ""
    return f"{w}x{h} {what}, the model takes {takes}{'greyscale' if C == 1 else 'RGB'}: {', '.join(done)}"


def predict_files(model: Model, paths, batch: int | None = None, *, notes=None):
    """``(path, probabilities or None, error or None)`` per file, in order, ``batch`` images at a time: a file
    that cannot be read gives its error and the rest go on. ``notes(path, text)`` is told when an image is
    converted or resized to meet the model's input (:func:`fit_note`)."""
    from ..io import ImageReadError

    from ..limits import max_memory

    batch = batch or model.batch_size()
    budget = max_memory() // 8  # a free_size model's images are of any size: a batch holds at most this many bytes
    pending: list[tuple[Path, np.ndarray]] = []

    def flush():
        if pending:
            x = np.stack([a for _, a in pending])
            try:
                probs = model.for_size(*x.shape[2:]).probabilities(x)
            except ValueError as exc:  # a size this model cannot run (or the memory limit): those files fail
                if not model.free_size:
                    raise
                for p, _ in pending:
                    yield p, None, f"{str(p)!r}: {exc}"
                pending.clear()
                return
            for (p, _), pr in zip(pending, probs):
                if np.isfinite(pr).all():
                    yield p, pr, None
                else:  # NaN or inf pixels (a float TIFF) give no probability at all
                    yield p, None, f"{str(p)!r}: the model's output is not finite (NaN or infinite pixels?)"
            pending.clear()

    for path in paths:
        try:
            image = load_input(path)
            note = fit_note(model, image) if notes is not None else None
            if note is not None:
                notes(path, note)
            arr = prepare(model, image)
            if pending and arr.shape != pending[0][1].shape:  # a free_size model: a batch holds one size
                yield from flush()
            pending.append((path, arr))
        except (ImageReadError, OSError, ValueError) as exc:
            yield from flush()
            yield path, None, str(exc)
            continue
        if len(pending) >= batch or (model.free_size and sum(a.nbytes for _, a in pending) >= budget):
            yield from flush()
    yield from flush()
