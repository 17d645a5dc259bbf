"""The architecture string, the graph it describes, and the trainable network that runs the graph.

Grammar (tokens joined by ``-``, case-insensitive)::

    c<out>k<k>[s<s>][p<p>][d<d>][g<g>]  Conv2d: <out> filters of <k>x<k>, stride (default 1), zero padding
                                    (default 0), dilation (default 1), groups (default 1; g<out> is depthwise)
    relu                            ReLU
    max<k>[s<s>][p<p>][d<d>]        MaxPool2d: <k>x<k> windows, stride (default <k>), padding (each window must
                                    hold a pixel), dilation
    avg<k>[s<s>][p<p>]              AvgPool2d (padding counted as zeros), the same
    fc<n>                           Dense layer of <n> outputs (a Flatten is inserted before the first one)
    bn                              BatchNorm of each channel (or feature, after a dense layer): the batch's
                                    statistics in training, running averages at inference; folded into the
                                    convolution before it when exported to ONNX
    drop<p>                         Dropout with probability <p> (0 <= p < 1), active in training only
    flatten                         Flatten, explicitly

Kernels, strides and dilations take <rows>x<cols> as well (c16k3x5s2x1); padding takes <rows>x<cols> or
<top>,<bottom>,<left>,<right> (p1,2,0,1). The last layer must be ``fc<classes>``; when the string does not end
with an ``fc``, one is added. Example: ``c8k3p1-relu-max2-c16k3p1-relu-max2-fc10``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..limits import MAX_LAYERS, POOL_READ_COST, check_memory, check_work, fmt_bytes, max_params, printable
from . import layers as L
from .core import GraphError, Listing, Node, toposort

HELP = __doc__.split("\n\n", 1)[1].strip().replace("``", "'").replace("::", ":")

_N = r"(\d{1,9})"  # at most 999,999,999: a larger number is no layer, and int() of 5,000 digits is refused
_XY = rf"{_N}(?:x{_N})?"
_PAD = rf"(?:p{_N}(?:x{_N}|,{_N},{_N},{_N})?)?"
_TOKENS = [
    ("conv", re.compile(rf"c{_N}k{_XY}(?:s{_XY})?{_PAD}(?:d{_XY})?(?:g{_N})?")),
    ("relu", re.compile(r"relu")),
    ("max", re.compile(rf"max{_XY}(?:s{_XY})?{_PAD}(?:d{_XY})?")),
    ("avg", re.compile(rf"avg{_XY}(?:s{_XY})?{_PAD}")),
    ("fc", re.compile(rf"fc{_N}")),
    ("drop", re.compile(r"drop(0(?:\.\d*)?|\.\d+)")),
    ("flatten", re.compile(r"flatten")),
    ("bn", re.compile(r"bn")),
]

class ArchError(ValueError):
    """An architecture string that does not parse, or does not fit the input."""


def _xy(a, b, default) -> tuple[int, int]:
    if a is None:
        return default
    return (int(a), int(a)) if b is None else (int(a), int(b))


def _padding(g) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) from the five padding groups ``p<a>[x<b> | ,<c>,<d>,<e>]``."""
    a, b, c, d, e = g
    if a is None:
        return (0, 0, 0, 0)
    if c is not None:
        return int(a), int(c), int(d), int(e)
    rows, cols = int(a), int(a if b is None else b)
    return rows, rows, cols, cols


