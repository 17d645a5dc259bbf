"""A TIFF larger than memory, filtered or pooled in tiles: what ``cnnfilter convolve big.tif`` and ``cnnfilter
pool big.tif`` do when the first page decodes to more than :data:`STREAM_BYTES` (or ``--tile N`` asks for it).

The page is read through tifffile's zarr interface, which decodes only the file's own tiles or strips a read
touches, as a dask array in ``tile x tile`` chunks; :func:`cnnfilter.ops.apply` runs on it unchanged (the chunked
engine, :mod:`cnnfilter.chunked`, gives exactly the in-memory result, borders included, for every step of a
pipeline); the result is rounded to samples as the in-memory writer rounds them and written as a tiled BigTIFF.
Dask computes it a window of tiles at a time (:data:`WINDOW`), each tile encoded and appended to a temporary file
as it is finished, whatever the order; the tile offsets are filled in at the end and the file renamed over the
target. Peak memory is a window's tiles with their halos, not the image: ``--max-memory`` bounds one block's work,
and the pixel limit (``--max-pixels``, which protects decoders that hold the whole image) does not apply.

tifffile, zarr and dask are optional (``pip install 'cnnfilter[dask]'``), imported only when a TIFF streams.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .io import ImageReadError

#: TIFFs whose first page decodes to more than this stream by default
STREAM_BYTES = 256 << 20
#: the tile edge when streaming is decided by size (``--tile`` sets another; a multiple of 16, as TIFF tiles are)
TILE = 1024
#: the edge of the window of output tiles one dask computation covers (8x8 tiles of 1024): a 20,000 x 20,000
#: Gaussian took 7.1 s with windows of 4x4 tiles, 5.1 s with 8x8 and 4.6 s with bands of 4 x 20, at 238-278 MB
#: peak (the process alone: 139 MB); one computation for the whole image held 422 MB (benchmarks/chunked.py)
WINDOW = 8192
#: the sample types a streamed TIFF may hold, and the depth each is read as
_DEPTHS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32, np.dtype(np.float64): 32}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class StreamError(ImageReadError):
    """A TIFF that cannot be streamed (a command's failure for that file, as an unreadable image is)."""


class Unstreamable(StreamError):
    """A TIFF whose layout, sample type or codec the streamed path does not take, found before anything is
    written: a TIFF that streams only for its size is read in memory instead (:func:`cnnfilter.ops.process_file`)."""


@dataclass(frozen=True)
class Streaming:
    """When and how an input streams: ``tile`` N forces streaming in ``N x N`` tiles (a multiple of 16) and 0
    forbids it; by default a TIFF whose first page decodes to more than ``threshold`` bytes streams in :data:`TILE`
    tiles. ``progress(done, total)`` is called as output tiles are written (never sent to a batch's workers).
    ``max_pixels``: a streamed image with more pixels is refused before any tile is read (streaming exists for
    images over Pillow's decompression-bomb limit, so that limit applies only when the user sets one)."""

    tile: int | None = None
    threshold: int = STREAM_BYTES
    progress: Callable[[int, int], None] | None = field(default=None, compare=False)
    max_pixels: int | None = None  # the user's own pixel limit (--max-pixels); Pillow's default is not one here

    def __post_init__(self):
        if self.tile is not None and (self.tile < 0 or self.tile % 16):
            msg = f"tile {self.tile} must be a multiple of 16 (TIFF tiles are), or 0 never to stream"
            raise ValueError(msg)

    def wants(self, source) -> bool:
        """Whether ``source`` (a path) is a TIFF this streams."""
        if self.tile == 0 or source == "-" or not _is_tiff(source):
            return False
        if self.tile is not None:
            return True
        return decoded_bytes(source) > self.threshold

    def __getstate__(self):  # a batch's workers get the settings, not this process's progress bar
        return {"tile": self.tile, "threshold": self.threshold, "progress": None, "max_pixels": self.max_pixels}

    def __setstate__(self, state):
        for k, v in state.items():
            object.__setattr__(self, k, v)


def _is_tiff(path) -> bool:
    """Whether ``path`` is a regular file that starts as a TIFF (a FIFO or a device is never opened here: it could
    block forever; the in-memory reader reports it)."""
    import os
    import stat

    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as fh:
            return fh.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def decoded_bytes(path) -> int:
    """The decoded size of a TIFF's first page, from its header (nothing is decoded); 0 when tifffile is not
    installed (without the ``dask`` extra every TIFF is read in memory, as before it existed)."""
    try:
        tifffile = _tifffile()
    except StreamError:
        return 0
    try:
        with tifffile.TiffFile(path) as tf:
            page = tf.pages.first
            return int(np.prod(page.shape)) * page.dtype.itemsize if page.dtype is not None else 0
    except Exception:  # noqa: BLE001 - not a TIFF tifffile reads: the in-memory reader reports it
        return 0


def _tifffile():
    import logging

    logging.getLogger("tifffile").setLevel(logging.ERROR)  # its complaints become cnnfilter's one-line errors
    try:
        import tifffile
        import zarr  # noqa: F401 - tifffile's zarr interface needs it

        import dask.array  # noqa: F401
    except ImportError:
        msg = "streaming a TIFF needs tifffile, zarr and dask: pip install 'cnnfilter[dask]'"
        raise StreamError(msg) from None
    return tifffile


def process(source, target, *, spec, streaming: Streaming, raw=None, fmt: str | None = None) -> None:
    """Read the TIFF ``source`` as tiles, :func:`cnnfilter.ops.apply` ``spec``, write ``target`` as a tiled
    BigTIFF, a window of tiles at a time."""
    from pathlib import Path

    from . import config, ops
    from .io import ImageWriteError
    from .limits import LimitError
    from .outputs import WriteError, quoted

    tifffile = _tifffile()
    tile = streaming.tile or TILE
    name = str(source)
    try:
        tf = tifffile.TiffFile(source)
    except Exception as exc:  # noqa: BLE001 - a damaged or truncated header
        msg = f"cannot read {name!r} as a TIFF: {exc}"
        raise StreamError(msg) from None
    old = config.ENGINE
    # the compiled loops for every block, as for any image this large in memory (the numpy engine, which a small
    # edge block could otherwise take before numba loads, rounds float kernels in another order)
    config.ENGINE = "compiled" if old == "auto" else old
    try:
        with tf:
            if not len(tf.pages):
                msg = f"cannot read {name!r}: a TIFF without pages"
                raise StreamError(msg)
            if len(tf.pages) > 1 and Path(source).resolve() == Path(target).resolve():
                msg = (f"{quoted(source)} has {len(tf.pages)} pages and only the first is filtered: --in-place "
                       "would lose the others")
                raise ImageWriteError(msg)
            try:  # a layout it does not take is refused before the output is looked at
                pic, layout = _open(tf, name, tile)
            except LimitError as exc:  # that file's failure, as an image too large to decode in memory is
                raise StreamError(f"cannot read {name!r}: {exc}") from None
            height, width = pic.pixels.shape[:2]
            if streaming.max_pixels is not None and height * width > streaming.max_pixels:
                msg = (f"cannot read {name!r}: {width}x{height} is more pixels than --max-pixels allows "
                       f"({streaming.max_pixels:,})")
                raise StreamError(msg)
            _check_output(source, target, raw, fmt)
            result = ops.apply(spec, pic)
            try:
                _write(result, target, tile, layout, streaming.progress)
            except (LimitError, MemoryError, ImageWriteError, WriteError):
                raise
            except Exception as exc:  # noqa: BLE001 - a damaged tile, a codec's error: that file's one line
                msg = f"cannot read {name!r} (streaming it): {type(exc).__name__}: {exc}"
                raise StreamError(msg) from None
    finally:
        config.ENGINE = old


def _check_output(source, target, raw, fmt) -> None:
    """A streamed TIFF is written as a tiled TIFF, and nothing else: refuse what would say otherwise."""
    from pathlib import Path

    from .outputs import quoted

    if raw is not None:
        msg = f"{quoted(source)} streams in tiles: --raw (the whole result in memory) does not apply"
        raise ValueError(msg)
    if fmt is not None and fmt.strip().lower().lstrip(".") not in ("tif", "tiff"):
        msg = f"{quoted(source)} streams in tiles and is written as a tiled TIFF, not {fmt}"
        raise ValueError(msg)
    if str(target) == "-" or Path(target).suffix.lower() not in (".tif", ".tiff"):
        msg = (f"{quoted(target)}: {quoted(source)} streams in tiles and is written as a tiled TIFF; give an output "
               "ending in .tif or .tiff (or --tile 0 to filter it in memory)")
        raise ValueError(msg)
    Path(target).parent.mkdir(parents=True, exist_ok=True)


@dataclass(frozen=True)
class _Layout:
    photometric: str
    compression: str | None
    iccprofile: bytes | None
    resolution: tuple | None
    resolutionunit: int | None


def _open(tf, name: str, tile: int):
    """The first page as a lazy :class:`~cnnfilter.io.Picture` in ``tile x tile`` chunks, and what the output
    keeps of it."""
    import dask.array as da
    import zarr

    from . import limits
    from .io import Picture

    page = tf.pages.first
    dtype = page.dtype
    if dtype is None or np.dtype(dtype) not in _DEPTHS:
        msg = f"{name!r}: samples of type {dtype} cannot be streamed (8- or 16-bit unsigned, or float)"
        raise Unstreamable(msg)
    photometric = page.photometric.name
    samples = page.samplesperpixel
    extra = len(page.extrasamples)
    if photometric not in ("MINISBLACK", "RGB") or samples - extra not in (1, 3) or extra > 1:
        msg = (f"{name!r}: a {photometric} TIFF of {samples} samples per pixel cannot be streamed (greyscale or "
               "RGB, with at most one alpha sample)")
        raise Unstreamable(msg)
    if extra and page.extrasamples[0] == 1:  # associated (premultiplied) alpha
        msg = f"{name!r}: its alpha is premultiplied (associated), which cannot be streamed"
        raise Unstreamable(msg)
    codec = page.compression.name
    if codec not in _NATIVE_CODECS and not _has_imagecodecs():
        msg = (f"{name!r}: its {codec} compression needs the imagecodecs package to stream (pip install imagecodecs); "
               "--tile 0 reads it in memory with Pillow")
        raise Unstreamable(msg)
    # one of the file's own pieces (a tile, or a strip of rows) is decoded whole: bounded before any is read
    piece = (page.tilelength * page.tilewidth if page.is_tiled else page.rowsperstrip * page.imagewidth)
    limits.check_memory(float(piece) * samples * dtype.itemsize * 2,
                        f"one of its {'tiles' if page.is_tiled else 'strips'} ({piece:,} pixels)")
    try:
        z = zarr.open(page.aszarr(), mode="r")
    except Exception as exc:  # noqa: BLE001 - what tifffile cannot map (compression without its codec, ...)
        msg = f"cannot stream {name!r}: {exc}"
        raise StreamError(msg) from None
    axes = page.axes
    arr = da.from_array(z, chunks=tuple(tile if a in "YX" else -1 for a in axes), asarray=True,
                        inline_array=False)
    if axes == "SYX":  # planar: channels last, as the filters take them
        arr = arr.transpose(1, 2, 0).rechunk((tile, tile, -1))
    elif axes not in ("YX", "YXS"):
        msg = f"{name!r}: axes {axes} cannot be streamed (a plane of samples: YX, YXS or SYX)"
        raise StreamError(msg)
    if arr.dtype == np.float64:
        arr = arr.astype(np.float32)
    orientation = page.tags.get("Orientation")
    arr = _upright(arr, int(orientation.value) if orientation else 1)  # as the in-memory reader applies EXIF's
    alpha = None
    if extra:
        arr, alpha = arr[:, :, :-1], arr[:, :, -1]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    tags = page.tags
    icc = tags.get("InterColorProfile")
    xres, yres, unit = (tags.get(k) for k in ("XResolution", "YResolution", "ResolutionUnit"))
    resolution = None
    if xres and yres and all(isinstance(t.value, tuple) and len(t.value) == 2 and t.value[1] for t in (xres, yres)):
        resolution = (xres.value[0] / xres.value[1], yres.value[0] / yres.value[1])
    layout = _Layout(photometric, _compression(page.compression.name), icc.value if icc else None, resolution,
                     int(unit.value) if unit else None)
    return Picture(arr, alpha, _DEPTHS[np.dtype(dtype)], {"format": "TIFF"}), layout


#: compressions tifffile decodes without imagecodecs
_NATIVE_CODECS = ("NONE", "ADOBE_DEFLATE", "DEFLATE", "PACKBITS", "LZMA")


def _has_imagecodecs() -> bool:
    import importlib.util

    return importlib.util.find_spec("imagecodecs") is not None


def _upright(arr, orientation: int):
    """``arr`` as TIFF's Orientation tag says it is meant to be seen (1: as stored; 2-8 the mirrors and turns that
    Pillow's exif_transpose applies), lazily."""
    if orientation in (5, 6, 7, 8):  # the rows are the picture's columns
        arr = arr.transpose(1, 0, *range(2, arr.ndim))
    flips = {2: (1,), 3: (0, 1), 4: (0,), 5: (), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation, ())
    for axis in flips:
        arr = arr[::-1] if axis == 0 else arr[:, ::-1]
    return arr


def _compression(name: str) -> str | None:
    """The output's compression: the input's when it is one tifffile writes without imagecodecs, else zlib."""
    if name == "NONE":
        return None
    return "zlib" if name in ("ADOBE_DEFLATE", "DEFLATE", "LZW", "JPEG", "PACKBITS") else (
        "lzma" if name == "LZMA" else "zlib")


def _write(result, target, tile: int, layout: _Layout, progress) -> None:
    """``result`` (a lazy :class:`~cnnfilter.io.Picture`) as a tiled BigTIFF of ``tile x tile`` tiles.

    The whole result is one dask computation (each block computed once, its halo shared with its neighbours,
    blocks released as soon as their dependents are done), and tiles reach the file in whatever order they are
    finished: the TIFF's structure is written first with empty tiles (tifffile), each tile is encoded and appended
    as it comes, and the tile offsets and byte counts are filled in at the end. The file is a temporary one until
    it is complete."""
    import dask.array as da

    from .io import to_depth
    from .outputs import atomic_file

    px = result.pixels if result.pixels.ndim == 3 else result.pixels[:, :, None]
    depth = result.depth
    stored = np.dtype(np.float32) if depth == 32 else np.dtype(np.uint8 if depth == 8 else np.uint16)
    parts = [px] + ([result.alpha[:, :, None]] if result.alpha is not None else [])
    planes = da.concatenate(parts, axis=2) if len(parts) > 1 else px
    H, W, C = planes.shape
    planes = planes.rechunk((tile, tile, C))

    def samples(block):  # rounded and clipped as the in-memory writer does (io.to_depth)
        return block if block.dtype == stored else to_depth(block, depth)

    planes = planes.map_blocks(samples, dtype=stored)
    colour = C - (result.alpha is not None) == 3
    options = {"photometric": "rgb" if colour else "minisblack", "tile": (tile, tile), "bigtiff": True,
               "compression": layout.compression, "planarconfig": "contig" if C > 1 else None,
               "extrasamples": ("unassalpha",) if result.alpha is not None else None,
               "iccprofile": layout.iccprofile if colour else None}
    if layout.resolution:
        options["resolution"], options["resolutionunit"] = layout.resolution, layout.resolutionunit
    options = {k: v for k, v in options.items() if v is not None}
    with atomic_file(target) as fh:
        tiles = _Tiles(fh, (H, W, C), stored, tile, options, progress)
        # one computation per window of tiles: within it each block is computed once and shared; across windows
        # only the input chunks under a halo are read again
        step = max(tile, WINDOW // tile * tile)
        for r in range(0, H, step):
            for c in range(0, W, step):
                where = (slice(r, min(r + step, H)), slice(c, min(c + step, W)))
                da.store(planes[where], tiles, regions=where, lock=False, scheduler="synchronous")
        tiles.finish()


class _Tiles:
    """A tiled TIFF written in any tile order: ``tiles[rows, cols, :] = block`` (a whole tile's region, as
    ``dask.array.store`` gives it) encodes the block and appends it; :meth:`finish` writes where each tile is."""

    def __init__(self, fh, shape, dtype, tile: int, options: dict, progress):
        import threading

        import tifffile

        H, W, C = shape
        self.fh, self.tile, self.dtype, self.samples = fh, tile, dtype, C
        self.across = -(-W // tile)
        self.total = -(-H // tile) * self.across
        self.progress, self.done = progress, 0
        self.lock = threading.Lock()
        self.deflate = options.get("compression") == "zlib"
        self.lzma = options.get("compression") == "lzma"
        # the structure, every tile empty (tifffile's iterator of already encoded tiles): tags and offsets only
        tifffile.imwrite(tifffile.FileHandle(fh, mode="wb", name="tiles.tif"),
                         ((b"", 0) for _ in range(self.total)), shape=shape if C > 1 else (H, W), dtype=dtype,
                         **options)
        fh.flush()
        self.end = fh.seek(0, 2)
        with open(fh.fileno(), "rb", closefd=False) as raw:  # where the two arrays of the only page are
            raw.seek(0)
            with tifffile.TiffFile(tifffile.FileHandle(raw, name="tiles.tif")) as skeleton:
                tags = skeleton.pages.first.tags
                order = skeleton.byteorder
                # each array as it is stored: its offset in the file and its integer type
                self.where = {name: (tags[name].valueoffset, np.dtype(order + tifffile.TIFF.DATA_FORMATS[tags[name].dtype][-1]))
                              for name in ("TileOffsets", "TileByteCounts")}
        fh.seek(self.end)
        self.order = order
        self.offsets = np.zeros(self.total, np.uint64)
        self.counts = np.zeros(self.total, np.uint64)

    def __setitem__(self, key, block):
        import os

        rows, cols = key[0], key[1]
        t = self.tile
        index = (rows.start // t) * self.across + cols.start // t
        full = block
        if block.shape[:2] != (t, t):  # an edge tile is stored whole, padded
            full = np.zeros((t, t, block.shape[2]), self.dtype)
            full[: block.shape[0], : block.shape[1]] = block
        data = np.ascontiguousarray(full if self.samples > 1 else full[:, :, 0]).astype(
            self.dtype.newbyteorder(self.order), copy=False).tobytes()
        if self.deflate:
            import zlib

            data = zlib.compress(data, 6)
        elif self.lzma:
            import lzma

            data = lzma.compress(data)
        with self.lock:
            offset, self.end = self.end, self.end + len(data)
            self.offsets[index], self.counts[index] = offset, len(data)
            self.done += 1
            done = self.done
        os.pwrite(self.fh.fileno(), data, offset)
        if self.progress is not None:
            self.progress(done, self.total)

    def finish(self) -> None:
        import os

        if self.done != self.total:
            msg = f"{self.total - self.done} of {self.total} tiles were not written"
            raise RuntimeError(msg)
        for name, values in (("TileOffsets", self.offsets), ("TileByteCounts", self.counts)):
            where, kind = self.where[name]
            os.pwrite(self.fh.fileno(), values.astype(kind).tobytes(), where)
        self.fh.seek(self.end)
