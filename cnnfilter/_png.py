"""A PNG codec for 16-bit images only: what Pillow gets wrong (it reads 16-bit RGB, RGBA and grey + alpha as 8-bit
and cannot write them).

numpy, zlib and struct only. Row filters None, Sub and Up are undone with whole-array numpy operations; an image
that also uses Average or Paeth (inherently sequential, pixel after pixel) is undone by one compiled loop
(numba, imported on first use only, so importing this module never loads numba). Adam7 interlacing is read.
Samples are big-endian on disk and native uint16 in memory.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel
# Adam7 passes: (first row, first column, row step, column step)
_ADAM7 = ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1))
_METRE_PER_INCH = 0.0254


def sniff16(header: bytes) -> bool:
    """True when ``header`` (the first 33 bytes suffice) is a PNG whose IHDR says 16-bit RGB, RGBA or grey + alpha."""
    if len(header) < 29 or header[:8] != SIGNATURE or header[12:16] != b"IHDR":
        return False
    return header[24] == 16 and header[25] in (2, 4, 6)


def png_size(header: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's first 24 bytes."""
    return struct.unpack(">II", header[16:24])


def _chunks(data: bytes):
    """(type, payload) of every chunk up to IEND, CRCs checked."""
    pos, end = 8, len(data)
    while True:
        if pos + 8 > end:
            raise ValueError("truncated PNG (no IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if pos + 12 + length > end:
            raise ValueError(f"truncated PNG (in the {kind.decode('latin-1')!r} chunk)")
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            raise ValueError(f"corrupt PNG: bad CRC in the {kind.decode('latin-1')!r} chunk")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length


def read_png16(data: bytes):
    """Decode a 16-bit PNG (colour types 0, 2, 4, 6): ``(pixels, alpha, info)``.

    ``pixels`` is uint16 (H, W) or (H, W, 3); ``alpha`` uint16 (H, W) or None (a tRNS colour becomes alpha 0/65535);
    ``info`` may hold ``icc_profile`` (bytes), ``dpi`` ((x, y) floats, from a pHYs in metres) and ``exif`` (bytes).
    Raises ValueError with a one-line reason for anything malformed.
    """
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG file")
    header, idat, info, trns = None, bytearray(), {}, None
    for kind, body in _chunks(data):
        if header is None and kind != b"IHDR":
            raise ValueError("corrupt PNG: the first chunk is not IHDR")
        if kind == b"IHDR":
            if header is not None or len(body) != 13:
                raise ValueError("corrupt PNG: bad IHDR chunk")
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body  # one buffer, however many (empty) chunks the file has
        elif kind == b"tRNS":
            trns = body
        elif kind == b"iCCP":
            name_end = body.find(b"\0")
            profile = _inflate_capped(body[name_end + 2:], MAX_ICC_BYTES)
            if profile is not None:  # an unreadable or oversized profile is dropped, as Pillow does
                info["icc_profile"] = profile
        elif kind == b"pHYs" and len(body) == 9:
            px, py, unit = struct.unpack(">IIB", body)
            if unit == 1:
                info["dpi"] = (px * _METRE_PER_INCH, py * _METRE_PER_INCH)
        elif kind == b"eXIf":
            info["exif"] = body
        elif kind[0] & 0x20 == 0 and kind not in (b"PLTE", b"IEND"):  # an uppercase first letter: critical
            raise ValueError(f"unsupported critical PNG chunk {kind.decode('latin-1')!r}")
    if header is None:
        raise ValueError("corrupt PNG: no IHDR chunk")
    if not idat:
        raise ValueError("corrupt PNG: no IDAT chunk")
    width, height, depth, colour, compression, filtering, interlace = header
    if depth != 16 or colour not in _CHANNELS:
        raise ValueError(f"not a 16-bit grey, grey + alpha, RGB or RGBA PNG (bit depth {depth}, colour type {colour})")
    if width == 0 or height == 0 or compression != 0 or filtering != 0 or interlace > 1:
        raise ValueError("corrupt PNG: bad IHDR values")
    channels = _CHANNELS[colour]
    bpp = 2 * channels
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    shapes = [(-(-(height - r0) // dr), -(-(width - c0) // dc)) for r0, c0, dr, dc in passes]
    expected = sum(h * (1 + w * bpp) for h, w in shapes if h > 0 and w > 0)
    raw = _inflate(bytes(idat), expected)

    samples = np.empty((height, width, channels), np.uint16)
    pos = 0
    for (r0, c0, dr, dc), (h, w) in zip(passes, shapes):
        if h <= 0 or w <= 0:
            continue
        rows = np.frombuffer(raw, np.uint8, h * (1 + w * bpp), pos).reshape(h, 1 + w * bpp)
        pos += rows.size
        samples[r0::dr, c0::dc] = unfilter(rows, bpp).view(">u2").reshape(h, w, channels)

    if colour in (4, 6):
        pixels, alpha = samples[:, :, :-1], samples[:, :, -1].copy()
    else:
        pixels, alpha = samples, None
        if trns is not None and len(trns) == 2 * channels:
            key = np.frombuffer(trns, ">u2").astype(np.uint16)
            alpha = np.where((samples == key).all(axis=2), np.uint16(0), np.uint16(65535))
    pixels = pixels[:, :, 0].copy() if pixels.shape[2] == 1 else np.ascontiguousarray(pixels)
    return pixels, alpha, info


# An ICC profile inflates to at most this, as Pillow's PNG reader allows (its MAX_TEXT_CHUNK, 1 MiB): the
# budget of a decompression is what the file declares it needs, never what the compressed data happens to hold.
MAX_ICC_BYTES = 1 << 20


def _inflate_capped(compressed: bytes, cap: int) -> bytes | None:
    """zlib-decompress at most ``cap`` bytes; None when the data is corrupt or inflates to more."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, cap)
    except zlib.error:
        return None
    if inflater.unconsumed_tail or not inflater.eof:
        return None
    return raw


def _inflate(compressed: bytes, expected: int) -> bytes:
    """zlib-decompress exactly ``expected`` bytes; more or fewer is an error."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(compressed, expected)
        extra = inflater.unconsumed_tail and inflater.decompress(inflater.unconsumed_tail, 1)
    except zlib.error as exc:
        raise ValueError(f"corrupt PNG image data ({exc})") from None
    if len(raw) < expected:
        raise ValueError(f"truncated PNG image data ({len(raw)} of {expected} bytes)")
    if extra:
        raise ValueError(f"corrupt PNG: more image data than its size needs ({expected} bytes)")
    return raw


def unfilter(rows: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG row filters: ``rows`` (H, 1 + stride) uint8, each row's filter type first -> (H, stride) uint8."""
    kinds = rows[:, 0]
    bad = kinds > 4
    if bad.any():
        raise ValueError(f"corrupt PNG: unknown row filter type {int(kinds[bad][0])}")
    if (kinds > 2).any():  # Average or Paeth: sequential along the row
        return _unfilter_loop()(rows, bpp)
    out = rows[:, 1:].copy()  # None rows are done
    h, stride = out.shape
    sub = kinds == 1
    if sub.any():  # a running sum, mod 256, of each byte lane of the pixels
        lanes = out[sub].reshape(-1, stride // bpp, bpp)
        out[sub] = np.cumsum(lanes, axis=1, dtype=np.uint8).reshape(-1, stride)
    for y in np.flatnonzero(kinds[1:] == 2) + 1:  # Up, top to bottom (Up on the first row is None)
        np.add(out[y], out[y - 1], out=out[y])
    return out


def _unfilter_loop():
    """The compiled all-filters loop, built on first use (numba is imported only here)."""
    global _LOOP
    if _LOOP is None:
        from numba import njit

        @njit(cache=True)
        def loop(rows, bpp):
            h, stride = rows.shape[0], rows.shape[1] - 1
            out = np.zeros((h + 1, stride), np.uint8)  # row 0: the zeros above the first row
            for y in range(h):
                kind, line, cur, prev = rows[y, 0], rows[y, 1:], out[y + 1], out[y]
                if kind == 0:
                    cur[:] = line
                elif kind == 1:
                    cur[:bpp] = line[:bpp]
                    for x in range(bpp, stride):
                        cur[x] = line[x] + cur[x - bpp]
                elif kind == 2:
                    for x in range(stride):
                        cur[x] = line[x] + prev[x]
                elif kind == 3:
                    for x in range(bpp):
                        cur[x] = line[x] + (prev[x] >> 1)
                    for x in range(bpp, stride):
                        cur[x] = line[x] + ((np.int32(cur[x - bpp]) + np.int32(prev[x])) >> 1)
                else:
                    for x in range(bpp):
                        cur[x] = line[x] + prev[x]  # Paeth with a = c = 0 predicts b
                    for x in range(bpp, stride):
                        a, b, c = np.int32(cur[x - bpp]), np.int32(prev[x]), np.int32(prev[x - bpp])
                        pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                        cur[x] = line[x] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))
            return out[1:]

        _LOOP = loop
    return _LOOP


_LOOP = None


def _chunk(fh, kind: bytes, body: bytes) -> None:
    fh.write(struct.pack(">I", len(body)) + kind)
    fh.write(body)
    fh.write(struct.pack(">I", zlib.crc32(body, zlib.crc32(kind))))


def write_png(fh, pixels, alpha=None, *, compress_level: int = 1, strategy: int = zlib.Z_DEFAULT_STRATEGY,
              icc_profile: bytes | None = None, dpi=None, exif: bytes | None = None) -> None:
    """Write an 8- or 16-bit PNG to the binary file ``fh``: ``pixels`` uint8 or uint16 (H, W, 3) as RGB, or RGBA
    with ``alpha`` (H, W); (H, W) as grey, or grey + alpha. ``pixels`` may be a view with pixels further apart
    (Pillow's 4-byte RGB). Every row uses filter Up; zlib at ``compress_level`` with ``strategy``
    (``zlib.Z_RLE``: OpenCV's default for PNG, much faster on photographs, and smaller there); iCCP, pHYs and
    eXIf chunks when ``icc_profile`` / ``dpi`` / ``exif`` are given."""
    px = np.asarray(pixels)
    if px.ndim == 3 and px.shape[2] == 1:
        px = px[:, :, 0]
    if px.ndim not in (2, 3) or (px.ndim == 3 and px.shape[2] != 3) or px.shape[0] == 0 or px.shape[1] == 0:
        raise ValueError(f"pixels have shape {px.shape}; expected (H, W) or (H, W, 3)")
    if px.dtype not in (np.uint8, np.uint16):
        raise ValueError("pixels and alpha must be uint8 or uint16")
    height, width = px.shape[:2]
    planes = [px] if px.ndim == 2 else [px[:, :, i] for i in range(3)]
    if alpha is not None:
        if np.shape(alpha) != (height, width):
            raise ValueError(f"alpha has shape {np.shape(alpha)}; expected {(height, width)}")
        planes.append(alpha)
    if any(np.asarray(plane).dtype != px.dtype for plane in planes):
        raise ValueError("pixels and alpha must be of one type, uint8 or uint16")
    depth = 8 * px.dtype.itemsize
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[len(planes)]
    if len(planes) == 1 and depth == 8:
        samples = np.ascontiguousarray(px)
    else:
        samples = np.empty((height, width, len(planes)), ">u2" if depth == 16 else np.uint8)
        if px.ndim == 3 and alpha is None:
            samples[...] = px  # one strided copy (Pillow's 4-byte RGB packed to 3)
        else:
            for i, plane in enumerate(planes):
                samples[:, :, i] = plane
    data = samples.view(np.uint8).reshape(height, -1)

    fh.write(SIGNATURE)
    _chunk(fh, b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    if icc_profile:
        _chunk(fh, b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile))
    if dpi:
        per_metre = [int(d / _METRE_PER_INCH + 0.5) for d in dpi]
        _chunk(fh, b"pHYs", struct.pack(">IIB", *per_metre, 1))
    if exif:
        _chunk(fh, b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif)
    deflater = zlib.compressobj(compress_level, zlib.DEFLATED, 15, 8, strategy)
    block = max(1, (1 << 20) // data.shape[1])  # about 1 MiB of rows per step
    pending = b""
    for top in range(0, height, block):
        rows = data[top:top + block]
        filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # Up: the difference from the row above, byte by byte
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
        filtered[0, 1:] = rows[0] - data[top - 1] if top else rows[0]
        pending += deflater.compress(filtered.data)
        if len(pending) >= 1 << 18:
            _chunk(fh, b"IDAT", pending)
            pending = b""
    pending += deflater.flush()
    _chunk(fh, b"IDAT", pending)
    _chunk(fh, b"IEND", b"")


write_png16 = write_png  # the name of the 16-bit writer before it wrote 8 bits too
