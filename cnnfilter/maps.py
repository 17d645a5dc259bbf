"""Feature maps: every layer's activations for an image, drawn as montages a person wants to look at.

``featuremaps(model, image)`` gives the activations; ``montage(maps)`` draws one layer's channels as a grid of
tiles (nearest-neighbour upscaled, a thin gutter, the channel index on each tile, the layer name and shape on top,
a colour bar with the value range below). ``write_report`` writes a folder per image: the montages, the first
convolution's filters, ``summary.json``, optionally the raw activations and one PNG per channel, and an
``index.html`` that shows them in order.
"""

from __future__ import annotations

import functools
import html
import itertools
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORMAPS = ("gray", "viridis", "magma", "inferno", "coolwarm")
NORMALIZE = ("map", "layer", "none")
RESIZE = ("stretch", "fit", "pad")
DEFAULT_BANK = ("identity", "sharpen", "edge", "laplacian", "sobel-x", "sobel-y", "blur", "emboss")

GUTTER = 2  # pixels between tiles
BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
_TEXT16 = np.array(TEXT, np.uint16)


@functools.cache
def colormap(name: str) -> np.ndarray:
    """The 256 x 3 uint8 lookup table of ``name`` (data files in cnnfilter/colormaps)."""
    if name not in COLORMAPS:
        msg = f"colormap {name!r} is not one of {', '.join(COLORMAPS)}"
        raise ValueError(msg)
    text = (Path(__file__).resolve().parent / "colormaps" / f"{name}.txt").read_text()
    rows = [line.split() for line in text.splitlines() if line and not line.startswith("#")]
    return np.asarray(rows, np.uint8).reshape(256, 3)


@functools.cache
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def _grid(n: int, columns: int | None = None) -> tuple[int, int]:
    """``(rows, cols)`` of a near-square grid for ``n`` tiles: 1 -> 1x1, 3 -> 2x2, 8 -> 3x3, 16 -> 4x4, 17 -> 4x5."""
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


ROBUST_PIXELS = 4096  # maps larger than this are scaled to their 0.5..99.5 percentiles: a few outliers do not
# wash out the rest (edge responses are mostly near 0 with rare strong peaks)


def scale_maps(maps: np.ndarray, normalize: str = "map", signed=None):
    """Values -> 0..1 for the colormap, and whether each channel is signed (drawn with a diverging map).

    ``map``: each channel's own range; ``layer``: one range for all channels; ``none``: the raw values, clipped to
    0..1 (-1..1 when signed). A signed range is symmetric, -p..p, so that 0 stays in the middle. The range is
    min..max, or the 0.5..99.5 percentiles for maps over 4,096 pixels. ``signed`` None decides per channel (any
    negative value), ``map`` mode only; else one bool for all. A constant map gives 0.5 when signed, 1 when
    positive, 0 when zero: never a division by zero. Returns ``(scaled (C, H, W), (lo, hi) or None for map,
    signed per channel (C,) bool)``.
    """
    m = np.asarray(maps, np.float64)
    if m.ndim == 2:
        m = m[None]
    if normalize not in NORMALIZE:
        msg = f"normalize {normalize!r} is not one of {', '.join(NORMALIZE)}"
        raise ValueError(msg)
    if normalize == "map" and m.shape[1] * m.shape[2] == 1:  # one value per channel (a global pool, an SE gate):
        normalize = "layer"  # its own range would say nothing; one shared range compares the channels
    big = np.finfo(np.float32).max
    m = np.nan_to_num(m, nan=0.0, posinf=big, neginf=-big)
    C = m.shape[0]
    if signed is None:
        neg = (m < 0).reshape(C, -1).any(axis=1)
        sg = neg if normalize == "map" else np.full(C, bool(neg.any()))
    else:
        sg = np.full(C, bool(signed))
    if normalize == "none":
        lo = np.where(sg, -1.0, 0.0)[:, None, None]
        return np.clip((m - lo) / (1.0 - lo), 0, 1), (-1.0 if sg.any() else 0.0, 1.0), sg
    flat = m.reshape(C, -1) if normalize == "map" else m.reshape(1, -1)
    robust = flat.shape[1] > ROBUST_PIXELS
    lo = np.percentile(flat, 0.5, axis=1) if robust else flat.min(axis=1)
    hi = np.percentile(flat, 99.5, axis=1) if robust else flat.max(axis=1)
    peak = np.maximum(np.abs(lo), np.abs(hi))
    if normalize == "layer":
        lo, hi, peak = np.full(C, lo[0]), np.full(C, hi[0]), np.full(C, peak[0])
    lo = np.where(sg, -peak, lo)[:, None, None]
    hi = np.where(sg, peak, hi)[:, None, None]
    span = hi - lo
    const = np.where(sg[:, None, None], 0.5, np.where(hi > 0, 1.0, 0.0))
    out = np.where(span > 0, (m - lo) / np.where(span > 0, span, 1), const)
    rng = None if normalize == "map" else (float(lo.min()), float(hi.max()))
    return np.clip(out, 0, 1), rng, sg


