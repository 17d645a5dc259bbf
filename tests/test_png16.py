"""16-bit colour PNG (RGB, RGBA, grey + alpha): cnnfilter's own codec, checked against OpenCV and Pillow."""

import io
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnfilter import _png
from cnnfilter.cli import cli
from cnnfilter.io import ImageReadError, Picture, load_image, read_picture, save_image, write_picture

SHAPES = [(1, 1), (1, 7), (5, 3), (64, 33)]


def cv2_read(path) -> np.ndarray:
    """OpenCV's reading, in RGB(A) order."""
    got = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert got is not None, f"OpenCV cannot read {path}"
    if got.ndim == 3:
        got = np.concatenate([got[:, :, 2::-1], got[:, :, 3:]], axis=2)
    return got


def cv2_write(path, arr, params=()) -> None:
    """OpenCV's writing of an RGB(A) array."""
    bgr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2) if arr.ndim == 3 else arr
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr), list(params))


def ihdr(data: bytes) -> tuple:
    """(width, height, bit depth, colour type, interlace) read straight from the bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return w, h, depth, colour, interlace


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode(arr, colour, *, interlace=False, extra=b"") -> bytes:
    """A minimal reference encoder, straight from the PNG spec: rows alternate filters None and Up; Adam7 passes
    when ``interlace``. Every file it makes is checked against OpenCV before use."""
    samples = arr if arr.ndim == 3 else arr[:, :, None]
    h, w = samples.shape[:2]
    passes = ([(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]
              if interlace else [(0, 0, 1, 1)])
    out = bytearray()
    for r0, c0, dr, dc in passes:
        sub = samples[r0::dr, c0::dc]
        if sub.size == 0:
            continue
        rows = sub.astype(">u2").view(np.uint8).reshape(sub.shape[0], -1)
        for y, row in enumerate(rows):
            if y % 2 and y > 0:
                out += b"\x02" + ((row.astype(int) - rows[y - 1]) % 256).astype(np.uint8).tobytes()
            else:
                out += b"\x00" + row.tobytes()
    head = struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, int(interlace))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + extra + chunk(b"IDAT", zlib.compress(bytes(out)))
            + chunk(b"IEND", b""))


def ga_from_cv2(got):
    """OpenCV reads grey + alpha as BGRA with the grey repeated: back to (H, W, 2)."""
    assert np.array_equal(got[:, :, 0], got[:, :, 1]) and np.array_equal(got[:, :, 0], got[:, :, 2])
    return got[:, :, [0, 3]]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channels", [3, 4, 2])
def test_round_trip_is_exact_and_opencv_agrees(tmp_path, rng, shape, channels):
    """save_image writes a 16-bit PNG that OpenCV and load_image read back unchanged; Pillow opens it too."""
    arr = rng.integers(0, 65536, (*shape, channels), np.uint16)
    arr[0, 0] = 0
    arr[-1, -1] = 65535
    path = tmp_path / "a.png"
    save_image(path, arr)
    assert ihdr(path.read_bytes()) == (shape[1], shape[0], 16, {2: 4, 3: 2, 4: 6}[channels], 0)
    got = cv2_read(path)
    np.testing.assert_array_equal(ga_from_cv2(got) if channels == 2 else got, arr)
    mine = load_image(path)
    assert mine.dtype == np.uint16
    np.testing.assert_array_equal(mine, arr)
    with Image.open(path) as img:  # Pillow keeps the high bytes (and reads grey + alpha as RGBA)
        img.load()
        assert img.size == (shape[1], shape[0]) and img.mode == ("RGB" if channels == 3 else "RGBA")
        seen = np.asarray(img).reshape(*shape, -1)
        np.testing.assert_array_equal(seen[:, :, [0, 3]] if channels == 2 else seen, arr >> 8)


@pytest.mark.parametrize("level", range(10))
@pytest.mark.parametrize("flt", ["FILTER_NONE", "FILTER_SUB", "FILTER_UP", "FILTER_AVG", "FILTER_PAETH", "ALL_FILTERS",
                                 "FAST_FILTERS", None])
def test_reads_what_opencv_writes(tmp_path, rng, level, flt):
    """Files OpenCV writes with every row filter and every zlib level read back exactly."""
    yy, xx = np.mgrid[:37, :53]
    arr = (yy * 900 + xx * 500).astype(np.uint16)[:, :, None] + rng.integers(0, 999, (37, 53, 4), np.uint16)
    arr[::5, ::3] = rng.integers(0, 65536, arr[::5, ::3].shape, np.uint16)  # jumps wrap around the bytes
    params = [cv2.IMWRITE_PNG_COMPRESSION, level]
    if flt:
        params += [cv2.IMWRITE_PNG_FILTER, getattr(cv2, f"IMWRITE_PNG_{flt}")]
    for channels in (3, 4):
        path = tmp_path / f"c{channels}.png"
        cv2_write(path, arr[:, :, :channels], params)
        assert ihdr(path.read_bytes())[2:4] == (16, {3: 2, 4: 6}[channels])
        np.testing.assert_array_equal(cv2_read(path), arr[:, :, :channels])  # the oracle agrees with itself
        np.testing.assert_array_equal(load_image(path), arr[:, :, :channels])


def test_opencv_files_use_the_filter_asked_for(tmp_path, rng):
    """The test above covers every filter: OpenCV really writes the one asked for on every row."""
    arr = rng.integers(0, 65536, (9, 11, 3), np.uint16)
    for kind, name in enumerate(["NONE", "SUB", "UP", "AVG", "PAETH"]):
        ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_FILTER, getattr(cv2, f"IMWRITE_PNG_FILTER_{name}")])
        data = buf.tobytes()
        pos, idat = 8, b""
        while pos < len(data):
            (length,) = struct.unpack(">I", data[pos:pos + 4])
            if data[pos + 4:pos + 8] == b"IDAT":
                idat += data[pos + 8:pos + 8 + length]
            pos += 12 + length
        rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(9, -1)
        assert set(rows[:, 0].tolist()) == {kind}


@pytest.mark.parametrize("level", [0, 1, 9])
def test_opencv_reads_what_we_write(tmp_path, rng, level):
    """write_picture's 16-bit RGB, RGBA and grey + alpha PNGs decode in OpenCV to the very values, at any level."""
    px = rng.integers(0, 65536, (23, 31, 3), np.uint16)
    alpha = rng.integers(0, 65536, (23, 31), np.uint16)
    for pic, want in [(Picture(px, None, 16), px), (Picture(px, alpha, 16), np.dstack([px, alpha])),
                      (Picture(px[:, :, 1], alpha, 16), np.dstack([px[:, :, 1], alpha]))]:
        path = tmp_path / "w.png"
        write_picture(pic, path, compress_level=level)
        got = cv2_read(path)
        np.testing.assert_array_equal(ga_from_cv2(got) if want.shape[2] == 2 else got, want)


