"""Every option of every command has its documented effect on the pixels or files, and every error path gives its
exact one-line message and exit code (2: usage, 1: failure). References are tests/naive.py or hand computations."""

import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnfilter.cli import cli
from cnnfilter.io import load_image, save_image

from . import naive

SOBEL_X = [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]
SHARPEN = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
BOX3 = np.full((3, 3), 1 / 9)


def run(*args, stdin=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=stdin)


def ok(res):
    assert res.exit_code == 0, (res.exit_code, res.stderr, res.exception)
    assert res.stderr == "" or res.stderr.startswith(("wrote ", "skipped ", "cnnfilter: ")), res.stderr
    return res


def error_line(res, code: int) -> str:
    """The one stderr line of a failed command (no traceback), after checking the exit code."""
    assert res.exit_code == code, (res.exit_code, res.stderr, res.exception)
    assert isinstance(res.exception, SystemExit), res.exception
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.output
    assert lines[0].startswith("cnnfilter: error: ")
    return lines[0][len("cnnfilter: error: "):]


def as8(values) -> np.ndarray:
    """What an 8-bit file holds for float results: rounded half-to-even, clipped."""
    return np.clip(np.rint(values), 0, 255)


def close(got, ref):
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=1e-5, atol=2e-3)


def within_one_level(got, ref):
    """An 8-bit result of a float computation: at most one level from the float64 reference (float32 rounding)."""
    diff = np.abs(np.asarray(got, np.float64) - as8(ref))
    assert diff.max() <= 1, diff.max()


@pytest.fixture
def grey(tmp_path, rng):
    path = tmp_path / "g.png"
    save_image(path, rng.integers(0, 256, (9, 11), np.uint8))
    return path


@pytest.fixture
def small(tmp_path, rng):
    """Greyscale 0..31: sums of a few integer taps stay below 255 (nothing clipped)."""
    path = tmp_path / "s.png"
    save_image(path, rng.integers(0, 32, (9, 11), np.uint8))
    return path


@pytest.fixture
def rgb(tmp_path, rng):
    path = tmp_path / "c.png"
    save_image(path, rng.integers(0, 256, (8, 10, 3), np.uint8))
    return path


@pytest.fixture
def rgba(tmp_path, rng):
    path = tmp_path / "a.png"
    save_image(path, rng.integers(0, 256, (9, 11, 4), np.uint8))
    return path


def filtered(src, tmp_path, *args, name="out"):
    """Run convolve SRC ARGS; return (the 8-bit file, the unrounded --raw result)."""
    out, raw = tmp_path / f"{name}.png", tmp_path / f"{name}.npy"
    ok(run("convolve", src, *args, "-o", out, "--raw", raw))
    return load_image(out).astype(np.float64), np.load(raw, allow_pickle=False)


# ---------------------------------------------------------------- hand-written kernels, from the documented formulas


def hand_gaussian(sigma, size=None):
    size = 2 * math.ceil(3 * sigma) + 1 if size is None else size
    x = np.arange(size) - (size - 1) / 2
    g = np.exp(-x * x / (2 * sigma * sigma))
    g /= g.sum()
    return np.outer(g, g)


def zero_sum_unit(k):
    pos, neg = np.clip(k, 0, None), np.clip(k, None, 0)
    return pos / pos.sum() + neg / -neg.sum()


def hand_log(sigma, size):
    x = np.arange(size) - (size - 1) / 2
    r2 = (x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma * sigma)
    return zero_sum_unit((1 - r2) * np.exp(-r2))


