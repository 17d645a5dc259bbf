"""Pillow <-> numpy: image modes, EXIF orientation, alpha, bit depth, and atomic writes.

Pixel values keep their scale (0..255 for 8-bit, 0..65535 for 16-bit): a filter's numbers are the numbers a person
computes by hand. Writing rounds half-to-even and clips to the output depth. 16-bit RGB, RGBA and grey + alpha
PNGs, which Pillow reads as 8-bit and cannot write, are read and written by ``cnnfilter._png``.
"""

from __future__ import annotations

import ctypes
import functools
import io as _io
import os
import struct
import sys
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from . import _png
from .limits import MAX_JPEG_SCANS, LimitError, check_memory, max_stdin, open_regular, printable, read_capped
from .outputs import WriteError, atomic_file, folder_problem


class ImageReadError(Exception):
    """An input that is missing, unreadable or not an image Pillow can decode."""


ImageWriteError = WriteError  # an output that cannot be written (folder missing, permission, disk full)


class ImageFormatError(ValueError):
    """An output suffix or format name Pillow cannot write: a usage error, found before any work is done."""


@dataclass
class Picture:
    """An image split into colour channels and alpha, as read from a file."""

    pixels: np.ndarray  # (H, W) or (H, W, 3), uint8 / uint16 / float32
    alpha: np.ndarray | None = None  # (H, W), same dtype as pixels
    depth: int = 8  # 8 or 16 bits per sample; 32 for float images
    info: dict = field(default_factory=dict)  # what is carried to the output: icc_profile, dpi
    # (H, W, 4) uint8 of which pixels (and alpha) are views: Pillow's own 4-byte RGB/RGBA layout, which filters
    # read and write in place of a packed copy. Only set by read_picture and the filters; None otherwise.
    lanes: np.ndarray | None = None


def open_image(source) -> Image.Image | Picture:
    """A loaded Pillow image, or a Picture for a 16-bit colour PNG (which Pillow would read as 8-bit). Only regular
    files are opened (a FIFO or a device would hang or never end); standard input is read up to its limit."""
    name = "<stdin>" if source == "-" else printable(str(source))
    fh = None
    try:
        with warnings.catch_warnings():  # Image.open warns about bombs; make that an error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if source == "-":
                if sys.stdin is None:
                    raise ImageReadError("cannot read '-': standard input is closed")
                data = read_capped(sys.stdin.buffer, max_stdin(), "standard input")
                if not data:
                    raise ImageReadError("cannot read '-': standard input is empty")
                if _png.sniff16(data[:33]):
                    return _read_png16(data)
                if data[:2] == b"\xff\xd8":
                    _check_jpeg_scans(_io.BytesIO(data))
                img = Image.open(_io.BytesIO(data))
            elif isinstance(source, (str, os.PathLike)):
                fh = open_regular(source, "image")
                head = fh.read(33)
                if _png.sniff16(head):
                    return _read_png16(head + fh.read())
                if head[:2] == b"\xff\xd8":  # its scans counted a MiB at a time, before Pillow reads it
                    fh.seek(0)
                    _check_jpeg_scans(fh)
                fh.seek(0)
                img = Image.open(fh)
            else:
                img = Image.open(source)
            bands = 4 if img.mode in ("P", "PA") else len(img.getbands())  # palettes become RGB(A)
            _check_decode(img.width, img.height, bands, 4 if img.mode in ("I", "F") else
                          2 if img.mode.startswith("I;16") else 1)
            img.load()
            try:  # counted while the file is open (GIF and TIFF seek for it); the first frame is what is filtered
                frames = int(getattr(img, "n_frames", 1))
                if frames > 1:  # counting moved through the frames: back to the first, loaded while open
                    img.seek(0)
                    img.load()
            except Exception:  # noqa: BLE001 - a broken later frame: the first is still there
                frames = 1
            img.info["frames"] = frames
    except ImageReadError:
        raise
    except LimitError as exc:
        msg = str(exc) if str(exc).startswith("cannot read") else f"cannot read {name!r}: {exc}"
        raise ImageReadError(msg) from None
    except FileNotFoundError:
        raise ImageReadError(f"cannot read {name!r}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"cannot read {name!r}: it is a directory") from None
    except PermissionError:
        raise ImageReadError(f"cannot read {name!r}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageReadError(f"cannot read {name!r}: not an image (or a format Pillow cannot decode)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(
            f"cannot read {name!r}: more pixels than the decompression-bomb limit ({Image.MAX_IMAGE_PIXELS})"
        ) from None
    except OSError as exc:  # truncated or corrupt data; a symlink loop, a name too long
        raise ImageReadError(f"cannot read {name!r}: {printable(exc.strerror or str(exc))}") from None
    except (SyntaxError, ValueError, EOFError, struct.error, MemoryError) as exc:  # corrupt data
        why = "not enough memory to decode it" if isinstance(exc, MemoryError) else printable(str(exc))
        raise ImageReadError(f"cannot read {name!r}: {why or type(exc).__name__}") from None
    finally:
        if fh is not None:
            fh.close()
    return img


# EXIF orientation -> the numpy form of what ImageOps.exif_transpose does (rows first, then columns)
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a),
}


