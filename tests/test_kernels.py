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
