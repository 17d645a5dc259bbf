"""The architecture string: a compact, readable description of a tiny CNN, and the network built from it.

Grammar (tokens joined by ``-``, case-insensitive)::

    c<out>k<k>[s<stride>][p<pad>]   Conv2d: <out> filters of <k>x<k>, stride (default 1), zero padding (default 0)
    relu                            ReLU
    max<k>[s<stride>][p<pad>]       MaxPool2d: <k>x<k> windows, stride (default <k>), padding (at most <k>/2)
    avg<k>[s<stride>][p<pad>]       AvgPool2d, the same
    fc<n>                           Dense layer of <n> outputs (a Flatten is inserted before the first one)
    drop<p>                         Dropout with probability <p> (0 <= p < 1), active in training only
    flatten                         Flatten, explicitly

The last layer must be ``fc<classes>``; when the string does not end with an ``fc``, one is added.
Example: ``c8k3p1-relu-max2-c16k3p1-relu-max2-fc10``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .._args import output_size
from ..limits import MAX_LAYERS, POOL_READ_COST, check_memory, check_work, fmt_bytes, max_params
from . import layers as L
from .core import Listing

HELP = __doc__.split("\n\n", 1)[1].strip().replace("``", "'").replace("::", ":")

_N = r"(\d{1,9})"  # at most 999,999,999: a larger number is no layer, and int() of 5,000 digits is refused
_TOKENS = [
    ("conv", re.compile(rf"c{_N}k{_N}(?:s{_N})?(?:p{_N})?")),
    ("relu", re.compile(r"relu")),
    ("max", re.compile(rf"max{_N}(?:s{_N})?(?:p{_N})?")),
    ("avg", re.compile(rf"avg{_N}(?:s{_N})?(?:p{_N})?")),
    ("fc", re.compile(rf"fc{_N}")),
    ("drop", re.compile(r"drop(0(?:\.\d*)?|\.\d+)")),
    ("flatten", re.compile(r"flatten")),
]


class ArchError(ValueError):
    """An architecture string that does not parse, or does not fit the input."""


def parse(arch: str) -> list[tuple]:
    """``"c8k3p1-relu-max2-fc10"`` -> ``[("conv", 8, 3, 1, 1), ("relu",), ("max", 2, 2, 0), ("fc", 10)]``."""
    spec = []
    text = arch.strip().lower()
    if not text:
        raise ArchError("architecture is empty; see --arch help")
    tokens = text.split("-")
    if len(tokens) > MAX_LAYERS:
        raise ArchError(f"architecture has {len(tokens)} layers; at most {MAX_LAYERS} are allowed")
    for pos, tok in enumerate(tokens, 1):
        for kind, rx in _TOKENS:
            m = rx.fullmatch(tok)
            if m:
                break
        else:
            msg = (f"architecture token {pos} {tok!r} is not one of c<out>k<k>[s<s>][p<p>], relu, max<k>, avg<k>, "
                   f"fc<n>, drop<p>, flatten; see --arch help")
            raise ArchError(msg)
        g = [None if v is None else (float(v) if kind == "drop" else int(v)) for v in m.groups()]
        if kind == "conv":
            out, k, s, p = g[0], g[1], g[2] or 1, g[3] or 0
            if min(out, k, s) < 1:
                raise ArchError(f"architecture token {pos} {tok!r}: filters, kernel and stride must be at least 1")
            spec.append(("conv", out, k, s, p))
        elif kind in ("max", "avg"):
            k, s, p = g[0], g[1] or g[0], g[2] or 0
            if min(k, s) < 1:
                raise ArchError(f"architecture token {pos} {tok!r}: window and stride must be at least 1")
            if p > k // 2:
                raise ArchError(f"architecture token {pos} {tok!r}: padding {p} is more than half the window {k}")
            spec.append((kind, k, s, p))
        elif kind == "fc":
            if g[0] < 1:
                raise ArchError(f"architecture token {pos} {tok!r}: a layer needs at least 1 output")
            spec.append(("fc", g[0]))
        elif kind == "drop":
            if not 0 <= g[0] < 1:
                raise ArchError(f"architecture token {pos} {tok!r}: dropout probability must be in [0, 1)")
            spec.append(("drop", g[0]))
        else:
            spec.append((kind,))
    return spec


def to_string(spec: list[tuple]) -> str:
    """The canonical string of a parsed spec (defaults spelled out)."""
    out = []
    for t in spec:
        if t[0] == "conv":
            out.append(f"c{t[1]}k{t[2]}" + (f"s{t[3]}" if t[3] != 1 else "") + (f"p{t[4]}" if t[4] else ""))
        elif t[0] in ("max", "avg"):
            out.append(f"{t[0]}{t[1]}" + (f"s{t[2]}" if t[2] != t[1] else "") + (f"p{t[3]}" if t[3] else ""))
        elif t[0] == "fc":
            out.append(f"fc{t[1]}")
        elif t[0] == "drop":
            out.append(f"drop{t[1]:g}")
        else:
            out.append(t[0])
    return "-".join(out)


def default_arch(height: int, width: int, classes: int) -> str:
    """A LeNet-like network that fits the input: LeNet-5's 5x5 convolutions from 28x28 up, 3x3 ones with two
    2x2 poolings and dropout from 8x8 (the digits: 98.6 % held out, see README), fewer poolings below."""
    side = min(height, width)
    if side >= 28:
        return f"c6k5p2-relu-max2-c16k5-relu-max2-fc120-relu-fc84-relu-fc{classes}"
    if side >= 8:
        return f"c32k3p1-relu-max2-c64k3p1-relu-max2-drop0.3-fc{classes}"
    if side >= 4:
        return f"c16k3p1-relu-max2-c32k3p1-relu-fc{classes}"
    return f"c16k3p1-relu-c32k3p1-relu-fc{classes}"


@dataclass
class Network(Listing):
    """Layers in order, with their names (conv1, relu1, pool1, ..., fc1) and output shapes."""

    layers: list
    names: list[str]
    shapes: list[tuple]  # output shape of each layer, without the batch axis
    input_shape: tuple  # (C, H, W)
    arch: str
    image_bytes: int = 0  # memory of one image's forward pass (input, activations, scratch), for batch sizes

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """The network's output for the batch ``x``; intermediate arrays are reused buffers (the output, from the
        last dense layer, is always a fresh array)."""
        for layer in self.layers:
            layer.reuse = True
        try:
            for layer in self.layers:
                x = layer.forward(x, train)
        finally:
            for layer in self.layers:
                layer.reuse = False
        return x

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every layer's output for the batch ``x``, by layer name, in order (inference mode)."""
        acts = {}
        for name, layer in zip(self.names, self.layers):
            x = layer.forward(x, False)
            acts[name] = x
        return acts

    def backward(self, dy: np.ndarray) -> None:
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
            if dy is None:
                break

    def params(self) -> list[np.ndarray]:
        return [p for layer in self.layers for p in layer.params()]

    def grads(self) -> list[np.ndarray]:
        return [g for layer in self.layers for g in layer.grads()]

    def param_names(self) -> list[str]:
        return [f"{name}.{part}" for name, layer in zip(self.names, self.layers)
                for part in ("weight", "bias")[: len(layer.params())]]

    def __repr__(self):
        return f"Network({self.arch!r}, input {self.input_shape}, {self.count()} parameters)"


