"""Layers of the tiny CNN, each with its backward pass right under its forward.

Activations are ``(N, C, H, W)`` float32 (float64 works too, for gradient checks). ``forward(x, train)``
keeps what ``backward`` needs only when ``train`` is true; in training, outputs and gradients live in buffers that
the next batch reuses (fresh arrays cost page faults that were a third of a step), so copy one to keep it; ``backward(dy)`` returns ``dL/dx`` and fills
``grads()`` (same order as ``params()``). Parameters are updated in place by the optimisers.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .._args import pair



# Below this many multiply-adds a kernel runs on one thread: waking the others costs more than it saves, and
# far more when other processes hold the cores.
PARALLEL_WORK = 1 << 18


@contextlib.contextmanager
def _threads(work: int):
    """Run the kernels inside on one thread when ``work`` is small; yields the number of threads (tasks)."""
    import numba

    n = numba.get_num_threads()
    if work >= PARALLEL_WORK or n == 1:
        yield n
        return
    numba.set_num_threads(1)
    try:
        yield 1
    finally:
        numba.set_num_threads(n)


def _fan_in(rng: np.random.Generator | None, shape: tuple, fan_in: int, dtype) -> np.ndarray:
    """PyTorch's default initialisation of Conv2d and Linear weights and biases: uniform in
    ``+-1/sqrt(fan_in)`` (its kaiming_uniform with a = sqrt(5)). It replaced He's normal with standard deviation
    ``sqrt(2 / fan_in)`` and zero biases: on the shapes set LeNet-5 held out 82-86 % with those, 86-92 % with these
    (benchmarks/recipe.py)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(dtype)