def parse(arch: str) -> list[tuple]:
    """``"c8k3p1-relu-max2-fc10"`` -> ``[("conv", 8, (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1), ("relu",),
    ("max", (2, 2), (2, 2), (0, 0, 0, 0), (1, 1)), ("fc", 10)]``: a convolution's filters, kernel, stride,
    padding (top, bottom, left, right), dilation and groups; a pooling's window, stride, padding and dilation."""
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
            msg = (f"architecture token {pos} {printable(tok)[:40]!r} is not one of "
                   "c<out>k<k>[s<s>][p<p>][d<d>][g<g>], relu, max<k>, avg<k>, fc<n>, drop<p>, flatten, bn; see --arch "
                   "help")
            raise ArchError(msg)
        g = m.groups()
        if kind == "conv":
            out, groups = int(g[0]), int(g[12] or 1)
            k = _xy(g[1], g[2], None)
            stride, pads, dil = _xy(g[3], g[4], (1, 1)), _padding(g[5:10]), _xy(g[10], g[11], (1, 1))
            if min(out, *k, *stride, *dil, groups) < 1:
                raise ArchError(f"architecture token {pos} {tok!r}: filters, kernel, stride, dilation and groups "
                                "must be at least 1")
            spec.append(("conv", out, k, stride, pads, dil, groups))
        elif kind in ("max", "avg"):
            k = _xy(g[0], g[1], None)
            stride, pads = _xy(g[2], g[3], k), _padding(g[4:9])
            dil = _xy(g[9], g[10], (1, 1)) if kind == "max" else (1, 1)
            if min(*k, *stride, *dil) < 1:
                raise ArchError(f"architecture token {pos} {tok!r}: window, stride and dilation must be at least 1")
            spec.append((kind, k, stride, pads, dil))
        elif kind == "fc":
            if int(g[0]) < 1:
                raise ArchError(f"architecture token {pos} {tok!r}: a layer needs at least 1 output")
            spec.append(("fc", int(g[0])))
        elif kind == "drop":
            if not 0 <= float(g[0]) < 1:
                raise ArchError(f"architecture token {pos} {tok!r}: dropout probability must be in [0, 1)")
            spec.append(("drop", float(g[0])))
        else:
            spec.append((kind,))
    return spec


def _xy_text(v: tuple) -> str:
    return f"{v[0]}" if v[0] == v[1] else f"{v[0]}x{v[1]}"


def _pad_text(p: tuple) -> str:
    t, b, l, r = p
    if not any(p):
        return ""
    if t == b and l == r:
        return "p" + _xy_text((t, l))
    return f"p{t},{b},{l},{r}"


def to_string(spec: list[tuple]) -> str:
    """The canonical string of a parsed spec (defaults left out)."""
    out = []
    for t in spec:
        if t[0] == "conv":
            _, n, k, s, p, d, g = t
            out.append(f"c{n}k{_xy_text(k)}" + (f"s{_xy_text(s)}" if s != (1, 1) else "") + _pad_text(p)
                       + (f"d{_xy_text(d)}" if d != (1, 1) else "") + (f"g{g}" if g != 1 else ""))
        elif t[0] in ("max", "avg"):
            _, k, s, p, d = t
            out.append(f"{t[0]}{_xy_text(k)}" + (f"s{_xy_text(s)}" if s != k else "") + _pad_text(p)
                       + (f"d{_xy_text(d)}" if d != (1, 1) else ""))
        elif t[0] == "fc":
            out.append(f"fc{t[1]}")
        elif t[0] == "drop":
            out.append(f"drop{t[1]:g}")
        else:
            out.append(t[0])
    return "-".join(out)


def chain(spec: list[tuple], input_name: str = "input") -> list[Node]:
    """The graph of a parsed ``spec``: one node per token in a chain, named conv1, relu1, pool1, ..., fc1 (each
    node's output tensor bears its name), with a Flatten inserted before the first dense layer of 3-D features.
    Attributes are ONNX's (``pads`` as top, left, bottom, right) plus ``out``, a layer's number of outputs."""
    counts: dict[str, int] = {}
    nodes: list[Node] = []
    flat = False
    x = input_name
    for t in spec:
        kind = t[0]
        if kind == "fc" and not flat:
            nodes.append(Node("flatten", "Flatten", (x,), ("flatten",), {"axis": 1}))
            x, flat = "flatten", True
        base = {"conv": "conv", "max": "pool", "avg": "pool", "drop": "dropout"}.get(kind, kind)
        counts[base] = counts.get(base, 0) + 1
        name = base if base == "flatten" else f"{base}{counts[base]}"
        if kind == "conv":
            _, n, k, s, (top, bottom, left, right), d, g = t
            op, attrs = "Conv", {"out": n, "kernel_shape": list(k), "strides": list(s),
                                 "pads": [top, left, bottom, right], "dilations": list(d), "group": g}
        elif kind in ("max", "avg"):
            _, k, s, (top, bottom, left, right), d = t
            op = "MaxPool" if kind == "max" else "AveragePool"
            attrs = {"kernel_shape": list(k), "strides": list(s), "pads": [top, left, bottom, right],
                     "dilations": list(d)}
        elif kind == "fc":
            op, attrs = "Gemm", {"out": t[1]}
        elif kind == "drop":
            op, attrs = "Dropout", {"ratio": t[1]}
        elif kind == "flatten":
            op, attrs = "Flatten", {"axis": 1}
            flat = True
        elif kind == "bn":
            op, attrs = "BatchNormalization", {"epsilon": 1e-5, "momentum": 0.9}
        else:
            op, attrs = "Relu", {}
        nodes.append(Node(name, op, (x,), (name,), attrs))
        x = name
    return nodes


