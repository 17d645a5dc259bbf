"""cnnfilter.stream: a TIFF filtered or pooled in tiles equals the in-memory result, written as a tiled BigTIFF
with memory bounded by a window of tiles, not by the image."""

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

tifffile = pytest.importorskip("tifffile")
pytest.importorskip("zarr")
pytest.importorskip("dask.array")

from cnnfilter import io, ops, stream  # noqa: E402
from cnnfilter.cli import cli  # noqa: E402
from cnnfilter.kernels import get_kernel, resolve_steps  # noqa: E402


def _expected(spec, pixels, alpha=None, depth=8):
    """The in-memory result of ``spec`` as stored samples (channels last, alpha as the last channel)."""
    res = ops.apply(spec, io.Picture(pixels, alpha, depth, {}))
    px, al = io._samples(res) if depth in (8, 16) else (io.to_depth(res.pixels, 32), None)
    return px if al is None else np.dstack([px, al])


def _streamed(tmp_path, data, spec, every=32, **write):
    src, out = tmp_path / "in.tif", tmp_path / "out.tif"
    tifffile.imwrite(src, data, **write)
    ops.process_file(src, out, spec=spec, stream=stream.Streaming(tile=every))
    with tifffile.TiffFile(out) as tf:
        page = tf.pages.first
        assert tf.is_bigtiff and page.is_tiled and (page.tilelength, page.tilewidth) == (every, every)
        return page.asarray()


RNG = np.random.default_rng(7)
GREY = RNG.integers(0, 256, (77, 101), dtype=np.uint8)
RGB = RNG.integers(0, 256, (70, 45, 3), dtype=np.uint8)


@pytest.mark.parametrize("border", ["constant", "edge", "reflect", "symmetric", "wrap"])
@pytest.mark.parametrize("steps", [("sharpen",), ("edge",), ("sobel",), ("gaussian:sigma=1.5",),
                                   ("gaussian:sigma=1.5", "laplacian")])
def test_streamed_filters_equal_the_in_memory_result(tmp_path, border, steps):
    kernels = tuple(k for _, k in resolve_steps(steps))
    spec = ops.FilterSpec(kernels, border=border, cval=40)
    for data, write in ((GREY, {"tile": (16, 16)}), (RGB, {"photometric": "rgb", "compression": "zlib"})):
        got = _streamed(tmp_path, data, spec, **write)
        np.testing.assert_array_equal(got, _expected(spec, data))


@pytest.mark.parametrize("geometry", [{"stride": 2}, {"stride": (3, 2), "padding": "valid"},
                                      {"padding": ((5, 0), (2, 7)), "dilation": 2}])
def test_streamed_geometry_output_range_and_bias(tmp_path, geometry):
    spec = ops.FilterSpec((get_kernel("laplacian"),), border="reflect", output_range="offset", bias="10%", **geometry)
    got = _streamed(tmp_path, RGB, spec, every=16, photometric="rgb")
    np.testing.assert_array_equal(got, _expected(spec, RGB))


@pytest.mark.parametrize("spec", [ops.PoolSpec(2), ops.PoolSpec(3, 2, 1, "avg", ceil_mode=True),
                                  ops.PoolSpec((2, 3), None, 0, "min"),
                                  ops.PoolSpec(3, 2, 1, "avg", count_include_pad=False)])
def test_streamed_pooling_equals_the_in_memory_result(tmp_path, spec):
    for data, write in ((GREY, {}), (RGB, {"photometric": "rgb", "tile": (32, 32)})):
        got = _streamed(tmp_path, data, spec, every=16, **write)
        np.testing.assert_array_equal(got, _expected(spec, data))


