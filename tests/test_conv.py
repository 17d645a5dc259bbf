"""conv2d, the CNN layer: against the naive reference and PyTorch's conventions."""

import itertools

import numpy as np
import pytest

from cnnfilter import conv2d

from . import naive

CASES = list(itertools.product(
    [(1, 1, 1, 1), (2, 4, 6, 2), (3, 3, 2, 1), (1, 4, 4, 4)],  # N, C, O, groups
    [(5, 5), (7, 9), (1, 1), (28, 28)],
    [(1, 1), (3, 3), (2, 3), (5, 5)],
    [(1, 0, 1), (1, 1, 1), (2, 1, 1), (1, "same", 2), ((2, 1), ((1, 0), (2, 1)), 1), (1, "full", 1)],
))


@pytest.mark.parametrize(("ncog", "hw", "k", "geometry"), CASES)
def test_matches_naive(ncog, hw, k, geometry, rng):
    """Batches, groups, strides, paddings and dilations equal channel-by-channel naive correlation + bias."""
    N, C, O, groups = ncog
    stride, padding, dilation = geometry
    x = rng.normal(size=(N, C, *hw))
    w = rng.normal(size=(O, C // groups, *k))
    b = rng.normal(size=O)
    ref = naive.conv2d(x, w, b, stride, padding, dilation, groups)
    if min(ref.shape[2:]) < 1:
        with pytest.raises(ValueError, match="output would be"):
            conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
        return
    got = conv2d(x.astype(np.float32), w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4 * max(1, np.abs(ref).max()))
    got64 = conv2d(x[0], w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert got64.dtype == np.float64 and got64.ndim == 3
    np.testing.assert_allclose(got64, ref[0], atol=1e-11)


def test_matches_torch_when_installed(rng):
    """torch.nn.functional.conv2d gives the same numbers (bench extra; skipped without torch)."""
    torch = pytest.importorskip("torch")
    x = rng.normal(size=(4, 6, 13, 11)).astype(np.float32)
    w = rng.normal(size=(8, 3, 3, 5)).astype(np.float32)
    b = rng.normal(size=8).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=(2, 1),
                                     padding=(1, 2), dilation=(1, 2), groups=2).numpy()
    got = conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    np.testing.assert_allclose(got, ref, atol=1e-4)


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    (((2, 3, 5, 5), (4, 2, 3, 3)), {}, "2 input channels per group, but x has 3"),
    (((2, 4, 5, 5), (6, 2, 3, 3)), {"groups": 4}, "groups 4 must be a positive int dividing"),
    (((2, 4, 5, 5), (6, 4, 3, 3)), {"stride": 0}, "stride 0 must be at least 1"),
    (((2, 4, 5, 5), (6, 4, 7, 7)), {}, "output would be 0x0"),
    (((4, 5, 5),), {}, "expected \\(C, H, W\\) or \\(N, C, H, W\\)"),
    (((1, 4, 5, 5), (6, 4, 3)), {}, "weight has shape \\(6, 4, 3\\)"),
])
def test_bad_arguments(args, kwargs, message):
    """Shape mismatches and bad geometry are refused with the shapes in the message."""
    arrays = [np.ones(s) for s in args] if len(args) == 2 else [np.ones(args[0][1:]), np.ones((1, 1, 1, 1))]
    if len(args) == 1:
        arrays = [np.ones((5, 5)), np.ones((1, 1, 1, 1))]
    with pytest.raises(ValueError, match=message):
        conv2d(*arrays, **kwargs)


