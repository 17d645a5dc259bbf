"""The named-kernel registry, inline parsing and validate_kernel."""

import numpy as np
import pytest

import cnnfilter
from cnnfilter.kernels import gaussian_kernel, parse_matrix, resolve_kernel, validate_kernel


def test_registry_lists_the_first_kernels():
    """At least the kernels the first CLI promises, each with a description."""
    infos = {k.name: k for k in cnnfilter.list_kernels()}
    for name in ("identity", "box", "blur", "gaussian", "sharpen", "edge", "laplacian", "sobel-x", "sobel-y"):
        assert name in infos and infos[name].description
    assert infos["gaussian"].sized and not infos["edge"].sized


@pytest.mark.parametrize(("name", "total"), [("identity", 1), ("sharpen", 1), ("edge", 0), ("laplacian", 0),
                                             ("sobel-x", 0), ("sobel-y", 0), ("box", 1), ("gaussian", 1)])
def test_kernel_sums(name, total):
    """Smoothing kernels sum to 1, derivative kernels to 0."""
    assert cnnfilter.get_kernel(name).sum() == pytest.approx(total, abs=1e-12)


def test_kernel_values_follow_opencv():
    """edge is 8-neighbour, laplacian is OpenCV's ksize=1 aperture, sobel matches cv2.getDerivKernels."""
    np.testing.assert_array_equal(cnnfilter.get_kernel("edge"), [[-1, -1, -1], [-1, 8, -1], [-1, -1, -1]])
    np.testing.assert_array_equal(cnnfilter.get_kernel("laplacian"), [[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    cv2 = pytest.importorskip("cv2")
    kx, ky = cv2.getDerivKernels(1, 0, 3)
    np.testing.assert_array_equal(cnnfilter.get_kernel("sobel-x"), np.outer(ky, kx))
    np.testing.assert_array_equal(cnnfilter.get_kernel("sobel-y"), cnnfilter.get_kernel("sobel-x").T)


def test_gaussian_matches_opencv():
    """gaussian(size, sigma) is the outer product of cv2.getGaussianKernel, with OpenCV's default sigma."""
    cv2 = pytest.importorskip("cv2")
    for size, sigma in ((3, None), (5, None), (7, None), (7, 1.5), (9, 2.0), (31, 5.0)):  # odd sizes, as OpenCV
        g = cv2.getGaussianKernel(size, -1 if sigma is None else sigma, cv2.CV_64F)
        np.testing.assert_allclose(gaussian_kernel(size, sigma), g @ g.T, atol=1e-12)
    assert gaussian_kernel(sigma=5).shape == (31, 31)


def test_inline_matrix_and_names():
    """Inline matrices parse rows on ';' and values on ',' or spaces; names are case-insensitive."""
    label, k = resolve_kernel("0,-1,0;-1,5,-1;0,-1,0")
    assert label == "custom"
    np.testing.assert_array_equal(k, cnnfilter.get_kernel("sharpen"))
    np.testing.assert_array_equal(parse_matrix("1 2 3"), [[1, 2, 3]])
    np.testing.assert_array_equal(parse_matrix(".5;-.5"), [[0.5], [-0.5]])
    assert resolve_kernel("Sobel-X")[0] == "sobel-x"
    assert resolve_kernel("box", size=5)[1].shape == (5, 5)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: cnnfilter.get_kernel("sharpn"), "kernel 'sharpn' is not one of .*did you mean 'sharpen'\\?"),
    (lambda: cnnfilter.get_kernel("zzz"), "kernel 'zzz' is not one of blur, box, "),
    (lambda: cnnfilter.get_kernel("edge", size=5), "fixed size"),
    (lambda: cnnfilter.get_kernel("box", sigma=2), "kernel .box. takes size; not sigma"),
    (lambda: cnnfilter.get_kernel("gaussian", sigma=-1), "sigma -1 must be a positive"),
    (lambda: cnnfilter.get_kernel("box", size=0), "size 0 must be a positive integer"),
    (lambda: parse_matrix("1,2;3"), "rows of different lengths"),
    (lambda: parse_matrix("1,a;3,4"), "is not a matrix of numbers"),
    (lambda: parse_matrix(";"), "must be 2-D|must not be empty"),
    (lambda: validate_kernel(np.ones((256, 3))), "at most 255x255"),
    (lambda: validate_kernel([[1, float("inf")]]), "NaN or infinite"),
    (lambda: validate_kernel(np.ones((2, 2, 2))), "must be 2-D"),
])
def test_kernel_errors(call, message):
    """Unknown names suggest the closest; malformed matrices and sizes say what is wrong."""
    with pytest.raises(ValueError, match=message):
        call()


