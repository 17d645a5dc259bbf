"""featuremaps: activations against a hand-written forward pass, montage geometry, normalisation, the report."""

import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cnnfilter
from cnnfilter import maps, nn, pictures
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
    assert "broken.png" in res.stderr and "2 done, 1 failed" in res.stderr
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
    parser = _Refs()
    parser.feed((out / "coffee" / "index.html").read_text())
    for name in ("input", "edge", "sobel", "blur"):
        assert (out / "coffee" / f"{name}.png").is_file() and f"{name}.png" in parser.srcs
    assert Image.open(out / "coffee" / "input.png").mode == "RGB"  # the photo in its colours
    for args, message in ((["--list-layers"], "--list-layers needs -m/--model"),
                          ([str(DIGIT), "--kernels", "bogus"], "bogus"),
                          ([str(DIGIT), "-m", "digits", "--layers", "nope"], "unknown layer 'nope'"),
                          ([str(DIGIT), "--layers", "conv1"], "--layers, --weights and --tile-size need -m/--model"),
                          ([str(DIGIT), "--tile-size", "64"], "--tile-size need -m/--model")):
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


def _photo(h=120, w=160, seed=0):
    """A photo-like RGB image: smooth gradients, a bright square and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 180
    base[h // 4 : h // 2, w // 4 : w // 2] += 60
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def test_bank_report_draws_pictures_in_grey_and_responses_on_mid_grey(tmp_path):
    """identity and blur are pictures (grey 0..1), edge a signed response (mid-grey at 0, symmetric), sobel a
    magnitude (black at 0); each map's file, summary and the full-resolution activations agree with bank()."""
    photo = _photo()
    Image.fromarray(photo).save(tmp_path / "p.png")
    kernels = ["identity", "blur", "edge", "sobel"]
    out = maps.write_bank_report(tmp_path / "r", tmp_path / "p.png", kernels, title="p.png", npz=True)
    grey, ref, names = maps.bank(tmp_path / "p.png", kernels)
    assert names == kernels
    diff = np.rint(grey * 255) - np.rint(photo @ np.array([0.299, 0.587, 0.114]))  # luma rounded (float32: a
    assert np.abs(diff).max() <= 1 and np.count_nonzero(diff) < 10  # .5 may round the other way)
    ident = np.asarray(Image.open(out / "identity.png"))
    assert ident.shape == (120 * 2, 160 * 2)  # a small photo is enlarged (whole times) to at least 256 px
    np.testing.assert_array_equal(ident[::2, ::2], np.rint(ref[0] * 255).astype(np.uint8))
    edge = np.asarray(Image.open(out / "edge.png"))[::2, ::2].astype(int)
    peak = np.sort(np.abs(ref[2]).ravel())[int(0.995 * (ref[2].size - 1))]
    expect = np.rint(127.5 + 127.5 * np.clip(ref[2] / peak, -1, 1))
    assert np.abs(edge - expect).max() <= 1
    assert edge[ref[2] == 0].tolist() == [128] * int((ref[2] == 0).sum())
    summary = json.loads((out / "summary.json").read_text())
    assert [s["drawn"] for s in summary["layers"]] == ["image", "image", "signed", "magnitude"]
    with np.load(out / "activations.npz") as z:
        assert sorted(z.files) == sorted(kernels)
        for i, k in enumerate(kernels):
            np.testing.assert_array_equal(z[k], ref[i])
            assert summary["layers"][i]["max"] == pytest.approx(float(ref[i].max()))
    page = (out / "index.html").read_text()
    assert "signed response: mid-grey 0" in page and "gradient magnitude: black 0" in page
    assert "<td>8</td>" in page  # the edge kernel's values are shown with its picture