def hand_dog(sigma, sigma2):
    size = 2 * math.ceil(3 * max(sigma, sigma2)) + 1
    x = np.arange(size) - (size - 1) / 2
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    g1 = np.exp(-r2 / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    g2 = np.exp(-r2 / (2 * sigma2**2)) / (2 * np.pi * sigma2**2)
    return zero_sum_unit(g1 - g2)


def hand_unsharp(amount, sigma, size):
    g = hand_gaussian(sigma, size)
    delta = np.zeros_like(g)
    delta[size // 2, size // 2] = 1
    return delta + amount * (delta - g)


VERTICAL3 = np.array([[0, 1, 0], [0, 1, 0], [0, 1, 0]]) / 3


# ---------------------------------------------------------------------------------------------------- convolve


def test_repeated_kernels_are_a_pipeline_and_name_the_output(grey):
    """-k box -k sharpen: box (with the stride) then sharpen at stride 1; the label joins the names."""
    res = ok(run("convolve", grey, "-k", "box", "-k", "sharpen", "--stride", "2", "--raw", grey.parent / "r.npy"))
    out = grey.with_name("g.box-sharpen.png")
    assert res.stderr == f"wrote {out}\n"
    img = load_image(grey)
    ref = naive.correlate(naive.correlate(img, BOX3, stride=2, border="reflect"), SHARPEN, border="reflect")
    assert ref.shape == (5, 6)
    close(np.load(grey.parent / "r.npy"), ref)
    within_one_level(load_image(out), ref)


def test_size_sets_the_box_side(grey, tmp_path):
    png, raw = filtered(grey, tmp_path, "-k", "box", "--size", "5")
    ref = naive.correlate(load_image(grey), np.full((5, 5), 1 / 25), border="reflect")
    close(raw, ref)
    within_one_level(png, ref)


@pytest.mark.parametrize(("args", "kernel"), [
    (["--sigma", "0.8"], hand_gaussian(0.8)),  # 7x7 from sigma alone
    (["--size", "3", "--sigma", "2"], hand_gaussian(2, 3)),  # not OpenCV's fixed 3x3 table
    (["--size", "9"], hand_gaussian(0.3 * ((9 - 1) * 0.5 - 1) + 0.8, 9)),  # OpenCV's sigma for a size
])
def test_size_and_sigma_set_the_gaussian(grey, tmp_path, args, kernel):
    png, raw = filtered(grey, tmp_path, "-k", "gaussian", *args)
    ref = naive.correlate(load_image(grey), kernel, border="reflect")
    close(raw, ref)
    within_one_level(png, ref)


def test_sigma2_sets_the_second_gaussian_of_dog(grey, tmp_path):
    """dog is zero-sum, so written as |response| by default (--raw keeps the sign); sigma2 is not the default
    1.6 sigma."""
    png, raw = filtered(grey, tmp_path, "-k", "dog", "--sigma", "0.5", "--sigma2", "1")
    ref = naive.correlate(load_image(grey), hand_dog(0.5, 1.0), border="reflect")
    close(raw, ref)
    within_one_level(png, np.abs(ref))
    _, default = filtered(grey, tmp_path, "-k", "dog", "--sigma", "0.5", name="d")
    close(default, naive.correlate(load_image(grey), hand_dog(0.5, 0.8), border="reflect"))


def test_amount_sets_the_unsharp_strength(grey, tmp_path):
    _, raw = filtered(grey, tmp_path, "-k", "unsharp", "--amount", "2", "--sigma", "0.5", "--size", "3")
    close(raw, naive.correlate(load_image(grey), hand_unsharp(2, 0.5, 3), border="reflect"))


def test_angle_turns_the_motion_line(grey, tmp_path):
    img = load_image(grey)
    _, vertical = filtered(grey, tmp_path, "-k", "motion", "--size", "3", "--angle", "90")
    close(vertical, naive.correlate(img, VERTICAL3, border="reflect"))
    _, horizontal = filtered(grey, tmp_path, "-k", "motion", "--size", "3", name="h")
    close(horizontal, naive.correlate(img, VERTICAL3.T, border="reflect"))


def test_normalize_divides_the_kernel_by_its_sum(small, tmp_path):
    img = load_image(small)
    png, _ = filtered(small, tmp_path, "-k", "1,2,1", "--normalize")
    np.testing.assert_array_equal(png, as8(naive.correlate(img, [[0.25, 0.5, 0.25]], border="reflect")))
    png, _ = filtered(small, tmp_path, "-k", "1,2,1", name="plain")
    np.testing.assert_array_equal(png, as8(naive.correlate(img, [[1, 2, 1]], border="reflect")))


def test_scale_multiplies_the_kernel_after_normalize(small, grey, tmp_path):
    img = load_image(grey)
    png, raw = filtered(grey, tmp_path, "-k", "identity", "--scale", "0.5")
    close(raw, img / 2)  # unrounded: halves stay halves
    np.testing.assert_array_equal(png, np.rint(img / 2))  # half-to-even
    png, _ = filtered(small, tmp_path, "-k", "1,1;1,1", "--normalize", "--scale", "3", name="n")
    np.testing.assert_array_equal(png, as8(naive.correlate(load_image(small), np.full((2, 2), 0.75), border="reflect")))
    _, raw = filtered(grey, tmp_path, "-k", "sobel", "--scale", "0.25", name="m")
    gx = naive.correlate(img, SOBEL_X, border="reflect")
    gy = naive.correlate(img, np.transpose(SOBEL_X), border="reflect")
    close(raw, 0.25 * np.hypot(gx, gy))


@pytest.mark.parametrize(("bias", "depth", "added"), [("10", 8, 10.0), ("-20", 8, -20.0), ("50%", 8, 127.5),
                                                      ("1%", 16, 655.35)])
def test_bias_is_a_value_or_a_percentage_of_the_range(tmp_path, rng, bias, depth, added):
    dtype, top = (np.uint8, 255) if depth == 8 else (np.uint16, 65535)
    img = rng.integers(0, top + 1, (6, 7), dtype)
    save_image(tmp_path / "b.png", img)
    ok(run("convolve", tmp_path / "b.png", "-k", "identity", "--bias", bias, "-o", tmp_path / "o.png"))
    got = load_image(tmp_path / "o.png")
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, np.clip(np.rint(img.astype(np.float64) + added), 0, top))


@pytest.mark.parametrize("mode", [None, "clip", "abs", "normalize", "offset"])
def test_output_range_maps_signed_results(grey, tmp_path, mode):
    """A signed 1x3 difference kernel: clip drops negatives, abs (the default for zero-sum kernels) folds them,
    normalize stretches min..max to 0..255, offset adds 128."""
    args = [] if mode is None else ["--output-range", mode]
    png, raw = filtered(grey, tmp_path, "-k", "1,0,-1", *args)
    ref = naive.correlate(load_image(grey), [[1, 0, -1]], border="reflect")
    assert ref.min() < -50 and ref.max() > 50
    lo, hi = ref.min(), ref.max()
    expected = {None: np.abs(ref), "clip": ref, "abs": np.abs(ref), "normalize": (ref - lo) * 255 / (hi - lo),
                "offset": ref + 128}[mode]
    close(raw, ref)  # --raw: the response before --output-range
    within_one_level(png, expected)


IRREGULAR = [[1, 2, 0], [0, 1, 0], [3, 0, 1]]  # integer, asymmetric: every geometry change shows


@pytest.mark.parametrize(("args", "geometry"), [
    ([], {}),
    (["--stride", "2"], {"stride": 2}),
    (["--stride", "2,3"], {"stride": (2, 3)}),
    (["--dilation", "2"], {"dilation": 2}),
    (["--dilation", "1,2"], {"dilation": (1, 2)}),
    (["--padding", "same"], {"padding": "same"}),
    (["--padding", "valid"], {"padding": "valid"}),
    (["--padding", "full"], {"padding": "full"}),
    (["--padding", "2"], {"padding": 2}),
    (["--padding", "0,2"], {"padding": (0, 2)}),
    (["--padding", "2,0,1,3"], {"padding": ((2, 0), (1, 3))}),
    (["--stride", "2", "--padding", "full", "--dilation", "2"], {"stride": 2, "padding": "full", "dilation": 2}),
])
def test_stride_padding_and_dilation(small, tmp_path, args, geometry):
    png, _ = filtered(small, tmp_path, "-k", ";".join(",".join(map(str, r)) for r in IRREGULAR), *args)
    ref = naive.correlate(load_image(small), IRREGULAR, border="reflect", **geometry)
    assert png.shape == ref.shape
    np.testing.assert_array_equal(png, ref)


def test_each_border_mode_and_cval(tmp_path, rng):
    """Corner taps two pixels out read the padding: each mode gives its own border pixels, as numpy.pad makes them
    (one pixel of padding would not tell edge from symmetric)."""
    img = rng.integers(0, 128, (6, 7), np.uint8)
    save_image(tmp_path / "b.png", img)
    src, kernel = tmp_path / "b.png", [[1, 0, 0], [0, 0, 0], [0, 0, 1]]
    args = ["-k", "1,0,0;0,0,0;0,0,1", "--dilation", "2"]
    results = {}
    for border in ("constant", "edge", "reflect", "symmetric", "wrap"):
        png, _ = filtered(src, tmp_path, *args, "--border", border, name=border)
        np.testing.assert_array_equal(png, naive.correlate(img, kernel, dilation=2, border=border))
        results[border] = png
    assert len({r.tobytes() for r in results.values()}) == 5
    png, _ = filtered(src, tmp_path, *args, "--border", "constant", "--cval", "40")
    np.testing.assert_array_equal(png, naive.correlate(img, kernel, dilation=2, border="constant", cval=40))
    assert not np.array_equal(png, results["constant"])
    png, _ = filtered(src, tmp_path, *args, "--cval", "40", name="r")
    np.testing.assert_array_equal(png, results["reflect"])  # --cval is for --border constant only


def test_flip_gives_true_convolution(small, tmp_path):
    img = load_image(small)
    png, _ = filtered(small, tmp_path, "-k", "1,2,0;0,1,0;3,0,1", "--flip")
    np.testing.assert_array_equal(png, naive.correlate(img, np.flip(IRREGULAR), border="reflect"))
    plain, _ = filtered(small, tmp_path, "-k", "1,2,0;0,1,0;3,0,1", name="p")
    assert not np.array_equal(png, plain)


def test_gray_filters_the_luma(rgb, tmp_path):
    png, raw = filtered(rgb, tmp_path, "-k", "0,0,0;0,2,0;0,0,0", "--gray")
    luma = load_image(rgb).astype(np.float64) @ [0.299, 0.587, 0.114]
    assert Image.open(tmp_path / "out.png").mode == "L" and png.shape == (8, 10)
    close(raw, 2 * luma)
    np.testing.assert_array_equal(png, as8(raw))


def test_alpha_keep_and_filter(rgba, tmp_path):
    """keep: alpha unchanged, colour filtered; filter: alpha blurred too and colour weighted by alpha."""
    arr = load_image(rgba).astype(np.float64)
    colour, alpha = arr[:, :, :3], arr[:, :, 3]
    for args in ([], ["--alpha", "keep"]):
        ok(run("convolve", rgba, "-k", "box", *args, "-o", tmp_path / "k.png", "--overwrite"))
        got = load_image(tmp_path / "k.png")
        np.testing.assert_array_equal(got[:, :, 3], alpha)
        within_one_level(got[:, :, :3], naive.correlate(colour, BOX3, border="reflect"))
    ok(run("convolve", rgba, "-k", "box", "--alpha", "filter", "-o", tmp_path / "f.png", "--raw", tmp_path / "f.npz"))
    new_alpha = naive.correlate(alpha, BOX3, border="reflect")
    premultiplied = naive.correlate(colour * alpha[:, :, None] / 255, BOX3, border="reflect")
    expected = premultiplied * 255 / new_alpha[:, :, None]
    raw = np.load(tmp_path / "f.npz")
    close(raw["alpha"], new_alpha)
    close(raw["pixels"], expected)
    got = load_image(tmp_path / "f.png")
    within_one_level(got[:, :, 3], new_alpha)
    within_one_level(got[:, :, :3], expected)


@pytest.mark.parametrize(("method", "path"), [("auto", "separable"), ("direct", "direct"),
                                              ("separable", "separable"), ("fft", "fft")])
def test_method_picks_the_algorithm(grey, tmp_path, monkeypatch, method, path):
    """Every method gives the same pixels; each runs its own code path (auto takes the separable one for a 7x7
    Gaussian)."""
    from cnnfilter import _fft, _loops

    called = []

    def spy(module, name, label):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: (called.append(label), real(*a, **k))[1])

    spy(_loops, "correlate_direct", "direct")
    spy(_loops, "correlate_separable", "separable")
    spy(_fft, "correlate_fft", "fft")
    png, raw = filtered(grey, tmp_path, "-k", "gaussian", "--size", "7", "--sigma", "1.2", "--method", method)
    assert called == [path]
    ref = naive.correlate(load_image(grey), hand_gaussian(1.2, 7), border="reflect")
    close(raw, ref)
    within_one_level(png, ref)


