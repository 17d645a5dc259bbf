"""correlate2d / convolve2d against the naive reference, scipy and OpenCV; the seeds' worked examples; properties."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cnnfilter
from cnnfilter import convolve2d, correlate2d

from . import naive

BORDERS = ["constant", "edge", "reflect", "symmetric", "wrap"]
IMAGE_SHAPES = [(1, 1), (1, 9), (9, 1), (7, 7), (6, 11), (12, 5)]
KERNEL_SHAPES = [(1, 1), (1, 4), (3, 1), (2, 2), (3, 3), (5, 5), (4, 6), (9, 9), (13, 13)]
PADDINGS = ["same", "valid", "full", 2, (1, 3), ((0, 2), (3, 1))]
GEOMETRY = [(1, 1), (2, 1), (1, 2), ((3, 2), (1, 2))]  # (stride, dilation)


def _close(got, ref, rtol=2e-5):
    assert got.shape == ref.shape
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=0, atol=rtol * scale * 10)


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize(("img_shape", "k_shape"), list(itertools.product(IMAGE_SHAPES, KERNEL_SHAPES)))
def test_matches_naive_every_border_padding_and_geometry(method, img_shape, k_shape, rng):
    """Every border x padding form, with strides and dilations, on odd shapes, equals the naive loops."""
    for C in (None, 3):
        img = rng.normal(size=img_shape if C is None else (*img_shape, C)).astype(np.float32)
        k = rng.normal(size=k_shape)
        for n, (border, padding) in enumerate(itertools.product(BORDERS, PADDINGS)):
            stride, dilation = GEOMETRY[n % len(GEOMETRY)]
            ref_shape = naive.correlate(np.zeros(img_shape), k, stride, padding, dilation).shape
            if min(ref_shape) < 1:
                with pytest.raises(ValueError, match="padding|output"):
                    correlate2d(img, k, stride=stride, padding=padding, dilation=dilation, border=border)
                continue
            ref = naive.correlate(img, k, stride, padding, dilation, border, cval=0.75)
            got = correlate2d(img, k, stride=stride, padding=padding, dilation=dilation, border=border, cval=0.75,
                              method=method)
            assert got.dtype == np.float32
            _close(got, ref)


@pytest.mark.parametrize("k_shape", [(3, 3), (5, 5), (1, 7), (7, 7), (15, 15), (31, 31), (6, 4)])
@pytest.mark.parametrize("border", BORDERS)
def test_separable_path_equals_naive(k_shape, border, rng):
    """Rank-1 kernels through the separable path (also chosen by auto) give the naive result."""
    img = rng.integers(0, 256, size=(40, 33, 2)).astype(np.uint8)
    k = np.outer(rng.normal(size=k_shape[0]), rng.normal(size=k_shape[1]))
    for stride, dilation in GEOMETRY:
        ref = naive.correlate(img, k, stride, "same", dilation, border, cval=9.0)
        for method in ("separable", "auto"):
            got = correlate2d(img, k, stride=stride, dilation=dilation, border=border, cval=9.0, method=method)
            _close(got, ref)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64, bool])
def test_dtypes(dtype, rng):
    """Any integer or float input gives float32, float64 gives float64, and the values match the naive loops."""
    img = (rng.random((10, 8, 3)) * 200).astype(dtype)
    k = rng.normal(size=(3, 3))
    got = correlate2d(img, k, border="symmetric")
    assert got.dtype == (np.float64 if dtype == np.float64 else np.float32)
    _close(got, naive.correlate(img.astype(np.float64), k, border="symmetric"))


def test_float64_is_computed_in_float64(rng):
    """float64 keeps float64 precision (the gradient checks of the tiny CNN need it)."""
    img = rng.normal(size=(20, 20))
    k = rng.normal(size=(5, 5))
    for method in ("direct", "fft"):
        np.testing.assert_allclose(correlate2d(img, k, method=method), naive.correlate(img, k), atol=1e-11)


# ------------------------------------------------------------------------- peers where conventions coincide

SCIPY_MODES = {"constant": "constant", "edge": "nearest", "reflect": "mirror", "symmetric": "reflect",
               "wrap": "grid-wrap"}


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("k_shape", [(3, 3), (5, 5), (4, 4), (2, 5), (7, 3)])
def test_matches_scipy_ndimage(border, k_shape, rng):
    """'same' correlate2d is scipy.ndimage.correlate (origin -1 on even axes); convolve2d is ndimage.convolve."""
    sp = pytest.importorskip("scipy.ndimage")
    img = rng.normal(size=(23, 17)).astype(np.float32)
    k = rng.normal(size=k_shape)
    origin = [-1 if n % 2 == 0 else 0 for n in k_shape]
    ref = sp.correlate(img.astype(np.float64), k, mode=SCIPY_MODES[border], cval=0.0, origin=origin)
    _close(correlate2d(img, k, border=border), ref)
    ref = sp.convolve(img.astype(np.float64), k, mode=SCIPY_MODES[border], cval=0.0)
    _close(convolve2d(img, k, border=border), ref)


CV_BORDERS = {"constant": "BORDER_CONSTANT", "edge": "BORDER_REPLICATE", "reflect": "BORDER_REFLECT_101",
              "symmetric": "BORDER_REFLECT"}


@pytest.mark.parametrize("border", list(CV_BORDERS))
@pytest.mark.parametrize("k_shape", [(3, 3), (5, 5), (4, 2), (1, 9)])
def test_matches_opencv_filter2d(border, k_shape, rng):
    """correlate2d 'same' is cv2.filter2D with anchor ((kw-1)//2, (kh-1)//2), RGB included."""
    cv2 = pytest.importorskip("cv2")
    img = rng.integers(0, 256, size=(31, 29, 3)).astype(np.float32)
    k = rng.normal(size=k_shape).astype(np.float32)
    anchor = ((k_shape[1] - 1) // 2, (k_shape[0] - 1) // 2)
    ref = cv2.filter2D(img, -1, k, anchor=anchor, borderType=getattr(cv2, CV_BORDERS[border]))
    _close(correlate2d(img, k, border=border), ref.astype(np.float64))


# ------------------------------------------------------------------------------------ the seeds' examples

SEED_PATCH = np.array([[105, 102, 100, 97, 96], [103, 99, 103, 101, 102], [101, 98, 104, 102, 100],
                       [99, 101, 106, 104, 99], [104, 104, 104, 100, 98]])
SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]])
EDGE = np.array([[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])


def test_seed_003_sharpen_top_left_is_320():
    """Seed 003: the sharpen kernel on the zero-padded patch gives 320 at the top-left."""
    out = correlate2d(SEED_PATCH.astype(np.uint8), SHARPEN, padding=1)
    assert out[0, 0] == 320


def test_seed_004_sharpen_top_left_is_114():
    """Seed 004: the same kernel on another zero-padded 5x5 image gives 114."""
    img = np.array([[60, 113, 56, 139, 85], [73, 121, 54, 84, 128], [131, 99, 70, 129, 127],
                    [80, 57, 115, 69, 134], [104, 126, 123, 95, 130]], np.uint8)
    assert correlate2d(img, SHARPEN)[0, 0] == 114


def test_seed_003_edge_map():
    """Seed 003: the 8-neighbour edge kernel on the 5x5 binary image gives the full 5x5 map."""
    img = np.array([[1, 1, 0, 0, 1], [1, 0, 0, 1, 1], [0, 0, 1, 1, 1], [1, 0, 0, 1, 1], [1, 1, 0, 0, 1]])
    want = np.array([[6, 6, -2, -3, 6], [6, -4, -4, 3, 4], [-2, -3, 5, 2, 3], [6, -4, -4, 3, 4],
                     [6, 6, -2, -3, 6]])
    np.testing.assert_array_equal(correlate2d(img, EDGE), want)
    np.testing.assert_array_equal(correlate2d(img, cnnfilter.get_kernel("edge")), want)


def test_seed_004_three_channel_kernel_with_bias_gives_minus_25():
    """Seed 004: a 3-channel 3x3 kernel with bias 1 on the zero-padded RGB corner gives -25 (308 - 498 + 164 + 1)."""
    r = np.array([[156, 155, 156, 158, 158], [153, 154, 157, 159, 159], [149, 151, 155, 158, 159],
                  [146, 146, 149, 153, 158], [145, 143, 143, 148, 158]])
    g = np.array([[167, 166, 167, 169, 169], [164, 165, 168, 170, 170], [160, 162, 166, 169, 170],
                  [156, 156, 159, 163, 168], [155, 153, 153, 158, 168]])
    b = np.array([[163, 162, 163, 165, 165], [160, 161, 164, 166, 166], [156, 158, 162, 165, 166],
                  [155, 155, 158, 162, 167], [154, 152, 152, 157, 167]])
    w = np.array([[[-1, -1, 1], [0, 1, -1], [0, 1, 1]],
                  [[1, 0, 0], [1, -1, -1], [1, 0, -1]],
                  [[0, 1, 1], [0, 1, 0], [1, -1, 1]]])
    per_channel = [correlate2d(ch, k, padding=1)[0, 0] for ch, k in zip((r, g, b), w)]
    assert per_channel == [308, -498, 164]
    out = cnnfilter.conv2d(np.stack([r, g, b]), w[None], np.array([1.0]), padding=1)
    assert out.shape == (1, 5, 5)
    assert out[0, 0, 0] == -25


def test_seed_001_x_filter_feature_map():
    """Seed 001: the 3x3 'X' filter slid over the 5x5 binary image without padding gives the 3x3 feature map."""
    img = np.array([[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]])
    x_filter = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]])
    np.testing.assert_array_equal(correlate2d(img, x_filter, padding="valid"), [[4, 3, 4], [2, 4, 3], [2, 3, 4]])