def count_pairs(data: bytes, first: int, second: int, chunk: int = 1 << 20) -> int:
    """How many times the byte ``first`` is directly followed by ``second`` in ``data``: ``bytes.count`` of the
    two-byte string, in numpy a MiB at a time (16 against 110 us for a 130 KB photo; its temporaries stay small
    whatever the file's size)."""
    a = np.frombuffer(data, np.uint8)
    found = 0
    for start in range(0, max(len(a) - 1, 0), chunk):
        part = a[start : start + chunk + 1]  # one byte more: a pair across the chunks' border counts once
        found += int(np.count_nonzero((part[:-1] == first) & (part[1:] == second)))
    return found


def _check_jpeg_scans(fh, chunk: int = 1 << 20) -> None:
    """Refuse a JPEG with more scans than any encoder writes: each progressive scan re-decodes the whole image, so
    a 2.7 MB file of 20,000 scans takes minutes (libjpeg's djpeg has -maxscans for this). ``fh``, a binary file at
    the JPEG's start, is read a chunk at a time (memory stays at one chunk whatever its size), until the scans are
    over the limit or it ends; start-of-scan markers are counted (entropy-coded 0xFF bytes are stuffed: FF 00)."""
    scans, last = 0, b""
    while True:
        part = fh.read(chunk)
        if not part:
            return
        scans += count_pairs(part, 0xFF, 0xDA) + (last == b"\xff" and part[:1] == b"\xda")  # and across the border
        if scans > MAX_JPEG_SCANS:
            raise LimitError(f"a JPEG of at least {scans:,} scans; at most {MAX_JPEG_SCANS:,} are decoded")
        last = part[-1:]


def _check_decode(width: int, height: int, bands: int, sample_bytes: int) -> None:
    """Refuse an image whose decoding and filtering would need more than the memory limit: the decoded samples and
    a float32 working copy and result of each (``--max-memory``; ``--max-pixels`` bounds the pixels alone)."""
    check_memory(float(width) * height * bands * (sample_bytes + 8), f"decoding a {width}x{height} image")


def _read_png16(data: bytes) -> Picture:
    """A 16-bit RGB, RGBA or grey + alpha PNG, decoded by our own codec (Pillow would drop the low bytes)."""
    width, height = _png.png_size(data)
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        raise Image.DecompressionBombError("too many pixels")
    _check_decode(width, height, {2: 3, 4: 2, 6: 4}.get(data[25], 4), 2)
    pixels, alpha, found = _png.read_png16(data)
    info = {k: found[k] for k in ("icc_profile", "dpi") if k in found}
    if "exif" in found:  # an eXIf chunk's orientation, applied as for every other image
        exif = Image.Exif()
        try:
            exif.load(found["exif"])
            turn = _ORIENT.get(exif.get(0x0112, 1))
        except Exception:  # noqa: BLE001 - unreadable EXIF is ignored, as Pillow does
            turn = None
        if turn is not None:
            pixels = np.ascontiguousarray(turn(pixels))
            alpha = None if alpha is None else np.ascontiguousarray(turn(alpha))
    return Picture(pixels, alpha, 16, info)