def test_output_forms(grey, tmp_path):
    """-o FILE, -o an existing folder, -o NEW/ (made), -o - (PNG on standard output); default: next to the input."""
    img = load_image(grey)
    ok(run("convolve", grey, "-k", "identity", "-o", tmp_path / "x.png"))
    np.testing.assert_array_equal(load_image(tmp_path / "x.png"), img)
    (tmp_path / "d").mkdir()
    res = ok(run("convolve", grey, "-k", "identity", "-o", tmp_path / "d"))
    assert res.stderr == f"wrote {tmp_path / 'd' / 'g.identity.png'}\n"
    np.testing.assert_array_equal(load_image(tmp_path / "d" / "g.identity.png"), img)
    ok(run("convolve", grey, "-k", "identity", "-o", f"{tmp_path / 'new'}/"))
    np.testing.assert_array_equal(load_image(tmp_path / "new" / "g.identity.png"), img)
    res = ok(run("convolve", grey, "-k", "identity", "-o", "-"))
    assert res.stderr == ""
    import io

    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(res.stdout_bytes))), img)


def test_format_option(grey, tmp_path):
    """-f picks the format whatever the suffix, and the suffix of generated names (jpg, tif)."""
    ok(run("convolve", grey, "-k", "identity", "-f", "tiff"))
    assert Image.open(tmp_path / "g.identity.tif").format == "TIFF"
    np.testing.assert_array_equal(load_image(tmp_path / "g.identity.tif"), load_image(grey))
    ok(run("convolve", grey, "-k", "identity", "-f", "JPG"))
    assert Image.open(tmp_path / "g.identity.jpg").format == "JPEG"
    ok(run("convolve", grey, "-k", "identity", "-f", "png", "-o", tmp_path / "o.bin"))
    assert (tmp_path / "o.bin").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = ok(run("convolve", grey, "-k", "identity", "-f", "tiff", "-o", "-"))
    assert res.stdout_bytes[:4] in (b"II*\x00", b"MM\x00*")


def test_quiet_silences_success_messages(grey, tmp_path):
    res = ok(run("convolve", grey, "-k", "box"))
    assert res.stderr == f"wrote {tmp_path / 'g.box.png'}\n" and res.stdout == ""
    res = ok(run("convolve", grey, "-k", "box", "-q", "--overwrite"))
    assert res.stderr == "" and res.stdout == ""
    save_image(tmp_path / "h.png", np.zeros((4, 4), np.uint8))
    res = ok(run("pool", grey, tmp_path / "h.png", "-o", tmp_path / "o", "-j", "1"))
    assert res.stderr == "cnnfilter: 2 done\n"
    res = ok(run("pool", grey, tmp_path / "h.png", "-o", tmp_path / "o", "-j", "1", "--quiet", "--overwrite"))
    assert res.stderr == "" and res.stdout == ""


