"""The command line: help, versions, outputs, exact one-line errors and exit codes."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cnnfilter import __version__
from cnnfilter.cli import cli
from cnnfilter.io import load_image, save_image

from . import naive


@pytest.fixture
def run():
    def invoke(*args, stdin=None):
        return CliRunner().invoke(cli, [str(a) for a in args], input=stdin)

    return invoke


@pytest.fixture
def photo(tmp_path, rng):
    path = tmp_path / "photo.png"
    save_image(path, rng.integers(0, 256, (24, 20, 3), np.uint8))
    return path


@pytest.mark.parametrize("command", [[], ["convolve"], ["pool"]])
def test_help_has_examples(run, command):
    """Every command answers -h and --help, with examples."""
    for flag in ("-h", "--help"):
        res = run(*command, flag)
        assert res.exit_code == 0
        assert "Examples:" in res.output and "cnnfilter" in res.output


def test_the_command_collects_garbage_less_often_and_not_at_exit():
    """The command's process (not the library's host: importing cnnfilter.cli changes nothing) waits for 100,000
    new objects between collections and freezes every object before the interpreter's last collection."""
    import gc

    before = gc.get_threshold()
    code = ("import atexit, gc, sys; atexit.register(lambda: print(gc.get_threshold()[0], gc.get_freeze_count() > 0));"
            " sys.argv = ['cnnfilter', 'kernels']; from cnnfilter.cli import main; main()")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "100000 True"
    assert gc.get_threshold() == before


def test_version(run):
    res = run("--version")
    assert res.exit_code == 0 and __version__ in res.output


def test_convolve_writes_next_to_the_input(run, photo):
    """The default output is IMAGE-STEM.KERNEL.png next to IMAGE, RGB stays RGB, values as the library gives."""
    res = run("convolve", photo, "-k", "sharpen", "--border", "edge")
    assert res.exit_code == 0, res.output
    out = photo.with_name("photo.sharpen.png")
    got = load_image(out)
    assert got.shape == (24, 20, 3) and got.dtype == np.uint8
    ref = naive.correlate(load_image(photo), [[0, -1, 0], [-1, 5, -1], [0, -1, 0]], border="edge")
    np.testing.assert_array_equal(got, np.clip(np.rint(ref), 0, 255))


def test_greyscale_alpha_and_inline_kernel(run, tmp_path, rng):
    """LA stays LA with alpha untouched; an inline matrix is labelled 'custom'."""
    arr = rng.integers(0, 256, (10, 12, 2), np.uint8)
    save_image(tmp_path / "g.png", arr)
    res = run("convolve", tmp_path / "g.png", "-k", "0,0,0;0,2,0;0,0,0")
    assert res.exit_code == 0, res.output
    img = Image.open(tmp_path / "g.custom.png")
    assert img.mode == "LA"
    got = np.asarray(img)
    np.testing.assert_array_equal(got[:, :, 1], arr[:, :, 1])
    np.testing.assert_array_equal(got[:, :, 0], np.clip(arr[:, :, 0].astype(int) * 2, 0, 255))


def test_stride_padding_geometry_and_alpha_follow(run, tmp_path, rng):
    """--stride 2 --padding valid shrinks the image; alpha is sampled at each window's centre."""
    arr = rng.integers(0, 256, (11, 9, 4), np.uint8)
    save_image(tmp_path / "a.png", arr)
    res = run("convolve", tmp_path / "a.png", "-k", "box", "--stride", "2", "--padding", "valid", "-o",
              tmp_path / "o.png")
    assert res.exit_code == 0, res.output
    got = load_image(tmp_path / "o.png")
    assert got.shape == (5, 4, 4)
    np.testing.assert_array_equal(got[:, :, 3], arr[1:10:2, 1:8:2, 3])