class Planned(NamedTuple):
    """One layer of a network, planned before anything is allocated."""

    name: str  # conv1, relu1, pool1, flatten, fc1, ...
    token: tuple  # the parsed token (("flatten",) for the Flatten inserted before the first dense layer)
    shape: tuple  # output shape, without the batch axis
    params: list  # parameter shapes (weight, bias)
    scratch: int  # a convolution's im2col columns for one sample (elements)
    work: int  # multiply-adds for one sample (a pooling's window reads counted at their cost)


def plan(spec: list[tuple], input_shape: tuple) -> list[Planned]:
    """Every layer of a parsed ``spec`` (with the Flatten inserted before the first dense layer): names, shapes,
    parameter shapes, scratch and work, computed without allocating anything. Raises ArchError for a layer that
    does not fit its input. :func:`build` makes the layers from this plan."""
    shape = tuple(int(v) for v in input_shape)
    counts: dict[str, int] = {}
    out: list[Planned] = []
    # (position in the string, token); a dense layer on 3-D features gets a Flatten first (position 0)
    tokens = [pt for pos, t in enumerate(spec, 1) for pt in ([(0, ("flatten",))] if t[0] == "fc" else []) + [(pos, t)]]
    for pos, t in tokens:
        kind = t[0]
        if kind == "flatten" and len(shape) != 3:
            if not pos:  # the implicit Flatten of features already flat
                continue
            raise ArchError(f"architecture token {pos} (flatten): the features are already flat")
        if kind in ("conv", "max", "avg") and len(shape) != 3:
            raise ArchError(f"architecture token {pos} ({to_string([t])}) comes after the features were flattened")
        params, scratch, work = [], 0, 0
        if kind == "conv":
            new = (t[1], output_size(shape[1], t[2], t[3], t[4], t[4]), output_size(shape[2], t[2], t[3], t[4], t[4]))
            params = [(t[1], shape[0], t[2], t[2]), (t[1],)]
            scratch = shape[0] * t[2] * t[2] * new[1] * new[2]
            work = scratch * t[1]
        elif kind in ("max", "avg"):
            new = L.MaxPool2d(t[1], t[2], t[3]).out_shape(shape)
            work = POOL_READ_COST * t[1] * t[1] * math.prod(new)
        elif kind == "fc":
            new, params = (t[1],), [(t[1], shape[0]), (t[1],)]
            work = shape[0] * t[1]
        elif kind == "flatten":
            new = (math.prod(shape),)
        else:
            new = shape
        if min(new) < 1:
            msg = (f"architecture token {pos} ({to_string([t])}) does not fit its input {'x'.join(map(str, shape))}: "
                   f"the output would be {'x'.join(map(str, new))}")
            raise ArchError(msg)
        base = {"conv": "conv", "max": "pool", "avg": "pool", "drop": "dropout"}.get(kind, kind)
        counts[base] = counts.get(base, 0) + 1
        name = base if base == "flatten" else f"{base}{counts[base]}"
        out.append(Planned(name, t, new, params, scratch, work))
        shape = new
    return out