def test_quality_and_compress_level_reach_the_encoders_of_pool(tmp_path):
    """--compress-level defaults to 1 (not Pillow's 6); --quality changes the JPEG. (convolve: test_cli.)"""
    img = np.tile(np.arange(128, dtype=np.uint8), (128, 1))
    save_image(tmp_path / "p.png", img)
    made = {}
    for name, args in {"default": [], "1": ["--compress-level", "1"], "9": ["--compress-level", "9"],
                       "q20.jpg": ["--quality", "20"], "q95.jpg": ["--quality", "95"]}.items():
        target = tmp_path / (name if name.endswith(".jpg") else f"{name}.png")
        ok(run("pool", tmp_path / "p.png", "--size", "1", "-o", target, *args))
        made[name] = target.read_bytes()
    assert made["default"] == made["1"] != made["9"]
    assert len(made["9"]) < len(made["1"])
    assert len(made["q20.jpg"]) < len(made["q95.jpg"])
    np.testing.assert_array_equal(load_image(tmp_path / "9.png"), img)


def test_raw_npy_npz_and_tif(grey, rgba, tmp_path):
    """--raw writes the unrounded float32 result: .npy (pixels), .npz (pixels and alpha), .tif (greyscale F)."""
    ok(run("convolve", grey, "-k", "identity", "--scale", "0.5", "--raw", tmp_path / "r.tif", "-o", tmp_path / "o.png"))
    tif = Image.open(tmp_path / "r.tif")
    assert tif.mode == "F"
    np.testing.assert_array_equal(np.asarray(tif), load_image(grey) / 2)
    ok(run("pool", rgba, "--mode", "avg", "--raw", tmp_path / "p.npz", "-o", tmp_path / "p.png"))
    arr = np.load(tmp_path / "p.npz")
    assert sorted(arr.files) == ["alpha", "pixels"] and arr["pixels"].dtype == np.float32
    ref = naive.pool(load_image(rgba), 2, mode="avg")
    close(arr["pixels"], ref[:, :, :3])
    close(arr["alpha"], ref[:, :, 3])
    ok(run("pool", grey, "--mode", "avg", "--raw", tmp_path / "p.npy", "-o", tmp_path / "q.png"))
    close(np.load(tmp_path / "p.npy"), naive.pool(load_image(grey), 2, mode="avg"))


