"""Whole-picture operations: pipelines, gradient magnitudes, bias and the output-range mapping."""

import numpy as np
import pytest

import cnnfilter
from cnnfilter.io import Picture, to_depth
from cnnfilter.kernels import resolve_kernel
from cnnfilter.ops import filter_picture, map_output, parse_bias

from . import naive


def test_sobel_magnitude_is_hypot_of_opencv_sobel(rng):
    """-k sobel gives sqrt(gx² + gy²) of OpenCV's Sobel derivatives (BORDER_REFLECT_101 = reflect)."""
    cv2 = pytest.importorskip("cv2")
    img = rng.integers(0, 256, (30, 40), np.uint8)
    got = filter_picture(Picture(img), [resolve_kernel("sobel")[1]], border="reflect").pixels
    gx = cv2.Sobel(img.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(img.astype(np.float32), cv2.CV_32F, 0, 1, ksize=3)
    np.testing.assert_allclose(got, np.hypot(gx, gy), rtol=1e-5, atol=1e-3)


def test_default_output_range_is_abs_for_zero_sum_kernels(rng):
    """Edge kernels (sum 0) are written as |response|; smoothing/sharpening kernels are clipped. An 8-bit picture
    filtered by one kernel comes back as 8-bit samples, rounded and clipped in the filter's pass; a float picture
    keeps the float response."""
    img = rng.integers(0, 256, (12, 12), np.uint8)
    edge = cnnfilter.get_kernel("edge")
    got = filter_picture(Picture(img), [edge]).pixels
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, to_depth(np.abs(naive.correlate(img, edge)), 8))
    sharp = cnnfilter.get_kernel("sharpen")
    got = filter_picture(Picture(img), [sharp]).pixels
    np.testing.assert_array_equal(got, to_depth(naive.correlate(img, sharp), 8))
    got = filter_picture(Picture(img.astype(np.float32)), [sharp]).pixels
    np.testing.assert_allclose(got, naive.correlate(img, sharp), atol=1e-3)
    assert got.min() < 0  # a float response: clipping happens when written


def test_output_ranges_and_bias():
    """offset adds mid-grey, normalize stretches min..max (constant -> 0), bias accepts a percentage."""
    v = np.array([[-10.0, 0.0, 10.0]])
    np.testing.assert_array_equal(map_output(v, "offset", 8), [[118, 128, 138]])
    np.testing.assert_array_equal(map_output(v, "normalize", 8), [[0, 127.5, 255]])
    np.testing.assert_array_equal(map_output(v, "normalize", 16), [[0, 32767.5, 65535]])
    np.testing.assert_array_equal(map_output(np.full((2, 2), 7.0), "normalize", 8), np.zeros((2, 2)))
    np.testing.assert_array_equal(map_output(v, "abs", 8), [[10, 0, 10]])
    assert parse_bias("50%", 8) == 127.5 and parse_bias("10", 16) == 10.0 and parse_bias("50%", 16) == 65535 / 2
    with pytest.raises(ValueError, match="output_range 'wrap' is not one of clip, abs, normalize, offset"):
        map_output(v, "wrap", 8)
    with pytest.raises(ValueError, match="bias 'x%' is not a number or a percentage"):
        parse_bias("x%", 8)


def test_pipeline_changes_size_once_and_keeps_alpha(rng):
    """A two-kernel pipeline with stride 2 halves the image once; alpha follows the first step only."""
    img = rng.integers(0, 256, (16, 10, 3), np.uint8)
    alpha = rng.integers(0, 256, (16, 10), np.uint8)
    steps = [cnnfilter.get_kernel("box"), cnnfilter.get_kernel("sharpen")]
    out = filter_picture(Picture(img, alpha), steps, stride=2)
    assert out.pixels.shape == (8, 5, 3) and out.alpha.shape == (8, 5)
    np.testing.assert_array_equal(out.alpha, alpha[::2, ::2])