def default_arch(height: int, width: int, classes: int) -> str:
    """A LeNet-like network that fits the input: LeNet-5's 5x5 convolutions from 28x28 up, 3x3 ones with two
    2x2 poolings and dropout from 8x8 (the digits: 98.6-99 % held out, see README), fewer poolings below."""
    side = min(height, width)
    if side >= 28:
        return f"c6k5p2-relu-max2-c16k5-relu-max2-fc120-relu-fc84-relu-fc{classes}"
    if side >= 8:
        return f"c32k3p1-relu-max2-c64k3p1-relu-max2-drop0.3-fc{classes}"
    if side >= 4:
        return f"c16k3p1-relu-max2-c32k3p1-relu-fc{classes}"
    return f"c16k3p1-relu-c32k3p1-relu-fc{classes}"


# The operators a trainable network is made of, and the attributes each one takes (ints unless said).
OPS = {
    "Conv": {"out", "kernel_shape", "strides", "pads", "dilations", "group"},
    "MaxPool": {"kernel_shape", "strides", "pads", "dilations"},
    "AveragePool": {"kernel_shape", "strides", "pads", "dilations"},
    "Relu": set(),
    "Flatten": {"axis"},
    "Gemm": {"out"},
    "Dropout": {"ratio"},
    "Add": set(),
    "BatchNormalization": {"epsilon", "momentum"},  # ONNX's: running = running * momentum + batch * (1 - momentum)
}
_FRESH = {"Conv", "MaxPool", "AveragePool", "Gemm", "Add", "Relu", "BatchNormalization"}  # ops whose output is an
# array of their own
PARTS = {"BatchNormalization": ("weight", "bias", "running_mean", "running_var")}  # saved arrays, by operator
# (others: weight and bias)


def parts(op: str) -> tuple[str, ...]:
    """The names of the arrays a node of ``op`` saves: its parameters, then its buffers."""
    return PARTS.get(op, ("weight", "bias"))