def test_bank_report_reduces_a_large_photo_and_keeps_full_resolution(tmp_path, monkeypatch):
    """A photo larger than MAX_DISPLAY is drawn reduced (block means for pictures, the strongest response for
    signed maps) and the page says so; activations.npz and --separate keep the full size."""
    monkeypatch.setattr(maps, "MAX_DISPLAY", 50)
    Image.fromarray(_photo(130, 200)).save(tmp_path / "p.png")
    out = maps.write_bank_report(tmp_path / "r", tmp_path / "p.png", ["identity", "laplacian"], title="p.png",
                                 npz=True, separate=True)
    _, ref, _ = maps.bank(tmp_path / "p.png", ["identity", "laplacian"])
    assert Image.open(out / "identity.png").size == (50, 33)  # 200x130 / 4, the last row of blocks partial
    assert Image.open(out / "input.png").size == (50, 33)  # as Pillow's reduce makes the photo
    shown = np.asarray(Image.open(out / "identity.png")).astype(float)
    np.testing.assert_allclose(shown[:32], ref[0][:128].reshape(32, 4, 50, 4).mean(axis=(1, 3)) * 255, atol=0.51)
    np.testing.assert_allclose(shown[32], ref[0][128:].reshape(2, 50, 4).mean(axis=(0, 2)) * 255, atol=0.51)
    lap = np.asarray(Image.open(out / "laplacian.png")).astype(int)[:32] - 128
    blocks = ref[1][:128].reshape(32, 4, 50, 4)
    strongest = np.where(blocks.max(axis=(1, 3)) >= -blocks.min(axis=(1, 3)), blocks.max(axis=(1, 3)),
                         blocks.min(axis=(1, 3)))
    assert (np.sign(lap) == np.sign(np.rint(strongest * 1e6))).mean() > 0.95
    assert Image.open(out / "channels" / "laplacian.png").size == (200, 130)
    with np.load(out / "activations.npz") as z:
        assert z["laplacian"].shape == (130, 200)
    assert "shown at 1/4 of that size" in (out / "index.html").read_text()


def test_bank_memory_does_not_grow_with_the_number_of_kernels(tmp_path):
    """A photo's maps are made, drawn and stored one at a time: eight kernels peak within one map's size of two
    (VmHWM of the command, a 3000x2000 photo: one float32 map is 23 MiB)."""
    import subprocess
    import sys

    Image.fromarray(np.tile(_photo(500, 500), (4, 6, 1))).save(tmp_path / "big.png", compress_level=1)

    def peak(kernels):
        code = ("import sys, resource; from cnnfilter.cli import cli; sys.argv=['cnnfilter']+sys.argv[1:]\n"
                "try:\n    cli()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])")
        res = subprocess.run([sys.executable, "-c", code, "featuremaps", str(tmp_path / "big.png"), "--kernels",
                              kernels, "-o", str(tmp_path / kernels.replace(",", "_")), "-q", "--npz"],
                             capture_output=True, text=True, check=True)
        return int(res.stdout.split()[-1]) / 1024

    two = peak("edge,blur")
    eight = peak(",".join(maps.DEFAULT_BANK))
    assert eight - two < 23, (two, eight)