def test_reference_encoder_is_right_and_interlaced_files_are_read(tmp_path, rng):
    """Adam7-interlaced 16-bit colour PNGs (and plain ones from the same encoder) read as OpenCV reads them."""
    for shape in [(1, 1), (3, 2), (9, 17), (20, 13)]:
        for channels, colour in [(3, 2), (4, 6), (2, 4)]:
            arr = rng.integers(0, 65536, (*shape, channels), np.uint16)
            for interlace in (False, True):
                path = tmp_path / "i.png"
                path.write_bytes(encode(arr, colour, interlace=interlace))
                got = cv2_read(path)
                np.testing.assert_array_equal(ga_from_cv2(got) if channels == 2 else got, arr)
                np.testing.assert_array_equal(load_image(path), arr)


def test_sixteen_bit_grey_and_a_transparent_colour(rng):
    """The codec reads 16-bit grey (colour type 0) too, and turns an RGB tRNS colour into alpha 0 / 65535."""
    grey = rng.integers(0, 65536, (6, 7), np.uint16)
    ok, buf = cv2.imencode(".png", grey, [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_ALL_FILTERS])
    px, alpha, _ = _png.read_png16(buf.tobytes())
    assert alpha is None
    np.testing.assert_array_equal(px, grey)
    rgb = rng.integers(0, 65536, (6, 7, 3), np.uint16)
    rgb[2, 3] = rgb[4, 0] = (1, 2, 65534)
    data = encode(rgb, 2, extra=chunk(b"tRNS", struct.pack(">HHH", 1, 2, 65534)))
    px, alpha, _ = _png.read_png16(data)
    np.testing.assert_array_equal(px, rgb)
    want = np.full((6, 7), 65535, np.uint16)
    want[2, 3] = want[4, 0] = 0
    np.testing.assert_array_equal(alpha, want)


