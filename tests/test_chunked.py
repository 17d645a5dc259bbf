"""correlate2d, convolve2d and pool2d on dask arrays: lazy, and equal to the in-memory functions on the same data for
random chunkings, every border mode, padding form, stride, dilation and kernel size, 2-D and channels-last 3-D."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnfilter

da = pytest.importorskip("dask.array")

BORDERS = ["constant", "edge", "reflect", "symmetric", "wrap"]
PADDINGS = ["same", "valid", "full", 0, 2, (1, 3), ((0, 4), (3, 1)), ((7, 0), (0, 6))]  # 6 and 7: wider than some chunks


def _chunked(draw, x):
    """``x`` as a dask array of random chunks (at least 1 pixel; channels in one or several chunks)."""
    chunks = []
    for n in x.shape:
        cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=4))) if n > 1 else []
        edges = [0, *cuts, n]
        chunks.append(tuple(b - a for a, b in zip(edges, edges[1:])))
    return da.from_array(x, chunks=tuple(chunks))


@st.composite
def images(draw):
    shape = (draw(st.integers(1, 19)), draw(st.integers(1, 19))) + ((draw(st.integers(1, 3)),) if draw(st.booleans())
                                                                    else ())
    seed = draw(st.integers(0, 2**31))
    x = np.random.default_rng(seed).standard_normal(shape).astype(draw(st.sampled_from([np.float32, np.float64])))
    return x, _chunked(draw, x)


@settings(max_examples=120, deadline=None)
@given(images(), st.sampled_from(BORDERS), st.sampled_from(PADDINGS), st.sampled_from([1, 2, (3, 1)]),
       st.sampled_from([1, (2, 1), 3]), st.tuples(st.integers(1, 5), st.integers(1, 5)), st.booleans(),
       st.integers(0, 2**31))
def test_filters_on_dask_arrays_equal_the_in_memory_result(img, border, padding, stride, dilation, k, flip, seed):
    x, d = img
    kernel = np.random.default_rng(seed).standard_normal(k)
    fn = cnnfilter.convolve2d if flip else cnnfilter.correlate2d
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "border": border, "cval": 0.25}
    try:
        ref = fn(x, kernel, **kwargs)
    except ValueError as exc:  # the same arguments are refused the same way, before anything is computed
        with pytest.raises(ValueError, match=str(exc)[:30].replace("(", r"\(").replace(")", r"\)")):
            fn(d, kernel, **kwargs)
        return
    lazy = fn(d, kernel, **kwargs)
    assert isinstance(lazy, da.Array) and lazy.shape == ref.shape and lazy.dtype == ref.dtype
    got = lazy.compute()
    # the same taps in the same order; only the path (numpy engine, compiled loop, FFT) chosen for a block of
    # another size may round differently
    tol = 1e-5 if x.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol)


@settings(max_examples=120, deadline=None)
@given(images(), st.sampled_from(["max", "avg", "min"]), st.sampled_from([1, 2, 3, (2, 3), (4, 1)]),
       st.sampled_from([None, 1, 2, (1, 3)]), st.sampled_from([0, 1, (2, 0), ((1, 0), (0, 2)), ((3, 3), (0, 1))]),
       st.sampled_from([1, 2, (1, 3)]), st.booleans(), st.booleans())
def test_pooling_on_dask_arrays_equals_the_in_memory_result_to_the_bit(img, mode, size, stride, padding, dilation,
                                                                       ceil_mode, include_pad):
    x, d = img
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "mode": mode, "ceil_mode": ceil_mode,
              "count_include_pad": include_pad}
    try:
        ref = cnnfilter.pool2d(x, size, **kwargs)
    except ValueError:
        with pytest.raises(ValueError):
            cnnfilter.pool2d(d, size, **kwargs)
        return
    got = cnnfilter.pool2d(d, size, **kwargs).compute()
    np.testing.assert_array_equal(got, ref)


def test_border_modes_are_numpys_across_chunks_wider_than_the_image():
    """wrap and reflect with a pad wider than the image and than every chunk (dask-image #242's failure: a chunked
    'wrap' wrong; map_overlap's 'reflect' is numpy's 'symmetric'): the in-memory result, numpy.pad's rule."""
    x = np.arange(35, dtype=np.float32).reshape(5, 7)
    d = da.from_array(x, chunks=(2, 3))
    k = np.zeros((9, 9), np.float32)
    k[0, 0] = 1  # picks the top-left padded pixel: the result is numpy.pad's padding itself
    for border in BORDERS:
        ref = np.pad(x, 4, mode=border, **({"constant_values": 0.5} if border == "constant" else {}))[:5, :7]
        got = cnnfilter.correlate2d(d, k, border=border, cval=0.5).compute()
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(got, cnnfilter.correlate2d(x, k, border=border, cval=0.5))


def test_output_blocks_line_up_with_the_input_chunks():
    """With stride 2, each 100x100 input chunk gives one 50x50 output block (computed from that chunk and its halo),
    integer images work as in memory, and ``out`` is refused."""
    x = np.random.default_rng(1).integers(0, 256, (400, 300), dtype=np.uint8)
    d = da.from_array(x, chunks=(100, 100))
    out = cnnfilter.correlate2d(d, np.ones((5, 5)) / 25, border="reflect", stride=2)
    assert out.numblocks == (4, 3)
    np.testing.assert_allclose(out.compute(), cnnfilter.correlate2d(x, np.ones((5, 5)) / 25, border="reflect",
                                                                   stride=2), rtol=1e-5, atol=1e-4)
    assert out.chunks == ((50,) * 4, (50,) * 3)
    with pytest.raises(ValueError, match="out cannot be given"):
        cnnfilter.correlate2d(d, np.ones((3, 3)), out=np.empty((400, 300), np.float32))


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_pooling_padding_on_every_side_across_chunks(mode, include_pad, ceil_mode):
    """Windows in the top, bottom, left and right padding, split over chunks of 2 and 3 pixels: averages divide
    by the taps inside the whole image's padded extent (count_include_pad), never a chunk's."""
    x = np.random.default_rng(3).standard_normal((11, 10, 2)).astype(np.float32)
    d = da.from_array(x, chunks=(2, 3, 1))
    kwargs = {"stride": 2, "padding": ((1, 2), (2, 1)), "mode": mode, "ceil_mode": ceil_mode,
              "count_include_pad": include_pad}
    np.testing.assert_array_equal(cnnfilter.pool2d(d, 3, **kwargs).compute(), cnnfilter.pool2d(x, 3, **kwargs))


def test_padding_or_blocks_beyond_the_limits_are_refused_before_any_graph():
    """A pad strip, a chunk with its halo, or a block count beyond the limits is one error, at once."""
    d = da.from_array(np.zeros((6, 7), np.float32), chunks=3)
    with pytest.raises(ValueError, match="over the memory limit"):
        cnnfilter.correlate2d(d, np.ones((3, 3)), dilation=10**9)
    with pytest.raises(ValueError, match="over the memory limit"):
        cnnfilter.correlate2d(d, np.ones((3, 3)), padding=10**6, border="wrap")
    with pytest.raises(ValueError, match="blocks of output"):
        cnnfilter.correlate2d(d, np.ones((3, 3)), padding=10**4, border="reflect")