def test_seed_004_output_sizes_7x7():
    """Seed 004: a 7x7 image and a 3x3 kernel without padding give 5x5 at stride 1 and 3x3 at stride 2."""
    img = np.arange(49).reshape(7, 7)
    k = np.ones((3, 3))
    assert correlate2d(img, k, padding="valid").shape == (5, 5)
    assert correlate2d(img, k, padding=0, stride=2).shape == (3, 3)
    assert correlate2d(img, k, padding=1).shape == (7, 7)


# ----------------------------------------------------------------------------------------------- properties

small = st.integers(1, 9)
images = st.tuples(small, small).flatmap(
    lambda s: hnp.arrays(np.float64, s, elements=st.floats(-100, 100, width=32)))
kernels = st.tuples(st.integers(1, 5), st.integers(1, 5)).flatmap(
    lambda s: hnp.arrays(np.float64, s, elements=st.floats(-4, 4, width=32)))


@settings(max_examples=60, deadline=None)
@given(img=images, border=st.sampled_from(BORDERS))
def test_identity_kernel_returns_the_input(img, border):
    """A 1 surrounded by zeros (any odd size) returns the image, whatever the border."""
    for size in (1, 3, 5):
        k = np.zeros((size, size))
        k[size // 2, size // 2] = 1
        np.testing.assert_array_equal(correlate2d(img.astype(np.float32), k, border=border),
                                      img.astype(np.float32))


@settings(max_examples=60, deadline=None)
@given(a=images, k1=kernels, data=st.data())
def test_linearity_in_image_and_kernel(a, k1, data):
    """f(2a + 3b, k) = 2 f(a, k) + 3 f(b, k) and f(a, k1 + k2) = f(a, k1) + f(a, k2)."""
    b = data.draw(hnp.arrays(np.float64, a.shape, elements=st.floats(-100, 100, width=32)))
    k2 = data.draw(hnp.arrays(np.float64, k1.shape, elements=st.floats(-4, 4, width=32)))
    border = data.draw(st.sampled_from(BORDERS))
    f = lambda x, k: correlate2d(x, k, border=border)  # noqa: E731
    np.testing.assert_allclose(f(2 * a + 3 * b, k1), 2 * f(a, k1) + 3 * f(b, k1), atol=1e-8)
    np.testing.assert_allclose(f(a, k1 + k2), f(a, k1) + f(a, k2), atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(k=kernels, dy=st.integers(0, 4), dx=st.integers(0, 4), seed=st.integers(0, 2**31))
def test_shift_equivariance_away_from_borders(k, dy, dx, seed):
    """Shifting the image shifts the 'valid' output by the same amount."""
    img = np.random.default_rng(seed).normal(size=(20, 20))
    a = correlate2d(img[dy:, dx:], k, padding="valid")
    b = correlate2d(img, k, padding="valid")[dy:, dx:]
    np.testing.assert_allclose(a, b, atol=1e-10)


@settings(max_examples=60, deadline=None)
@given(img=images, k=kernels, border=st.sampled_from(BORDERS), stride=st.integers(1, 3))
def test_convolve_is_correlate_with_the_flipped_kernel(img, k, border, stride):
    """convolve2d(x, k) == correlate2d(x, flip(k)) for every geometry."""
    a = convolve2d(img, k, border=border, stride=stride)
    b = correlate2d(img, k[::-1, ::-1], border=border, stride=stride)
    np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None)
@given(img=images, k=kernels, border=st.sampled_from(BORDERS), stride=st.integers(1, 3))
def test_strided_same_is_the_stride_1_result_subsampled(img, k, border, stride):
    """'same' at stride s samples the stride-1 result at every s-th pixel; the size is ceil(H / s)."""
    full = correlate2d(img, k, border=border)
    got = correlate2d(img, k, border=border, stride=stride)
    assert got.shape == tuple(-(-n // stride) for n in img.shape)
    np.testing.assert_allclose(got, full[::stride, ::stride], atol=1e-10)


@settings(max_examples=40, deadline=None)
@given(img=images, data=st.data())
def test_separable_and_fft_equal_direct(img, data):
    """The separable and FFT paths equal the direct one within float32 tolerance."""
    taps = st.floats(-3, 3, width=32, allow_subnormal=False)
    u = data.draw(hnp.arrays(np.float64, data.draw(st.integers(1, 7)), elements=taps))
    v = data.draw(hnp.arrays(np.float64, data.draw(st.integers(1, 7)), elements=taps))
    k = np.outer(u, v)
    border = data.draw(st.sampled_from(BORDERS))
    x = img.astype(np.float32)
    direct = correlate2d(x, k, border=border, method="direct").astype(np.float64)
    scale = max(1.0, np.abs(direct).max())
    for method in ("fft", "separable"):
        got = correlate2d(x, k, border=border, method=method)
        np.testing.assert_allclose(got, direct, atol=2e-5 * scale * k.size)


def test_out_writes_into_the_callers_array(rng):
    """out= receives the result and is returned; a wrong shape or dtype is refused."""
    img = rng.normal(size=(16, 12)).astype(np.float32)
    k = rng.normal(size=(3, 3))
    buf = np.full((16, 12), np.nan, np.float32)
    res = correlate2d(img, k, out=buf)
    assert res is buf
    _close(buf, naive.correlate(img, k))
    with pytest.raises(ValueError, match=r"out has shape \(16, 11\)"):
        correlate2d(img, k, out=np.empty((16, 11), np.float32))
    with pytest.raises(ValueError, match="dtype float64"):
        correlate2d(img, k, out=np.empty((16, 12), np.float64))
    with pytest.raises(ValueError, match="out shares memory with image"):
        correlate2d(img, k, out=img)


def test_auto_picks_paths_by_the_documented_rule():
    """auto: rank-1 kernels from 5x5 go separable, 15x15+ dense kernels on big images go to the FFT."""
    from cnnfilter.filters import _choose

    g = cnnfilter.get_kernel("gaussian", sigma=2)
    dense = np.random.default_rng(0).normal(size=(15, 15))
    def path(k, stride=(1, 1), pixels=10**6):
        return _choose("auto", k, stride, pixels)[0]

    assert path(g) == "separable"
    assert path(dense) == "fft"
    assert path(dense, stride=(2, 2)) == "direct"
    assert path(dense, pixels=100) == "direct"
    assert path(np.ones((3, 3))) == "direct"
    assert path(np.ones((5, 5))) == "separable"
    assert path(np.ones((1, 9))) == "direct"
    assert path(dense[:13, :13]) == "direct"


# ------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("kwargs", "exc", "message"), [
    ({"border": "mirrored"}, ValueError, "border 'mirrored' is not one of constant, edge, reflect, symmetric, wrap"),
    ({"stride": 0}, ValueError, "stride 0 must be at least 1"),
    ({"stride": -2}, ValueError, "stride -2 must be at least 1"),
    ({"dilation": (1, 0)}, ValueError, r"dilation \(1, 0\) must be at least 1"),
    ({"stride": 1.5}, TypeError, "stride 1.5 is not an int or a pair"),
    ({"padding": "half"}, ValueError, "padding 'half' is not one of 'same', 'valid', 'full'"),
    ({"padding": -1}, ValueError, "padding -1 must be at least 0"),
    ({"method": "winograd"}, ValueError, "method 'winograd' is not one of auto, direct, separable, fft"),
    ({"cval": float("nan")}, ValueError, "cval nan must be finite"),
])
def test_bad_arguments_name_the_parameter(kwargs, exc, message):
    """Errors name the parameter, the value received and what is allowed."""
    with pytest.raises(exc, match=message):
        correlate2d(np.ones((5, 5)), np.ones((3, 3)), **kwargs)


def test_bad_kernels_and_images():
    """NaN/inf kernels, non-2-D kernels, empty or 4-D images, complex data and impossible outputs are refused."""
    img = np.ones((5, 5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        correlate2d(img, [[1, np.nan]])
    with pytest.raises(ValueError, match="NaN or infinite"):
        correlate2d(img, [[1, np.inf]])
    with pytest.raises(ValueError, match="must be 2-D"):
        correlate2d(img, [1, 2, 3])
    with pytest.raises(ValueError, match="must not be empty"):
        correlate2d(img, np.ones((0, 3)))
    with pytest.raises(ValueError, match="expected \\(H, W\\)"):
        correlate2d(np.ones((2, 2, 2, 2)), np.ones((1, 1)))
    with pytest.raises(ValueError, match="must not be empty"):
        correlate2d(np.ones((0, 4)), np.ones((1, 1)))
    with pytest.raises(TypeError, match="complex"):
        correlate2d(np.ones((4, 4), complex), np.ones((1, 1)))
    with pytest.raises(ValueError, match="'valid' needs the kernel .* to fit in the image"):
        correlate2d(img, np.ones((7, 7)), padding="valid")
    with pytest.raises(ValueError, match="output would be"):
        correlate2d(img, np.ones((3, 3)), padding=0, dilation=4)
    with pytest.raises(ValueError, match="rank-1"):
        correlate2d(img, np.eye(3), method="separable")


def test_nan_stays_local_under_auto(rng):
    """auto never takes the FFT for an image with NaN/inf: one NaN pixel spoils only the windows that hold it."""
    img = rng.random((256, 256)).astype(np.float32)
    img[100, 100] = np.nan
    k = rng.normal(size=(15, 15))
    auto = correlate2d(img, k)
    assert np.isnan(auto).sum() == 15 * 15
    np.testing.assert_array_equal(np.isnan(auto), np.isnan(correlate2d(img, k, method="direct")))


def test_byte_orders_and_float64_precision(rng):
    """A big-endian float64 image is computed and returned in float64; a near-rank-1 float64 kernel stays exact."""
    img = rng.normal(size=(30, 30)).astype(">f8")
    assert correlate2d(img, np.ones((3, 3))).dtype == np.float64
    k = cnnfilter.get_kernel("gaussian", sigma=2) + 2e-10 * rng.normal(size=(13, 13))
    x = rng.normal(size=(40, 40))
    np.testing.assert_allclose(correlate2d(x, k), naive.correlate(x, k), atol=1e-13)


def test_cval_must_fit_the_result_dtype():
    """A cval beyond float32's range is refused for a float32 result, accepted for float64."""
    with pytest.raises(ValueError, match="cval 1e\\+39 is outside the range of the float32 result"):
        correlate2d(np.ones((5, 5), np.float32), np.ones((3, 3)), cval=1e39)
    assert np.isfinite(correlate2d(np.ones((5, 5)), np.ones((1, 1)), cval=1e39)).all()
    with pytest.raises(TypeError, match="cval 'x' is not a number"):
        correlate2d(np.ones((5, 5)), np.ones((3, 3)), cval="x")


def test_near_rank1_kernel_is_not_factored(rng):
    """A rank-1 kernel plus a 1% bump is not rank 1: auto must not take the separable path."""
    from cnnfilter.kernels import rank1_factors as _rank1

    k = np.outer(rng.normal(size=5), rng.normal(size=5))
    k[2, 2] += 0.01 * np.abs(k).max()
    assert _rank1(k.astype(np.float32)) is None
    img = rng.normal(size=(40, 40)).astype(np.float32)
    _close(correlate2d(img, k), naive.correlate(img, k))


@pytest.mark.parametrize("k_shape", [(3, 3), (5, 5), (2, 4), (7, 7), (1, 5)])
@pytest.mark.parametrize("border", BORDERS)
def test_numpy_engine_is_bit_identical_for_integer_kernels(k_shape, border, rng, monkeypatch):
    """Small integer images with integer kernels on the numpy engine (no numba to load) equal the compiled loops
    bit for bit, for every border, padding, stride and dilation."""
    from cnnfilter import config

    k = rng.integers(-8, 9, size=k_shape)
    for C in (None, 3):
        img = rng.integers(0, 256, size=(17, 13) if C is None else (17, 13, C)).astype(np.uint8)
        for (stride, dilation), padding in zip(GEOMETRY, PADDINGS):
            kw = {"stride": stride, "dilation": dilation, "padding": padding, "border": border, "cval": 2.0}
            monkeypatch.setattr(config, "ENGINE", "numpy")
            try:
                by_numpy = correlate2d(img, k, **kw)
            except ValueError:
                continue
            monkeypatch.setattr(config, "ENGINE", "compiled")
            np.testing.assert_array_equal(by_numpy, correlate2d(img, k, **kw))
            np.testing.assert_array_equal(by_numpy, naive.correlate(img, k, stride, padding, dilation, border, 2.0))


@pytest.mark.parametrize("border", BORDERS)
def test_source_index_is_numpy_pad(border):
    """The numpy engine's own padding map equals numpy.pad's, pads far wider than the image included."""
    from cnnfilter._small import source_index

    extra = {"constant_values": -1} if border == "constant" else {}
    for n in range(1, 9):
        for before in range(0, 19, 3):
            for after in (0, 1, 2, 7, 18):
                ref = np.pad(np.arange(n), (before, after), mode=border, **extra)
                np.testing.assert_array_equal(source_index(n, before, after, border), ref)


@pytest.mark.parametrize("border", BORDERS)
@pytest.mark.parametrize("block_bytes", [1, 64, 1 << 22])
def test_numpy_engine_pads_block_by_block_as_numpy_pad(border, block_bytes, rng, monkeypatch):
    """The numpy engine pads each block of rows itself (never the whole image): blocks of one row up to the whole
    image, pads wider than the image (a 9x9 kernel on 1x1 to 3x2 images, 'full' padding) and every border give
    the definition's result, integer kernels to the bit."""
    from cnnfilter import _small, config

    monkeypatch.setattr(config, "ENGINE", "numpy")
    monkeypatch.setattr(_small, "BLOCK_BYTES", block_bytes)
    for shape in [(1, 1), (2, 3), (3, 2), (1, 7), (11, 4)]:
        for k_shape in [(9, 9), (3, 5), (1, 3), (4, 1)]:
            k = rng.integers(-4, 5, size=k_shape)
            img = rng.integers(0, 256, size=(*shape, 4)).astype(np.uint8)
            for padding in ("same", "full"):
                got = correlate2d(img, k, padding=padding, border=border, cval=7.0)
                ref = naive.correlate(img, k, padding=padding, border=border, cval=7.0)
                np.testing.assert_array_equal(got, ref)
            fk = k / 7.0
            _close(correlate2d(img, fk, border=border, cval=7.0), naive.correlate(img, fk, border=border, cval=7.0))


@pytest.mark.parametrize("k_shape", [(3, 3), (5, 5), (7, 7), (11, 11)])
def test_numpy_engine_float_kernels_within_float32_rounding(k_shape, rng, monkeypatch):
    """Float kernels (blur, gaussian, log) on 8-bit images take the numpy engine too, within float32 rounding of
    the compiled loops; float images and large images always take the compiled loops (the same bits whatever
    the engine setting)."""
    from cnnfilter import config

    k = rng.normal(size=k_shape).astype(np.float32)
    img = rng.integers(0, 256, size=(29, 31, 3)).astype(np.uint8)
    monkeypatch.setattr(config, "ENGINE", "numpy")
    by_numpy = correlate2d(img, k, border="reflect")
    fimg = img.astype(np.float32)
    f_numpy = correlate2d(fimg, k, border="reflect")
    monkeypatch.setattr(config, "ENGINE", "compiled")
    compiled = correlate2d(img, k, border="reflect")
    assert not np.array_equal(by_numpy, compiled) or k.size == 9  # different sums: the test can tell them apart
    np.testing.assert_allclose(by_numpy, compiled, rtol=0, atol=1e-5 * 255 * np.abs(k).sum())
    np.testing.assert_array_equal(f_numpy, correlate2d(fimg, k, border="reflect"))
    monkeypatch.setattr(config, "ENGINE", "numpy")
    monkeypatch.setattr(config, "NUMPY_MAX_PIXELS", 100)
    np.testing.assert_array_equal(correlate2d(img, k, border="reflect"), compiled)


@pytest.mark.parametrize("engine", ["compiled", "numpy"])
@pytest.mark.parametrize("lanes", [1, 3, 4])
@pytest.mark.parametrize("depth", [8, 16])
def test_samples_equal_filtering_into_float_then_rounding(engine, lanes, depth, rng, monkeypatch):
    """correlate_samples (bias, output range, rounding and clipping in the filter's pass) gives exactly what
    filtering into float and rounding with io.to_depth gives, for 3x3/5x5 (fused) and other kernels, every
    border and output range, strides, integer and float kernels, on 1, 3 and 4-lane pixels (4: Pillow's RGBX
    with 3 filtered lanes and the 4th copied)."""
    from cnnfilter import config
    from cnnfilter.filters import Samples, correlate_samples
    from cnnfilter.io import to_depth
    from cnnfilter.ops import map_output

    monkeypatch.setattr(config, "ENGINE", engine)
    top = 255 if depth == 8 else 65535
    dtype = np.uint8 if depth == 8 else np.uint16
    C = 3 if lanes == 4 else lanes
    for trial in range(24):
        H, W = (int(v) for v in rng.integers(1, 30, 2))
        x = rng.integers(0, top + 1, (H, W, lanes)).astype(dtype)
        size = [3, 5, 2, 7][trial % 4]
        k = rng.normal(size=(size, size)).astype(np.float32)
        if trial % 2:
            k = np.round(k * 3)
        if trial % 6 == 5:  # rank 1: the float path takes the separable loop at 5x5, so must the samples
            k = np.outer(rng.normal(size=size), rng.normal(size=size)).astype(np.float32)
        border = BORDERS[trial % len(BORDERS)]
        output_range = ["clip", "abs", "offset"][trial % 3]
        bias = [0.0, 2.5, -10.0, 7.0][trial % 4]
        kw = {"border": border, "cval": 3.0, "stride": 1 if trial % 5 else 2}
        image = x if lanes > 1 else x[:, :, 0]
        got = correlate_samples(image, k, Samples(depth, output_range, bias), channels=C, **kw)
        ref = correlate2d(x[:, :, :C] if lanes > 1 else x[:, :, 0], k, **kw)
        ref = to_depth(map_output(ref + bias if bias else ref, output_range, depth), depth)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got[:, :, :C] if lanes > 1 else got, ref)
        if lanes == 4:
            np.testing.assert_array_equal(got[:, :, 3], x[:, :, 3] if got.shape[:2] == (H, W) else top)


def test_samples_read_strided_pillow_layout(rng):
    """A (H, W, 3) view of 4-byte pixels (Pillow's RGB memory) is filtered in place of a packed copy, with the
    same result."""
    from cnnfilter.filters import Samples, correlate_samples

    x4 = rng.integers(0, 256, (20, 17, 4)).astype(np.uint8)
    view = x4[:, :, :3]
    k = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
    got = correlate_samples(view, k, Samples(8), border="reflect")
    want = correlate_samples(np.ascontiguousarray(view), k, Samples(8), border="reflect")
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="depth must be 8 or 16"):
        correlate_samples(view, k, Samples(12))
    with pytest.raises(ValueError, match="channels 5 must be between 1 and 3"):
        correlate_samples(view, k, Samples(8), channels=5)


@pytest.mark.parametrize("engine", ["compiled", "numpy"])
def test_samples_of_another_depth_and_out_of_range_cval(engine, rng, monkeypatch):
    """16-bit images into 8-bit samples and back, with a cval the image's type cannot hold (300 in uint8, -5,
    70000 in uint16) or a fractional one: the accumulator and the padding follow the input's range, so nothing
    wraps or overflows."""
    from cnnfilter import config
    from cnnfilter.filters import Samples, correlate_samples
    from cnnfilter.io import to_depth
    from cnnfilter.ops import map_output

    monkeypatch.setattr(config, "ENGINE", engine)
    for trial in range(60):
        dtype = (np.uint8, np.uint16)[trial % 2]
        depth = (8, 16)[trial // 2 % 2]
        x = rng.integers(0, np.iinfo(dtype).max + 1, (15, 17, 3)).astype(dtype)
        k = np.round(rng.normal(size=(3, 3)) * 3) if trial % 3 else rng.normal(size=(3, 3))
        cval = (0.0, 300.0, -5.0, 2.5, 70000.0)[trial % 5]
        bias = (0.0, 0.5, -3.0)[trial % 3]
        output_range = ("clip", "abs", "offset")[trial % 3]
        got = correlate_samples(x, k, Samples(depth, output_range, bias), border="constant", cval=cval)
        ref = correlate2d(x, k, border="constant", cval=cval)
        ref = to_depth(map_output(ref + bias if bias else ref, output_range, depth), depth)
        np.testing.assert_array_equal(got, ref)