def test_icc_profile_and_dpi_are_kept(tmp_path, rng):
    """iCCP and pHYs are written the way Pillow reads them, and read back into Picture.info."""
    profile = bytes(range(256)) * 3
    pic = Picture(rng.integers(0, 65536, (4, 5, 3), np.uint16), None, 16, {"icc_profile": profile, "dpi": (300, 150)})
    write_picture(pic, tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as img:
        assert img.info["icc_profile"] == profile
        assert [round(d) for d in img.info["dpi"]] == [300, 150]
    back = read_picture(tmp_path / "p.png")
    assert back.depth == 16 and back.info["icc_profile"] == profile
    assert [round(d) for d in back.info["dpi"]] == [300, 150]


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pillow_does(tmp_path, rng, orientation):
    """An eXIf orientation turns a 16-bit colour PNG exactly as Pillow turns the same 8-bit image."""
    arr8 = rng.integers(0, 256, (3, 5, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr8).save(tmp_path / "e8.png", exif=exif)
    want = read_picture(tmp_path / "e8.png").pixels
    assert want.shape == ((5, 3, 3) if orientation >= 5 else (3, 5, 3))
    (tmp_path / "e16.png").write_bytes(encode(arr8.astype(np.uint16) * 257, 2, extra=chunk(b"eXIf", exif.tobytes())))
    got = read_picture(tmp_path / "e16.png")
    np.testing.assert_array_equal(got.pixels, want.astype(np.uint16) * 257)


def _broken(data: bytes, how: str) -> bytes:
    """``data`` (a PNG of one IDAT chunk) damaged in one way."""
    at = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[at - 4:at])
    if how == "crc":
        return data[:at + 10] + bytes([data[at + 10] ^ 1]) + data[at + 11:]
    if how == "truncated":
        return data[:at + length // 2]
    if how == "no-iend":
        return data[:at + length + 8]
    raise AssertionError(how)


@pytest.mark.parametrize(("how", "message"), [
    ("crc", "corrupt PNG: bad CRC in the 'IDAT' chunk"),
    ("truncated", r"truncated PNG \(in the 'IDAT' chunk\)"),
    ("no-iend", r"truncated PNG \(no IEND chunk\)"),
])
def test_damaged_files_give_one_clear_error(tmp_path, rng, how, message):
    """A bad CRC, a cut file and a missing IEND are ImageReadErrors naming the file, on one line."""
    save_image(tmp_path / "a.png", rng.integers(0, 65536, (16, 16, 3), np.uint16))
    path = tmp_path / "x.png"
    path.write_bytes(_broken((tmp_path / "a.png").read_bytes(), how))
    with pytest.raises(ImageReadError, match=f"^cannot read '.*x.png': {message}$") as err:
        read_picture(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("rows", "message"), [  # a row is 1 + 6 * 6 bytes
    (3, r"truncated PNG image data \(111 of 148 bytes\)"),
    (5, r"corrupt PNG: more image data than its size needs \(148 bytes\)"),
])
def test_image_data_of_the_wrong_size_is_refused(tmp_path, rng, rows, message):
    """An IDAT that inflates to fewer or more bytes than IHDR's size needs is refused."""
    arr = rng.integers(0, 65536, (rows, 6, 3), np.uint16)
    data = bytearray(encode(arr, 2))
    data[20:24] = struct.pack(">I", 4)  # IHDR says 4 rows
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    (tmp_path / "x.png").write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=f"^cannot read '.*x.png': {message}$"):
        read_picture(tmp_path / "x.png")


def test_bad_filter_type_and_bomb_limit(tmp_path, rng, monkeypatch):
    """A row filter type above 4 is corrupt; the decompression-bomb limit holds for this reader too."""
    arr = rng.integers(0, 65536, (2, 3, 3), np.uint16)
    raw = b"\x07" + arr[0].astype(">u2").tobytes() + b"\x00" + arr[1].astype(">u2").tobytes()
    head = struct.pack(">IIBBBBB", 3, 2, 16, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    (tmp_path / "f.png").write_bytes(data)
    with pytest.raises(ImageReadError, match="unknown row filter type 7$"):
        read_picture(tmp_path / "f.png")
    save_image(tmp_path / "big.png", np.zeros((100, 100, 3), np.uint16))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="decompression-bomb limit"):
        read_picture(tmp_path / "big.png")


def test_sniff_only_flags_what_pillow_gets_wrong(tmp_path, rng):
    """16-bit RGB / RGBA / grey + alpha are ours; 8-bit and 16-bit grey stay with Pillow."""
    cases = [(rng.integers(0, 65536, (3, 4, 3), np.uint16), True), (rng.integers(0, 65536, (3, 4, 4), np.uint16), True),
             (rng.integers(0, 65536, (3, 4, 2), np.uint16), True), (rng.integers(0, 65536, (3, 4), np.uint16), False),
             (rng.integers(0, 256, (3, 4, 3), np.uint8), False), (rng.integers(0, 256, (3, 4, 2), np.uint8), False)]
    for arr, ours in cases:
        save_image(tmp_path / "s.png", arr)
        assert _png.sniff16((tmp_path / "s.png").read_bytes()[:33]) is ours
    assert not _png.sniff16(b"") and not _png.sniff16(b"GIF89a" + bytes(40))


def test_sixteen_bit_colour_to_eight_bit_formats_rounds(tmp_path):
    """16-bit colour written as BMP (or TIFF: Pillow has no 16-bit colour mode) rounds to the nearest 8-bit value."""
    values = np.array([0, 128, 129, 385, 386, 32767, 65406, 65407, 65535], np.uint16)
    px = np.stack([values, values[::-1], values], axis=1)[None]
    want = np.floor(px / 257 + 0.5).astype(np.uint8)
    assert want[0, :, 0].tolist() == [0, 0, 1, 1, 2, 127, 254, 255, 255]
    for name in ("r.bmp", "r.tif"):
        write_picture(Picture(px, None, 16), tmp_path / name)
        np.testing.assert_array_equal(cv2_read(tmp_path / name), want)


@pytest.mark.parametrize("channels", [3, 4])
def test_cli_keeps_sixteen_bit_colour(tmp_path, rng, channels):
    """convolve -k identity keeps every 16-bit value; -k blur equals OpenCV's float box filter, rounded (+-1)."""
    arr = rng.integers(0, 65536, (19, 23, channels), np.uint16)
    src, dst = tmp_path / "src.png", tmp_path / "dst.png"
    cv2_write(src, arr)
    res = CliRunner().invoke(cli, ["convolve", str(src), "-k", "identity", "-o", str(dst)])
    assert res.exit_code == 0, res.output
    assert ihdr(dst.read_bytes())[2] == 16
    np.testing.assert_array_equal(cv2_read(dst), arr)
    res = CliRunner().invoke(cli, ["convolve", str(src), "-k", "blur", "-o", str(tmp_path / "blur.png")])
    assert res.exit_code == 0, res.output
    want = cv2.blur(arr[:, :, :3].astype(np.float64), (3, 3), borderType=cv2.BORDER_REFLECT_101)
    got = cv2_read(tmp_path / "blur.png")
    assert got.dtype == np.uint16
    assert np.abs(got[:, :, :3].astype(np.int64) - np.rint(want)).max() <= 1
    if channels == 4:
        np.testing.assert_array_equal(got[:, :, 3], arr[:, :, 3])  # alpha passes through


def test_cli_stdin_to_stdout_keeps_sixteen_bits(tmp_path, rng):
    """A 16-bit RGB PNG on standard input comes out on standard output as the same 16-bit PNG."""
    arr = rng.integers(0, 65536, (7, 9, 3), np.uint16)
    cv2_write(tmp_path / "in.png", arr)
    res = CliRunner().invoke(cli, ["convolve", "-", "-k", "identity", "-o", "-"],
                             input=(tmp_path / "in.png").read_bytes())
    assert res.exit_code == 0, res.output
    (tmp_path / "out.png").write_bytes(res.stdout_bytes)
    np.testing.assert_array_equal(cv2_read(tmp_path / "out.png"), arr)


def test_reading_and_writing_need_no_numba(tmp_path, rng):
    """Importing cnnfilter.io, and a None/Sub/Up file's round trip, never import numba."""
    save_image(tmp_path / "n.png", rng.integers(0, 65536, (5, 6, 3), np.uint16))
    code = (f"import sys, cnnfilter.io as io; a = io.load_image({str(tmp_path / 'n.png')!r}); "
            f"io.save_image({str(tmp_path / 'm.png')!r}, a); print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_large_image_unfilters_with_every_filter(rng):
    """The numpy (None/Sub/Up) and compiled (Average/Paeth) paths agree with OpenCV on a bigger image."""
    arr = rng.integers(0, 65536, (300, 257, 4), np.uint16)
    arr[100:200] //= 64
    for flt in (cv2.IMWRITE_PNG_FILTER_SUB, cv2.IMWRITE_PNG_FAST_FILTERS, cv2.IMWRITE_PNG_ALL_FILTERS):
        ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_FILTER, flt])
        px, alpha, _ = _png.read_png16(buf.tobytes())
        np.testing.assert_array_equal(np.dstack([px[:, :, ::-1], alpha]), arr)
    buf = io.BytesIO()
    _png.write_png16(buf, arr[:, :, :3], arr[:, :, 3], compress_level=0)
    px, alpha, _ = _png.read_png16(buf.getvalue())
    np.testing.assert_array_equal(np.dstack([px, alpha]), arr)