def test_pool_seed_average_is_36(run, tmp_path):
    """The seeds' 2x2 average-pooling example written as 8-bit: 36.5 rounds to 36."""
    img = np.array([[31, 15, 28, 184], [0, 100, 70, 38], [12, 12, 7, 2], [12, 12, 45, 6]], np.uint8)
    save_image(tmp_path / "s.png", img)
    res = run("pool", tmp_path / "s.png", "--size", "2", "--mode", "avg")
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(load_image(tmp_path / "s.avg2.png"), [[36, 80], [12, 15]])
    res = run("pool", tmp_path / "s.png", "-o", tmp_path / "m.png", "-q")
    assert res.exit_code == 0 and res.output == ""
    np.testing.assert_array_equal(load_image(tmp_path / "m.png"), [[100, 184], [12, 45]])


def test_sixteen_bit_greyscale_stays_sixteen_bit(run, tmp_path, rng):
    arr = rng.integers(0, 65536, (8, 8), np.uint16)
    save_image(tmp_path / "d.png", arr)
    assert run("convolve", tmp_path / "d.png", "-k", "identity").exit_code == 0
    got = load_image(tmp_path / "d.identity.png")
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, arr)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["convolve", "{img}", "-k", "edgy"], 2, "cnnfilter: error: kernel 'edgy' is not one of blur, box, compass-e, "),
    (["convolve", "{img}", "-k", "edge", "--stride", "0"], 2,
     "cnnfilter: error: Invalid value for --stride: '0' must be one or two ints 'rows,cols', each at least 1"),
    (["convolve", "{img}", "-k", "edge", "--padding", "half"], 2,
     "cnnfilter: error: Invalid value for --padding: 'half' is not one of 'same', 'valid', 'full', N, 'ph,pw' or "
     "'top,bottom,left,right'"),
    (["convolve", "{img}", "-k", "1,2;3"], 2, "cnnfilter: error: kernel '1,2;3' has rows of different lengths [2, 1]"),
    (["convolve", "{img}", "-k", "box", "--size", "99", "--padding", "valid"], 2,
     "cnnfilter: error: padding 'valid' needs the kernel (99x99 with dilation) to fit in the image (24x20); use "
     "padding 'same' or 'full'"),
    (["convolve", "{dir}/nothere.png", "-k", "edge"], 1, "cnnfilter: error: cannot read '{dir}/nothere.png': no such file"),
    (["convolve", "{dir}/notes.png", "-k", "edge"], 1,
     "cnnfilter: error: cannot read '{dir}/notes.png': not an image (or a format Pillow cannot decode)"),
    (["convolve", "{img}", "-k", "edge", "-o", "{img}"], 2,
     "cnnfilter: error: output '{img}' is the input image; use --in-place to write over it"),
    (["convolve", "{img}", "-k", "edge", "-o", "{dir}/out.xyz"], 2,
     "cnnfilter: error: cannot write '{dir}/out.xyz': unknown image suffix '.xyz'; use .png, .jpg, .tif, ..."),
    (["convolve", "{img}", "--border", "mirrored", "-k", "edge"], 2, "cnnfilter: error: Invalid value for '--border'"),
    (["convolve", "{img}"], 2, "cnnfilter: error: Missing option '-k' / '--kernel'."),
    (["pool", "{img}", "--size", "2", "--padding", "2"], 2,
     "cnnfilter: error: padding 2: a 2x2 window (dilation 1x1) would hold no pixel of the image"),
    (["pool", "{img}", "--mode", "median"], 2, "cnnfilter: error: Invalid value for '--mode'"),
    (["frobnicate"], 2, "cnnfilter: error: No such command 'frobnicate'."),
])
def test_errors_are_one_line_with_exit_codes(run, photo, args, code, message):
    """Usage errors exit 2, failures exit 1; each is one line on stderr, no traceback."""
    (photo.parent / "notes.png").write_text("not an image")
    fill = {"img": str(photo), "dir": str(photo.parent)}
    res = run(*[a.format(**fill) for a in args])
    assert res.exit_code == code
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(message.format(**fill))
    assert "Traceback" not in res.output


def test_input_is_never_overwritten(run, photo):
    before = photo.read_bytes()
    res = run("convolve", photo, "-k", "edge", "-o", str(photo.parent / "." / photo.name))
    assert res.exit_code == 2
    assert photo.read_bytes() == before