def read_picture(source) -> Picture:
    """Read an image file (or ``"-"`` for standard input) into a :class:`Picture`.

    Modes: 1 and L become greyscale; LA greyscale + alpha; P, CMYK, YCbCr and others become RGB (RGBA when the
    palette has transparency); I;16 stays 16-bit greyscale; I and F become float32 greyscale. EXIF orientation is
    applied. 16-bit RGB, RGBA and grey + alpha PNGs stay 16-bit (read by ``cnnfilter._png``).
    """
    with warnings.catch_warnings(record=True) as caught:  # Pillow's warnings (corrupt EXIF), named by file
        warnings.simplefilter("always")
        img = open_image(source)
        if isinstance(img, Picture):
            img.info.setdefault("format", "PNG")
            return img
        info = {k: img.info[k] for k in ("icc_profile", "dpi") if k in img.info}
        info["format"] = img.format
        info["frames"] = img.info.get("frames", 1)
        if img.format == "JPEG" and getattr(img, "quantization", None):  # what a JPEG output keeps by default
            from PIL import JpegImagePlugin

            info["quantization"] = img.quantization
            info["subsampling"] = JpegImagePlugin.get_sampling(img)
        try:
            exif = img.getexif()
            if exif.get(0x0112, 1) != 1:  # only an oriented image needs the (copying) transpose
                from PIL import ImageOps  # about 2 ms of start-up that an upright image does not need

                img = ImageOps.exif_transpose(img)
                exif[0x0112] = 1  # applied: the output is upright
        except Exception as exc:  # noqa: BLE001 - EXIF Pillow cannot parse: ignored, as a viewer would
            warnings.warn(f"unreadable EXIF ignored ({printable(str(exc))[:80] or type(exc).__name__})",
                          UserWarning, stacklevel=2)
            exif = Image.Exif()
        if img.format == "TIFF":  # its "EXIF" is the page's own directory: strip offsets, sizes, compression
            exif = _tiff_metadata(exif)
        if len(exif):
            try:
                info["exif"] = exif.tobytes()
            except Exception:  # noqa: BLE001 - an EXIF block Pillow cannot write back is dropped
                pass
    name = "<stdin>" if source == "-" else printable(str(source))
    for w in caught:
        warnings.warn(f"{name!r}: {str(w.message).strip()}", UserWarning, stacklevel=2)
    mode = img.mode
    if mode in ("L", "RGB", "RGBA"):
        view = pillow_view(img)
        if view is not None and mode == "L":
            return Picture(view, None, 8, info)
        if view is not None:
            return Picture(view[:, :, :3], view[:, :, 3] if mode == "RGBA" else None, 8, info, lanes=view)
    if mode in ("1", "L"):
        return Picture(np.asarray(img if mode == "L" else img.convert("L")), None, 8, info)
    if mode in ("LA", "La"):
        arr = np.asarray(img.convert("LA"))
        return Picture(arr[:, :, 0].copy(), arr[:, :, 1].copy(), 8, info)
    if mode.startswith("I;16"):
        return Picture(np.asarray(img).astype(np.uint16), None, 16, info)
    if mode in ("I", "F"):
        return Picture(np.asarray(img).astype(np.float32), None, 32, info)
    has_alpha = mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in img.info)
    if has_alpha:
        arr = np.asarray(img if mode == "RGBA" else img.convert("RGBA"))
        return Picture(arr[:, :, :3].copy(), arr[:, :, 3].copy(), 8, info)
    return Picture(np.asarray(img if mode == "RGB" else img.convert("RGB")), None, 8, info)


