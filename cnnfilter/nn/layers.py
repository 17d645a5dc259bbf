"""Layers of the tiny CNN, each with its backward pass right under its forward.

Activations are ``(N, C, H, W)`` float32 (float64 works too, for gradient checks). ``forward(x, train)``
keeps what ``backward`` needs only when ``train`` is true; in training, outputs and gradients live in buffers that
the next batch reuses (fresh arrays cost page faults that were a third of a step), so copy one to keep it; ``backward(dy)`` returns ``dL/dx`` and fills
``grads()`` (same order as ``params()``). Parameters are updated in place by the optimisers.
"""

from __future__ import annotations

import contextlib

import numpy as np

from .._args import output_size


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


def _out(n: int, k: int, s: int, p: int) -> int:
    """Output length of a window of ``k`` taps, stride ``s``, ``p`` zeros on each side."""
    return output_size(n, k, s, p, p)


def _he(rng: np.random.Generator | None, shape: tuple, fan_in: int, dtype) -> np.ndarray:
    """He initialisation: normal with standard deviation ``sqrt(2 / fan_in)``."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)


class Layer:
    """Base: no parameters, shape unchanged."""

    reuse = False  # outputs in buffers reused by the next call (set by Network.forward; never for activations)

    def params(self) -> list[np.ndarray]:
        return []

    def grads(self) -> list[np.ndarray]:
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


class Conv2d(Layer):
    """``y[n, o] = bias[o] + sum_c correlate(x[n, c], weight[o, c])`` with ``padding`` zeros on every side
    (PyTorch's Conv2d). Output ``H' = (H + 2p - k) // s + 1``. Computed as im2col (compiled) and one matrix
    product per sample (BLAS); backward: two more products and col2im (compiled)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0, *,
                 rng: np.random.Generator | None = None, dtype=np.float32):
        self.cin, self.cout, self.k, self.stride, self.padding = cin, cout, k, stride, padding
        self.weight = _he(rng, (cout, cin, k, k), cin * k * k, dtype)
        self.bias = np.zeros(cout, dtype)
        self.dweight = np.zeros_like(self.weight)
        self.dbias = np.zeros_like(self.bias)
        self.input_grad = True  # the first layer's input gradient is never used: skip it
        self._cols = None
        self._xshape = None

    def params(self):
        return [self.weight, self.bias]

    def grads(self):
        return [self.dweight, self.dbias]

    def out_shape(self, shape):
        c, h, w = shape
        return (self.cout, _out(h, self.k, self.stride, self.padding), _out(w, self.k, self.stride, self.padding))

    def _offsets(self, C: int, Hp: int, Wp: int) -> np.ndarray:
        """Flat offset of tap (c, a, b) in a padded sample, in the order of ``weight.reshape(O, -1)``."""
        k = self.k
        c, a, b = np.meshgrid(np.arange(C), np.arange(k), np.arange(k), indexing="ij")
        return (c * Hp * Wp + a * Wp + b).reshape(-1).astype(np.int64)

    def forward(self, x, train=False):
        from . import _loops

        x = np.ascontiguousarray(x, self.weight.dtype)
        N, C, H, W = x.shape
        k, s, p = self.k, self.stride, self.padding
        Ho, Wo = _out(H, k, s, p), _out(W, k, s, p)
        w2 = self.weight.reshape(self.cout, -1)
        work = N * self.cout * Ho * Wo * C * k * k
        if s == 1:  # no im2col: taps are shifted views of the padded input
            if p:
                xp = self._buffer("xp", (N, C, H + 2 * p, W + 2 * p), x.dtype)
                xp[:, :, p : p + H, p : p + W] = x  # the border is zero from the buffer's first use
            else:
                xp = x
            shape = (N, self.cout, Ho, Wo)  # in training, buffers are reused batch after batch
            out = self._buffer("out", shape, x.dtype) if train or self.reuse else np.empty(shape, x.dtype)
            with _threads(work):
                _loops.conv1_forward(xp, w2, self.bias, self._offsets(C, H + 2 * p, W + 2 * p), out)
            if train:
                self._cols, self._xshape = xp, x.shape
            return out
        out = np.empty((N, self.cout, Ho * Wo), x.dtype)
        cols = np.empty((N, C * k * k, Ho * Wo) if train else (1, 1, 1), x.dtype)
        with _threads(work):
            _loops.conv_forward(x, w2, self.bias, out, cols, train, k, k, s, s, 1, 1, p, p, Ho, Wo)
        if train:
            self._cols, self._xshape = cols, x.shape
        return out.reshape(N, self.cout, Ho, Wo)

    def backward(self, dy):
        from . import _loops

        N, O, Ho, Wo = dy.shape
        dy = np.ascontiguousarray(dy, self.weight.dtype)
        w2 = self.weight.reshape(O, -1)
        k, s, p = self.k, self.stride, self.padding
        C, H, W = self._xshape[1:]
        work = N * O * Ho * Wo * w2.shape[1]
        with _threads(work) as tasks:
            dwp = np.empty((tasks, O, w2.shape[1]), dy.dtype)
            dbp = np.empty((tasks, O), dy.dtype)
            if s == 1:
                Hp, Wp = H + 2 * p, W + 2 * p
                dyp = self._buffer("dyp", (N, O, Ho, Wp), dy.dtype)  # on the padded width, junk columns 0
                dyp[:, :, :, :Wo] = dy
                dyp = dyp.reshape(N, O, Ho * Wp)
                offs = self._offsets(C, Hp, Wp)
                L = (Ho - 1) * Wp + Wo
                _loops.conv1_weight(self._cols, dyp, offs, L, dwp, dbp)
            else:
                _loops.conv_backward_weight(self._cols, dy.reshape(N, O, -1), dwp, dbp)
        np.sum(dwp, axis=0, out=self.dweight.reshape(O, -1))
        np.sum(dbp, axis=0, out=self.dbias)
        if not self.input_grad:
            return None
        with _threads(work):
            if s == 1:
                dxp = self._buffer("dxp", (N, C, Hp, Wp), dy.dtype)
                _loops.conv1_input(w2, dyp, offs, L, dxp)
                return dxp[:, :, p : p + H, p : p + W]
            dx = np.empty(self._xshape, dy.dtype)
            _loops.conv_backward_input(w2, dy.reshape(N, O, -1), dx, k, k, s, s, 1, 1, p, p, Ho, Wo)
        return dx

    def __repr__(self):
        return f"Conv2d({self.cin}->{self.cout}, {self.k}x{self.k}, stride {self.stride}, padding {self.padding})"


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
    def __init__(self, k: int, stride: int | None = None, padding: int = 0):
        self.k, self.stride, self.padding = k, stride or k, padding
        self._xshape = None

    def out_shape(self, shape):
        c, h, w = shape
        return (c, _out(h, self.k, self.stride, self.padding), _out(w, self.k, self.stride, self.padding))

    def __repr__(self):
        return f"{type(self).__name__}({self.k}x{self.k}, stride {self.stride}, padding {self.padding})"


