"""pool2d against the naive PyTorch-rule reference, the seeds' examples, padding + ceil_mode corners."""

import itertools

import numpy as np
import pytest

from cnnfilter import pool2d

from . import naive


def test_seed_000_max_pooling():
    """Seed 000: 2x2 max pooling of the 4x4 example."""
    img = np.array([[29, 15, 28, 184], [0, 100, 70, 38], [12, 12, 7, 2], [12, 12, 45, 6]], np.uint8)
    np.testing.assert_array_equal(pool2d(img, 2), [[100, 184], [12, 45]])


def test_seed_000_average_pooling_rounds_to_36():
    """Seed 000: 2x2 average pooling gives 36.5 -> 36 when written as 8-bit (half to even), 80, 12, 15."""
    from cnnfilter.io import to_depth

    img = np.array([[31, 15, 28, 184], [0, 100, 70, 38], [12, 12, 7, 2], [12, 12, 45, 6]], np.uint8)
    out = pool2d(img, 2, mode="avg")
    np.testing.assert_array_equal(out, [[36.5, 80], [12, 15]])
    np.testing.assert_array_equal(to_depth(out, 8), [[36, 80], [12, 15]])


def test_seed_004_max_pooling():
    """Seed 004: 2x2 max pooling of the 4x4 activation map gives [[5, 2], [2, 2]]... as the slide's four windows."""
    img = np.array([[2, 2, 2, 0], [2, 5, 2, 1], [2, 2, 2, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(pool2d(img, 2), [[5, 2], [2, 2]])


SHAPES = [(1, 1), (2, 2), (5, 7), (8, 8), (9, 4), (16, 15)]


@pytest.mark.parametrize("engine", ["numpy", "compiled"])
@pytest.mark.parametrize(("shape", "C"), list(itertools.product(SHAPES, [None, 3])))
def test_matches_naive_with_padding_and_ceil_mode(shape, C, engine, rng, monkeypatch):
    """Every mode, window, stride, padding (beyond half the window too), dilation, ceil_mode and
    count_include_pad equals the naive loops, on both engines; a window that would hold no pixel is refused."""
    from cnnfilter import config

    monkeypatch.setattr(config, "ENGINE", engine)
    img = rng.normal(size=shape if C is None else (*shape, C)).astype(np.float32)
    checked = 0
    for size, stride, pad, dil, mode, ceil, cip in itertools.product(
            [1, 2, 3, (2, 3), (3, 1)], [None, 1, 2, (1, 3)], [0, 1, (0, 1), ((1, 0), (0, 2)), 3], [1, 2, (1, 2)],
            ["max", "avg", "min"], [False, True], [True, False]):
        kw = {"stride": stride, "padding": pad, "dilation": dil, "mode": mode, "ceil_mode": ceil,
              "count_include_pad": cip}
        try:
            ref = naive.pool(img, size, stride, pad, mode, ceil, cip, dil)
        except ValueError:
            with pytest.raises(ValueError, match="would hold no pixel|does not fit"):
                pool2d(img, size, **kw)
            continue
        if min(ref.shape[:2]) < 1:
            with pytest.raises(ValueError, match="does not fit"):
                pool2d(img, size, **kw)
            continue
        got = pool2d(img, size, **kw)
        assert got.shape == ref.shape, (size, stride, pad, dil, mode, ceil)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
        checked += 1
    assert checked > 50


def test_against_pytorch_rules_by_hand():
    """ceil_mode drops a last window that would start in the padding; avg divides by the clipped padded window."""
    img = np.arange(25, dtype=np.float32).reshape(5, 5)
    # 5 + 2*1 - 2 = 5 -> ceil(5/2) + 1 = 4, and (4-1)*2 = 6 >= 5 + 1 -> 3
    assert pool2d(img, 2, padding=1, ceil_mode=True).shape == (3, 3)
    # 5 - 2 = 3 -> ceil(3/2) + 1 = 3; the last window (rows 4..5) holds one real row
    out = pool2d(img, 2, ceil_mode=True, mode="avg")
    assert out.shape == (3, 3)
    assert out[2, 2] == 24.0  # window clipped to the image: one pixel, divided by 1 (no padding to count)
    out = pool2d(img, 3, stride=2, padding=1, mode="avg")
    assert out[0, 0] == (0 + 1 + 5 + 6) / 9  # padding counted as zeros
    out = pool2d(img, 3, stride=2, padding=1, mode="avg", count_include_pad=False)
    assert out[0, 0] == (0 + 1 + 5 + 6) / 4


def test_nan_propagates_through_max_and_min():
    """A NaN in a window makes its max and min NaN, as numpy and PyTorch."""
    img = np.ones((4, 4), np.float32)
    img[0, 1] = np.nan
    for mode in ("max", "min"):
        out = pool2d(img, 2, mode=mode)
        assert np.isnan(out[0, 0]) and not np.isnan(out[1, 1])
        out = pool2d(img, 3, stride=1, mode=mode)
        assert np.isnan(out).sum() == 2


def test_dtypes_and_layouts(rng):
    """uint8 and uint16 give float32, float64 stays float64; (H, W, C) keeps C."""
    img = rng.integers(0, 60000, size=(6, 6, 4)).astype(np.uint16)
    out = pool2d(img, 2)
    assert out.dtype == np.float32 and out.shape == (3, 3, 4)
    np.testing.assert_array_equal(out, naive.pool(img, 2))
    assert pool2d(img.astype(np.float64), 3, stride=1).dtype == np.float64


@pytest.mark.parametrize(("kwargs", "exc", "message"), [
    ({"size": 0}, ValueError, "size 0 must be at least 1"),
    ({"size": 2, "stride": 0}, ValueError, "stride 0 must be at least 1"),
    ({"size": 2, "mode": "median"}, ValueError, "mode 'median' is not one of max, avg, min"),
    ({"size": 2, "padding": 2}, ValueError, "padding 2: a 2x2 window .* would hold no pixel"),
    ({"size": 2, "dilation": 0}, ValueError, "dilation 0 must be at least 1"),
    ({"size": 2, "padding": "same"}, TypeError, "padding 'same' is not an int"),
    ({"size": 9}, ValueError, "window 9x9 does not fit in the image 5x5"),
])
def test_bad_arguments(kwargs, exc, message):
    """Errors name the parameter and what is allowed."""
    with pytest.raises(exc, match=message):
        pool2d(np.ones((5, 5)), **kwargs)


@pytest.mark.parametrize("mode", ["max", "avg", "min"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_numpy_engine_pools_to_the_bit(mode, dtype, rng, monkeypatch):
    """Small images pool in numpy while numba is not loaded, with the compiled loops' results bit for bit
    (windows, padding, ceil_mode, count_include_pad, NaN)."""
    from cnnfilter import config

    for trial in range(40):
        H, W = (int(v) for v in rng.integers(1, 25, 2))
        kh, kw = (int(v) for v in rng.integers(1, 6, 2))
        opts = {"stride": tuple(int(v) for v in rng.integers(1, 4, 2)),
                "padding": (int(rng.integers(0, kh + 1)), int(rng.integers(0, kw + 1))), "mode": mode,
                "dilation": tuple(int(v) for v in rng.integers(1, 3, 2)),
                "ceil_mode": bool(trial % 2), "count_include_pad": bool(trial // 2 % 2)}
        x = (rng.random((H, W, 2)) * 255).astype(dtype)
        if dtype != np.uint8 and trial % 5 == 0:
            x[0, 0, 0] = np.nan
        monkeypatch.setattr(config, "ENGINE", "compiled")
        try:
            compiled = pool2d(x, (kh, kw), **opts)
        except ValueError:
            continue
        monkeypatch.setattr(config, "ENGINE", "numpy")
        np.testing.assert_array_equal(pool2d(x, (kh, kw), **opts), compiled)


@pytest.mark.parametrize("mode", ["max", "avg", "min"])
@pytest.mark.parametrize(("k", "s", "pads", "d", "ceil", "include"), [
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False, True), ((2, 3), (1, 2), (0, 2, 1, 0), (2, 1), True, False),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), False, True), ((3, 2), (2, 1), (2, 1, 0, 1), (1, 2), True, True)])
def test_planes_engines_agree_to_the_bit_with_pool2d(mode, k, s, pads, d, ceil, include, monkeypatch):
    """pooling.planes (a batch's (H, W) planes, as a network pools) gives pool2d's values on every plane, whether
    it takes the separable compiled loop (max and min once numba is loaded), numpy over all planes at once or the
    compiled loop's walk of each window (the engine and POOL_NUMPY_MIN_LANES moved), NaN included."""
    from cnnfilter import config, pooling

    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    x[1, 2, 3, 4] = np.nan
    window = pooling.Window(k, s, pads, d, mode, ceil, include)
    got = {}
    for engine, lanes in (("compiled", 1), ("numpy", 1), ("numpy", 10**9)):
        monkeypatch.setattr(config, "ENGINE", engine)
        monkeypatch.setattr(config, "POOL_NUMPY_MIN_LANES", lanes)
        got[engine, lanes] = pooling.planes(x, window)
    np.testing.assert_array_equal(got["compiled", 1], got["numpy", 1])
    np.testing.assert_array_equal(got["compiled", 1], got["numpy", 10**9])
    ref = pool2d(x.transpose(2, 3, 0, 1).reshape(9, 8, 12), k, stride=s,
                 padding=((pads[0], pads[1]), (pads[2], pads[3])),
                 dilation=d, mode=mode, ceil_mode=ceil, count_include_pad=include)
    np.testing.assert_array_equal(got["compiled", 1], ref.reshape(*ref.shape[:2], 3, 4).transpose(2, 3, 0, 1))


def test_separable_max_and_min_equal_the_window_walk_on_random_windows():
    """The separable loop (rows pooled along, then across) gives the compiled walk of each window's values, to the
    bit (+0.0 and -0.0 ties keep the first, NaN where it is), on random sizes, strides, dilations, padding and
    ceil_mode, in one band of rows per plane or several."""
    from cnnfilter import _loops, pooling

    rng = np.random.default_rng(11)
    checked = 0
    for trial in range(400):
        H, W = (int(v) for v in rng.integers(1, 13, 2))
        k, s, d = (tuple(int(v) for v in rng.integers(1, hi, 2)) for hi in (5, 4, 3))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        window = pooling.Window(k, s, pads, d, ("max", "min")[trial % 2], bool(trial % 3 == 0))
        if not window.fits(H, W):
            continue
        x = rng.standard_normal((2, 3, H, W)).astype(np.float32)
        x[rng.random(x.shape) < 0.3] = 0.0  # ties of +0.0 and -0.0, whose order decides the sign
        x[rng.random(x.shape) < 0.3] = -0.0
        if trial % 4 == 0:
            x[rng.integers(0, 2), rng.integers(0, 3), rng.integers(0, H), rng.integers(0, W)] = np.nan
        Ho, Wo = window.output(H, W)
        ref = np.full((6, Ho, Wo), -7.0, np.float32)
        args = (*k, *s, *d, pads[0], pads[2], H + pads[1], W + pads[3], pooling.MODES.index(window.mode))
        _loops.pool_generic(x.reshape(6, H, W), ref, np.empty((0, 0, 0), np.int64), 1, *args[:-1], args[-1], True)
        for bands in (1, 3):
            got = np.full((6, Ho, Wo), 7.0, np.float32)
            _loops.pool_separable(x.reshape(6, H, W), got, *args, bands)
            np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32))
        checked += 1
    assert checked > 150



@pytest.mark.parametrize("mode", ["max", "min", "avg"])
def test_planes_of_an_empty_batch_are_an_empty_batch(mode):
    """A batch of no images (an ONNX graph may slice one down to none) pools to no images, on every engine."""
    from cnnfilter import pooling

    out = pooling.planes(np.zeros((0, 3, 20, 20), np.float32), pooling.Window((3, 3), (2, 2), mode=mode))
    assert out.shape == (0, 3, 9, 9)
