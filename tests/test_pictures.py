"""pictures: montage geometry and palette, value scaling, bar charts, display reduction against naive loops."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnfilter import pictures


def _rgb(img):
    return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize(("channels", "rows", "cols"), [(1, 1, 1), (3, 2, 2), (8, 3, 3), (16, 4, 4), (17, 4, 5)])
def test_montage_grid_geometry(channels, rows, cols):
    """Near-square grids; each tile upscaled (nearest) to about 96 px (64 above 16 channels); 2-px gutters; a
    palette image whose colours are the colormap's, the background and the text's shades."""
    rng = np.random.default_rng(channels)
    img = pictures.montage(rng.random((channels, 8, 6)), title="t")
    assert img.mode == "P"
    f = (96 if channels <= 16 else 64) // 8  # nearest-neighbour factor: tiles of about 96 px, 64 above 16 channels
    tile_h, tile_w = 8 * f, 6 * f
    G = pictures.GUTTER
    width = max(cols * (tile_w + G) + G, 260)
    height = 24 + rows * (tile_h + 14 + G) + G + 34
    assert img.size == (width, height)
    arr = _rgb(img)
    x_gutter = G + tile_w  # the first gutter column, right of tile 0
    y0 = 24 + 14
    assert (arr[y0 : y0 + tile_h, x_gutter] == pictures.BACKGROUND).all() if cols > 1 else True
    tile0 = arr[y0 : y0 + tile_h, G : G + tile_w]
    assert len({tuple(p) for p in tile0[::f, ::f].reshape(-1, 3)}) > 1  # a real picture
    assert (tile0[:f, :f] == tile0[0, 0]).all()  # nearest-neighbour: each source pixel an f x f block
    viridis = {tuple(c) for c in pictures.colormap("viridis")}
    assert {tuple(p) for p in tile0.reshape(-1, 3)} <= viridis


def test_montage_tile_levels_follow_the_values():
    """A tile's colours are the colormap at the scaled value: the smallest value the colormap's first colour,
    the largest its last, in order between (a palette of 240 levels)."""
    ramp = np.arange(12.0).reshape(1, 3, 4)
    img = pictures.montage(ramp, tile_size=4, colormap_name="gray")
    grey = _rgb(img)[4 + 14 : 4 + 14 + 3, 2 : 2 + 4, 0].ravel()  # title-less: tiles start 4 px down
    assert grey[0] == 0 and grey[-1] == 255 and (np.diff(grey.astype(int)) > 0).all()


def test_montage_without_title_has_no_text_on_top_and_a_caption():
    """Titles belong to the page: without one, the top rows are background; the caption says how colours map."""
    m = np.random.default_rng(0).normal(size=(4, 5, 5))
    fig = pictures.montage_figure(m)
    assert (_rgb(fig.image)[:4] == pictures.BACKGROUND).all()
    assert "each tile scaled to its own range" in fig.caption and "coolwarm" in fig.caption
    mixed = pictures.montage_figure(np.stack([m[0], np.abs(m[1])]))  # one colormap for the layer
    assert mixed.caption == "each tile scaled to its own range; coolwarm, 0 in the middle"
    warm = {tuple(c) for c in pictures.colormap("coolwarm")[120:]}  # the all-positive tile: the warm half
    tile = _rgb(mixed.image)[4 + 14 : 4 + 14 + 95, 2 + 97 : 2 + 97 + 95]  # 5x5 maps, 19 times: 95-px tiles
    assert {tuple(p) for p in tile.reshape(-1, 3)} <= warm
    shared = pictures.montage_figure(np.abs(m), normalize="layer")
    assert "one range for the layer: 0" in shared.caption


@pytest.mark.parametrize("normalize", ["map", "layer", "none"])
def test_normalisation_of_constant_negative_and_extreme_maps(normalize):
    """Constant maps (no division by zero), all-negative maps and values near float32's limit stay in 0..1."""
    m = np.stack([np.zeros((4, 4)), np.full((4, 4), 7.0), -np.arange(16.0).reshape(4, 4) - 1,
                  np.array([[3e38, -3e38, 0, 1]] * 4)])
    scaled, _, signed = pictures.scale_maps(m, normalize)
    assert np.isfinite(scaled).all() and scaled.min() >= 0 and scaled.max() <= 1
    if normalize == "map":
        assert (scaled[0] == 0).all() and (scaled[1] == 1).all()  # zero map dark, positive constant lit
        assert signed.tolist() == [False, False, True, True]
        assert scaled[2].max() == 0.5 - 0.5 / 16 and scaled[2].min() == 0  # all negative: 0 stays at the middle
    pictures.montage(m, normalize=normalize)  # draws without warnings


