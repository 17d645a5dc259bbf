"""Feature maps: every layer's activations for an image, and the reports that show them.

``featuremaps(model, image)`` gives a model's activations and ``bank(image)`` a bank of named kernels' maps.
``write_report`` writes a folder per image: a montage per layer (``cnnfilter.pictures`` draws them; a dense
layer is a bar chart), the first convolution's filters, ``summary.json``, optionally the raw activations and one
PNG per channel, and an ``index.html`` that shows them in a grid filling the window, each with its name, shape
and a caption saying how colours map to values. ``write_bank_report`` does the same for a kernel bank on a photo
(pictures in grey, signed responses on mid-grey, a large photo reduced for display), and ``write_index`` links a
folder run's reports.
"""

from __future__ import annotations

import contextlib
import html
import itertools
import json
import math
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from .pictures import (COLORMAPS, MAX_TILES, NORMALIZE, bars, colormap, colour_filters, grey_picture, montage,
                       montage_figure, reduce_for_display, scale_maps)

__all__ = ["COLORMAPS", "DEFAULT_BANK", "NORMALIZE", "Report", "bank", "bars", "colormap", "featuremaps",
           "montage", "report_file", "scale_maps", "select_layers", "write_bank_report", "write_index",
           "write_report"]

RESIZE = ("stretch", "fit", "pad")
DEFAULT_BANK = ("identity", "sharpen", "edge", "laplacian", "sobel-x", "sobel-y", "blur", "emboss")
MAX_REPORT_TILES = 16_384  # tiles of one image's report (every layer's montage)
MAX_REPORT_FILES = 4_096  # per-channel files of one image's report (--separate)
MAX_DISPLAY = 1024  # a photo's maps are drawn reduced to at most this many pixels on the longer side
SMALL_DISPLAY = 256  # ... and a small image's enlarged (whole times) to at least this many
PASS_THROUGH = frozenset({"Dropout", "Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"})  # the values of
# their input, rearranged: a report names them instead of drawing the same values twice