#: what a TIFF page's directory says about the picture rather than its storage: description, make, model,
#: software, date, artist, copyright
_TIFF_DESCRIPTIVE = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)


def _tiff_metadata(tags: Image.Exif) -> Image.Exif:
    """The camera and author metadata of a TIFF page (its descriptive tags, EXIF and GPS directories), without the
    tags that describe the page's storage: written back into another file, those would describe the wrong data
    (and a BigTIFF's 8-byte offsets made Pillow's TIFF writer fail)."""
    kept = Image.Exif()
    for tag in _TIFF_DESCRIPTIVE:
        if tag in tags:
            kept[tag] = tags[tag]
    for ifd in (0x8769, 0x8825):  # EXIF, GPS
        try:
            values = tags.get_ifd(ifd)
        except Exception:  # noqa: BLE001 - a damaged sub-directory is dropped
            continue
        if values:
            kept.get_ifd(ifd).update(values)
    return kept


class _ArrowArray(ctypes.Structure):
    """The Arrow C data interface's ArrowArray (a stable ABI), as Pillow's ``__arrow_c_array__`` exports it."""


_ArrowArray._fields_ = [
    ("length", ctypes.c_int64), ("null_count", ctypes.c_int64), ("offset", ctypes.c_int64),
    ("n_buffers", ctypes.c_int64), ("n_children", ctypes.c_int64), ("buffers", ctypes.POINTER(ctypes.c_void_p)),
    ("children", ctypes.POINTER(ctypes.POINTER(_ArrowArray))), ("dictionary", ctypes.POINTER(_ArrowArray)),
    ("release", ctypes.c_void_p), ("private_data", ctypes.c_void_p)]


_CAPSULE_POINTER = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi))  # a prototype of our own: the shared pythonapi one is not changed


def pillow_view(img: Image.Image) -> np.ndarray | None:
    """A read-only numpy view of a loaded L, RGB or RGBA image's own memory, without the copy ``np.asarray``
    makes (``tobytes`` packs RGB to 3 bytes, ~3 ms for a 1024x768 photo, more than decoding it): ``(H, W)`` for
    L, ``(H, W, 4)`` for RGB (the 4th byte is padding) and RGBA. None when Pillow cannot export it (before
    Pillow 11.2, an image larger than one memory block, rows not evenly spaced) or when the image is a memory map
    of its file (an uncompressed PPM or TIFF opened by name), which a later write to the file would change. The
    view keeps the image's memory alive; copy it to edit."""
    if not hasattr(img, "__arrow_c_array__") or img.mode not in ("L", "RGB", "RGBA") or getattr(img, "readonly", 0):
        return None
    try:
        _schema, capsule = img.__arrow_c_array__()
        address = _CAPSULE_POINTER(capsule, b"arrow_array")
    except (ValueError, OSError, TypeError, AttributeError):  # rows not in one block: no single buffer to share
        return None
    head = ctypes.cast(address, ctypes.POINTER(_ArrowArray)).contents
    bands = 1 if img.mode == "L" else 4
    data = head if head.n_children == 0 else head.children[0].contents
    width, height = img.size
    n = width * height * bands
    if data.n_buffers < 2 or not data.buffers[1] or data.length - data.offset < n or head.length != width * height:
        return None
    raw = (ctypes.c_uint8 * n).from_address(data.buffers[1] + data.offset)
    raw.capsule = capsule  # released (and Pillow's memory with it) when the last view goes
    view = np.frombuffer(raw, np.uint8).reshape((height, width) if bands == 1 else (height, width, 4))
    view.flags.writeable = False
    return view


def _lanes_image(lanes: np.ndarray, alpha: bool) -> Image.Image:
    """An RGBA (``alpha``) or RGBX Pillow image sharing the memory of a C-contiguous ``(H, W, 4)`` uint8 array."""
    mode = "RGBA" if alpha else "RGBX"
    return Image.frombuffer(mode, (lanes.shape[1], lanes.shape[0]), lanes, "raw", mode, 0, 1)