@dataclass
class Network(Listing):
    """A trainable network: a graph of named nodes (operator, input and output tensor names, attributes), in
    topological order from the tensor ``input``, each run by its layer (``layers[i]`` runs ``nodes[i]``; its
    parameters are ``<node>.weight`` and ``<node>.bias``). The architecture grammar builds chains (:func:`build`);
    a ``.cnnf`` file stores the nodes. An output read by two nodes (a residual connection) is never overwritten:
    which ReLUs run in place, and which inputs need a gradient, is decided from the graph."""

    nodes: list
    layers: list
    shapes: list[tuple]  # output shape of each node, without the batch axis
    input_shape: tuple  # (C, H, W)
    arch: str = ""  # the architecture string the network was built from ("" for a graph from a file)
    image_bytes: int = 0  # memory of one image's forward pass (input, activations, scratch), for batch sizes
    input: str = "input"
    _readers: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        readers: dict[str, int] = {}
        for node in self.nodes:
            for t in node.inputs:
                readers[t] = readers.get(t, 0) + 1
        self._readers = readers
        made = {n.outputs[0]: n for n in self.nodes}

        def owned(t):  # an array the network made that nothing but t's one reader sees (not the caller's input,
            node = made.get(t)  # not an array another node reads, also through Flatten and Dropout views)
            if node is None or readers.get(t, 0) != 1:
                return False
            if node.op in _FRESH:
                return True
            return owned(node.inputs[0])

        needs: dict[str, bool] = {self.input: False}  # tensors that depend on a parameter
        for node, layer in zip(self.nodes, self.layers):
            if isinstance(layer, L.ReLU):
                layer.inplace = owned(node.inputs[0])
            if isinstance(layer, L.Conv2d):
                layer.input_grad = needs.get(node.inputs[0], False)
            needs[node.outputs[0]] = bool(layer.params()) or any(needs.get(t, False) for t in node.inputs)
        self._needs = needs

    @property
    def names(self) -> list[str]:
        return [n.outputs[0] for n in self.nodes]

    @property
    def output(self) -> str:
        return self.nodes[-1].outputs[0]

    def _run(self, x: np.ndarray, train: bool, keep: bool):
        env = {self.input: x}
        left = dict(self._readers)
        for node, layer in zip(self.nodes, self.layers):
            y = layer.forward(*(env[t] for t in node.inputs), train=train)
            env[node.outputs[0]] = y
            if not keep:
                for t in node.inputs:
                    left[t] -= 1
                    if not left[t] and t != self.input:
                        del env[t]
        return env

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """The network's output for the batch ``x``; intermediate arrays are reused buffers (the output is always
        a fresh array)."""
        for layer in self.layers:
            layer.reuse = True
        try:
            y = self._run(x, train, False)[self.output]
        finally:
            for layer in self.layers:
                layer.reuse = False
        return y if isinstance(self.layers[-1], L.Dense) else np.array(y)

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every node's output for the batch ``x``, by name, in topological order (inference mode)."""
        env = self._run(x, False, True)
        return {name: env[name] for name in self.names}

    def backward(self, dy: np.ndarray) -> None:
        """Fill every layer's ``grads()`` with the gradient of the loss whose gradient with respect to the output
        of the last :meth:`forward` (in training mode) is ``dy``; a tensor read by several nodes sums their
        gradients."""
        grads = {self.output: dy}
        for node, layer in zip(reversed(self.nodes), reversed(self.layers)):
            g = grads.pop(node.outputs[0], None)
            if g is None or not self._needs[node.outputs[0]]:
                continue
            dx = layer.backward(g)
            for t, d in zip(node.inputs, dx if isinstance(dx, tuple) else (dx,)):
                if d is None or not self._needs.get(t, False):
                    continue
                grads[t] = d if t not in grads else grads[t] + d

    def params(self) -> list[np.ndarray]:
        return [p for layer in self.layers for p in layer.params()]

    def grads(self) -> list[np.ndarray]:
        return [g for layer in self.layers for g in layer.grads()]

    def param_names(self) -> list[str]:
        return [f"{node.name}.{part}" for node, layer in zip(self.nodes, self.layers)
                for part in parts(node.op)[: len(layer.params())]]

    def state(self) -> list[np.ndarray]:
        """Every array a model file saves: each layer's parameters, then its buffers (running statistics)."""
        return [a for layer in self.layers for a in (*layer.params(), *layer.buffers())]

    def state_names(self) -> list[str]:
        return [f"{node.name}.{part}" for node, layer in zip(self.nodes, self.layers)
                for part in parts(node.op)[: len(layer.params()) + len(layer.buffers())]]

    def __repr__(self):
        return f"Network({self.arch or 'graph'!r}, input {self.input_shape}, {self.count()} parameters)"


class Planned(NamedTuple):
    """One node of a network, planned before anything is allocated."""

    name: str
    node: Node
    shape: tuple  # output shape, without the batch axis
    params: list  # parameter shapes (weight, bias)
    scratch: int  # a convolution's padded input and columns for one sample (elements)
    work: int  # multiply-adds for one sample (a pooling's window reads counted at their cost)


def _attr_ints(node: Node, key: str, n: int, default, least: int, *, one: bool = False) -> tuple:
    v = node.attrs.get(key, default)
    if one:
        v = [v]
    if not isinstance(v, (list, tuple)) or len(v) != n or any(
            isinstance(i, bool) or not isinstance(i, int) or i < least or i > 999_999_999 for i in v):
        raise ArchError(f"node {node.name!r} ({node.op}): {key} {printable(repr(v))[:60]} is not {n} integers of at "
                        f"least {least}")
    return tuple(v)


