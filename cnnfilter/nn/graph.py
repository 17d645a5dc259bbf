"""A network as a graph of named nodes (ONNX's model: an operator, input and output tensor names, attributes),
run in topological order. :mod:`cnnfilter.nn.onnx` builds one from an ``.onnx`` file.

Every node makes new arrays (nothing is computed in place), so an output read by several nodes, as in a residual
connection, is never overwritten; :meth:`Graph.forward` drops each tensor after its last reader. Operators follow
the ONNX specification (https://onnx.ai/onnx/operators/) for the opsets 6-21 that image CNNs are exported with;
convolutions run on :func:`cnnfilter.conv2d`'s compiled loops, the rest in numpy (float32 in, float32 out).
"""

from __future__ import annotations

import math

import numpy as np

from ..limits import POOL_READ_COST, LimitError, check_memory, check_work, fmt_bytes, printable
from .core import GraphError, Listing, Node, toposort


class Graph(Listing):
    """Nodes in topological order over one input: an image batch ``(N, C, H, W)`` (any ``(N, ...)`` runs).

    ``params`` are the constant tensors (ONNX initializers and Constant nodes' values), ``output`` the tensor the
    network returns. ``input_shape`` is ``(C, H, W)``: the size the network is run at (``channels_last``: the
    graph itself takes ``(N, H, W, C)``, as tf2onnx exports Keras models, and is given its input transposed).
    ``names``, ``layers``, ``shapes``, ``summary`` and ``activations`` make it usable wherever
    :class:`~cnnfilter.nn.arch.Network` is.
    """

    def __init__(self, nodes, params: dict, input_name: str, input_shape: tuple, output: str, opset: int,
                 arch: str = "onnx", *, probe_batch: int = 1, channels_last: bool = False,
                 fixed_batch: int | None = None):
        self.params_by_name = dict(params)
        self.input_name = input_name
        self.input_shape = tuple(int(v) for v in input_shape)
        self.channels_last = channels_last  # the graph's input is (N, H, W, C): images are transposed for it
        # a graph exported for one batch size (dynamo's default) runs any batch in chunks of it, the last padded
        self.fixed_batch = fixed_batch
        probe_batch = fixed_batch or probe_batch
        self.output = output
        self.opset = int(opset)
        self.arch = arch
        # attribute names beginning with '_' are cnnfilter's own marks (set below): a file cannot set them
        nodes = [n._replace(attrs={k: v for k, v in n.attrs.items() if not str(k).startswith("_")}) for n in nodes]
        for node in nodes:
            if not node.outputs or not node.outputs[0]:
                msg = f"node {node.name!r} ({node.op}) has no first output"
                raise GraphError(msg)
            if node.op not in OPS:
                msg = (f"operator {node.op!r} (node {node.name!r}) is not supported; supported: "
                       f"{', '.join(sorted(OPS))}")
                raise GraphError(msg)
        self.nodes = toposort([self._trust(n) for n in nodes], {input_name, *self.params_by_name})
        if output not in {o for n in self.nodes for o in n.outputs} | {input_name}:
            msg = f"the graph's output {output!r} is made by no node"
            raise GraphError(msg)
        # what forward runs: the nodes with convolutions, batch norms and ReLUs fused (activations runs the nodes)
        self.steps = _fuse(self.nodes, self.params_by_name, output)
        self._last_use = {}
        for i, node in enumerate(self.steps):
            for t in node.inputs:
                self._last_use[t] = i
        self._last_use[output] = len(self.steps)
        probe = np.zeros((probe_batch, *self.input_shape), np.float32)
        acts = self.activations(probe)  # the shapes, and a first check that the graph runs at this size
        # the layers: nodes that make float maps (not the shape arithmetic of a reshape)
        shown = [n for n in self.nodes if acts[n.outputs[0]].dtype.kind == "f" and acts[n.outputs[0]].ndim >= 1]
        self.names = [n.outputs[0] for n in shown]
        self.layers = [_Layer(n, self.params_by_name) for n in shown]
        self.shapes = [tuple(acts[n].shape[1:]) for n in self.names]
        self.image_bytes = 4 * (math.prod(self.input_shape) + sum(math.prod(s) for s in self.shapes))
        last = next((n for n in self.nodes if self.output in n.outputs), None)
        # a classifier exported with its softmax (or a multi-label one with its sigmoid) gives probabilities
        self.gives_probabilities = last is not None and last.op in ("Softmax", "Sigmoid")

    def at_size(self, height: int, width: int) -> Graph:
        """The same graph (nodes, weights) for images of ``height x width``: its layers' shapes made again by a
        first run at that size, with every operator's memory check."""
        if (height, width) == self.input_shape[1:]:
            return self
        return Graph(self.nodes, self.params_by_name, self.input_name, (self.input_shape[0], height, width),
                     self.output, self.opset, self.arch, channels_last=self.channels_last,
                     fixed_batch=self.fixed_batch)

    def _trust(self, node: Node) -> Node:
        """A Conv node whose weight and bias are finite parameters is marked for the engine without conv2d's
        per-call checks (``conv.run``); its weights are made contiguous float32 once."""
        if node.op != "Conv" or not all(t in self.params_by_name for t in node.inputs[1:] if t):
            return node
        for t in node.inputs[1:]:
            if not t:
                continue
            a = self.params_by_name[t]
            if a.dtype.kind != "f" or not np.isfinite(a).all():
                return node
            self.params_by_name[t] = np.ascontiguousarray(a, np.float32)
        return node._replace(attrs={**node.attrs, "_trusted": True})

    # -- running --------------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """The graph's output for the batch ``x (N, C, H, W)``, float32."""
        if train:
            msg = "an imported graph runs for inference only"
            raise GraphError(msg)
        if self.fixed_batch and len(x) != self.fixed_batch:
            return self._chunked(x, lambda part: {"out": self.forward(part)})["out"]
        env = self._start(x)
        live = x.nbytes
        for i, node in enumerate(self.steps):
            live += self._run(node, env)
            check_memory(float(live), "the live tensors of the network")
            for t in node.inputs:  # tensors nobody reads any more are dropped
                if t and self._last_use.get(t) == i and t not in self.params_by_name and t in env:
                    live -= env.pop(t).nbytes
        return env[self.output]

    def activations(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Every node's outputs for the batch ``x``, keyed by their tensor names, in topological order."""
        if self.fixed_batch and len(x) != self.fixed_batch:
            return self._chunked(x, self.activations)
        env = self._start(x)
        acts = {}
        total = x.nbytes
        for node in self.nodes:
            total += self._run(node, env)
            check_memory(float(total), "the activations of the network")
            for t in node.outputs:
                if t:
                    acts[t] = env[t]
        return acts

    def profile(self, x: np.ndarray) -> dict[str, float]:
        """Seconds per operator type of one :meth:`forward` of ``x`` (fused convolutions are ``_ConvFused``)."""
        import time

        env, seconds = self._start(x), {}
        for node in self.steps:
            t = time.perf_counter()
            self._run(node, env)
            seconds[node.op] = seconds.get(node.op, 0.0) + time.perf_counter() - t
        return seconds

    def _chunked(self, x, run) -> dict:
        """``run`` on chunks of ``fixed_batch`` images (the last padded with zeros), batch-major results joined."""
        n, b = len(x), self.fixed_batch
        parts = []
        for i in range(0, n, b):
            part = x[i : i + b]
            if len(part) < b:
                part = np.concatenate([part, np.zeros((b - len(part), *part.shape[1:]), part.dtype)])
            parts.append(run(part))
        out = {}
        for name, first in parts[0].items():
            if first.ndim and first.shape[0] == b:
                out[name] = np.concatenate([p[name] for p in parts])[:n]
            else:
                out[name] = first
        return out

    def _start(self, x) -> dict:
        x = np.asarray(x, np.float32)
        if x.shape[1:] != self.input_shape:
            msg = f"input has shape {x.shape}; the graph runs on (N, {', '.join(map(str, self.input_shape))})"
            raise GraphError(msg)
        env = dict(self.params_by_name)
        env[self.input_name] = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if self.channels_last else x
        return env

    def _run(self, node: Node, env: dict) -> int:
        """Run ``node`` on ``env``; returns the bytes of the new tensors."""
        args = [env[t] if t else None for t in node.inputs]
        try:
            with np.errstate(all="ignore"):  # inf and NaN are values a network may make (log 0), not warnings
                outs = (OPS.get(node.op) or _FUSED[node.op])(node, args, self.opset)
        except (GraphError, LimitError):
            raise
        except KeyError as exc:  # a required attribute the file does not give
            msg = f"node {node.name!r} ({node.op}) lacks its attribute {printable(str(exc.args[0]))!r}"
            raise GraphError(msg) from None
        except AttributeError:  # a required input given as '' (absent)
            msg = f"node {node.name!r} ({node.op}) lacks a required input"
            raise GraphError(msg) from None
        except (ValueError, TypeError, IndexError, OverflowError, ZeroDivisionError, np.exceptions.AxisError) as exc:
            msg = f"node {node.name!r} ({node.op}) failed: {printable(str(exc).splitlines()[0] if str(exc) else '')}"
            raise GraphError(msg) from None
        made = 0
        for i, name in enumerate(node.outputs):
            if name and i >= len(outs):
                msg = f"node {node.name!r} ({node.op}): its output {i + 1} ({printable(name)!r}) is not supported"
                raise GraphError(msg)
        for name, value in zip(node.outputs, outs):
            if name:
                if not isinstance(value, np.ndarray):
                    value = np.asarray(value)
                env[name] = value
                made += value.nbytes
        return made

    # -- what the CLI shows ---------------------------------------------------------------------------------
    def params(self) -> list[np.ndarray]:
        return [a for a in self.params_by_name.values() if a.dtype.kind == "f"]

    def __repr__(self):
        return f"Graph({len(self.nodes)} nodes, input {self.input_shape}, {self.count()} parameters)"


class _Layer:
    """A node as the CLI's layer listing sees it: its parameters, and a convolution's filters."""

    def __init__(self, node: Node, params: dict):
        self.node = node
        self._params = [params[t] for t in node.inputs[1:] if t in params and params[t].dtype.kind == "f"]
        if node.op == "Conv" and node.inputs[1] in params and params[node.inputs[1]].ndim == 4:
            self.weight = params[node.inputs[1]]
            self.cout = self.weight.shape[0]

    def params(self) -> list[np.ndarray]:
        return self._params

    def __repr__(self):
        a = self.node.attrs
        text = self.node.op
        if hasattr(self, "weight"):
            o, cg, kh, kw = self.weight.shape
            g = int(a.get("group", 1))
            text += f" {kh}x{kw} {cg * g}->{o}" + _window_text(a)
            text += f" groups {g}" if g > 1 else ""
        elif "kernel_shape" in a:
            text += " " + "x".join(map(str, a["kernel_shape"])) + _window_text(a)
        if self.node.name and self.node.name != self.node.outputs[0]:  # the ONNX node's own name
            text += f" [{self.node.name}]"
        return text


def _window_text(a: dict) -> str:
    """A Conv's or a pooling node's walk as a listing shows it: `` s2 d2 p1,1,0,0 SAME_UPPER ceil`` (strides,
    dilations and pads when not all 1 or 0; one number when all are equal; pads in the file's order)."""
    def part(key, tag, neutral):
        values = [int(v) for v in a.get(key, [])]
        if not values or all(v == neutral for v in values):
            return ""
        return f" {tag}{values[0]}" if len(set(values)) == 1 else f" {tag}{','.join(map(str, values))}"

    auto = a.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else str(auto)
    return (part("strides", "s", 1) + part("dilations", "d", 1) + part("pads", "p", 0)
            + (f" {printable(auto)}" if auto != "NOTSET" else "") + (" ceil" if a.get("ceil_mode") else ""))


def _fuse(nodes: list[Node], params: dict, output: str) -> list[Node]:
    """The nodes as :meth:`Graph.forward` runs them: a Conv with its weights in the file, followed by the one
    BatchNormalization that reads it, becomes one convolution with the normalisation folded into its weights
    (``w * a``, ``(b - mean) * a + beta`` with ``a = scale / sqrt(var + eps)``), and a Relu that alone reads the
    result is applied in place on the convolution's fresh output, as onnxruntime fuses them. Every tensor
    :meth:`Graph.activations` returns is still made there, by the nodes as the file has them."""
    readers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for t in n.inputs:
            readers.setdefault(t, []).append(i)
    only = lambda t: readers.get(t, []) if t != output else [-1]  # noqa: E731 - the nodes reading t
    out, skip = [], set()
    for i, n in enumerate(nodes):
        if i in skip:
            continue
        if n.op == "Conv" and n.attrs.get("_trusted") and len(only(n.outputs[0])) == 1:
            j = only(n.outputs[0])[0]
            bn = nodes[j] if j >= 0 else None
            if (bn is not None and bn.op == "BatchNormalization" and bn.inputs[0] == n.outputs[0]
                    and all(t in params for t in bn.inputs[1:5]) and len([t for t in bn.outputs if t]) == 1
                    and not bn.attrs.get("training_mode", 0)):
                w = params[n.inputs[1]]
                bias = params[n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] else np.zeros(w.shape[0], np.float32)
                scale, beta, mean, var = (params[t].astype(np.float64) for t in bn.inputs[1:5])
                if all(v.shape == (w.shape[0],) for v in (scale, beta, mean, var)):
                    a = scale / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
                    wname, bname = f"_fused:{n.name}:w", f"_fused:{n.name}:b"
                    params[wname] = np.ascontiguousarray(w * a[:, None, None, None], np.float32)
                    params[bname] = ((bias - mean) * a + beta).astype(np.float32)
                    n = n._replace(inputs=(n.inputs[0], wname, bname), outputs=bn.outputs[:1])
                    skip.add(j)
            k = only(n.outputs[0])
            if len(k) == 1 and k[0] >= 0 and nodes[k[0]].op == "Relu" and k[0] not in skip:
                n = n._replace(attrs={**n.attrs, "_relu": True}, outputs=nodes[k[0]].outputs[:1])
                skip.add(k[0])
            n = n._replace(op="_ConvFused")
        out.append(n)
    return out


def _conv_fused(node, args, opset):
    return _conv(node, args, opset, relu=bool(node.attrs.get("_relu")))


# -- operators -----------------------------------------------------------------------------------------------
def _f32(a):
    return a if a.dtype == np.float32 else a.astype(np.float32)


def _limit(node: Node, shape, itemsize: int = 4) -> None:
    """Refuse an output of ``shape`` that the memory limit does not hold, before it is made (a broadcast, a
    concat or a gather can be far larger than its inputs)."""
    check_memory(float(math.prod(int(v) for v in shape)) * itemsize,
                 f"node {node.name!r} ({node.op}, output {'x'.join(map(str, shape))})")


def _broadcast(node: Node, *arrays) -> None:
    """Refuse a broadcast of ``arrays`` (None: absent) whose result the memory limit does not hold."""
    present = [a for a in arrays if a is not None]
    _broadcast_shapes(node, [np.shape(a) for a in present], max(np.asarray(a).itemsize for a in present))


def _broadcast_shapes(node: Node, shapes, itemsize: int) -> None:
    try:
        shape = np.broadcast_shapes(*shapes)
    except ValueError as exc:
        msg = f"node {node.name!r} ({node.op}): {exc}"
        raise GraphError(msg) from None
    _limit(node, shape, itemsize)


def _ints(v) -> list[int]:
    return [int(t) for t in np.asarray(v).reshape(-1)]


def _spatial_pads(node: Node, x_hw, k_hw, strides, dilations) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` from ``pads`` or ``auto_pad`` (SAME_UPPER puts the odd pixel at the end)."""
    auto = node.attrs.get("auto_pad", "NOTSET")
    if isinstance(auto, bytes):
        auto = auto.decode()
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for n, k, s, d in zip(x_hw, k_hw, strides, dilations):
            total = max(0, (-(-n // s) - 1) * s + (k - 1) * d + 1 - n)
            small = total // 2
            out.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
        return out[0][0], out[0][1], out[1][0], out[1][1]
    if auto == "VALID":
        return 0, 0, 0, 0
    if auto != "NOTSET":
        msg = f"auto_pad {auto!r} is not NOTSET, SAME_UPPER, SAME_LOWER or VALID"
        raise GraphError(msg)
    pads = _ints(node.attrs.get("pads", [0, 0, 0, 0]))
    if len(pads) != 4 or min(pads) < 0:
        msg = f"pads {pads} are not four non-negative numbers"
        raise GraphError(msg)
    return pads[0], pads[2], pads[1], pads[3]


def _four_d(node: Node, x) -> None:
    if x.ndim != 4:
        msg = f"node {node.name!r} ({node.op}) handles 2-D images (N, C, H, W), not shape {x.shape}"
        raise GraphError(msg)


def _conv(node, args, opset, relu: bool = False):
    from ..conv import Geometry, conv2d, run

    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    _four_d(node, x)
    if w.ndim != 4:
        msg = f"node {node.name!r}: weight of shape {w.shape}; only 2-D convolutions are supported"
        raise GraphError(msg)
    strides = _ints(node.attrs.get("strides", [1, 1]))
    dilations = _ints(node.attrs.get("dilations", [1, 1]))
    top, bottom, left, right = _spatial_pads(node, x.shape[2:], w.shape[2:], strides, dilations)
    groups = int(node.attrs.get("group", 1))
    if not node.attrs.get("_trusted"):  # weights computed by the graph itself: conv2d checks everything
        y = conv2d(_f32(x), w, b, stride=tuple(strides), padding=((top, bottom), (left, right)),
                   dilation=tuple(dilations), groups=groups)
        return [np.maximum(y, 0, out=y) if relu else y]
    # weights from the file, checked finite when the graph was made; the shapes are checked here
    O, Cg, kh, kw = w.shape
    if groups < 1 or O % groups or Cg * groups != x.shape[1] or (b is not None and b.shape != (O,)):
        msg = (f"node {node.name!r}: weight {w.shape}, bias {None if b is None else b.shape} and group {groups} "
               f"do not fit an input of {x.shape[1]} channels")
        raise GraphError(msg)
    for n, k, s, d, p0, p1 in zip(x.shape[2:], (kh, kw), strides, dilations, (top, left), (bottom, right)):
        if s < 1 or d < 1 or n + p0 + p1 < d * (k - 1) + 1:
            msg = f"node {node.name!r}: the kernel does not fit the padded input (or a stride or dilation < 1)"
            raise GraphError(msg)
    if b is None:
        b = np.zeros(O, np.float32)
    return [run(np.ascontiguousarray(x, np.float32), w, b,
                Geometry(tuple(strides), tuple(dilations), (top, bottom, left, right), groups), relu=relu)]


def _inference_only(node, args, position: int) -> None:
    """Refuse a node asked to run in training mode (an attribute, or a true input at ``position``)."""
    flag = node.attrs.get("training_mode", 0)
    if len(args) > position and args[position] is not None:
        flag = bool(np.asarray(args[position]).reshape(-1)[0])
    if flag:
        msg = f"node {node.name!r} ({node.op}) runs in training mode; cnnfilter runs imported graphs for inference"
        raise GraphError(msg)


def _batchnorm(node, args, opset):
    _inference_only(node, args, 99)
    x, scale, bias, mean, var = args[:5]
    eps = float(node.attrs.get("epsilon", 1e-5))
    C = x.shape[1] if x.ndim > 1 else 0
    if any(np.shape(a) != (C,) for a in (scale, bias, mean, var)):
        msg = f"node {node.name!r}: scale, bias, mean and variance must hold one value per channel ({C})"
        raise GraphError(msg)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    a = (scale / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
    return [_f32(x * a.reshape(shape) + (bias - mean * a).astype(np.float32).reshape(shape))]


def _clip(node, args, opset):
    x = args[0]
    if opset < 11:
        lo, hi = node.attrs.get("min"), node.attrs.get("max")
    else:
        lo = args[1] if len(args) > 1 else None
        hi = args[2] if len(args) > 2 else None
    _broadcast(node, x, lo, hi)
    if lo is not None:
        x = np.maximum(x, np.asarray(lo, x.dtype))
    if hi is not None:
        x = np.minimum(x, np.asarray(hi, x.dtype))
    return [x if lo is not None or hi is not None else x.copy()]


def _softmax(node, args, opset, log=False):
    x = args[0]
    if opset < 13:  # the input is seen as 2-D: dimensions before axis, and the rest
        axis = _axis(node, int(node.attrs.get("axis", 1)), x.ndim)
        flat = x.reshape(math.prod(x.shape[:axis]), -1)
        return [_softmax_axis(flat, 1, log).reshape(x.shape)]
    return [_softmax_axis(x, _axis(node, int(node.attrs.get("axis", -1)), x.ndim), log)]


def _axis(node: Node, axis: int, rank: int, *, end: bool = False) -> int:
    """``axis`` of a tensor of ``rank`` (negative counts from the end; ``end``: rank itself allowed)."""
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank + (1 if end else 0):
        msg = f"node {node.name!r} ({node.op}): axis {axis} of a {rank}-D tensor"
        raise GraphError(msg)
    return a


def _softmax_axis(x, axis, log):
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    s = e.sum(axis=axis, keepdims=True)
    return _f32(z - np.log(s)) if log else _f32(e / s)


def _pool(node, args, opset):
    """MaxPool and AveragePool on :func:`cnnfilter.pool2d`'s engine (:func:`cnnfilter.pooling.planes`; its rules
    are ONNX's: ceil_mode's last window starts inside the image or its leading padding, count_include_pad counts the
    taps inside the padding, padding takes no part in max)."""
    from ..pooling import Window, planes

    x = args[0]
    _four_d(node, x)
    N, C, H, W = x.shape
    k = _ints(node.attrs["kernel_shape"])
    if len(k) != 2:
        msg = f"node {node.name!r}: kernel_shape {k}; only 2-D pooling is supported"
        raise GraphError(msg)
    strides = _ints(node.attrs.get("strides", [1, 1]))
    dilations = _ints(node.attrs.get("dilations", [1, 1]))
    if min(*k, *strides, *dilations) < 1 or len(strides) != 2 or len(dilations) != 2:
        msg = f"node {node.name!r}: kernel_shape, strides and dilations must be two numbers of at least 1"
        raise GraphError(msg)
    pads = _spatial_pads(node, (H, W), k, strides, dilations)
    window = Window(tuple(k), tuple(strides), pads, tuple(dilations), "max" if node.op == "MaxPool" else "avg",
                    bool(node.attrs.get("ceil_mode", 0)), bool(node.attrs.get("count_include_pad", 0)))
    Ho, Wo = window.output(H, W)
    if Ho >= 1 and Wo >= 1:  # the output, and the numpy engine's padded copy of every plane
        check_memory(4.0 * (x.size + N * C * Ho * Wo) + window.padded_bytes(H, W, N * C),
                     f"node {node.name!r} ({node.op})")
        check_work(POOL_READ_COST * k[0] * k[1] * N * C * Ho * Wo, f"node {node.name!r} ({node.op})")
    if not window.fits(H, W):
        onnx_pads = [pads[0], pads[2], pads[1], pads[3]]  # as the file gives them: begins, then ends
        dilated = f", dilations {dilations}" if dilations != [1, 1] else ""
        msg = (f"node {node.name!r}: the window {k[0]}x{k[1]}{dilated} with pads {onnx_pads} does not fit the input "
               f"{H}x{W}")
        raise GraphError(msg)
    return [planes(np.ascontiguousarray(_f32(x)), window)]


def _global(node, args, opset):
    x = args[0]
    axes = tuple(range(2, x.ndim))
    return [_f32(x.max(axis=axes, keepdims=True) if node.op == "GlobalMaxPool" else x.mean(axis=axes, keepdims=True))]


def _axes(node, args, opset, since: int):
    """An ``axes`` list: an attribute before opset ``since``, the second input from it (None: not given)."""
    if opset < since:
        v = node.attrs.get("axes")
    else:
        v = args[1] if len(args) > 1 else None
    return None if v is None or not np.asarray(v).size else _ints(v)


def _gemm(node, args, opset):
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    if node.attrs.get("transA", 0):
        a = a.T
    if node.attrs.get("transB", 0):
        b = b.T
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        msg = f"node {node.name!r}: Gemm of {a.shape} and {b.shape}"
        raise GraphError(msg)
    _broadcast_shapes(node, [(a.shape[0], b.shape[1]), np.shape(c)], 4)
    check_work(float(a.shape[0]) * b.shape[1] * a.shape[1], f"node {node.name!r} (Gemm)")
    y = np.float32(node.attrs.get("alpha", 1.0)) * (a @ b)
    if c is not None:
        y = y + np.float32(node.attrs.get("beta", 1.0)) * c
    return [_f32(y)]


def _binary(fn):
    def op(node, args, opset):
        a, b = args[0], args[1]
        if opset < 7 and node.attrs.get("broadcast", 0) and "axis" in node.attrs:  # b aligned at ``axis`` of a
            axis = int(node.attrs["axis"])
            axis = axis + a.ndim if axis < 0 else axis
            b = b.reshape(b.shape + (1,) * (a.ndim - axis - b.ndim))
        _broadcast(node, a, b)
        if a.dtype.kind in "iu" and b.dtype.kind in "iu" and fn is np.divide:  # C's division: toward zero
            if np.any(b == 0):
                msg = f"node {node.name!r}: integer division by zero"
                raise GraphError(msg)
            q = np.floor_divide(a, b)
            return [q + ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0))).astype(q.dtype)]
        out = fn(a, b)
        return [out.astype(np.result_type(a.dtype, b.dtype)) if out.dtype != np.result_type(a.dtype, b.dtype)
                else out]
    return op


def _concat(node, args, opset):
    parts = [a for a in args if a is not None]
    _limit(node, (sum(a.size for a in parts),), max(a.itemsize for a in parts))
    return [np.concatenate(parts, axis=int(node.attrs["axis"]))]


def _flatten(node, args, opset):
    x = args[0]
    axis = _axis(node, int(node.attrs.get("axis", 1)), x.ndim, end=True)
    return [x.reshape(math.prod(x.shape[:axis]), -1) if x.size else x.reshape(math.prod(x.shape[:axis]),
                                                                                 math.prod(x.shape[axis:]))]


def _reshape(node, args, opset):
    x = args[0]
    shape = _ints(args[1]) if opset >= 5 else _ints(node.attrs["shape"])
    if not node.attrs.get("allowzero", 0):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return [x.reshape(shape)]


def _squeeze(node, args, opset):
    x = args[0]
    axes = _axes(node, args, opset, 13)
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(a + x.ndim if a < 0 else a for a in axes))]


def _unsqueeze(node, args, opset):
    x = args[0]
    axes = _axes(node, args, opset, 13)
    rank = x.ndim + len(axes)
    for a in sorted(a + rank if a < 0 else a for a in axes):
        x = np.expand_dims(x, a)
    return [x]


def _transpose(node, args, opset):
    perm = node.attrs.get("perm")
    return [np.transpose(args[0], None if perm is None else _ints(perm))]


def _pad(node, args, opset):
    x = args[0]
    if opset < 11:
        pads = _ints(node.attrs.get("pads", node.attrs.get("paddings", [])))
        value = float(node.attrs.get("value", 0.0))
        axes = list(range(x.ndim))
    else:
        pads = _ints(args[1])
        value = args[2] if len(args) > 2 and args[2] is not None else 0
        value = float(np.asarray(value).reshape(-1)[0]) if np.asarray(value).size else 0.0
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(x.ndim))
    mode = node.attrs.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("constant", "reflect", "edge", "wrap"):
        msg = f"node {node.name!r}: pad mode {mode!r} is not constant, reflect, edge or wrap"
        raise GraphError(msg)
    width = [(0, 0)] * x.ndim
    for i, a in enumerate(axes):
        width[a + x.ndim if a < 0 else a] = (pads[i], pads[i + len(axes)])
    if any(b < 0 or e < 0 for b, e in width):  # negative pads crop
        sl = tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(width))
        x = x[sl]
        width = [(max(0, b), max(0, e)) for b, e in width]
    if mode == "reflect" and any(max(b, e) > n - 1 and (b or e) for n, (b, e) in zip(x.shape, width)):
        msg = f"node {node.name!r}: reflect padding wider than the tensor less one ({x.shape})"
        raise GraphError(msg)
    size = math.prod(n + b + e for n, (b, e) in zip(x.shape, width))
    check_memory(float(size) * x.itemsize, f"node {node.name!r} (Pad to {fmt_bytes(size * x.itemsize)})")
    if mode == "constant":
        return [np.pad(x, width, mode="constant", constant_values=value)]
    return [np.pad(x, width, mode=mode)]


_ONNX_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _cast(node, args, opset):
    to = int(node.attrs["to"])
    if to not in _ONNX_TYPES:
        msg = f"node {node.name!r}: Cast to ONNX type {to} is not supported"
        raise GraphError(msg)
    return [args[0].astype(_ONNX_TYPES[to])]


def _shape(node, args, opset):
    shape = np.array(args[0].shape, np.int64)
    start = int(node.attrs.get("start", 0))
    end = node.attrs.get("end")
    return [shape[start : None if end is None else int(end)]]


def _gather(node, args, opset):
    data, idx = args[0], np.asarray(args[1]).astype(np.int64)
    axis = int(node.attrs.get("axis", 0))
    axis = axis + data.ndim if axis < 0 else axis
    if not 0 <= axis < data.ndim:
        msg = f"node {node.name!r}: axis {axis} of a {data.ndim}-D tensor"
        raise GraphError(msg)
    _limit(node, (*data.shape[:axis], *idx.shape, *data.shape[axis + 1 :]), data.itemsize)
    n = data.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        msg = f"node {node.name!r}: an index is outside the {n} entries of axis {axis}"
        raise GraphError(msg)
    return [np.take(data, np.where(idx < 0, idx + n, idx), axis=axis)]


def _constant(node, args, opset):
    return [node.attrs["value"]]


def _unary(fn):
    return lambda node, args, opset: [_f32(fn(args[0], node.attrs))]


def _identity(node, args, opset):
    if node.op == "Dropout":
        _inference_only(node, args, 2)
    return [args[0], *([np.ones(args[0].shape, bool)] if len(node.outputs) > 1 else [])]


def _matmul(node, args, opset):
    a, b = args[0], args[1]
    if a.ndim == 0 or b.ndim == 0:
        msg = f"node {node.name!r}: MatMul of a scalar"
        raise GraphError(msg)
    a2, b2 = (a[None] if a.ndim == 1 else a), (b[:, None] if b.ndim == 1 else b)
    if a2.shape[-1] != b2.shape[-2]:
        msg = f"node {node.name!r}: MatMul of {a.shape} and {b.shape}"
        raise GraphError(msg)
    _broadcast_shapes(node, [(*a2.shape[:-2], a2.shape[-2], 1), (*b2.shape[:-2], 1, b2.shape[-1])], 4)
    out = np.broadcast_shapes((*a2.shape[:-2], a2.shape[-2], 1), (*b2.shape[:-2], 1, b2.shape[-1]))
    check_work(float(math.prod(out)) * a2.shape[-1], f"node {node.name!r} (MatMul)")
    return [np.matmul(a, b)]


def _prelu(node, args, opset):
    x, slope = args[0], args[1]
    if opset < 7 and slope.ndim == 1 and x.ndim > 2 and slope.size == x.shape[1]:  # one slope per channel
        slope = slope.reshape((-1,) + (1,) * (x.ndim - 2))
    _broadcast(node, x, slope)
    return [_f32(np.where(x >= 0, x, x * slope))]


def _maxpool(node, args, opset):
    if len(node.outputs) > 1 and node.outputs[1]:
        msg = f"node {node.name!r}: MaxPool's Indices output is not supported"
        raise GraphError(msg)
    return _pool(node, args, opset)


def _slice(node, args, opset):
    x = args[0]
    if opset < 10:
        starts, ends = _ints(node.attrs["starts"]), _ints(node.attrs["ends"])
        axes = _ints(node.attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else list(range(len(starts)))
        steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index = [slice(None)] * x.ndim
    for a, b, e, st in zip(axes, starts, ends, steps):
        if st == 0:
            msg = f"node {node.name!r}: a Slice step of 0"
            raise GraphError(msg)
        a = a + x.ndim if a < 0 else a
        n = x.shape[a]
        # ONNX clamps to the axis (INT64_MAX / INT64_MIN mean "to the end"), as Python slices do
        b = max(-n - 1, min(b, n)) if st > 0 else max(-n - 1, min(b, n - 1))
        e = max(-n - 1, min(e, n))
        index[a] = slice(b, None if (st < 0 and e < -n) else e, st)
    return [x[tuple(index)]]


def _target_shape(node, shape_arg) -> list[int]:
    shape = _ints(shape_arg)
    if any(v < 0 for v in shape):
        msg = f"node {node.name!r}: a negative dimension in {shape}"
        raise GraphError(msg)
    return shape


def _constant_of_shape(node, args, opset):
    shape = _target_shape(node, args[0])
    value = node.attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)[:1]
    _limit(node, shape, fill.itemsize)
    return [np.full(shape, fill[0], fill.dtype)]


def _expand(node, args, opset):
    x, shape = args[0], _target_shape(node, args[1])
    _broadcast_shapes(node, [x.shape, tuple(shape)], x.itemsize)
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))).copy()]


def _reduce(fn, since):
    def op(node, args, opset):
        x = args[0]
        axes = _axes(node, args, opset, since)
        if axes is None and opset >= since and node.attrs.get("noop_with_empty_axes", 0):
            return [x]
        keep = bool(node.attrs.get("keepdims", 1))
        extra = {}
        if fn in (np.max, np.min):  # an empty reduction is -inf (max) or +inf (min), as the specification says
            info = np.finfo(x.dtype) if x.dtype.kind == "f" else np.iinfo(x.dtype)
            extra["initial"] = (-np.inf if fn is np.max else np.inf) if x.dtype.kind == "f" else (
                info.min if fn is np.max else info.max)
        out = fn(x, axis=None if axes is None else tuple(axes), keepdims=keep, **extra)
        return [np.asarray(out, x.dtype)]
    return op


def _split(node, args, opset):
    x = args[0]
    axis = int(node.attrs.get("axis", 0))
    axis = axis + x.ndim if axis < 0 else axis
    if opset < 13:
        sizes = node.attrs.get("split")
    else:
        sizes = args[1] if len(args) > 1 and args[1] is not None else None
    n = x.shape[axis]
    if sizes is None:
        parts = int(node.attrs.get("num_outputs", len(node.outputs)))
        size = -(-n // parts)
        sizes = [min(size, n - i * size) for i in range(parts)]
    sizes = _ints(sizes)
    if sum(sizes) != n or min(sizes) < 0:
        msg = f"node {node.name!r}: Split sizes {sizes} do not add up to {n}"
        raise GraphError(msg)
    return np.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _layer_norm(node, args, opset):
    x, scale = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    axis = int(node.attrs.get("axis", -1))
    axis = axis + x.ndim if axis < 0 else axis
    eps = float(node.attrs.get("epsilon", 1e-5))
    axes = tuple(range(axis, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    inv = 1 / np.sqrt(var + np.float32(eps))
    y = (x - mean) * inv * scale
    return [_f32(y if bias is None else y + bias), _f32(mean), _f32(inv)]


def _erf(x):
    """erf (Abramowitz and Stegun 7.1.26: within 1.5e-7, about float32's rounding; numpy has no erf)."""
    v = np.asarray(x, np.float64)
    a = np.abs(v)
    t = 1 / (1 + 0.3275911 * a)
    y = 1 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * \
        np.exp(-a * a)
    return np.sign(v) * y


def _gelu(x, a):
    if a.get("approximate", "none") == "tanh":
        return 0.5 * x * (1 + np.tanh(np.float32(np.sqrt(2 / np.pi)) * (x + np.float32(0.044715) * x ** 3)))
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


def _pow(node, args, opset):
    _broadcast(node, args[0], args[1])
    return [np.power(args[0], args[1]).astype(args[0].dtype)]


def _variadic(fn):
    def op(node, args, opset):
        parts = [a for a in args if a is not None]
        _broadcast(node, *parts)
        out = parts[0]
        for p in parts[1:]:
            out = fn(out, p)
        return [np.asarray(out / len(parts) if node.op == "Mean" else out, parts[0].dtype)]
    return op


OPS = {
    "Conv": _conv,
    "BatchNormalization": _batchnorm,
    "Relu": _unary(lambda x, a: np.maximum(x, 0)),
    "LeakyRelu": _unary(lambda x, a: np.where(x >= 0, x, x * np.float32(a.get("alpha", 0.01)))),
    "PRelu": _prelu,
    "Sigmoid": _unary(lambda x, a: 1 / (1 + np.exp(-x))),
    "Tanh": _unary(lambda x, a: np.tanh(x)),
    "Clip": _clip,
    "HardSigmoid": _unary(lambda x, a: np.clip(np.float32(a.get("alpha", 0.2)) * x + np.float32(a.get("beta", 0.5)),
                                               0, 1)),
    "HardSwish": _unary(lambda x, a: x * np.clip(x / np.float32(6) + np.float32(0.5), 0, 1)),
    "Softmax": _softmax,
    "LogSoftmax": lambda node, args, opset: _softmax(node, args, opset, log=True),
    "MaxPool": _maxpool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global,
    "GlobalMaxPool": _global,
    "ReduceMean": _reduce(np.mean, 18),
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Pad": _pad,
    "Identity": _identity,
    "Dropout": _identity,
    "Cast": _cast,
    "Shape": _shape,
    "Gather": _gather,
    "Constant": _constant,
    "Slice": _slice,
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "ReduceMax": _reduce(np.max, 18),
    "ReduceMin": _reduce(np.min, 18),
    "ReduceSum": _reduce(np.sum, 13),
    "Split": _split,
    "LayerNormalization": _layer_norm,
    "Elu": _unary(lambda x, a: np.where(x > 0, x, np.float32(a.get("alpha", 1.0)) * np.expm1(x))),
    "Selu": _unary(lambda x, a: np.float32(a.get("gamma", 1.0507009873554805)) * np.where(
        x > 0, x, np.float32(a.get("alpha", 1.6732632423543772)) * np.expm1(x))),
    "Softplus": _unary(lambda x, a: np.logaddexp(0, x)),
    "Softsign": _unary(lambda x, a: x / (1 + np.abs(x))),
    "Mish": _unary(lambda x, a: x * np.tanh(np.logaddexp(0, x))),
    "Erf": _unary(lambda x, a: _erf(x)),
    "Gelu": _unary(_gelu),
    "Exp": _unary(lambda x, a: np.exp(x)),
    "Log": _unary(lambda x, a: np.log(x)),
    "Sqrt": _unary(lambda x, a: np.sqrt(x)),
    "Abs": lambda node, args, opset: [np.abs(args[0])],
    "Neg": lambda node, args, opset: [np.negative(args[0])],
    "Reciprocal": _unary(lambda x, a: 1 / x),
    "Pow": _pow,
    "Max": _variadic(np.maximum),
    "Min": _variadic(np.minimum),
    "Sum": _variadic(np.add),
    "Mean": _variadic(np.add),
}

# the fused steps of Graph.forward (not ONNX operators: no file can name them)
_FUSED = {"_ConvFused": _conv_fused}