def test_recursive_folders_and_globs(tmp_path, rng):
    """A folder: its top level, every level with -r; '**' in a glob descends only with -r; relative paths kept."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    save_image(src / "top.png", rng.integers(0, 256, (5, 5), np.uint8))
    save_image(src / "sub" / "low.png", rng.integers(0, 256, (5, 5), np.uint8))

    def made(folder):
        return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.png"))

    ok(run("pool", src, "-o", tmp_path / "a", "-j", "1"))
    assert made(tmp_path / "a") == ["top.max2.png"]
    ok(run("pool", src, "-r", "-o", tmp_path / "b", "-j", "1"))
    assert made(tmp_path / "b") == ["sub/low.max2.png", "top.max2.png"]
    ok(run("pool", f"{src}/**/*.png", "-o", tmp_path / "c", "-j", "1"))
    assert made(tmp_path / "c") == ["sub/low.max2.png"]
    ok(run("pool", f"{src}/**/*.png", "--recursive", "-o", tmp_path / "d", "-j", "1"))
    assert made(tmp_path / "d") == ["sub/low.max2.png", "top.max2.png"]
    np.testing.assert_array_equal(load_image(tmp_path / "d" / "sub" / "low.max2.png"),
                                  naive.pool(load_image(src / "sub" / "low.png"), 2))


def test_name_and_suffix(grey, tmp_path):
    ok(run("convolve", grey, "-k", "identity", "--name", "{name}-{kernel}.{ext}", "-f", "tiff"))
    assert Image.open(tmp_path / "g.png-identity.tif").format == "TIFF"
    ok(run("pool", grey, "--name", "small_{stem}.{ext}"))
    np.testing.assert_array_equal(load_image(tmp_path / "small_g.png"), naive.pool(load_image(grey), 2))
    ok(run("convolve", grey, "-k", "identity", "--suffix", "_x", "-f", "jpeg", "-o", f"{tmp_path / 'o'}/"))
    assert Image.open(tmp_path / "o" / "g_x.jpg").format == "JPEG"


def test_existing_outputs_of_one_file(grey, tmp_path):
    """A single file: an existing output is an error (exit 1), --skip-existing leaves it (exit 0), --overwrite
    replaces it."""
    target = tmp_path / "o.png"
    save_image(target, np.zeros((2, 2), np.uint8))
    before = target.read_bytes()
    assert error_line(run("convolve", grey, "-k", "identity", "-o", target), 1) == \
        f"{str(target)!r} exists; use --overwrite or --skip-existing"
    res = ok(run("convolve", grey, "-k", "identity", "-o", target, "--skip-existing"))
    assert res.stderr == f"skipped {target}: it exists\n" and target.read_bytes() == before
    res = ok(run("convolve", grey, "-k", "identity", "-o", target, "--skip-existing", "-q"))
    assert res.stderr == "" and target.read_bytes() == before
    ok(run("convolve", grey, "-k", "identity", "-o", target, "--overwrite"))
    np.testing.assert_array_equal(load_image(target), load_image(grey))


def test_in_place_replaces_each_input_in_its_own_format(tmp_path):
    save_image(tmp_path / "a.png", np.full((6, 6), 10, np.uint8))
    save_image(tmp_path / "b.jpg", np.full((16, 16, 3), 60, np.uint8))
    res = ok(run("convolve", tmp_path / "a.png", tmp_path / "b.jpg", "-k", "0,0,0;0,2,0;0,0,0", "--in-place",
                 "-j", "1"))
    assert res.stderr.splitlines() == ["cnnfilter: warning: kernel '0,0,0;0,2,0;0,0,0' sums to 2, not 0 or 1: results "
                                       "may saturate (--normalize divides by the sum; --scale sets a factor)",
                                       "cnnfilter: 2 done"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.jpg"]
    np.testing.assert_array_equal(load_image(tmp_path / "a.png"), np.full((6, 6), 20))
    assert Image.open(tmp_path / "b.jpg").format == "JPEG"
    assert abs(float(load_image(tmp_path / "b.jpg").mean()) - 120) < 2


def test_two_workers_pool_every_file(tmp_path, rng, monkeypatch):
    """-j 2: two worker processes write what the library computes (options and --max-pixels travel to them)."""
    from cnnfilter import batch

    asked = []
    real_run = batch.run
    monkeypatch.setattr(batch, "run", lambda *a, **k: (asked.append(k["processes"]), real_run(*a, **k))[1])
    arrays = {n: rng.integers(0, 256, (7, 9, 3), np.uint8) for n in ("a", "b", "c")}
    for n, arr in arrays.items():
        save_image(tmp_path / f"{n}.png", arr)
    save_image(tmp_path / "big.png", np.zeros((10, 10), np.uint8))
    res = run("pool", *(tmp_path / f"{n}.png" for n in [*arrays, "big"]), "--size", "3", "--stride", "2", "--mode",
              "avg", "--padding", "1", "--exclude-pad", "--max-pixels", "99", "-o", tmp_path / "o", "-j", "2")
    assert asked == [2]
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["cnnfilter: 3 done, 1 failed", f"  failed: '{tmp_path / 'big.png'}': cannot read "
                                       f"'{tmp_path / 'big.png'}': more pixels than the decompression-bomb limit (99)"]
    for n, arr in arrays.items():
        ref = naive.pool(arr, 3, stride=2, padding=1, mode="avg", count_include_pad=False)
        within_one_level(load_image(tmp_path / "o" / f"{n}.avg3.png"), ref)


def test_jobs_default_to_every_core(grey, tmp_path, monkeypatch):
    """Without -j a batch asks for batch.default_jobs() workers (run here in one process to stay fast)."""
    from cnnfilter import batch

    asked = []
    real_run = batch.run

    def one_process(*a, **k):
        asked.append(k["processes"])
        return real_run(*a, **{**k, "processes": 1})

    monkeypatch.setattr(batch, "run", one_process)
    save_image(tmp_path / "h.png", np.zeros((4, 4), np.uint8))
    ok(run("pool", grey, tmp_path / "h.png", "-o", tmp_path / "o"))
    assert asked == [batch.default_jobs()]
    ok(run("pool", grey, tmp_path / "h.png", "-o", tmp_path / "p", "-j", "3"))
    assert asked[-1] == 3


def test_fail_fast_or_not(grey, tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    res = run("pool", tmp_path / "bad.png", grey, "-o", tmp_path / "o", "-j", "1")
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["cnnfilter: 1 done, 1 failed", f"  failed: '{tmp_path / 'bad.png'}': cannot read "
                                       f"'{tmp_path / 'bad.png'}': not an image (or a format Pillow cannot decode)"]
    assert (tmp_path / "o" / "g.max2.png").is_file()
    res = run("pool", tmp_path / "bad.png", grey, "-o", tmp_path / "f", "-j", "1", "--fail-fast")
    assert res.exit_code == 1
    assert res.stderr.splitlines()[0] == ("cnnfilter: 0 done, 1 failed; stopped at the first failure (--fail-fast), "
                                          "1 not run")
    assert not (tmp_path / "f" / "g.max2.png").exists()


def test_max_pixels_is_an_inclusive_limit(tmp_path, rng):
    save_image(tmp_path / "ten.png", rng.integers(0, 256, (10, 10), np.uint8))
    save_image(tmp_path / "nine.png", rng.integers(0, 256, (9, 9), np.uint8))
    ok(run("pool", tmp_path / "ten.png", "--max-pixels", "100", "-o", tmp_path / "a.png"))
    assert error_line(run("pool", tmp_path / "ten.png", "--max-pixels", "99", "-o", tmp_path / "b.png"), 1) == \
        f"cannot read '{tmp_path / 'ten.png'}': more pixels than the decompression-bomb limit (99)"
    res = run("pool", tmp_path / "ten.png", tmp_path / "nine.png", "--max-pixels", "99", "-o", tmp_path / "c",
              "-j", "1")
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["cnnfilter: 1 done, 1 failed", f"  failed: '{tmp_path / 'ten.png'}': cannot read "
                                       f"'{tmp_path / 'ten.png'}': more pixels than the decompression-bomb limit (99)"]
    assert (tmp_path / "c" / "nine.max2.png").is_file()


def test_standard_input(grey, tmp_path):
    """- reads standard input; its output follows the same rules as any other (existing needs --overwrite)."""
    data = grey.read_bytes()
    target = tmp_path / "o.png"
    ok(run("convolve", "-", "-k", "0,0,0;0,2,0;0,0,0", "-o", target, stdin=data))
    np.testing.assert_array_equal(load_image(target), as8(2.0 * load_image(grey)))
    before = target.read_bytes()
    assert error_line(run("convolve", "-", "-k", "identity", "-o", target, stdin=data), 1) == \
        f"{str(target)!r} exists; use --overwrite or --skip-existing"
    res = ok(run("convolve", "-", "-k", "identity", "-o", target, "--skip-existing", stdin=data))
    assert res.stderr == f"skipped {target}: it exists\n" and target.read_bytes() == before
    ok(run("pool", "-", "-o", target, "--overwrite", stdin=data))
    np.testing.assert_array_equal(load_image(target), naive.pool(load_image(grey), 2))
    res = ok(run("pool", "-", "-o", "-", "-f", "jpeg", stdin=data))
    assert res.stdout_bytes[:3] == b"\xff\xd8\xff"


# ---------------------------------------------------------------------------------------------------------- pool


@pytest.mark.parametrize(("args", "kwargs", "label"), [
    ([], {}, "max2"),
    (["--size", "3"], {"size": 3}, "max3"),
    (["--size", "2,3"], {"size": (2, 3)}, "max2x3"),
    (["--size", "3", "--stride", "1"], {"size": 3, "stride": 1}, "max3"),
    (["--size", "3", "--stride", "1,2"], {"size": 3, "stride": (1, 2)}, "max3"),
    (["--size", "3", "--padding", "1"], {"size": 3, "padding": 1}, "max3"),
    (["--size", "3", "--padding", "1,0"], {"size": 3, "padding": (1, 0)}, "max3"),
    (["--size", "3", "--padding", "1,0,0,1"], {"size": 3, "padding": ((1, 0), (0, 1))}, "max3"),
    (["--mode", "min"], {"mode": "min"}, "min2"),
    (["--mode", "avg", "--size", "2,3"], {"mode": "avg", "size": (2, 3)}, "avg2x3"),
    (["--ceil-mode"], {"ceil_mode": True}, "max2"),
    (["--size", "3", "--stride", "2", "--ceil-mode", "--padding", "1"],
     {"size": 3, "stride": 2, "ceil_mode": True, "padding": 1}, "max3"),
    (["--mode", "avg", "--size", "3", "--padding", "1"], {"mode": "avg", "size": 3, "padding": 1}, "avg3"),
    (["--mode", "avg", "--size", "3", "--padding", "1", "--exclude-pad"],
     {"mode": "avg", "size": 3, "padding": 1, "count_include_pad": False}, "avg3"),
])
def test_pool_options(rgba, args, kwargs, label):
    """Colour and alpha pooled alike, as PyTorch defines pooling; the label names the mode and window."""
    res = ok(run("pool", rgba, *args))
    out = rgba.with_name(f"a.{label}.png")
    assert res.stderr == f"wrote {out}\n"
    ref = naive.pool(load_image(rgba), kwargs.pop("size", 2), **kwargs)
    got = load_image(out)
    assert got.shape == ref.shape
    if "avg" in label:
        within_one_level(got, ref)
    else:
        np.testing.assert_array_equal(got, ref)


def test_pool_ceil_mode_and_exclude_pad_change_the_result(grey):
    """The two flags are not no-ops on this image: ceil-mode adds a row and a column, exclude-pad raises the
    border averages."""
    img = load_image(grey)
    assert naive.pool(img, 2, ceil_mode=True).shape == (5, 6) != naive.pool(img, 2).shape
    inc = naive.pool(img, 3, padding=1, mode="avg")
    exc = naive.pool(img, 3, padding=1, mode="avg", count_include_pad=False)
    assert (exc[0] > inc[0] + 1).all()


# ------------------------------------------------------------------------------------------------------- kernels


def printed(output: str):
    """(header, matrix) of `cnnfilter kernels NAME`."""
    lines = output.splitlines()
    return lines[0], np.array([[float(v) for v in line.split()] for line in lines[1:]])


@pytest.mark.parametrize(("args", "header", "kernel"), [
    (["box", "--size", "2"], "# box: 2x2, sum 1", np.full((2, 2), 0.25)),
    (["blur", "--size", "4"], "# blur: 4x4, sum 1", np.full((4, 4), 1 / 16)),
    (["gaussian", "--sigma", "0.5"], "# gaussian: 5x5, sum 1", hand_gaussian(0.5)),
    (["gaussian", "--size", "3", "--sigma", "2"], "# gaussian: 3x3, sum 1", hand_gaussian(2, 3)),
    (["log", "--sigma", "0.5", "--size", "5"], "# log: 5x5, sum 0", hand_log(0.5, 5)),
    (["dog", "--sigma", "0.5", "--sigma2", "1"], "# dog: 7x7, sum 0", hand_dog(0.5, 1)),
    (["unsharp", "--amount", "2", "--sigma", "0.5", "--size", "3"], "# unsharp: 3x3, sum 1", hand_unsharp(2, 0.5, 3)),
    (["motion", "--size", "3", "--angle", "90"], "# motion: 3x3, sum 1", VERTICAL3),
    (["motion", "--size", "3"], "# motion: 3x3, sum 1", VERTICAL3.T),
    (["1,2;3,-4"], "# custom: 2x2, sum 2", np.array([[1, 2], [3, -4]])),
])
def test_kernels_name_with_parameters(args, header, kernel):
    res = ok(run("kernels", *args))
    head, matrix = printed(res.output)
    assert head == header
    np.testing.assert_allclose(matrix, kernel, rtol=1e-5, atol=1e-6)  # printed to 6 significant digits


def test_kernels_prints_both_halves_of_a_magnitude():
    res = ok(run("kernels", "sobel"))
    assert res.output.splitlines() == ["# sobel-x: 3x3, sum 0", "-1  0  1", "-2  0  2", "-1  0  1",
                                       "# sobel-y: 3x3, sum 0", "-1 -2 -1", " 0  0  0", " 1  2  1"]


def test_version_and_help():
    for flag in ("-V", "--version"):
        res = ok(run(flag))
        assert res.output == "cnnfilter, version 0.1.0\n"
    res = ok(run("kernels", "-h"))
    assert res.output.startswith("Usage: ") and "kernels [OPTIONS] [NAME]" in res.output and "--sigma2" in res.output


# ------------------------------------------------------------------------------------------------ error paths


@pytest.fixture
def tree(tmp_path, rng):
    """g.png h.png a.png (RGBA), notes.png (text), g.box.png (an existing output), nested/sub/n.png (a folder with
    images only in a sub-folder)."""
    save_image(tmp_path / "g.png", rng.integers(0, 256, (9, 11), np.uint8))
    save_image(tmp_path / "h.png", rng.integers(0, 256, (9, 11), np.uint8))
    save_image(tmp_path / "a.png", rng.integers(0, 256, (8, 10, 4), np.uint8))
    save_image(tmp_path / "g.box.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "nested" / "sub").mkdir(parents=True)
    save_image(tmp_path / "nested" / "sub" / "n.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "notes.png").write_text("not an image")
    return tmp_path


KERNEL_NAMES = "kernel '{name}' is not one of blur, box, compass-e, …, x-diag-down, x-diag-up"
C = ["convolve", "{d}/g.png", "-o", "{d}/out.png", "-k"]  # errors found while filtering come after the output check
P = ["pool", "{d}/g.png", "-o", "{d}/out.png"]

ERRORS = [
    # geometry options
    ([*C, "box", "--stride", "a"], 2, "Invalid value for --stride: 'a' is not an int or two ints 'rows,cols'"),
    ([*C, "box", "--stride", "1,2,3"], 2,
     "Invalid value for --stride: '1,2,3' must be one or two ints 'rows,cols', each at least 1"),
    ([*C, "box", "--dilation", "0"], 2,
     "Invalid value for --dilation: '0' must be one or two ints 'rows,cols', each at least 1"),
    ([*C, "box", "--dilation", "2,x"], 2, "Invalid value for --dilation: '2,x' is not an int or two ints 'rows,cols'"),
    ([*C, "box", "--padding", "1,2,3"], 2, "Invalid value for --padding: '1,2,3' must be 1, 2 or 4 non-negative ints"),
    ([*C, "box", "--padding", "-1"], 2, "Invalid value for --padding: '-1' must be 1, 2 or 4 non-negative ints"),
    ([*C, "box", "--size", "15", "--padding", "0"], 2, "the output would be 0x0 pixels: padding 0 is too small"),
    ([*C, "box", "--cval", "x"], 2, "Invalid value for '--cval': 'x' is not a valid float."),
    ([*C, "box", "--cval", "nan", "--border", "constant"], 2, "cval nan must be finite"),
    # kernels
    ([*C, "sharpn"], 2, KERNEL_NAMES.format(name="sharpn") + "; did you mean 'sharpen'?"),
    ([*C, "zzzzzz"], 2, KERNEL_NAMES.format(name="zzzzzz")),
    ([*C, "1,a;2,3"], 2, "kernel '1,a;2,3' is not a matrix of numbers (rows split by ';', values by ',')"),
    ([*C, "1,2;3"], 2, "kernel '1,2;3' has rows of different lengths [2, 1]"),
    ([*C, "1,nan"], 2, "kernel contains NaN or infinite values"),
    ([*C, "3x3: 1 2 3 4 5 6 7 8 x"], 2, "kernel '3x3: 1 2 3 4 5 6 7 8 x' has values that are not numbers"),
    ([*C, "2x2: 1 2 3"], 2, "kernel '2x2: 1 2 3' declares 2x2 = 4 values but has 3"),
    ([*C, "3x3+3+0: 1 2 3 4 5 6 7 8 9"], 2,
     "kernel '3x3+3+0: 1 2 3 4 5 6 7 8 9' has its origin +3+0 outside the 3x3 kernel"),
    ([*C, ",".join(["1"] * 256)], 2, "kernel is 1x256; at most 255x255 is allowed"),
    ([*C, "box", "--size", "256"], 2, "Invalid value for '--size': 256 is not in the range 1<=x<=255."),
    ([*C, "gaussian", "--sigma", "100"], 2, "sigma 100 needs a 601x601 kernel; the largest is 255x255"),
    ([*C, "gaussian", "--sigma", "0"], 2, "Invalid value for '--sigma': 0.0 is not in the range x>0."),
    ([*C, "dog", "--sigma2", "-1"], 2, "Invalid value for '--sigma2': -1.0 is not in the range x>0."),
    ([*C, "motion", "--angle", "x"], 2, "Invalid value for '--angle': 'x' is not a valid float."),
    ([*C, "1,2", "--size", "3"], 2, "options size are for named sized kernels, not for '1,2'"),
    ([*C, "sharpen", "--sigma", "1"], 2, "kernel 'sharpen' has a fixed size; it takes no sigma"),
    ([*C, "box", "--angle", "5"], 2, "kernel 'box' takes size; not angle"),
    ([*C, "sobel", "--size", "3"], 2, "kernel 'sobel' takes no size"),
    ([*C, "{d}/nope.csv"], 2, "kernel file '{d}/nope.csv' does not exist"),
    ([*C, "edge", "--normalize"], 2,
     "--normalize: the kernel sums to 0 (an edge or derivative kernel); use --scale instead"),
    ([*C, "sobel", "--normalize"], 2, "a gradient-magnitude operator sums to 0 and cannot be normalised"),
    ([*C, "box", "--scale", "x"], 2, "Invalid value for '--scale': 'x' is not a valid float."),
    ([*C, "box", "--scale", "inf"], 2, "scale inf must be a finite number"),
    ([*C, "box", "--bias", "x"], 2, "bias 'x' is not a number or a percentage such as 50%"),
    ([*C, "box", "--bias", "ten%"], 2, "bias 'ten%' is not a number or a percentage such as 50%"),
    ([*C, "box", "--output-range", "wrap"], 2,
     "Invalid value for '--output-range': 'wrap' is not one of 'clip', 'abs', 'normalize', 'offset'."),
    ([*C, "box", "--alpha", "blend"], 2, "Invalid value for '--alpha': 'blend' is not one of 'keep', 'filter'."),
    ([*C, "box", "--method", "magic"], 2,
     "Invalid value for '--method': 'magic' is not one of 'auto', 'direct', 'separable', 'fft'."),
    ([*C, "sharpen", "--method", "separable"], 2,
     "method 'separable' needs a rank-1 kernel (an outer product of a column and a row)"),
    (["convolve", "{d}/a.png", "-k", "edge", "--alpha", "filter"], 2,
     "--alpha filter weights colour by alpha, which needs kernels that keep it (smoothing, sum not 0); use --alpha "
     "keep with edge and derivative kernels"),
    (["convolve", "{d}/a.png", "-k", "sobel", "--alpha", "filter"], 2,
     "--alpha filter weights colour by alpha, which needs kernels that keep it (smoothing, sum not 0); use --alpha "
     "keep with edge and derivative kernels"),
    (["convolve", "{d}/g.png"], 2, "Missing option '-k' / '--kernel'."),
    (["convolve", "-k", "box"], 2, "Missing argument 'IMAGE...'."),
    (["pool"], 2, "Missing argument 'IMAGE...'."),
    ([*C, "box", "--frob"], 2, "No such option '--frob'.…"),
    # outputs
    ([*C, "box", "-f", "xyz", "-o", "{d}/o.png"], 2, "format 'xyz' is not one Pillow can write (…)"),
    ([*C, "box", "-o", "{d}/noext"], 2,
     "cannot write '{d}/noext': unknown image suffix '(none)'; use .png, .jpg, .tif, ..."),
    ([*C, "box", "-o", "{d}/missing/o.png"], 1,
     "cannot write '{d}/missing/o.png': folder '{d}/missing' does not exist"),
    ([*C, "box", "--quality", "0"], 2, "Invalid value for '--quality': 0 is not in the range 1<=x<=100."),
    ([*P, "--compress-level", "10"], 2, "Invalid value for '--compress-level': 10 is not in the range 0<=x<=9."),
    ([*C, "box", "--raw", "{d}/r.txt"], 2, "--raw '{d}/r.txt': use one of .npy, .npz, .tif, .tiff"),
    ([*P, "--raw", "{d}/r"], 2, "--raw '{d}/r': use one of .npy, .npz, .tif, .tiff"),
    (["pool", "{d}/nested", "-r", "--raw", "{d}/r.npy"], 2, "--raw writes one file: give a single input image"),
    (["pool", "{d}/a.png", "--raw", "{d}/r.tif"], 2,
     "--raw '{d}/r.tif': a float TIFF holds one channel; use .npy or .npz for colour"),
    # batch options
    ([*C, "box", "--in-place", "-o", "{d}/x.png"], 2,
     "--in-place writes over each input in its own format; it takes no -o, -f, --name or --suffix"),
    ([*P, "--in-place", "--suffix", "_x"], 2,
     "--in-place writes over each input in its own format; it takes no -o, -f, --name or --suffix"),
    ([*P, "--in-place", "--name", "{{stem}}.png"], 2,
     "--in-place writes over each input in its own format; it takes no -o, -f, --name or --suffix"),
    ([*C, "box", "--name", "{{stem}}.png", "--suffix", "_x"], 2,
     "--name and --suffix are two ways to say the same thing; give one"),
    ([*P, "--overwrite", "--skip-existing"], 2, "--overwrite and --skip-existing contradict each other; give one"),
    (["pool", "{d}/g.png", "--name", "{{stem}}/x.png"], 2, "--name '{{stem}}/x.png' gives 'x/x.png', not a file name"),
    (["pool", "{d}/g.png", "{d}/h.png", "--name", ""], 2, "--name '' gives '', not a file name"),
    (["pool", "{d}/g.png", "--name", "{{size}}.png"], 2,
     "--name '{{size}}.png' is not a valid template (fields: {{stem}}, {{name}}, {{kernel}}, {{ext}}; not 'size')"),
    (["convolve", "{d}/g.png", "{d}/h.png", "-k", "box", "-o", "-"], 2,
     "-o - (standard output) takes a single input image"),
    (["pool", "{d}/nested", "-r", "-o", "-"], 2, "-o - (standard output) takes a single input image"),
    (["pool", "{d}/g.png", "{d}/a.png", "-o", "{d}/h.png"], 2,
     "-o '{d}/h.png' is a file; several inputs need a folder"),
    ([*P, "-o", "{d}/./g.png"], 2, "output '{d}/./g.png' is the input image; use --in-place to write over it"),
    (["convolve", "{d}/g.png", "-k", "box"], 1, "'{d}/g.box.png' exists; use --overwrite or --skip-existing"),
    ([*P, "-j", "0"], 2, "Invalid value for '-j' / '--jobs': 0 is not in the range x>=1."),
    ([*P, "--max-pixels", "0"], 2, "Invalid value for '--max-pixels': 0 is not in the range x>=1."),
    ([*P, "--max-pixels", "98"], 1, "cannot read '{d}/g.png': more pixels than the decompression-bomb limit (98)"),
    # inputs
    (["pool", "{d}/nothere.png"], 1, "cannot read '{d}/nothere.png': no such file or folder"),
    (["pool", "{d}/notes.png"], 1, "cannot read '{d}/notes.png': not an image (or a format Pillow cannot decode)"),
    (["pool", "{d}/nested"], 1, "no images found in '{d}/nested'"),
    (["pool", "{d}/nested/*.png"], 1, None),  # a glob matching nothing: a failed file, see below
    # pool geometry
    ([*P, "--size", "0"], 2, "Invalid value for --size: '0' must be one or two ints 'rows,cols', each at least 1"),
    ([*P, "--size", "2,2,2"], 2,
     "Invalid value for --size: '2,2,2' must be one or two ints 'rows,cols', each at least 1"),
    ([*P, "--stride", "x"], 2, "Invalid value for --stride: 'x' is not an int or two ints 'rows,cols'"),
    ([*P, "--padding", "same"], 2,
     "Invalid value for --padding: 'same' is not one of N, 'ph,pw' or 'top,bottom,left,right'"),
    ([*P, "--padding", "1,1,1"], 2, "Invalid value for --padding: '1,1,1' must be 1, 2 or 4 non-negative ints"),
    ([*P, "--size", "3", "--padding", "3"], 2,
     "padding …: a 3x3 window (dilation 1x1) would hold no pixel of the image"),
    ([*P, "--size", "3", "--padding", "1,0,3,0"], 2,
     "padding …: a 3x3 window (dilation 1x1) would hold no pixel of the image"),
    ([*P, "--size", "20"], 2, "the window 20x20 does not fit in the image 9x11 with padding 0"),
    ([*P, "--mode", "median"], 2, "Invalid value for '--mode': 'median' is not one of 'max', 'avg', 'min'."),
    # kernels
    (["kernels", "box", "--sigma", "1"], 2, "kernel 'box' takes size; not sigma"),
    (["kernels", "gaussian", "--angle", "5"], 2, "kernel 'gaussian' takes size, sigma; not angle"),
    (["kernels", "sharpen", "--size", "3"], 2, "kernel 'sharpen' has a fixed size; it takes no size"),
    (["kernels", "sobel", "--size", "3"], 2, "kernel 'sobel' takes no size"),
    (["kernels", "log", "--sigma", "50"], 2, "sigma 50 needs a 301x301 kernel; the largest is 255x255"),
    (["kernels", "--sigma", "1"], 2, "--size, --sigma, ... need a kernel NAME"),
    (["kernels", "sharpn"], 2, KERNEL_NAMES.format(name="sharpn") + "; did you mean 'sharpen'?"),
    (["kernels", "box", "extra"], 2, "Got unexpected extra argument (extra)"),
]


@pytest.mark.parametrize(("args", "code", "message"), ERRORS, ids=[f"{n:02d}" for n in range(len(ERRORS))])
def test_error_messages_and_exit_codes(tree, args, code, message):
    """One line on stderr with the exact message (… stands for a long, stable middle or end), the exit code, no
    traceback, and no output file left behind."""
    before = sorted(tree.rglob("*"))
    res = run(*[a.format(d=tree) for a in args])
    if message is None:  # globs are batches: the failure is reported per file
        assert res.exit_code == code
        assert res.stderr.splitlines() == ["cnnfilter: 0 done, 1 failed",
                                           f"  failed: '{tree}/nested/*.png': no file matches '{tree}/nested/*.png'"]
    else:
        line = error_line(res, code)
        expected = message.format(d=tree)
        if "…" in expected:
            head, tail = expected.split("…")
            assert line.startswith(head) and line.endswith(tail), line
        else:
            assert line == expected
    assert sorted(tree.rglob("*")) == before


def test_standard_input_errors(grey, tmp_path):
    data = grey.read_bytes()
    assert error_line(run("convolve", "-", grey, "-k", "box", "-o", tmp_path / "o.png", stdin=data), 2) == \
        "- (standard input) cannot be mixed with other inputs"
    assert error_line(run("pool", "-", stdin=data), 2) == \
        "reading standard input needs -o/--output (a file, or - for standard output)"
    assert error_line(run("pool", "-", "--in-place", "-o", tmp_path / "o.png", stdin=data), 2) == \
        "--in-place writes over each input in its own format; it takes no -o, -f, --name or --suffix"
    assert error_line(run("pool", "-", "-o", tmp_path / "o.xyz", stdin=data), 2) == \
        f"cannot write '{tmp_path / 'o.xyz'}': unknown image suffix '.xyz'; use .png, .jpg, .tif, ..."
    assert error_line(run("pool", "-", "-o", "-", stdin=b""), 1) == "cannot read '-': standard input is empty"
    assert error_line(run("pool", "-", "-o", "-", stdin=b"hello"), 1) == \
        "cannot read '<stdin>': not an image (or a format Pillow cannot decode)"
    assert not (tmp_path / "o.png").exists()


def test_name_without_a_file_name_for_one_input_fails_that_input(tmp_path, rng):
    """--name '{stem}' is fine in general but names '..png' '.': that file fails (exit 1), no internal error."""
    save_image(tmp_path / "ok.png", rng.integers(0, 256, (4, 4), np.uint8), format="png")
    save_image(tmp_path / "..png", rng.integers(0, 256, (4, 4), np.uint8), format="png")
    assert error_line(run("pool", tmp_path / "..png", "--name", "{stem}"), 1) == \
        "--name '{stem}' gives '.', not a file name"
    res = run("pool", tmp_path / "ok.png", tmp_path / "..png", "--name", "{stem}", "-f", "png", "-o", tmp_path / "o",
              "-j", "1")
    assert res.exit_code == 1
    assert res.stderr.splitlines() == ["cnnfilter: 1 done, 1 failed",
                                       f"  failed: '{tmp_path / '..png'}': --name '{{stem}}' gives '.', not a file name"]
    assert (tmp_path / "o" / "ok").is_file()