def test_alpha_filter_leaves_no_dark_halo():
    """A white opaque square on transparent black: blurring with --alpha filter keeps the colour white where any
    alpha remains (premultiplied); the plain filter darkens the edge."""
    px = np.zeros((9, 9, 3), np.uint8)
    alpha = np.zeros((9, 9), np.uint8)
    px[3:6, 3:6] = 255
    alpha[3:6, 3:6] = 255
    box = cnnfilter.get_kernel("box")
    plain = filter_picture(Picture(px, alpha), [box])
    assert plain.pixels[3, 3, 0] < 255 * 0.5  # the edge pixel averages in the black
    premult = filter_picture(Picture(px, alpha), [box], alpha="filter")
    visible = premult.alpha > 0
    np.testing.assert_allclose(premult.pixels[visible], 255, rtol=1e-5)
    assert premult.alpha[3, 3] == pytest.approx(255 * 4 / 9)  # alpha itself is blurred
    with pytest.raises(ValueError, match="alpha 'blend' is not one of keep, filter"):
        filter_picture(Picture(px, alpha), [box], alpha="blend")


def test_gray_uses_luma(rng):
    px = rng.integers(0, 256, (5, 6, 3), np.uint8)
    out = filter_picture(Picture(px), [cnnfilter.get_kernel("identity")], gray=True)
    np.testing.assert_allclose(out.pixels, px @ np.array([0.299, 0.587, 0.114]), atol=1e-3)


@pytest.mark.parametrize("alpha", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_apply_on_pillow_memory_equals_apply_on_arrays(alpha, stride, rng, tmp_path):
    """A picture read from a file (pixels and alpha viewed in Pillow's 4-byte memory, filtered there) gives the
    same pixels and alpha as the same picture built from plain arrays, and writes the same file."""
    from PIL import Image

    from cnnfilter.io import read_picture, write_picture
    from cnnfilter.ops import FilterSpec, apply

    arr = rng.integers(0, 256, (21, 18, 4 if alpha else 3)).astype(np.uint8)
    Image.fromarray(arr).save(tmp_path / "in.png")
    pic = read_picture(tmp_path / "in.png")
    plain = Picture(arr[:, :, :3].copy(), arr[:, :, 3].copy() if alpha else None, 8, dict(pic.info))
    for name in ("sharpen", "edge", "blur", "gaussian"):
        spec = FilterSpec((cnnfilter.get_kernel(name),), border="reflect", stride=stride)
        a, b = apply(spec, pic), apply(spec, plain)
        np.testing.assert_array_equal(a.pixels, b.pixels)
        assert (a.alpha is None) == (not alpha)
        if alpha:
            np.testing.assert_array_equal(a.alpha, b.alpha)
        write_picture(a, tmp_path / "a.png")
        write_picture(b, tmp_path / "b.png")
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")),
                                      np.asarray(Image.open(tmp_path / "b.png")))


@pytest.mark.parametrize("engine", ["compiled", "numpy"])
def test_every_named_kernel_gives_what_float_then_rounding_gives(engine, rng, monkeypatch):
    """For every named kernel (and its default output range), on 8-bit RGB with and without alpha and 16-bit
    grey, at stride 1 and 2: apply's samples (rounded in the filter's pass) equal filtering into float and
    rounding when written, as before the fused path. On the numpy engine float kernels (gaussian, log, dog, ...)
    add their taps in another order than the float path (rank-1 ones in two passes), so a value on a rounding
    tie may go the other way: within 1; integer kernels are exact there too."""
    from cnnfilter import config
    from cnnfilter.io import to_depth
    from cnnfilter.kernels import Magnitude, list_kernels
    from cnnfilter.ops import FilterSpec, apply, default_output_range

    monkeypatch.setattr(config, "ENGINE", engine)
    rgb = rng.integers(0, 256, (23, 19, 3)).astype(np.uint8)
    alpha = rng.integers(0, 256, (23, 19)).astype(np.uint8)
    grey16 = rng.integers(0, 65536, (23, 19)).astype(np.uint16)
    for info in list_kernels():
        k = resolve_kernel(info.name)[1]
        for pic in (Picture(rgb), Picture(rgb, alpha), Picture(grey16, None, 16)):
            for stride in (1, 2):
                spec = FilterSpec((k,), border="reflect", stride=stride)
                got = apply(spec, pic)
                values = Picture(pic.pixels.astype(np.float32), pic.alpha, pic.depth)
                ref = apply(spec, values)  # the float path: filter, map, round when written
                a = to_depth(np.asarray(got.pixels, np.float32), pic.depth).astype(np.int64)
                b = to_depth(ref.pixels, pic.depth).astype(np.int64)
                exact = engine == "compiled" or isinstance(k, Magnitude) or np.array_equal(k, np.round(k))
                assert np.abs(a - b).max() <= (0 if exact else 1), f"{info.name} stride {stride}"
                assert (got.alpha is None) == (pic.alpha is None)
                assert default_output_range((k,)) == spec.range