@pytest.mark.parametrize("bands", [1, 2, 3, 4])
@pytest.mark.parametrize("level", [0, 1, 9])
def test_eight_bit_png_round_trips_through_pillow_and_opencv(bands, level, rng, tmp_path):
    """write_png writes 8-bit grey, grey + alpha, RGB and RGBA that Pillow and OpenCV read back exactly, at every
    level (1: zlib's run-length strategy), with the ICC profile, DPI and EXIF; pixels may be a view of 4-byte
    pixels (Pillow's RGB memory)."""
    from PIL import Image

    arr = rng.integers(0, 256, (37, 23, 4)).astype(np.uint8)
    px = arr[:, :, 0] if bands <= 2 else arr[:, :, :3]  # a strided view for colour
    alpha = arr[:, :, 3] if bands in (2, 4) else None
    exif = Image.Exif()
    exif[0x010F] = "TestCam"
    path = tmp_path / "o.png"
    with open(path, "wb") as fh:
        _png.write_png(fh, px, alpha, compress_level=level, strategy=zlib.Z_RLE if level == 1 else zlib.Z_DEFAULT_STRATEGY,
                       icc_profile=b"\0" * 128, dpi=(300, 300), exif=exif.tobytes())
    img = Image.open(path)
    want = px if alpha is None else np.dstack([px, alpha])
    assert img.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[bands]
    np.testing.assert_array_equal(np.asarray(img), want)
    assert img.info["icc_profile"] == b"\0" * 128 and round(img.info["dpi"][0]) == 300
    assert img.getexif()[0x010F] == "TestCam"
    cv2 = pytest.importorskip("cv2")
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bands == 2:  # OpenCV reads grey + alpha as BGRA
        back = back[:, :, [0, 3]]
    elif bands >= 3:
        back = back[:, :, [2, 1, 0, 3][: back.shape[2]]]
    np.testing.assert_array_equal(back, want)
