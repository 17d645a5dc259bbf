"""featuremaps: activations against a hand-written forward pass, montage geometry, normalisation, the report."""

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cnnfilter
from cnnfilter import maps, nn
from cnnfilter.cli import cli

from . import naive

ROOT = Path(__file__).resolve().parent.parent
DIGIT = ROOT / "samples" / "digits" / "3" / "0003.png"


def test_activations_equal_a_hand_written_forward_pass():
    """conv -> relu -> 2x2 max -> conv -> relu -> 2x2 max -> dense, by hand in float64, equals featuremaps()."""
    model = nn.load_model(nn.resolve_model("digits"))
    acts = cnnfilter.featuremaps(model, DIGIT)
    x = np.asarray(Image.open(DIGIT), np.float64)[None] / 255
    x = (x - model.mean[0]) / model.std[0]
    L = model.net.layers
    c1 = naive.conv2d(x, L[0].weight, L[0].bias, padding=1)
    r1 = np.maximum(c1, 0)
    p1 = r1.reshape(32, 4, 2, 4, 2).max(axis=(2, 4))
    c2 = naive.conv2d(p1, L[3].weight, L[3].bias, padding=1)
    p2 = np.maximum(c2, 0).reshape(64, 2, 2, 2, 2).max(axis=(2, 4))
    fc = L[8].weight.astype(np.float64) @ p2.reshape(-1) + L[8].bias
    for name, ref in (("conv1", c1), ("relu1", r1), ("pool1", p1), ("conv2", c2), ("pool2", p2), ("fc1", fc)):
        np.testing.assert_allclose(acts[name], ref, rtol=1e-4, atol=1e-4, err_msg=name)
    assert list(acts) == model.net.names


@pytest.mark.parametrize(("channels", "rows", "cols"), [(1, 1, 1), (3, 2, 2), (8, 3, 3), (16, 4, 4), (17, 4, 5)])
def test_montage_grid_geometry(channels, rows, cols):
    """Near-square grids; each tile upscaled (nearest) to about 96 px (64 above 16 channels); 2-px gutters."""
    rng = np.random.default_rng(channels)
    img = maps.montage(rng.random((channels, 8, 6)), title="t")
    f = (96 if channels <= 16 else 64) // 8  # nearest-neighbour factor: tiles of about 96 px, 64 above 16 channels
    tile_h, tile_w = 8 * f, 6 * f
    width = max(cols * (tile_w + maps.GUTTER) + maps.GUTTER, 260)
    height = 24 + rows * (tile_h + 14 + maps.GUTTER) + maps.GUTTER + 34
    assert img.size == (width, height)
    arr = np.asarray(img)
    x_gutter = maps.GUTTER + tile_w  # the first gutter column, right of tile 0
    y0 = 24 + 14
    assert (arr[y0 : y0 + tile_h, x_gutter] == maps.BACKGROUND).all() if cols > 1 else True
    tile0 = arr[y0 : y0 + tile_h, maps.GUTTER : maps.GUTTER + tile_w]
    assert len({tuple(p) for p in tile0[::f, ::f].reshape(-1, 3)}) > 1  # a real picture
    assert (tile0[:f, :f] == tile0[0, 0]).all()  # nearest-neighbour: each source pixel an f x f block


@pytest.mark.parametrize("normalize", ["map", "layer", "none"])
def test_normalisation_of_constant_negative_and_extreme_maps(normalize):
    """Constant maps (no division by zero), all-negative maps and values near float32's limit stay in 0..1."""
    m = np.stack([np.zeros((4, 4)), np.full((4, 4), 7.0), -np.arange(16.0).reshape(4, 4) - 1,
                  np.array([[3e38, -3e38, 0, 1]] * 4)])
    scaled, _, signed = maps.scale_maps(m, normalize)
    assert np.isfinite(scaled).all() and scaled.min() >= 0 and scaled.max() <= 1
    if normalize == "map":
        assert (scaled[0] == 0).all() and (scaled[1] == 1).all()  # zero map dark, positive constant lit
        assert signed.tolist() == [False, False, True, True]
        assert scaled[2].max() == 0.5 - 0.5 / 16 and scaled[2].min() == 0  # all negative: 0 stays at the middle
    maps.montage(m, normalize=normalize)  # draws without warnings