def _attr_int(node: Node, key: str, default: int, least: int) -> int:
    return _attr_ints(node, key, 1, default, least, one=True)[0]


def _describe(node: Node) -> str:
    return f"node {node.name!r} ({node.op})"


def _conv_geometry(node: Node):
    from ..conv import Geometry

    t, l, b, r = _attr_ints(node, "pads", 4, [0, 0, 0, 0], 0)
    return (_attr_ints(node, "kernel_shape", 2, None, 1),
            Geometry(_attr_ints(node, "strides", 2, [1, 1], 1), _attr_ints(node, "dilations", 2, [1, 1], 1),
                     (t, b, l, r), _attr_int(node, "group", 1, 1)))


def _pool_window(node: Node):
    from ..pooling import Window

    t, l, b, r = _attr_ints(node, "pads", 4, [0, 0, 0, 0], 0)
    k = _attr_ints(node, "kernel_shape", 2, None, 1)
    return Window(k, _attr_ints(node, "strides", 2, list(k), 1), (t, b, l, r),
                  _attr_ints(node, "dilations", 2, [1, 1], 1), "max" if node.op == "MaxPool" else "avg")


def plan(nodes: list[Node], input_shape: tuple, input_name: str = "input") -> list[Planned]:
    """Every node of a graph, in topological order, with its output shape, parameter shapes, scratch and work,
    computed without allocating anything. Raises ArchError for an unknown operator or attribute, a cycle, or a
    node that does not fit its input. :func:`network` makes the layers from this plan."""
    if len(nodes) > MAX_LAYERS:
        raise ArchError(f"the network has {len(nodes)} nodes; at most {MAX_LAYERS} are allowed")
    for node in nodes:
        if node.op not in OPS:
            raise ArchError(f"{_describe(node)}: operator not one of {', '.join(OPS)}")
        unknown = set(node.attrs) - OPS[node.op]
        if unknown:
            raise ArchError(f"{_describe(node)}: unknown attribute {printable(sorted(unknown)[0])[:40]!r}")
        if len(node.inputs) != (2 if node.op == "Add" else 1) or len(node.outputs) != 1:
            raise ArchError(f"{_describe(node)}: {len(node.inputs)} inputs and {len(node.outputs)} outputs")
    try:
        order = toposort(list(nodes), {input_name})
    except GraphError as exc:
        raise ArchError(str(exc)) from None
    shapes = {input_name: tuple(int(v) for v in input_shape)}
    out: list[Planned] = []
    for node in order:
        shape = shapes[node.inputs[0]]
        params, scratch, work = [], 0, 0
        what = f"{_describe(node)} does not fit its input {'x'.join(map(str, shape))}"
        if node.op in ("Conv", "MaxPool", "AveragePool") and len(shape) != 3:
            raise ArchError(f"{_describe(node)} comes after the features were flattened")
        if node.op == "Conv":
            k, g = _conv_geometry(node)
            n = _attr_int(node, "out", None, 1)
            if shape[0] % g.groups or n % g.groups:
                raise ArchError(f"{what}: groups {g.groups} must divide its {shape[0]} input channels and {n} "
                                "filters")
            new = (n, *g.output(shape[1], shape[2], *k))
            params = [(n, shape[0] // g.groups, *k), (n,)]
            t, b, l, r = g.pads
            scratch = shape[0] * (shape[1] + t + b) * (shape[2] + l + r) + shape[0] * k[0] * k[1] * new[1] * new[2]
            work = shape[0] // g.groups * k[0] * k[1] * math.prod(new)
        elif node.op in ("MaxPool", "AveragePool"):
            w = _pool_window(node)
            if node.op == "AveragePool" and w.dilation != (1, 1):
                raise ArchError(f"{_describe(node)}: an average pooling takes no dilations (ONNX opset 17)")
            new = (shape[0], *w.output(shape[1], shape[2]))
            if min(new) >= 1 and not w.fits(shape[1], shape[2]):
                raise ArchError(f"{what}: its padding {w.pads} leaves a window with no pixel")
            scratch = w.padded_bytes(shape[1], shape[2], shape[0], 1)  # the numpy engine's padded copy
            work = POOL_READ_COST * w.size[0] * w.size[1] * math.prod(new)
        elif node.op == "Gemm":
            if len(shape) != 1:
                raise ArchError(f"{what}: a dense layer takes flat features (add a flatten)")
            n = _attr_int(node, "out", None, 1)
            new, params = (n,), [(n, shape[0]), (n,)]
            work = shape[0] * n
        elif node.op == "Flatten":
            if _attr_int(node, "axis", 1, 1) != 1:
                raise ArchError(f"{_describe(node)}: only axis 1 is supported")
            if len(shape) != 3:
                raise ArchError(f"{_describe(node)}: the features are already flat")
            new = (math.prod(shape),)
        elif node.op == "Add":
            if shapes[node.inputs[1]] != shape:
                raise ArchError(f"{_describe(node)} adds {shape} and {shapes[node.inputs[1]]}: they must match")
            new = shape
        elif node.op == "Dropout":
            ratio = node.attrs.get("ratio", 0.5)
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
                raise ArchError(f"{_describe(node)}: ratio {printable(repr(ratio))[:40]} is not in [0, 1)")
            new = shape
        elif node.op == "BatchNormalization":
            for key, default, lo, hi in (("epsilon", 1e-5, 0.0, 1.0), ("momentum", 0.9, 0.0, 1.0)):
                v = node.attrs.get(key, default)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v < hi or (
                        key == "epsilon" and v <= 0):
                    raise ArchError(f"{_describe(node)}: {key} {printable(repr(v))[:40]} is not in "
                                    f"{'(' if key == 'epsilon' else '['}{lo:g}, {hi:g})")
            new = shape
            params = [(shape[0],)] * 4  # weight, bias, running mean and variance
            work = 2 * math.prod(shape)
        else:
            new = shape
        if min(new) < 1:
            raise ArchError(f"{what}: the output would be {'x'.join(map(str, new))}")
        shapes[node.outputs[0]] = new
        out.append(Planned(node.name, node, new, params, scratch, work))
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


def network(planned: list[Planned], input_shape: tuple, *, arch: str = "", rng: np.random.Generator | None = None,
            dtype=np.float32, image_bytes: int = 0, input_name: str = "input") -> Network:
    """The network of a plan, its parameters He-initialised from ``rng``."""
    rng = rng if rng is not None else np.random.default_rng(0)
    shapes = {input_name: tuple(int(v) for v in input_shape)}
    layers = []
    for p in planned:
        node = p.node
        shape = shapes[node.inputs[0]]
        if node.op == "Conv":
            k, g = _conv_geometry(node)
            layer = L.Conv2d(shape[0], p.shape[0], k, g.stride, g.pads, dilation=g.dilation, groups=g.groups,
                             rng=rng, dtype=dtype)
        elif node.op in ("MaxPool", "AveragePool"):
            w = _pool_window(node)
            layer = (L.MaxPool2d if node.op == "MaxPool" else L.AvgPool2d)(w.size, w.stride, w.pads,
                                                                           dilation=w.dilation)
        elif node.op == "Relu":
            layer = L.ReLU()  # in place or not: the Network decides from the graph
        elif node.op == "Dropout":
            layer = L.Dropout(float(node.attrs.get("ratio", 0.5)), rng=rng)
        elif node.op == "Flatten":
            layer = L.Flatten()
        elif node.op == "Add":
            layer = L.Add()
        elif node.op == "BatchNormalization":
            layer = L.BatchNorm(p.shape[0], eps=float(node.attrs.get("epsilon", 1e-5)),
                                momentum=1.0 - float(node.attrs.get("momentum", 0.9)), dtype=dtype)
        else:
            layer = L.Dense(shape[0], p.shape[0], rng=rng, dtype=dtype)
        layers.append(layer)
        shapes[node.outputs[0]] = p.shape
    return Network([p.node for p in planned], layers, [p.shape for p in planned], shapes[input_name], arch,
                   image_bytes, input_name)


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
    planned = plan(chain(spec), input_shape)
    image_bytes = check_size(planned, input_shape)
    return network(planned, input_shape, arch=to_string(spec), rng=rng, dtype=dtype, image_bytes=image_bytes)
