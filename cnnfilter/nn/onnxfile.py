"""ONNX in: an ``.onnx`` file as a :class:`~cnnfilter.nn.model.Model` whose network is a
:class:`~cnnfilter.nn.graph.Graph`. Needs the ``onnx`` package (``pip install 'cnnfilter[onnx]'``), which reads
the protobuf (no pickle, no code).

The file is data: only a regular file is read, at most the memory limit; tensors stored outside the file
(external data: a path written inside the model) are refused, never followed; every tensor's declared size is
checked before it is materialised; operators outside :data:`~cnnfilter.nn.graph.OPS` are refused by name.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..limits import check_memory, fmt_bytes, max_memory, open_regular, printable
from .graph import OPS, Graph, GraphError, Node
from .core import Model, ModelError, loader_failure, open_model

MIN_OPSET, MAX_OPSET = 6, 28  # 28: the newest in the ONNX backend cases the operators are tested on (onnx 1.23)
DEFAULT_SIZE = 224  # a model whose height and width are symbolic runs at 224x224 unless told (ImageNet's size)
_FLOAT, _TYPES = 1, {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8}


def load_onnx(path, *, input_size: tuple[int, int] | None = None, classes: list[str] | None = None,
              mean=None, std=None) -> Model:
    """The image classifier (or any image network) in the ONNX file ``path``.

    ``input_size (H, W)`` is the size to run a model whose height and width are symbolic at (default: each
    image's own size, :meth:`Model.for_size`, the network being listed at 224x224; a model with a fixed size
    must be given that size or nothing). ``classes`` name the outputs (default: the
    model's metadata ``classes``, else ``0``, ``1``, ...). ``mean``/``std`` (per channel, in 0..1 pixel units)
    normalise the input (default: the metadata's, else none). Raises ModelError naming the problem.

    For speed, call :func:`cnnfilter.runtime.tune` first thing in the program, before numpy and numba load: it
    makes idle threads sleep (a ResNet-style forward pass took 148-180 ms without it, 21-22 ms with it, on a
    2-vCPU VM)."""
    fail = loader_failure(path)
    try:
        import onnx
    except ImportError:
        fail("reading ONNX needs the onnx package: pip install 'cnnfilter[onnx]'")
    data = _read(path, fail)
    try:
        proto = onnx.load_model_from_string(data)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: the bytes are not a model
        fail("not an ONNX model (or a truncated one)")
    if not proto.graph.node:
        fail("not an ONNX model (its graph has no nodes)")
    try:
        return _model(proto, onnx, input_size, classes, mean, std)
    except ValueError as exc:  # GraphError, LimitError and numpy's own
        fail(str(exc))


def _read(path, fail) -> bytes:
    fh = open_model(path, fail)
    with fh:
        # protobuf's own limit is 2 GiB; parsing may take 8 bytes for a 1-byte packed integer
        cap = min(max_memory() // 8, (2 << 30) - 1)
        data = fh.read(cap + 1)
    if len(data) > cap:
        fail(f"the file is larger than {fmt_bytes(cap)} (an eighth of the memory limit, which parsing it may need)")
    return data


def _model(proto, onnx, input_size, classes, mean, std) -> Model:
    inputs = _data_inputs(proto.graph)
    if len(inputs) != 1:
        raise GraphError(f"the graph has {len(inputs)} inputs besides its weights; an image network has one")
    shape, channels_last, defaulted = _input_shape(inputs[0], input_size)
    first = inputs[0].type.tensor_type.shape.dim[0]
    fixed = int(first.dim_value) if first.HasField("dim_value") and first.dim_value > 0 else None
    if fixed is not None and fixed > 4096:
        raise GraphError(f"the input declares a batch of {fixed:,} images")
    check_memory(4.0 * math.prod(shape) * (fixed or 1), f"the input {'x'.join(map(str, (fixed or 1, *shape)))}")
    try:
        net = graph_from_proto(proto, shape, channels_last=channels_last, fixed_batch=fixed)
    except GraphError as exc:
        if defaulted:
            raise GraphError(f"{exc} (the model's height and width are symbolic and it was run at "
                             f"{shape[1]}x{shape[2]}: give the size it was trained at with --input-size HxW)") from None
        raise
    meta = {p.key: p.value for p in proto.metadata_props}
    out_shape = net.shapes[net.names.index(net.output)] if net.output in net.names else ()
    out_size = math.prod(out_shape) if out_shape else 0
    scores = out_size > 0 and sum(d > 1 for d in out_shape) <= 1  # a vector of class scores, not a map
    if classes is not None and (not scores or len(classes) != out_size):
        raise GraphError(f"{len(classes)} class names for an output of {'x'.join(map(str, out_shape)) or 'no'} "
                         f"values per image (the output {net.output!r})")
    if classes is None:
        classes = _meta_list(meta, "classes", str) or []
        if scores and len(classes) != out_size:
            classes = [str(i) for i in range(out_size)]  # no names, or names that do not fit: indices
        elif not scores:
            classes = []  # a network whose output is a map: featuremaps draws it, predict has nothing to say
    C = shape[0]
    mean = np.asarray(mean if mean is not None else (_meta_list(meta, "mean", float) or [0.0] * C), np.float32)
    std = np.asarray(std if std is not None else (_meta_list(meta, "std", float) or [1.0] * C), np.float32)
    if mean.shape == (1,) and C > 1:
        mean = np.repeat(mean, C)
    if std.shape == (1,) and C > 1:
        std = np.repeat(std, C)
    if mean.shape != (C,) or std.shape != (C,):
        raise GraphError(f"the model's input has {C} channel{'s' if C > 1 else ''}; the mean and std have "
                         f"{mean.size} and {std.size} values (give one, or one per channel)")
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        raise GraphError("the mean and std must be finite, the std positive")
    info = {"format": "onnx", "opset": net.opset,
            "producer": f"{proto.producer_name} {proto.producer_version}".strip()}
    # both height and width symbolic, and no size given: every image runs at its own size (Model.for_size)
    dims = inputs[0].type.tensor_type.shape.dim
    free = defaulted and not any(d.HasField("dim_value") and d.dim_value > 0
                                 for d in ([dims[1], dims[2]] if channels_last else [dims[2], dims[3]]))
    return Model(net, list(classes), mean, std, info, free_size=free)


def graph_from_proto(proto, input_shape: tuple, *, batch: int = 1, channels_last: bool = False,
                     fixed_batch: int | None = None) -> Graph:
    """The :class:`Graph` of an ONNX ``ModelProto`` whose one data input has shape ``(batch, *input_shape)``:
    initializers and Constant nodes become parameters, every other node is checked against the supported
    operators. (:func:`load_onnx` adds the image checks, class names and normalisation.)"""
    import onnx

    g = proto.graph
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise GraphError(f"opset {opset}: cnnfilter reads opsets {MIN_OPSET} to {MAX_OPSET}")
    if len(g.sparse_initializer):
        raise GraphError("sparse initializers are not supported")
    budget = max_memory()
    declared = 0
    for t in g.initializer:  # all of them together, before any is read
        declared += _declared_bytes(t)
        if declared > budget:
            raise GraphError(f"the weights declare {fmt_bytes(declared)} or more, over the memory limit "
                             f"({fmt_bytes(budget)})")
    params: dict[str, np.ndarray] = {t.name: _tensor(t, onnx, budget) for t in g.initializer}
    nodes = []
    for i, n in enumerate(g.node):
        node_name = n.name or f"{n.op_type}_{i}"
        if n.domain not in ("", "ai.onnx"):
            raise GraphError(f"operator {n.domain}.{n.op_type} (node {node_name!r}) is not supported: only the "
                             f"standard ONNX domain is; supported: {', '.join(sorted(OPS))}")
        if n.op_type not in OPS:
            raise GraphError(f"operator {n.op_type!r} (node {node_name!r}) is not supported; supported: "
                             f"{', '.join(sorted(OPS))}")
        attrs = {a.name: _attribute(a, onnx, budget) for a in n.attribute}
        if n.op_type == "Constant":  # Paddle's weights: a constant is a parameter like an initializer
            params[n.output[0]] = _constant(attrs, node_name)
            continue
        nodes.append(Node(node_name, n.op_type, tuple(n.input), tuple(n.output), attrs))
    inputs = _data_inputs(g)
    if len(inputs) != 1:
        raise GraphError(f"the graph has {len(inputs)} inputs besides its weights; cnnfilter runs one")
    if not g.output:
        raise GraphError("the graph declares no output")
    return Graph(nodes, params, inputs[0].name, input_shape, g.output[0].name, opset, arch=f"onnx opset {opset}",
                 probe_batch=batch, channels_last=channels_last, fixed_batch=fixed_batch)


def _data_inputs(g) -> list:
    weights = {t.name for t in g.initializer}
    return [v for v in g.input if v.name not in weights]


def _tensor(t, onnx, budget: int) -> np.ndarray:
    """A TensorProto as an array, after checking that it is stored in the file and that its declared size fits."""
    from onnx import numpy_helper

    if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data):
        raise GraphError(f"tensor {printable(t.name)!r} is stored outside the model file (external data), and "
                         "cnnfilter reads only the file it is given: export with torch.onnx.export(..., "
                         "external_data=False), or onnx.save(onnx.load(path), path2) to inline the weights")
    size = _declared_bytes(t)
    if size > budget:
        raise GraphError(f"tensor {printable(t.name)!r} declares {fmt_bytes(size)}, over the memory limit "
                         f"({fmt_bytes(budget)})")
    try:
        arr = numpy_helper.to_array(t)
    except Exception as exc:  # noqa: BLE001 - data that does not match the declared shape or type
        raise GraphError(f"tensor {printable(t.name)!r} is malformed ({printable(str(exc))[:80]})") from None
    if arr.dtype == np.float64 or arr.dtype == np.float16:
        arr = arr.astype(np.float32)
    return arr


def _declared_bytes(t) -> int:
    """The bytes a TensorProto declares (its dimensions times its type's size), refusing odd declarations."""
    if t.data_type not in _TYPES:
        raise GraphError(f"tensor {printable(t.name)!r} has ONNX data type {t.data_type}, which is not supported")
    dims = [int(d) for d in t.dims]
    if any(d < 0 for d in dims):
        raise GraphError(f"tensor {printable(t.name)!r} declares a negative dimension")
    return math.prod(dims) * _TYPES[t.data_type]


def _attribute(a, onnx, budget: int):
    A = onnx.AttributeProto
    if a.type == A.FLOAT:
        return float(a.f)
    if a.type == A.INT:
        return int(a.i)
    if a.type == A.STRING:
        return a.s.decode("utf-8", "replace")
    if a.type == A.TENSOR:
        return _tensor(a.t, onnx, budget)
    if a.type == A.FLOATS:
        return [float(v) for v in a.floats]
    if a.type == A.INTS:
        return [int(v) for v in a.ints]
    if a.type == A.STRINGS:
        return [s.decode("utf-8", "replace") for s in a.strings]
    raise GraphError(f"attribute {printable(a.name)!r} has a type cnnfilter does not read (a graph or a sparse "
                     "tensor)")


def _constant(attrs: dict, node_name: str) -> np.ndarray:
    if "value" in attrs:
        return attrs["value"]
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in attrs:
            return np.asarray(attrs[key], dtype)
    raise GraphError(f"Constant node {node_name!r} has no value cnnfilter reads")


def _input_shape(inp, input_size) -> tuple[tuple[int, int, int], bool, bool]:
    """``((C, H, W), channels last, size defaulted)`` of an image input: NCHW, or NHWC (tf2onnx's Keras layout)
    when only the last dimension holds 1 or 3 channels; a symbolic height or width is ``input_size`` or 224."""
    tt = inp.type.tensor_type
    if not inp.type.HasField("tensor_type") or tt.elem_type not in (1, 10, 11):
        raise GraphError(f"the input {printable(inp.name)!r} is not a float tensor")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    if len(dims) != 4:
        raise GraphError(f"the input {printable(inp.name)!r} has {len(dims)} dimensions; an image network takes "
                         "(N, C, H, W)")
    last = dims[1] not in (1, 3) and dims[3] in (1, 3)
    C, H, W = (dims[3], dims[1], dims[2]) if last else dims[1:]
    if C is None or C < 1:
        raise GraphError(f"the input {printable(inp.name)!r} does not declare its channels")
    if C not in (1, 3):
        raise GraphError(f"the input {printable(inp.name)!r} has {C} channels; images give 1 (grey) or 3 (colour)")
    if input_size is not None:
        h, w = (int(v) for v in input_size)
        if (H is not None and H != h) or (W is not None and W != w):
            raise GraphError(f"the model takes {H}x{W} images; --input-size {h}x{w} does not match")
        H, W = h, w
    defaulted = H is None or W is None
    H = DEFAULT_SIZE if H is None else H
    W = DEFAULT_SIZE if W is None else W
    if min(H, W) < 1 or H * W > 1 << 26:
        raise GraphError(f"the input size {H}x{W} is not one an image network runs at")
    return (C, H, W), last, defaulted


def _meta_list(meta: dict, key: str, kind) -> list | None:
    text = meta.get(key)
    if text is None:
        return None
    try:
        value = json.loads(text)
        if not isinstance(value, list):
            raise ValueError
        return [kind(v) for v in value]
    except (ValueError, TypeError):
        return [kind(v.strip()) for v in text.split(",")] if "," in text else None


def read_classes(path) -> list[str]:
    """Class names from a text file, one per line (blank lines and surrounding spaces ignored)."""
    from ..limits import read_capped

    try:
        fh = open_regular(path, "classes file")
    except OSError as exc:
        msg = f"cannot read classes file {printable(str(path))!r}: {exc.strerror or exc}"
        raise ValueError(msg) from None
    with fh:
        text = read_capped(fh, 16 << 20, "classes file").decode("utf-8", "replace")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ValueError(f"classes file {printable(str(path))!r} holds no names")
    return names


def is_onnx(path) -> bool:
    return Path(str(path)).suffix.lower() == ".onnx"


# -- ONNX out ------------------------------------------------------------------------------------------------
OPSET = 17
IR_VERSION = 8  # opset 17's IR version: read by onnxruntime 1.13 and later


def to_onnx(model: Model):
    """``model`` (a network built by train-tiny or from an architecture string) as an ONNX ``ModelProto``, opset
    17: each layer one node whose output tensor has the layer's name (conv1, relu1, ...), so that the feature
    maps of the exported model carry the same names; dropout is an Identity; a BatchNorm whose input only a
    convolution makes is folded into it (the Conv node, named as the convolution, makes the BatchNorm's tensor),
    others are BatchNormalization nodes. Class names, normalisation (mean and std in 0..1 units), the
    architecture and the training metadata are ``metadata_props`` (JSON values)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .. import __version__
    from .arch import parts

    net = model.net
    if not hasattr(net, "nodes") or isinstance(net, Graph):
        raise GraphError("only a network built by cnnfilter (train-tiny, an architecture string) is exported; "
                         "an imported ONNX graph is an ONNX file already")
    nodes, inits = [], []
    folded = _foldable(net)
    for node, layer in zip(net.nodes, net.layers):
        if node.name in folded.values():
            continue  # a BatchNorm folded into the convolution before it
        name, attrs = node.name, {k: v for k, v in node.attrs.items() if k != "out"}
        inputs, outputs = list(node.inputs), list(node.outputs)
        arrays = [*layer.params(), *layer.buffers()]
        if node.name in folded:  # the Conv takes the BatchNorm's scale and shift, and makes its output
            bn = net.layers[net.names.index(folded[node.name])]
            scale = bn.weight.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
            arrays = [layer.weight * scale[:, None, None, None],
                      (layer.bias - bn.running_mean.astype(np.float64)) * scale + bn.bias]
            outputs = [folded[node.name]]
        if arrays:
            names = [f"{name}.{part}" for part in parts(node.op)[: len(arrays)]]
            inits += [numpy_helper.from_array(np.asarray(p, np.float32), n) for p, n in zip(arrays, names)]
            inputs += names
        op = node.op
        if op == "BatchNormalization":  # inference: the running statistics
            attrs = {"epsilon": float(attrs.get("epsilon", 1e-5)), "momentum": float(attrs.get("momentum", 0.9))}
        if op == "Gemm":
            attrs = {"transB": 1}
        elif op == "Dropout":  # inference: the identity
            op, attrs = "Identity", {}
        elif op == "AveragePool":
            attrs["count_include_pad"] = 1  # padding counts as zeros
            if attrs.get("dilations", [1, 1]) == [1, 1]:  # AveragePool has dilations from opset 19 only
                attrs.pop("dilations", None)
        nodes.append(helper.make_node(op, inputs, outputs, name=name, **attrs))
    x = net.output
    C, H, W = net.input_shape
    graph = helper.make_graph(
        nodes, "cnnfilter", [helper.make_tensor_value_info(net.input, TensorProto.FLOAT, ["N", C, H, W])],
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", len(model.classes)])], initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cnnfilter",
                              producer_version=__version__, doc_string=f"cnnfilter network {net.arch}")
    proto.ir_version = IR_VERSION
    meta = {"classes": list(model.classes), "mean": [float(v) for v in model.mean],
            "std": [float(v) for v in model.std], "arch": net.arch, "training": model.meta}
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=json.dumps(value) if not isinstance(value, str) else value)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _foldable(net) -> dict[str, str]:
    """Convolutions whose only reader is a BatchNorm, to the BatchNorm: at inference the BatchNorm is a scale and
    shift per channel, which the convolution's weights and bias take (the exported Conv makes the BatchNorm's
    output tensor)."""
    readers: dict[str, list] = {}
    for node in net.nodes:
        for t in node.inputs:
            readers.setdefault(t, []).append(node)
    out = {}
    for node in net.nodes:
        after = readers.get(node.outputs[0], [])
        if node.op == "Conv" and len(after) == 1 and after[0].op == "BatchNormalization" \
                and node.outputs[0] != net.output:
            out[node.name] = after[0].name
    return out


def save_onnx(model: Model, path) -> None:
    """Write ``model`` as ONNX (:func:`to_onnx`) to ``path`` atomically; ``-`` writes to standard output."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ModelError("writing ONNX needs the onnx package: pip install 'cnnfilter[onnx]'") from None
    data = to_onnx(model).SerializeToString()
    if str(path) == "-":
        import sys

        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from ..outputs import atomic_file

    with atomic_file(path) as fh:
        fh.write(data)
