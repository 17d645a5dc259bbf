"""The model file (``.cnnf``): a zip holding ``header.json`` and one ``.npy`` per parameter. Never pickle.

The header holds the format name and version, the architecture string, the input shape, the class names, the
normalisation (per-channel mean and std of the training set), every parameter's shape, and training metadata.
Loading checks all of it against the architecture, and every value for finiteness.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .arch import ArchError, Network, build

FORMAT = "cnnfilter-model"
VERSION = 1
HEADER = "header.json"


class ModelError(ValueError):
    """A model file that is missing, truncated, tampered with, of another version, or not a model at all."""


@dataclass
class Model:
    """A trained network with what is needed to feed it: class names and input normalisation."""

    net: Network
    classes: list[str]
    mean: np.ndarray  # (C,) in 0..1 pixel units
    std: np.ndarray  # (C,)
    meta: dict = field(default_factory=dict)  # training metadata

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.net.input_shape

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` per channel, for ``x (N, C, H, W)`` in 0..1."""
        return ((x - self.mean.reshape(1, -1, 1, 1)) / self.std.reshape(1, -1, 1, 1)).astype(np.float32)

    def probabilities(self, x: np.ndarray, batch: int = 256) -> np.ndarray:
        """Class probabilities ``(N, classes)`` for images ``x (N, C, H, W)`` in 0..1."""
        from .layers import softmax

        out = [softmax(self.net.forward(self.normalize(x[i : i + batch]))) for i in range(0, len(x), batch)]
        return np.concatenate(out) if out else np.empty((0, len(self.classes)), np.float32)


def save_model(model: Model, path) -> None:
    """Write ``model`` to ``path`` atomically (a temporary file renamed over it)."""
    from ..io import atomic_file

    net = model.net
    names = net.param_names()
    header = {
        "format": FORMAT,
        "version": VERSION,
        "arch": net.arch,
        "input_shape": list(net.input_shape),
        "classes": list(model.classes),
        "mean": [float(v) for v in model.mean],
        "std": [float(v) for v in model.std],
        "params": {n: list(p.shape) for n, p in zip(names, net.params())},
        "layers": [{"name": n, "layer": r, "output": list(s)} for n, r, s, _ in net.summary()],
        "training": model.meta,
    }
    with atomic_file(path) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(HEADER, json.dumps(header, indent=1))
        for name, p in zip(names, net.params()):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(p, np.float32), allow_pickle=False)
            zf.writestr(f"{name}.npy", buf.getvalue())


def load_model(path) -> Model:
    """Read a model written by :func:`save_model`; raises ModelError naming the problem."""
    name = str(path)

    def fail(why: str):
        raise ModelError(f"cannot load model {name!r}: {why}")

    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        fail("no such file")
    except IsADirectoryError:
        fail("it is a directory")
    except PermissionError:
        fail("permission denied")
    except (zipfile.BadZipFile, OSError, ValueError):
        fail("not a cnnfilter model (not a zip archive, or truncated)")
    with zf:
        members = set(zf.namelist())
        if HEADER not in members:
            fail(f"not a cnnfilter model (no {HEADER})")
        try:
            header = json.loads(zf.read(HEADER))
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            fail(f"the header is unreadable ({type(exc).__name__})")
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            fail("not a cnnfilter model (wrong format name in the header)")
        version = header.get("version")
        if version != VERSION:
            fail(f"format version {version!r}, but this cnnfilter reads version {VERSION}; upgrade cnnfilter"
                 if isinstance(version, int) and version > VERSION else f"unsupported format version {version!r}")
        try:
            arch = str(header["arch"])
            shape = tuple(int(v) for v in header["input_shape"])
            classes = [str(c) for c in header["classes"]]
            mean = np.asarray(header["mean"], np.float32)
            std = np.asarray(header["std"], np.float32)
            meta = dict(header.get("training") or {})
        except (KeyError, TypeError, ValueError) as exc:
            fail(f"the header is incomplete or malformed ({exc})")
        if len(shape) != 3 or min(shape) < 1 or shape[0] > 4 or shape[1] * shape[2] > 1 << 24 or not classes:
            fail(f"the header has input shape {shape} and {len(classes)} classes")
        if mean.shape != (shape[0],) or std.shape != (shape[0],) or not (np.isfinite(mean).all()
                                                                      and np.isfinite(std).all() and (std > 0).all()):
            fail("the normalisation (mean/std) does not match the input channels or is not finite and positive")
        try:
            net = build(arch, shape, len(classes))
        except ArchError as exc:
            fail(f"the architecture does not build: {exc}")
        names = net.param_names()
        extra = members - {HEADER} - {f"{n}.npy" for n in names}
        if extra:
            fail(f"unexpected member {sorted(extra)[0]!r}")
        for pname, p in zip(names, net.params()):
            member = f"{pname}.npy"
            if member not in members:
                fail(f"parameter {pname!r} is missing")
            try:
                arr = np.lib.format.read_array(io.BytesIO(zf.read(member)), allow_pickle=False)
            except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
                fail(f"parameter {pname!r} is unreadable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            if arr.shape != p.shape:
                fail(f"parameter {pname!r} has shape {arr.shape}; the architecture needs {p.shape}")
            if arr.dtype.kind != "f":
                fail(f"parameter {pname!r} has dtype {arr.dtype}; expected float")
            if not np.isfinite(arr).all():
                fail(f"parameter {pname!r} holds NaN or infinite values")
            p[...] = arr
    return Model(net, classes, mean, std, meta)


BUNDLED = ("digits",)


def resolve_model(spec) -> Path:
    """A model path, or the name of a bundled model (``digits``: the project's ``samples/models/digits.cnnf``,
    installed as the package data ``cnnfilter._models``)."""
    path = Path(spec)
    if str(spec) in BUNDLED and not path.exists():
        here = Path(__file__).resolve().parent.parent
        root = here / "_models"
        if not root.is_dir():  # an editable install: the checkout's samples/models
            root = here.parent / "samples" / "models"
        return root / f"{spec}.cnnf"
    return path