def test_bars_labelled_with_signs_and_lengths():
    """Up to 40 values: one labelled bar each, from a common zero; positive warm, negative cool; the longest bar
    is the largest magnitude; the caption names the largest value's label."""
    v = np.array([2.0, -1.0, 0.5, 4.0])
    fig = pictures.bars(v, labels=["cat", "dog", "eel", "fox"])
    assert fig.image.mode == "P" and "largest: fox (4)" in fig.caption
    arr = _rgb(fig.image)
    pos, neg = tuple(pictures.colormap("coolwarm")[225]), tuple(pictures.colormap("coolwarm")[30])
    widths = []
    for i in range(4):
        row = arr[6 + 22 * i + 11]  # the middle of bar i
        is_pos = (row == pos).all(axis=1)
        is_neg = (row == neg).all(axis=1)
        assert is_pos.any() != is_neg.any() and is_pos.any() == (v[i] > 0)
        widths.append(int((is_pos | is_neg).sum()))
    assert np.argsort(widths).tolist() == np.argsort(np.abs(v)).tolist()
    assert abs(widths[0] / widths[3] - 0.5) < 0.05  # lengths in proportion to the values


def test_bars_for_long_vectors_and_hostile_values():
    """More than 40 values: a column chart; more than 1,024: the first 1,024, said in the caption; NaN and inf
    draw without warnings."""
    fig = pictures.bars(np.linspace(-1, 1, 256))
    assert fig.image.height < 250 and "256 values" in fig.caption
    fig = pictures.bars(np.r_[np.nan, np.inf, -np.inf, np.arange(5000.0)])
    assert "the first 1024 drawn" in fig.caption
    with pytest.raises(ValueError, match="at least one value"):
        pictures.bars(np.array([]))


def _reduce_naive(a, f, signed):
    h, w = -(-a.shape[0] // f), -(-a.shape[1] // f)  # partial blocks at the bottom and right kept
    out = np.empty((h, w), np.float64)
    for i in range(h):
        for j in range(w):
            block = a[i * f : (i + 1) * f, j * f : (j + 1) * f]
            if signed:
                k = np.argmax(np.abs(block))
                # ties between +v and -v: the positive one
                cands = block.ravel()[np.abs(block.ravel()) == np.abs(block.ravel()[k])]
                out[i, j] = cands.max()
            else:
                out[i, j] = block.mean()
    return out


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 7), st.booleans(), st.integers(0, 2**32 - 1))
def test_reduce_for_display_against_naive_blocks(h, w, f, signed, seed):
    """Block means (pictures) or the block's value of largest magnitude (signed responses), odd sizes too, the
    last blocks partial (a 1-pixel-high map reduced 7 times stays 1 pixel high)."""
    a = np.random.default_rng(seed).normal(size=(h, w)).astype(np.float32)
    got = pictures.reduce_for_display(a, f, signed=signed)
    ref = _reduce_naive(a.astype(np.float64), f, signed) if f > 1 else a
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_grey_picture_levels():
    """A picture: 0 black, 1 white, clipped; a signed response: 0 mid-grey, +-peak white and black."""
    v = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0]], np.float32)
    assert np.asarray(pictures.grey_picture(v, signed=False)).tolist() == [[0, 0, 128, 255, 255]]
    assert np.asarray(pictures.grey_picture(v, signed=True, peak=2.0)).tolist() == [[64, 128, 159, 191, 255]]
    img = pictures.grey_picture(v, signed=True, peak=2.0, colormap_name="coolwarm", upscale=3)
    assert img.size == (15, 3) and _rgb(img)[0, 3].tolist() == pictures.colormap("coolwarm")[128].tolist()


def test_captions_say_what_is_drawn():
    """One value per channel (a global pooling) is a bar chart; a forced colormap is named; a long vector's
    largest unit is found beyond the drawn ones; the value axis keeps its sign; a 2x3000 map is drawn."""
    rng = np.random.default_rng(0)
    assert pictures.montage_figure(rng.normal(size=(4, 1, 1))).caption == "4 values; largest: 2 (0.64)"
    m = np.abs(rng.normal(size=(3, 4, 4)))
    assert pictures.montage_figure(m, colormap_name="gray").caption == "each tile scaled to its own range; gray"
    v = np.zeros(3000)
    v[2500] = 9.0
    assert "largest: 2500 (9)" in pictures.bars(v).caption
    fig = pictures.bars(np.linspace(-12345.6, 0.001, 60))
    left = _rgb(fig.image)[:, :40]
    assert (left != pictures.BACKGROUND).any(axis=2).sum() > 20  # the axis labels, '-1.23e+04' whole, left of it
    thin = pictures.montage(rng.normal(size=(4, 2, 3000)))
    assert thin.height > 40 and thin.width > 100