def to_depth(values: np.ndarray, depth: int) -> np.ndarray:
    """Round half-to-even and clip to the range of ``depth`` bits (uint8 or uint16); float32 for 32."""
    if depth == 32:
        return np.asarray(values, np.float32)
    top = 255 if depth == 8 else 65535
    work = np.rint(values)  # one temporary, rounded, clipped and (rarely) cleaned in place
    np.clip(work, 0, top, out=work)
    if work.dtype.kind == "f" and np.isnan(work).any():
        np.nan_to_num(work, copy=False, nan=0.0)
    return work.astype(np.uint8 if depth == 8 else np.uint16)


def _format_for(path: str, fmt: str | None) -> str:
    # Pillow registers its formats lazily: preinit() loads the common five (PNG, JPEG, GIF, BMP, PPM) at once,
    # init() every plugin (some 50 ms); a fresh process needs one of them before Image.SAVE knows anything.
    Image.preinit()
    if fmt:
        name = fmt.upper()
        name = {"JPG": "JPEG", "TIF": "TIFF"}.get(name, name)
        if name not in Image.SAVE:
            Image.init()
        if name not in Image.SAVE:  # an extension's name (apng, j2k): the format that writes it
            name = Image.registered_extensions().get("." + fmt.lower(), name)
        if name not in Image.SAVE:
            exts = Image.registered_extensions()
            known = ", ".join(sorted(e.lstrip(".") for e, f in exts.items() if f in Image.SAVE))
            raise ImageFormatError(f"format {fmt!r} is not one Pillow can write ({known})")
        if not _holds_images(name):
            raise ImageFormatError(f"format {fmt!r} cannot hold greyscale or RGB images here (Pillow writes it "
                                   "for other kinds of data only, or lacks its plugin)")
        return name
    ext = Path(path).suffix.lower()
    found = Image.EXTENSION.get(ext)
    if not found or found not in Image.SAVE:
        found = Image.registered_extensions().get(ext)  # loads every plugin
    if not found or found not in Image.SAVE:
        msg = f"cannot write {path!r}: unknown image suffix {ext or '(none)'!r}; use .png, .jpg, .tif, ..."
        raise ImageFormatError(msg)
    return found


LOSSY = ("JPEG", "WEBP")  # the formats --quality means something for


def _writable(fmt: str | None) -> str | None:
    """``fmt`` when Pillow can write it, else None."""
    if not fmt:
        return None
    Image.preinit()
    if fmt not in Image.SAVE:
        Image.init()
    return fmt if fmt in Image.SAVE else None


def same_ext(path) -> str:
    """The extension an output of ``path`` keeps by default: its own (lower case) when Pillow can write that
    format, else ``png``."""
    ext = Path(path).suffix.lower()
    Image.preinit()
    return ext.lstrip(".") if _writable(Image.EXTENSION.get(ext) or Image.registered_extensions().get(ext)) else "png"


@functools.cache
def _holds_images(fmt: str) -> bool:
    """Whether Pillow writes a 1x1 greyscale or RGB image in ``fmt`` (BUFR, GRIB, HDF5 need plugins; XBM and MSP
    take 1-bit images only)."""
    for mode in ("L", "RGB"):
        try:
            Image.new(mode, (1, 1)).save(_io.BytesIO(), format=fmt)
            return True
        except Exception:  # noqa: BLE001 - any refusal means no
            continue
    return False


def suffix_for(fmt: str | None) -> str:
    """The file suffix written for a format name (``png`` without one): ``jpg`` for JPEG, ``tif`` for TIFF."""
    if not fmt:
        return "png"
    name = check_target("-", fmt)
    Image.init()
    exts = [e for e, f in Image.registered_extensions().items() if f == name]
    preferred = {"JPEG": ".jpg", "TIFF": ".tif", "PNG": ".png", "WEBP": ".webp"}.get(name)
    return (preferred or (exts[0] if exts else "." + name.lower())).lstrip(".")