def test_layers_by_name_and_index_and_unknown():
    """conv1,relu1 and 0,1 select the same layers; an unknown layer lists the valid ones."""
    model = nn.load_model(nn.resolve_model("digits"))
    assert list(cnnfilter.featuremaps(model, DIGIT, layers="conv1,relu1")) == ["conv1", "relu1"]
    assert list(cnnfilter.featuremaps(model, DIGIT, layers=[0, 1])) == ["conv1", "relu1"]
    with pytest.raises(ValueError, match="unknown layer 'conv9'; layers: conv1, relu1, pool1"):
        cnnfilter.featuremaps(model, DIGIT, layers="conv9")
    with pytest.raises(ValueError, match="layer index 42 is out of range 0..8"):
        cnnfilter.featuremaps(model, DIGIT, layers="42")


def test_rgb_image_into_a_grey_model_and_grey_into_rgb(tmp_path):
    """A 1-channel model takes an RGB photo (converted to luma, resized); a 3-channel model a greyscale one."""
    acts = cnnfilter.featuremaps("digits", ROOT / "samples" / "coffee.png")
    assert acts["conv1"].shape == (32, 8, 8)
    net = nn.build("c4k3p1-relu-fc2", (3, 6, 6), 2)
    model = nn.Model(net, ["a", "b"], np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))
    nn.save_model(model, tmp_path / "rgb.cnnf")
    acts = cnnfilter.featuremaps(str(tmp_path / "rgb.cnnf"), ROOT / "samples" / "camera.png")
    assert acts["conv1"].shape == (4, 6, 6)


@pytest.mark.parametrize("resize", ["stretch", "fit", "pad"])
def test_resize_modes(resize):
    """stretch fills the input; fit keeps the aspect ratio (black bars); pad centres without scaling."""
    model = nn.load_model(nn.resolve_model("digits"))
    img = Image.new("L", (16, 8), 255)
    x = maps.prepare_input(model, img, resize)
    assert x.shape == (1, 8, 8)
    expected = {"stretch": np.ones((8, 8)), "fit": np.r_[np.zeros((2, 8)), np.ones((4, 8)), np.zeros((2, 8))]}
    if resize == "pad":
        np.testing.assert_allclose(x[0], np.ones((8, 8)))  # the centre 8x8 of a white 16x8 image
    else:
        np.testing.assert_allclose(x[0], expected[resize], atol=1e-6)


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        self.srcs += [v for k, v in attrs if k in ("src", "href")]


def test_cli_report_for_a_folder_with_a_corrupt_file(tmp_path):
    """A folder: each good image gets montages, filters, summary.json and an index.html whose every reference
    exists; a corrupt file is reported, the rest go on, exit 1."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("0003.png", "0013.png"):
        (src / name).write_bytes((DIGIT.parent / name).read_bytes())
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "maps"
    res = CliRunner().invoke(cli, ["featuremaps", str(src), "-m", "digits", "-o", str(out), "--npz", "--separate"])
    assert res.exit_code == 1
    assert "broken.png" in res.stderr and "1 of 3 image(s) failed" in res.stderr
    for stem in ("0003", "0013"):
        folder = out / stem
        parser = _Refs()
        parser.feed((folder / "index.html").read_text())
        assert "conv1.png" in parser.srcs and "weights-conv1.png" in parser.srcs and "input.png" in parser.srcs
        for ref in parser.srcs:
            assert (folder / ref).is_file(), ref
        import json

        summary = json.loads((folder / "summary.json").read_text())
        assert summary["prediction"]["class"] == "3"
        relu = next(s for s in summary["layers"] if s["layer"] == "relu1")
        assert 0 < relu["zero_fraction"] < 1 and relu["min"] == 0
        with np.load(folder / "activations.npz") as z:
            assert z["conv1"].shape == (32, 8, 8)
        assert len(list((folder / "channels").glob("conv1-*.png"))) == 32


def test_cli_kernel_bank_and_usage_errors(tmp_path):
    """Without -m, a bank of named kernels; bad combinations are usage errors (exit 2)."""
    out = tmp_path / "bank"
    res = CliRunner().invoke(cli, ["featuremaps", str(ROOT / "samples" / "coffee.png"), "--kernels",
                                   "edge,sobel,blur", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.stderr
    assert (out / "coffee" / "bank.png").is_file()
    for args, message in ((["--list-layers"], "--list-layers needs -m/--model"),
                          ([str(DIGIT), "--kernels", "bogus"], "bogus"),
                          ([str(DIGIT), "-m", "digits", "--layers", "nope"], "unknown layer 'nope'"),
                          ([str(DIGIT), "--layers", "conv1"], "--layers and --weights need -m/--model")):
        res = CliRunner().invoke(cli, ["featuremaps", *args, "-o", str(tmp_path / "x")])
        assert res.exit_code == 2 and message in res.stderr, (args, res.stderr)


def test_cli_write_failure_is_reported_per_image(tmp_path):
    """A file of the report that cannot be written is that image's failure (exit 1), not an internal error."""
    out = tmp_path / "maps"
    (out / "0003" / "input.png").mkdir(parents=True)  # a folder where the input PNG goes
    for extra in (["-m", "digits"], []):
        res = CliRunner().invoke(cli, ["featuremaps", str(DIGIT), "-o", str(out), "-q", *extra])
        assert res.exit_code == 1 and "exists; use --overwrite" in res.stderr  # a report folder that is not empty
        res = CliRunner().invoke(cli, ["featuremaps", str(DIGIT), "-o", str(out), "-q", "--overwrite", *extra])
        assert res.exit_code == 1, res.stderr
        assert "cannot write" in res.stderr and "internal error" not in res.stderr