def test_validate_kernel_refuses_text():
    """A kernel of strings is a TypeError naming the parameter."""
    with pytest.raises(TypeError, match="kernel is not a numeric matrix"):
        validate_kernel([["a", "b"]])


def test_gaussian_argument_errors_name_what_was_given():
    """A huge sigma names sigma (not a size never given); text is a TypeError; a tiny sigma is a delta."""
    with pytest.raises(ValueError, match="sigma 100 needs a 601x601 kernel; the largest is 255x255"):
        gaussian_kernel(sigma=100)
    with pytest.raises(TypeError, match="sigma '2' is not a number"):
        gaussian_kernel(sigma="2")
    with pytest.raises(TypeError, match="size 'x' is not a number"):
        gaussian_kernel(size="x")
    np.testing.assert_array_equal(gaussian_kernel(size=3, sigma=1e-200), [[0, 0, 0], [0, 1, 0], [0, 0, 0]])


# ----------------------------------------------------------------------------------- the full named set

# ImageMagick 6.9's own printout (convert xc: -define morphology:showkernel=1 -morphology Convolve 'LoG:2,1' null:)
IM_LOG_2_1 = [[-0.0314675, -0.0705137, -0.077505, -0.0705137, -0.0314675],
              [-0.0705137, 0, 0.137034, 0, -0.0705137],
              [-0.077505, 0.137034, 0.451863, 0.137034, -0.077505],
              [-0.0705137, 0, 0.137034, 0, -0.0705137],
              [-0.0314675, -0.0705137, -0.077505, -0.0705137, -0.0314675]]
IM_DOG_2_1_16 = [[-0.0670162, -0.0685575, -0.0458688, -0.0685575, -0.0670162],
                 [-0.0685575, 0.0478491, 0.131768, 0.0478491, -0.0685575],
                 [-0.0458688, 0.131768, 0.281532, 0.131768, -0.0458688],
                 [-0.0685575, 0.0478491, 0.131768, 0.0478491, -0.0685575],
                 [-0.0670162, -0.0685575, -0.0458688, -0.0685575, -0.0670162]]


def test_log_and_dog_match_imagemagick():
    """log and dog are ImageMagick's LoG:2,1 and DoG:2,1,1.6 (zero-summing, positive centre)."""
    np.testing.assert_allclose(cnnfilter.get_kernel("log", size=5, sigma=1), IM_LOG_2_1, atol=2e-6)
    np.testing.assert_allclose(cnnfilter.get_kernel("dog", size=5, sigma=1, sigma2=1.6), IM_DOG_2_1_16, atol=2e-6)


def test_derivatives_match_opencv():
    """scharr-x/y are cv2.getDerivKernels(.., ksize=FILTER_SCHARR); prewitt and roberts their usual matrices."""
    cv2 = pytest.importorskip("cv2")
    kx, ky = cv2.getDerivKernels(1, 0, -1)
    np.testing.assert_array_equal(cnnfilter.get_kernel("scharr-x"), np.outer(ky, kx))
    np.testing.assert_array_equal(cnnfilter.get_kernel("scharr-y"), np.outer(ky, kx).T)
    np.testing.assert_array_equal(cnnfilter.get_kernel("prewitt-x"), [[-1, 0, 1]] * 3)
    np.testing.assert_array_equal(cnnfilter.get_kernel("roberts-x"), [[1, 0], [0, -1]])


def test_compass_families_are_rotations():
    """kirsch-* and compass-* are the 8 45-degree rotations of their north kernel; each sums to 0; east is
    ImageMagick's default Kirsch / Compass (given for its Convolve, so flipped here)."""
    ring = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]
    for family in ("kirsch", "compass"):
        ks = [cnnfilter.get_kernel(f"{family}-{d}") for d in ("n", "ne", "e", "se", "s", "sw", "w", "nw")]
        for step, k in enumerate(ks):
            assert k.sum() == 0
            for i, (r, c) in enumerate(ring):
                rr, cc = ring[(i - step) % 8]
                assert k[r, c] == ks[0][rr, cc]
    np.testing.assert_array_equal(cnnfilter.get_kernel("kirsch-e"), np.array([[5, -3, -3], [5, 0, -3], [5, -3, -3]])[::-1, ::-1])
    np.testing.assert_array_equal(cnnfilter.get_kernel("compass-e"), np.array([[1, 1, -1], [1, -2, -1], [1, 1, -1]])[::-1, ::-1])