class Layer:
    """Base: no parameters, shape unchanged."""

    reuse = False  # outputs in buffers reused by the next call (set by Network.forward; never for activations)

    def params(self) -> list[np.ndarray]:
        return []

    def grads(self) -> list[np.ndarray]:
        return []

    def buffers(self) -> list[np.ndarray]:
        """State that is saved with the parameters but not trained by the optimiser (a BatchNorm's running
        statistics)."""
        return []

    def out_shape(self, shape: tuple) -> tuple:
        return shape

    def _buffer(self, key: str, shape: tuple, dtype) -> np.ndarray:
        """A zero-initialised array kept between calls: only its interior is ever written, so its border (the
        padding) stays zero, and a batch does not pay for a fresh allocation and its page faults."""
        buffers = self.__dict__.setdefault("_buffers", {})
        buf = buffers.get(key)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = buffers[key] = np.zeros(shape, dtype)
        return buf

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _pads(p) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` from an int, ``(rows, cols)`` or four numbers."""
    if isinstance(p, (int, np.integer)):
        return (int(p),) * 4
    if len(p) == 2:
        return int(p[0]), int(p[0]), int(p[1]), int(p[1])
    return tuple(int(v) for v in p)


class Conv2d(Layer):
    """``y[n, o] = bias[o] + sum_c correlate(x[n, g*Cg + c], weight[o, c])`` with zero padding (PyTorch's Conv2d,
    non-square kernels, strides and dilations as (rows, cols), asymmetric padding as (top, bottom, left, right),
    groups): forward and backward on :mod:`cnnfilter.conv`'s engine, the one ``cnnfilter.conv2d`` runs on."""

    def __init__(self, cin: int, cout: int, k, stride=1, padding=0, *, dilation=1, groups: int = 1,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        from ..conv import Geometry

        self.cin, self.cout, self.kernel = cin, cout, pair(k, "kernel")
        self.geometry = Geometry(pair(stride, "stride"), pair(dilation, "dilation"), _pads(padding), int(groups))
        kh, kw = self.kernel
        fan = cin // groups * kh * kw
        self.weight = _fan_in(rng, (cout, cin // groups, kh, kw), fan, dtype)
        self.bias = _fan_in(rng, (cout,), fan, dtype)
        self.dweight = np.zeros_like(self.weight)
        self.dbias = np.zeros_like(self.bias)
        self.input_grad = True  # the first layer's input gradient is never used: skip it
        self._saved = None

    def params(self):
        return [self.weight, self.bias]

    def grads(self):
        return [self.dweight, self.dbias]

    def out_shape(self, shape):
        c, h, w = shape
        return (self.cout, *self.geometry.output(h, w, *self.kernel))

    def forward(self, x, train=False):
        from .. import conv

        x = np.ascontiguousarray(x, self.weight.dtype)
        N, C, H, W = x.shape
        Ho, Wo = self.geometry.output(H, W, *self.kernel)
        work = N * self.cout * Ho * Wo * self.weight[0].size
        buffer = self._buffer if train or self.reuse else None  # in training, buffers are reused batch after batch
        with _threads(work):
            out, saved = conv.forward(x, self.weight, self.bias, self.geometry, buffer)
        self._saved = saved if train else None
        return out

    def backward(self, dy):
        from .. import conv

        N, O, Ho, Wo = dy.shape
        with _threads(N * O * Ho * Wo * self.weight[0].size) as tasks:
            return conv.backward(self._saved, self.weight, dy, self.dweight, self.dbias, input_grad=self.input_grad,
                                 buffer=self._buffer, tasks=tasks)

    def __repr__(self):
        (kh, kw), g = self.kernel, self.geometry
        extra = "".join([f", dilation {g.dilation}" if g.dilation != (1, 1) else "",
                         f", groups {g.groups}" if g.groups != 1 else ""])
        return (f"Conv2d({self.cin}->{self.cout}, {kh}x{kw}, stride {_one(g.stride)}, padding {_one(g.pads)}"
                f"{extra})")


def _one(v: tuple):
    """A tuple of equal values as the value (``(1, 1)`` -> 1), else the tuple."""
    return v[0] if len(set(v)) == 1 else v


class ReLU(Layer):
    """``max(x, 0)``; the gradient passes where ``x > 0``."""

    def __init__(self, inplace: bool = False):
        self.inplace = inplace  # set by build() inside a network: no layer's backward needs its own output
        self._y = None

    def forward(self, x, train=False):
        if train:  # y > 0 exactly where x > 0: the output is all the backward pass needs
            self._y = np.maximum(x, 0, out=x if self.inplace and x.flags.writeable else None)
            return self._y
        return np.maximum(x, 0)

    def backward(self, dy):
        return np.multiply(dy, self._y > 0, out=dy if dy.flags.writeable and dy.flags.owndata else None)

    def __repr__(self):
        return "ReLU()"


class _Pool(Layer):
    """Pooling over ``k`` windows (int or (rows, cols)) on :func:`cnnfilter.pool2d`'s engine (its NaN rule: NaN
    propagates), ``stride`` defaulting to the window, ``padding`` int, (rows, cols) or (top, bottom, left, right)
    while every window holds a pixel, and ``dilation``."""

    mode = "max"

    def __init__(self, k, stride=None, padding=0, *, dilation=1):
        from ..pooling import Window

        size = pair(k, "window")
        self.window = Window(size, size if stride is None else pair(stride, "stride"), _pads(padding),
                             pair(dilation, "dilation"),
                             self.mode)
        self._xshape = None
        self._arg = None

    def out_shape(self, shape):
        c, h, w = shape
        return (c, *self.window.output(h, w))

    def forward(self, x, train=False):
        from .. import pooling

        x = np.ascontiguousarray(x)
        N, C, H, W = x.shape
        Ho, Wo = self.window.output(H, W)
        keep = train and self.mode != "avg"
        if train or self.reuse:
            out = self._buffer("out", (N, C, Ho, Wo), x.dtype)
            arg = self._buffer("arg", (N, C, Ho, Wo), np.int32) if keep else None
        else:
            out, arg = np.empty((N, C, Ho, Wo), x.dtype), None
        with _threads(x.size * self.window.size[0] * self.window.size[1]):
            pooling.planes(x, self.window, out=out, arg=arg)
        if train:
            self._arg, self._xshape = arg, x.shape
        return out

    def backward(self, dy):
        from .. import pooling

        dx = self._buffer("dx", self._xshape, dy.dtype)
        with _threads(dx.size):
            return pooling.planes_backward(dy, self.window, dx, self._arg)

    def __repr__(self):
        w = self.window
        extra = f", dilation {w.dilation}" if w.dilation != (1, 1) else ""
        return (f"{type(self).__name__}({w.size[0]}x{w.size[1]}, stride {_one(w.stride)}, padding {_one(w.pads)}"
                f"{extra})")


class MaxPool2d(_Pool):
    """Max over each window (padding ignored); the gradient goes to each window's maximum (the first one met, in
    row-major order, on ties)."""

    mode = "max"


class AvgPool2d(_Pool):
    """Mean over each window, padding counted as zeros (PyTorch's default); the gradient is spread evenly."""

    mode = "avg"


class Flatten(Layer):
    """``(N, C, H, W) -> (N, C*H*W)`` in C order (as ``torch.flatten(x, 1)``)."""

    def __init__(self):
        self._xshape = None

    def out_shape(self, shape):
        return (int(np.prod(shape)),)

    def forward(self, x, train=False):
        self._xshape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._xshape)


class Dense(Layer):
    """``y = x @ weight.T + bias`` with ``weight (out, in)`` (PyTorch's Linear)."""

    def __init__(self, nin: int, nout: int, *, rng: np.random.Generator | None = None, dtype=np.float32):
        self.nin, self.nout = nin, nout
        self.weight = _fan_in(rng, (nout, nin), nin, dtype)
        self.bias = _fan_in(rng, (nout,), nin, dtype)
        self.dweight = np.zeros_like(self.weight)
        self.dbias = np.zeros_like(self.bias)
        self._x = None

    def params(self):
        return [self.weight, self.bias]

    def grads(self):
        return [self.dweight, self.dbias]

    def out_shape(self, shape):
        return (self.nout,)

    def forward(self, x, train=False):
        if train:
            self._x = x
        return x @ self.weight.T + self.bias

    def backward(self, dy):
        np.matmul(dy.T, self._x, out=self.dweight)
        self.dbias[:] = dy.sum(axis=0)
        return dy @ self.weight

    def __repr__(self):
        return f"Dense({self.nin}->{self.nout})"


class BatchNorm(Layer):
    """Batch normalisation of each channel (axis 1 of ``(N, C, H, W)`` or ``(N, C)``), PyTorch's BatchNorm2d and
    BatchNorm1d: in training ``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the batch's mean and biased
    variance, and running averages updated as ``running = (1 - m) * running + m * batch`` (the unbiased variance,
    ``m`` = ``momentum``, 0.1); at inference the running averages stand for the batch's. ``weight`` starts at 1
    and ``bias`` at 0."""

    def __init__(self, channels: int, *, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float32):
        self.channels, self.eps, self.momentum = channels, float(eps), float(momentum)
        self.weight = np.ones(channels, dtype)
        self.bias = np.zeros(channels, dtype)
        self.running_mean = np.zeros(channels, dtype)
        self.running_var = np.ones(channels, dtype)
        self.dweight = np.zeros_like(self.weight)
        self.dbias = np.zeros_like(self.bias)
        self._xhat = self._inv = None

    def params(self):
        return [self.weight, self.bias]

    def grads(self):
        return [self.dweight, self.dbias]

    def buffers(self):
        return [self.running_mean, self.running_var]

    def _axes(self, x):
        return (0, 2, 3) if x.ndim == 4 else (0,)

    def _per_channel(self, v, x):
        return v.reshape((1, -1, 1, 1) if x.ndim == 4 else (1, -1))

    def forward(self, x, train=False):
        if not train:
            scale = self.weight / np.sqrt(self.running_var + np.asarray(self.eps, x.dtype))
            shift = self.bias - self.running_mean * scale
            return x * self._per_channel(scale.astype(x.dtype), x) + self._per_channel(shift.astype(x.dtype), x)
        axes = self._axes(x)
        n = x.size // x.shape[1]
        if n < 2:  # the batch's variance is 0 and the output its bias: nothing to learn (PyTorch refuses it too)
            msg = (f"a BatchNorm in training needs more than one value per channel; it got a batch of {x.shape[0]} "
                   f"of shape {x.shape[1:]}: use a larger --batch-size")
            raise ValueError(msg)
        mean = x.mean(axis=axes, dtype=np.float64)
        centred = x - self._per_channel(mean.astype(x.dtype), x)
        var = np.square(centred).mean(axis=axes, dtype=np.float64)
        m = self.momentum
        self.running_mean[...] = (1 - m) * self.running_mean + m * mean
        self.running_var[...] = (1 - m) * self.running_var + m * var * (n / max(n - 1, 1))
        inv = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        self._inv = inv
        self._xhat = centred * self._per_channel(inv, x)
        return self._xhat * self._per_channel(self.weight.astype(x.dtype), x) + self._per_channel(
            self.bias.astype(x.dtype), x)

    def backward(self, dy):
        axes = self._axes(dy)
        xhat = self._xhat
        n = dy.size // dy.shape[1]
        self.dbias[...] = dy.sum(axis=axes, dtype=np.float64)
        self.dweight[...] = (dy * xhat).sum(axis=axes, dtype=np.float64)
        g = self._per_channel((self.weight * self._inv).astype(dy.dtype), dy)
        # dx = weight * inv / n * (n dy - sum(dy) - xhat * sum(dy * xhat))
        mean_dy = self._per_channel((self.dbias / n).astype(dy.dtype), dy)
        mean_dyx = self._per_channel((self.dweight / n).astype(dy.dtype), dy)
        return g * (dy - mean_dy - xhat * mean_dyx)

    def __repr__(self):
        return f"BatchNorm({self.channels})"


class Add(Layer):
    """``a + b`` (a residual connection); the gradient goes to both inputs."""

    def forward(self, a, b, train=False):
        return a + b

    def backward(self, dy):
        return dy, dy.copy()  # two arrays: each branch's backward may work in place on its own

    def __repr__(self):
        return "Add()"


class Dropout(Layer):
    """In training, zero each value with probability ``p`` and scale the rest by ``1 / (1 - p)`` (inverted
    dropout); the identity at inference."""

    def __init__(self, p: float, *, rng: np.random.Generator | None = None):
        self.p = p
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self._mask = None

    def forward(self, x, train=False):
        if not train or self.p == 0:
            self._mask = None
            return x
        self._mask = (self.rng.random(x.shape, dtype=np.float32) >= self.p).astype(x.dtype) / (1 - self.p)
        return x * self._mask

    def backward(self, dy):
        return dy if self._mask is None else dy * self._mask

    def __repr__(self):
        return f"Dropout(p={self.p:g})"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so that no exponent overflows."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, labels: np.ndarray, smoothing: float = 0.0) -> tuple[float, np.ndarray,
                                                                                            np.ndarray]:
    """Mean softmax cross-entropy, fused: ``loss = mean(logsumexp(z) - z[label])`` (stable for any logits); with
    ``smoothing`` s the target is ``1 - s`` on the label and ``s / K`` on every class (PyTorch's
    ``label_smoothing``).

    Returns ``(loss, probabilities, dL/dlogits)``; the gradient is ``(softmax(z) - target) / N``.
    """
    n, k = logits.shape
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    rows = np.arange(n)
    nll = lse - z[rows, labels]
    if smoothing:
        nll = (1 - smoothing) * nll + smoothing * (lse - z.mean(axis=1))
    loss = float(np.mean(nll))
    probs = np.exp(z - lse[:, None])
    grad = probs.copy()
    grad[rows, labels] -= 1 - smoothing
    if smoothing:
        grad -= smoothing / k
    grad /= n
    return loss, probs, grad