def test_stdin_to_stdout(run, photo):
    """'-' reads standard input and -o - writes PNG to standard output."""
    res = CliRunner().invoke(cli, ["convolve", "-", "-k", "identity", "-o", "-"], input=photo.read_bytes())
    assert res.exit_code == 0
    assert res.stdout_bytes[:8] == b"\x89PNG\r\n\x1a\n"
    res = CliRunner().invoke(cli, ["convolve", "-", "-k", "identity"], input=photo.read_bytes())
    assert res.exit_code == 2 and "needs -o/--output" in res.stderr
    res = CliRunner().invoke(cli, ["convolve", str(photo), "-k", "identity", "-o", "-"])
    assert res.exit_code == 0 and res.stdout_bytes[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (photo.parent / "-").exists()


def test_stdin_stdout_and_format_in_a_real_process(tmp_path, photo):
    """In a fresh process (Pillow's writers not yet registered) '-' in and '-o - -f jpeg' out work."""
    res = subprocess.run([sys.executable, "-m", "cnnfilter", "convolve", "-", "-k", "edge", "-o", "-", "-f", "jpeg"],
                         input=photo.read_bytes(), capture_output=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout[:3] == b"\xff\xd8\xff"
    res = subprocess.run([sys.executable, "-m", "cnnfilter", "convolve", str(photo), "-k", "edge", "-f", "xyz", "-o",
                          str(tmp_path / "a.png")], capture_output=True, text=True)
    assert res.returncode == 2
    assert res.stderr.startswith("cnnfilter: error: format 'xyz' is not one Pillow can write (")


def _python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_import_and_help_do_not_import_numba():
    """import cnnfilter and cnnfilter --help load no numba (start-up stays fast)."""
    assert _python("import sys, cnnfilter; print('numba' in sys.modules)") == "False"
    code = ("import sys\nfrom cnnfilter.cli import cli\ntry:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('numba' in sys.modules, file=sys.stderr)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stderr.strip() == "False"


def test_console_script_and_module_entry(tmp_path, photo):
    """python -m cnnfilter runs; a real process exits 0 on success and 2 on a usage error."""
    ok = subprocess.run([sys.executable, "-m", "cnnfilter", "convolve", str(photo), "-k", "edge", "-o",
                         str(tmp_path / "e.png")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "e.png").exists()
    bad = subprocess.run([sys.executable, "-m", "cnnfilter", "pool", str(photo), "--size", "x"], capture_output=True,
                         text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["cnnfilter: error: Invalid value for --size: 'x' is not an int or two "
                                               "ints 'rows,cols'"]


def test_no_arguments_prints_help(run):
    res = run()
    assert res.exit_code == 0
    assert res.output.startswith("Usage: ") and "Commands:" in res.output


def test_debug_anywhere_shows_the_traceback(run, photo, tmp_path):
    """--debug, before or after the command, lets the exception through instead of the one-line message."""
    for args in (["--debug", "convolve", photo, "-k", "edgy"], ["convolve", photo, "-k", "edgy", "--debug"]):
        res = run(*args)
        assert res.exit_code != 0
        assert isinstance(res.exception, Exception) and not isinstance(res.exception, SystemExit)
        assert "kernel 'edgy'" in str(res.exception)


def test_output_problems_are_found_before_any_work(run, photo, monkeypatch):
    """An unknown suffix or a missing folder fails before the image is even read."""
    import cnnfilter.io

    def boom(*_):
        raise AssertionError("the input was read")

    monkeypatch.setattr(cnnfilter.io, "read_picture", boom)
    res = run("convolve", photo, "-k", "edge", "-o", photo.parent / "nope" / "a.png")
    assert res.exit_code == 1
    assert "folder" in res.stderr and "does not exist" in res.stderr


def test_kernels_lists_and_prints(run):
    """cnnfilter kernels lists every kernel with size and sum; NAME prints its matrix; errors are usage errors."""
    res = run("kernels")
    assert res.exit_code == 0
    lines = res.output.splitlines()
    assert lines[0].split() == ["name", "size", "sum", "description"]
    assert any(line.split()[:3] == ["edge", "3x3", "0"] for line in lines)
    res = run("kernels", "sharpen")
    assert res.exit_code == 0
    assert res.output.splitlines() == ["# sharpen: 3x3, sum 1", " 0 -1  0", "-1  5 -1", " 0 -1  0"]
    res = run("kernels", "gaussian", "--size", "5", "--sigma", "1")
    assert res.exit_code == 0 and res.output.startswith("# gaussian: 5x5, sum 1")
    res = run("kernels", "sharpn")
    assert res.exit_code == 2 and "did you mean 'sharpen'?" in res.stderr
    res = run("kernels", "--size", "3")
    assert res.exit_code == 2 and "need a kernel NAME" in res.stderr


def test_convolve_magnitude_and_output_range(run, tmp_path, rng):
    """-k sobel writes the magnitude; --output-range offset writes 128 on a flat image; --normalize on a zero-sum
    kernel is a usage error."""
    save_image(tmp_path / "flat.png", np.full((8, 8), 77, np.uint8))
    assert run("convolve", tmp_path / "flat.png", "-k", "laplacian", "--output-range", "offset", "-o",
               tmp_path / "o.png").exit_code == 0
    np.testing.assert_array_equal(load_image(tmp_path / "o.png"), np.full((8, 8), 128))
    assert run("convolve", tmp_path / "flat.png", "-k", "sobel", "-o", tmp_path / "s.png").exit_code == 0
    np.testing.assert_array_equal(load_image(tmp_path / "s.png"), np.zeros((8, 8)))
    res = run("convolve", tmp_path / "flat.png", "-k", "edge", "--normalize")
    assert res.exit_code == 2 and "sums to 0" in res.stderr
    res = run("convolve", tmp_path / "flat.png", "-k", "3x3: 1 1 1", "-o", tmp_path / "x.png")
    assert res.exit_code == 2 and "declares 3x3 = 9 values but has 3" in res.stderr


@pytest.mark.parametrize(("im_kernel", "ours"), [("Sobel", "sobel-x"), ("Compass", "compass-e"), ("Kirsch", "kirsch-e"),
                                                 ("Laplacian:0", "edge")])
def test_same_pixels_as_imagemagick(tmp_path, im_kernel, ours):
    """ImageMagick's -morphology Convolve NAME and cnnfilter's equivalent kernel write identical 8-bit images."""
    import shutil

    convert = shutil.which("convert", path="/usr/bin")
    if convert is None:
        pytest.skip("ImageMagick is not installed (apt-get install imagemagick)")
    sample = Path(__file__).resolve().parent.parent / "samples" / "camera.png"
    subprocess.run([convert, str(sample), "-virtual-pixel", "Edge", "-morphology", "Convolve", im_kernel, "-depth", "8",
                    str(tmp_path / "im.png")], check=True, capture_output=True)
    res = CliRunner().invoke(cli, ["convolve", str(sample), "-k", ours, "--border", "edge", "--output-range", "clip",
                                   "-o", str(tmp_path / "cf.png")])
    assert res.exit_code == 0, res.output
    im = np.asarray(Image.open(tmp_path / "im.png").convert("L"))
    np.testing.assert_array_equal(load_image(tmp_path / "cf.png"), im)


def test_raw_quality_and_compression(run, photo, tmp_path):
    """--raw writes the unrounded floats; --quality and --compress-level reach the encoders."""
    res = run("convolve", photo, "-k", "gaussian", "--sigma", "1.5", "--raw", tmp_path / "r.npy", "-o",
              tmp_path / "g.png")
    assert res.exit_code == 0, res.output
    raw = np.load(tmp_path / "r.npy", allow_pickle=False)
    assert raw.dtype == np.float32 and raw.shape == (24, 20, 3)
    np.testing.assert_array_equal(load_image(tmp_path / "g.png"), np.clip(np.rint(raw), 0, 255))
    sizes = {}
    for q in (30, 95):
        assert run("convolve", photo, "-k", "identity", "-o", tmp_path / f"q{q}.jpg", "--quality", q).exit_code == 0
        sizes[q] = (tmp_path / f"q{q}.jpg").stat().st_size
    assert sizes[30] < sizes[95]
    smooth = tmp_path / "smooth.png"
    save_image(smooth, np.tile(np.arange(64, dtype=np.uint8), (64, 1)))
    for level in (0, 9):
        assert run("convolve", smooth, "-k", "identity", "-o", tmp_path / f"c{level}.png", "--compress-level",
                   level).exit_code == 0
    assert (tmp_path / "c9.png").stat().st_size < (tmp_path / "c0.png").stat().st_size
    res = run("convolve", photo, "-k", "edge", "--raw", tmp_path / "r.tif", "-o", tmp_path / "x.png")
    assert res.exit_code == 2 and "a float TIFF holds one channel" in res.stderr
    res = run("convolve", photo, photo, "-k", "edge", "--raw", tmp_path / "r.npy")
    assert res.exit_code == 2 and "give a single input image" in res.stderr


@pytest.mark.parametrize(("command", "sections"), [
    ("convolve", ["Kernel:", "Geometry:", "Pixels:", "Output:", "Batch:"]),
    ("pool", ["Window:", "Geometry:", "Output:", "Batch:"]),
])
def test_help_groups_options(run, command, sections):
    """--help lists the options in sections, in this order, with -h/--help last."""
    out = run(command, "--help").output
    where = [out.index(s) for s in sections]
    assert where == sorted(where)
    assert out.rindex("--help") > where[-1]


def test_cli_modules_import_no_circle():
    """The library never imports the CLI; the shared CLI module imports no command module; each command module
    imports only the shared one."""
    code = ("import sys, cnnfilter.ops, cnnfilter.batch, cnnfilter.maps, cnnfilter.nn\n"
            "print(any(m.startswith('cnnfilter.cli') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    folder = Path(cli.callback.__code__.co_filename).parent
    assert "from .image" not in (folder / "base.py").read_text() and "from .nn" not in (folder / "base.py").read_text()
    for name in ("image.py", "nn.py"):
        text = (folder / name).read_text()
        assert "from .base import" in text and "from .image" not in text and "from .nn" not in text


def test_group_help_lists_commands_without_loading_them():
    """cnnfilter --help lists every command with its own one-line help, importing no command module."""
    import click

    from cnnfilter.cli.base import COMMANDS

    code = ("import sys\nfrom cnnfilter.cli import cli\ntry:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('cnnfilter.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "['cnnfilter.cli.base']"
    ctx = click.Context(cli)
    for name, (_, _, short) in COMMANDS.items():
        assert cli.get_command(ctx, name).get_short_help_str(limit=200) == short


def test_every_subpackage_is_installed():
    """pyproject lists every sub-package (setuptools installs only those named): a regular pip install has the
    CLI package too, not only an editable one."""
    import tomllib

    root = Path(__file__).resolve().parent.parent
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(root).parts) for p in (root / "cnnfilter").rglob("__init__.py")}
    assert found <= listed


@pytest.fixture
def onnx_models(tmp_path, rng):
    """LeNet and a ResNet-style net as .onnx files (the builders of test_onnxfile)."""
    onnx = pytest.importorskip("onnx")
    from .test_onnxfile import lenet, resnet

    onnx.save(lenet(rng), tmp_path / "lenet.onnx")
    onnx.save(resnet(rng), tmp_path / "resnet.onnx")
    return tmp_path / "lenet.onnx", tmp_path / "resnet.onnx"


def test_predict_and_featuremaps_take_onnx_models(run, onnx_models, photo, tmp_path):
    lenet, resnet = onnx_models
    digit = Path(__file__).parent.parent / "samples" / "digits" / "3" / "0003.png"
    res = run("predict", lenet, digit, "--json")
    assert res.exit_code == 0, res.output
    import json

    row = json.loads(res.output.splitlines()[0])
    assert row["class"] in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    (tmp_path / "five.txt").write_text("a\nb\nc\nd\ne\n")
    res = run("predict", resnet, photo, "--classes", tmp_path / "five.txt", "--mean", "imagenet", "--std",
              "imagenet", "--channels", "bgr", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output.splitlines()[0])["class"] in "abcde"
    res = run("featuremaps", photo, "-m", resnet, "--layers", "Conv,b1.add", "-o", tmp_path / "maps", "-q")
    assert res.exit_code == 0, res.output
    drawn = sorted(p.name for p in (tmp_path / "maps" / "photo").glob("*.png") if not p.name.startswith(
        ("input", "weights")))
    assert drawn == sorted(f"{n}.png" for n in ["stem", "b0.c1", "b0.c2", "b1.c1", "b1.c2", "b1.proj", "b1.add"])
    res = run("featuremaps", "-m", resnet, "--list-layers")
    assert "Conv 3x3 3->8 s2" in res.output and "GlobalAveragePool" in res.output


def test_a_model_of_symbolic_size_runs_each_photo_at_its_own_size(run, photo, tmp_path, rng):
    """featuremaps with a model whose height and width are symbolic: the maps have the photo's size (24x20 ->
    12x10 after the stride-2 stem), --input-size fixes one size, --list-layers says so."""
    import json

    onnx = pytest.importorskip("onnx")
    from .test_onnxfile import resnet

    m = resnet(rng)
    for d in m.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.dim_param = "side"
    onnx.save(m, tmp_path / "free.onnx")
    res = run("featuremaps", photo, "-m", tmp_path / "free.onnx", "--layers", "stem", "-o", tmp_path / "a", "-q")
    assert res.exit_code == 0, res.output
    layers = json.loads((tmp_path / "a" / "photo" / "summary.json").read_text())["layers"]
    assert layers[0]["shape"] == [8, 12, 10]
    res = run("featuremaps", photo, "-m", tmp_path / "free.onnx", "--layers", "stem", "-o", tmp_path / "b", "-q",
              "--input-size", "40x30")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "b" / "photo" / "summary.json").read_text())["layers"][0]["shape"] == [8, 20, 15]
    res = run("featuremaps", "-m", tmp_path / "free.onnx", "--list-layers")
    assert "each image runs at its own size" in res.output


def test_onnx_options_are_checked(run, onnx_models, photo, tmp_path):
    lenet, _ = onnx_models
    res = run("predict", "digits", photo, "--mean", "imagenet")
    assert res.exit_code == 2 and "only for ONNX models" in res.output
    res = run("predict", lenet, photo, "--std", "0,1")
    assert res.exit_code == 2 and "positive" in res.output
    (tmp_path / "two.txt").write_text("a\nb\n")
    res = run("predict", lenet, photo, "--classes", tmp_path / "two.txt")
    assert res.exit_code == 1 and "2 class names for an output of 10 values" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = run("featuremaps", photo, "--input-size", "64x64")
    assert res.exit_code == 2 and "need -m/--model" in res.output
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07" * 50)
    res = run("predict", tmp_path / "bad.onnx", photo)
    assert res.exit_code == 1 and "not an ONNX model" in res.output


def test_export_writes_onnx_that_predicts_as_the_model_does(run, tmp_path):
    pytest.importorskip("onnx")
    digits = Path(__file__).parent.parent / "samples" / "digits"
    out = tmp_path / "digits.onnx"
    res = run("export", "digits", "-o", out)
    assert res.exit_code == 0 and out.exists()
    res = run("export", "digits", "-o", out)  # exists: exit 1, as for every command's outputs (README)
    assert res.exit_code == 1 and "exists; use --overwrite" in res.output
    res = run("export", "digits", "-o", tmp_path / "no" / "d.onnx")
    assert res.exit_code == 1 and "does not exist" in res.output
    assert run("export", "digits", "-o", out, "--overwrite", "-q").output == ""
    assert run("export", out, "-o", tmp_path / "again.onnx").exit_code == 2  # ONNX already
    assert run("export", "digits", "-o", tmp_path / "x.cnnf").exit_code == 2
    files = sorted((digits / "3").iterdir())[:6] + sorted((digits / "8").iterdir())[:6]
    a = run("predict", "digits", *files, "--json").output
    b = run("predict", out, *files, "--json").output
    import json

    for ra, rb in zip(a.splitlines(), b.splitlines()):
        ja, jb = json.loads(ra), json.loads(rb)
        assert ja["class"] == jb["class"] and abs(ja["probability"] - jb["probability"]) < 1e-5


def test_featuremaps_overwrite_replaces_the_whole_report(run, onnx_models, photo, tmp_path):
    """--overwrite replaces an earlier report: its layers, channels and activations that this run does not
    write are removed; a file cnnfilter did not write (in a folder that is no report) is never touched."""
    _, resnet = onnx_models
    out = tmp_path / "maps"
    assert run("featuremaps", photo, "-m", resnet, "-o", out, "--npz", "--separate", "-q").exit_code == 0
    report = out / "photo"
    assert (report / "activations.npz").exists() and list((report / "channels").glob("*.png"))
    res = run("featuremaps", photo, "-m", resnet, "-o", out, "--layers", "stem", "--overwrite", "-q")
    assert res.exit_code == 0, res.output
    left = sorted(p.name for p in report.glob("*.png"))
    assert left == ["input.png", "stem.png", "weights-stem.png"]
    assert not (report / "activations.npz").exists() and not list((report / "channels").glob("*.png"))
    mine = tmp_path / "mine"
    (mine / "photo").mkdir(parents=True)
    (mine / "photo" / "holiday.png").write_bytes(b"not cnnfilter's")
    assert run("featuremaps", photo, "-m", resnet, "-o", mine, "--layers", "Relu", "--overwrite", "-q").exit_code == 0
    assert (mine / "photo" / "holiday.png").read_bytes() == b"not cnnfilter's"


def test_onnx_presets_follow_the_channel_order_and_values_are_0_to_1(run, onnx_models, photo):
    _, resnet = onnx_models
    res = run("predict", resnet, photo, "--mean", "127.5")
    assert res.exit_code == 2 and "0..1 pixel units" in res.output and "0.5" in res.output
    from cnnfilter.cli.nn import _load_model, _Preset

    mdl = _load_model(str(resnet), mean=_Preset((0.485, 0.456, 0.406)), std=(0.2, 0.2, 0.2), channels="bgr")
    np.testing.assert_allclose(mdl.mean, [0.406, 0.456, 0.485])  # the preset reordered, numbers kept
    np.testing.assert_allclose(mdl.std, [0.2, 0.2, 0.2])
    x = np.zeros((1, 3, 2, 2), np.float32)
    x[:, 2] = 1.0  # blue in RGB order is the network's first channel
    np.testing.assert_allclose(mdl.normalize(x)[0, :, 0, 0], [(1 - 0.406) / 0.2, -0.456 / 0.2, -0.485 / 0.2],
                               rtol=1e-6)

def test_layers_by_operator_type_in_any_case_or_by_file_name(run, onnx_models, photo, tmp_path):
    _, resnet = onnx_models
    res = run("featuremaps", photo, "-m", resnet, "--layers", "globalaveragepool,b1.add", "-o", tmp_path / "m", "-q")
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "m" / "photo").glob("*.png")) == [
        "b1.add.png", "gap.png", "input.png", "weights-stem.png"]


def test_a_network_whose_output_is_a_map_predicts_nothing(run, photo, tmp_path, rng):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["input", "w"], ["maps"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 16, 16])],
                          [helper.make_tensor_value_info("maps", TensorProto.FLOAT, ["N", 4, 16, 16])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "maps.onnx")
    res = run("featuremaps", photo, "-m", tmp_path / "maps.onnx", "-o", tmp_path / "out", "-q")
    assert res.exit_code == 0, res.output
    import json

    assert "prediction" not in json.loads((tmp_path / "out" / "photo" / "summary.json").read_text())
    res = run("predict", tmp_path / "maps.onnx", photo)
    assert res.exit_code == 1 and "not one vector of class scores" in res.output


def test_standard_output_on_a_terminal_is_refused(tmp_path):
    """`-o -` with standard output on a terminal: one line and exit 2, not an image's bytes on the screen."""
    import os
    import pty

    img = tmp_path / "a.png"
    Image.new("RGB", (8, 8), (10, 20, 30)).save(img)
    main, sub = pty.openpty()
    try:
        res = subprocess.run([sys.executable, "-m", "cnnfilter", "convolve", str(img), "-k", "edge", "-o", "-"],
                             stdout=sub, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(sub)
        os.close(main)
    assert res.returncode == 2 and "standard output is a terminal" in res.stderr