def test_streamed_alpha_16_bit_float_planar_and_stripped_inputs(tmp_path):
    spec = ops.FilterSpec((get_kernel("gaussian", sigma=1.0),), border="edge")
    rgba = RNG.integers(0, 256, (50, 60, 4), dtype=np.uint8)
    got = _streamed(tmp_path, rgba, spec, photometric="rgb", extrasamples=["unassalpha"])
    np.testing.assert_array_equal(got, _expected(spec, rgba[:, :, :3], rgba[:, :, 3]))
    with tifffile.TiffFile(tmp_path / "out.tif") as tf:
        assert tf.pages.first.extrasamples == (2,)  # unassociated alpha, as it came
    grey16 = RNG.integers(0, 65536, (40, 70), dtype=np.uint16)
    got = _streamed(tmp_path, grey16, spec, rowsperstrip=3)  # stripped, 16-bit
    np.testing.assert_array_equal(got, _expected(spec, grey16, depth=16))
    planar = RNG.integers(0, 256, (3, 33, 47), dtype=np.uint8)  # separate planes
    got = _streamed(tmp_path, planar, spec, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(got, _expected(spec, planar.transpose(1, 2, 0)))
    floats = RNG.standard_normal((30, 41)).astype(np.float32)
    got = _streamed(tmp_path, floats, ops.FilterSpec((get_kernel("edge"),), border="wrap"), bigtiff=True)
    np.testing.assert_allclose(got, _expected(ops.FilterSpec((get_kernel("edge"),), border="wrap"), floats,
                                              depth=32), rtol=1e-6)


def test_tiffs_that_cannot_stream_are_one_clear_error(tmp_path):
    spec = ops.FilterSpec((get_kernel("edge"),))
    src = tmp_path / "pal.tif"
    tifffile.imwrite(src, GREY, photometric="palette", colormap=np.tile(np.arange(256, dtype=np.uint16) * 257, (3, 1)))
    with pytest.raises(stream.StreamError, match="PALETTE"):
        ops.process_file(src, tmp_path / "o.tif", spec=spec, stream=stream.Streaming(tile=16))
    src = tmp_path / "ints.tif"
    tifffile.imwrite(src, GREY.astype(np.int16))
    with pytest.raises(stream.StreamError, match="int16"):
        ops.process_file(src, tmp_path / "o.tif", spec=spec, stream=stream.Streaming(tile=16))
    tifffile.imwrite(src, GREY)
    with pytest.raises(ValueError, match="tiled TIFF"):
        ops.process_file(src, tmp_path / "o.png", spec=spec, stream=stream.Streaming(tile=16))
    from PIL import Image

    Image.fromarray(RGB).save(src, compression="tiff_lzw")
    if not stream._has_imagecodecs():
        with pytest.raises(stream.StreamError, match="LZW compression needs the imagecodecs package"):
            ops.process_file(src, tmp_path / "o.tif", spec=spec, stream=stream.Streaming(tile=16))
    with pytest.raises(ValueError, match="multiple of 16"):
        stream.Streaming(tile=100)
    assert not (tmp_path / "o.tif").exists() and not list(tmp_path.glob("*.part"))


def test_a_strip_larger_than_the_memory_limit_is_refused_before_it_is_read(tmp_path):
    # one strip of the whole image: a read of any row decodes all of it
    from cnnfilter.limits import memory_limit

    src = tmp_path / "one-strip.tif"
    tifffile.imwrite(src, np.zeros((4000, 3000), np.uint8), rowsperstrip=4000)
    # the file's failure (exit 1 in the CLI), as an image too large to decode in memory is
    with memory_limit(10 << 20), pytest.raises(stream.StreamError, match="cannot read .*one of its strips"):
        ops.process_file(src, tmp_path / "o.tif", spec=ops.PoolSpec(2), stream=stream.Streaming(tile=512))
    res = CliRunner().invoke(cli, ["pool", str(src), "--tile", "512", "--max-memory", "10M"])
    assert res.exit_code == 1 and "one of its strips" in res.output and len(res.output.strip().splitlines()) == 1


def test_max_pixels_refuses_a_streamed_tiff_in_one_file_and_in_a_batch(tmp_path):
    """--max-pixels holds a streamed TIFF too (Pillow's default limit does not: streaming is for larger images),
    before any tile is read; a batch's workers get the limit with the rest of the streaming settings."""
    big, small = tmp_path / "big.tif", tmp_path / "small.tif"
    tifffile.imwrite(big, RGB, photometric="rgb", tile=(16, 16))
    tifffile.imwrite(small, RGB[:20, :20], photometric="rgb", tile=(16, 16))
    with pytest.raises(stream.StreamError, match="45x70 is more pixels than --max-pixels allows"):
        ops.process_file(big, tmp_path / "o.tif", spec=ops.PoolSpec(2),
                         stream=stream.Streaming(tile=16, max_pixels=1000))
    assert not (tmp_path / "o.tif").exists()
    runner = CliRunner()
    one = runner.invoke(cli, ["pool", str(big), "--tile", "16", "--max-pixels", "1000"])
    assert one.exit_code == 1 and "--max-pixels" in one.output and len(one.output.strip().splitlines()) == 1
    out = tmp_path / "out"
    res = runner.invoke(cli, ["pool", str(big), str(small), "--tile", "16", "--max-pixels", "1000", "-j", "2",
                              "-o", str(out)])
    assert res.exit_code == 1 and "1 done, 1 failed" in res.output and "--max-pixels" in res.output
    assert sorted(p.name for p in out.iterdir()) == ["small.max2.tif"]
    assert runner.invoke(cli, ["pool", str(big), "--tile", "16", "-o", str(tmp_path / "p.tif")]).exit_code == 0


def test_size_decides_unless_tile_says(tmp_path, monkeypatch):
    src = tmp_path / "a.tif"
    tifffile.imwrite(src, GREY)
    assert not stream.Streaming().wants(src)  # small: in memory
    assert stream.Streaming(threshold=GREY.nbytes - 1).wants(src)
    assert stream.Streaming(tile=16).wants(src) and not stream.Streaming(tile=0, threshold=0).wants(src)
    import builtins

    real = builtins.__import__

    def without_tifffile(name, *args, **kwargs):
        if name == "tifffile":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    with monkeypatch.context() as patch:  # without the dask extra, a large TIFF is read in memory as before
        patch.setattr(builtins, "__import__", without_tifffile)
        assert not stream.Streaming(threshold=0).wants(src)
        with pytest.raises(stream.StreamError, match=r"pip install 'cnnfilter\[dask\]'"):  # --tile: what is missing
            ops.process_file(src, tmp_path / "o.tif", spec=ops.PoolSpec(2), stream=stream.Streaming(tile=16))
    png = tmp_path / "a.png"
    io.save_image(png, GREY)
    assert not stream.Streaming(tile=16).wants(png) and not stream.Streaming(tile=16).wants("-")


def test_cli_streams_a_tiff_twice_in_a_row_and_refuses_what_it_cannot_write(tmp_path):
    src = tmp_path / "scan.tif"
    tifffile.imwrite(src, RGB, photometric="rgb", tile=(16, 16), compression="zlib")
    runner = CliRunner()
    res = runner.invoke(cli, ["convolve", str(src), "-k", "sharpen", "--tile", "32"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "scan.sharpen.tif"
    np.testing.assert_array_equal(tifffile.imread(out), _expected(ops.FilterSpec((get_kernel("sharpen"),),
                                                                                 border="reflect"), RGB))
    with tifffile.TiffFile(out) as tf:
        assert tf.pages.first.compression == 8  # the input's deflate
    again = runner.invoke(cli, ["convolve", str(src), "-k", "sharpen", "--tile", "32"])
    assert again.exit_code != 0 and "exists" in again.output
    res = runner.invoke(cli, ["pool", str(src), "--tile", "32", "-o", str(tmp_path / "p.png")])
    assert res.exit_code == 2 and "tiled TIFF" in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(cli, ["pool", str(src), "--tile", "40"])
    assert res.exit_code == 2 and "multiple of 16" in res.output
    res = runner.invoke(cli, ["pool", str(src), "--tile", "16", "--raw", str(tmp_path / "r.npy")])
    assert res.exit_code == 2 and "--raw" in res.output


_RSS = """
import sys
from cnnfilter.cli import main
sys.argv = ["cnnfilter", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
# the process's own high-water mark (ru_maxrss would report the parent's, inherited at fork, when larger)
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print("maxrss", int(hwm.split()[1]) * 1024, file=sys.stderr)
"""


def _peak(*args) -> int:
    res = subprocess.run([sys.executable, "-c", _RSS, *map(str, args)], capture_output=True, text=True,
                         env={**os.environ, "CNNFILTER_MAX_MEMORY": "4G"})
    assert res.returncode == 0 and "wrote" in res.stderr, res.stderr
    return int(res.stderr.split("maxrss")[-1])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux's own high-water mark of memory")
def test_a_20000_square_tiff_streams_in_bounded_memory(tmp_path):
    n, t = 20_000, 256
    src = tmp_path / "big.tif"
    y, x = np.mgrid[0:t, 0:t]

    def tiles():
        for i in range(0, n, t):
            for j in range(0, n, t):
                yield (((y + i) * 7 + (x + j) * 13) ^ ((y + i) * (x + j) >> 5)).astype(np.uint8)

    tifffile.imwrite(src, tiles(), shape=(n, n), dtype=np.uint8, tile=(t, t), bigtiff=True)
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, GREY)
    base = _peak("convolve", small, "-k", "gaussian", "--sigma", "2", "--tile", "16")
    peak = _peak("convolve", src, "-k", "gaussian", "--sigma", "2", "--tile", "1024", "-o", tmp_path / "out.tif")
    # the process's own start-up (numba, dask, zarr, a small TIFF streamed) aside, a window of 1024-pixel tiles:
    # far below the image (400 MB of samples; 4 GB in memory as float32 with its padded copy)
    assert peak - base < n * n // 4, (peak, base)  # measured: 67 MB over the start-up's 217 MB
    kernel = get_kernel("gaussian", sigma=2)
    h = kernel.shape[0] // 2
    with tifffile.TiffFile(tmp_path / "out.tif") as out, tifffile.TiffFile(src) as inp:
        import zarr

        got, img = zarr.open(out.pages.first.aszarr(), mode="r"), zarr.open(inp.pages.first.aszarr(), mode="r")
        spec = ops.FilterSpec((kernel,), border="reflect")
        # crops at a corner, an edge and inside, with a halo of real pixels where the crop is not at the border
        for r0, c0 in ((0, 0), (n - 700, 9_000), (12_300, n - 500), (5_000, 7_777)):
            r1, c1 = min(n, r0 + 700), min(n, c0 + 700)
            a0, b0, a1, b1 = max(0, r0 - h), max(0, c0 - h), min(n, r1 + h), min(n, c1 + h)
            ref = _expected(spec, np.asarray(img[a0:a1, b0:b1]))[r0 - a0 : r1 - a0, c0 - b0 : c1 - b0]
            np.testing.assert_array_equal(np.asarray(got[r0:r1, c0:c1]), ref)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_streamed_tiffs_are_turned_upright_as_in_memory(tmp_path, orientation):
    src = tmp_path / "o.tif"
    tifffile.imwrite(src, GREY, extratags=[(274, "H", 1, orientation, True)])
    spec = ops.FilterSpec((get_kernel("sharpen"),), border="reflect")
    ops.process_file(src, tmp_path / "s.tif", spec=spec, stream=stream.Streaming(tile=16))
    ops.process_file(src, tmp_path / "m.tif", spec=spec, stream=stream.Streaming(tile=0))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "s.tif"), tifffile.imread(tmp_path / "m.tif"))