MAX_TILES = 1024  # tiles of one montage: enough to see a layer, few enough to draw in bounded memory and time
MAX_REPORT_TILES = 16_384  # tiles of one image's report (every layer's montage)
MAX_REPORT_FILES = 4_096  # per-channel files of one image's report (--separate)


def montage(maps, *, tile_size: int | None = None, normalize: str = "map", colormap_name: str | None = None,
            signed: bool | None = None, title: str | None = None, labels: list[str] | None = None,
            columns: int | None = None) -> Image.Image:
    """Draw ``maps`` (C, H, W) — or (H, W), or a vector (N,), one cell per unit — as a grid of tiles.

    Each tile is the channel upscaled with nearest-neighbour by the integer factor that brings its longer side to
    at least ``tile_size`` (default 96 px, 64 above 16 channels, 48 above 64; maps larger than 4 * tile_size are
    subsampled),
    with the channel index (or ``labels``) written on it; ``title`` goes on top and a colour bar with the range
    below. Signed maps get the diverging ``coolwarm`` centred at 0, others ``viridis``, unless ``colormap_name``.
    """
    m = np.asarray(maps, np.float32)
    show_labels = True
    if m.ndim == 1:  # a dense layer: one cell per unit (class names as labels for the last one)
        m = m.reshape(-1, 1, 1)
        if tile_size is None:
            tile_size = 40 if m.shape[0] <= 32 else 12
        show_labels = tile_size >= 24
        if normalize == "map":  # one value per unit: only a shared range means anything
            normalize = "layer"
    elif m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.size == 0:
        msg = f"maps have shape {np.shape(maps)}; expected (C, H, W), (H, W) or (N,)"
        raise ValueError(msg)
    if m.shape[0] > MAX_TILES:  # a layer of 100,000 channels: its first tiles, and the title says so
        title = f"{title or ''}  (the first {MAX_TILES} of {m.shape[0]})".strip()
        m, labels = m[:MAX_TILES], None if labels is None else list(labels)[:MAX_TILES]
    C, H, W = m.shape
    target = tile_size or (96 if C <= 16 else 64 if C <= 64 else 48)  # big grids get smaller tiles
    factor = max(1, target // max(H, W)) if max(H, W) <= target else 1
    shrink = max(1, math.ceil(max(H, W) / (4 * target))) if max(H, W) > 4 * target else 1
    th, tw = (H * factor) // shrink, (W * factor) // shrink
    if shrink > 1:  # subsample before scaling and colouring: memory and time follow the tiles, not the maps
        m, shrink = m[:, ::shrink, ::shrink], 1
    rows, cols = _grid(C, columns)
    from .limits import check_memory

    canvas_bytes = 3.0 * (rows * (th + 20) + 70) * max(cols * (tw + GUTTER), 260)
    check_memory(4 * canvas_bytes + 24.0 * m.size, f"a montage of {C} tiles of {th}x{tw} pixels")
    scaled, rng, sg = scale_maps(m, normalize, signed)
    luts = {True: colormap(colormap_name or "coolwarm"), False: colormap(colormap_name or "viridis")}
    label_h = 14 if show_labels else 0
    head = 24 if title else 4
    bar_h = 34
    width = max(cols * (tw + GUTTER) + GUTTER, 260)
    height = head + rows * (th + label_h + GUTTER) + GUTTER + bar_h
    idx = np.rint(scaled * 255).astype(np.uint8)
    rgb = np.where(sg[:, None, None, None], luts[True][idx], luts[False][idx])  # (C, H, W, 3)
    rgb = rgb.repeat(factor, axis=1).repeat(factor, axis=2)[:, ::shrink, ::shrink][:, :th, :tw]
    cell_h, cell_w = th + label_h + GUTTER, tw + GUTTER
    cells = np.empty((rows * cols, cell_h, cell_w, 3), np.uint8)
    cells[:] = BACKGROUND
    cells[:C, label_h : label_h + th, :tw] = rgb
    grid = cells.reshape(rows, cols, cell_h, cell_w, 3).transpose(0, 2, 1, 3, 4).reshape(rows * cell_h, cols * cell_w, 3)
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = BACKGROUND
    canvas[head : head + grid.shape[0], GUTTER : GUTTER + grid.shape[1]] = grid
    if show_labels:
        for c in range(C):
            r, k = divmod(c, cols)
            mask = _label_mask(labels[c] if labels else str(c))
            y0, x0 = head + r * cell_h + 1, GUTTER + k * cell_w + 1
            h, w = min(mask.shape[0], label_h - 1), min(mask.shape[1], cell_w - 1)
            region = canvas[y0 : y0 + h, x0 : x0 + w]
            a = mask[:h, :w, None].astype(np.uint16)
            region[:] = ((region * (255 - a) + _TEXT16 * a + 127) // 255).astype(np.uint8)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((GUTTER + 2, 4), title, fill=TEXT, font=_font(14))
    kind = bool(sg.mean() >= 0.5)  # the bar of the majority; a note names the other when both occur
    mixed = bool(sg.any() and not sg.all()) and colormap_name is None
    _colour_bar(draw, img, luts[kind], rng, kind, normalize, y=height - bar_h + 6, width=width, mixed=mixed)
    return img


@functools.cache
def _label_mask(text: str) -> np.ndarray:
    """The coverage (0..255) of ``text`` in the 11-px label font, rendered once per distinct label."""
    font = _font(11)
    box = font.getbbox(text)
    im = Image.new("L", (max(1, box[2]) + 1, max(1, box[3]) + 1), 0)
    ImageDraw.Draw(im).text((0, 0), text, fill=255, font=font)
    return np.asarray(im)


def _colour_bar(draw, img, lut, rng, signed, normalize, *, y: int, width: int, mixed: bool = False) -> None:
    x0, x1 = 10, min(width - 10, 250)
    ramp = lut[np.linspace(0, 255, x1 - x0).astype(int)][None].repeat(10, axis=0)
    img.paste(Image.fromarray(np.ascontiguousarray(ramp)), (x0, y))
    small = _font(11)
    if rng is None:
        left, right = ("-max|v|", "+max|v|") if signed else ("min", "max")
        note = "each tile scaled to its own range"
        if mixed:
            note += "; tiles without negative values: viridis" if signed else "; signed tiles: coolwarm, 0 = grey"
    else:
        left, right = f"{rng[0]:.3g}", f"{rng[1]:.3g}"
        note = "shared range" if normalize == "layer" else "raw values"
    draw.text((x0, y + 12), left, fill=TEXT, font=small)
    draw.text((x1, y + 12), right, fill=TEXT, font=small, anchor="ra")
    if signed:
        draw.text(((x0 + x1) // 2, y + 12), "0", fill=TEXT, font=small, anchor="ma")
    if width - x1 > 120:
        draw.text((x1 + 10, y), note, fill=TEXT, font=small)


def prepare_input(model, image, resize: str = "stretch") -> np.ndarray:
    """An image (path, Pillow image or array) as the model's input ``(C, H, W)`` in 0..1. ``stretch`` resizes to
    the input size; ``fit`` keeps the aspect ratio and pads with black; ``pad`` does not scale: the image is
    centred on a black canvas (cropped when larger)."""
    from .nn.data import to_array
    from .nn.predict import prepare

    if resize not in RESIZE:
        msg = f"resize {resize!r} is not one of {', '.join(RESIZE)}"
        raise ValueError(msg)
    if resize == "stretch" or model.free_size:  # a free_size model takes the image as it is
        return prepare(model, image)
    C, H, W = model.input_shape
    if isinstance(image, (str, Path)):
        from .nn.predict import load_input

        image = load_input(image)
        if isinstance(image, np.ndarray):  # a 16-bit colour PNG: 8 bits are plenty for a model's input
            image = Image.fromarray(np.clip(np.rint(image * 255), 0, 255).astype(np.uint8), "RGB")
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
    for name, lay in zip(names, model.net.layers):
        node = getattr(lay, "node", None)
        ops.setdefault((node.op if node is not None else type(lay).__name__).lower(), []).append(name)
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


def bank(image, kernels=DEFAULT_BANK, *, border: str = "reflect") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """A convolution layer built from named kernels: ``(grey input 0..1 (H, W), maps (K, H, W), names)``."""
    from .io import Picture, read_picture
    from .kernels import resolve_kernel
    from .ops import apply_kernel, to_gray

    from .limits import check_memory

    names = [k.strip() for k in kernels.split(",")] if isinstance(kernels, str) else list(kernels)
    px = read_picture(image).pixels if isinstance(image, (str, Path)) else np.asarray(image)
    check_memory(4.0 * (len(names) + 3) * px.shape[0] * px.shape[1],
                 f"a bank of {len(names)} maps of a {px.shape[0]}x{px.shape[1]} image")
    scale = 65535.0 if px.dtype == np.uint16 else (255.0 if px.dtype == np.uint8 else 1.0)
    grey = to_gray(Picture(px[:, :, :3] if px.ndim == 3 else px)).pixels.astype(np.float32) / scale
    maps = np.empty((len(names), *grey.shape), np.float32)  # filled map by map: never the bank twice
    for i, name in enumerate(names):
        maps[i] = apply_kernel(grey, resolve_kernel(name)[1], border=border)
    return grey, maps, names


def summarize(acts: dict[str, np.ndarray]) -> list[dict]:
    """Per layer: name, shape, min, max, mean and the fraction of exact zeros (dead ReLUs)."""
    return [{"layer": n, "shape": list(a.shape), "min": float(a.min()), "max": float(a.max()),
             "mean": float(a.mean()), "zero_fraction": float(np.mean(a == 0))} for n, a in acts.items()]


def _png(img: Image.Image, path: Path) -> None:
    from .outputs import atomic_file

    with atomic_file(path) as fh:
        img.save(fh, format="PNG", compress_level=1)


def _text(text: str, path: Path) -> None:
    from .outputs import atomic_file

    with atomic_file(path) as fh:
        fh.write(text.encode("utf-8", "replace"))  # a file name that is not UTF-8 becomes '?'


def _folder(out: Path, *parts: str) -> Path:
    """``out/parts`` created, checked to lie inside ``out`` (a symbolic link in a report folder cannot send files
    elsewhere), with the temporaries of killed runs removed."""
    from .outputs import inside, remove_stale_in

    folder = out.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    inside(folder, out)
    remove_stale_in(folder)
    return folder


def write_report(out_dir, *, input_image: np.ndarray, acts: dict[str, np.ndarray], title: str,
                 prediction: dict | None = None, weights: dict[str, np.ndarray] | None = None,
                 labels: dict[str, list[str]] | None = None, tile_size: int | None = None, normalize: str = "map",
                 colormap_name: str | None = None, separate: bool = False, npz: bool = False,
                 signed_layers: set[str] | None = None) -> Path:
    """Write one image's feature maps into ``out_dir`` (created): ``input.png``, ``<layer>.png`` montages,
    ``weights-<layer>.png``, ``channels/<layer>-<c>.png`` (``separate``), ``activations.npz`` (``npz``),
    ``summary.json`` and ``index.html``. Returns the folder."""
    from .limits import LimitError

    tiles = sum(min(int(np.shape(a)[0]) if np.ndim(a) == 3 else 1, MAX_TILES) for a in acts.values())
    files = sum(min(int(np.shape(a)[0]), MAX_TILES) for a in acts.values() if np.ndim(a) == 3) if separate else 0
    if tiles > MAX_REPORT_TILES or files > MAX_REPORT_FILES:
        msg = (f"the report would draw {tiles:,} tiles" + (f" and write {files:,} channel files" if separate else "")
               + f"; at most {MAX_REPORT_TILES:,} tiles and {MAX_REPORT_FILES:,} files: choose layers with --layers")
        raise LimitError(msg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_report(out)  # an earlier report's files, which this one replaces
    _folder(out)
    if separate:
        _folder(out, "channels")  # checked before anything is written
    labels = labels or {}
    inp = np.asarray(input_image, np.float32)
    shown = inp if inp.ndim == 2 else (inp[0] if inp.shape[0] == 1 else inp.transpose(1, 2, 0))
    big = max(shown.shape[:2])
    factor = max(1, 192 // big)
    arr = np.clip(np.rint(shown * 255), 0, 255).astype(np.uint8)
    arr = np.repeat(np.repeat(arr, factor, axis=0), factor, axis=1)
    _png(Image.fromarray(np.ascontiguousarray(arr)), out / "input.png")
    sections = []
    stems = file_stems([*acts, *(weights or {})])
    for name, a in acts.items():
        signed = None if signed_layers is None else name in signed_layers
        shape = "x".join(map(str, a.shape))
        img = montage(a, tile_size=tile_size, normalize=normalize, colormap_name=colormap_name, signed=signed,
                      title=f"{name}  {shape}", labels=labels.get(name))
        stem = stems[name]
        _png(img, out / f"{stem}.png")
        sections.append((name, shape, f"{stem}.png"))
        if separate and a.ndim == 3:
            _folder(out, "channels")
            scaled, _, sg = scale_maps(a, normalize, signed)
            for c in range(min(a.shape[0], MAX_TILES)):
                lut = colormap(colormap_name or ("coolwarm" if sg[c] else "viridis"))
                tile = Image.fromarray(lut[np.rint(scaled[c] * 255).astype(np.uint8)])
                _png(tile, out / "channels" / f"{stem}-{c}.png")
    wsections = []
    for name, w in (weights or {}).items():
        O, C = w.shape[:2]
        tiles = w.reshape(O * C, *w.shape[2:])
        tl = [f"{o}" if C == 1 else f"{o}.{c}" for o, c in
              itertools.islice(((o, c) for o in range(O) for c in range(C)), MAX_TILES)]
        img = montage(tiles, tile_size=48, normalize="layer", colormap_name=colormap_name, signed=True,
                      title=f"{name} filters  {O}x{C}x{w.shape[2]}x{w.shape[3]}", labels=tl, columns=max(C, 8) if C > 1 else None)
        _png(img, out / f"weights-{stems[name]}.png")
        wsections.append((name, f"weights-{stems[name]}.png"))
    summary = {"image": title, "layers": summarize(acts)}
    if any(stems[n] != n for n in acts):  # names that are no file names (ONNX's '/conv1/Conv_output_0')
        summary["files"] = {n: f"{stems[n]}.png" for n in acts}
    if prediction is not None:
        summary["prediction"] = prediction
    _text(json.dumps(summary, indent=1) + "\n", out / "summary.json")
    if npz:
        from .outputs import atomic_file

        with atomic_file(out / "activations.npz") as fh:
            np.savez_compressed(fh, **{stems[n]: np.asarray(a, np.float32) for n, a in acts.items()})
    _text(_html(title, prediction, sections, wsections, npz), out / "index.html")
    written = {"input.png", "summary.json", "index.html", *(src for _, _, src in sections),
               *(src for _, src in wsections), *(["activations.npz"] if npz else [])}
    if separate:
        written |= {f"channels/{stems[n]}-{c}.png" for n, a in acts.items() if a.ndim == 3
                    for c in range(min(a.shape[0], MAX_TILES))}
    for rel in earlier - written:  # layers, filters and channels of the earlier report that this one has not
        (out / rel).unlink(missing_ok=True)
    return out


def _earlier_report(out: Path) -> set[str]:
    """The files of an earlier report in ``out`` (recognised by its index.html): its PNGs, channel PNGs and
    activations, relative to ``out``. A folder that is no report gives nothing: files cnnfilter did not write are
    never removed."""
    index = out / "index.html"
    try:
        with open(index, "rb") as fh:
            if b"<title>cnnfilter feature maps" not in fh.read(4096):
                return set()
    except OSError:
        return set()
    found = {p.name for p in out.glob("*.png") if p.is_file() and not p.is_symlink()}
    found |= {f"channels/{p.name}" for p in out.glob("channels/*.png") if p.is_file() and not p.is_symlink()}
    if (out / "activations.npz").is_file():
        found.add("activations.npz")
    return found


_RESERVED = {"input", "index", "summary", "activations", "channels"}


def file_stems(names) -> dict[str, str]:
    """A file name stem per layer name, unique and safe: a name is data from a model file (an ONNX tensor is
    called '/layer1/conv1/Conv_output_0'), so separators, control characters, leading dots and names of the
    report's own files are replaced, and it is cut to 100 characters."""
    from .outputs import safe_part

    out, taken = {}, set()
    for name in names:
        if name in out:
            continue
        stem = safe_part(str(name).strip("/\\").replace("/", "_").replace("\\", "_"))[:100]
        if stem.lower() in _RESERVED or stem.lower().startswith("weights-"):
            stem = "layer-" + stem
        base, k = stem, 2
        while stem.lower() in taken:
            stem, k = f"{base}-{k}", k + 1
        taken.add(stem.lower())
        out[name] = stem
    return out


def _html(title, prediction, sections, wsections, npz) -> str:
    from urllib.parse import quote

    e = html.escape
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>cnnfilter feature maps: {e(title)}</title>",
             "<style>body{background:#181818;color:#eee;font-family:system-ui,sans-serif;margin:2em}"
             "img{image-rendering:pixelated;max-width:100%;border:1px solid #444}"
             "section{margin:1.5em 0}h2{font-size:1.1em;margin:.3em 0}.pred{font-size:1.3em}"
             "a{color:#9cf}</style></head><body>",
             f"<h1>Feature maps of {e(title)}</h1>",
             '<section><h2>input</h2><img src="input.png" alt="input image"></section>']
    if prediction is not None:
        top = ", ".join(f"{e(str(c))} {p:.3f}" for c, p in prediction.get("top", []))
        parts.append(f'<p class="pred">prediction: <b>{e(str(prediction["class"]))}</b> '
                     f'({prediction["probability"]:.3f})' + (f"; top: {top}" if top else "") + "</p>")
    for name, src in wsections:
        parts.append(f'<section><h2>{e(name)} filters</h2><img src="{e(quote(src))}" alt="{e(name)} filters"></section>')
    for name, shape, src in sections:
        parts.append(f'<section><h2>{e(name)} <small>{e(shape)}</small></h2>'
                     f'<img src="{e(quote(src))}" alt="{e(name)} feature maps"></section>')
    links = '<a href="summary.json">summary.json</a>' + (' · <a href="activations.npz">activations.npz</a>'
                                                          if npz else "")
    parts.append(f"<p>{links}</p></body></html>")
    return "\n".join(parts) + "\n"


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
            from .kernels import resolve_kernel

            for k in self.bank:
                resolve_kernel(k)
        else:
            self.wanted()

    def opened(self):
        """The model, opened once per process."""
        return self.model.open()

    def wanted(self) -> list[str]:
        return select_layers(self.opened(), self.layers)


def report_file(source, target, *, report: Report) -> None:
    """One image's report: ``target`` (a folder) gets what :func:`write_report` writes, for the model's layers or
    the kernel bank that ``report`` names. The unit of work of a ``featuremaps`` batch."""
    path = Path(source)
    options = {"normalize": report.normalize, "colormap_name": report.colormap, "separate": report.separate,
               "npz": report.npz}
    if report.model is None:
        grey, maps, labels = bank(path, list(report.bank))
        write_report(target, input_image=grey, acts={"bank": maps}, title=path.name, labels={"bank": labels},
                     tile_size=report.tile_size or 256, **options)
        return
    mdl = report.opened()
    wanted = report.wanted()
    x = prepare_input(mdl, path, report.resize)
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
    write_report(target, input_image=x, acts=acts, title=path.name, prediction=pred, weights=weights,
                 labels={mdl.output_name: list(mdl.classes)}, tile_size=report.tile_size,
                 signed_layers=None if report.normalize == "map" else signed, **options)