def prepare_input(model, image, resize: str = "stretch", *, loaded: bool = False) -> np.ndarray:
    """An image (path, Pillow image or array) as the model's input ``(C, H, W)`` in 0..1. ``stretch`` resizes to
    the input size; ``fit`` keeps the aspect ratio and pads with black; ``pad`` does not scale: the image is
    centred on a black canvas (cropped when larger). ``loaded``: ``image`` is what
    :func:`cnnfilter.nn.predict.load_input` gave for a file, taken as that file would be."""
    from .nn.data import to_array
    from .nn.predict import prepare

    if resize not in RESIZE:
        msg = f"resize {resize!r} is not one of {', '.join(RESIZE)}"
        raise ValueError(msg)
    if resize == "stretch" or model.free_size:  # a free_size model takes the image as it is
        return prepare(model, image)
    C, H, W = model.input_shape
    if isinstance(image, (str, Path)) or loaded:
        from .nn.predict import load_input

        image = load_input(image) if isinstance(image, (str, Path)) else image
        if isinstance(image, np.ndarray):  # a 16-bit PNG Pillow cannot hold: 8 bits are plenty for a model
            eight = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
            image = Image.fromarray(eight, "RGB" if eight.ndim == 3 else "L")
    if isinstance(image, Image.Image):
        pil = image
    else:
        arr = prepare(model, image)  # arrays: stretched (their size is the caller's business)
        return arr
    full = to_array(pil, C, None)  # (C, h, w), 0..1
    h, w = full.shape[1:]
    if resize == "fit":
        s = min(H / h, W / w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        full = np.stack([np.asarray(Image.fromarray(ch, "F").resize((nw, nh), Image.Resampling.BILINEAR))
                         for ch in full])
        h, w = nh, nw
    canvas = np.zeros((C, H, W), np.float32)
    top, left = (H - h) // 2, (W - w) // 2
    ys, yd = (slice(-top, -top + H), slice(0, H)) if top < 0 else (slice(0, h), slice(top, top + h))
    xs, xd = (slice(-left, -left + W), slice(0, W)) if left < 0 else (slice(0, w), slice(left, left + w))
    canvas[:, yd, xd] = full[:, ys, xs]
    return canvas


def layer_names(model) -> list[str]:
    return ["input", *model.net.names]


def select_layers(model, layers) -> list[str]:
    """Layer names from names, indices or operator types (``"conv1,relu1"``, ``"0,3"``, ``"Conv,Relu"``, a list;
    an ONNX model's node names too); None: every layer."""
    names = model.net.names
    if layers is None:
        return list(names)
    items = [s.strip() for s in layers.split(",")] if isinstance(layers, str) else list(layers)
    ops, nodes = {}, {}
    made = {n.outputs[0]: n for n in getattr(model.net, "nodes", [])}
    for name, lay in zip(names, model.net.layers):
        node = getattr(lay, "node", None) or made.get(name)
        kinds = {type(lay).__name__.lower()} - {"_layer"}  # a train-tiny layer's class (conv2d), its operator (conv)
        if node is not None:
            kinds.add(node.op.lower())
        for kind in kinds:
            ops.setdefault(kind, []).append(name)
        if node is not None and node.name:
            nodes[node.name] = name
    stems = {stem: name for name, stem in file_stems(names).items()}  # the report's file names work too
    out = []
    for item in items:
        if isinstance(item, str) and item in names:  # a name first: the TorchScript exporter names tensors '6'
            out.append(item)
            continue
        if isinstance(item, str) and (item.lower() in ops or item in nodes or item in stems):
            found = ops.get(item.lower()) or ([nodes[item]] if item in nodes else [stems[item]])
            out.extend(n for n in found if n not in out)
            continue
        if isinstance(item, int) or (isinstance(item, str) and item.lstrip("-").isdigit()):
            i = int(item)
            if not -len(names) <= i < len(names):
                msg = f"layer index {i} is out of range 0..{len(names) - 1}; layers: {', '.join(names)}"
                raise ValueError(msg)
            out.append(names[i])
        elif item in names:
            out.append(item)
        else:
            msg = f"unknown layer {item!r}; layers: {', '.join(names)}; operator types: {', '.join(ops)}"
            raise ValueError(msg)
    return out


def featuremaps(model, image, layers=None, *, resize: str = "stretch") -> dict[str, np.ndarray]:
    """Every (or the selected) layer's output for one image, by layer name, in network order, without the batch
    axis: ``(C, H, W)`` for convolution and pooling layers, ``(N,)`` for dense ones. ``model`` is a loaded
    :class:`~cnnfilter.nn.Model`, a model file or a bundled name (``digits``)."""
    from .nn import Model, load_model, resolve_model

    if not isinstance(model, Model):
        model = load_model(resolve_model(model))
    wanted = select_layers(model, layers)
    x = model.normalize(prepare_input(model, image, resize)[None])
    model = model.for_size(*x.shape[2:])  # a free_size model runs at the image's own size
    acts = model.net.activations(x)
    return {name: acts[name][0] for name in model.net.names if name in wanted}


def _bank_kernels(kernels) -> list[tuple[str, object]]:
    from .kernels import resolve_kernel

    names = [k.strip() for k in kernels.split(",")] if isinstance(kernels, str) else [str(k).strip() for k in kernels]
    names = list(dict.fromkeys(n for n in names if n))  # each kernel once, in the order given
    if not names:
        msg = "the kernel bank is empty: name at least one kernel"
        raise ValueError(msg)
    return [(name, resolve_kernel(name)[1]) for name in names]


def _grey_levels(image) -> tuple[np.ndarray, np.ndarray, float]:
    """``(colour pixels as read (H, W) or (H, W, 3), grey (H, W), full scale)``. The grey of an 8- or 16-bit
    photo is rounded to integers, as Pillow's ``convert("L")`` rounds: integer images take the numpy engine."""
    from .io import Picture, read_picture
    from .ops import to_gray

    px = read_picture(image).pixels if isinstance(image, (str, Path)) else np.asarray(image)
    if px.ndim == 3 and px.shape[2] == 1:
        px = px[:, :, 0]
    colour = px[:, :, :3] if px.ndim == 3 else px
    scale = 65535.0 if px.dtype == np.uint16 else (255.0 if px.dtype == np.uint8 else 1.0)
    grey = to_gray(Picture(colour)).pixels
    if px.dtype.kind in "ui" and grey.dtype.kind == "f":
        grey = np.rint(grey, out=grey).astype(px.dtype)
    return colour, grey, scale


def _eight_bit(colour: np.ndarray, scale: float) -> np.ndarray:
    """The photo as 8-bit samples for ``input.png``, converted a band of rows at a time (a 16-bit or float photo
    is never copied whole as floats) by the image writer's own rules (``io.to8``, ``io.to_depth``); NaN is black."""
    from .io import to8, to_depth

    if colour.dtype == np.uint8:
        return colour
    out = np.empty(colour.shape, np.uint8)
    band = max(1, (4 << 20) // max(1, 8 * colour[0].size))
    for r in range(0, colour.shape[0], band):
        part = colour[r : r + band]
        out[r : r + band] = to8(part) if part.dtype == np.uint16 else to_depth(
            part.astype(np.float32) * np.float32(255.0 / scale), 8)
    return out


def _bank_map(grey: np.ndarray, scale: float, kernel, border: str) -> np.ndarray:
    from .ops import apply_kernel

    m = apply_kernel(grey, kernel, border=border)
    m *= np.float32(1.0 / scale)  # 0..1 units: the image's full scale is 1
    return m


def bank(image, kernels=DEFAULT_BANK, *, border: str = "reflect") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A convolution layer built from named kernels: ``(grey input 0..1 (H, W), maps (K, H, W), names)``."""
    from .limits import check_memory

    ks = _bank_kernels(kernels)
    _, grey, scale = _grey_levels(image)
    check_memory(4.0 * (len(ks) + 3) * grey.shape[0] * grey.shape[1],
                 f"a bank of {len(ks)} maps of a {grey.shape[0]}x{grey.shape[1]} image")
    maps = np.empty((len(ks), *grey.shape), np.float32)  # filled map by map: never the bank twice
    for i, (_, k) in enumerate(ks):
        maps[i] = _bank_map(grey, scale, k, border)
    return grey.astype(np.float32) / np.float32(scale), maps, [n for n, _ in ks]


def drawn_as(kernel) -> tuple[str, float]:
    """How a kernel's response is drawn: ``("image", gain)`` for a kernel whose weights sum to a positive gain
    (identity, blur, sharpen, emboss: the response is a picture, drawn in grey after dividing by the gain),
    ``("signed", 1)`` for one that sums to 0 or less (edges, Laplacian, Sobel: mid-grey is 0), ``("magnitude",
    1)`` for a gradient magnitude (black is 0)."""
    from .kernels import Magnitude

    if isinstance(kernel, Magnitude):
        return "magnitude", 1.0
    k = np.asarray(kernel, np.float64)
    total = float(k.sum())
    if total > 1e-6 * float(np.abs(k).sum()):
        return "image", total
    return "signed", 1.0


def summarize(acts: dict[str, np.ndarray]) -> list[dict]:
    """Per layer: name, shape, min, max, mean and the fraction of exact zeros (dead ReLUs)."""
    return [_stats(n, a) for n, a in acts.items()]


def _stats(name: str, a: np.ndarray) -> dict:
    """A layer's shape, min, max, mean and fraction of zeros; NaN is left out of them (``nan`` counts them), so
    that summary.json stays JSON (no bare NaN or Infinity: a value that is not finite is null)."""
    a = np.asarray(a)
    finite = np.isfinite(a)
    bad = int(a.size - np.count_nonzero(finite))
    v = a[finite] if bad else a

    def num(x):
        x = float(x)
        return x if np.isfinite(x) else None

    out = {"layer": name, "shape": list(a.shape),
           "min": num(v.min()) if v.size else None, "max": num(v.max()) if v.size else None,
           "mean": num(v.mean(dtype=np.float64)) if v.size else None,
           "zero_fraction": float(np.count_nonzero(a == 0) / max(a.size, 1))}
    if bad:
        out["not_finite"] = bad
    return out


def _png(img: Image.Image, path: Path) -> None:
    from .outputs import atomic_file

    with atomic_file(path) as fh:
        img.save(fh, format="PNG", compress_level=1)


def _text(text: str, path: Path) -> None:
    from .outputs import atomic_file

    with atomic_file(path) as fh:
        fh.write(text.encode("utf-8", "replace"))  # a file name that is not UTF-8 becomes '?'


class _Npz:
    """An ``.npz`` (numpy's format: a zip of ``.npy`` files) written one array at a time through an atomic file:
    a photo's maps are never all in memory. Deflate level 1: float maps barely compress further."""

    def __init__(self, path: Path):
        from .outputs import atomic_file

        self._file = atomic_file(path)

    def __enter__(self):
        import zipfile

        self._zip = zipfile.ZipFile(self._file.__enter__(), "w", zipfile.ZIP_DEFLATED, compresslevel=1,
                                    allowZip64=True)
        return self

    def add(self, name: str, array: np.ndarray) -> None:
        with self._zip.open(name + ".npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array(fh, np.ascontiguousarray(array, np.float32), allow_pickle=False)

    def __exit__(self, *exc):
        self._zip.close()
        return self._file.__exit__(*exc)


def _folder(out: Path, *parts: str) -> Path:
    """``out/parts`` created, checked to lie inside ``out`` (a symbolic link in a report folder cannot send files
    elsewhere), with the temporaries of killed runs removed."""
    from .outputs import inside, remove_stale_in

    folder = out.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    inside(folder, out)
    remove_stale_in(folder)
    return folder


def _start(out_dir, separate: bool) -> tuple[Path, set[str]]:
    """The report folder, made and checked, and the files of an earlier report in it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_report(out)  # an earlier report's files, which this one replaces
    _folder(out)
    if separate:
        _folder(out, "channels")  # checked before anything is written
    return out, earlier


def _finish(out: Path, earlier: set[str], written: set[str]) -> None:
    for rel in earlier - written:  # layers, filters and channels of the earlier report that this one has not
        (out / rel).unlink(missing_ok=True)


def write_report(out_dir, *, input_image: np.ndarray, acts: dict[str, np.ndarray], title: str,
                 prediction: dict | None = None, weights: dict[str, np.ndarray] | None = None,
                 labels: dict[str, list[str]] | None = None, tile_size: int | None = None, normalize: str = "map",
                 colormap_name: str | None = None, separate: bool = False, npz: bool = False,
                 signed_layers: set[str] | None = None, same: dict[str, str] | None = None,
                 about: dict[str, str] | None = None) -> Path:
    """Write one image's feature maps into ``out_dir`` (created): ``input.png``, ``<layer>.png`` montages (a
    bar chart for a dense layer), ``weights-<layer>.png``, ``channels/<layer>-<c>.png`` (``separate``),
    ``activations.npz`` (``npz``), ``summary.json`` and ``index.html`` (the layer names, descriptions
    (``about``) and colour captions, in a grid that fills the window). Layers in ``same`` (name -> the layer whose
    values they hold, e.g. a Flatten) are named in the page, not drawn again. Returns the folder."""
    from .limits import LimitError

    same = same or {}
    drawn = {n: a for n, a in acts.items() if n not in same}
    tiles = sum(min(int(np.shape(a)[0]) if np.ndim(a) == 3 else 1, MAX_TILES) for a in drawn.values())
    files = sum(min(int(np.shape(a)[0]), MAX_TILES) for a in drawn.values() if np.ndim(a) == 3) if separate else 0
    if tiles > MAX_REPORT_TILES or files > MAX_REPORT_FILES:
        msg = (f"the report would draw {tiles:,} tiles" + (f" and write {files:,} channel files" if separate else "")
               + f"; at most {MAX_REPORT_TILES:,} tiles and {MAX_REPORT_FILES:,} files: choose layers with --layers")
        raise LimitError(msg)
    out, earlier = _start(out_dir, separate)
    labels, about = labels or {}, about or {}
    inp = np.asarray(input_image, np.float32)
    shown = inp if inp.ndim == 2 else (inp[0] if inp.shape[0] == 1 else inp.transpose(1, 2, 0))
    factor = max(1, 192 // max(shown.shape[:2]))
    arr = np.clip(np.rint(shown * 255), 0, 255).astype(np.uint8)
    arr = np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1)
    _png(Image.fromarray(np.ascontiguousarray(arr)), out / "input.png")
    cards = [_Card("input", "x".join(map(str, inp.shape)), "input.png", "what the network is given (before its "
                   "normalisation)", photo=max(shown.shape[:2]) >= SMALL_DISPLAY)]
    stems = file_stems([*acts, *(weights or {})])
    written = {"input.png", "summary.json", "index.html"}
    for name, w in (weights or {}).items():
        O, C = w.shape[:2]
        tl = [f"{o}" if C == 1 else f"{o}.{c}" for o, c in
              itertools.islice(((o, c) for o in range(O) for c in range(C)), MAX_TILES)]
        rows = 3 < C <= 32  # one row per output channel, when a row of its input channels fits a page
        if C == 3 and colormap_name is None:  # an RGB input's filters: one colour tile each
            fig = colour_filters(w)
        else:
            fig = montage_figure(w.reshape(O * C, *w.shape[2:]), tile_size=48, normalize="layer",
                                 colormap_name=colormap_name, signed=True, labels=tl, columns=C if rows else None)
        src = f"weights-{stems[name]}.png"
        _png(fig.image, out / src)
        written.add(src)
        how = ("each output channel's weights" + (" (one row per output channel, a tile per input channel)" if rows
                                                  else " (tiles labelled output.input)" if C > 1 else "") + "; ")
        cards.append(_Card(f"{name} filters", "x".join(map(str, w.shape)), src,
                           (how if C != 3 or colormap_name is not None else "") + fig.caption,
                           wide=fig.image.width > 720))
    for name, a in drawn.items():
        signed = None if signed_layers is None else name in signed_layers
        fig = montage_figure(a, tile_size=tile_size, normalize=normalize, colormap_name=colormap_name,
                             signed=signed, labels=labels.get(name))
        src = f"{stems[name]}.png"
        _png(fig.image, out / src)
        written.add(src)
        cards.append(_Card(name, "x".join(map(str, a.shape)), src, fig.caption, about.get(name, ""),
                           wide=fig.image.width > 720))
        if separate and a.ndim == 3:  # the montage's colours: one colormap for the layer
            scaled, _, sg = scale_maps(a, normalize, bool((a < 0).any()) if signed is None else signed)
            for c in range(min(a.shape[0], MAX_TILES)):
                rel = f"channels/{stems[name]}-{c}.png"
                _png(grey_picture(scaled[c], signed=False, colormap_name=colormap_name or
                                  ("coolwarm" if sg[c] else "viridis")), out / rel)
                written.add(rel)
    summary = {"image": title, "layers": summarize(acts)}
    if any(stems[n] != n for n in drawn):  # names that are no file names (ONNX's '/conv1/Conv_output_0')
        summary["files"] = {n: f"{stems[n]}.png" for n in drawn}
    if same:
        summary["same_values"] = dict(same)
    if prediction is not None:
        summary["prediction"] = prediction
    if npz:
        written.add("activations.npz")
    summary["written"] = sorted(written - {"summary.json", "index.html"})  # what a later report may replace
    _text(json.dumps(summary, indent=1) + "\n", out / "summary.json")
    if npz:
        with _Npz(out / "activations.npz") as store:
            for n, a in acts.items():
                store.add(stems[n], a)
    notes = [f"{', '.join(html.escape(n) for n in group)}: the values of {html.escape(src)}, "
             "not drawn again" for src, group in _groups(same).items()]
    _text(_page(f"Feature maps of {title}", _prediction_html(prediction), cards, notes, npz), out / "index.html")
    _finish(out, earlier, written)
    return out


def _groups(same: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, src in same.items():
        out.setdefault(src, []).append(name)
    return out


def write_bank_report(out_dir, image, kernels=DEFAULT_BANK, *, title: str, border: str = "reflect",
                      normalize: str = "map", colormap_name: str | None = None, separate: bool = False,
                      npz: bool = False) -> Path:
    """Write what a bank of named kernels does to a photo into ``out_dir``: ``input.png`` (the photo, in colour),
    one ``<kernel>.png`` per kernel, ``summary.json``, ``index.html`` (each picture with its kernel's name, values
    and how it is drawn), ``activations.npz`` (``npz``: the full-resolution float maps) and
    ``channels/<kernel>.png`` (``separate``: full-resolution pictures).

    Kernels that sum to a positive gain (identity, blur, sharpen, emboss) are drawn as grey images of the
    response divided by the gain; signed responses (edge, Laplacian, Sobel) on mid-grey at 0, white and black at
    +-p (p: each map's 99.5th percentile of |value| with ``map``, the largest of them with ``layer``, 1 with
    ``none``); gradient magnitudes black at 0. ``colormap_name`` colours the same levels. A photo larger than
    1,024 pixels is shown reduced (block means; the strongest response of each block for signed maps); one
    smaller than 256 enlarged. Memory: the photo, its grey, and one map at a time."""
    from .limits import check_memory

    if normalize not in NORMALIZE:
        msg = f"normalize {normalize!r} is not one of {', '.join(NORMALIZE)}"
        raise ValueError(msg)
    ks = _bank_kernels(kernels)
    colour, grey, scale = _grey_levels(image)
    H, W = grey.shape
    # the grey image, a map, the filter's scratch and the display's reduction (4 bytes a pixel each), the 8-bit
    # photo: checked after the photo itself is read (its decoder checks that)
    check_memory(4.0 * 4 * H * W + 3.0 * H * W, f"the maps of a {H}x{W} image")
    factor = max(1, math.ceil(max(H, W) / MAX_DISPLAY))
    up = max(1, math.ceil(SMALL_DISPLAY / max(H, W))) if factor == 1 else 1
    out, earlier = _start(out_dir, separate)
    stems = file_stems(["input", *(n for n, _ in ks)])
    written = {"input.png", "summary.json", "index.html"}
    pic = Image.fromarray(np.ascontiguousarray(_eight_bit(colour, scale)))
    if factor > 1:
        pic = pic.reduce(factor)
    elif up > 1:
        pic = pic.resize((W * up, H * up), Image.Resampling.NEAREST)
    _png(pic, out / "input.png")
    del pic
    shown, stats = [], []
    with _Npz(out / "activations.npz") if npz else contextlib.nullcontext() as store:
        for name, k in ks:
            kind, gain = drawn_as(k)
            m = _bank_map(grey, scale, k, border)
            stats.append({**_stats(name, m), "drawn": kind})
            if store is not None:
                store.add(stems[name], m)
            if gain != 1.0:
                m *= np.float32(1.0 / gain)
            disp = reduce_for_display(m, factor, signed=kind != "image")
            del m
            shown.append((name, k, kind, gain, disp, _peak(disp) if kind != "image" else 1.0))
    if npz:
        written.add("activations.npz")
    responses = [p for _, _, kind, _, _, p in shown if kind != "image"]
    shared = max(responses, default=1.0) if normalize == "layer" else 1.0
    cards = [_Card("input", f"{W}x{H} pixels", "input.png", "the photo" + (f", shown at 1/{factor} of its size"
                   if factor > 1 else ""), photo=up == 1)]
    peaks = {}
    for name, k, kind, gain, disp, peak in shown:
        peak = shared if normalize != "map" and kind != "image" else peak
        peaks[name] = peak
        src = f"{stems[name]}.png"
        _png(grey_picture(disp, signed=kind == "signed", peak=peak if kind != "image" else 1.0,
                          colormap_name=colormap_name, upscale=up) if kind != "magnitude" else
             grey_picture(disp / np.float32(peak or 1.0), signed=False, colormap_name=colormap_name, upscale=up),
             out / src)
        written.add(src)
        cards.append(_Card(name, _kernel_shape(k), src, _bank_caption(kind, gain, peak, normalize, colormap_name),
                           table=_kernel_table(k), photo=up == 1))
    if separate:  # full-resolution pictures, a second pass: the shared range is known only now
        for name, k in ks:
            kind, gain = drawn_as(k)
            m = _bank_map(grey, scale, k, border)
            if gain != 1.0:
                m *= np.float32(1.0 / gain)
            if kind == "magnitude":
                m *= np.float32(1.0 / (peaks[name] or 1.0))
            rel = f"channels/{stems[name]}.png"
            _png(grey_picture(m, signed=kind == "signed", peak=peaks[name], colormap_name=colormap_name), out / rel)
            written.add(rel)
            del m
    summary = {"image": title, "size": [H, W], "shown_reduced": factor, "layers": stats}
    if any(stems[n] != n for n, _ in ks):
        summary["files"] = {n: f"{stems[n]}.png" for n, _ in ks}
    summary["written"] = sorted(written - {"summary.json", "index.html"})  # what a later report may replace
    _text(json.dumps(summary, indent=1) + "\n", out / "summary.json")
    top = ([f"The photo is {W}x{H}: its maps are shown at 1/{factor} of that size (block means; the strongest "
            "response of each block for signed maps)" + ("; activations.npz holds them at full size" if npz else
                                                        "; --npz keeps them at full size") + "."]
           if factor > 1 else [])
    _text(_page(f"Kernel bank on {title}", "", cards, top, npz), out / "index.html")
    _finish(out, earlier, written)
    return out


def _peak(disp: np.ndarray) -> float:
    """The 99.5th percentile of |value| (the largest, for a map of at most 4,096 pixels): a few outliers do not
    wash out the rest. Never 0."""
    a = np.abs(disp).ravel()
    if a.size == 0:
        return 1.0
    if a.size > 4096:
        k = int(0.995 * (a.size - 1))
        p = float(np.partition(a, k)[k])
    else:
        p = float(a.max())
    return p if p > 0 else (float(a.max()) or 1.0)


def _kernel_shape(k) -> str:
    from .kernels import Magnitude

    if isinstance(k, Magnitude):
        return f"|gradient| of two {k.gx.shape[0]}x{k.gx.shape[1]} kernels"
    return f"{k.shape[0]}x{k.shape[1]} kernel"


def _kernel_table(k) -> str:
    from .kernels import Magnitude

    if isinstance(k, Magnitude) or max(k.shape) > 7:
        return ""
    rows = "".join("<tr>" + "".join(f"<td>{v:.3g}</td>" for v in row) + "</tr>" for row in np.asarray(k))
    return f'<table class="k">{rows}</table>'


def _bank_caption(kind: str, gain: float, peak: float, normalize: str, cmap: str | None) -> str:
    low, mid, high = ("black", "mid-grey", "white") if cmap in (None, "gray") else (
        f"{cmap}'s low end", f"{cmap}'s middle", f"{cmap}'s high end")
    if kind == "image":
        text = f"a picture: {low} 0, {high} 1 (the input's range)"
        return text + (f"; the response divided by {gain:.4g}, the kernel's sum" if abs(gain - 1) > 1e-6 else "")
    how = {"map": "its 99.5th percentile of |value|", "layer": "the largest of the bank's percentiles",
           "none": "raw values"}[normalize]
    if kind == "magnitude":
        return f"gradient magnitude: {low} 0, {high} {peak:.3g} ({how})"
    return f"signed response: {mid} 0, {high} +{peak:.3g}, {low} -{peak:.3g} ({how})"


_WRITTEN = re.compile(r"(channels/)?[^./\\][^/\\]{0,200}\.(png|npz)")


def _earlier_report(out: Path) -> set[str]:
    """The files of an earlier report in ``out``, relative to ``out``: those its summary.json lists as written
    (PNGs, channel PNGs, activations), when its index.html is a report's. Anything else is never removed: a folder
    that is no report, a report of a cnnfilter that kept no list, a file the user put in the folder."""
    try:
        with open(out / "index.html", "rb") as fh:
            if b"<title>cnnfilter feature maps" not in fh.read(4096):
                return set()
        with open(out / "summary.json", "rb") as fh:
            listed = json.loads(fh.read(64 << 20)).get("written", [])
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(listed, list):
        return set()
    return {rel for rel in listed if isinstance(rel, str) and _WRITTEN.fullmatch(rel) and ".." not in rel
            and (out / rel).is_file() and not (out / rel).is_symlink()}


_RESERVED = {"input", "index", "summary", "activations", "channels"}


def file_stems(names) -> dict[str, str]:
    """A file name stem per layer name, unique and safe: a name is data from a model file (an ONNX tensor is
    called '/layer1/conv1/Conv_output_0'), so separators, control characters, leading dots and names of the
    report's own files are replaced, and it is cut to 100 bytes of UTF-8 (a file name may hold 255)."""
    from .outputs import safe_part

    out, taken = {}, set()
    for name in names:
        if name in out:
            continue
        stem = safe_part(str(name).strip("/\\").replace("/", "_").replace("\\", "_"))
        stem = stem.encode("utf-8", "surrogateescape")[:100].decode("utf-8", "ignore") or "layer"
        if stem.lower() in _RESERVED or stem.lower().startswith("weights-"):
            stem = "layer-" + stem
        base, k = stem, 2
        while stem.lower() in taken:
            stem, k = f"{base}-{k}", k + 1
        taken.add(stem.lower())
        out[name] = stem
    return out


class _Card(NamedTuple):
    title: str
    shape: str
    src: str
    caption: str
    about: str = ""
    table: str = ""
    wide: bool = False
    photo: bool = False


_STYLE = ("body{background:#181818;color:#eee;font-family:system-ui,sans-serif;margin:1.2em 1.5em}"
          "h1{font-size:1.35em;margin:0 0 .5em}"
          ".grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,340px),1fr));gap:14px;"
          "align-items:start}"
          "figure{margin:0;background:#202020;border:1px solid #333;border-radius:6px;padding:10px}"
          "figure.wide{grid-column:1/-1}"
          "h2{font-size:1em;margin:0 0 .45em;font-weight:600;overflow-wrap:anywhere}"
          "h2 small{color:#aaa;font-weight:400}"
          "img{display:block;width:100%;height:auto;image-rendering:pixelated;background:#181818}"
          "img.photo{image-rendering:auto}"
          "figure.wide img{width:auto;max-width:100%}"
          "figcaption{color:#bbb;font-size:.85em;margin-top:.45em;line-height:1.35}"
          ".pred{font-size:1.2em;margin:.2em 0 .8em}.note{color:#bbb}a{color:#9cf}"
          "table.k{border-collapse:collapse;font:12px ui-monospace,monospace;margin-top:.45em}"
          "table.k td{border:1px solid #444;padding:1px 6px;text-align:right}"
          ".index figure img{aspect-ratio:1;object-fit:contain}")


def _prediction_html(prediction: dict | None) -> str:
    from .nn.predict import probability_text

    if prediction is None:
        return ""
    e = html.escape
    top = ", ".join(f"{e(str(c))} {probability_text(p)}" for c, p in prediction.get("top", []))
    best = probability_text(prediction["probability"])
    return (f'<p class="pred">prediction: <b>{e(str(prediction["class"]))}</b> ({best})'
            + (f"; top: {top}" if top else "") + "</p>")


def _page(heading: str, lead: str, cards: list[_Card], notes: list[str], npz: bool) -> str:
    from urllib.parse import quote

    e = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>cnnfilter feature maps: {e(heading)}</title>", f"<style>{_STYLE}</style></head><body>",
             f"<h1>{e(heading)}</h1>", lead, '<main class="grid">']
    for c in cards:
        cls = " ".join(k for k, on in (("wide", c.wide),) if on)
        about = f" · {e(c.about)}" if c.about else ""
        parts.append(f'<figure{f" class={cls!r}" if cls else ""}><h2>{e(c.title)} <small>{e(c.shape)}{about}'
                     f'</small></h2><img src="{e(quote(c.src))}" alt="{e(c.title)}"'
                     f'{" class=photo" if c.photo else ""} loading="lazy"><figcaption>{e(c.caption)}</figcaption>'
                     f"{c.table}</figure>")
    parts.append("</main>")
    parts += [f'<p class="note">{n}</p>' for n in notes]
    links = '<a href="summary.json">summary.json</a>' + (' · <a href="activations.npz">activations.npz</a>'
                                                          if npz else "")
    parts.append(f"<p>{links}</p></body></html>")
    return "\n".join(parts) + "\n"


INDEX_MARK = '<meta name="generator" content="cnnfilter featuremaps index">'


def write_index(out_dir, reports: list[tuple[str, str]], failures: list[tuple[str, str]] = ()) -> Path | None:
    """``out_dir/index.html``: a page linking every image's report (``(image name, folder relative to
    out_dir)``), each with its input and prediction (read from the report's own summary.json), and the images
    that failed. An ``index.html`` that cnnfilter did not write is left alone (None is returned)."""
    from urllib.parse import quote

    out = Path(out_dir)
    index = out / "index.html"
    if index.exists():
        try:
            with open(index, "rb") as fh:
                if INDEX_MARK.encode() not in fh.read(4096):
                    return None
        except OSError:
            return None
    e = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', INDEX_MARK,
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>cnnfilter: {len(reports)} reports</title>",
             f"<style>{_STYLE}.grid{{grid-template-columns:repeat(auto-fill,minmax(150px,1fr))}}"
             ".index figcaption{overflow-wrap:anywhere}</style>"  # a long file name wraps inside its card
             "</head><body>", f"<h1>Feature maps of {len(reports)} image(s)</h1>", '<main class="grid index">']
    for name, rel in reports:
        pred = ""
        try:
            with open(out / rel / "summary.json", "rb") as fh:
                p = json.loads(fh.read(1 << 20)).get("prediction")
            if isinstance(p, dict) and "class" in p:
                from .nn.predict import probability_text

                pred = f"{p['class']} ({probability_text(float(p.get('probability', 0)))})"
        except (OSError, ValueError, TypeError):
            pass
        href = quote(Path(rel).as_posix())
        parts.append(f'<figure><a href="{e(href)}/index.html"><img src="{e(href)}/input.png" alt="{e(name)}" '
                     f'loading="lazy"></a><figcaption><a href="{e(href)}/index.html">{e(name)}</a>'
                     + (f"<br>{e(pred)}" if pred else "") + "</figcaption></figure>")
    parts.append("</main>")
    if failures:
        parts.append("<h2>Failed</h2><ul>" + "".join(f"<li>{e(n)}: {e(w)}</li>" for n, w in failures) + "</ul>")
    parts.append("</body></html>")
    _text("\n".join(parts) + "\n", index)
    return index


class Report:
    """What ``featuremaps`` draws for each image, as an object a batch's workers receive: a model's layers
    (``model``, a :class:`cnnfilter.nn.ModelSource`, and ``layers``, the ``--layers`` selection) or a bank of
    named kernels (``bank``), and how they are drawn (``resize``, ``normalize``, ``colormap``, ``tile_size``,
    ``separate``, ``npz``, ``all_weights``: the options of :func:`write_report`). Checked when made: the model
    opens and the layers and kernels exist. :func:`report_file` is the unit of work."""

    def __init__(self, model=None, *, layers: str | None = None, bank=DEFAULT_BANK, resize: str = "stretch",
                 normalize: str = "map", colormap: str | None = None, tile_size: int | None = None,
                 separate: bool = False, npz: bool = False, all_weights: bool = False):
        self.model, self.layers, self.bank = model, layers, tuple(bank)
        self.resize, self.normalize, self.colormap, self.tile_size = resize, normalize, colormap, tile_size
        self.separate, self.npz, self.all_weights = separate, npz, all_weights
        if model is None:
            _bank_kernels(self.bank)  # every kernel exists, at least one
        else:
            self.wanted()

    def opened(self):
        """The model, opened once per process."""
        return self.model.open()

    def wanted(self) -> list[str]:
        return select_layers(self.opened(), self.layers)


def same_values(net, names) -> dict[str, str]:
    """Layers among ``names`` whose output holds their input's values, rearranged (Flatten, Dropout at
    inference, Reshape, ...), each mapped to the first layer before it with the same values (or ``input``)."""
    made = {n.outputs[0]: n for n in net.nodes}
    out = {}
    for name in names:
        node = made.get(name)
        if node is None or node.op not in PASS_THROUGH or not node.inputs:
            continue
        src = node.inputs[0]
        while src in out:
            src = out[src]
        out[name] = src if src in made else "input"
    return out


def report_file(source, target, *, report: Report) -> str | None:
    """One image's report: ``target`` (a folder) gets what :func:`write_report` writes, for the model's layers or
    the kernel bank that ``report`` names. The unit of work of a ``featuremaps`` batch. Returns how the image was
    converted or resized to meet the model's input, in words (:func:`cnnfilter.nn.predict.fit_note`), or None."""
    path = Path(source)
    options = {"normalize": report.normalize, "colormap_name": report.colormap, "separate": report.separate,
               "npz": report.npz}
    if report.model is None:
        write_bank_report(target, path, list(report.bank), title=path.name, **options)
        return
    from .nn.predict import fit_note, load_input

    mdl = report.opened()
    wanted = report.wanted()
    image = load_input(path)  # read once: what it is told (the note) and what the model is fed
    note = fit_note(mdl, image, report.resize)
    x = prepare_input(mdl, image, report.resize, loaded=True)
    net = mdl.for_size(*x.shape[1:]).net  # a free-size model runs at the image's own size
    acts = net.activations(mdl.normalize(x[None]))
    pred = None
    if mdl.classes:  # a classifier (a network whose output is a map predicts nothing)
        probs = mdl.to_probabilities(acts[mdl.output_name])[0]
        order = np.argsort(-probs, kind="stable")[:3]
        pred = {"class": mdl.classes[order[0]], "probability": float(probs[order[0]]),
                "top": [(mdl.classes[i], float(probs[i])) for i in order]}
    acts = {n: a[0] for n, a in acts.items() if n in wanted}
    convs = [(n, lay) for n, lay in zip(net.names, net.layers) if hasattr(lay, "cout")]
    weights = {n: lay.weight for n, lay in (convs if report.all_weights else convs[:1])}
    signed = {n for n, lay in zip(net.names, net.layers) if lay.params()}
    signed |= {n for n, a in acts.items() if (a < 0).any()}  # e.g. pooling before a ReLU
    same = {} if report.layers is not None else {n: s for n, s in same_values(net, list(acts)).items()
                                                 if s in acts or s == "input"}
    about = {n: rep for n, rep, _, _ in net.summary()}
    write_report(target, input_image=x, acts=acts, title=path.name, prediction=pred, weights=weights,
                 labels={mdl.output_name: list(mdl.classes)}, tile_size=report.tile_size,
                 signed_layers=None if report.normalize == "map" else signed, same=same, about=about, **options)
    return note