def test_seed_kernels():
    """The seeds' three X detectors and the three 5x5 kernels of seed 004, as printed there."""
    np.testing.assert_array_equal(cnnfilter.get_kernel("x-diag-down"), [[1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    np.testing.assert_array_equal(cnnfilter.get_kernel("x-cross"), [[1, -1, 1], [-1, 1, -1], [1, -1, 1]])
    np.testing.assert_array_equal(cnnfilter.get_kernel("x-diag-up"), [[-1, -1, 1], [-1, 1, -1], [1, -1, -1]])
    assert cnnfilter.get_kernel("plateau5").sum() == 9
    assert cnnfilter.get_kernel("pyramid5")[2, 2] == 9
    assert cnnfilter.get_kernel("mexican-hat5")[2, 2] == 16 and cnnfilter.get_kernel("mexican-hat5").sum() == 0


def test_unsharp_motion_and_sized_sums():
    """unsharp sums to 1 with the centre boosted; motion is a normalised line; its angle rotates it."""
    u = cnnfilter.get_kernel("unsharp", size=5, sigma=1, amount=2)
    assert u.sum() == pytest.approx(1) and u[2, 2] > 2
    m = cnnfilter.get_kernel("motion", size=7)
    assert m.sum() == pytest.approx(1)
    np.testing.assert_allclose(m[3], 1 / 7)  # horizontal: the middle row only
    np.testing.assert_allclose(cnnfilter.get_kernel("motion", size=7, angle=90), m.T, atol=1e-12)


def test_imagemagick_strings():
    """'WxH: values' as ImageMagick writes them; an origin +X+Y moves the anchor; bad counts are refused."""
    from cnnfilter.kernels import parse_imagemagick

    np.testing.assert_array_equal(parse_imagemagick("3x3: 0,-1,0 -1,5,-1 0,-1,0"), cnnfilter.get_kernel("sharpen"))
    np.testing.assert_array_equal(parse_imagemagick("3: 1 2 3 4 5 6 7 8 9"), np.arange(1, 10).reshape(3, 3))
    np.testing.assert_array_equal(parse_imagemagick("3x1+0+0: 1 2 3"), [[0, 0, 1, 2, 3]])
    img = np.arange(10.0)[None]
    out = cnnfilter.correlate2d(img, parse_imagemagick("2x1+0+0: 1 1"))  # anchor on the first tap
    np.testing.assert_array_equal(out[0, :-1], img[0, :-1] + img[0, 1:])
    for bad, message in (("3x3: 1 2 3", "declares 3x3 = 9 values but has 3"), ("2x2+5+0: 1 2 3 4", "origin"),
                         ("3x1: 1 a 3", "not numbers")):
        with pytest.raises(ValueError, match=message):
            parse_imagemagick(bad)


def test_kernel_files(tmp_path):
    """.txt/.csv matrices, .npy without pickles and .json rows load; bad files say what is wrong."""
    from cnnfilter.kernels import load_kernel_file

    sharpen = cnnfilter.get_kernel("sharpen")
    (tmp_path / "k.txt").write_text("# my kernel\n0 -1 0\n-1 5 -1\n0 -1 0\n")
    (tmp_path / "k.csv").write_text("0,-1,0\n-1,5,-1\n0,-1,0\n")
    (tmp_path / "k.json").write_text("[[0, -1, 0], [-1, 5, -1], [0, -1, 0]]")
    np.save(tmp_path / "k.npy", sharpen)
    for name in ("k.txt", "k.csv", "k.json", "k.npy"):
        np.testing.assert_array_equal(load_kernel_file(tmp_path / name), sharpen)
        assert resolve_kernel(str(tmp_path / name))[0] == "k"
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "bad.json").write_text("[[1, 2], [3]")
    for name, message in (("obj.npy", "not a plain .npy array"), ("bad.json", "cannot be read"),
                          ("missing.csv", "does not exist")):
        with pytest.raises(ValueError, match=message):
            load_kernel_file(tmp_path / name)
    with pytest.raises(ValueError, match="use one of .txt, .csv, .npy, .json"):
        load_kernel_file(tmp_path / "k.xml")


def test_adjust_kernel():
    """--normalize divides by the sum (refused for zero-sum kernels and magnitudes); --scale multiplies."""
    from cnnfilter.kernels import Magnitude, adjust_kernel

    np.testing.assert_array_equal(adjust_kernel(np.ones((2, 2)), normalize=True), np.full((2, 2), 0.25))
    np.testing.assert_array_equal(adjust_kernel(np.ones((2, 2)), scale=3), np.full((2, 2), 3.0))
    with pytest.raises(ValueError, match="sums to 0"):
        adjust_kernel(cnnfilter.get_kernel("edge"), normalize=True)
    with pytest.raises(ValueError, match="cannot be normalised"):
        adjust_kernel(resolve_kernel("sobel")[1], normalize=True)
    assert isinstance(resolve_kernel("sobel")[1], Magnitude)


def test_every_named_kernel_is_valid_and_described():
    """Every registered kernel builds at its defaults, is finite, and prints as a matrix."""
    from cnnfilter.kernels import describe_kernel, kernel_table

    table = kernel_table()
    for info in cnnfilter.list_kernels():
        assert info.name in table and info.description
        text = describe_kernel(info.name)
        assert text.startswith(f"# {info.name}")


@pytest.mark.parametrize(("spec", "name", "options"), [
    ("gaussian:sigma=1.5", "gaussian", {"sigma": 1.5}),
    ("motion:size=9,angle=30", "motion", {"size": 9, "angle": 30.0}),
    ("Gaussian:0x2", "gaussian", {"sigma": 2.0}),
    ("Blur:0x3", "gaussian", {"sigma": 3.0}),
    ("Blur:2x1", "gaussian", {"size": 5, "sigma": 1.0}),
    ("LoG:0x1.4", "log", {"sigma": 1.4}),
    ("DoG:0,1,2", "dog", {"sigma": 1.0, "sigma2": 2.0}),
    ("DoG:3,1,2", "dog", {"size": 7, "sigma": 1.0, "sigma2": 2.0}),
    ("edge:", "edge", {}),
])
def test_kernel_steps_with_their_own_options(spec, name, options):
    """NAME:KEY=VALUE and ImageMagick's RADIUSxSIGMA forms name a kernel and its options."""
    from cnnfilter.kernels import split_step

    assert split_step(spec) == (name, options)


@pytest.mark.parametrize("spec", ["3x3: 0,1,0 1,1,1 0,1,0", "k.txt", "1,2;3,4", "photo:x", "edge"])
def test_other_specs_are_not_steps(spec):
    from cnnfilter.kernels import split_step

    assert split_step(spec) is None


@pytest.mark.parametrize(("spec", "message"), [
    ("gaussian:sigma=x", "sigma 'x' is not a number"), ("gaussian:width=3", "'width' is not one of"),
    ("motion:size=2.5", "is not a whole number"), ("edge:0x2", "ImageMagick's geometry"),
    ("Gaussian:-1x2", "the radius must be a whole number"), ("sharpen:sigma=2", "takes no sigma"),
])
def test_kernel_step_errors_name_the_step(spec, message):
    from cnnfilter.kernels import resolve_steps

    with pytest.raises(ValueError, match=message):
        resolve_steps([spec])


def test_chain_steps_and_global_defaults():
    """Global options go to the sized kernels of a chain that take them; each step's own options win; an option no
    kernel takes is an error."""
    from cnnfilter.kernels import get_kernel, resolve_steps

    (_, ga), (_, edge) = resolve_steps(["gaussian", "edge"], sigma=1.5)
    np.testing.assert_array_equal(ga, get_kernel("gaussian", sigma=1.5))
    np.testing.assert_array_equal(edge, get_kernel("edge"))
    [(_, own)] = resolve_steps(["gaussian:sigma=2"])
    np.testing.assert_array_equal(own, get_kernel("gaussian", sigma=2))
    with pytest.raises(ValueError, match="--sigma is taken by no kernel"):  # the step's own sigma: --sigma is moot
        resolve_steps(["gaussian:sigma=2"], sigma=1.5)
    np.testing.assert_array_equal(resolve_steps(["Gaussian:0x2"])[0][1], get_kernel("gaussian", sigma=2))
    with pytest.raises(ValueError, match="--sigma is taken by no kernel of the chain"):
        resolve_steps(["edge", "sharpen"], sigma=2)