def check_size(layers: list[Planned], input_shape: tuple, *, training: bool = False) -> int:
    """Refuse a network whose parameters exceed the parameter limit, or whose parameters and one sample's input
    and activations (im2col columns included) exceed the memory limit, or whose work on one sample exceeds the work
    limit: before anything is allocated. Returns the bytes of one sample's forward pass."""
    params = sum(math.prod(p) for layer in layers for p in layer.params)
    if params > max_params():
        msg = (f"the network has {params:,} parameters, over the limit of {max_params():,} (CNNFILTER_MAX_PARAMS)")
        raise ArchError(msg)
    acts = float(math.prod(input_shape)) + sum(float(math.prod(p.shape)) + p.scratch for p in layers)
    need = 4.0 * (params * (4 if training else 1) + acts * (2 if training else 1))
    work = float(sum(p.work for p in layers))
    try:
        check_memory(need, f"the network ({params:,} parameters, {fmt_bytes(4 * acts)} of activations per image)")
        check_work(work, f"the network ({params:,} parameters) on one image")
    except ValueError as exc:
        raise ArchError(str(exc)) from None
    return int(4 * acts)


def build(arch: str, input_shape: tuple, classes: int | None = None, *, rng: np.random.Generator | None = None,
          dtype=np.float32) -> Network:
    """The network of ``arch`` for inputs of ``input_shape = (C, H, W)``, He-initialised from ``rng``.

    With ``classes``, an ``fc<classes>`` is appended when ``arch`` does not end with an ``fc``, and a last
    ``fc`` of another size is an error.
    """
    spec = parse(arch)
    if classes is not None:
        if spec[-1][0] != "fc":
            spec.append(("fc", classes))
        elif spec[-1][1] != classes:
            raise ArchError(f"architecture ends with fc{spec[-1][1]} but the data has {classes} classes")
    elif spec[-1][0] != "fc":
        raise ArchError("architecture must end with fc<classes>")
    planned = plan(spec, input_shape)
    image_bytes = check_size(planned, input_shape)
    rng = rng if rng is not None else np.random.default_rng(0)
    shape = tuple(int(v) for v in input_shape)
    layers = []
    for p in planned:
        t = p.token
        if t[0] == "conv":
            layer = L.Conv2d(shape[0], t[1], t[2], t[3], t[4], rng=rng, dtype=dtype)
        elif t[0] in ("max", "avg"):
            layer = (L.MaxPool2d if t[0] == "max" else L.AvgPool2d)(t[1], t[2], t[3])
        elif t[0] == "relu":
            # in place only on a fresh array: never on the caller's input, even through a flatten or dropout view
            fresh = any(isinstance(x, (L.Conv2d, L.Dense, L.MaxPool2d, L.AvgPool2d)) for x in layers)
            layer = L.ReLU(inplace=fresh)
        elif t[0] == "drop":
            layer = L.Dropout(t[1], rng=rng)
        elif t[0] == "flatten":
            layer = L.Flatten()
        else:
            layer = L.Dense(shape[0], t[1], rng=rng, dtype=dtype)
        layers.append(layer)
        shape = p.shape
    # the first convolution's input gradient is never needed
    for layer in layers:
        if isinstance(layer, L.Conv2d):
            layer.input_grad = False
            break
        if layer.params():
            break
    return Network(layers, [p.name for p in planned], [p.shape for p in planned], tuple(int(v) for v in input_shape),
                   to_string(spec), image_bytes)