def format_of(path) -> str | None:
    """The format a path's suffix writes (PNG without one), or None when Pillow writes no such format."""
    try:
        return check_target("-", Path(path).suffix.lstrip(".") or "png")
    except (ValueError, OSError):
        return None


def check_target(target, fmt: str | None = None) -> str:
    """The Pillow format ``target`` will be written in; raises ImageWriteError before any work is done when the
    suffix or format is unknown or the folder does not exist."""
    if target == "-":
        return _format_for("out.png", fmt or "PNG")
    name = _format_for(str(target), fmt)
    problem = folder_problem(target)
    if problem is not None:
        raise ImageWriteError(problem)
    return name


def _samples(pic: Picture) -> tuple[np.ndarray, np.ndarray | None]:
    """``pic``'s pixels and alpha as stored: rounded and clipped to uint8 / uint16 unless they already are."""
    px, alpha = pic.pixels, pic.alpha
    if pic.depth in (8, 16):
        px = px if px.dtype.kind == "u" else to_depth(px, pic.depth)
        alpha = alpha if alpha is None or alpha.dtype.kind == "u" else to_depth(alpha, pic.depth)
    return px, alpha


def to8(values: np.ndarray) -> np.ndarray:
    """16-bit samples to 8-bit, to the nearest (65535 -> 255; x / 257 is never a tie)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def to_image(pic: Picture, fmt: str) -> Image.Image:
    """A Pillow image for ``pic``, in a mode ``fmt`` can store: alpha dropped for JPEG; 16-bit greyscale kept for
    PNG/TIFF; other 16-bit images rounded to 8-bit, as Pillow has no 16-bit colour or grey + alpha mode (it also
    reads 16-bit colour TIFFs as 8-bit). write_picture writes 8- and 16-bit PNGs itself, without this."""
    if own_lanes(pic):  # Pillow's own layout, shared: no packing copy
        img = _lanes_image(pic.lanes, pic.alpha is not None and fmt not in ("JPEG", "BMP", "PPM"))
        return img if fmt in ("JPEG", "WEBP") or img.mode == "RGBA" else img.convert("RGB")
    px, alpha = _samples(pic)
    if pic.depth == 32:
        if fmt == "TIFF" and px.ndim == 2:
            return Image.fromarray(np.ascontiguousarray(px, np.float32))  # mode F
        px = to_depth(px, 8)
        alpha = None if alpha is None else to_depth(alpha, 8)
    if px.dtype == np.uint16:
        if px.ndim == 2 and alpha is None and fmt in ("PNG", "TIFF"):
            return Image.fromarray(np.ascontiguousarray(px))  # mode I;16
        px = to8(px)
        alpha = None if alpha is None else to8(alpha)
    if fmt in ("JPEG", "BMP", "PPM") or alpha is None:
        return Image.fromarray(np.ascontiguousarray(px))  # L or RGB from the shape
    return Image.fromarray(np.ascontiguousarray(np.dstack([px, alpha])))  # LA or RGBA


def own_lanes(pic: Picture) -> bool:
    """Whether ``pic``'s pixels (and alpha) are the first lanes of its 4-lane uint8 buffer."""
    lanes = pic.lanes
    if lanes is None or lanes.dtype != np.uint8 or not lanes.flags.c_contiguous or pic.pixels.dtype != np.uint8:
        return False
    if pic.pixels.shape != lanes.shape[:2] + (3,) or (pic.alpha is not None and pic.alpha.dtype != np.uint8):
        return False
    same = pic.pixels.__array_interface__["data"][0] == lanes.__array_interface__["data"][0]
    return same and (pic.alpha is None or pic.alpha.__array_interface__["data"][0]
                     == lanes.__array_interface__["data"][0] + 3)


