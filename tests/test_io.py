"""Image reading and writing: modes, alpha, depth, rounding, atomic writes, bad files."""

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cnnfilter.io import ImageFormatError, ImageReadError, ImageWriteError, Picture, load_image, read_picture, save_image, to_depth, \
    write_picture


def test_rounding_is_half_to_even_and_clipped():
    """36.5 -> 36, 37.5 -> 38, below 0 -> 0, above 255 -> 255, NaN -> 0."""
    out = to_depth(np.array([36.5, 37.5, -3, 300, 254.5, np.nan]), 8)
    np.testing.assert_array_equal(out, [36, 38, 0, 255, 254, 0])
    assert out.dtype == np.uint8
    assert to_depth(np.array([70000.0, 1.5]), 16).tolist() == [65535, 2]


@pytest.mark.parametrize(("mode", "shape", "alpha"), [
    ("L", (6, 5), False), ("RGB", (6, 5, 3), False), ("RGBA", (6, 5, 3), True), ("LA", (6, 5), True),
    ("1", (6, 5), False), ("P", (6, 5, 3), False), ("CMYK", (6, 5, 3), False), ("I;16", (6, 5), False),
])
def test_modes_are_read_as_grey_or_rgb_plus_alpha(tmp_path, mode, shape, alpha):
    """Every common Pillow mode becomes greyscale or RGB, with alpha split off."""
    img = Image.new(mode, (5, 6))
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    img.save(path)
    pic = read_picture(path)
    assert pic.pixels.shape == shape
    assert (pic.alpha is not None) == alpha
    assert pic.depth == (16 if mode == "I;16" else 8)


def test_exif_orientation_is_applied(tmp_path):
    """An image tagged 'rotate 90' (orientation 6) is read upright."""
    img = Image.new("L", (4, 2))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(tmp_path / "r.jpg", exif=exif)
    assert read_picture(tmp_path / "r.jpg").pixels.shape == (4, 2)


def test_roundtrip_keeps_values_alpha_and_16_bit(tmp_path, rng):
    """Grey, RGB + alpha and 16-bit grey survive a write and a read unchanged."""
    for arr in (rng.integers(0, 256, (7, 9), np.uint8), rng.integers(0, 256, (7, 9, 4), np.uint8),
                rng.integers(0, 65536, (7, 9), np.uint16), rng.integers(0, 256, (7, 9, 2), np.uint8)):
        save_image(tmp_path / "a.png", arr)
        np.testing.assert_array_equal(load_image(tmp_path / "a.png"), arr)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    """The target appears whole; a failed write leaves neither a partial target nor a temporary file."""
    pic = Picture(np.zeros((4, 4), np.uint8))
    write_picture(pic, tmp_path / "ok.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "ok.png").stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's 0o600
    with pytest.raises(ImageFormatError, match="unknown image suffix '.xyz'"):
        write_picture(pic, tmp_path / "bad.xyz")
    with pytest.raises(ImageWriteError, match="does not exist"):
        write_picture(pic, tmp_path / "missing" / "a.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.png"]


@pytest.mark.parametrize(("content", "message"), [
    (b"", "not an image"),
    (b"hello, not an image", "not an image"),
    (None, "no such file"),
])
def test_bad_files_give_one_clear_error(tmp_path, content, message):
    """Empty, non-image and missing files raise ImageReadError naming the file."""
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=f"cannot read '.*x.png': {message}"):
        read_picture(path)


def test_truncated_png_is_reported(tmp_path, rng):
    """A PNG cut in half is an error, not a half-black image."""
    save_image(tmp_path / "a.png", rng.integers(0, 256, (64, 64, 3), np.uint8))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cannot read"):
        read_picture(tmp_path / "t.png")


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    """Images above Pillow's pixel limit are refused with the limit in the message."""
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError, match="decompression-bomb limit"):
        read_picture(tmp_path / "big.png")


def test_decompression_bomb_warning_range_is_refused_too(tmp_path, monkeypatch):
    """Between Pillow's limit and twice it Pillow only warns; cnnfilter refuses those images as well."""
    Image.new("L", (100, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    with pytest.raises(ImageReadError, match="decompression-bomb limit"):
        read_picture(tmp_path / "big.png")


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_pillow_view_shares_pillow_memory_read_only(mode, rng):
    """pillow_view gives Pillow's own pixels without a copy (4 bytes per RGB pixel), read-only, alive after the
    image is gone; read_picture's pixels are views of it."""
    from PIL import Image

    from cnnfilter.io import pillow_view

    bands = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (13, 9, bands) if bands > 1 else (13, 9)).astype(np.uint8)
    shared = Image.fromarray(arr)  # L and RGBA share numpy's memory (read-only to Pillow): not exported
    assert shared.mode == mode and (pillow_view(shared) is None or not shared.readonly)
    img = shared.copy()
    view = pillow_view(img)
    if view is None:
        pytest.skip("this Pillow has no Arrow export")
    del img
    assert not view.flags.writeable
    np.testing.assert_array_equal(view if bands == 1 else view[:, :, :bands], arr)


def test_a_bigtiff_is_rewritten_as_tiff_with_its_descriptive_tags_only(tmp_path):
    # Pillow reads a TIFF page's own directory as its EXIF; written back, its 8-byte offsets broke the TIFF writer
    tifffile = pytest.importorskip("tifffile")
    src = tmp_path / "big.tif"
    data = np.arange(40 * 30, dtype=np.uint16).reshape(40, 30).astype(np.uint8)
    tifffile.imwrite(src, data, bigtiff=True, tile=(16, 16), extratags=[(271, "s", 0, "Canon", True)])
    write_picture(read_picture(src), tmp_path / "out.tif")
    with Image.open(tmp_path / "out.tif") as img:
        assert np.array_equal(np.asarray(img), data)
        tags = img.getexif()
        assert tags.get(271) == "Canon" and 0x0144 not in tags and 0x0142 not in tags  # no stale TileOffsets/Width


@given(st.lists(st.sampled_from([0xFF, 0xDA, 0x00, 0xD8]), max_size=300), st.integers(1, 40))
def test_count_pairs_is_bytes_count_across_chunk_borders(values, chunk):
    """The JPEG scan count (io.count_pairs, numpy a chunk at a time) equals bytes.count of the marker, wherever the
    chunks' borders fall."""
    from cnnfilter.io import count_pairs

    data = bytes(values)
    assert count_pairs(data, 0xFF, 0xDA, chunk) == data.count(b"\xff\xda")