def test_what_cannot_stream_is_read_in_memory_unless_streaming_was_asked_for(tmp_path):
    rgba = RNG.integers(0, 256, (30, 40, 4), dtype=np.uint8)
    rgba[:, :, :3] = np.minimum(rgba[:, :, :3], rgba[:, :, 3:])
    src = tmp_path / "assoc.tif"
    tifffile.imwrite(src, rgba, photometric="rgb", extrasamples=["assocalpha"])
    spec = ops.FilterSpec((get_kernel("identity"),))
    with pytest.raises(stream.Unstreamable, match="premultiplied"):
        ops.process_file(src, tmp_path / "o.tif", spec=spec, stream=stream.Streaming(tile=16))
    ops.process_file(src, tmp_path / "o.tif", spec=spec, stream=stream.Streaming(threshold=0))  # by size: memory
    assert tifffile.imread(tmp_path / "o.tif").shape == (30, 40, 4)


def test_damaged_empty_and_multi_page_tiffs_are_one_line(tmp_path):
    spec = ops.FilterSpec((get_kernel("edge"),))
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"II*\x00\x00\x00\x00\x00")
    with pytest.raises(stream.StreamError, match="without pages"):
        ops.process_file(empty, tmp_path / "o.tif", spec=spec, stream=stream.Streaming(tile=16))
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, RNG.integers(0, 256, (64, 64), dtype=np.uint8), tile=(32, 32), compression="zlib")
    with tifffile.TiffFile(bad) as tf:
        offset = tf.pages.first.dataoffsets[1]
    data = bytearray(bad.read_bytes())
    data[offset + 2 : offset + 40] = b"\xff" * 38
    bad.write_bytes(bytes(data))
    with pytest.raises(stream.StreamError, match="cannot read"):
        ops.process_file(bad, tmp_path / "o.tif", spec=spec, stream=stream.Streaming(tile=16))
    assert not (tmp_path / "o.tif").exists() and not list(tmp_path.glob(".*part"))
    pages = tmp_path / "pages.tif"
    with tifffile.TiffWriter(pages) as tw:
        for _ in range(3):
            tw.write(GREY)
    from cnnfilter.io import ImageWriteError

    with pytest.raises(ImageWriteError, match="3 pages"):
        ops.process_file(pages, pages, spec=spec, stream=stream.Streaming(tile=16))
    assert len(tifffile.TiffFile(pages).pages) == 3