def test_model_report_titles_once_bars_for_dense_layers_and_pass_through_layers_named(tmp_path):
    """Each layer's name is in the page once, not in its PNG; the dense layer is a bar chart of the classes;
    Dropout and Flatten (pool2's values) are named, not drawn again, unless chosen with --layers."""
    out = tmp_path / "maps"
    res = CliRunner().invoke(cli, ["featuremaps", str(DIGIT), "-m", "digits", "-o", str(out), "-q"])
    assert res.exit_code == 0, res.stderr
    folder = out / "0003"
    page = (folder / "index.html").read_text()
    for name in ("conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "fc1"):
        assert page.count(f"<h2>{name} <small>") == 1 and (folder / f"{name}.png").is_file()
        top = np.asarray(Image.open(folder / f"{name}.png").convert("RGB"))[:4]
        assert (top == pictures.BACKGROUND).all(), name  # no title baked in
    assert not (folder / "flatten.png").exists() and not (folder / "dropout1.png").exists()
    assert "dropout1, flatten: the values of pool2" in page
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["same_values"] == {"dropout1": "pool2", "flatten": "pool2"}
    assert [s["layer"] for s in summary["layers"]][-3:] == ["dropout1", "flatten", "fc1"]
    fc = Image.open(folder / "fc1.png")
    assert fc.width > fc.height and "largest: 3 (" in page
    res = CliRunner().invoke(cli, ["featuremaps", str(DIGIT), "-m", "digits", "-o", str(out), "-q", "--overwrite",
                                   "--layers", "flatten"])
    assert res.exit_code == 0 and (folder / "flatten.png").is_file() and not (folder / "conv1.png").exists()


def test_folder_run_writes_an_index_linking_every_report(tmp_path):
    """A run over several images writes DIR/index.html: every report linked with its input and prediction, the
    failures listed; a re-run replaces it; an index.html cnnfilter did not write is left alone; one image, no
    index."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("0003.png", "0013.png"):
        (src / name).write_bytes((DIGIT.parent / name).read_bytes())
    (src / "index.html.png").write_bytes(DIGIT.read_bytes())  # its report folder cannot be DIR/index.html
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "maps"
    for extra in ([], ["--overwrite"]):
        res = CliRunner().invoke(cli, ["featuremaps", str(src), "-m", "digits", "-o", str(out), *extra])
        assert res.exit_code == 1, res.stderr
        parser = _Refs()
        parser.feed((out / "index.html").read_text())
        assert sorted(parser.srcs) == sorted(["0003/index.html", "0003/input.png", "0003/index.html",
                                              "0013/index.html", "0013/input.png", "0013/index.html",
                                              "index.html_/index.html", "index.html_/input.png",
                                              "index.html_/index.html"])
        for ref in parser.srcs:
            assert (out / ref).is_file(), ref
        page = (out / "index.html").read_text()
        assert "3 (1.000)" in page and "broken.png" in page
        assert ".index figcaption{overflow-wrap:anywhere}" in page  # a long file name stays inside its card
    (out / "index.html").write_text("<p>mine</p>")
    res = CliRunner().invoke(cli, ["featuremaps", str(src / "0003.png"), str(src / "0013.png"), "-m", "digits",
                                   "-o", str(out), "--overwrite"])
    assert res.exit_code == 0 and "left as it is" in res.stderr
    assert (out / "index.html").read_text() == "<p>mine</p>"
    res = CliRunner().invoke(cli, ["featuremaps", str(DIGIT), "-m", "digits", "-o", str(tmp_path / "one"), "-q"])
    assert res.exit_code == 0 and not (tmp_path / "one" / "index.html").exists()


def test_a_folder_run_again_leaves_the_reports_alone_and_links_new_ones(tmp_path):
    """As convolve: a folder's re-run redraws nothing and says so in one line (exit 0); a new image gets its report
    and the index links all; a single image's existing report is an error unless --skip-existing."""
    src = tmp_path / "in"
    src.mkdir()
    for name in ("0003.png", "0013.png"):
        (src / name).write_bytes((DIGIT.parent / name).read_bytes())
    out = tmp_path / "maps"
    args = ["featuremaps", str(src), "-m", "digits", "-o", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "2 skipped (reports exist; --overwrite replaces them)" in res.stderr
    assert "wrote" not in res.stderr and {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    assert CliRunner().invoke(cli, [*args, "-q"]).stderr == ""
    (src / "0023.png").write_bytes((DIGIT.parent / "0023.png").read_bytes())
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "2 skipped" in res.stderr and "0023" in res.stderr
    parser = _Refs()
    parser.feed((out / "index.html").read_text())
    assert {r.split("/")[0] for r in parser.srcs} == {"0003", "0013", "0023"}
    one = ["featuremaps", str(src / "0003.png"), "-m", "digits", "-o", str(out)]
    res = CliRunner().invoke(cli, one)
    assert res.exit_code == 1 and "exists; use --overwrite or --skip-existing" in res.stderr
    res = CliRunner().invoke(cli, [*one, "--skip-existing"])
    assert res.exit_code == 0 and "1 skipped" in res.stderr
    assert CliRunner().invoke(cli, [*one, "--skip-existing", "--overwrite"]).exit_code == 2


def test_thin_photos_duplicate_and_empty_kernel_lists(tmp_path):
    """A 5000x1 photo is reduced to 1000x1 (not to nothing); a kernel named twice is drawn and stored once; an
    empty bank is a usage error."""
    Image.fromarray(np.arange(5000, dtype=np.uint8).reshape(1, -1) % 251).save(tmp_path / "line.png")
    out = maps.write_bank_report(tmp_path / "r", tmp_path / "line.png", ["edge", "blur", "edge"], title="line",
                                 npz=True)
    assert Image.open(out / "edge.png").size == (1000, 1) == Image.open(out / "input.png").size
    with np.load(out / "activations.npz") as z:
        assert sorted(z.files) == ["blur", "edge"]
    assert (out / "index.html").read_text().count("<h2>edge ") == 1
    res = CliRunner().invoke(cli, ["featuremaps", str(tmp_path / "line.png"), "--kernels", ",", "-o",
                                   str(tmp_path / "x")])
    assert res.exit_code == 2 and "the kernel bank is empty" in res.stderr


def test_a_users_own_file_in_a_report_folder_survives_a_rerun(tmp_path):
    """--overwrite replaces the files the earlier report lists as its own (summary.json's "written"): layers it
    no longer draws go, a PNG the user put in the folder stays."""
    out = tmp_path / "maps"
    res = CliRunner().invoke(cli, ["featuremaps", str(DIGIT), "-m", "digits", "-o", str(out), "-q"])
    assert res.exit_code == 0
    Image.new("RGB", (4, 4)).save(out / "0003" / "mine.png")
    res = CliRunner().invoke(cli, ["featuremaps", str(DIGIT), "-m", "digits", "-o", str(out), "-q", "--overwrite",
                                   "--layers", "conv1"])
    assert res.exit_code == 0
    left = {p.name for p in (out / "0003").iterdir()}
    assert left == {"mine.png", "conv1.png", "weights-conv1.png", "input.png", "summary.json", "index.html"}


def test_layer_choice_by_operator_names_and_odd_layer_names(tmp_path):
    """--layers takes ONNX operator names (Conv, Relu) for cnnfilter's own models too; a layer name of 100 CJK
    characters becomes a file name of at most 100 bytes; a map with NaN gives a summary that is JSON."""
    assert list(cnnfilter.featuremaps("digits", DIGIT, layers="Conv,Relu")) == ["conv1", "relu1", "conv2", "relu2"]
    name = "層" * 100
    stem = maps.file_stems([name])[name]
    assert len(stem.encode()) <= 100 and stem.startswith("層")
    acts = {name: np.array([[[np.nan, 1.0], [2.0, np.inf]]], np.float32)}
    out = maps.write_report(tmp_path / "r", input_image=np.zeros((1, 2, 2), np.float32), acts=acts, title="t")
    text = (out / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    layer = json.loads(text)["layers"][0]
    assert layer["min"] == 1.0 and layer["max"] == 2.0 and layer["not_finite"] == 2


def test_filters_of_an_rgb_model_are_colour_tiles(tmp_path):
    """A first convolution over RGB is drawn one colour tile per filter: its red, green and blue weights as the
    tile's channels, mid-grey at 0 on one range for the layer."""
    net = nn.build("c4k3p1-relu-fc2", (3, 6, 6), 2, rng=np.random.default_rng(0))
    model = nn.Model(net, ["a", "b"], np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32))
    nn.save_model(model, tmp_path / "rgb.cnnf")
    out = tmp_path / "maps"
    res = CliRunner().invoke(cli, ["featuremaps", str(ROOT / "samples" / "coffee.png"), "-m", str(tmp_path / "rgb.cnnf"),
                                   "-o", str(out), "-q"])
    assert res.exit_code == 0, res.stderr
    img = np.asarray(Image.open(out / "coffee" / "weights-conv1.png").convert("RGB"))
    w = net.layers[0].weight  # (4, 3, 3, 3)
    peak = np.abs(w).max()
    f = 48 // 3
    for o in range(4):
        r, k = divmod(o, 2)  # 4 tiles: a 2x2 grid
        y, x = 4 + r * (3 * f + 16) + 14, 2 + k * (3 * f + 2)
        tile = img[y : y + 3 * f : f, x : x + 3 * f : f]
        np.testing.assert_array_equal(tile, np.rint(127.5 + 127.5 * w[o].transpose(1, 2, 0) / peak).astype(np.uint8))
    assert "three input channels as red, green and blue" in (out / "coffee" / "index.html").read_text()


def test_cli_says_how_images_were_fitted_to_the_model_as_predict_does(tmp_path):
    """An image that the model's fixed input size or channels change gets one warning per kind of change (as
    predict's), worded for --resize; images the model takes as they are, and -q, get none."""
    src = tmp_path / "in"
    src.mkdir()
    rgb = np.random.default_rng(3).integers(0, 256, (40, 30, 3), np.uint8)
    for name in ("a.png", "b.png"):
        Image.fromarray(rgb).save(src / name)
    (src / "d.png").write_bytes(DIGIT.read_bytes())  # 8x8 greyscale: as the model takes it
    res = CliRunner().invoke(cli, ["featuremaps", str(src), "-m", "digits", "-o", str(tmp_path / "m1")])
    assert res.exit_code == 0, res.output
    warnings = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert len(warnings) == 2 and "a.png' is 30x40 RGB, the model takes 8x8 greyscale: converted to greyscale, " \
        "resized to 8x8 (bilinear)" in warnings[0] and "1 more image(s) converted or resized" in warnings[1]
    res = CliRunner().invoke(cli, ["featuremaps", str(src / "a.png"), "-m", "digits", "-o", str(tmp_path / "m2"),
                                   "--resize", "pad"])
    assert res.exit_code == 0 and "centred on a 8x8 black canvas" in res.stderr
    res = CliRunner().invoke(cli, ["featuremaps", str(src), "-m", "digits", "-o", str(tmp_path / "m3"), "-q"])
    assert res.exit_code == 0 and res.stderr == ""