class SaveSpec(NamedTuple):
    """How results are written: ``fmt`` (default: the target's suffix; standard output: the input's format),
    ``quality`` for JPEG/WebP (default: a JPEG input's own tables, else 90), ``compress_level`` 0-9 for PNG
    (default 1)."""

    fmt: str | None = None
    quality: int | None = None
    compress_level: int | None = None


def write_picture(pic: Picture, target, *, fmt: str | None = None, quality: int | None = None,
                  compress_level: int | None = None) -> None:
    """Write ``pic`` to ``target`` (a path, or ``"-"`` for standard output) atomically: a temporary file in the
    same folder, renamed over the target once complete, so a killed run never leaves half a file. The format is
    ``fmt``, else the target's suffix; standard output takes the input's format (PNG when Pillow cannot write it).
    ``quality`` for JPEG/WebP (default: a JPEG input's own tables, else 90), ``compress_level`` 0-9 for PNG
    (default 1). EXIF (orientation reset once applied), ICC profile and DPI are carried over."""
    if target == "-" and fmt is None:
        fmt = _writable(pic.info.get("format")) or "PNG"
    name = check_target(target, fmt)
    px, alpha = _samples(pic) if pic.depth in (8, 16) and name == "PNG" else (None, None)
    if px is not None and px.dtype.kind == "u" and (alpha is None or alpha.dtype == px.dtype):
        # PNG by cnnfilter's own encoder (Pillow would write 16-bit colour as 8 bits, and is 3x slower at level 1)
        dpi = pic.info.get("dpi")
        extra = {"icc_profile": pic.info.get("icc_profile"), "dpi": dpi if dpi and _sane_dpi(dpi) else None,
                 "exif": pic.info.get("exif")}
        level = PNG_COMPRESS_LEVEL if compress_level is None else compress_level
        strategy = zlib.Z_RLE if level == 1 else zlib.Z_DEFAULT_STRATEGY  # level 1: fast, as OpenCV's default

        def encode(fh):
            _png.write_png(fh, px, alpha, compress_level=level, strategy=strategy, **extra)
    else:
        img = to_image(pic, name)

        def encode(fh):
            _save(img, fh, name, pic.info, quality=quality, compress_level=compress_level)
    if target == "-":
        if sys.stdout is None:
            raise ImageWriteError("cannot write '-': standard output is closed")
        buf = _io.BytesIO()
        encode(buf)
        try:
            sys.stdout.buffer.write(buf.getvalue())
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            raise  # the reader left (`| head`): the CLI stops quietly
        except OSError as exc:
            raise ImageWriteError(f"cannot write '-' (standard output): {exc.strerror or exc}") from None
        return
    with atomic_file(target) as fh:
        encode(fh)


# PNG zlib level: 1 encodes 2.7-4.2x faster than Pillow's default 6 for 15-18 % larger files on photographs
# (samples/ at 3x, one run); encoding, not filtering, dominates a batch. OpenCV's imwrite also defaults to 1.
# cnnfilter's own encoder writes 8- and 16-bit PNGs (filter Up; at level 1 zlib's RLE strategy, OpenCV's default):
# 1024x768 photographs in 21 ms instead of Pillow's 70 ms at level 1, and 8 % smaller (one run).
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 90


def _save(img: Image.Image, fh, fmt: str, info: dict, *, quality: int | None = None,
          compress_level: int | None = None) -> None:
    params = {k: v for k, v in info.items() if k in ("icc_profile", "dpi")}
    if "dpi" in params and not _sane_dpi(params["dpi"]):  # a file's 0 or 4e9 dots per inch is dropped, not copied
        del params["dpi"]
    if info.get("exif") and fmt in ("JPEG", "PNG", "WEBP", "TIFF"):
        params["exif"] = info["exif"]
    tables = info.get("quantization")
    colour = img.mode in ("RGB", "RGBX")
    if fmt == "JPEG" and quality is None and tables and len(tables) >= (2 if colour else 1):
        params["qtables"] = [tables[k] for k in sorted(tables)][: 2 if colour else 1]
        if colour and info.get("subsampling", -1) in (0, 1, 2):
            params["subsampling"] = info["subsampling"]  # as mogrify keeps the input's quality
    elif fmt in ("JPEG", "WEBP"):
        params["quality"] = JPEG_QUALITY if quality is None else quality
    if fmt == "PNG":
        params["compress_level"] = PNG_COMPRESS_LEVEL if compress_level is None else compress_level
    if fmt not in ("PNG", "JPEG", "TIFF", "WEBP"):
        params.pop("icc_profile", None)
    try:
        img.save(fh, format=fmt, **params)
    except (ValueError, OverflowError, ZeroDivisionError, struct.error, TypeError) as exc:
        raise ImageWriteError(f"cannot write this image as {fmt}: {printable(str(exc)) or type(exc).__name__}") from None