class MaxPool2d(_Pool):
    """Max over ``k x k`` windows (padding ignored, at most ``k // 2``); the gradient goes to each window's
    maximum (the first one met, in row-major order, on ties)."""

    def forward(self, x, train=False):
        from . import _loops

        x = np.ascontiguousarray(x)
        N, C, H, W = x.shape
        _, Ho, Wo = self.out_shape((C, H, W))
        if train or self.reuse:
            out = self._buffer("out", (N, C, Ho, Wo), x.dtype)
            arg = self._buffer("arg", (N, C, Ho, Wo), np.int32)
        else:
            out = np.empty((N, C, Ho, Wo), x.dtype)
            arg = np.empty((N, C, Ho, Wo), np.int32)
        k, s, p = self.k, self.stride, self.padding
        with _threads(x.size):
            if (k, s, p) == (2, 2, 0):
                _loops.maxpool2_forward(x, out, arg)
            else:
                _loops.maxpool_forward(x, out, arg, k, k, s, s, p, p)
        if train:
            self._arg, self._xshape = arg, x.shape
        return out

    def backward(self, dy):
        from . import _loops

        dx = self._buffer("dx", self._xshape, dy.dtype)
        with _threads(dx.size):
            _loops.maxpool_backward(np.ascontiguousarray(dy), self._arg, dx)
        return dx


class AvgPool2d(_Pool):
    """Mean over ``k x k`` windows, padding counted as zeros (PyTorch's default); the gradient is spread evenly."""

    def forward(self, x, train=False):
        from . import _loops

        x = np.ascontiguousarray(x)
        N, C, H, W = x.shape
        _, Ho, Wo = self.out_shape((C, H, W))
        out = np.empty((N, C, Ho, Wo), x.dtype)
        k, s, p = self.k, self.stride, self.padding
        with _threads(x.size):
            _loops.avgpool_forward(x, out, k, k, s, s, p, p)
        if train:
            self._xshape = x.shape
        return out

    def backward(self, dy):
        from . import _loops

        dx = np.empty(self._xshape, dy.dtype)
        k, s, p = self.k, self.stride, self.padding
        with _threads(dx.size * k * k):
            _loops.avgpool_backward(np.ascontiguousarray(dy), dx, k, k, s, s, p, p)
        return dx


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
        self.weight = _he(rng, (nout, nin), nin, dtype)
        self.bias = np.zeros(nout, dtype)
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


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Mean softmax cross-entropy, fused: ``loss = mean(logsumexp(z) - z[label])`` (stable for any logits).

    Returns ``(loss, probabilities, dL/dlogits)``; the gradient is ``(softmax(z) - onehot) / N``.
    """
    n = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    rows = np.arange(n)
    loss = float(np.mean(lse - z[rows, labels]))
    probs = np.exp(z - lse[:, None])
    grad = probs.copy()
    grad[rows, labels] -= 1
    grad /= n
    return loss, probs, grad