@pytest.mark.parametrize("normalize", ["layer", "none"])
def test_cli_signed_pooling_layer_gets_the_diverging_colormap(tmp_path, normalize):
    """A pooling layer before any ReLU has negative values: drawn signed (coolwarm), not clipped to 0..1."""
    net = nn.build("c4k3p1-max2-relu-fc10", (1, 8, 8), 10, rng=np.random.default_rng(3))
    model = nn.Model(net, [str(i) for i in range(10)], np.zeros(1, np.float32), np.full(1, 0.1, np.float32))
    nn.save_model(model, tmp_path / "m.cnnf")
    out = tmp_path / "maps"
    res = CliRunner().invoke(cli, ["featuremaps", str(DIGIT), "-m", str(tmp_path / "m.cnnf"), "-o", str(out),
                                   "--layers", "pool1", "--normalize", normalize, "--separate", "-q"])
    assert res.exit_code == 0, res.stderr
    acts = maps.featuremaps(model, DIGIT, ["pool1"])["pool1"]
    assert (acts < 0).any()
    cool = {tuple(c) for c in maps.colormap("coolwarm")}
    for png in (out / "0003" / "channels").glob("pool1-*.png"):
        colours = {tuple(c) for c in np.asarray(Image.open(png).convert("RGB")).reshape(-1, 3)}
        assert colours <= cool, png


def test_layer_names_from_a_model_file_never_choose_where_files_go(tmp_path):
    """ONNX tensor names are data: '/conv1/Conv_output_0', '../../escape', 'input' (the report's own file) and
    names equal but for case become distinct, safe file names inside the report folder."""
    from cnnfilter.maps import file_stems, write_report

    names = ["/conv1/Conv_output_0", "../../escape", "input", "summary", "Relu", "relu", "a\nb", ".hidden",
             "weights-x", "x" * 300]
    stems = file_stems(names)
    assert len({s.lower() for s in stems.values()}) == len(names)
    for s in stems.values():
        assert "/" not in s and "\\" not in s and not s.startswith(".") and len(s) <= 100 and s.isprintable()
    acts = {n: np.random.default_rng(0).normal(size=(2, 4, 4)).astype(np.float32) for n in names}
    out = tmp_path / "report"
    write_report(out, input_image=np.zeros((1, 4, 4), np.float32), acts=acts, title="t", npz=True, separate=True)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert not list(tmp_path.glob("escape*")) and not (tmp_path.parent / "escape.png").exists()
    assert {"input.png", "summary.json", "index.html", "activations.npz"} <= written
    assert {f"{stems[n]}.png" for n in names} <= written
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"]["/conv1/Conv_output_0"] == "conv1_Conv_output_0.png"
    with np.load(out / "activations.npz") as z:
        assert sorted(z.files) == sorted(stems.values())