def test_bias_shape_and_nonfinite_weights():
    """A bias of the wrong length and NaN weights are refused."""
    with pytest.raises(ValueError, match="bias has shape \\(3,\\); expected \\(2,\\)"):
        conv2d(np.ones((1, 4, 4)), np.ones((2, 1, 3, 3)), np.ones(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        conv2d(np.ones((1, 4, 4)), np.full((2, 1, 3, 3), np.nan))


def test_numpy_integers_and_bools_are_accepted(rng):
    """groups as a numpy int and a bool input work like their Python/uint8 equivalents."""
    x = rng.random((2, 4, 6, 6)) > 0.5
    w = rng.normal(size=(2, 2, 3, 3))
    got = conv2d(x, w, groups=np.int64(2), padding=1)
    np.testing.assert_allclose(got, naive.conv2d(x.astype(float), w, None, 1, 1, 1, 2), atol=1e-5)


@pytest.mark.parametrize("columns_bytes", [1, 3000, 1 << 30])
@pytest.mark.parametrize("min_plane", [1, 10**9])
def test_conv2d_paths_and_image_blocks_agree_with_the_definition(columns_bytes, min_plane, rng, monkeypatch):
    """conv.run's im2col + BLAS path (columns from the stride phases, for a band of rows of one image, a block of
    images or all: CONV_COLUMNS_BYTES), the direct loops and the tap-shift loop (CONV_DIRECT_MIN_PLANE moved so
    that stride-1 filters take either), on strides, dilations, asymmetric padding and groups."""
    from cnnfilter import config

    monkeypatch.setattr(config, "CONV_COLUMNS_BYTES", columns_bytes)
    monkeypatch.setattr(config, "CONV_DIRECT_MIN_PLANE", min_plane)
    for (N, C, H, W, O, kh, kw, stride, dilation, padding, groups) in [
        (5, 3, 9, 11, 4, 3, 3, 1, 1, 1, 1), (3, 2, 10, 7, 3, 3, 2, (2, 1), (1, 2), ((0, 2), (1, 3)), 1),
        (4, 4, 8, 8, 6, 1, 1, 1, 1, 0, 1), (2, 6, 9, 9, 4, 3, 3, 1, 1, 1, 2), (3, 1, 12, 5, 2, 5, 5, 3, 1, 2, 1),
        (2, 3, 11, 10, 4, 2, 5, 1, (2, 1), ((1, 0), (2, 1)), 1),  # the tap-shift loop at stride 1
        (2, 4, 9, 9, 6, 5, 3, 1, 1, 2, 2), (2, 4, 9, 9, 4, 3, 3, 2, 1, 1, 4),  # grouped: tap-shift, direct
        (2, 3, 23, 20, 5, 7, 7, (3, 2), (2, 3), ((3, 4), (2, 5)), 1)]:  # stride phases of unequal sizes, dilated
        x = rng.normal(size=(N, C, H, W)).astype(np.float32)
        w = rng.normal(size=(O, C // groups, kh, kw)).astype(np.float32)
        b = rng.normal(size=O).astype(np.float32)
        got = conv2d(x, w, b, stride=stride, dilation=dilation, padding=padding, groups=groups)
        ref = naive.conv2d(x, w, b, stride, padding, dilation, groups)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("min_plane", [1, 10**9])
def test_relu_in_the_convolution_equals_relu_after_it(min_plane, rng, monkeypatch):
    """conv.run(relu=True) (an imported Conv and its Relu, fused) gives np.maximum(conv.run(), 0) to the bit on
    every path (direct 3x3, direct strided and grouped, tap-shift, 1x1, im2col by bands, by blocks of images and
    by one whole image written straight into the output), and keeps NaN where the convolution made it."""
    from cnnfilter import config
    from cnnfilter.conv import Geometry, run

    monkeypatch.setattr(config, "CONV_DIRECT_MIN_PLANE", min_plane)
    for (N, C, H, W, O, kh, kw, stride, pads, groups, columns) in [
        (2, 3, 9, 11, 5, 3, 3, (1, 1), (1, 1, 1, 1), 1, 8 << 20), (2, 4, 9, 9, 4, 3, 3, (2, 2), (1, 1, 1, 1), 2, 1),
        (2, 3, 11, 10, 4, 2, 5, (1, 1), (1, 0, 2, 1), 1, 3000), (3, 4, 8, 8, 6, 1, 1, (1, 1), (0, 0, 0, 0), 1, 1),
        (2, 3, 23, 20, 5, 7, 7, (2, 2), (3, 3, 3, 3), 1, 8 << 20), (2, 3, 23, 20, 5, 7, 7, (2, 2), (3, 3, 3, 3), 1,
                                                                  4000),
        (1, 3, 23, 20, 5, 7, 7, (2, 2), (3, 3, 3, 3), 1, 8 << 20),  # one whole image: its product is the output
        (3, 3, 23, 20, 5, 7, 7, (2, 2), (3, 3, 3, 3), 1, 2 * 3 * 49 * 120 * 4)]:  # blocks of 2 images, then 1
        monkeypatch.setattr(config, "CONV_COLUMNS_BYTES", columns)
        x = rng.normal(size=(N, C, H, W)).astype(np.float32)
        x[0, 0, H // 2, W // 2] = np.nan
        w = rng.normal(size=(O, C // groups, kh, kw)).astype(np.float32)
        b = rng.normal(size=O).astype(np.float32)
        g = Geometry(stride, (1, 1), pads, groups)
        plain = run(x, w, b, g)
        fused = run(x, w, b, g, relu=True)
        assert np.isnan(plain).any() and (plain < 0).any()
        np.testing.assert_array_equal(fused, np.maximum(plain, 0))