def _sane_dpi(dpi) -> bool:
    try:
        return len(dpi) == 2 and all(0.01 <= float(d) <= 1e6 for d in dpi)
    except (TypeError, ValueError):
        return False


RAW_SUFFIXES = (".npy", ".npz", ".tif", ".tiff")


def write_raw(pic: Picture, target) -> None:
    """The unrounded float result: ``.npy`` (the pixels), ``.npz`` (``pixels`` and, with alpha, ``alpha``) or a
    float32 ``.tif`` (greyscale only: Pillow writes no multi-channel float TIFF). Atomic, like write_picture."""
    path = Path(target)
    suffix = path.suffix.lower()
    if suffix not in RAW_SUFFIXES:
        raise ImageFormatError(f"--raw {str(path)!r}: use one of {', '.join(RAW_SUFFIXES)}")
    values = np.asarray(pic.pixels, np.float32)
    if suffix in (".tif", ".tiff") and values.ndim != 2:
        raise ImageFormatError(f"--raw {str(path)!r}: a float TIFF holds one channel; use .npy or .npz for colour")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ImageWriteError(f"cannot write {str(path)!r}: folder {str(folder)!r} does not exist")
    with atomic_file(path) as fh:
        if suffix == ".npy":
            np.save(fh, values, allow_pickle=False)
        elif suffix == ".npz":
            arrays = {"pixels": values}
            if pic.alpha is not None:
                arrays["alpha"] = np.asarray(pic.alpha, np.float32)
            np.savez_compressed(fh, **arrays)
        else:
            Image.fromarray(values).save(fh, format="TIFF")


def load_image(path) -> np.ndarray:
    """An image file as an array: (H, W) greyscale or (H, W, C) with C = 2 (grey + alpha), 3 or 4, in the file's
    own depth (uint8; uint16 for 16-bit PNGs and 16-bit greyscale TIFFs; float32 for mode I/F)."""
    pic = read_picture(path)
    if pic.alpha is None:
        return pic.pixels
    return np.dstack([pic.pixels, pic.alpha])


def save_image(path, array, *, format: str | None = None) -> None:  # noqa: A002 - Pillow's name
    """Write an (H, W), (H, W, 2), (H, W, 3) or (H, W, 4) array, atomically.

    uint8 and uint16 arrays are written as they are (16 bits in PNG, and in TIFF for greyscale only; rounded to 8
    bits elsewhere); float arrays are rounded half-to-even and clipped to 0..255.
    """
    arr = np.asarray(array)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 2, 3, 4)):
        msg = f"array has shape {arr.shape}; expected (H, W) or (H, W, C) with C in 1..4"
        raise ValueError(msg)
    if arr.dtype not in (np.uint8, np.uint16):
        arr = to_depth(arr, 8)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):
        px, alpha = arr[:, :, 0], (arr[:, :, 1] if arr.shape[2] == 2 else None)
    elif arr.ndim == 3:
        px, alpha = arr[:, :, :3], (arr[:, :, 3] if arr.shape[2] == 4 else None)
    else:
        px, alpha = arr, None
    write_picture(Picture(px, alpha, 16 if arr.dtype == np.uint16 else 8), path, fmt=format)
